"""Benchmark: training and encoding speed of the book's BPE tokenizer (chapter 2).

Trains on ~10 MB of the default corpus (Python standard library source, from `llm_from_scratch.data` when available)
with a vocabulary of 8192 ids, and compares:
  * ours (`BPETokenizer.train`: parallel pre-tokenisation + incremental pair counts),
  * Hugging Face `tokenizers` (BpeTrainer with a ByteLevel pre-tokenizer, same vocabulary size),
  * the naive trainer that recounts every pair after every merge (timed on a few merges, extrapolated linearly).
Then measures single-thread encoding throughput through tiktoken (and of the pure-Python reference encoder).

Usage: python bench/tokenizer.py [--mb 10] [--vocab 8192] [--naive-merges 20]
Not a test: prints a table.
"""
from __future__ import annotations

import argparse
import os
import sys
import sysconfig
import time
from pathlib import Path


def corpus_texts(max_chars: int) -> list[str]:
    "About `max_chars` characters of documents from the default corpus (chapter 1), else the stdlib's .py files directly."
    texts, total = [], 0
    try:
        from llm_from_scratch.data import iter_texts
        raw = int(max_chars * 1.5)   # curation removes some text; read more raw text than we need
        source = iter_texts("train", max_bytes=raw)
        origin = f"llm_from_scratch.data.iter_texts('train', max_bytes={raw})"
    except ImportError:
        stdlib = Path(sysconfig.get_paths()["stdlib"])
        files = sorted(p for p in stdlib.rglob("*.py") if "site-packages" not in p.parts)
        source = (p.read_text(encoding="utf-8", errors="replace") for p in files)
        origin = f"{stdlib}/**/*.py (llm_from_scratch.data not available)"
    for t in source:
        texts.append(t); total += len(t)
        if total >= max_chars: break
    return texts, origin


def timed(fn):
    t0 = time.perf_counter(); out = fn(); return out, time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--mb", type=float, default=10.0, help="corpus size in MB of text (default 10)")
    ap.add_argument("--vocab", type=int, default=8192, help="vocabulary size (default 8192)")
    ap.add_argument("--naive-merges", type=int, default=20, help="merges to time the naive trainer on (extrapolated)")
    args = ap.parse_args(argv)

    from llm_from_scratch.tokenizer import EOT, BPETokenizer, count_pretokens, train_bpe_naive

    texts, origin = corpus_texts(int(args.mb * 1e6))
    nbytes = sum(len(t.encode()) for t in texts)
    print(f"corpus: {len(texts)} documents, {nbytes / 1e6:.1f} MB from {origin}")
    print(f"cpu cores: {os.cpu_count()}, load average: {os.getloadavg()[0]:.1f}")
    rows = []

    ours, t_ours = timed(lambda: BPETokenizer.train(texts, args.vocab, special_tokens=[EOT]))
    rows.append(("ours: BPETokenizer.train", f"{t_ours:.1f} s", "measured"))

    try:
        from tokenizers import Tokenizer as HFTokenizer, models, pre_tokenizers, trainers, decoders
        def hf_train():
            hf = HFTokenizer(models.BPE())
            hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
            hf.decoder = decoders.ByteLevel()
            tr = trainers.BpeTrainer(vocab_size=args.vocab, special_tokens=[EOT], show_progress=False,
                                     initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
            hf.train_from_iterator(texts, trainer=tr)
            return hf
        hf, t_hf = timed(hf_train)
        rows.append(("HF tokenizers BpeTrainer (ByteLevel)", f"{t_hf:.1f} s", f"measured; ours / HF = {t_ours / t_hf:.1f}x"))
    except ImportError:
        t_hf = None
        rows.append(("HF tokenizers BpeTrainer (ByteLevel)", "n/a", "tokenizers not installed"))

    counts, t_count = timed(lambda: count_pretokens(texts, ours.pattern, [EOT]))
    k = args.naive_merges
    _, t_naive_k = timed(lambda: train_bpe_naive(counts, k))
    n_merges = args.vocab - 257
    est = t_count + t_naive_k / k * n_merges
    rows.append(("naive: recount after every merge", f"~{est / 60:.0f} min",
                 f"extrapolated: {k} merges took {t_naive_k:.1f} s, x {n_merges} merges (+ counting {t_count:.1f} s)"))

    sample = "".join(texts)
    mb = len(sample.encode()) / 1e6
    enc = ours.tiktoken_encoding
    cpu0 = time.process_time()
    ids, t_enc = timed(lambda: enc.encode_ordinary(sample))
    cpu_enc = time.process_time() - cpu0
    assert ours.decode(ids) == sample
    rows.append(("encode, tiktoken backend (1 thread)", f"{mb / t_enc:.1f} MB/s",
                 f"{mb:.1f} MB, {nbytes / len(ids):.2f} bytes/token; {mb / cpu_enc:.1f} MB per CPU-second"))
    part = sample[: 1_000_000]
    ref, t_ref = timed(lambda: ours.encode_reference(part, disallowed_special=()))
    assert ref == enc.encode_ordinary(part)
    rows.append(("encode, pure-Python reference", f"{len(part.encode()) / 1e6 / t_ref:.2f} MB/s", f"first {len(part.encode()) / 1e6:.1f} MB; ids identical to tiktoken's"))

    w = max(len(r[0]) for r in rows), max(len(r[1]) for r in rows)
    print(f"\n{'what':<{w[0]}}  {'result':>{w[1]}}  notes")
    print(f"{'-' * w[0]}  {'-' * w[1]}  -----")
    for a, b, c in rows: print(f"{a:<{w[0]}}  {b:>{w[1]}}  {c}")
    mbs, mbs_cpu = mb / t_enc, mb / cpu_enc
    print(f"\ngoals: training within 3x of HF tokenizers -> {'met' if t_hf and t_ours <= 3 * t_hf else 'NOT met'}; "
          f"encoding >= 10 MB/s -> wall clock {'met' if mbs >= 10 else 'NOT met'} ({mbs:.1f}), "
          f"per CPU-second {'met' if mbs_cpu >= 10 else 'NOT met'} ({mbs_cpu:.1f})")
    print(f"notes: ours pre-tokenises with GPT-4's pattern, HF's ByteLevel with GPT-2's; both train on all cores. "
          f"Load average at the end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores (other jobs slow wall-clock numbers).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
