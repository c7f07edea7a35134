"""Tests of llm_from_scratch.attention beyond the chapter's prose: equivalence with PyTorch under random shapes and masks."""
from __future__ import annotations

import math

import matplotlib
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

matplotlib.use("Agg")

from llm_from_scratch.attention import (MultiHeadAttention, attention, attention_loop, capture_attention, causal_mask,
                                        padding_mask, plot_attention, to_torch_mha)

ATOL = 1e-6


@settings(max_examples=40, deadline=None)
@given(B=st.integers(1, 3), T=st.integers(1, 12), H=st.sampled_from([1, 2, 4]), hd=st.sampled_from([2, 4, 8]),
       causal=st.booleans(), pad=st.booleans(), bias=st.booleans(), seed=st.integers(0, 2**16))
def test_module_matches_nn_multihead_attention(B, T, H, hd, causal, pad, bias, seed):
    torch.manual_seed(seed)
    D = H * hd
    x = torch.randn(B, T, D)
    lengths = torch.randint(1, T + 1, (B,))
    mask = padding_mask(lengths, T) if pad else None
    ours = MultiHeadAttention(D, H, bias=bias, causal=causal).eval()
    ref = to_torch_mha(ours).eval()
    with torch.no_grad():
        y_ref, _ = ref(x, x, x, need_weights=False, attn_mask=~causal_mask(T) if causal else None,
                       key_padding_mask=~mask[:, 0, 0] if pad else None)
        y_fused = ours(x, attn_mask=mask)
        ours.fused = False
        y_expl = ours(x, attn_mask=mask)
    keep = mask[:, 0, 0] if pad else torch.ones(B, T, dtype=torch.bool)
    assert (y_fused - y_ref)[keep].abs().max() < ATOL
    assert (y_expl - y_ref)[keep].abs().max() < ATOL
    assert (y_fused - y_expl).abs().max() < ATOL


@settings(max_examples=60, deadline=None)
@given(T=st.integers(1, 10), S=st.integers(1, 10), d=st.integers(1, 16), causal=st.booleans(),
       kind=st.sampled_from(["none", "bool", "float"]), seed=st.integers(0, 2**16))
def test_attention_matches_sdpa(T, S, d, causal, kind, seed):
    g = torch.Generator().manual_seed(seed)
    q, k, v = torch.randn(2, 3, T, d, generator=g), torch.randn(2, 3, S, d, generator=g), torch.randn(2, 3, S, 5, generator=g)
    mask = None
    if kind == "bool": mask = torch.rand(2, 1, T, S, generator=g) < 0.7         # some rows may be fully masked
    if kind == "float": mask = torch.randn(T, S, generator=g)
    if causal and kind != "none":     # PyTorch refuses attn_mask together with is_causal: fold the mask in ourselves
        c = torch.ones(T, S, dtype=torch.bool).tril()
        ref = F.scaled_dot_product_attention(q, k, v, attn_mask=(mask & c) if kind == "bool" else mask.masked_fill(~c, -math.inf))
    else:
        ref = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal)
    ref = torch.nan_to_num(ref)       # rows with no allowed key (float mask + causal with S < T): both give zeros
    out, w = attention(q, k, v, attn_mask=mask, is_causal=causal)
    assert (out - ref).abs().max() < ATOL
    rows = w.sum(-1)
    assert ((rows - 1).abs() < 1e-5).logical_or(rows == 0).all()


def test_loop_equals_matrix_and_causality():
    torch.manual_seed(0)
    q, k, v = torch.randn(9, 4), torch.randn(9, 4), torch.randn(9, 3)
    for causal in (True, False):
        assert torch.allclose(attention_loop(q, k, v, causal), attention(q, k, v, is_causal=causal)[0], atol=ATOL)
    m = MultiHeadAttention(8, 2).eval()
    x = torch.randn(1, 10, 8, requires_grad=True)
    m(x)[0, 4].sum().backward()
    assert (x.grad[0, 5:] == 0).all() and (x.grad[0, :5].abs().sum(-1) > 0).all()   # no gradient from the future


def test_causal_mask_with_cache_alignment():
    assert causal_mask(3).int().tolist() == [[1, 0, 0], [1, 1, 0], [1, 1, 1]]
    assert causal_mask(2, 4).int().tolist() == [[1, 1, 1, 0], [1, 1, 1, 1]]
    # the last T rows of a full causal mask are the cache-aligned mask
    assert torch.equal(causal_mask(7)[-3:], causal_mask(3, 7))
    assert padding_mask([2, 0], 3)[:, 0, 0].int().tolist() == [[1, 1, 0], [0, 0, 0]]
    with pytest.raises(ValueError):
        padding_mask([4], 3)


def test_gradients_match_nn_multihead_attention():
    torch.manual_seed(1)
    ours = MultiHeadAttention(12, 3)
    ref = to_torch_mha(ours)
    x = torch.randn(2, 7, 12)
    ours(x).square().sum().backward()
    ref(x, x, x, attn_mask=~causal_mask(7), need_weights=False)[0].square().sum().backward()
    for a, b in [(ours.qkv.weight, ref.in_proj_weight), (ours.qkv.bias, ref.in_proj_bias),
                 (ours.proj.weight, ref.out_proj.weight), (ours.proj.bias, ref.out_proj.bias)]:
        assert torch.allclose(a.grad, b.grad, atol=1e-5)


def test_dropout_train_vs_eval():
    torch.manual_seed(0)
    m = MultiHeadAttention(16, 4, dropout=0.3)
    x = torch.randn(2, 9, 16)
    m.train()
    assert not torch.allclose(m(x), m(x))
    m.eval()
    assert torch.equal(m(x), m(x))
    m.fused = False
    m.eval(); y_expl = m(x); m.fused = True
    assert (m(x) - y_expl).abs().max() < ATOL


def test_errors():
    with pytest.raises(ValueError, match="divisible"):
        MultiHeadAttention(10, 3)
    with pytest.raises(ValueError, match="shape"):
        MultiHeadAttention(8, 2)(torch.randn(3, 8))
    with pytest.raises(ValueError):
        plot_attention(torch.rand(4, 4), ["a", "b"])
    with pytest.raises(ValueError, match="capture_attention"):
        with capture_attention(nn.Linear(3, 3)): pass


def test_capture_attention_reconstructs_outputs():
    torch.manual_seed(0)
    model = nn.Sequential(MultiHeadAttention(8, 2), MultiHeadAttention(8, 2)).eval()
    x = torch.randn(1, 6, 8)
    with capture_attention(model) as ws:
        y = model(x)
    assert len(ws) == 2 and ws[0].shape == (1, 2, 6, 6)
    m0 = model[0]
    v = m0.split_heads(m0.qkv(x).split(8, dim=-1)[2])
    assert torch.allclose(m0.proj(m0.merge_heads(ws[0] @ v)), model[0](x), atol=ATOL)
    with torch.no_grad(): model(x)
    assert len(ws) == 2                                                           # hooks removed afterwards


def test_capture_attention_on_chapter5_model():
    "The weights captured from chapter 5's GPT attention layers reproduce each layer's output."
    model_mod = pytest.importorskip("llm_from_scratch.model")
    for pos in ("learned", "rope"):
        _check_capture_on_gpt(model_mod, model_mod.GPTConfig(vocab_size=50, block_size=16, n_layer=2, n_head=2,
                                                             n_embd=16, pos=pos, qk_norm=pos == "rope"))


def _check_capture_on_gpt(model_mod, cfg):
    gpt = model_mod.GPT(cfg).eval()
    attn = [m for m in gpt.modules() if isinstance(m, MultiHeadAttention) or
            (isinstance(getattr(m, "qkv", None), nn.Linear) and hasattr(m, "n_head"))]
    if not attn: pytest.skip("chapter 5's attention layers are neither MultiHeadAttention nor qkv/n_head modules")
    inputs = []
    hooks = [m.register_forward_pre_hook(lambda m, a: inputs.append(a[0])) for m in attn]
    idx = torch.randint(0, 50, (1, 10))
    with capture_attention(gpt) as ws, torch.no_grad():
        gpt(idx)
    for h in hooks: h.remove()
    assert len(ws) == len(attn) == 2
    for m, x, w in zip(attn, inputs, ws):
        B, T, C = x.shape
        with torch.no_grad():
            v = m.heads(x)[2]
            y = m.proj((w @ v).transpose(1, 2).reshape(B, T, C))
            assert torch.allclose(y, m(x), atol=1e-5)


def test_plot_attention_figure():
    w = torch.softmax(torch.randn(3, 5, 5), -1)
    fig = plot_attention(w, list("abcde"), titles=["x", "y", "z"], ncols=2)
    assert len([a for a in fig.axes if a.images]) == 3
    import matplotlib.pyplot as plt
    plt.close(fig)


# --- exercises of chapter 4 -------------------------------------------------------------------------------------------
def test_exercise_mha_einsum():
    "Exercise 1 of chapter 4: multi-head attention with einsum, checked against nn.MultiheadAttention."
    def mha_einsum(x, w_in, b_in, w_out, b_out, n_heads, causal):
        B, T, C = x.shape
        hd = C // n_heads
        w = w_in.view(3, n_heads, hd, C)                          # (q/k/v, head, hd, C)
        q, k, v = (torch.einsum("btc,hdc->bhtd", x, w[i]) + b_in.view(3, n_heads, 1, hd)[i]
                   for i in range(3))
        scores = torch.einsum("bhtd,bhsd->bhts", q, k) / math.sqrt(hd)
        if causal:
            scores = scores.masked_fill(torch.ones(T, T, dtype=torch.bool).triu(1), float("-inf"))
        y = torch.einsum("bhts,bhsd->bhtd", scores.softmax(-1), v)
        return torch.einsum("bhtd,ohd->bto", y, w_out.view(C, n_heads, hd)) + b_out
    torch.manual_seed(0)
    for causal in (False, True):
        ref = nn.MultiheadAttention(24, 3, batch_first=True).eval()
        with torch.no_grad():
            ref.in_proj_bias.normal_(); ref.out_proj.bias.normal_()
            x = torch.randn(2, 9, 24)
            mask = torch.ones(9, 9, dtype=torch.bool).triu(1) if causal else None
            expected, _ = ref(x, x, x, attn_mask=mask, need_weights=False)
            ours = mha_einsum(x, ref.in_proj_weight, ref.in_proj_bias, ref.out_proj.weight,
                              ref.out_proj.bias, 3, causal)
        assert (ours - expected).abs().max() < 1e-5, causal


def test_exercise_local_attention():
    "Exercise 2 of chapter 4: a sliding-window mask, checked against F.scaled_dot_product_attention query by query."
    def local_mask(T: int, w: int) -> torch.Tensor:
        t, s = torch.arange(T)[:, None], torch.arange(T)[None, :]
        return (s <= t) & (s > t - w)
    torch.manual_seed(0)
    q, k, v = torch.randn(3, 2, 4, 13, 8).unbind(0)
    for w in (1, 3, 13, 20):
        ours, weights = attention(q, k, v, attn_mask=local_mask(13, w))
        for t in range(13):
            lo = max(0, t - w + 1)
            ref = F.scaled_dot_product_attention(q[..., t:t + 1, :], k[..., lo:t + 1, :], v[..., lo:t + 1, :])
            assert (ours[..., t:t + 1, :] - ref).abs().max() < 1e-6, (w, t)
        assert ((weights > 0).sum(-1) == torch.clamp(torch.arange(1, 14), max=w)).all()
