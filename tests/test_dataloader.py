"""Tests of llm_from_scratch.dataloader beyond the chapter's prose: properties, interruption by a hard kill, workers."""
from __future__ import annotations

import hashlib
import io
import json
import pickle
import subprocess
import sys
import textwrap
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch.utils.data import DataLoader

from llm_from_scratch.core import UserError
from llm_from_scratch.dataloader import (MANIFEST, SlidingWindowDataset, TokenPositionEmbedding, TokenShards,
                                         random_batch, shards_damage, sinusoidal_positions, token_dtype, write_shards)

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
    with pytest.raises(UserError, match="shard_00001.bin has the wrong size.*llmfs shards --rebuild"):
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


def test_embedding_without_positions_and_default_init():
    emb = TokenPositionEmbedding(50, 8, 12, positions="none")
    idx = torch.randint(0, 50, (3, 12))
    assert torch.equal(emb(idx), emb.tok.weight[idx]) and emb.position(4) is None and emb.block_size == 12
    assert not hasattr(emb, "pos") and [n for n, _ in emb.named_parameters()] == ["tok.weight"]
    with pytest.raises(ValueError, match="block_size"):
        emb(torch.zeros(1, 13, dtype=torch.long))
    learned = TokenPositionEmbedding(50, 8, 12)
    assert isinstance(learned.tok, torch.nn.Embedding) and isinstance(learned.pos, torch.nn.Embedding)
    assert [n for n, _ in learned.named_parameters()] == ["tok.weight", "pos.weight"] and learned.block_size == 12
    assert list(TokenPositionEmbedding(50, 8, 12, positions="sinusoidal").state_dict()) == ["tok.weight"]
    torch.manual_seed(3); a = TokenPositionEmbedding(50, 8, 12)
    torch.manual_seed(3); t, p = torch.nn.Embedding(50, 8), torch.nn.Embedding(12, 8)
    assert torch.equal(a.tok.weight, t.weight) and torch.equal(a.pos.weight, p.weight), "nn.Embedding's initialisation"
    with pytest.raises(ValueError):
        TokenPositionEmbedding(50, 8, 0)


# ---------------------------------------------------------------- checksums and damaged folders
def test_manifest_records_checksums_and_max_ids(tmp_path):
    texts = ["hello world", "é", "abc" * 10]
    d = write_shards(texts, enc, EOT, tmp_path, 7, vocab_size=300, progress=False)
    man = json.loads((d / MANIFEST).read_text())
    assert man["version"] == 2 and man["shards"]
    for s in man["shards"]:
        data = np.fromfile(d / s["file"], dtype=np.uint16)
        assert s["sha256"] == hashlib.sha256((d / s["file"]).read_bytes()).hexdigest()
        assert s["max_id"] == int(data.max()) and s["tokens"] == data.size
    ts = TokenShards(d)
    assert ts.max_id == EOT and shards_damage(d) is None


@pytest.mark.parametrize("how", ["flip", "truncate", "extend", "delete"])
def test_damaged_shard_is_a_user_error_naming_the_file(tmp_path, how):
    d = write_shards([f"text {i} " * 20 for i in range(30)], enc, EOT, tmp_path, 100, progress=False)
    shard = d / "shard_00002.bin"
    b = bytearray(shard.read_bytes())
    if how == "flip": b[5] ^= 0x40; shard.write_bytes(bytes(b))
    elif how == "truncate": shard.write_bytes(bytes(b[:-1]))
    elif how == "extend": shard.write_bytes(bytes(b) + b"\0\0")
    else: shard.unlink()
    with pytest.raises(UserError) as e:
        TokenShards(d)
    assert str(shard) in str(e.value) and "llmfs shards --rebuild" in str(e.value)
    assert str(shard) in shards_damage(d)
    if how == "flip":                                             # same size: only the checksum notices
        assert len(TokenShards(d, verify=False)) > 0 and shards_damage(d, checksums=False) is None
    else:
        with pytest.raises(UserError):
            TokenShards(d, verify=False)


def test_damaged_manifest(tmp_path):
    d = write_shards(["abc"] * 5, enc, EOT, tmp_path, 4, progress=False)
    (d / MANIFEST).write_text('{"format": "llmfs-token-shards", "shards": [')
    with pytest.raises(UserError, match=f"{MANIFEST}.*damaged"):
        TokenShards(d)
    assert "damaged" in shards_damage(d)
    with pytest.raises(UserError):                                # resuming cannot trust it either
        write_shards(["abc"] * 5, enc, EOT, d, 4, progress=False)
    write_shards(["abc"] * 5, enc, EOT, d, 4, progress=False, overwrite=True)
    assert TokenShards(d).tokens().tolist() == stream_of(["abc"] * 5).tolist()


def test_checksums_survive_resumption(tmp_path):
    texts = [f"doc {i} " + "x" * (i % 13) for i in range(100)]
    calls = []
    def flaky(t):
        if len(calls) == 60: raise Boom()
        calls.append(t); return enc(t)
    with pytest.raises(Boom):
        write_shards(texts, flaky, EOT, tmp_path / "run", 50, progress=False)
    write_shards(texts, enc, EOT, tmp_path / "run", 50, progress=False)
    assert shards_damage(tmp_path / "run") is None
    assert folder_bytes(tmp_path / "run") == folder_bytes(write_shards(texts, enc, EOT, tmp_path / "ref", 50,
                                                                        progress=False))


class ByteTokenizer:
    "The smallest tokenizer with the interface default_token_shards needs."
    vocab_size, eot_id = 257, 256

    def encode_ordinary(self, text: str) -> list[int]:
        return list(text.encode("utf-8"))


@pytest.fixture
def tiny_default(tmp_path, monkeypatch):
    "default_token_shards over a small in-memory corpus and a byte tokenizer, in an empty cache."
    import llm_from_scratch.data as data
    import llm_from_scratch.tokenizer as tokenizer
    monkeypatch.setenv("LLMFS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("LLMFS_SCALE", "test")
    corpus = {"train": [f"train text {i} " * 5 for i in range(50)], "val": ["val text"] * 3}
    monkeypatch.setattr(data, "iter_texts", lambda split="train", *a, **k: iter(corpus[split]))
    monkeypatch.setattr(data, "corpus_checksum", lambda split="train", *a, **k: hashlib.sha256(
        json.dumps(corpus[split]).encode()).hexdigest())
    monkeypatch.setattr(tokenizer, "default_tokenizer", lambda *a, **k: ByteTokenizer())
    return corpus


@pytest.mark.parametrize("how", ["flip", "truncate", "manifest"])
def test_default_token_shards_rebuilds_a_damaged_cache(tiny_default, how):
    from llm_from_scratch.dataloader import default_token_shards
    path = default_token_shards("train", progress=False)
    ref = TokenShards(path).tokens().copy()
    assert ref.tolist() == stream_of(tiny_default["train"]).tolist()
    shard = path / "shard_00000.bin"
    if how == "flip":
        b = bytearray(shard.read_bytes()); b[0] ^= 1; shard.write_bytes(bytes(b))
    elif how == "truncate": shard.write_bytes(shard.read_bytes()[:10])
    else: (path / MANIFEST).unlink()
    with pytest.warns(UserWarning, match="tokenising again"):
        again = default_token_shards("train", progress=False)
    assert again == path and np.array_equal(TokenShards(again).tokens(), ref)


def test_default_token_shards_keyed_by_corpus(tiny_default):
    from llm_from_scratch.dataloader import default_token_shards
    a = default_token_shards("train", progress=False)
    tiny_default["train"] = tiny_default["train"][:-1]              # another corpus: other shards
    b = default_token_shards("train", progress=False)
    assert a != b and len(TokenShards(b)) < len(TokenShards(a))


def test_default_token_shards_decode_to_the_corpus():
    "End to end: the first document of the cached validation shards decodes to the corpus' first validation text."
    data = pytest.importorskip("llm_from_scratch.data")
    tokenizer = pytest.importorskip("llm_from_scratch.tokenizer")
    from llm_from_scratch.cli import main
    from llm_from_scratch.dataloader import default_token_shards
    tok = tokenizer.default_tokenizer()
    ts = TokenShards(default_token_shards("val", progress=False))
    first_text = next(iter(data.iter_texts("val")))
    end = int(np.argmax(ts[:len(first_text) + 10] == tok.eot_id))
    assert tok.decode(ts[:end].tolist()) == first_text
    assert ts.n_docs == sum(1 for _ in data.iter_texts("val"))
    out = io.StringIO()
    with redirect_stdout(out), redirect_stderr(io.StringIO()):
        assert main(["shards", "--split", "val", "--quiet"]) == 0
    assert out.getvalue().startswith("val: TokenShards(")


# --- exercises of chapter 3 -------------------------------------------------------------------------------------------
def test_exercise_plain_shards(tmp_path):
    "Exercise 1 of chapter 3: a plain sharder in NumPy, checked byte for byte against write_shards' files."
    def plain_shards(texts, encode, eot_id, out_dir, shard_tokens):
        out_dir = Path(out_dir); out_dir.mkdir(parents=True, exist_ok=True)
        ids = np.concatenate([np.r_[np.asarray(encode(t), dtype=np.int64), eot_id] for t in texts])
        ids = ids.astype(np.uint16)
        files = []
        for i, start in enumerate(range(0, len(ids), shard_tokens)):
            f = out_dir / f"shard_{i:05d}.bin"
            ids[start:start + shard_tokens].tofile(f)
            files.append(f)
        return files
    texts = [f"document {i}: " + "word " * (i % 17) for i in range(60)]
    ours = plain_shards(texts, enc, EOT, tmp_path / "plain", 100)
    ref = write_shards(texts, enc, EOT, tmp_path / "ref", shard_tokens=100, progress=False)
    theirs = sorted(ref.glob("shard_*.bin"))
    assert [f.name for f in ours] == [f.name for f in theirs]
    assert all(a.read_bytes() == b.read_bytes() for a, b in zip(ours, theirs))
    back = np.memmap(ours[0], dtype=np.uint16, mode="r")
    assert np.array_equal(back, TokenShards(ref)[:100])


def test_exercise_unfold_windows():
    "Exercise 2 of chapter 3: all windows at once with Tensor.unfold, checked against SlidingWindowDataset."
    def unfold_windows(tokens: torch.Tensor, block_size: int, stride: int):
        w = tokens.unfold(0, block_size + 1, stride)              # a view: (n_windows, block_size + 1)
        return w[:, :-1].long(), w[:, 1:].long()
    stream = np.random.default_rng(0).integers(0, 257, 1000).astype(np.uint16)
    for block, stride in [(8, 8), (8, 3), (31, 40), (999, 1)]:
        x, y = unfold_windows(torch.from_numpy(stream.astype(np.int64)), block, stride)
        ds = SlidingWindowDataset(stream, block, stride)
        assert len(x) == len(ds)
        for i in range(len(ds)):
            assert torch.equal(x[i], ds[i][0]) and torch.equal(y[i], ds[i][1])
