"""Throughput of the chapter 1 curation pipeline, step by step, on the standard library.

Usage: python bench/bench_data.py [MEGABYTES]   (default 8; 0 = the whole standard library)

Each step runs on the documents that survive the previous ones (as in `curate`), and its time is measured
separately. MinHash is also timed on its own (shingling vs. signature) and compared with a plain Python
implementation of the same hash family, to show what the NumPy vectorisation buys. Prints a table.
"""
from __future__ import annotations

import sys
import time

import numpy as np

from llm_from_scratch.data import MERSENNE_31, MinHasher, curate, default_steps, shingles, stdlib_documents


def main(mb: float = 8.0) -> None:
    docs = list(stdlib_documents(None if mb == 0 else int(mb * 1e6)))
    raw = sum(d.nbytes for d in docs)
    steps = default_steps()
    print(f"{len(docs)} documents, {raw / 1e6:.1f} MB of raw text\n")
    print(f"{'step':<14}{'docs in':>9}{'MB in':>8}{'seconds':>10}{'MB/s':>9}")
    total = 0.0
    for name, step in steps:
        mb_in = sum(d.nbytes for d in docs) / 1e6
        t = time.perf_counter()
        out = [step(d) for d in docs]
        dt = time.perf_counter() - t
        total += dt
        print(f"{name:<14}{len(docs):>9}{mb_in:>8.2f}{dt:>10.2f}{mb_in / dt:>9.1f}")
        docs = [o for o in out if not isinstance(o, str)]
    print(f"{'total':<14}{'':>9}{raw / 1e6:>8.2f}{total:>10.2f}{raw / 1e6 / total:>9.1f}")

    # MinHash: NumPy signatures vs a pure-Python loop over the same hash functions, on a sample
    sample = [d.text for d in docs[:60]]
    mh = MinHasher(128, seed=0)
    t = time.perf_counter(); sh = [shingles(s) for s in sample]; t_sh = time.perf_counter() - t
    t = time.perf_counter(); sigs = [mh.signature(s) for s in sh]; t_np = time.perf_counter() - t
    a, b = [int(v) for v in mh.a[:, 0]], [int(v) for v in mh.b[:, 0]]
    t = time.perf_counter()
    py = [[min((ai * (int(x) % MERSENNE_31) + bi) % MERSENNE_31 for x in s) if len(s) else MERSENNE_31
           for ai, bi in zip(a, b)] for s in sh]
    t_py = time.perf_counter() - t
    assert all(np.array_equal(np.array(p, dtype=np.uint32), s) for p, s in zip(py, sigs)), "same signatures"
    n_sh = sum(len(s) for s in sh)
    print(f"\nMinHash on {len(sample)} documents, {n_sh:,} shingles, 128 hash functions:")
    print(f"{'shingling':<28}{t_sh:>8.3f} s")
    print(f"{'signatures, NumPy':<28}{t_np:>8.3f} s  ({n_sh * 128 / t_np / 1e6:,.0f} M hash evaluations/s)")
    print(f"{'signatures, pure Python':<28}{t_py:>8.3f} s  ({t_py / t_np:,.0f}x slower, identical signatures)")


if __name__ == "__main__":
    main(float(sys.argv[1]) if len(sys.argv) > 1 else 8.0)
