"Chapter 9: Hugging Face layouts (gpt2, gpt_neox, llama, qwen3) and tokenizer.json: logit, generation and token parity with transformers."
from __future__ import annotations

import json
import os
import random
from dataclasses import replace
from pathlib import Path

import pytest
import torch


import llm_from_scratch
from llm_from_scratch.core import project_root
from llm_from_scratch.model import GPT, GPTConfig
from llm_from_scratch.tokenizer import EOT, GPT2_SPLIT_PATTERN, BPETokenizer, GPT2Tokenizer, find_gpt2_files

from llm_from_scratch.hf import (HF_ARCHITECTURES, gpt_config_from_hf, hf_architecture, hf_config, hf_split_pattern,
                       load_hf, save_hf, save_hf_tokenizer)

transformers = pytest.importorskip("transformers")
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer  # noqa: E402

transformers.logging.set_verbosity_error()
transformers.utils.logging.disable_progress_bar()
os.environ.setdefault("HF_HUB_OFFLINE", "1")

ROPE = dict(pos="rope")
LLAMA = dict(norm="rmsnorm", mlp="swiglu", pos="rope", qk_norm=False)
CONFIGS = {   # small, odd vocabularies, several heads, short blocks; every option each architecture can take
    "gpt2": [dict(vocab_size=97, block_size=12, n_layer=2, n_head=3, n_embd=24, norm_eps=1e-6)],
    "gpt_neox": [dict(**ROPE, vocab_size=97, block_size=12, n_layer=2, n_head=3, n_embd=24),
                 dict(**ROPE, vocab_size=131, block_size=10, n_layer=3, n_head=2, n_embd=16, bias=False, tie_weights=False,
                      gelu_approximate="none", mlp_hidden=40, rope_base=500.0, norm_eps=1e-6, dropout=0.1)],
    "llama": [dict(**LLAMA, bias=False, vocab_size=101, block_size=12, n_layer=2, n_head=3, n_embd=24),
              dict(**LLAMA, bias=True, tie_weights=False, vocab_size=89, block_size=9, n_layer=2, n_head=2, n_embd=16,
                   mlp_hidden=36, rope_base=1000.0, norm_eps=1e-6)],
    "qwen3": [dict(**GPTConfig.modern(vocab_size=103, block_size=12, n_layer=2, n_head=3, n_embd=24).to_dict()),
              dict(**GPTConfig.modern(vocab_size=67, block_size=10, n_layer=3, n_head=4, n_embd=32, tie_weights=False,
                                      mlp_hidden=20, rope_base=2000.0, norm_eps=1e-6).to_dict())],
}
CASES = [(a, i) for a, cs in CONFIGS.items() for i in range(len(cs))]
BOOK_BASE = dict(vocab_size=8192, block_size=256, n_layer=3, n_head=3, n_embd=192, bias=True, norm="layernorm", mlp="gelu",
                 gelu_approximate="tanh", pos="rope", qk_norm=False, tie_weights=True)
DIFFS: dict[str, dict[str, float]] = {}       # measured max |logit difference|, printed with -s


def _model(cfg: GPTConfig, seed: int = 0) -> GPT:
    "A GPT of shape `cfg` with every parameter (norm gains and biases included) moved off its initial value."
    torch.manual_seed(seed)
    m = GPT(cfg).eval()
    with torch.no_grad():
        for p in m.parameters(): p.add_(0.3 * torch.randn_like(p))
    return m

def _load(d: Path):
    "The transformers model in `d`, checked to load with no missing, unexpected or mismatched weights."
    hf, info = AutoModelForCausalLM.from_pretrained(d, output_loading_info=True)
    assert not any(info.get(k) for k in ("missing_keys", "unexpected_keys", "mismatched_keys")), info
    return hf.eval()

def _exact(hf, ours: GPT):
    """Remove transformers' two float32 detours so a float64 comparison tests the weight mapping alone: RoPE tables
    computed in float32 (replaced by our model's table) and RMSNorm computed in float32 (computed in the input dtype)."""
    for mod in hf.modules():
        name = type(mod).__name__
        if name.endswith("RotaryEmbedding"):
            rot = ours.blocks[0].attn.rotary
            mod.forward = lambda x, position_ids, rot=rot: (rot.cos[position_ids].to(x.dtype), rot.sin[position_ids].to(x.dtype))
        elif name.endswith("RMSNorm"):
            mod.forward = lambda x, m=mod: m.weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + m.variance_epsilon))
    return hf

def _inputs(cfg: GPTConfig, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(0, cfg.vocab_size, (2, T), generator=g) for T in (cfg.block_size - 3, cfg.block_size)]

def _maxdiff(a: torch.Tensor, b: torch.Tensor) -> float: return (a - b).abs().max().item()


# ------------------------------------------------------------------------------------------------- architectures

@pytest.mark.parametrize("arch,i", CASES)
def test_architecture_and_config(arch, i):
    cfg = GPTConfig(**CONFIGS[arch][i])
    assert hf_architecture(cfg) == arch
    c = AutoConfig.for_model(arch, **{k: v for k, v in hf_config(cfg).items() if k != "model_type"})
    assert c.vocab_size == cfg.vocab_size and c.num_hidden_layers == cfg.n_layer
    assert gpt_config_from_hf(hf_config(cfg)) == (cfg if arch != "gpt2" else replace(cfg, dropout=0.0))

def test_book_base_model_is_gpt_neox():
    cfg = GPTConfig(**BOOK_BASE)
    assert hf_architecture(cfg) == "gpt_neox"
    c = hf_config(cfg)
    assert c["use_parallel_residual"] is False and c["rope_parameters"]["partial_rotary_factor"] == 1.0
    assert c["hidden_act"] == "gelu_pytorch_tanh" and c["attention_bias"] and c["tie_word_embeddings"]


@pytest.mark.parametrize("arch,i", CASES)
def test_logit_parity(arch, i, tmp_path):
    cfg = GPTConfig(**CONFIGS[arch][i])
    ours = _model(cfg, seed=i)
    hf = _load(save_hf(ours, tmp_path))
    assert type(hf).__name__ == HF_ARCHITECTURES[arch]
    d = DIFFS.setdefault(f"{arch}[{i}]", {"float32": 0.0, "float64": 0.0, "float64 exact": 0.0})
    with torch.no_grad():
        for x in _inputs(cfg, i):                                  # T < block_size and T == block_size
            a, b = ours(x), hf(x).logits
            d["float32"] = max(d["float32"], _maxdiff(a, b))
            torch.testing.assert_close(b, a, atol=1e-4, rtol=0)
        ours, hf = ours.double(), hf.double()
        for x in _inputs(cfg, i):
            a, b = ours(x), hf(x).logits
            d["float64"] = max(d["float64"], _maxdiff(a, b))
            torch.testing.assert_close(b, a, atol=1e-5, rtol=0)    # transformers' own float32 RoPE / RMSNorm
        hf = _exact(hf, ours)
        for x in _inputs(cfg, i):
            a, b = ours(x), hf(x).logits
            d["float64 exact"] = max(d["float64 exact"], _maxdiff(a, b))
            torch.testing.assert_close(b, a, atol=1e-10, rtol=0)
    print(f"\n{arch}[{i}] max |dlogit|: " + ", ".join(f"{k} {v:.2e}" for k, v in d.items()))


@pytest.mark.parametrize("arch,i", CASES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_round_trip(arch, i, dtype, tmp_path):
    cfg = GPTConfig(**CONFIGS[arch][i])
    ours = _model(cfg, seed=10 + i).to(dtype)
    back = load_hf(save_hf(ours, tmp_path)).eval()
    if arch != "gpt2":                                             # hf.py's GPT-2 loader is float32 and keeps no dropout
        assert back.cfg == cfg
        assert back.emb.tok.weight.dtype == dtype
    sd, sd2 = ours.state_dict(), back.state_dict()
    assert sd.keys() == sd2.keys() and all(torch.equal(sd[k].to(sd2[k].dtype), sd2[k]) for k in sd)
    assert (back.lm_head.weight is back.emb.tok.weight) == cfg.tie_weights
    with torch.no_grad():
        for x in _inputs(cfg):
            if back.emb.tok.weight.dtype == dtype: assert torch.equal(ours(x), back(x))
            else: torch.testing.assert_close(back(x).to(dtype), ours(x), atol=1e-5, rtol=0)
    assert json.loads((tmp_path / "config.json").read_text())["dtype"] == str(dtype).removeprefix("torch.")


def _greedy(model: GPT, prompt: torch.Tensor, n: int) -> torch.Tensor:
    ids = prompt
    with torch.no_grad():
        for _ in range(n): ids = torch.cat([ids, model(ids)[:, -1].argmax(-1, keepdim=True)], dim=1)
    return ids

@pytest.mark.parametrize("arch,i", CASES)
@pytest.mark.parametrize("exact", [True, False])
def test_greedy_generation(arch, i, exact, tmp_path):
    cfg = replace(GPTConfig(**CONFIGS[arch][i]), block_size=32)
    ours = _model(cfg, seed=20 + i).double()
    hf = _load(save_hf(ours, tmp_path)).double()
    if exact: hf = _exact(hf, ours)
    hf.generation_config.eos_token_id = None                       # run all 20 steps
    hf.generation_config.pad_token_id = 0
    prompt = torch.randint(0, cfg.vocab_size, (2, 5), generator=torch.Generator().manual_seed(i))
    with torch.no_grad():
        got = hf.generate(prompt, max_new_tokens=20, do_sample=False, use_cache=True, attention_mask=torch.ones_like(prompt))
    want = _greedy(ours, prompt, 20)
    assert got.shape == want.shape == (2, 25)
    assert torch.equal(got, want), (got, want)
    assert len(set(want[:, 5:].flatten().tolist())) > 3           # not a degenerate repetition of one token


def test_book_base_model_shape_parity(tmp_path):
    "The book's base-model shape (vocab 8192, block 256), random weights, a full 256-token block."
    cfg = GPTConfig(**BOOK_BASE)
    ours = _model(cfg, seed=3)
    with torch.no_grad():
        for p in ours.parameters(): p.mul_(0.2)       # keep 3 layers of 192 wide from saturating
    hf = _load(save_hf(ours, tmp_path)).double()
    ours = ours.double()
    x = torch.randint(0, cfg.vocab_size, (1, 256), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        a, stock = ours(x), hf(x).logits
        exact = _exact(hf, ours)(x).logits
    DIFFS["book base (random)"] = {"float64": _maxdiff(a, stock), "float64 exact": _maxdiff(a, exact)}
    torch.testing.assert_close(exact, a, atol=1e-10, rtol=0)
    torch.testing.assert_close(stock, a, atol=1e-5, rtol=0)
    print(f"\nbook base shape: {DIFFS['book base (random)']}")


# ------------------------------------------------------------------------------------------------------- refusals

@pytest.mark.parametrize("kw,words", [
    (dict(norm="rmsnorm", mlp="gelu", pos="rope"), ["norm='rmsnorm'", "mlp='gelu'"]),
    (dict(norm="layernorm", mlp="swiglu", pos="rope"), ["norm='layernorm'", "mlp='swiglu'"]),
    (dict(pos="rope", qk_norm=True), ["qk_norm"]),
    (dict(LLAMA, qk_norm=True, bias=True), ["qk_norm", "bias"]),
    (dict(norm="rmsnorm", mlp="swiglu"), ["learned positions", "norm", "mlp"]),
    (dict(tie_weights=False), ["learned positions", "tie_weights"]),
    (dict(gelu_approximate="none", bias=False), ["gelu_approximate", "bias"]),
])
def test_unmappable_configs_raise(kw, words, tmp_path):
    cfg = GPTConfig(vocab_size=50, block_size=8, n_layer=1, n_head=2, n_embd=8, **kw)
    with pytest.raises(ValueError) as e: hf_architecture(cfg)
    msg = str(e.value)
    assert "\n" not in msg and all(w in msg for w in words), msg
    with pytest.raises(ValueError): save_hf(GPT(cfg), tmp_path / "x")
    assert not (tmp_path / "x").exists() or not any((tmp_path / "x").iterdir())

@pytest.mark.parametrize("arch,change,word", [
    ("gpt_neox", {"use_parallel_residual": True}, "use_parallel_residual"),
    ("gpt_neox", {"rope_parameters": {"rope_type": "default", "rope_theta": 1e4, "partial_rotary_factor": 0.25}}, "partial_rotary_factor"),
    ("gpt_neox", {"hidden_act": "relu"}, "hidden_act"),
    ("llama", {"num_key_value_heads": 1}, "num_key_value_heads"),
    ("llama", {"rope_parameters": {"rope_type": "llama3", "rope_theta": 1e4}}, "llama3"),
    ("qwen3", {"use_sliding_window": True}, "use_sliding_window"),
])
def test_foreign_configs_raise(arch, change, word):
    hf = {**hf_config(GPTConfig(**CONFIGS[arch][0])), **change}
    with pytest.raises(ValueError, match=word): gpt_config_from_hf(hf)

def test_nonzero_bias_refused_when_config_has_none(tmp_path):
    from safetensors.torch import load_file, save_file
    cfg = GPTConfig(**CONFIGS["gpt_neox"][1])                      # bias=False: zero LayerNorm / MLP biases exported
    save_hf(_model(cfg), tmp_path)
    sd = load_file(str(tmp_path / "model.safetensors"))
    assert all(sd[k].abs().max() == 0 for k in sd if k.endswith(".bias"))
    sd["gpt_neox.layers.0.mlp.dense_h_to_4h.bias"][0] = 1.0
    save_file(sd, str(tmp_path / "model.safetensors"))
    with pytest.raises(ValueError, match="not zero"): load_hf(tmp_path)


# ------------------------------------------------------------------------------------------------------ tokenizer

EDGE = ["", " ", "   ", "\n", "\n\n\n", "  \n  \n", "\t", "\t\tx\t", "a\r\nb\r\n", "\r\n\r\n  ", "x  \n  y", "trailing   ",
        "é", "café naïve", "中文字符", "🙂🚀 emoji 👩‍👩‍👧", "0", "12345678901234567890", "3.14159 2e10 0x1F", "a1b22c333",
        f"{EOT}", f"hello{EOT}world", f"{EOT}{EOT}\n{EOT} x", "<|endoftext|", "don't DON'T we'll I'M you'RE 'S",
        "'ſ K", "\u00a0nbsp\u2003em\u3000ideo\x85nel\u2028ls", "  def f(x):\n      return x  # c\n\n\n", "\x00\x01\x7f",
        "a" * 300, " " * 257, "\n" * 50 + "x"]

def _shared() -> Path | None:
    root = project_root(Path(llm_from_scratch.__file__).parent)
    return root.parent / "shared" if root is not None else None

@pytest.fixture(scope="module")
def texts() -> list[str]:
    "Real texts: stdlib files (whole, and cut at random places and per line) and, if present, tinyshakespeare."
    from llm_from_scratch.data import read_python_source, stdlib_files
    files = stdlib_files()
    whole = [read_python_source(f) for f in files[:: max(1, len(files) // 80)]]
    rng, pieces = random.Random(0), []
    for t in whole[:30]:
        cuts = sorted(rng.sample(range(len(t) + 1), min(6, len(t) + 1)))
        pieces += [t[a:b] for a, b in zip([0, *cuts], [*cuts, len(t)])]
        pieces += t.splitlines(keepends=True)[:40]
    out = whole + pieces
    if (s := _shared()) is not None and (p := s / "data" / "tinyshakespeare.txt").is_file():
        sh = p.read_text(encoding="utf-8")
        out += [sh[k:k + 5000] for k in range(0, 200_000, 20_000)]
    return out + EDGE

@pytest.fixture(scope="module")
def small_tok() -> BPETokenizer:
    from llm_from_scratch.data import read_python_source, stdlib_files
    files = stdlib_files()
    return BPETokenizer.train([read_python_source(f) for f in files[5:300:25]], 512, n_jobs=1)

def _check_tokenizer(tok: BPETokenizer, d: Path, texts: list[str]) -> None:
    hf = AutoTokenizer.from_pretrained(d)
    assert hf.is_fast and hf.eos_token == EOT and hf.eos_token_id == tok.eot_id and len(hf) == tok.vocab_size
    bad = []
    for t in texts:
        want, got = tok.encode(t, allowed_special="all"), hf.encode(t, add_special_tokens=False)
        if want != got: bad.append(t[:80])
        assert hf.decode(got) == t
    assert not bad, f"{len(bad)} of {len(texts)} texts encode differently, e.g. {bad[:3]}"
    rng = random.Random(1)                                         # arbitrary ids, bytes of broken UTF-8 included
    for _ in range(300):
        ids = [rng.randrange(tok.vocab_size) for _ in range(rng.randrange(1, 6))]
        assert hf.decode(ids) == tok.decode(ids), ids
    ids = tok.encode("x = 1\n" + EOT, allowed_special="all")
    assert hf.decode(ids, skip_special_tokens=True) == "x = 1\n"

def test_tokenizer_parity_small(small_tok, texts, tmp_path):
    assert small_tok.vocab_size == 512
    _check_tokenizer(small_tok, save_hf_tokenizer(small_tok, tmp_path), texts)

def test_tokenizer_parity_gpt2_pattern(texts, tmp_path):
    from llm_from_scratch.data import read_python_source, stdlib_files
    tok = BPETokenizer.train([read_python_source(f) for f in stdlib_files()[7:300:30]], 400, pattern=GPT2_SPLIT_PATTERN, n_jobs=1)
    _check_tokenizer(tok, save_hf_tokenizer(tok, tmp_path), texts)

def test_tokenizer_parity_gpt2_byte_order(texts, tmp_path):
    "OpenAI's GPT-2 tokenizer: a byte order that is not the identity, 50k merges, the GPT-2 pattern."
    files = find_gpt2_files(*( [_shared() / "tiktoken_cache"] if _shared() else []))
    if files is None: pytest.skip("GPT-2's encoder.json / vocab.bpe are not available offline")
    tok = GPT2Tokenizer.from_files(*files)
    assert tok.byte_order != list(range(256))
    _check_tokenizer(tok, save_hf_tokenizer(tok, tmp_path), texts[::3])

def _cached_tokenizer(scale: str, vocab: int) -> BPETokenizer:
    root = Path(os.environ.get("LLMFS_CACHE") or Path.home() / ".cache" / "llm-from-scratch").expanduser()
    p = root / scale / "tokenizer" / f"stdlib-bpe-{vocab}-v2.json"
    if not p.is_file(): pytest.skip(f"{p} is not cached (training it would take minutes)")
    return BPETokenizer.load(p)

@pytest.mark.parametrize("scale,vocab", [("test", 1024), ("book", 8192)])
def test_tokenizer_parity_book_default(scale, vocab, texts, tmp_path):
    "The book's default tokenizer (chapter 2's cache), at test and book scale, when already trained."
    tok = _cached_tokenizer(scale, vocab)
    _check_tokenizer(tok, save_hf_tokenizer(tok, tmp_path), texts)

def test_tokenizer_next_to_model_config(small_tok, texts, tmp_path):
    "AutoTokenizer must not switch to a model-type tokenizer class because config.json says gpt_neox / llama."
    for arch in ("gpt_neox", "llama", "qwen3"):
        cfg = replace(GPTConfig(**CONFIGS[arch][0]), vocab_size=small_tok.vocab_size)
        d = save_hf(_model(cfg), tmp_path / arch, tokenizer=small_tok)
        assert json.loads((d / "config.json").read_text())["eos_token_id"] == small_tok.eot_id
        _check_tokenizer(small_tok, d, texts[::7])

def test_hf_split_pattern():
    assert "\\z" in hf_split_pattern(GPT2_SPLIT_PATTERN) and "$" not in hf_split_pattern(GPT2_SPLIT_PATTERN)
    assert hf_split_pattern(r"[$]x\$|y$") == r"[$]x\$|y\z"
    with pytest.raises(ValueError, match="possessive"): hf_split_pattern(r"\p{N}{1,3}+|\s")


# ----------------------------------------------------------------------------------- the book's trained base model

def test_trained_base_model_end_to_end(tmp_path):
    "The book's trained base model (if its checkpoint is cached) with the book tokenizer: ids, logits, greedy text."
    from llm_from_scratch.checkpoint import load_checkpoint
    root = Path(os.environ.get("LLMFS_CACHE") or Path.home() / ".cache" / "llm-from-scratch").expanduser() / "book" / "runs"
    ckpts = sorted(root.glob("base-model-*/ckpt.pt"), key=lambda p: p.stat().st_mtime)
    if not ckpts: pytest.skip("no trained base model in the cache")
    st = load_checkpoint(ckpts[-1])
    cfg = GPTConfig(**st["model_config"])
    tok = _cached_tokenizer("book", cfg.vocab_size)
    ours = GPT(cfg).eval(); ours.load_state_dict(st["model"])
    d = save_hf(ours, tmp_path, tokenizer=tok)
    hf, hf_tok = _load(d), AutoTokenizer.from_pretrained(d)
    text = "def fibonacci(n):\n    \"\"\"Return the n-th Fibonacci number.\"\"\"\n    if n < 2:\n        return n\n"
    ids = hf_tok.encode(text, add_special_tokens=False)
    assert ids == tok.encode(text)
    x = torch.tensor([ids])
    with torch.no_grad():
        f32 = _maxdiff(ours(x), hf(x).logits)
        ours, hf = ours.double(), hf.double()
        a = ours(x)
        f64 = _maxdiff(a, hf(x).logits)
        hf.generation_config.eos_token_id = None
        got = hf.generate(x[:, :12], max_new_tokens=20, do_sample=False, use_cache=True, attention_mask=torch.ones_like(x[:, :12]))
        ex = _maxdiff(a, _exact(hf, ours)(x).logits)
    DIFFS["trained base"] = {"float32": f32, "float64": f64, "float64 exact": ex}
    print(f"\ntrained base model {ckpts[-1].parent.name}: {DIFFS['trained base']}")
    assert f32 < 1e-3 and f64 < 1e-5 and ex < 1e-10
    assert torch.equal(got, _greedy(ours, x[:, :12], 20))
    assert hf_tok.decode(got[0]) == tok.decode(got[0].tolist())
