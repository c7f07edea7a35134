#!/usr/bin/env python
"""Benchmark (not a test): nanoGPT's CPU recipe for shakespeare_char, run with this book's model and training loop.

nanoGPT's README recipe: character-level tinyshakespeare (90/10 split), n_layer 4, n_head 4, n_embd 128, block 64,
batch 12, lr 1e-3 (warmup 100, cosine to 1e-4 at 2000), beta2 0.99, weight decay 0.1, clip 1.0, dropout 0, no biases,
2000 iterations, evaluation every 250 steps on 20 batches; torch.set_num_threads(2). On this machine nanoGPT runs it at
about 27,000 tokens/s and ends at val loss 1.886 after about 80 s.

Runs (1) the same GPT-2 architecture and recipe, (2) the book's modern recipe (RMSNorm, SwiGLU, RoPE, QK-norm and a
higher learning rate) for as many steps as fit in run (1)'s wall-clock time, and prints a table.
Usage: python bench/train.py [--only gpt2|modern] [--steps 2000]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from llm_from_scratch.model import GPT, GPTConfig  # noqa: E402
from llm_from_scratch.train import TrainConfig, char_data, evaluate, read_metrics, train  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "tinyshakespeare.txt"
NANOGPT = {"tok_per_s": 27_000, "val_loss": 1.886, "seconds": 80.0}


def recipes(vocab_size: int, steps: int, modern_lr: float) -> dict[str, tuple[GPTConfig, TrainConfig]]:
    arch = dict(vocab_size=vocab_size, block_size=64, n_layer=4, n_head=4, n_embd=128, dropout=0.0, bias=False)
    tc = TrainConfig(batch_size=12, max_steps=steps, lr=1e-3, min_lr=1e-4, warmup_steps=100, weight_decay=0.1,
                     beta1=0.9, beta2=0.99, grad_clip=1.0, eval_interval=250, eval_batches=20, ckpt_interval=0,
                     seed=1337, dtype="float32", device="cpu", threads=2)
    return {"gpt2": (GPTConfig(**arch, gelu_approximate="none"), tc),  # nanoGPT's MLP uses the exact GELU
            "modern": (GPTConfig.modern(**arch), replace(tc, lr=modern_lr, min_lr=modern_lr / 10))}


def run(name: str, mcfg: GPTConfig, tcfg: TrainConfig, data) -> dict:
    with tempfile.TemporaryDirectory() as d:
        t0 = time.perf_counter()
        res = train(mcfg, tcfg, data, d, progress=False)
        wall = time.perf_counter() - t0
    val200 = evaluate(res["model"], data.val, 12, mcfg.block_size, 200, seed=2024)
    return {"run": name, "steps": res["steps"], "tok/s": res["tok_per_s"], "wall s": wall,
            "val loss (20 batches)": res["val_loss"], "val loss (200 batches)": val200,
            "params": res["model"].num_params()}


def steps_per_second(mcfg: GPTConfig, tcfg: TrainConfig, data, n: int = 60) -> float:
    "Measured optimiser steps per second over `n` steps, after 10 warm-up steps (from the run's own metrics log)."
    with tempfile.TemporaryDirectory() as d:
        train(mcfg, replace(tcfg, max_steps=10 + n, eval_interval=10**9, eval_batches=1), data, d, progress=False)
        times = {r["step"]: r["time"] for r in read_metrics(Path(d) / "metrics.jsonl")}
    return n / (times[10 + n] - times[10])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", choices=("gpt2", "modern"), default=None)
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--modern-lr", type=float, default=3e-3)
    ap.add_argument("--modern-steps", type=int, default=None, help="fix the modern run's steps instead of matching time")
    ap.add_argument("--extra-seeds", type=int, nargs="*", default=[],
                    help="also run the GPT-2 recipe with these seeds, to show the spread of the final loss")
    a = ap.parse_args(argv)
    if not DATA.exists():
        print(f"skipping: {DATA} is not there (nanoGPT's tinyshakespeare.txt, only needed for this benchmark)")
        return 0
    torch.set_num_threads(2)
    data = char_data(DATA, val_fraction=0.1)
    rs = recipes(data.vocab_size, a.steps, a.modern_lr)
    rows, budget = [], None
    if a.only in (None, "gpt2"):
        rows.append(run("ours, GPT-2 architecture (nanoGPT recipe)", *rs["gpt2"], data))
        budget = rows[-1]["wall s"]
        for seed in a.extra_seeds:
            mcfg, tcfg = rs["gpt2"]
            rows.append(run(f"  same, seed {seed}", mcfg, replace(tcfg, seed=seed), data))
    if a.only in (None, "modern"):
        mcfg, tcfg = rs["modern"]
        steps = a.modern_steps
        if steps is None:
            if budget is None: budget = a.steps * 12 * 64 / NANOGPT["tok_per_s"] + 10
            g_rate = steps_per_second(*rs["gpt2"], data) if a.only is None else None
            m_rate = steps_per_second(mcfg, tcfg, data)
            # same wall-clock as the GPT-2 run: scale its step count by the measured speed ratio
            steps = int(a.steps * m_rate / g_rate) if g_rate else int(budget * m_rate * 0.93)
            steps = min(steps, a.steps)
        rows.append(run(f"ours, modern recipe (lr {a.modern_lr:g}), {steps} steps", mcfg,
                        replace(tcfg, max_steps=steps), data))
    print(f"\nnanoGPT CPU recipe, tinyshakespeare char-level, {torch.get_num_threads()} threads (shared machine: timings noisy)")
    print(f"{'run':<52}{'steps':>6}{'tok/s':>9}{'wall s':>8}{'val@20':>8}{'val@200':>9}{'params':>10}")
    print(f"{'nanoGPT (reference numbers)':<52}{a.steps:>6}{NANOGPT['tok_per_s']:>9,.0f}{NANOGPT['seconds']:>8.0f}"
          f"{NANOGPT['val_loss']:>8.3f}{'':>9}{'':>10}")
    for r in rows:
        print(f"{r['run']:<52}{r['steps']:>6}{r['tok/s']:>9,.0f}{r['wall s']:>8.1f}{r['val loss (20 batches)']:>8.3f}"
              f"{r['val loss (200 batches)']:>9.3f}{r['params']:>10,}")
    print("tok/s counts training tokens over training time (evaluation excluded); val@20 is nanoGPT's 20-batch estimate, "
          "val@200 a 200-batch one. No GPU here: MFU is not measured.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
