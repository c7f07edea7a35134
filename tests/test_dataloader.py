"""Tests of llm_from_scratch.dataloader beyond the chapter's prose: properties, interruption by a hard kill, workers."""
from __future__ import annotations

import json
import pickle
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch.utils.data import DataLoader

from llm_from_scratch.dataloader import (MANIFEST, SlidingWindowDataset, TokenPositionEmbedding, TokenShards,
                                         random_batch, sinusoidal_positions, token_dtype, write_shards)

EOT = 256


def enc(text: str) -> list[int]:
    return list(text.encode("utf-8"))


def stream_of(texts, encode=enc, eot=EOT) -> np.ndarray:
    return np.concatenate([np.r_[np.asarray(encode(t), dtype=np.int64), eot] for t in texts]) if texts else np.zeros(0)


def folder_bytes(d: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(Path(d).iterdir())}


class Boom(Exception):
    pass


@pytest.fixture
def no_fsync(monkeypatch):
    "Durability against power loss is not what the property tests check; skipping fsync makes them fast."
    import llm_from_scratch.dataloader as dl
    monkeypatch.setattr(dl.os, "fsync", lambda fd: None)


texts_st = st.lists(st.text(max_size=40), min_size=0, max_size=30)


def test_token_dtype():
    assert token_dtype(1) == np.uint16 and token_dtype(2**16) == np.uint16
    assert token_dtype(2**16 + 1) == np.uint32 and token_dtype(2**32) == np.uint32
    for bad in (0, -5, 2**32 + 1, 3.0, True, "50257"):
        with pytest.raises(ValueError):
            token_dtype(bad)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(texts=texts_st, shard_tokens=st.integers(1, 50))
def test_roundtrip_matches_concatenation(tmp_path_factory, no_fsync, texts, shard_tokens):
    d = tmp_path_factory.mktemp("rt")
    ts = TokenShards(write_shards(texts, enc, EOT, d, shard_tokens=shard_tokens, progress=False))
    ref = stream_of(texts)
    assert len(ts) == len(ref) and ts.n_docs == len(texts)
    assert np.array_equal(ts.tokens(), ref)
    assert all(n == shard_tokens for n in ts.sizes[:-1]) and (not ts.sizes or 1 <= ts.sizes[-1] <= shard_tokens)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(texts=st.lists(st.text(max_size=30), min_size=1, max_size=25), shard_tokens=st.integers(1, 40), data=st.data())
def test_interrupted_then_resumed_is_byte_identical(tmp_path_factory, no_fsync, texts, shard_tokens, data):
    ref = folder_bytes(write_shards(texts, enc, EOT, tmp_path_factory.mktemp("ref"), shard_tokens, progress=False))
    fail_at = data.draw(st.integers(0, len(texts) - 1))
    calls = []

    def flaky(t):
        if len(calls) == fail_at: raise Boom()
        calls.append(t); return enc(t)

    run = tmp_path_factory.mktemp("run")
    with pytest.raises(Boom):
        write_shards(texts, flaky, EOT, run, shard_tokens, progress=False)
    write_shards(texts, enc, EOT, run, shard_tokens, progress=False)
    assert folder_bytes(run) == ref


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(sizes=st.lists(st.integers(0, 30), min_size=1, max_size=8), shard_tokens=st.integers(1, 17),
       a=st.integers(-80, 80), b=st.integers(-80, 80) | st.none(), step=st.sampled_from([None, 1, 2, 3, -1]))
def test_slicing_like_numpy(tmp_path_factory, no_fsync, sizes, shard_tokens, a, b, step):
    texts = ["x" * n for n in sizes]
    ts = TokenShards(write_shards(texts, enc, EOT, tmp_path_factory.mktemp("sl"), shard_tokens, progress=False))
    ref = stream_of(texts).astype(np.uint16)
    assert np.array_equal(ts[a:b:step], ref[a:b:step])
    if -len(ref) <= a < len(ref):
        assert ts[a] == ref[a]
    else:
        with pytest.raises(IndexError):
            ts[a]


def test_uint32_ids_roundtrip(tmp_path):
    big = lambda t: [70_000 + ord(c) for c in t]
    ts = TokenShards(write_shards(["ab", "c"], big, 5, tmp_path, 3, vocab_size=80_000, progress=False))
    assert ts.dtype == np.uint32 and ts.tokens().tolist() == [70_097, 70_098, 5, 70_099, 5]


def test_hard_kill_then_resume(tmp_path):
    "A process killed with os._exit (no cleanup, no finally) mid-way resumes to the bytes of an uninterrupted run."
    texts = [f"document {i} " + "word " * (i % 37) for i in range(400)]
    ref = folder_bytes(write_shards(texts, enc, EOT, tmp_path / "ref", 500, progress=False))
    script = textwrap.dedent(f"""
        import os, sys
        from llm_from_scratch.dataloader import write_shards
        texts = [f"document {{i}} " + "word " * (i % 37) for i in range(400)]
        n = 0
        def enc(t):
            global n
            n += 1
            if n == 250: os._exit(3)
            return list(t.encode())
        write_shards(texts, enc, 256, sys.argv[1], 500, progress=False)
    """)
    r = subprocess.run([sys.executable, "-c", script, str(tmp_path / "run")], capture_output=True, text=True)
    assert r.returncode == 3, r.stderr
    man = json.loads((tmp_path / "run" / MANIFEST).read_text())
    assert not man["complete"] and len(man["shards"]) > 0
    with pytest.raises(ValueError, match="incomplete"):
        TokenShards(tmp_path / "run")
    write_shards(texts, enc, EOT, tmp_path / "run", 500, progress=False)
    assert folder_bytes(tmp_path / "run") == ref


def test_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="write_shards"):
        TokenShards(tmp_path)
    with pytest.raises(ValueError, match="shard_tokens"):
        write_shards(["a"], enc, EOT, tmp_path / "x", shard_tokens=0)
    with pytest.raises(TypeError, match="not a str"):
        write_shards([b"bytes"], enc, EOT, tmp_path / "y", progress=False)
    d = write_shards(["hello world"] * 5, enc, EOT, tmp_path / "z", 10, progress=False)
    with open(d / "shard_00001.bin", "r+b") as f:
        f.truncate(4)
    with pytest.raises(ValueError, match="wrong size"):
        TokenShards(d)
    # fewer texts on resume than the interrupted run had finished
    calls = []
    def flaky(t):
        if len(calls) == 8: raise Boom()
        calls.append(t); return enc(t)
    with pytest.raises(Boom):
        write_shards(["abcdef"] * 10, flaky, EOT, tmp_path / "w", 5, progress=False)
    with pytest.raises(ValueError):
        write_shards(["abcdef"] * 2, enc, EOT, tmp_path / "w", 5, progress=False)


def test_pickle_does_not_copy_the_corpus(tmp_path):
    ts = TokenShards(write_shards(["y" * 5000] * 40, enc, EOT, tmp_path, 20_000, progress=False))
    assert len(ts) == 200_040
    blob = pickle.dumps(ts)
    assert len(blob) < 10_000
    ts2 = pickle.loads(blob)
    assert np.array_equal(ts2[19_990:20_010], ts[19_990:20_010])


@settings(max_examples=50, deadline=None)
@given(n=st.integers(2, 200), block=st.integers(1, 50), stride=st.integers(1, 60))
def test_windows_shifted_by_one(n, block, stride):
    toks = np.random.default_rng(n).integers(0, 1000, n).astype(np.uint16)
    if n < block + 1:
        with pytest.raises(ValueError):
            SlidingWindowDataset(toks, block, stride)
        return
    ds = SlidingWindowDataset(toks, block, stride)
    assert len(ds) == (n - block - 1) // stride + 1
    assert (len(ds) - 1) * stride + block + 1 <= n < len(ds) * stride + block + 1   # no window fits after the last
    for i in range(len(ds)):
        x, y = ds[i]
        assert x.dtype == torch.long and x.shape == (block,)
        assert torch.equal(x[1:], y[:-1])
        assert x.tolist() == toks[i * stride:i * stride + block].tolist() and int(y[-1]) == toks[i * stride + block]
    with pytest.raises(IndexError):
        ds[len(ds)]


def test_dataloader_workers_match_single_process(tmp_path):
    texts = [f"text number {i}: " + "abc " * (i % 11) for i in range(300)]
    path = write_shards(texts, enc, EOT, tmp_path, 1000, progress=False)
    ds = SlidingWindowDataset(path, block_size=16, stride=5)      # from a path: TokenShards inside
    def run(workers):
        dl = DataLoader(ds, batch_size=7, shuffle=True, num_workers=workers, generator=torch.Generator().manual_seed(3))
        return [torch.cat(b) for b in dl]
    a, b = run(0), run(2)
    assert len(a) == len(b) == -(-len(ds) // 7)
    assert all(torch.equal(p, q) for p, q in zip(a, b))


def test_random_batch(tmp_path):
    texts = [f"some text {i} " * 3 for i in range(200)]
    ts = TokenShards(write_shards(texts, enc, EOT, tmp_path, 333, progress=False))
    stream = ts.tokens()
    x, y = random_batch(ts, 64, 20, torch.Generator().manual_seed(0), device="cpu")
    x2, y2 = random_batch(stream, 64, 20, torch.Generator().manual_seed(0))
    assert torch.equal(x, x2) and torch.equal(y, y2) and x.dtype == torch.long and x.shape == (64, 20)
    assert torch.equal(x[:, 1:], y[:, :-1])
    g = torch.Generator().manual_seed(0)
    ix = torch.randint(len(stream) - 20, (64,), generator=g)
    assert torch.equal(x, torch.stack([torch.from_numpy(stream[i:i + 20].astype(np.int64)) for i in ix]))
    with pytest.raises(TypeError, match="Generator"):
        random_batch(ts, 4, 8, 0)
    with pytest.raises(ValueError):
        random_batch(np.arange(5), 4, 8, torch.Generator())
    x3, _ = random_batch(ts, 64, 20, torch.Generator().manual_seed(1))
    assert not torch.equal(x, x3)


def test_embeddings():
    pe = sinusoidal_positions(100, 16)
    i = torch.arange(8)
    for p in (0, 7, 99):
        assert torch.allclose(pe[p, 0::2], torch.sin(p / 10_000 ** (2 * i / 16)), atol=1e-6)
        assert torch.allclose(pe[p, 1::2], torch.cos(p / 10_000 ** (2 * i / 16)), atol=1e-6)
    with pytest.raises(ValueError):
        sinusoidal_positions(10, 7)
    emb = TokenPositionEmbedding(50, 8, 12)
    idx = torch.randint(0, 50, (3, 12))
    assert torch.allclose(emb(idx), emb.tok.weight[idx] + emb.pos.weight[:12])
    with pytest.raises(ValueError):
        TokenPositionEmbedding(50, 8, 12, positions="rotary")


def test_default_token_shards_decode_to_the_corpus():
    "End to end: the first document of the cached validation shards decodes to the corpus' first validation text."
    data = pytest.importorskip("llm_from_scratch.data")
    tokenizer = pytest.importorskip("llm_from_scratch.tokenizer")
    from llm_from_scratch.dataloader import default_token_shards, main
    tok = tokenizer.default_tokenizer()
    ts = TokenShards(default_token_shards("val", progress=False))
    first_text = next(iter(data.iter_texts("val")))
    end = int(np.argmax(ts[:len(first_text) + 10] == tok.eot_id))
    assert tok.decode(ts[:end].tolist()) == first_text
    assert ts.n_docs == sum(1 for _ in data.iter_texts("val"))
    assert main(["--split", "val", "--quiet"]) == 0
