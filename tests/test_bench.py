"""The training benchmark's nanoGPT reference is only a yardstick if it computes what the book's model computes: same
architecture (logits equal given the same weights) and the same recipe. These checks run without ../shared."""
from dataclasses import replace

import torch

from bench import mfu, nanogpt
from bench import train as bench_train
from llm_from_scratch.core import seed_everything
from llm_from_scratch.dataloader import random_batch
from llm_from_scratch.model import GPT
from llm_from_scratch.train import TrainData, lr_at, train


NAMES = {"wte": "emb.tok", "wpe": "emb.pos", "h": "blocks", "ln_f": "norm_f", "ln_1": "norm1", "ln_2": "norm2",
         "c_attn": "attn.qkv", "attn_proj": "attn.proj", "c_fc": "mlp.fc", "mlp_proj": "mlp.proj"}


def book_name(ref_name: str) -> str:
    "The book's name for the reference's parameter `ref_name`."
    return ".".join(NAMES.get(part, part) for part in ref_name.split("."))


def book_state_from_reference(ref: torch.nn.Module) -> dict[str, torch.Tensor]:
    "The reference's weights under the book's parameter names."
    return {book_name(k): v for k, v in ref.state_dict().items()}


def load_book_state(ref: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    "Load the book model's `state` into the reference."
    ref.load_state_dict({k: state[book_name(k)] for k in ref.state_dict()})


def test_reference_is_the_books_gpt2_architecture():
    mcfg, _ = bench_train.recipes(65, 2000, 3e-3, 3e-3)["gpt2"]
    torch.manual_seed(0)
    ref = nanogpt.RefGPT(65, 64, 4, 4, 128)
    ours = GPT(mcfg).eval()
    ours.load_state_dict(book_state_from_reference(ref))
    idx = torch.randint(0, 65, (3, 64), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(ours(idx), ref.eval()(idx), rtol=0, atol=1e-6)
    assert sum(p.numel() for p in ref.parameters()) == ours.num_params()


def random_data(vocab: int = 20, n: int = 4000) -> TrainData:
    tokens = torch.randint(0, vocab, (n,), generator=torch.Generator().manual_seed(0))
    return TrainData("random", tokens[: n * 9 // 10], tokens[n * 9 // 10:], vocab)


def test_books_training_loop_equals_the_reference_loop(tmp_path):
    """`train` with nanoGPT's recipe updates the weights exactly as the reference's loop (torch.optim.AdamW,
    nn.utils.clip_grad_norm_) does, given the same initial weights and the same batches."""
    data = random_data()
    mcfg, tcfg = bench_train.recipes(data.vocab_size, 2000, 3e-3, 3e-3)["gpt2"]
    tcfg = replace(tcfg, max_steps=25, warmup_steps=5, lr=3e-3, min_lr=3e-4, eval_interval=10**6, eval_batches=1,
                   seed=0, threads=0)
    seed_everything(tcfg.seed)
    start = GPT(mcfg).state_dict()
    ours = train(mcfg, tcfg, data, tmp_path, progress=False)["model"]

    ref = nanogpt.RefGPT(data.vocab_size, mcfg.block_size, mcfg.n_layer, mcfg.n_head, mcfg.n_embd)
    load_book_state(ref, start)
    opt = nanogpt.reference_optimizer(ref, tcfg.lr, tcfg.weight_decay)
    gen = torch.Generator().manual_seed(tcfg.seed)
    for step in range(tcfg.max_steps):
        for g in opt.param_groups: g["lr"] = lr_at(step, tcfg.lr, tcfg.min_lr, tcfg.warmup_steps, tcfg.max_steps)
        nanogpt.reference_update(ref, opt, *random_batch(data.train, tcfg.batch_size, mcfg.block_size, gen))
    got, want = ours.state_dict(), book_state_from_reference(ref)
    assert any((got[k] != start[k]).any() for k in got)              # training moved the weights
    for k in got: torch.testing.assert_close(got[k], want[k], rtol=0, atol=0)    # same operations in the same order


def test_reference_and_recipe_agree_on_the_schedule_and_run():
    data = random_data()
    res = nanogpt.reference(data, steps=10, seed=0)
    assert res["steps"] == 11 and res["tok/s"] > 0
    assert 2.5 < res["val loss (200 batches)"] < 3.5        # about ln(20) = 3.0 for random tokens
    _, tcfg = bench_train.recipes(20, 2000, 3e-3, 3e-3)["gpt2"]
    assert (tcfg.lr, tcfg.min_lr, tcfg.warmup_steps, tcfg.beta2, tcfg.weight_decay, tcfg.grad_clip, tcfg.batch_size) == \
        (1e-3, 1e-4, 100, 0.99, 0.1, 1.0, 12)


def test_bench_skips_without_the_dataset(monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(bench_train, "DATA", tmp_path / "missing.txt")
    assert bench_train.main([]) == 0
    assert "skipping" in capsys.readouterr().out


def test_mfu_script_runs_and_knows_its_peaks(capsys):
    assert mfu.peak_flops("NVIDIA H100 80GB HBM3") == 989e12 and mfu.peak_flops("NVIDIA H100 PCIe") == 756e12
    assert mfu.peak_flops("NVIDIA H200") == 989e12 and mfu.peak_flops("a mystery GPU") is None
    assert mfu.main(["--smoke", "--steps", "6", "--warmup", "2", "--no-compile", "--peak-tflops", "0.5"]) == 0
    out = capsys.readouterr().out
    assert "MFU" in out and "of 0.5 peak" in out
