"""Benchmark chapter 3's data loading against nanoGPT's way of doing the same (plain script, prints a table).

Rows: writing token shards (ours: resumable shards with a manifest; nanoGPT's prepare.py: one array, one tofile),
drawing random batches (ours: `random_batch` on `TokenShards`; nanoGPT's `get_batch` on an np.memmap), and iterating a
`SlidingWindowDataset` through a DataLoader with 0 and 2 workers. The text is the Python standard library's source
(always present), tokenised by bytes so that the tokenizer's speed does not hide the data path's.
Usage: python bench/dataloader_bench.py [--mb 8]
"""
from __future__ import annotations

import argparse
import sysconfig
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from llm_from_scratch.dataloader import SlidingWindowDataset, TokenShards, random_batch, write_shards


def stdlib_texts(mb: float) -> list[str]:
    out, total = [], 0
    for f in sorted(Path(sysconfig.get_paths()["stdlib"]).rglob("*.py")):
        t = f.read_text(encoding="utf-8", errors="replace")
        out.append(t); total += len(t)
        if total >= mb * 1e6: break
    return out


def enc(t: str) -> list[int]: return list(t.encode("utf-8"))


def best(fn, reps: int = 3) -> float:
    times = []
    for _ in range(reps):
        t0 = time.perf_counter(); fn(); times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(); ap.add_argument("--mb", type=float, default=8.0); a = ap.parse_args()
    texts = stdlib_texts(a.mb)
    n_tok = sum(len(t.encode()) + 1 for t in texts)
    rows = []
    with tempfile.TemporaryDirectory() as d:
        def ours(): write_shards(texts, enc, 256, Path(d, f"o{time.time_ns()}"), 2**20, progress=False)
        def nanogpt():
            ids = []
            for t in texts: ids.extend(enc(t)); ids.append(256)
            np.array(ids, dtype=np.uint16).tofile(Path(d, f"n{time.time_ns()}.bin"))
        rows.append(("write shards (ours, 1M-token shards)", n_tok / best(ours, 2), "tokens/s"))
        rows.append(("write train.bin (nanoGPT prepare.py)", n_tok / best(nanogpt, 2), "tokens/s"))

        path = write_shards(texts, enc, 256, Path(d, "s"), 2**20, progress=False)
        ts = TokenShards(path)
        data = np.memmap(Path(d, "flat.bin"), dtype=np.uint16, mode="w+", shape=(len(ts),)); data[:] = ts.tokens(); data.flush()
        data = np.memmap(Path(d, "flat.bin"), dtype=np.uint16, mode="r")
        B, T, n = 64, 256, 200
        g = torch.Generator().manual_seed(0)
        def ours_batches():
            for _ in range(n): random_batch(ts, B, T, g)
        def nanogpt_batches():                       # nanoGPT train.py get_batch, CPU branch
            for _ in range(n):
                ix = torch.randint(len(data) - T, (B,), generator=g)
                torch.stack([torch.from_numpy((data[i:i + T]).astype(np.int64)) for i in ix])
                torch.stack([torch.from_numpy((data[i + 1:i + 1 + T]).astype(np.int64)) for i in ix])
        rows.append((f"random batches B={B} T={T} (ours, TokenShards)", n * B * T / best(ours_batches), "tokens/s"))
        rows.append((f"random batches B={B} T={T} (nanoGPT get_batch)", n * B * T / best(nanogpt_batches), "tokens/s"))

        ds = SlidingWindowDataset(ts, T)
        for w in (0, 2):
            def loop():
                for i, _ in enumerate(DataLoader(ds, batch_size=B, shuffle=True, num_workers=w,
                                                 generator=torch.Generator().manual_seed(0))):
                    if i == 100: break
            rows.append((f"DataLoader windows B={B} T={T}, {w} workers", 101 * B * T / best(loop, 2), "tokens/s"))
    print(f"corpus: {len(texts)} stdlib files, {n_tok:,} byte tokens; torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads")
    print(f"{'what':<52} {'throughput':>14}")
    for name, v, unit in rows: print(f"{name:<52} {v / 1e6:>9.2f} M {unit}")


if __name__ == "__main__":
    main()
