"""nanoGPT's model, optimiser, update step, batching and training loop for its shakespeare_char CPU recipe
(bias=False, dropout 0), written the way nanoGPT writes them, in plain PyTorch.

This is the yardstick of the training benchmark: `bench/train.py` runs it beside the book's code on the same machine, and
`tests/test_bench.py` checks that the book's model computes the same logits from the same weights and that the book's
training loop updates the weights exactly as `reference_update` does. With seed 1337 `reference` ends at nanoGPT's
val loss, 1.8857.
"""
from __future__ import annotations

import math
import time
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["RefBlock", "RefGPT", "reference_optimizer", "reference_loss", "reference_update", "get_batch", "get_lr",
           "reference"]


class RefBlock(nn.Module):
    "nanoGPT's transformer block without biases or dropout: pre-norm causal self-attention and a GELU MLP."
    def __init__(self, d: int, n_head: int):
        super().__init__()
        # registered in nanoGPT's order, which fixes the order of random draws and of the gradient-norm sum
        self.ln_1, self.c_attn = nn.LayerNorm(d, bias=False), nn.Linear(d, 3 * d, bias=False)
        self.attn_proj, self.ln_2 = nn.Linear(d, d, bias=False), nn.LayerNorm(d, bias=False)
        self.c_fc, self.mlp_proj = nn.Linear(d, 4 * d, bias=False), nn.Linear(4 * d, d, bias=False)
        self.n_head = n_head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
                   for t in self.c_attn(self.ln_1(x)).split(C, dim=2))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).contiguous().view(B, T, C)
        x = x + self.attn_proj(y)
        return x + self.mlp_proj(F.gelu(self.c_fc(self.ln_2(x))))


class RefGPT(nn.Module):
    "nanoGPT's GPT for bias=False, dropout 0: learned positions, tied head, N(0, 0.02) init, scaled residual projections."
    def __init__(self, vocab: int, block: int, n_layer: int, n_head: int, d: int):
        super().__init__()
        self.wte, self.wpe = nn.Embedding(vocab, d), nn.Embedding(block, d)
        self.h = nn.ModuleList(RefBlock(d, n_head) for _ in range(n_layer))
        self.ln_f, self.lm_head = nn.LayerNorm(d, bias=False), nn.Linear(d, vocab, bias=False)
        self.wte.weight = self.lm_head.weight
        for m in self.modules():    # same order of draws as nanoGPT's self.apply(_init_weights)
            if isinstance(m, (nn.Linear, nn.Embedding)): nn.init.normal_(m.weight, 0.0, 0.02)
        for name, p in self.named_parameters():
            if name.endswith("proj.weight"): nn.init.normal_(p, 0.0, 0.02 / math.sqrt(2 * n_layer))

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        x = self.wte(idx) + self.wpe(torch.arange(idx.shape[1]))
        for block in self.h: x = block(x)
        return self.lm_head(self.ln_f(x))


def reference_optimizer(model: nn.Module, lr: float = 1e-3, weight_decay: float = 0.1) -> torch.optim.AdamW:
    "nanoGPT's configure_optimizers: matrices and embeddings decay, 1-d tensors do not; betas (0.9, 0.99)."
    params = list(model.parameters())
    return torch.optim.AdamW([{"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
                              {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}], lr=lr, betas=(0.9, 0.99))


def reference_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    "nanoGPT's loss: cross-entropy of the logits for every position of every sequence."
    logits = model(x)
    return F.cross_entropy(logits.view(-1, logits.size(-1)), y.view(-1), ignore_index=-1)


def reference_update(model: nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    "One step of nanoGPT's loop: loss, backward, clip the gradient norm at 1.0, AdamW step, clear the gradients."
    loss = reference_loss(model, x, y)
    loss.backward()
    nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    opt.zero_grad(set_to_none=True)
    return loss


def get_batch(data: np.ndarray, batch_size: int, block_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    "nanoGPT's get_batch: `batch_size` random windows of the token array `data` and their targets (global torch RNG)."
    ix = torch.randint(len(data) - block_size, (batch_size,))
    return (torch.stack([torch.from_numpy(data[i:i + block_size].astype(np.int64)) for i in ix]),
            torch.stack([torch.from_numpy(data[i + 1:i + 1 + block_size].astype(np.int64)) for i in ix]))


def get_lr(it: int, steps: int, lr: float = 1e-3, min_lr: float = 1e-4, warmup: int = 100) -> float:
    "nanoGPT's get_lr: linear warmup (it+1)/(warmup+1), then cosine decay from `lr` to `min_lr` at step `steps`."
    if it < warmup: return lr * (it + 1) / (warmup + 1)
    return min_lr + 0.5 * (1 + math.cos(math.pi * (it - warmup) / (steps - warmup))) * (lr - min_lr)


def reference(data: Any, steps: int = 2000, seed: int = 1337, eval_interval: int = 250, val_batches: int = 200) -> dict:
    """nanoGPT's train.py for this recipe on `data` (a `TrainData`): global-RNG batches from a uint16 array, train and
    val estimates (20 batches each) every `eval_interval` steps, torch.optim.AdamW, clipping at 1.0, warmup
    (it+1)/(warmup+1), steps 0..`steps` inclusive. tok/s counts training time only; val@20 is the estimate at step
    `steps`, as nanoGPT prints it; val@200 the book's fixed sample of `val_batches` batches (skipped when 0), the
    yardstick shared with the book's runs."""
    from llm_from_scratch.train import evaluate
    torch.manual_seed(seed)
    splits = {"train": data.train.numpy().astype(np.uint16), "val": data.val.numpy().astype(np.uint16)}
    B, T = 12, 64

    @torch.no_grad()
    def estimate() -> float:
        model.eval()
        out = {s: sum(reference_loss(model, *get_batch(splits[s], B, T)).item() for _ in range(20)) / 20
               for s in ("train", "val")}
        model.train()
        return out["val"]

    model = RefGPT(data.vocab_size, T, 4, 4, 128)
    opt = reference_optimizer(model, 1e-3)
    x, y = get_batch(splits["train"], B, T)
    start = t0 = time.perf_counter()
    train_s, val = 0.0, float("nan")
    for it in range(steps + 1):
        for g in opt.param_groups: g["lr"] = get_lr(it, steps)
        if it % eval_interval == 0:
            te = time.perf_counter(); val = estimate(); t0 += time.perf_counter() - te
        loss = reference_update(model, opt, x, y)
        x, y = get_batch(splits["train"], B, T)   # nanoGPT draws it between forward and backward; no draw in between
        loss.item()
        t1 = time.perf_counter(); train_s += t1 - t0; t0 = t1
    wall = time.perf_counter() - start
    return {"run": "reference: nanoGPT's recipe and code, plain PyTorch", "steps": steps + 1,
            "tok/s": (steps + 1) * B * T / train_s, "wall s": wall, "val loss (20 batches)": val,
            "val loss (200 batches)": evaluate(model, data.val, B, T, val_batches, seed=2024) if val_batches else float("nan"),
            "params": sum(p.numel() for p in model.parameters())}
