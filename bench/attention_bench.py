"""Benchmark chapter 4's attention implementations (plain script, prints a table).

Forward and forward+backward time of one multi-head self-attention layer (causal, fp32) computed four ways:
the position loop (small T only), our explicit matrices (`fused=False`), our module on F.scaled_dot_product_attention,
and PyTorch's nn.MultiheadAttention with the same weights. Usage: python bench/attention_bench.py [--device cpu]
"""
from __future__ import annotations

import argparse
import time

import torch

from llm_from_scratch.attention import MultiHeadAttention, attention_loop, causal_mask, to_torch_mha


def timeit(fn, device, reps: int = 5) -> float:
    fn()
    if device.type == "cuda": torch.cuda.synchronize()
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter(); fn()
        if device.type == "cuda": torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--d", type=int, default=256); ap.add_argument("--heads", type=int, default=8)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--T", type=int, nargs="+", default=[128, 512, 1024])
    a = ap.parse_args()
    dev = torch.device(a.device)
    torch.manual_seed(0)
    print(f"device {dev}, torch {torch.__version__}, {torch.get_num_threads()} threads; "
          f"B={a.batch}, d={a.d}, {a.heads} heads, causal, fp32; best of 5, ms")
    print(f"{'T':>6} {'pass':<9} {'loop':>9} {'explicit':>9} {'fused':>9} {'nn.MHA':>9}")
    for T in a.T:
        m = MultiHeadAttention(a.d, a.heads).to(dev)
        ref = to_torch_mha(m).to(dev)
        x = torch.randn(a.batch, T, a.d, device=dev, requires_grad=True)
        mask = ~causal_mask(T, device=dev)
        for backward in (False, True):
            def run(f):
                def g():
                    if backward:
                        x.grad = None; f().sum().backward()
                    else:
                        with torch.no_grad(): f()
                return g
            def ours(fused):
                def f(): m.fused = fused; return m(x)
                return f
            res = {"explicit": timeit(run(ours(False)), dev), "fused": timeit(run(ours(True)), dev),
                   "nn.MHA": timeit(run(lambda: ref(x, x, x, attn_mask=mask, need_weights=False)[0]), dev)}
            if T <= 128 and not backward:
                q = torch.randn(T, a.d // a.heads, device=dev)
                res["loop"] = timeit(lambda: [attention_loop(q, q, q) for _ in range(a.batch * a.heads)], dev, reps=1)
            cells = " ".join(f"{1e3 * res[k]:>9.2f}" if k in res else f"{'-':>9}" for k in ("loop", "explicit", "fused", "nn.MHA"))
            print(f"{T:>6} {'fwd+bwd' if backward else 'forward':<9} {cells}")


if __name__ == "__main__":
    main()
