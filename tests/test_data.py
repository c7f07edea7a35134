"""Tests of llm_from_scratch.data that do not belong in the chapter's prose: properties, error paths, the CLI."""
from __future__ import annotations

import hashlib
import html
import io
import itertools
import json
import os
import sys
import types
import unicodedata
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from llm_from_scratch import data as D
from llm_from_scratch.core import UserError
from llm_from_scratch.data import Document

SHARED_SHAKESPEARE = Path(__file__).resolve().parents[2] / "shared" / "data" / "tinyshakespeare.txt"


@pytest.fixture
def cache(tmp_path, monkeypatch):
    "An empty artefact cache for one test (test scale)."
    monkeypatch.setenv("LLMFS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("LLMFS_SCALE", "test")
    return tmp_path / "cache"


# ---------------------------------------------------------------- normalisation and whitespace (properties)
texts = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=300)
linesy = st.lists(st.sampled_from(["", " ", "\t", "x", "  y = 1", "\r", "\r\n", "\n", "\f", "é", "e\u0301", "  "]),
                  max_size=40).map("".join)


@given(st.one_of(texts, linesy))
def test_clean_whitespace_properties(s):
    c = D.clean_whitespace(s)
    assert D.clean_whitespace(c) == c                       # idempotent
    assert "\r" not in c and "\f" not in c and "\v" not in c
    assert all(line == line.rstrip() for line in c.split("\n"))
    assert "\n\n\n\n" not in c                              # at most two blank lines in a row
    assert "".join(c.split()) == "".join(s.split())         # no visible character is lost or added
    assert c == "" or (c.endswith("\n") and not c.endswith("\n\n"))


@given(st.one_of(texts, linesy), st.sampled_from(D.NORMAL_FORMS))
def test_normalize_unicode_properties(s, form):
    n = D.normalize_unicode(s, form)
    assert unicodedata.is_normalized(form, n) and D.normalize_unicode(n, form) == n
    assert not n.startswith("\ufeff")


def test_normalize_unicode_bad_form():
    with pytest.raises(ValueError, match="NFC"):
        D.normalize_unicode("x", "NFX")


def test_nfc_vs_nfkc():
    assert D.normalize_unicode("e\u0301") == "\u00e9"
    assert D.normalize_unicode("x²") == "x²" and D.normalize_unicode("x²", "NFKC") == "x2"


# ---------------------------------------------------------------- HTML
@given(st.text(alphabet=st.characters(blacklist_categories=("Cs", "Cc", "Zs", "Zl", "Zp")), min_size=1, max_size=80))
def test_html_to_text_recovers_escaped_text(s):
    page = f"<html><head><title>t</title></head><body><p>{html.escape(s)}</p><script>var x = '<p>no</p>';</script></body></html>"
    assert D.html_to_text(page) == s.strip() + "\n"


def test_html_to_text_structure():
    t = D.html_to_text("<h1>Title</h1><p>a   b\n c</p><ul><li>one</li><li>two</li></ul><pre>  keep\n    this</pre>"
                       "<style>p{}</style><nav>menu</nav>&lt;tag&gt; &amp; &#233;")
    assert t == "Title\n\na b c\n\none\n\ntwo\n\n  keep\n    this\n<tag> & é\n"


# ---------------------------------------------------------------- boilerplate, quality, PII
def test_licence_header():
    src = "#!/usr/bin/env python3\n# Copyright (c) 2001 Someone\n# Licensed under the PSF licence.\n\nimport os\n"
    header, rest = D.split_licence_header(src)
    assert header.startswith("#!") and "Licensed" in header and rest.lstrip() == "import os\n"
    assert D.split_licence_header("#!/usr/bin/env python3\n# Just a tool.\nimport os\n")[0] == ""
    md = "# Heading\nText\nAll rights reserved.\n"
    assert D.strip_boilerplate(md, fmt="md") == "# Heading\nText\n"


def test_quality_rules_on_real_and_junk_text():
    good = D.read_python_source(D.stdlib_root() / "json" / "decoder.py")
    assert D.quality_issues(good) == []
    assert "digit ratio" in D.quality_issues("\n".join(" ".join(f"{i * j:06d}" for j in range(10)) for i in range(30)))
    assert "symbol ratio" in D.quality_issues(" ".join(["}{)(][;:!?"] * 60))
    assert "long lines" in D.quality_issues("blob = '" + "abcd efgh " * 300 + "'\n" + "def f(x): return x\n" * 3)
    assert D.quality_issues("word " * 100, D.QualityRules(min_words=200)) == ["too few words"]


emails = st.from_regex(r"[a-z]{1,8}(\.[a-z]{1,5})?@[a-z]{2,8}\.(org|com|net|de)", fullmatch=True)


@given(st.lists(st.one_of(emails, st.sampled_from(["text", "@decorator", "1.2", "x@y", " ", "\n"])), max_size=12))
def test_mask_pii_properties(parts):
    s = " ".join(parts)
    m = D.mask_pii(s)
    assert D.mask_pii(m) == m and D.find_pii(m) == []
    for p in parts:
        if "@" in p and "." in p.split("@")[1] and not p.endswith(("example.com", "example.org", "example.net")):
            assert p not in m.split()


def test_mask_pii_ips():
    assert D.mask_pii("a 8.8.8.8 b 127.0.0.1 c 192.168.1.1 d 203.0.113.5 e 999.1.1.1") == \
        "a <IP> b 127.0.0.1 c 192.168.1.1 d 203.0.113.5 e 999.1.1.1"


# ---------------------------------------------------------------- dedup: MinHash against exact Jaccard, LSH
def random_pair(rng, n, shared):
    u = rng.choice(2**32, size=2 * n - shared, replace=False).astype(np.uint64)
    return np.unique(u[:n]), np.unique(np.concatenate([u[:shared], u[n:]]))


def test_minhash_estimates_exact_jaccard():
    rng, mh = np.random.default_rng(1), D.MinHasher(256, seed=3)
    errs = []
    for _ in range(200):
        n = int(rng.integers(20, 400)); shared = int(rng.integers(0, n + 1))
        a, b = random_pair(rng, n, shared)
        j = D.jaccard(a, b)
        assert j == pytest.approx(shared / (2 * n - shared))
        errs.append(D.minhash_jaccard(mh.signature(a), mh.signature(b)) - j)
    errs = np.array(errs)
    assert np.abs(errs).mean() < 0.03 and np.abs(errs).max() < 0.15 and abs(errs.mean()) < 0.01  # unbiased


def test_minhash_basics():
    mh = D.MinHasher(64, seed=0)
    s = D.shingles("the quick brown fox jumps over the lazy dog " * 3)
    assert mh.signature(s).dtype == np.uint32 and np.array_equal(mh.signature(s), mh.signature(s.copy()))
    assert D.minhash_jaccard(mh.signature(s), mh.signature(s)) == 1.0
    assert D.jaccard(np.array([], dtype=np.uint64), np.array([], dtype=np.uint64)) == 1.0
    assert len(D.shingles("one two")) == 1 and len(D.shingles("")) == 0
    with pytest.raises(ValueError):
        D.minhash_jaccard(np.zeros(3), np.zeros(4))
    with pytest.raises(ValueError, match="divide"):
        D.LSHIndex(128, bands=10)


def test_lsh_follows_s_curve():
    rng, mh = np.random.default_rng(7), D.MinHasher(128, seed=11)
    for s in (0.3, 0.6, 0.75, 0.9):
        trials, hits = 300, 0
        for _ in range(trials):
            n = 150; shared = round(2 * n * s / (1 + s))
            a, b = random_pair(rng, n, shared)
            idx = D.LSHIndex(128, 16); idx.insert(0, mh.signature(a))
            hits += idx.query(mh.signature(b)) == [0]
        p = float(D.lsh_probability(shared / (2 * n - shared), 16, 8))
        assert abs(hits / trials - p) <= 4 * np.sqrt(p * (1 - p) / trials) + 0.02, (s, hits / trials, p)


def test_exact_and_near_dedup():
    base = " ".join(f"word{i} is a word of the text number {i % 7}" for i in range(80))
    edited = base.replace("word5 ", "WORDFIVE ")
    other = " ".join(f"different{i} content here {i}" for i in range(80))
    docs = [Document("a", base), Document("b", base), Document("c", edited), Document("d", other)]
    assert [d.id for d in D.exact_dedup(docs)] == ["a", "c", "d"]
    assert [d.id for d in D.near_dedup(docs)] == ["a", "d"]
    nd = D.NearDedup()
    assert nd(docs[0]) is docs[0] and nd(docs[2]).startswith("near duplicate of a")


# ---------------------------------------------------------------- split
@settings(max_examples=50)
@given(st.lists(st.text(min_size=1, max_size=30), min_size=1, max_size=200, unique=True))
def test_split_is_deterministic_and_disjoint(ids):
    a = {i: D.split_of(i) for i in ids}
    b = {i: D.split_of(i) for i in reversed(ids)}
    assert a == b and set(a.values()) <= set(D.SPLITS)
    train = {i for i, s in a.items() if s == "train"}; val = {i for i, s in a.items() if s == "val"}
    assert not train & val and train | val == set(ids)


def test_split_fraction():
    ids = [f"doc{i}" for i in range(20000)]
    frac = np.mean([D.split_of(i) == "val" for i in ids])
    assert abs(frac - D.VAL_FRACTION) < 0.01
    assert all(D.split_of(i, val_fraction=0) == "train" for i in ids[:100])
    with pytest.raises(ValueError):
        D.split_of("x", val_fraction=1.5)


# ---------------------------------------------------------------- sources
def test_stdlib_documents_order_and_limit():
    docs = list(D.stdlib_documents(max_bytes=100_000))
    assert [d.id for d in docs] == sorted(d.id for d in docs) and all(d.id.startswith("stdlib:") for d in docs)
    assert list(itertools.islice(D.stdlib_documents(), len(docs))) == docs
    with pytest.raises(ValueError):
        next(D.stdlib_documents(max_bytes=0))
    with pytest.raises(UserError, match="/nonexistent-folder"):
        next(D.stdlib_documents(root="/nonexistent-folder"))


def test_read_python_source_coding_cookie(tmp_path):
    p = tmp_path / "latin.py"
    p.write_bytes("# -*- coding: latin-1 -*-\ns = 'caf\xe9'\n".encode("latin-1"))
    assert "café" in D.read_python_source(p)


def test_folder_documents(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "a.txt").write_text("plain text")
    (tmp_path / "sub" / "b.md").write_text("# md")
    (tmp_path / "c.html").write_text("<p>hi</p>")
    (tmp_path / "ignored.bin").write_bytes(b"\x00")
    (tmp_path / "d.jsonl").write_text(json.dumps({"id": 7, "text": "rec"}) + "\n\n" + json.dumps({"text": "two"}) + "\n")
    docs = list(D.folder_documents(tmp_path, source="f"))
    assert [(d.id, d.meta["format"]) for d in docs] == [("f:a.txt", "txt"), ("f:c.html", "html"), ("f:7", "txt"),
                                                          ("f:d.jsonl:3", "txt"), ("f:sub/b.md", "md")]
    out = list(D.curate(D.folder_documents(tmp_path), steps=D.default_steps()[:4]))
    assert next(d for d in out if d.id.endswith("c.html")).text == "hi\n"
    (tmp_path / "e.jsonl").write_text(json.dumps({"body": "x"}) + "\n")
    with pytest.raises(ValueError, match="text_field"):
        list(D.folder_documents(tmp_path))
    (tmp_path / "e.jsonl").write_text("{not json\n")
    with pytest.raises(ValueError, match="e.jsonl:1"):
        list(D.folder_documents(tmp_path))
    with pytest.raises(UserError, match="a.txt is not a folder"):
        next(D.folder_documents(tmp_path / "a.txt"))


def test_download_file_url_and_cache(cache, tmp_path):
    src = tmp_path / "data.txt"; src.write_bytes(b"hello corpus\n" * 1000)
    sha = hashlib.sha256(src.read_bytes()).hexdigest()
    p = D.download(src.as_uri(), sha)
    assert p.read_bytes() == src.read_bytes() and cache in p.parents
    src.write_bytes(b"changed upstream")                   # the cached copy is used, not the URL
    assert D.download(src.as_uri(), sha).read_bytes() == b"hello corpus\n" * 1000


def test_download_checksum_mismatch(cache, tmp_path):
    src = tmp_path / "data.txt"; src.write_bytes(b"some bytes")
    with pytest.raises(D.ChecksumError, match="expected"):
        D.download(src.as_uri(), "f" * 64, name="x.txt")
    assert not list(cache.rglob("x.txt*")), "nothing cached after a mismatch"
    with pytest.raises(ValueError, match="64 hex"):
        D.download(src.as_uri(), "abc")


def test_download_with_patched_opener_and_corrupted_cache(cache):
    payload, calls = b"First Citizen:\nSpeak.\n", []

    def opener(url, timeout):
        calls.append(url)
        return io.BytesIO(payload)
    sha = hashlib.sha256(payload).hexdigest()
    p = D.download("https://example.org/x/input.txt", sha, opener=opener)
    assert p.name == "input.txt" and p.read_bytes() == payload and len(calls) == 1
    p.write_bytes(b"damaged")                               # a damaged cached file is fetched again
    with pytest.warns(UserWarning, match="fetching it again"):
        again = D.download("https://example.org/x/input.txt", sha, opener=opener)
    assert again.read_bytes() == payload and len(calls) == 2


def test_tiny_shakespeare_checksum_matches_shared_copy(cache):
    if not SHARED_SHAKESPEARE.is_file():
        pytest.skip(f"{SHARED_SHAKESPEARE} not present (shared data is optional)")
    p = D.download(SHARED_SHAKESPEARE.as_uri(), D.TINY_SHAKESPEARE_SHA256, "tinyshakespeare.txt")
    docs = list(D.text_file_documents(p, "shakespeare"))
    assert "".join(docs[0].text.split())[:19] == "FirstCitizen:Before" and len(docs) > 100
    assert sum(len(d.text) for d in docs) > 0.98 * p.stat().st_size


def test_chunk_text():
    text = "\n\n".join(f"para {i} " + "x" * 50 for i in range(40))
    pieces = D.chunk_text(text, 300)
    assert all(len(p) <= 300 for p in pieces) and "".join("".join(pieces).split()) == "".join(text.split())
    with pytest.raises(ValueError):
        D.chunk_text("x", 0)


def test_hf_documents_without_datasets(monkeypatch):
    monkeypatch.setitem(sys.modules, "datasets", None)     # makes `import datasets` fail
    with pytest.raises(ImportError, match="pip install datasets"):
        next(D.hf_documents("some/dataset"))


def test_hf_documents_with_fake_datasets(monkeypatch):
    fake = types.ModuleType("datasets")
    seen = {}

    def load_dataset(path, name, split, streaming, **kw):
        seen.update(path=path, split=split, streaming=streaming)
        return iter([{"text": "a b c", "id": "x1"}, {"text": "d e f", "id": "x2"}])
    fake.load_dataset = load_dataset
    monkeypatch.setitem(sys.modules, "datasets", fake)
    docs = list(D.hf_documents("org/ds", id_field="id"))
    assert [d.id for d in docs] == ["hf:org/ds:x1", "hf:org/ds:x2"] and seen["streaming"] is True
    with pytest.raises(ValueError, match="text_field"):
        list(D.hf_documents("org/ds", text_field="content"))


def test_corpus_documents_unknown_source():
    with pytest.raises(UserError, match="no/such/source.*stdlib") as e:
        D.corpus_documents("no/such/source")
    assert e.value.code == 2


# ---------------------------------------------------------------- the cached corpus and the CLI
def test_load_corpus_small(cache):
    train = D.load_corpus("train", max_bytes=300_000)
    val = D.load_corpus("val", max_bytes=300_000)
    assert train and not {d.id for d in train} & {d.id for d in val}
    assert list(D.iter_texts("train", max_bytes=300_000)) == [d.text for d in train]
    texts = [d.text for d in train + val]
    assert len(set(texts)) == len(texts) and all(t.endswith("\n") and "\r" not in t for t in texts)
    stats = D.corpus_stats(max_bytes=300_000)
    assert stats["splits"]["train"]["docs"] == len(train) and stats["funnel"][-1]["docs"] == len(train) + len(val)
    with pytest.raises(ValueError, match="train"):
        D.load_corpus("validation")


VOCAB = ("the a model reads text and learns which word comes next from many examples of data in files "
         "written by people over years with care about style names tests errors").split()


def note(i: int) -> str:
    import random
    return f"Document {i} says: " + " ".join(random.Random(i).choices(VOCAB, k=60)) + ".\n"


def both_splits(source: str) -> dict[str, str]:
    return {d.id: d.text for s in D.SPLITS for d in D.load_corpus(s, source=source)}


def cache_entries(cache: Path) -> list[str]:
    "Everything in the corpus cache, temporaries (hidden names) included."
    data = cache / "test" / "data"
    return sorted(p.name for p in data.iterdir()) if data.is_dir() else []


def test_load_corpus_from_folder(cache, tmp_path):
    for i in range(30):
        (tmp_path / f"doc{i:02d}.txt").write_text(note(i))
    (tmp_path / "copy.txt").write_text((tmp_path / "doc03.txt").read_text())
    (tmp_path / ".hidden.txt").write_text(note(99))               # hidden files are not part of the corpus
    docs = D.load_corpus("train", source=str(tmp_path)) + D.load_corpus("val", source=str(tmp_path))
    assert len(docs) == 30 and all(d.source == "folder" for d in docs)
    assert cache.is_relative_to(tmp_path), "the cache lies inside the folder and is not read as part of it"
    assert len(cache_entries(cache)) == 1, "reading the corpus twice builds it once"


def test_folder_corpus_edited_gives_a_new_corpus(cache, tmp_path):
    src = tmp_path / "notes"; src.mkdir()
    for i in range(30):
        (src / f"{i:02d}.md").write_text(note(i))
    before = both_splits(str(src))
    assert both_splits(str(src)) == before and len(cache_entries(cache)) == 1   # unchanged: the cached corpus
    (src / "05.md").write_text(note(105))                         # edited
    (src / "new.md").write_text(note(200))                        # added
    (src / "07.md").unlink()                                       # removed
    after = both_splits(str(src))
    assert after["folder:05.md"] == note(105) != before["folder:05.md"]
    assert "folder:new.md" in after and "folder:07.md" not in after
    assert set(after) == set(before) - {"folder:07.md"} | {"folder:new.md"}
    # an edit that keeps the size and restores the modification time is still noticed (the change time moves)
    st = (src / "06.md").stat()
    old = (src / "06.md").read_text()
    (src / "06.md").write_text(old.replace("Document 6", "Document X"))
    os.utime(src / "06.md", ns=(st.st_atime_ns, st.st_mtime_ns))
    assert both_splits(str(src))["folder:06.md"].startswith("Document X")


@pytest.mark.parametrize("content", [{}, {"image.png": "not text"}, {"a.txt": "Too short to keep.\n"},
                                     {"a.txt": note(1)}])
def test_empty_corpus_is_an_error_and_nothing_is_cached(cache, tmp_path, content):
    src = tmp_path / "src"; src.mkdir()
    for name, text in content.items():
        (src / name).write_text(text)
    with pytest.raises(UserError) as e:
        D.load_corpus("train", source=str(src))
    assert "empty" in str(e.value) or "no corpus files" in str(e.value) or "survived" in str(e.value)
    assert cache_entries(cache) == []
    with pytest.raises(UserError):                                 # and it is not an empty cached result next time
        D.load_corpus("val", source=str(src))


def test_missing_folder_is_a_user_error(cache, tmp_path):
    with pytest.raises(UserError, match="nowhere"):
        D.load_corpus("train", source=str(tmp_path / "nowhere"))
    with pytest.raises(UserError, match="not a folder"):
        D.folder_files(tmp_path / "nowhere")


def _small_corpus(cache):
    D.load_corpus("train", max_bytes=200_000)
    return D.corpus_dir(max_bytes=200_000)


@pytest.mark.parametrize("damage", ["truncate", "flip", "bad json line", "delete stats", "bad stats", "delete val"])
def test_damaged_cached_corpus_is_curated_again(cache, damage):
    path = _small_corpus(cache)
    train, val = D.load_corpus("train", max_bytes=200_000), D.load_corpus("val", max_bytes=200_000)
    stats = json.loads((path / "stats.json").read_text())
    assert set(stats["files"]) == {"train.jsonl", "val.jsonl"}
    assert stats["files"]["train.jsonl"]["sha256"] == hashlib.sha256((path / "train.jsonl").read_bytes()).hexdigest()
    assert D.corpus_damage(path) is None
    f = path / "train.jsonl"
    if damage == "truncate": f.write_bytes(f.read_bytes()[:-100])
    elif damage == "flip":
        b = bytearray(f.read_bytes()); b[len(b) // 2] ^= 0x01; f.write_bytes(bytes(b))
    elif damage == "bad json line": f.write_bytes(f.read_bytes()[:-1] + b"{")
    elif damage == "delete stats": (path / "stats.json").unlink()
    elif damage == "bad stats": (path / "stats.json").write_text("{\"files\": 3")
    else: (path / "val.jsonl").unlink()
    assert D.corpus_damage(path)
    with pytest.warns(UserWarning, match="curating it again"):
        assert D.load_corpus("train", max_bytes=200_000) == train
    assert D.load_corpus("val", max_bytes=200_000) == val and D.corpus_damage(path) is None


def test_damage_after_the_check_is_a_user_error_naming_the_file(cache, monkeypatch):
    path = _small_corpus(cache)
    monkeypatch.setattr(D, "corpus_damage", lambda p, checksums=True: None)   # damage that slips past the check
    (path / "val.jsonl").write_text('{"id": "x", "text": "ok"}\nnot json\n')
    with pytest.raises(UserError, match=r"val\.jsonl:2.*llmfs data --max-bytes 200000 --rebuild"):
        D.load_corpus("val", max_bytes=200_000)
    with pytest.raises(UserError, match="val.jsonl"):
        list(D.iter_texts("val", max_bytes=200_000))


def test_write_jsonl_is_atomic(tmp_path):
    docs = [Document(f"d{i}", f"text {i}\n") for i in range(3)]
    assert D.write_jsonl(docs, tmp_path / "a.jsonl") == (3, 21)
    assert [d.id for d in D.read_jsonl(tmp_path / "a.jsonl")] == ["d0", "d1", "d2"]

    def failing():
        yield docs[0]
        raise RuntimeError("interrupted")
    with pytest.raises(RuntimeError):
        D.write_jsonl(failing(), tmp_path / "a.jsonl")
    assert [d.id for d in D.read_jsonl(tmp_path / "a.jsonl")] == ["d0", "d1", "d2"], "the old file is untouched"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.jsonl"], "no temporary left behind"


def test_corpus_checksum(cache):
    path = _small_corpus(cache)
    assert D.corpus_checksum("val", max_bytes=200_000) == hashlib.sha256((path / "val.jsonl").read_bytes()).hexdigest()
    with pytest.raises(ValueError, match="train"):
        D.corpus_checksum("test", max_bytes=200_000)


def test_cli(cache):
    from llm_from_scratch.cli import main
    out = io.StringIO()
    with redirect_stdout(out), redirect_stderr(io.StringIO()):
        assert main(["data", "--max-bytes", "200000"]) == 0
    assert "near dedup" in out.getvalue() and "train" in out.getvalue()
    err = io.StringIO()
    with redirect_stdout(io.StringIO()), redirect_stderr(err):
        assert main(["data", "--source", "definitely-not-a-source"]) == 2
    lines = err.getvalue().strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("llmfs data: error: unknown corpus source 'definitely-not-a-source'")
    assert len(cache_entries(cache)) == 1, "only the stdlib corpus is cached, no temporary"


def test_shakespeare_offline_error_says_what_to_do(cache, monkeypatch):
    import urllib.error

    def offline(*a, **k):
        raise urllib.error.URLError("network is unreachable")
    monkeypatch.setattr(D, "download", offline)
    with pytest.raises(OSError, match="file://"):
        next(D.shakespeare_documents())


# ---------------------------------------------------------------- exercises
def test_exercise_minhash_error():
    """Exercise 2 of chapter 1: MinHash estimates of the Jaccard similarity, checked against the exact value computed
    with Python's set operators; the mean error shrinks like 1/sqrt(m) with m hash functions."""
    rng = np.random.default_rng(1)
    pairs = []
    for s in np.linspace(0.1, 0.9, 9):
        for _ in range(12):
            shared = round(2 * 300 * s / (1 + s))
            u = [int(x) for x in rng.choice(2**32, size=600 - shared, replace=False)]
            a, b = set(u[:300]), set(u[:shared]) | set(u[300:])
            pairs.append((a, b, len(a & b) / len(a | b)))          # the reference: Python's sets
    mean_err = {}
    for m in (32, 128, 512):
        mh = D.MinHasher(m, seed=m)
        errs = []
        for a, b, exact in pairs:
            est = D.minhash_jaccard(mh.signature(np.array(sorted(a), dtype=np.uint64)),
                                    mh.signature(np.array(sorted(b), dtype=np.uint64)))
            errs.append(abs(est - exact))
            assert abs(est - exact) <= 5 * np.sqrt(exact * (1 - exact) / m) + 1e-9
        mean_err[m] = float(np.mean(errs))
    # 16 times more hash functions: about 4 times smaller errors (within sampling noise)
    assert 2.5 < mean_err[32] / mean_err[512] < 6.5, mean_err
    assert mean_err[32] > mean_err[128] > mean_err[512]
