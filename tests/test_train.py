"Tests of llm_from_scratch.train (chapter 6): optimiser parity, accumulation, and crash-safe resumption in real processes."
import json
import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings, strategies as st

from llm_from_scratch.model import GPT, GPTConfig
from llm_from_scratch.checkpoint import load_checkpoint, save_checkpoint
from llm_from_scratch.cli import main as llmfs
from llm_from_scratch.train import (AdamW, TrainConfig, char_data, clip_grad_norm_, lm_loss, lr_at, param_groups,
                                    read_metrics, train)


def main(args: list[str]) -> int:
    "`llmfs train ARGS...` in this process."
    return llmfs(["train", *args])

ROOT = Path(__file__).resolve().parents[1]
SMALL = dict(vocab_size=64, block_size=16, n_layer=2, n_head=2, n_embd=32)


def _run_opt(make, steps, seed=0, modern=True):
    torch.manual_seed(seed)
    m = GPT(GPTConfig.modern(**SMALL, bias=True) if modern else GPTConfig(**SMALL))
    opt = make(param_groups(m, 0.1))
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        x = torch.randint(0, 64, (2, 16), generator=g)
        lm_loss(m(x), x.roll(-1, 1)).backward()
        opt.step(); opt.zero_grad()
    return m, opt


@settings(max_examples=8, deadline=None)
@given(lr=st.floats(1e-4, 1e-2), b1=st.floats(0.5, 0.95), b2=st.floats(0.9, 0.999), foreach=st.booleans())
def test_adamw_matches_torch(lr, b1, b2, foreach):
    hp = dict(lr=lr, betas=(b1, b2), eps=1e-8)
    ref, ref_opt = _run_opt(lambda g: torch.optim.AdamW(g, **hp), 10)
    ours, opt = _run_opt(lambda g: AdamW(g, foreach=foreach, **hp), 10)
    for a, b in zip(ours.parameters(), ref.parameters()):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)
    for p, q in zip(ours.parameters(), ref.parameters()):       # the moments agree too
        torch.testing.assert_close(opt.state[p]["exp_avg_sq"], ref_opt.state[q]["exp_avg_sq"], atol=1e-9, rtol=1e-4)


def test_adamw_rejects_bad_hyperparameters():
    with pytest.raises(ValueError, match="betas"):
        AdamW([torch.nn.Parameter(torch.zeros(2))], betas=(0.9, 1.0))


def test_accumulated_gradients_equal_big_batch():
    x = torch.randint(0, 64, (12, 16), generator=torch.Generator().manual_seed(3))
    def grads(chunks):
        torch.manual_seed(0)
        m = GPT(GPTConfig(**SMALL))
        for c in x.split(chunks): (lm_loss(m(c), c.roll(-1, 1)) * len(c) / len(x)).backward()
        return [p.grad.clone() for p in m.parameters()]
    for a, b in zip(grads(12), grads(3)): torch.testing.assert_close(a, b, atol=1e-7, rtol=1e-5)


def test_clip_matches_torch():
    for max_norm in (0.01, 1.0, 1e6):
        ms = []
        for _ in range(2):
            torch.manual_seed(0); m = GPT(GPTConfig(**SMALL)); x = torch.randint(0, 64, (2, 16))
            lm_loss(m(x), x.roll(-1, 1)).backward(); ms.append(m)
        n1 = clip_grad_norm_(ms[0].parameters(), max_norm); n2 = torch.nn.utils.clip_grad_norm_(ms[1].parameters(), max_norm)
        torch.testing.assert_close(n1, n2)
        for p, q in zip(ms[0].parameters(), ms[1].parameters()): torch.testing.assert_close(p.grad, q.grad)


def test_schedule_shape():
    assert lr_at(0, 1.0, 0.1, 10, 100) == pytest.approx(0.1)
    assert lr_at(9, 1.0, 0.1, 10, 100) == pytest.approx(1.0)
    assert lr_at(55, 1.0, 0.1, 10, 100) == pytest.approx(0.55)
    assert lr_at(100, 1.0, 0.1, 10, 100) == pytest.approx(0.1)


def test_checkpoint_loading_never_unpickles_code(tmp_path):
    class Evil:
        def __reduce__(self): return (os.system, ("echo pwned > " + str(tmp_path / "pwned"),))
    p = tmp_path / "evil.pt"
    torch.save({"format": 2, "payload": Evil()}, p)
    with pytest.raises(pickle.UnpicklingError):
        load_checkpoint(p)
    assert not (tmp_path / "pwned").exists()


def _corpus(tmp_path: Path) -> Path:
    "Real text without ../shared: a few modules of Python's standard library."
    import json as j, argparse as a, textwrap as t
    text = "".join(Path(m.__file__).read_text(encoding="utf-8") for m in (j, a, t))
    p = tmp_path / "corpus.txt"; p.write_text(text, encoding="utf-8")
    return p


def _cmd(corpus: Path, out: Path, steps: int, *extra: str) -> list[str]:
    return [sys.executable, "-m", "llm_from_scratch.cli", "train", "--data", f"char:{corpus}", "--out", str(out),
            "--n-layer", "1", "--n-head", "2", "--n-embd", "32", "--block-size", "32", "--dropout", "0.1",
            "--batch-size", "4", "--max-steps", str(steps), "--warmup-steps", "5", "--ckpt-interval", "5",
            "--eval-interval", "10", "--eval-batches", "2", "--threads", "1", "--device", "cpu",
            "--no-progress", "--sample", "0", *extra]


def _weights(out: Path) -> dict:
    return load_checkpoint(out / "ckpt.pt")["model"]


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


ENV = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}


@pytest.mark.parametrize("opt", ["adamw", "muon"])
def test_stop_and_resume_bitwise(tmp_path, opt):
    "Killed after step 13 and resumed from step 10's checkpoint = never stopped, for AdamW and for chapter 7's Muon."
    corpus, o = _corpus(tmp_path), ("--optimizer", opt)
    ref = subprocess.run(_cmd(corpus, tmp_path / "ref", 30, *o), env=ENV, capture_output=True, text=True)
    assert ref.returncode == 0, ref.stderr
    r1 = subprocess.run(_cmd(corpus, tmp_path / "run", 30, "--stop-after", "13", *o), env=ENV, capture_output=True, text=True)
    assert r1.returncode == 3, r1.stderr                        # os._exit: no final checkpoint
    assert load_checkpoint(tmp_path / "run" / "ckpt.pt")["step"] == 10
    r2 = subprocess.run(_cmd(corpus, tmp_path / "run", 30, *o), env=ENV, capture_output=True, text=True)
    assert r2.returncode == 0, r2.stderr
    assert _same(_weights(tmp_path / "ref"), _weights(tmp_path / "run"))
    assert [r["loss"] for r in read_metrics(tmp_path / "ref" / "metrics.jsonl")] == \
           [r["loss"] for r in read_metrics(tmp_path / "run" / "metrics.jsonl")]


def test_sigkill_and_resume_bitwise(tmp_path):
    corpus, steps = _corpus(tmp_path), 400
    ref = subprocess.run(_cmd(corpus, tmp_path / "ref", steps), env=ENV, capture_output=True, text=True)
    assert ref.returncode == 0, ref.stderr
    log = tmp_path / "run" / "metrics.jsonl"
    proc = subprocess.Popen(_cmd(corpus, tmp_path / "run", steps), env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if log.exists() and len(log.read_text().splitlines()) >= 23: break
        time.sleep(0.005)
    assert proc.poll() is None, "the run finished before it could be killed; make it longer"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    killed_at = load_checkpoint(tmp_path / "run" / "ckpt.pt")["step"]
    assert 0 < killed_at < steps
    r2 = subprocess.run(_cmd(corpus, tmp_path / "run", steps), env=ENV, capture_output=True, text=True)
    assert r2.returncode == 0, r2.stderr
    assert _same(_weights(tmp_path / "ref"), _weights(tmp_path / "run"))
    assert len(read_metrics(log)) == steps


def test_other_config_refuses_to_resume(tmp_path, capsys):
    corpus = _corpus(tmp_path)
    args = ["--data", f"char:{corpus}", "--out", str(tmp_path / "run"), "--n-layer", "1", "--n-head", "2", "--n-embd", "16",
            "--block-size", "16", "--batch-size", "2", "--max-steps", "4", "--eval-interval", "2", "--eval-batches", "1",
            "--no-progress", "--sample", "0"]
    assert main(args) == 0
    args[args.index("--n-layer") + 1] = "2"
    assert main(args + ["--lr", "5e-4", "--max-steps", "6"]) == 1
    err = capsys.readouterr().err
    assert "model.n_layer: checkpoint 1, now 2" in err and "train.lr" in err and "train.max_steps" in err


def test_non_finite_loss_names_the_step(tmp_path):
    data = char_data(_corpus(tmp_path))
    cfg = GPTConfig(vocab_size=data.vocab_size, block_size=16, n_layer=1, n_head=2, n_embd=16)
    m = GPT(cfg)
    with torch.no_grad(): m.norm_f.weight.fill_(float("inf"))
    with pytest.raises(FloatingPointError, match="step 1"):
        train(cfg, TrainConfig(batch_size=2, max_steps=3, warmup_steps=1, eval_interval=2, eval_batches=1), data,
              tmp_path / "run", progress=False, model=m)


def test_atomic_checkpoint_keeps_old_file(tmp_path):
    p = save_checkpoint(tmp_path / "c.pt", {"format": 2, "x": torch.ones(2)})
    class Bad:
        def __reduce__(self): raise OSError("disk full")
    with pytest.raises(OSError):
        save_checkpoint(p, {"format": 2, "x": torch.zeros(2), "bad": Bad()})
    assert torch.equal(load_checkpoint(p)["x"], torch.ones(2)) and [f.name for f in tmp_path.iterdir()] == ["c.pt"]


def test_yaml_config_and_flag_override(tmp_path):
    corpus = _corpus(tmp_path)
    (tmp_path / "run.yaml").write_text(
        f"data: char:{corpus}\nout: {tmp_path / 'run'}\n"
        "model: {n_layer: 1, n_head: 2, n_embd: 16, block_size: 16}\n"
        "train: {batch_size: 2, max_steps: 3, warmup_steps: 1, eval_interval: 3, eval_batches: 1, lr: 0.002}\n")
    assert main(["--config", str(tmp_path / "run.yaml"), "--lr", "0.001", "--no-progress", "--sample", "0"]) == 0
    st = load_checkpoint(tmp_path / "run" / "ckpt.pt")
    assert st["train_config"]["lr"] == 0.001 and st["model_config"]["n_embd"] == 16 and st["step"] == 3
    assert (tmp_path / "run" / "loss.png").exists()
    (tmp_path / "bad.yaml").write_text("model: {n_layers: 2}\n")
    assert main(["--config", str(tmp_path / "bad.yaml"), "--data", f"char:{corpus}", "--out", str(tmp_path / "b")]) == 2


def test_exercise_coupled_weight_decay():
    "Exercise 1 of chapter 6: Adam with weight decay added to the gradient, checked against torch.optim.Adam."
    import math

    class CoupledAdam(AdamW):
        @staticmethod
        def _update(p, m, v, t, lr, b1, b2, eps, wd):
            g = p.grad + wd * p                                  # decay enters the gradient
            m.lerp_(g, 1 - b1)
            v.mul_(b2).addcmul_(g, g, value=1 - b2)
            denom = (v.sqrt() / math.sqrt(1 - b2 ** t)).add_(eps)
            p.addcdiv_(m, denom, value=-lr / (1 - b1 ** t))

    hp = dict(lr=3e-3, betas=(0.9, 0.95), eps=1e-8)
    ours, _ = _run_opt(lambda groups: CoupledAdam(groups, foreach=False, **hp), 20)
    ref, _ = _run_opt(lambda groups: torch.optim.Adam(groups, **hp), 20)
    decoupled, _ = _run_opt(lambda groups: AdamW(groups, **hp), 20)
    gap = max((a - b).abs().max().item() for a, b in zip(ours.parameters(), ref.parameters()))
    assert gap < 1e-6, gap
    # and it is a different optimiser from AdamW
    assert max((a - b).abs().max().item() for a, b in zip(ours.parameters(), decoupled.parameters())) > 1e-5


def test_ctrl_c_during_a_checkpoint_write_takes_effect_after_it(tmp_path, monkeypatch):
    """`torch.save` turns a KeyboardInterrupt raised inside its write into a RuntimeError ("unexpected pos"), so
    `save_checkpoint` holds Ctrl-C until the file is written: then the interrupt arrives, and the checkpoint loads."""
    from llm_from_scratch import checkpoint
    real_save = torch.save
    def save_interrupted(obj, f):
        os.kill(os.getpid(), signal.SIGINT)      # Ctrl-C arrives while the checkpoint is being written
        real_save(obj, f)
    monkeypatch.setattr(checkpoint.torch, "save", save_interrupted)
    state = {"format": checkpoint.CKPT_FORMAT, "w": torch.arange(5.0)}
    with pytest.raises(KeyboardInterrupt):
        checkpoint.save_checkpoint(tmp_path / "ckpt.pt", state)
    monkeypatch.undo()
    assert torch.equal(checkpoint.load_checkpoint(tmp_path / "ckpt.pt")["w"], torch.arange(5.0))
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
