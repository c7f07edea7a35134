"""Chapter 9: the KV cache, batched generation, sampling, streaming and the `llmfs generate` / `llmfs chat` commands."""
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from llm_from_scratch.generate import (KVCache, Sampling, cached_forward, complete, generate, generate_tokens,
                                       load_generator, stream, stream_text, top_k_filter)
from llm_from_scratch.model import GPT, GPTConfig


def _random_model(seed: int, **kw) -> GPT:
    r = random.Random(seed)
    base = dict(vocab_size=r.choice([40, 97]), block_size=r.choice([12, 20]), n_layer=r.choice([1, 2, 3]),
                n_head=r.choice([1, 2]), n_embd=16 * r.choice([1, 2]), pos=r.choice(["learned", "rope"]))
    base.update(kw)
    cfg = GPTConfig.modern(**base) if r.random() < 0.5 else GPTConfig(**base)
    torch.manual_seed(seed)
    return GPT(cfg).double().eval()


def _tokens(model, prompts, n, s, use_cache=True):
    return torch.stack(list(stream(model, prompts, n, s, use_cache)), dim=1).tolist()


@pytest.mark.parametrize("seed", range(6))
def test_chunked_prefill_equals_full_forward(seed):
    m = _random_model(seed)
    T = m.cfg.block_size
    idx = torch.randint(m.cfg.vocab_size, (3, T))
    cache = KVCache(m.cfg, 3, T, torch.float64)
    with torch.no_grad():
        parts = [cached_forward(m, idx[:, a:a + 4], cache) for a in range(0, T, 4)]
        torch.testing.assert_close(torch.cat(parts, 1), m(idx), rtol=0, atol=1e-12)


@pytest.mark.parametrize("seed", range(6))
def test_cached_equals_uncached_with_penalty_and_top_p(seed):
    m = _random_model(seed)
    prompt = torch.randint(m.cfg.vocab_size, (4,)).tolist()
    for s in (Sampling(temperature=0, repetition_penalty=1.5),
              Sampling(temperature=1.3, top_p=0.8, top_k=20, repetition_penalty=0.9, seed=seed)):
        n = m.cfg.block_size - len(prompt)
        assert _tokens(m, [prompt], n, s) == _tokens(m, [prompt], n, s, use_cache=False)


def test_generation_past_the_block_restarts_the_cache():
    m = _random_model(3, block_size=8)
    out = _tokens(m, [[1, 2, 3]], 30, Sampling(temperature=0))[0]
    ref = _tokens(m, [[1, 2, 3]], 30, Sampling(temperature=0), use_cache=False)[0]
    assert len(out) == 30 and out[:5] == ref[:5]          # identical while the text fits the block


def test_batch_rows_equal_alone_including_one_token_prompts():
    m = _random_model(1)
    prompts = [[5], [1, 2, 3, 4, 5, 6], [7, 7]]
    s = Sampling(temperature=0.9, top_k=15, seed=11)
    batch = _tokens(m, prompts, 6, s)
    for b, p in enumerate(prompts):
        assert batch[b] == _tokens(m, [p], 6, Sampling(temperature=0.9, top_k=15, seed=11 + b))[0]


def test_generate_tokens_stops_rows_independently():
    m = _random_model(2)
    prompts = [[1, 2], [3]]
    full = _tokens(m, prompts, 8, Sampling(temperature=0))
    eot = full[0][3]                                      # row 0 meets this id at step 3 at the latest
    rows = generate_tokens(m, prompts, 8, Sampling(temperature=0), eot_id=eot)
    assert rows[0] == full[0][:full[0].index(eot)]
    assert rows[1] == (full[1][:full[1].index(eot)] if eot in full[1] else full[1])
    rows = generate_tokens(m, prompts, 8, Sampling(temperature=0), stop=lambda r: len(r) >= 2)
    assert rows == [full[0][:2], full[1][:2]]


def test_stream_text_equals_complete_and_never_splits_a_character():
    chars = list("ab é中\n")                               # multi-byte characters, decoded byte by byte below
    byte_vocab = sorted({b for c in chars for b in c.encode()})
    encode = lambda s: [byte_vocab.index(b) for b in s.encode()]
    decode = lambda ids: bytes(byte_vocab[i] for i in ids).decode("utf-8", errors="replace")
    m = _random_model(4, vocab_size=len(byte_vocab), block_size=64)
    for seed in range(5):
        s = Sampling(temperature=1.0, seed=seed)
        for stop in ([], ["\n"], ["é中", "b\n"]):
            pieces = list(stream_text(m, encode, decode, "ab", 40, s, stop))
            whole = complete(m, encode, decode, ["ab"], 40, s, stop)[0]
            assert "".join(pieces) == whole                # a piece sent early (mid-character) would differ here
            assert not any(x in whole for x in stop)


def test_exercise_min_p():
    "Exercise 2 of chapter 9: min-p sampling, checked against transformers' MinPLogitsWarper."
    def min_p_filter(logits: torch.Tensor, p_min: float) -> torch.Tensor:
        probs = logits.softmax(-1)
        keep = probs >= p_min * probs.max(-1, keepdim=True).values
        return logits.masked_fill(~keep, float("-inf"))
    transformers = pytest.importorskip("transformers")
    from transformers.generation.logits_process import MinPLogitsWarper
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(5, 80, generator=g, dtype=torch.float64) * 2
    for p in (0.01, 0.1, 0.5):
        ours = min_p_filter(logits, p)
        ref = MinPLogitsWarper(p)(torch.zeros(5, 1, dtype=torch.long), logits.clone())
        assert torch.equal(torch.isinf(ours), torch.isinf(ref))
        assert torch.equal(ours[~torch.isinf(ours)], logits[~torch.isinf(ours)])
    assert torch.equal(min_p_filter(logits, 1.0).isfinite().sum(-1), torch.ones(5, dtype=torch.long))
    assert torch.equal(top_k_filter(logits, 1).isinf(), min_p_filter(logits, 1.0).isinf())   # p_min = 1: greedy


# --- the command line ---------------------------------------------------------------------------------------------
def _llmfs(*args, **kw):
    return subprocess.run([sys.executable, "-m", "llm_from_scratch.cli", *args], capture_output=True, text=True,
                          timeout=300, **kw)


@pytest.fixture(scope="module")
def char_run(tmp_path_factory):
    "A character-level checkpoint trained for a few steps by `llmfs train`."
    d = tmp_path_factory.mktemp("charrun")
    (d / "text.txt").write_text(Path(json.__file__).read_text(encoding="utf-8") * 2, encoding="utf-8")
    p = _llmfs("train", "--data", f"char:{d / 'text.txt'}", "--out", str(d / "run"), "--n-layer", "1", "--n-embd", "32",
               "--n-head", "2", "--block-size", "32", "--max-steps", "4", "--batch-size", "4", "--eval-interval", "2",
               "--eval-batches", "1", "--no-progress", "--sample", "0")
    assert p.returncode == 0, p.stderr
    return d


def test_generate_cli_on_a_char_checkpoint(char_run):
    p = _llmfs("generate", "def f(", "--checkpoint", str(char_run / "run"), "--data", f"char:{char_run / 'text.txt'}",
               "--max-new-tokens", "20", "--seed", "1")
    assert p.returncode == 0, p.stderr
    assert p.stdout.startswith("def f(") and len(p.stdout) >= len("def f(") + 20
    again = _llmfs("generate", "def f(", "--checkpoint", str(char_run / "run"), "--data",
                   f"char:{char_run / 'text.txt'}", "--max-new-tokens", "20", "--seed", "1")
    assert again.stdout == p.stdout                       # seeded: the same text


@pytest.mark.parametrize("case", ["no data", "missing", "damaged", "wrong vocabulary"])
def test_generate_cli_refuses_bad_checkpoints_in_one_line(char_run, tmp_path, case):
    args = {"no data": ["--checkpoint", str(char_run / "run")],
            "missing": ["--checkpoint", str(tmp_path / "nothing")],
            "damaged": ["--checkpoint", str(tmp_path / "bad.pt")],
            "wrong vocabulary": ["--checkpoint", str(char_run / "run"), "--data", f"char:{tmp_path / 'other.txt'}"]}[case]
    (tmp_path / "bad.pt").write_bytes(b"\x00" * 100)
    (tmp_path / "other.txt").write_text("abc", encoding="utf-8")
    p = _llmfs("generate", "x", *args)
    lines = p.stderr.strip().splitlines()
    assert p.returncode == 2 and len(lines) == 1 and "Traceback" not in p.stderr, p.stderr
    assert lines[0].startswith("llmfs generate: error:")


def test_chat_ctrl_c_stops_the_answer_not_the_chat(char_run):
    "SIGINT during an answer prints [stopped] and returns to the prompt; end of input quits with status 0."
    proc = subprocess.Popen([sys.executable, "-m", "llm_from_scratch.cli", "chat", "--checkpoint", str(char_run / "run"),
                             "--data", f"char:{char_run / 'text.txt'}", "--max-new-tokens", "1000000", "--stop", "",
                             "--seed", "0"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, bufsize=1)
    proc.stdin.write("import json\n")
    proc.stdin.flush()
    got = ""
    deadline = time.time() + 120
    while len(got) < 20 and time.time() < deadline:       # the answer is streaming
        got += os.read(proc.stdout.fileno(), 64).decode("utf-8", "replace")
    proc.send_signal(signal.SIGINT)
    proc.stdin.close()                                    # then end of input: the chat quits
    proc.stdin = None                                     # (closed: communicate must not flush it)
    try: out, err = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        proc.kill()
        pytest.fail("llmfs chat did not stop the answer on SIGINT")
    assert proc.returncode == 0, err
    assert "[stopped]" in got + out and "Traceback" not in err
