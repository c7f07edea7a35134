"""The package as a user gets it: a wheel installed into a clean virtual environment runs `llmfs` without the book tooling."""
from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run(*cmd, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([str(c) for c in cmd], capture_output=True, text=True, **kw)


@pytest.mark.slow
def test_wheel_installs_and_trains_in_a_clean_venv(tmp_path):
    r = run(sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", tmp_path / "dist", ROOT)
    assert r.returncode == 0, r.stderr[-2000:]
    (wheel,) = (tmp_path / "dist").glob("llm_from_scratch_book-*.whl")
    with zipfile.ZipFile(wheel) as z:   # GPT-2's tokenizer files ship with their licence
        names = set(z.namelist())
        for f in ("encoder.json", "vocab.bpe", "LICENSE"):
            assert f"llm_from_scratch/assets/gpt2/{f}" in names, f"{f} missing from the wheel"
            assert z.read(f"llm_from_scratch/assets/gpt2/{f}") == (ROOT / "llm_from_scratch/assets/gpt2" / f).read_bytes()
    venv = tmp_path / "venv"
    assert run(sys.executable, "-m", "venv", venv).returncode == 0
    py, llmfs = venv / "bin" / "python", venv / "bin" / "llmfs"
    # a clean environment: with PYTHONPATH on a checkout that holds an .egg-info, pip would think the package installed
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
    r = run(py, "-m", "pip", "install", "-q", "-c", ROOT / "constraints.txt", wheel, env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    assert run(py, "-c", "import nbdev", env=env).returncode != 0, "the book tooling must be an extra, not a dependency"
    env.update(LLMFS_CACHE=str(tmp_path / "cache"), LLMFS_SCALE="test", OMP_NUM_THREADS="1")
    r = run(llmfs, "info", env=env, cwd=tmp_path)
    assert r.returncode == 0 and "scale:" in r.stdout, r.stderr
    # GPT-2's tokenizer loads from the installed package, offline, and matches tiktoken's gpt2 built from the same files
    r = run(py, "-c", "from llm_from_scratch.tokenizer import GPT2Tokenizer, tiktoken_gpt2; t = 'Hello world!  déjà vu'; "
            "assert GPT2Tokenizer.from_files().encode(t) == tiktoken_gpt2().encode(t) == [15496, 995, 0, 220, 39073, 73, 24247, 410, 84]",
            env=env, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    corpus = tmp_path / "corpus.txt"
    corpus.write_text((ROOT / "README.md").read_text(encoding="utf-8") * 4, encoding="utf-8")
    r = run(llmfs, "train", "--data", f"char:{corpus}", "--preset", "tiny", "--max-steps", "6", "--eval-interval", "3",
            "--ckpt-interval", "3", "--out", tmp_path / "run", "--sample", "20", env=env, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "6 steps" in r.stdout and (tmp_path / "run" / "ckpt.pt").exists() and (tmp_path / "run" / "loss.png").exists()
    r = run(llmfs, "book", env=env, cwd=tmp_path)
    assert r.returncode == 1 and "llm-from-scratch-book[book]" in r.stderr and "Traceback" not in r.stderr
