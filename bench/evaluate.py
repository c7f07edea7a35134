#!/usr/bin/env python
"""Benchmark (not a test): chapter 13's multiple-choice harness against lm-evaluation-harness on the same task, model
and tokenizer.

A small GPT-2-shaped model of ours (random weights, `pos="learned"`, block 48) is saved in Hugging Face's layout with
chapter 5's `save_hf_gpt2` and the book's tokenizer beside it (`save_hf_tokenizer`); the task is real held-out
next-line items (chapter 13's `default_tasks()`), written as JSONL with a task YAML. lm-eval's `hf` model runs it
offline in float64 (`simple_evaluate`, `log_samples=True`), and ours runs `loglikelihoods` on the same weights in
float64. Prints items/s of both (lm-eval's time includes loading the model and the dataset, ours does not include
loading the model), the largest absolute difference of any choice's log-likelihood, and whether every item's acc and
acc_norm and every request's (context, continuation) agree. `tests/test_evaluate.py::test_lm_eval_parity` runs the
same comparison on 20 items.
Usage: python bench/evaluate.py [--items 60] [--batch-size 4]
   or: python -m bench.evaluate [...]
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
if not __package__:   # run as a script, python bench/evaluate.py: make the repository importable, as -m does
    sys.path.insert(0, str(ROOT))
from llm_from_scratch.core import seed_everything  # noqa: E402
from llm_from_scratch.evaluate import (MCTask, lm_eval_yaml, loglikelihoods, score_multiple_choice,  # noqa: E402
                                       write_mc_jsonl)
from llm_from_scratch.model import GPT, GPTConfig  # noqa: E402


def tiny_gpt(vocab_size: int, block_size: int = 48, seed: int = 0) -> GPT:
    "A random GPT-2-shaped model (it maps onto Hugging Face's GPT2LMHeadModel)."
    seed_everything(seed)
    return GPT(GPTConfig(vocab_size=vocab_size, block_size=block_size, n_layer=2, n_head=2, n_embd=32,
                         pos="learned")).eval()


def encoder(tok):
    return lambda s: tok.encode(s, allowed_special="all")


def _save_hf_tokenizer():
    "The Hugging Face tokenizer export of chapter 9 (`llm_from_scratch.hf.save_hf_tokenizer`), or its draft while it lands."
    try:
        from llm_from_scratch.hf import save_hf_tokenizer
        return save_hf_tokenizer
    except ImportError:
        draft = Path(os.environ.get("LLMFS_HF_EXPORT", "/work/tools/c9/hf_export.py"))
        if not draft.exists(): raise SystemExit("no save_hf_tokenizer yet (chapter 9)")
        spec = importlib.util.spec_from_file_location("_hf_export_draft", draft)
        mod = importlib.util.module_from_spec(spec); spec.loader.exec_module(mod)
        return mod.save_hf_tokenizer


def lm_eval_parity(tok, task: MCTask, folder: Path, batch_size: int = 4) -> dict:
    """Our log-likelihoods, acc and acc_norm against lm-eval's `hf` model on the same task and weights (float64).
    Returns the largest log-likelihood difference, per-item agreement and both timings."""
    import time
    os.environ.update(HF_DATASETS_OFFLINE="1", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
                      TOKENIZERS_PARALLELISM="false")
    import lm_eval
    from lm_eval.tasks import TaskManager
    from llm_from_scratch.hf import save_hf_gpt2
    model = tiny_gpt(tok.vocab_size, block_size=48)
    hf_dir = folder / "model"
    save_hf_gpt2(model, hf_dir)
    _save_hf_tokenizer()(tok, hf_dir)
    write_mc_jsonl(task, folder / "task.jsonl")
    (folder / "task.yaml").write_text(lm_eval_yaml("llmfs_parity", folder / "task.jsonl", task.target_delimiter))
    t0 = time.perf_counter()
    out = lm_eval.simple_evaluate(model="hf", model_args=f"pretrained={hf_dir},dtype=float64", tasks=["llmfs_parity"],
                                  task_manager=TaskManager(include_path=str(folder)), batch_size=batch_size,
                                  device="cpu", log_samples=True, num_fewshot=0)
    theirs_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    ours = score_multiple_choice(task, lambda reqs: loglikelihoods(model.double(), encoder(tok), reqs, batch_size))
    ours_s = time.perf_counter() - t0
    samples = sorted(out["samples"]["llmfs_parity"], key=lambda s: s["doc_id"])
    diff, same_acc, contexts_equal = 0.0, True, True
    for it, mine, s in zip(task.items, ours["items"], samples):
        their_lls = [float(r[0]) for r in s["filtered_resps"]]
        diff = max(diff, float(np.max(np.abs(np.array(their_lls) - np.array(mine["lls"])))))
        same_acc &= (s["acc"], s["acc_norm"]) == (mine["acc"], mine["acc_norm"])
        contexts_equal &= [tuple(a) for a in s["arguments"]] == [(r.context, r.continuation) for r in task.requests(it)]
    res = out["results"]["llmfs_parity"]
    return {"items": len(samples), "requests": sum(len(it.choices) for it in task.items), "max_abs_diff": diff,
            "items_equal": same_acc, "contexts_equal": contexts_equal,
            "ours": (ours["acc"], ours["acc_norm"]), "theirs": (res["acc,none"], res["acc_norm,none"]),
            "ours_s": ours_s, "theirs_s": theirs_s}



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
        r = lm_eval_parity(default_tokenizer(), task, Path(d), a.batch_size)
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
