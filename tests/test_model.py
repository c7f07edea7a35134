"Property tests of llm_from_scratch.model (chapter 5) beyond what the notebook shows."
import math
import tempfile

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings, strategies as st

from llm_from_scratch.generate import generate, sample_next, top_k_filter, top_p_filter
from llm_from_scratch.hf import hf_gpt2_state_dict, load_hf_gpt2, save_hf_gpt2
from llm_from_scratch.model import GPT, GPTConfig, LayerNorm, Rotary, RMSNorm, count_params, flops_per_token, gelu, measure_flops

TINY = dict(vocab_size=67, block_size=24, n_layer=2, n_head=2, n_embd=16)


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 2**31 - 1), st.integers(1, 8))
def test_norms_and_gelu_match_torch(seed, scale):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(3, 5, 24, generator=g) * scale
    ln, rms = LayerNorm(24), RMSNorm(24)
    with torch.no_grad():
        ln.weight.copy_(torch.randn(24, generator=g)); ln.bias.copy_(torch.randn(24, generator=g))
        rms.weight.copy_(torch.randn(24, generator=g))
    torch.testing.assert_close(ln.reference(x), F.layer_norm(x, (24,), ln.weight, ln.bias, 1e-5), atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(rms.reference(x), F.rms_norm(x, (24,), rms.weight, 1e-5), atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(gelu(x), F.gelu(x, approximate="tanh"), atol=1e-5, rtol=1e-5)


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 40), st.integers(0, 40), st.integers(0, 23), st.integers(0, 2**31 - 1))
def test_rope_depends_only_on_offset(m, n, shift, seed):
    g = torch.Generator().manual_seed(seed)
    rope = Rotary(8, 64)
    q, k = torch.randn(8, generator=g), torch.randn(8, generator=g)
    def score(i, j):
        qs, ks = torch.zeros(1, 1, 64, 8), torch.zeros(1, 1, 64, 8)
        qs[0, 0, i], ks[0, 0, j] = q, k
        return (rope(qs)[0, 0, i] * rope(ks)[0, 0, j]).sum()
    torch.testing.assert_close(score(m, n), score(m + shift, n + shift), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("modern", [False, True])
@settings(max_examples=10, deadline=None)
@given(pos=st.integers(0, 23), seed=st.integers(0, 1000))
def test_causality(modern, pos, seed):
    torch.manual_seed(seed)
    cfg = GPTConfig.modern(**TINY) if modern else GPTConfig(**TINY)
    m = GPT(cfg).eval()
    a = torch.randint(0, cfg.vocab_size, (1, 24)); b = a.clone(); b[0, pos] = (b[0, pos] + 1) % cfg.vocab_size
    with torch.no_grad():
        assert torch.equal(m(a)[:, :pos], m(b)[:, :pos])


@settings(max_examples=50, deadline=None)
@given(st.integers(0, 2**31 - 1), st.floats(0.05, 1.0), st.integers(1, 30))
def test_top_p_and_top_k(seed, p, k):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(3, 30, generator=g) * 4
    probs = logits.softmax(-1)
    kept = top_p_filter(logits, p).isfinite()
    mass = (probs * kept).sum(-1)
    least = probs.masked_fill(~kept, 2.0).min(-1).values
    assert (mass >= p - 1e-5).all() and (mass - least < p + 1e-6).all()
    kk = top_k_filter(logits, k).isfinite()
    assert (kk.sum(-1) == k).all()
    s = sample_next(logits, 1.0, top_k=k, generator=g)
    assert kk.gather(1, s[:, None]).all()


def test_param_and_flop_formulas():
    for cfg in (GPTConfig(**TINY), GPTConfig.modern(**TINY), GPTConfig(**TINY, tie_weights=False, bias=False)):
        m = GPT(cfg)
        assert count_params(cfg)["total"] == sum(p.numel() for p in m.parameters())
        assert measure_flops(m.eval(), torch.zeros(1, 24, dtype=torch.long)) == 24 * flops_per_token(cfg, 24)["forward"]


def test_generate_greedy_matches_argmax_and_crops_context():
    torch.manual_seed(0)
    m = GPT(GPTConfig(**TINY)).eval()
    idx = torch.randint(0, 67, (1, 20))
    out = generate(m, idx, 10, temperature=0)       # runs past block_size: context must be cropped
    path = idx
    with torch.no_grad():
        for _ in range(10): path = torch.cat([path, m(path[:, -24:])[:, -1].argmax(-1, keepdim=True)], 1)
    assert torch.equal(out, path)


def test_hf_roundtrip_and_transformers_logits():
    transformers = pytest.importorskip("transformers")
    from transformers import GPT2LMHeadModel
    torch.manual_seed(0)
    m = GPT(GPTConfig(**TINY)).eval()
    idx = torch.randint(0, 67, (2, 24))
    with tempfile.TemporaryDirectory() as d:
        save_hf_gpt2(m, d)
        hf = GPT2LMHeadModel.from_pretrained(d, local_files_only=True).eval()
        back = load_hf_gpt2(d).eval()
    with torch.no_grad():
        torch.testing.assert_close(hf(idx).logits, m(idx), atol=1e-5, rtol=1e-5)
        assert torch.equal(back(idx), m(idx))


def test_hf_export_refuses_modern():
    with pytest.raises(ValueError, match="rmsnorm"):
        hf_gpt2_state_dict(GPT(GPTConfig.modern(**TINY)))


def test_bad_config_messages():
    with pytest.raises(ValueError, match="divisible"):
        GPTConfig(n_embd=10, n_head=3)
    with pytest.raises(ValueError, match="block_size"):
        GPT(GPTConfig(**TINY))(torch.zeros(1, 25, dtype=torch.long))


def test_exercise_post_norm_block():
    "Exercise 1 of chapter 5: a post-norm block, and our pre-norm Block, checked against torch.nn.TransformerEncoderLayer."
    from llm_from_scratch.model import MLP, Block, CausalSelfAttention

    class PostNormBlock(torch.nn.Module):
        def __init__(self, cfg):
            super().__init__()
            self.attn, self.norm1 = CausalSelfAttention(cfg), LayerNorm(cfg.n_embd, cfg.norm_eps)
            self.mlp, self.norm2 = MLP(cfg), LayerNorm(cfg.n_embd, cfg.norm_eps)

        def forward(self, x):
            x = self.norm1(x + self.attn(x))
            return self.norm2(x + self.mlp(x))

    def reference(ours, norm_first):
        d = ours.attn.d_model
        ref = torch.nn.TransformerEncoderLayer(d, 4, 4 * d, dropout=0.0, activation=lambda t: F.gelu(t, approximate="tanh"),
                                               batch_first=True, norm_first=norm_first).eval()
        with torch.no_grad():
            ref.self_attn.in_proj_weight.copy_(ours.attn.qkv.weight); ref.self_attn.in_proj_bias.copy_(ours.attn.qkv.bias)
            ref.self_attn.out_proj.weight.copy_(ours.attn.proj.weight); ref.self_attn.out_proj.bias.copy_(ours.attn.proj.bias)
            for mine, theirs in ((ours.mlp.fc, ref.linear1), (ours.mlp.proj, ref.linear2), (ours.norm1, ref.norm1),
                                 (ours.norm2, ref.norm2)):
                theirs.weight.copy_(mine.weight); theirs.bias.copy_(mine.bias)
        return ref

    cfg = GPTConfig(n_embd=32, n_head=4, block_size=16)
    torch.manual_seed(0)
    x = torch.randn(3, 16, 32)
    mask = torch.nn.Transformer.generate_square_subsequent_mask(16)
    for ours, norm_first in ((PostNormBlock(cfg).eval(), False), (Block(cfg).eval(), True)):
        with torch.no_grad():   # non-trivial norm gains and biases, so that every tensor counts
            for p in ours.parameters(): p.add_(0.1 * torch.randn_like(p))
            got, want = ours(x), reference(ours, norm_first)(x, src_mask=mask, is_causal=True)
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_from_pretrained_gpt2_reads_a_local_folder(tmp_path):
    "A folder in Hugging Face's layout loads without a network, the same model that was saved."
    from llm_from_scratch.hf import from_pretrained_gpt2
    torch.manual_seed(0)
    m = GPT(GPTConfig(vocab_size=50257, block_size=16, n_layer=1, n_head=2, n_embd=32)).eval()
    save_hf_gpt2(m, tmp_path)
    back = from_pretrained_gpt2(tmp_path).eval()
    idx = torch.randint(0, 50257, (2, 16))
    with torch.no_grad(): assert torch.equal(m(idx), back(idx))
