#!/usr/bin/env python
"""Benchmark (not a test): nanoGPT's CPU recipe for shakespeare_char, run with this book's model and training loop.

nanoGPT's README recipe: character-level tinyshakespeare (90/10 split), n_layer 4, n_head 4, n_embd 128, block 64,
batch 12, lr 1e-3 (warmup 100, cosine to 1e-4 at 2000), beta2 0.99, weight decay 0.1, clip 1.0, dropout 0, no biases,
2000 iterations, evaluation every 250 steps on 20 batches; torch.set_num_threads(2). The issue that set this benchmark
measured nanoGPT here at about 27,000 tokens/s, ending at val loss 1.886 after about 80 s.

This shared 2-core machine changes speed by a factor of two or more from one hour to the next, so a number measured
another day is no yardstick. The benchmark therefore also runs a reference, `bench/nanogpt.py`: the same recipe written
the way nanoGPT writes it (plain PyTorch modules, `torch.optim.AdamW`, the global random generator for batches, train
and val estimates every 250 steps), in alternation with ours on the same machine. With seed 1337 the reference ends at
nanoGPT's val loss, 1.8857.

Runs (0) the reference, (1) the book's GPT-2 architecture and recipe, (2) the same architecture with the learning
rate tuned (`--tuned-lr`), (3) the book's modern recipe (RMSNorm, SwiGLU, RoPE, QK-norm and a higher learning rate)
for as many steps as fit in run (1)'s wall-clock time, (4) Muon for the matrices (chapter 7's optimiser; `--muon-lr`, AdamW at `--muon-adam-lr` for the rest) with the modern
architecture (`--muon-arch rope`: chapter 7's base-model recipe, RoPE with nanoGPT's GELU and LayerNorm) for as many
steps as fit in the reference's wall-clock time of the same invocation: the goal is a
val loss of at most 1.60 within nanoGPT's budget; and (5) short runs of (0) and (1) in alternation, whose tokens/s ratio
is the speed comparison. Prints a table.
Usage: python bench/train.py [--only reference gpt2 tuned modern muon speed] [--seeds 1337 1 2] [--speed-rounds 7]
   or: python -m bench.train [...]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
if not __package__:   # run as a script, python bench/train.py: make the repository importable, as -m does
    sys.path.insert(0, str(ROOT))
from bench.nanogpt import reference  # noqa: E402
from llm_from_scratch.model import GPTConfig  # noqa: E402
from llm_from_scratch.train import TrainConfig, TrainData, char_data, evaluate, read_metrics, train  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "tinyshakespeare.txt"
ISSUE = {"steps": 2000, "tok_per_s": 27_000, "val_loss": 1.886, "seconds": 80.0}   # nanoGPT as measured when the issue was written


def recipes(vocab_size: int, steps: int, modern_lr: float, tuned_lr: float, muon_lr: float = 0.02,
            muon_adam_lr: float = 8e-3, muon_arch: str = "modern") -> dict[str, tuple[GPTConfig, TrainConfig]]:
    arch = dict(vocab_size=vocab_size, block_size=64, n_layer=4, n_head=4, n_embd=128, dropout=0.0, bias=False)
    tc = TrainConfig(batch_size=12, max_steps=steps, lr=1e-3, min_lr=1e-4, warmup_steps=100, weight_decay=0.1,
                     beta1=0.9, beta2=0.99, grad_clip=1.0, eval_interval=250, eval_batches=20, ckpt_interval=0,
                     seed=1337, dtype="float32", device="cpu", threads=2)
    gpt2 = GPTConfig(**arch, gelu_approximate="none")    # nanoGPT's MLP uses the exact GELU
    return {"gpt2": (gpt2, tc), "tuned": (gpt2, replace(tc, lr=tuned_lr, min_lr=tuned_lr / 10)),
            "modern": (GPTConfig.modern(**arch), replace(tc, lr=modern_lr, min_lr=modern_lr / 10)),
            "muon": (GPTConfig.modern(**arch) if muon_arch == "modern" else GPTConfig(**arch, pos="rope",
                     gelu_approximate="none"), replace(tc, lr=muon_adam_lr, min_lr=muon_adam_lr / 10, optimizer="muon",
                                                       muon_lr=muon_lr))}


# ---- the book's runs ------------------------------------------------------------------------------------------------
def run(name: str, mcfg: GPTConfig, tcfg: TrainConfig, data: TrainData) -> dict:
    with tempfile.TemporaryDirectory() as d:
        t0 = time.perf_counter()
        res = train(mcfg, tcfg, data, d, progress=False)
        wall = time.perf_counter() - t0
    val200 = evaluate(res["model"], data.val, 12, mcfg.block_size, 200, seed=2024)
    return {"run": name, "steps": res["steps"], "tok/s": res["tok_per_s"], "wall s": wall,
            "val loss (20 batches)": res["val_loss"], "val loss (200 batches)": val200,
            "params": res["model"].num_params()}


def short_run(mcfg: GPTConfig, tcfg: TrainConfig, data: TrainData, steps: int) -> tuple[dict, dict[int, float]]:
    "Train for `steps` steps without evaluation; the summary and each step's time from the run's metrics log."
    with tempfile.TemporaryDirectory() as d:
        res = train(mcfg, replace(tcfg, max_steps=steps, eval_interval=10**9, eval_batches=1), data, d, progress=False)
        return res, {r["step"]: r["time"] for r in read_metrics(Path(d) / "metrics.jsonl")}


def steps_per_second(mcfg: GPTConfig, tcfg: TrainConfig, data: TrainData, n: int = 60) -> float:
    "Measured optimiser steps per second over `n` steps, after 10 warm-up steps."
    times = short_run(mcfg, tcfg, data, 10 + n)[1]
    return n / (times[10 + n] - times[10])


def speed_pairs(mcfg: GPTConfig, tcfg: TrainConfig, data: TrainData, rounds: int, steps: int = 300) -> list[tuple[float, float]]:
    """Training tokens/s of the reference and of the book's loop (nanoGPT's recipe), in `rounds` short runs of `steps`
    steps each, alternating which goes first: both see the same machine within seconds of each other, and a drift in its
    speed favours neither. Returns (reference, ours) pairs."""
    def ref() -> float:
        return reference(data, steps - 1, eval_interval=10**9, val_batches=0)["tok/s"]

    def ours() -> float:
        return short_run(mcfg, tcfg, data, steps)[0]["tok_per_s"]

    pairs = []
    for r in range(rounds):
        if r % 2: o = ours(); f = ref()
        else: f = ref(); o = ours()
        pairs.append((f, o))
    return pairs


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    ap.add_argument("--only", choices=("reference", "gpt2", "tuned", "modern", "muon", "speed"), nargs="+", default=None)
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--speed-rounds", type=int, default=7,
                    help="alternating 300-step runs of the reference and run (1) that measure the speed ratio")
    ap.add_argument("--tuned-lr", type=float, default=3e-3)
    ap.add_argument("--modern-lr", type=float, default=3e-3)
    ap.add_argument("--modern-steps", type=int, default=None, help="fix the modern run's steps instead of matching time")
    ap.add_argument("--muon-lr", type=float, default=0.02, help="Muon's learning rate for the matrices (run 4)")
    ap.add_argument("--muon-adam-lr", type=float, default=8e-3, help="AdamW's learning rate for the rest (run 4)")
    ap.add_argument("--muon-arch", choices=("rope", "modern"), default="modern",
                    help="run (4)'s architecture: chapter 7's (GPT-2 with RoPE) or the modern one (RMSNorm, SwiGLU, QK-norm)")
    ap.add_argument("--muon-steps", type=int, default=None, help="fix run (4)'s steps instead of matching the reference's time")
    ap.add_argument("--seeds", type=int, nargs="+", default=[1337],
                    help="seeds for the reference and run (1), to show the spread of the final loss")
    a = ap.parse_args(argv)
    if not DATA.exists():
        print(f"skipping: {DATA} is not there (nanoGPT's tinyshakespeare.txt, only needed for this benchmark)")
        return 0
    torch.set_num_threads(2)
    data = char_data(DATA, val_fraction=0.1)
    rs = recipes(data.vocab_size, a.steps, a.modern_lr, a.tuned_lr, a.muon_lr, a.muon_adam_lr, a.muon_arch)
    only = set(a.only or ("reference", "gpt2", "tuned", "modern", "muon", "speed"))
    rows: list[dict] = []
    for seed in a.seeds:
        if "reference" in only:
            rows.append(reference(data, a.steps, seed) | {"seed": seed, "kind": "reference"})
        if "gpt2" in only:
            mcfg, tcfg = rs["gpt2"]
            rows.append(run("ours, GPT-2 architecture, nanoGPT's recipe", mcfg, replace(tcfg, seed=seed), data)
                        | {"seed": seed, "kind": "gpt2"})
    pairs = speed_pairs(*rs["gpt2"], data, a.speed_rounds) if "speed" in only else []
    if "tuned" in only:
        rows.append(run(f"ours, GPT-2 architecture, lr {a.tuned_lr:g}", *rs["tuned"], data) | {"seed": 1337})
    if "modern" in only:
        mcfg, tcfg = rs["modern"]
        steps = a.modern_steps
        if steps is None:   # same wall-clock as run (1): scale its step count by the measured speed ratio
            g_rate, m_rate = steps_per_second(*rs["gpt2"], data), steps_per_second(mcfg, tcfg, data)
            steps = min(int(a.steps * m_rate / g_rate), a.steps)
        rows.append(run(f"ours, modern recipe (lr {a.modern_lr:g}), {steps} steps", mcfg,
                        replace(tcfg, max_steps=steps), data) | {"seed": 1337})
    if "muon" in only:
        mcfg, tcfg = rs["muon"]
        steps = a.muon_steps
        ref = [r for r in rows if r.get("kind") == "reference" and r["seed"] == a.seeds[-1]]
        if steps is None:   # the reference's wall-clock of this invocation, at this recipe's measured step rate
            budget = ref[0]["wall s"] if ref else ISSUE["seconds"]
            steps = int(budget * steps_per_second(mcfg, replace(tcfg, max_steps=a.steps), data))
        rows.append(run(f"ours, Muon {a.muon_lr:g}, {a.muon_arch} arch., {steps} steps", mcfg,
                        replace(tcfg, max_steps=steps, warmup_steps=min(tcfg.warmup_steps, steps // 10)), data)
                    | {"seed": 1337, "kind": "muon"})

    print(f"\nnanoGPT CPU recipe, tinyshakespeare char-level, {torch.get_num_threads()} threads "
          f"(shared machine: compare rows measured together)")
    print(f"{'run':<52}{'seed':>5}{'steps':>6}{'tok/s':>9}{'wall s':>8}{'val@20':>8}{'val@200':>9}{'params':>10}")
    print(f"{'nanoGPT when the issue was written':<52}{1337:>5}{ISSUE['steps']:>6}{ISSUE['tok_per_s']:>9,.0f}"
          f"{ISSUE['seconds']:>8.0f}{ISSUE['val_loss']:>8.3f}{'':>9}{'':>10}")
    for r in rows:
        print(f"{r['run']:<52}{r['seed']:>5}{r['steps']:>6}{r['tok/s']:>9,.0f}{r['wall s']:>8.1f}"
              f"{r['val loss (20 batches)']:>8.3f}{r['val loss (200 batches)']:>9.3f}{r['params']:>10,}")
    ref = [r for r in rows if r.get("kind") == "reference"]
    ours = [r for r in rows if r.get("kind") == "gpt2"]
    if ref and ours:
        print(f"\nmean val@200 over seeds {a.seeds}: reference {statistics.mean(r['val loss (200 batches)'] for r in ref):.4f}, "
              f"ours {statistics.mean(r['val loss (200 batches)'] for r in ours):.4f}")
    if pairs:
        print(f"\nspeed, {len(pairs)} alternating pairs of 300-step runs (tok/s, reference / ours): "
              + ", ".join(f"{r:,.0f}/{o:,.0f}" for r, o in pairs))
        print(f"median tokens/s: reference {statistics.median(r for r, _ in pairs):,.0f}, "
              f"ours {statistics.median(o for _, o in pairs):,.0f}; median ratio ours/reference "
              f"{statistics.median(o / r for r, o in pairs):.3f}")
    print("tok/s counts training tokens over training time (evaluation excluded); val@20 is nanoGPT's 20-batch estimate, "
          "val@200 a fixed 200-batch sample of the val split. No GPU here: MFU is not measured.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
