#!/usr/bin/env python
"""Benchmark (not a test): model FLOPs utilisation (MFU) of the book's training loop for GPT-2 small (124M) on a GPU.

MFU = (training FLOPs per token, from chapter 5's `flops_per_token`) x (tokens per second) / (the GPU's peak dense
bf16 FLOP/s). The run is the book's own `train`: bf16 autocast, `torch.compile`, fused attention
(`F.scaled_dot_product_attention`), the chapter's AdamW, on random tokens (the data does not change the arithmetic).
Tokens/s is read from the run's metrics log after the warm-up steps (which include compilation).

Without a CUDA GPU it says so and stops; `--smoke` runs a tiny model on the CPU instead, to check the script itself
(its MFU against a CPU "peak" means little). Usage:
  python bench/mfu.py [--batch 16] [--steps 40] [--warmup 15] [--peak-tflops 989]
  python bench/mfu.py --smoke          (or: python -m bench.mfu ...)
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
if not __package__:   # run as a script, python bench/mfu.py: make the repository importable, as -m does
    sys.path.insert(0, str(ROOT))
from llm_from_scratch.model import GPTConfig, flops_per_token  # noqa: E402
from llm_from_scratch.train import TrainConfig, TrainData, read_metrics, train  # noqa: E402

# Peak dense bf16 tensor-core FLOP/s (no sparsity), from the vendors' data sheets; the first name that matches wins.
PEAK_BF16 = [("H100 PCIe", 756e12), ("H100", 989e12), ("H200", 989e12), ("GH200", 989e12), ("A100", 312e12),
             ("L40S", 362e12), ("L4", 121e12), ("A10G", 70e12)]


def peak_flops(device_name: str) -> float | None:
    "Peak dense bf16 FLOP/s of the GPU called `device_name`, or None when it is not in `PEAK_BF16`."
    return next((f for name, f in PEAK_BF16 if name in device_name), None)


def measure(cfg: GPTConfig, tcfg: TrainConfig, warmup: int) -> dict:
    "Train `cfg` for `tcfg.max_steps` steps on random tokens; tokens/s over the steps after `warmup`."
    if tcfg.max_steps <= warmup: raise ValueError(f"--steps ({tcfg.max_steps}) must be larger than --warmup ({warmup})")
    g = torch.Generator().manual_seed(0)
    n = max(10 * tcfg.batch_size * (cfg.block_size + 1), 1_000_000)
    tokens = torch.randint(0, cfg.vocab_size, (n,), generator=g, dtype=torch.int32)
    data = TrainData("random", tokens, tokens[: n // 10], cfg.vocab_size)
    with tempfile.TemporaryDirectory() as d:
        train(cfg, tcfg, data, d, progress=True)
        t = {r["step"]: r["time"] for r in read_metrics(Path(d) / "metrics.jsonl")}
    steps = tcfg.max_steps - warmup
    tok_s = steps * tcfg.batch_size * tcfg.grad_accum * cfg.block_size / (t[tcfg.max_steps] - t[warmup])
    return {"tok/s": tok_s, "model TFLOP/s": tok_s * flops_per_token(cfg)["train"] / 1e12}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    ap.add_argument("--batch", type=int, default=16, help="sequences of 1024 tokens per step")
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--warmup", type=int, default=15, help="steps left out of the timing (compilation happens here)")
    ap.add_argument("--peak-tflops", type=float, default=None, help="the GPU's peak dense bf16 TFLOP/s, if not known")
    ap.add_argument("--no-compile", action="store_true")
    ap.add_argument("--smoke", action="store_true", help="tiny model on the CPU, fp32, to check this script")
    a = ap.parse_args(argv)
    cfg = GPTConfig(vocab_size=50304, block_size=1024, n_layer=12, n_head=12, n_embd=768, dropout=0.0, bias=False)
    tcfg = TrainConfig(batch_size=a.batch, max_steps=a.steps, lr=6e-4, min_lr=6e-5, warmup_steps=10, grad_clip=1.0,
                       eval_interval=10**9, eval_batches=1, ckpt_interval=0, device="cuda", dtype="bfloat16",
                       compile=not a.no_compile, seed=0)
    if a.smoke:
        cfg = replace(cfg, vocab_size=512, block_size=64, n_layer=2, n_head=2, n_embd=64)
        tcfg = replace(tcfg, device="cpu", dtype="float32", batch_size=4)
        peak, name = (a.peak_tflops or 1.0) * 1e12, "CPU (smoke run; peak given by --peak-tflops, default 1)"
    elif not torch.cuda.is_available():
        print("skipping: no CUDA GPU here, and MFU is measured against a GPU's peak (use --smoke to check the script)")
        return 0
    else:
        name = torch.cuda.get_device_name()
        peak = a.peak_tflops * 1e12 if a.peak_tflops else peak_flops(name)
        if peak is None:
            print(f"unknown peak for {name!r}: pass --peak-tflops (its dense bf16 TFLOP/s)")
            return 2
    r = measure(cfg, tcfg, a.warmup)
    fpt = flops_per_token(cfg)
    print(f"\n{name}: GPT-2 {cfg.n_layer} layers, d={cfg.n_embd}, "
          f"{fpt['train'] / 1e9:.3f} GFLOP per training token, batch {tcfg.batch_size} x {cfg.block_size}, "
          f"{tcfg.dtype}, compile={tcfg.compile}")
    print(f"tokens/s {r['tok/s']:,.0f}; model {r['model TFLOP/s']:.1f} TFLOP/s of {peak / 1e12:g} peak: "
          f"MFU {100 * r['model TFLOP/s'] * 1e12 / peak:.1f} %")
    return 0


if __name__ == "__main__":
    sys.exit(main())
