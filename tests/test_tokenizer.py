"""Tests of llm_from_scratch.tokenizer (chapter 2) that do not belong in the prose: property tests and edge cases."""
from __future__ import annotations

import base64
import errno
import sysconfig
import warnings
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from llm_from_scratch import tokenizer as T
from llm_from_scratch.core import UserError
from llm_from_scratch.tokenizer import EOT, GPT2_SPLIT_PATTERN, BPETokenizer, GPT2Tokenizer, Tokenizer

STDLIB = Path(sysconfig.get_paths()["stdlib"])
SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def stdlib_text(*names: str) -> str:
    return "".join((STDLIB / n).read_text(encoding="utf-8") for n in names)


TRAIN = stdlib_text("argparse.py", "textwrap.py", "json/decoder.py", "json/encoder.py", "string.py")
HELD_OUT = stdlib_text("csv.py", "fractions.py", "heapq.py")


@pytest.fixture(scope="module")
def tok() -> BPETokenizer:
    return BPETokenizer.train([TRAIN[i:i + 20_000] for i in range(0, len(TRAIN), 20_000)], 1024,
                              special_tokens=[EOT, "<|pad|>"], n_jobs=1)


@pytest.fixture(scope="module")
def tok2() -> BPETokenizer:
    "A tokenizer with GPT-2's pre-tokenisation pattern (the default is GPT-4's)."
    return BPETokenizer.train([TRAIN[:150_000]], 700, special_tokens=[EOT, "<|pad|>"], pattern=GPT2_SPLIT_PATTERN, n_jobs=1)


@pytest.fixture(scope="module")
def gpt2():
    "GPT-2's tokenizer from the packaged files, and tiktoken's gpt2 encoding built offline from the same files."
    return GPT2Tokenizer.from_files(), T.tiktoken_gpt2()


# text with special tokens mixed in, and a few characters that stress the patterns
pieces = st.one_of(st.text(), st.sampled_from([EOT, "<|pad|>", "<|endoftext", "\n\n", "   ", "'s", "123456", "é", "🐍\u200d",
                                                   "x\n", "\n y", ".\n", " \n\t", "def f(a):\n    return a\n"]))
texts = st.lists(pieces, max_size=12).map("".join)


# --- training -------------------------------------------------------------------------------------------------------

@given(st.dictionaries(st.binary(min_size=1, max_size=10).map(lambda b: bytes(x % 4 + 97 for x in b)),
                       st.integers(1, 6), min_size=1, max_size=12), st.integers(1, 40))
@SETTINGS
def test_fast_trainer_equals_naive(words, n):
    assert T.train_bpe(words, n) == T.train_bpe_naive(words, n)


def test_fast_trainer_equals_naive_on_real_text():
    counts = T.count_pretokens([HELD_OUT])
    assert T.train_bpe(counts, 150) == T.train_bpe_naive(counts, 150)


def test_tie_break_goes_to_greatest_byte_pair():
    # every pair occurs once: the greatest (vocab[a], vocab[b]) wins
    assert T.train_bpe(Counter({b"abcd": 1}), 1) == [(ord("c"), ord("d"))]
    assert T.train_bpe(Counter({b"ab": 2, b"zy": 1, b"ba": 2}), 1) == [(ord("b"), ord("a"))]


def test_parallel_counting_equals_serial():
    docs = [TRAIN[i:i + 5000] + EOT for i in range(0, len(TRAIN), 5000)]
    assert T.count_pretokens(docs, special_tokens=[EOT], n_jobs=2, chunk_chars=50_000) == \
        T.count_pretokens(docs, special_tokens=[EOT], n_jobs=1)


def test_parallel_counting_of_one_long_document():
    doc = EOT.join(TRAIN[i:i + 5000] for i in range(0, len(TRAIN), 5000))     # one string with many separators
    assert T.count_pretokens([doc], special_tokens=[EOT], n_jobs=2, chunk_chars=50_000) == \
        T.count_pretokens([doc], special_tokens=[EOT], n_jobs=1, chunk_chars=10**9)
    assert len(list(T._chunks([doc], 50_000, [EOT]))) > 3


def test_special_tokens_are_never_merged(tok):
    assert not any(b"<|endoftext|>" in v or b"<|pad|>" in v for v in tok.vocab)
    assert tok.special_tokens == {EOT: 1022, "<|pad|>": 1023} and tok.eot_id == 1022 and tok.vocab_size == 1024


def test_truncation_equals_training_smaller():
    docs = [TRAIN[:60_000]]
    big, small = BPETokenizer.train(docs, 700), BPETokenizer.train(docs, 400)
    assert list(big.truncated(400).merges) == list(small.merges)


def test_training_is_deterministic():
    docs = [TRAIN[:40_000]]
    assert BPETokenizer.train(docs, 500).merges == BPETokenizer.train(list(reversed(docs)), 500).merges


# --- encoding and decoding ------------------------------------------------------------------------------------------

@given(texts)
@SETTINGS
def test_roundtrip(tok, s):
    assert tok.decode(tok.encode(s, allowed_special="all")) == s
    assert tok.decode(tok.encode(s, disallowed_special=())) == s
    assert tok.decode(tok.encode_ordinary(s)) == s


@given(texts)
@SETTINGS
def test_reference_equals_tiktoken(tok, tok2, s):
    assert tok2.encode_reference(s, allowed_special="all") == tok2.encode(s, allowed_special="all")
    assert tok.encode_reference(s, allowed_special="all") == tok.encode(s, allowed_special="all")
    assert tok.encode_reference(s, allowed_special={"<|pad|>"}, disallowed_special=()) == \
        tok.encode(s, allowed_special={"<|pad|>"}, disallowed_special=())


@given(texts)
@SETTINGS
def test_greedy_patterns_split_the_same(s):
    import regex
    for pattern, greedy in T._GREEDY_EQUIVALENT.items():
        assert regex.findall(pattern, s) == regex.findall(greedy, s)


def test_reference_equals_tiktoken_on_real_text(tok):
    assert tok.encode_reference(HELD_OUT) == tok.encode(HELD_OUT)
    other = stdlib_text("email/_header_value_parser.py", "difflib.py")
    assert tok.encode_reference(other) == tok.encode(other)


def test_gpt2_pattern_tokenizer_agrees_with_tiktoken(tok2):
    assert tok2.encode_reference(HELD_OUT) == tok2.encode(HELD_OUT)


@given(texts, st.lists(st.integers(1, 50), min_size=1, max_size=30), st.integers(8, 64))
@SETTINGS
def test_encode_iterable_equals_encode(tok, tok2, s, cuts, buffer_chars):
    parts, i = [], 0
    for c in cuts * (len(s) // max(1, sum(cuts)) + 1):
        if i >= len(s): break
        parts.append(s[i:i + c]); i += c
    for t in (tok, tok2):
        expected = t.encode(s, allowed_special="all")
        assert list(t.encode_iterable(iter(parts), allowed_special="all", buffer_chars=buffer_chars)) == expected
        expected = t.encode(s, disallowed_special=())
        assert list(t.encode_iterable(iter(parts), disallowed_special=(), buffer_chars=buffer_chars)) == expected


def test_encode_iterable_on_a_file(tok, tmp_path):
    p = tmp_path / "big.txt"
    p.write_text((HELD_OUT + EOT) * 3, encoding="utf-8")
    with open(p, encoding="utf-8", newline="") as f:
        chunks = list(tok.encode_chunks(f, allowed_special="all", buffer_chars=10_000))
    assert len(chunks) > 5 and [i for c in chunks for i in c] == tok.encode(p.read_text(encoding="utf-8"), allowed_special="all")


def test_unicode_edge_cases(tok):
    for s in ["", " ", "\n", "\x00", "🐍" * 50, "ß" * 1000, "  \n  \n", "a\r\nb", "\ud800 lone surrogate"]:
        out = tok.decode(tok.encode(s))
        assert out == s or (s.startswith("\ud800") and out == "\ufffd lone surrogate")
        assert tok.encode_reference(s) == tok.encode(s)


# --- bad input --------------------------------------------------------------------------------------------------------

def test_vocab_too_small():
    with pytest.raises(ValueError, match="too small"): BPETokenizer.train([TRAIN], 256)
    with pytest.raises(ValueError, match="too small"): BPETokenizer.train([TRAIN], 257, special_tokens=[EOT, "<|pad|>"])
    assert BPETokenizer.train([TRAIN], 257).vocab_size == 257   # 256 bytes + <|endoftext|>, no merges


def test_empty_corpus():
    for corpus in ([], [""], [EOT, EOT + EOT]):
        with pytest.raises(ValueError, match="empty"): BPETokenizer.train(corpus, 300)


def test_small_corpus_warns():
    with pytest.warns(UserWarning, match="only supports"):
        t = BPETokenizer.train(["abab"], 300)
    assert t.vocab_size == 256 + len(t.merges) + 1 and t.decode(t.encode("abab")) == "abab"


def test_non_str_input(tok):
    with pytest.raises(TypeError): BPETokenizer.train([b"bytes"], 300)
    with pytest.raises(TypeError): tok.encode_reference(b"bytes")
    with pytest.raises(TypeError): list(tok.encode_iterable([b"bytes"]))


def test_decode_invalid_utf8(tok):
    ids = tok.encode("é")           # two bytes; the first alone is not valid UTF-8
    first = [i for i in range(256) if tok.vocab[i] == "é".encode()[:1]]
    assert tok.decode(first) == "\ufffd"                      # documented default: errors="replace", like tiktoken
    with pytest.raises(ValueError, match="not valid UTF-8"): tok.decode(first, errors="strict")
    assert tok.decode_bytes(first) == b"\xc3" and tok.decode(ids, errors="strict") == "é"


def test_decode_unknown_id(tok):
    for bad in ([tok.vocab_size], [-1], ["a"]):
        with pytest.raises(ValueError, match="not a token id"): tok.decode(bad)


def test_special_tokens_in_text(tok):
    with pytest.raises(ValueError, match="contains the special token"): tok.encode("a " + EOT)
    with pytest.raises(ValueError, match="contains the special token"): tok.encode_reference("a " + EOT)
    with pytest.raises(ValueError, match="not special tokens"): tok.encode("a", allowed_special={"<|nope|>"})
    with pytest.raises(ValueError, match="not special tokens"): tok.encode_reference("a", allowed_special={"<|nope|>"})
    with pytest.raises(ValueError, match="contains the special token"): list(tok.encode_iterable(["x" * 50, EOT]))
    assert tok.encode(EOT, allowed_special={EOT}) == [tok.eot_id]
    assert tok.eot_id not in tok.encode(EOT, disallowed_special=())
    assert tok.decode(tok.encode("<|unknown|>")) == "<|unknown|>"   # not a special token: ordinary text
    # an allowed special token is encoded whole; a disallowed one raises even if another one is allowed
    assert tok.encode("<|pad|>", allowed_special={"<|pad|>"}) == [tok.special_tokens["<|pad|>"]]
    with pytest.raises(ValueError): tok.encode("<|pad|>" + EOT, allowed_special={"<|pad|>"})


# special tokens that are prefixes of one another: tokens over a small alphabet, half of them extended by a suffix
special_chars = "<|ab>\n "


@st.composite
def prefixed_specials(draw) -> list[str]:
    out = []
    for base in draw(st.lists(st.text(special_chars, min_size=1, max_size=4), min_size=1, max_size=4)):
        out.append(base)
        if draw(st.booleans()): out.append(base + draw(st.text(special_chars, min_size=1, max_size=3)))
    return draw(st.permutations(list(dict.fromkeys(out))))    # the order of the special tokens must not matter


def longest_match_encode(t: BPETokenizer, text: str, allowed: set[str], disallowed: set[str]) -> list[int]:
    "The rule, written out: left to right, at each place the longest special token starting there, if any."
    by_length = sorted(t.special_tokens, key=len, reverse=True)
    out, ordinary, i = [], "", 0
    while i < len(text):
        s = next((s for s in by_length if text.startswith(s, i)), None)
        if s is None or s not in allowed | disallowed:
            ordinary += text[i:i + len(s or "x")]; i += len(s or "x")
        elif s in disallowed: raise ValueError(f"disallowed {s!r}")
        else:
            out += t.encode_ordinary_reference(ordinary) + [t.special_tokens[s]]; ordinary = ""; i += len(s)
    return out + t.encode_ordinary_reference(ordinary)


@given(st.data())
@SETTINGS
def test_longest_special_token_wins(tok, data):
    specials = data.draw(prefixed_specials())
    t = BPETokenizer(list(tok.merges), specials)
    text = data.draw(st.lists(st.one_of(st.sampled_from(specials), st.text(special_chars + "xé", max_size=4), st.text(max_size=3)),
                              max_size=12).map("".join))
    allowed = data.draw(st.one_of(st.just("all"), st.sets(st.sampled_from(specials))))
    disallowed = data.draw(st.sampled_from(["all", ()]))
    allowed_set = set(specials) if allowed == "all" else allowed
    disallowed_set = set(specials) - allowed_set if disallowed == "all" else set()
    try: expected = longest_match_encode(t, text, allowed_set, disallowed_set)
    except ValueError:
        with pytest.raises(ValueError, match="contains the special token"): t.encode(text, allowed, disallowed)
        with pytest.raises(ValueError, match="contains the special token"): t.encode_reference(text, allowed, disallowed)
        return
    assert t.encode(text, allowed, disallowed) == t.encode_reference(text, allowed, disallowed) == expected
    assert t.decode(expected) == text
    assert t.decode(t.encode(text, allowed_special="all")) == text and t.decode(t.encode(text, disallowed_special=())) == text
    cut = data.draw(st.integers(1, 7))
    parts = [text[i:i + cut] for i in range(0, len(text), cut)]
    assert list(t.encode_iterable(parts, allowed, disallowed, buffer_chars=data.draw(st.integers(4, 40)))) == expected


def test_longest_special_token_wins_examples():
    for specials in (["<|a|>", "<|a|>b"], ["<|a|>b", "<|a|>"]):
        t = BPETokenizer([], specials)
        a, ab = t.special_tokens["<|a|>"], t.special_tokens["<|a|>b"]
        for enc in (t.encode, t.encode_reference):
            assert enc("<|a|>b<|a|>", allowed_special="all") == [ab, a]
            assert enc("<|a|>b<|a|>", allowed_special={"<|a|>"}, disallowed_special=()) == [*b"<|a|>b", a]   # never split
            assert enc("<|a|>b", allowed_special={"<|a|>b"}) == [ab]      # the disallowed <|a|> is inside it, not in the text
            with pytest.raises(ValueError, match="'<\\|a\\|>b'"): enc("<|a|>b", allowed_special={"<|a|>"})


def test_bad_constructor_arguments():
    with pytest.raises(ValueError, match="permutation"): Tokenizer([], byte_order=[0] * 256)
    with pytest.raises(ValueError, match="does not exist"): Tokenizer([(0, 999)])
    with pytest.raises(ValueError, match="repeated"): Tokenizer([(97, 98), (97, 98)])
    with pytest.raises(ValueError, match="distinct"): BPETokenizer([], [EOT, EOT])
    with pytest.raises(ValueError, match="follow the merges"): BPETokenizer([], {EOT: 5})


# --- save and load ----------------------------------------------------------------------------------------------------

def test_save_load_json(tok, tmp_path):
    t2 = BPETokenizer.load(tok.save(tmp_path / "t.json"))
    assert (t2.merges, t2.special_tokens, t2.pattern) == (tok.merges, tok.special_tokens, tok.pattern)
    assert t2.encode(HELD_OUT) == tok.encode(HELD_OUT)


def test_save_load_tiktoken(tok, tmp_path):
    t2 = BPETokenizer.load(tok.save(tmp_path / "t.tiktoken"), special_tokens=[EOT, "<|pad|>"])
    assert t2.vocab == tok.vocab and t2.special_tokens == tok.special_tokens
    assert t2.encode_reference(HELD_OUT) == tok.encode(HELD_OUT)
    # the file is tiktoken's format: tiktoken's own loader reads it
    from tiktoken.load import load_tiktoken_bpe
    assert load_tiktoken_bpe(str(tmp_path / "t.tiktoken")) == {b: i for i, b in enumerate(tok.vocab)}


@pytest.mark.parametrize("name", ["t.json", "t.tiktoken"])
def test_failed_save_leaves_the_old_file(tok, tmp_path, monkeypatch, name):
    from llm_from_scratch import core
    p = tok.save(tmp_path / name)
    before = p.read_bytes()
    real_open = open

    class FullDisk:
        "A file that takes half of the first write, then fails as a full disk does."
        def __init__(self, f): self.f = f
        def write(self, b):
            self.f.write(b[:len(b) // 2]); self.f.flush()
            raise OSError(errno.ENOSPC, "No space left on device")
        def __getattr__(self, name): return getattr(self.f, name)
        def __enter__(self): return self
        def __exit__(self, *exc): self.f.close()

    monkeypatch.setattr(core, "open", lambda *a, **k: FullDisk(real_open(*a, **k)), raising=False)   # what atomic_write opens
    with pytest.raises(OSError, match="No space"): BPETokenizer.train([TRAIN[:20_000]], 300, n_jobs=1).save(p)
    monkeypatch.undo()
    assert p.read_bytes() == before and list(tmp_path.iterdir()) == [p]     # old file intact, no temporary left


def test_load_bad_files(tok, tmp_path):
    def refused(p: Path, *match: str) -> None:
        with pytest.raises(UserError) as e: BPETokenizer.load(p)
        msg = str(e.value)
        assert str(p) in msg and "\n" not in msg and e.value.code == 2 and all(m in msg for m in match), msg
    refused(tmp_path / "missing.json", "no tokenizer file", "llmfs tokenizer train")
    refused(tmp_path, "no tokenizer file")                                   # a folder
    good = tok.save(tmp_path / "good.json").read_bytes()
    for name, data, why in [("x.json", b"{not json", "Expecting"), ("cut.json", good[:len(good) // 2], "Unterminated"),
                            ("empty.json", b"", "Expecting value"), ("latin1.json", "{'é'}".encode("latin-1"), "utf-8"),
                            ("other.json", b'{"model": {"type": "BPE"}}', "not a tokenizer saved by BPETokenizer.save"),
                            ("list.json", b"[1, 2]", "not a tokenizer saved"),
                            ("v1.json", b'{"format": "llm-from-scratch-bpe", "version": 1}', "version 1"),
                            ("keys.json", b'{"format": "llm-from-scratch-bpe", "version": 2}', "no ["),
                            ("x.tiktoken", b"oops\n", "BASE64 RANK"), ("bin.tiktoken", b"\xff\xfe\x00", "ascii"),
                            ("gap.tiktoken", b"".join(b"%s %d\n" % (base64.b64encode(bytes([i])), i + (i > 9))
                                                      for i in range(256)), "without gaps")]:
        (tmp_path / name).write_bytes(data)
        refused(tmp_path / name, why, "retrain it with 'llmfs tokenizer train' or pass another --tokenizer")


def test_tampered_json_is_rejected(tok, tmp_path):
    import json
    p = tok.save(tmp_path / "t.json")
    state = json.loads(p.read_text(encoding="utf-8"))
    state["merges"][5] = "nothere q"
    p.write_text(json.dumps(state), encoding="utf-8")
    with pytest.raises(UserError, match="merge 5"): BPETokenizer.load(p)
    state["merges"][5] = state["merges"][4]          # a repeated merge would give two ids to one token
    p.write_text(json.dumps(state), encoding="utf-8")
    with pytest.raises(UserError): BPETokenizer.load(p)
    for key, bad in [("merges", 7), ("merges", [1, 2]), ("special_tokens", 3), ("pattern", "(unclosed"), ("byte_order", [0] * 256)]:
        broken = dict(json.loads(tok.save(tmp_path / "ok.json").read_text(encoding="utf-8")), **{key: bad})
        p.write_text(json.dumps(broken), encoding="utf-8")
        with pytest.raises(UserError, match="not a valid tokenizer file"): BPETokenizer.load(p)


# --- GPT-2 ------------------------------------------------------------------------------------------------------------

@given(texts)
@SETTINGS
def test_gpt2_matches_tiktoken(gpt2, s):
    ours, official = gpt2
    assert ours.encode_reference(s, allowed_special="all") == official.encode(s, allowed_special="all")


def test_gpt2_matches_tiktoken_on_real_text(gpt2):
    ours, official = gpt2
    text = HELD_OUT + stdlib_text("email/_header_value_parser.py")
    assert ours.encode_reference(text) == official.encode(text) == ours.encode(text)
    assert ours.vocab_size == official.n_vocab == 50257 and ours.eot_id == official.eot_token == 50256
    assert ours.decode(official.encode(text)) == text


def test_gpt2_save_load(gpt2, tmp_path):
    ours, _ = gpt2
    again = BPETokenizer.load(ours.save(tmp_path / "gpt2.json"))
    assert isinstance(again, GPT2Tokenizer) and again.encode(HELD_OUT) == ours.encode(HELD_OUT)


# --- the book's tokenizer ---------------------------------------------------------------------------------------------

def test_default_tokenizer_contract(tmp_path, monkeypatch):
    monkeypatch.setenv("LLMFS_CACHE", str(tmp_path))
    monkeypatch.setenv("LLMFS_SCALE", "test")
    calls = []
    def fake_texts(max_chars):
        calls.append(max_chars)
        return iter([TRAIN])
    monkeypatch.setattr(T, "_training_texts", fake_texts)
    t1 = T.default_tokenizer(600)
    t2 = T.default_tokenizer(600)            # second call loads from the cache
    assert len(calls) == 1 and t1.merges == t2.merges
    assert t1.vocab_size == 600 and t1.eot_id == 599 and t1.decode(t1.encode("x = 1" + EOT, allowed_special={EOT})) == "x = 1" + EOT
    assert (tmp_path / "test" / "tokenizer" / "stdlib-bpe-600-v2.json").is_file()


def test_default_tokenizer_rebuilds_a_corrupt_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("LLMFS_CACHE", str(tmp_path))
    monkeypatch.setenv("LLMFS_SCALE", "test")
    calls = []
    monkeypatch.setattr(T, "_training_texts", lambda max_chars: calls.append(max_chars) or iter([TRAIN[:60_000]]))
    first = T.default_tokenizer(400)
    p = tmp_path / "test" / "tokenizer" / "stdlib-bpe-400-v2.json"
    good = p.read_bytes()
    for damage in (good[:len(good) // 2], b"", b"\xff\xfe not even UTF-8"):
        p.write_bytes(damage)
        with pytest.warns(UserWarning, match="training the tokenizer again"):
            again = T.default_tokenizer(400)
        assert again.merges == first.merges and p.read_bytes() == good
    assert len(calls) == 4


# --- command line -----------------------------------------------------------------------------------------------------

def test_cli(tmp_path, monkeypatch, capsys):
    from llm_from_scratch.cli import main
    monkeypatch.setenv("LLMFS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("LLMFS_SCALE", "test")
    monkeypatch.setattr(T, "_training_texts", lambda max_chars: iter([TRAIN]))
    src, out = tmp_path / "a.py", tmp_path / "t.json"
    src.write_text(HELD_OUT, encoding="utf-8")
    train = ["train", str(src), "--vocab-size", "500", "--pattern", "gpt2", "--out", str(out)]
    assert main(["tokenizer", *train]) == 0
    t = BPETokenizer.load(out)
    assert t.vocab_size == 500 and t.pattern == GPT2_SPLIT_PATTERN
    assert main(["tokenizer", "encode", str(src), "--tokenizer", str(out)]) == 0
    assert f"-> {len(t.encode(HELD_OUT))} tokens" in capsys.readouterr().out
    assert main(["tokenizer", "info"]) == 0 and "BPETokenizer(vocab_size=1024" in capsys.readouterr().out

    def fails(argv: list[str], code: int, *words: str) -> None:
        "`llmfs tokenizer ...` exits with `code` and says why in one line on stderr."
        capsys.readouterr()
        assert main(["tokenizer", *argv]) == code
        err = capsys.readouterr().err.splitlines()
        assert len(err) == 1 and err[0].startswith("llmfs tokenizer: error:") and all(w in err[0] for w in words), err
    fails(["train", str(tmp_path / "missing.txt"), "--out", str(tmp_path / "x.json")], 2, "missing.txt")
    fails(["train", str(src), "--vocab-size", "10", "--out", str(tmp_path / "x.json")], 2, "too small")
    fails(["encode", str(tmp_path / "missing.txt")], 2, "missing.txt")
    fails(train, 2, "exists", "--force")                          # never overwrites --out unless asked to
    assert main(["tokenizer", *train, "--force"]) == 0 and BPETokenizer.load(out).merges == t.merges
    out.write_bytes(out.read_bytes()[:1000])                       # a tokenizer file cut short
    fails(["encode", str(src), "--tokenizer", str(out)], 2, str(out), "llmfs tokenizer train")
    (tmp_path / "latin1.txt").write_bytes("caf\xe9 = 1\n".encode("latin-1"))
    fails(["encode", str(tmp_path / "latin1.txt"), "--tokenizer", str(tmp_path / "t2.json")], 2, "t2.json")
    assert main(["tokenizer", *train[:-1], str(tmp_path / "t2.json")]) == 0
    fails(["encode", str(tmp_path / "latin1.txt"), "--tokenizer", str(tmp_path / "t2.json")], 1, "not UTF-8")
    fails(["train", str(tmp_path / "latin1.txt"), "--out", str(tmp_path / "t3.json")], 1, "not UTF-8")
    assert not (tmp_path / "t3.json").exists()


# --- GPT-2's packaged files ---------------------------------------------------------------------------------------------

def test_gpt2_files_are_packaged_and_genuine():
    "The packaged files are OpenAI's (the SHA-256 hashes tiktoken checks), with the licence, and found without ../shared."
    import hashlib
    enc, bpe = T.gpt2_files()
    assert hashlib.sha256(bpe.read_bytes()).hexdigest() == "1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5"
    assert hashlib.sha256(enc.read_bytes()).hexdigest() == "196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783"
    assert (enc.parent / "LICENSE").read_text(encoding="utf-8").startswith("Modified MIT License")
    assert T.find_gpt2_files() == (enc, bpe) and T.find_gpt2_files("/nonexistent") == (enc, bpe)


def test_find_gpt2_files_prefers_given_folders(tmp_path):
    import shutil
    enc, bpe = T.gpt2_files()
    shutil.copy(enc, tmp_path / "encoder.json"); shutil.copy(bpe, tmp_path / "vocab.bpe")
    assert T.find_gpt2_files(tmp_path) == (tmp_path / "encoder.json", tmp_path / "vocab.bpe")


# --- exercises -----------------------------------------------------------------------------------------------------------

def rank_bpe(ranks: dict[bytes, int], piece: bytes) -> list[int]:
    "BPE by ranks alone: join the adjacent pair whose concatenation has the lowest rank, until none is a token."
    parts = [bytes([b]) for b in piece]
    while len(parts) > 1:
        i = min(range(len(parts) - 1), key=lambda i: ranks.get(parts[i] + parts[i + 1], float("inf")))
        if parts[i] + parts[i + 1] not in ranks: break
        parts[i:i + 2] = [parts[i] + parts[i + 1]]
    return [ranks[p] for p in parts]


def test_exercise_rank_bpe():
    """Exercise 1 of chapter 2: encoding by ranks alone, on GPT-2's ranks read by tiktoken's loader, with tiktoken's own
    pattern, gives exactly tiktoken's gpt2 ids."""
    import regex
    from tiktoken.load import data_gym_to_mergeable_bpe_ranks
    enc, bpe = T.gpt2_files()
    ranks = data_gym_to_mergeable_bpe_ranks(str(bpe), str(enc))
    official = T.tiktoken_gpt2()
    pat = regex.compile(official._pat_str)
    for text in [HELD_OUT[:60_000], "déjà vu 🐍 I'LL see    you\n\n\t 12345", "a" * 200]:
        ids = [i for piece in pat.findall(text) for i in rank_bpe(ranks, piece.encode("utf-8"))]
        assert ids == official.encode_ordinary(text)


def test_exercise_gpt2_tiktoken_file(gpt2, tmp_path):
    """Exercise 2 of chapter 2: GPT-2 saved as a .tiktoken file is what tiktoken's loader reads as gpt2's ranks, and the
    merges recovered from the ranks are the lines of vocab.bpe."""
    from tiktoken.load import load_tiktoken_bpe
    ours, official = gpt2
    path = ours.save(tmp_path / "gpt2.tiktoken")
    assert load_tiktoken_bpe(str(path)) == official._mergeable_ranks
    again = BPETokenizer.load(path, pattern=GPT2_SPLIT_PATTERN, special_tokens=[EOT])
    _, bpe = T.gpt2_files()
    lines = [l for l in bpe.read_text(encoding="utf-8").split("\n")[1:] if l]
    assert [f"{T._readable(again.vocab[a])} {T._readable(again.vocab[b])}" for a, b in again.merges] == lines
    assert again.encode(HELD_OUT) == official.encode(HELD_OUT)
