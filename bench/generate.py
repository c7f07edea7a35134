"""Benchmark chapter 9's generation (plain script, prints a table).

Tokens per second of greedy generation on one row after a 16-token prompt, against the number of tokens generated:
chapter 5's loop without a cache (the whole text again at every step), chapter 9's KV cache, and Hugging Face
`transformers`' `generate` with its own cache on the same weights (read from the folder our exporter writes). Each
method runs once to the longest length; the time at which each token arrives gives the whole curve.

Models: `base` (the book's base model at the current LLMFS_SCALE, exported in GPT-NeoX layout) and `gpt2-124m`
(GPT-2 small's shape, 124M parameters, random weights, exported in GPT-2 layout). Goals (chapter 9's issue): the
cache at least 5x faster than no cache at 512 tokens on the 124M shape, and at least as fast as `transformers`.
Usage: python bench/generate.py [--models base gpt2-124m] [--max-new 512] [--threads N]
"""
from __future__ import annotations

import argparse
import tempfile
import time
import warnings
from pathlib import Path

import torch

from llm_from_scratch.generate import Sampling, stream
from llm_from_scratch.hf import save_hf
from llm_from_scratch.model import GPT, GPTConfig


def arrival_times(tokens) -> list[float]:
    "Seconds from the start until each yielded item arrived."
    t0, out = time.perf_counter(), []
    for _ in tokens: out.append(time.perf_counter() - t0)
    return out


def ours(model: GPT, prompt: list[int], n: int, use_cache: bool) -> tuple[list[float], list[int]]:
    ids: list[int] = []
    def run():
        for t in stream(model, [prompt], n, Sampling(temperature=0), use_cache=use_cache):
            ids.append(int(t[0]))
            yield
    return arrival_times(run()), ids


def theirs(hf_model, prompt: list[int], n: int) -> tuple[list[float], list[int]]:
    from transformers.generation.streamers import BaseStreamer

    class Clock(BaseStreamer):
        def __init__(self): self.t0, self.times, self.ids, self.first = time.perf_counter(), [], [], True
        def put(self, value):
            if self.first: self.first = False; return             # the prompt
            self.times.append(time.perf_counter() - self.t0); self.ids.append(int(value.reshape(-1)[0]))
        def end(self): pass

    x = torch.tensor([prompt])
    clock = Clock()
    with torch.no_grad():
        hf_model.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=n, min_new_tokens=n, do_sample=False,
                          eos_token_id=None, pad_token_id=0, streamer=clock)
    return clock.times, clock.ids


def load_model(name: str) -> GPT:
    if name == "base":
        from llm_from_scratch.scaling import base_model
        return base_model(progress=False)[0]
    if name == "gpt2-124m":
        torch.manual_seed(0)
        return GPT(GPTConfig()).eval()
    raise SystemExit(f"unknown model {name!r}: use base or gpt2-124m")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", nargs="+", default=["base", "gpt2-124m"])
    ap.add_argument("--max-new", type=int, default=512, help="tokens to generate (capped at block_size - prompt)")
    ap.add_argument("--prompt", type=int, default=16)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--no-uncached", action="store_true", help="skip the slow no-cache run")
    a = ap.parse_args()
    if a.threads: torch.set_num_threads(a.threads)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import transformers
        from transformers import AutoModelForCausalLM
    transformers.logging.set_verbosity_error()
    print(f"torch {torch.__version__}, transformers {transformers.__version__}, {torch.get_num_threads()} threads, CPU; "
          f"greedy, one row, {a.prompt}-token prompt; tokens/s up to each length")
    for name in a.models:
        model = load_model(name)
        cfg = model.cfg
        n = min(a.max_new, cfg.block_size - a.prompt)
        prompt = torch.randint(cfg.vocab_size, (a.prompt,), generator=torch.Generator().manual_seed(1)).tolist()
        with tempfile.TemporaryDirectory() as d:
            save_hf(model, Path(d))
            hf_model = AutoModelForCausalLM.from_pretrained(d).eval()
        ours(model, prompt, 8, True); theirs(hf_model, prompt, 8)       # warm up
        runs = {"KV cache": ours(model, prompt, n, True), "transformers": theirs(hf_model, prompt, n)}
        if not a.no_uncached: runs["no cache"] = ours(model, prompt, n, False)
        agree = sum(x == y for x, y in zip(runs["KV cache"][1], runs["transformers"][1]))
        print(f"\n{name}: {model.num_params() / 1e6:.1f}M parameters, {cfg.n_layer} layers x {cfg.n_embd}, "
              f"{hf_model.__class__.__name__} for transformers; greedy tokens equal to transformers': {agree}/{n}")
        cols = [k for k in ("no cache", "KV cache", "transformers") if k in runs]
        print(f"{'tokens':>7}" + "".join(f"{c:>14}" for c in cols) + (f"{'cache/none':>12}" if "no cache" in runs else "")
              + f"{'cache/HF':>10}")
        lengths = sorted({L for L in (16, 32, 64, 128, 256, 512, 1024) if L <= n} | {n})
        for L in lengths:
            rate = {c: L / runs[c][0][L - 1] for c in cols}
            row = f"{L:>7}" + "".join(f"{rate[c]:>14.1f}" for c in cols)
            if "no cache" in runs: row += f"{rate['KV cache'] / rate['no cache']:>11.1f}x"
            print(row + f"{rate['KV cache'] / rate['transformers']:>9.2f}x")


if __name__ == "__main__":
    main()
