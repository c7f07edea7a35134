#!/usr/bin/env python
"""Benchmark (not a test): chapter 13's multiple-choice harness against lm-evaluation-harness on the same task, model
and tokenizer.

A small GPT-2-shaped model of ours (random weights, `pos="learned"`, block 48) is saved in Hugging Face's layout with
chapter 9's `save_hf` with the book's tokenizer beside it (`tokenizer.json`); the task is real held-out
next-line items (chapter 13's `default_tasks()`), written as JSONL with a task YAML. lm-eval's `hf` model runs it
offline in float64 (`simple_evaluate`, `log_samples=True`), and ours runs `loglikelihoods` on the same weights in
float64. Prints items/s of both (lm-eval's time includes loading the model and the dataset, ours does not include
loading the model), the largest absolute difference of any choice's log-likelihood, and whether every item's acc and
acc_norm and every request's (context, continuation) agree. `tests/test_evaluate.py::test_lm_eval_parity` runs the
same comparison on 20 items; both call `llm_from_scratch.evaluate.lm_eval_parity`.
Usage: python bench/evaluate.py [--items 60] [--batch-size 4]
   or: python -m bench.evaluate [...]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
if not __package__:   # run as a script, python bench/evaluate.py: make the repository importable, as -m does
    sys.path.insert(0, str(ROOT))
from llm_from_scratch.core import seed_everything  # noqa: E402
from llm_from_scratch.evaluate import MCTask, lm_eval_parity  # noqa: E402
from llm_from_scratch.model import GPT, GPTConfig  # noqa: E402


def tiny_gpt(vocab_size: int, block_size: int = 48, seed: int = 0) -> GPT:
    "A random GPT-2-shaped model (it maps onto Hugging Face's GPT2LMHeadModel)."
    seed_everything(seed)
    return GPT(GPTConfig(vocab_size=vocab_size, block_size=block_size, n_layer=2, n_head=2, n_embd=32,
                         pos="learned")).eval()


def encoder(tok):
    return lambda s: tok.encode(s, allowed_special="all")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    ap.add_argument("--items", type=int, default=60, help="next-line items to compare (default: 60)")
    ap.add_argument("--batch-size", type=int, default=4)
    a = ap.parse_args(argv)
    from llm_from_scratch.evaluate import default_tasks
    from llm_from_scratch.tokenizer import default_tokenizer
    torch.set_num_threads(min(2, torch.get_num_threads()))
    src = default_tasks()[0]
    task = MCTask("next_line", src.items[:a.items], src.target_delimiter)
    with tempfile.TemporaryDirectory() as d:
        tok = default_tokenizer()
        r = lm_eval_parity(tiny_gpt(tok.vocab_size), tok, task, Path(d), a.batch_size)
    print(f"\nchapter 13 harness vs lm-evaluation-harness, next-line task, {r['items']} items, {r['requests']} requests, "
          f"float64, batch {a.batch_size}, {torch.get_num_threads()} threads")
    print(f"{'harness':<26}{'items/s':>9}{'acc':>8}{'acc_norm':>10}")
    print(f"{'ours (loglikelihoods)':<26}{r['items'] / r['ours_s']:>9.1f}{r['ours'][0]:>8.3f}{r['ours'][1]:>10.3f}")
    print(f"{'lm-eval hf (with start-up)':<26}{r['items'] / r['theirs_s']:>9.1f}{r['theirs'][0]:>8.3f}{r['theirs'][1]:>10.3f}")
    print(f"max |log-likelihood difference| {r['max_abs_diff']:.2e}; acc and acc_norm equal on every item: "
          f"{r['items_equal']}; requests equal: {r['contexts_equal']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
