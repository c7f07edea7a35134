"""Fault injection for `llmfs`: a table of bad inputs and faults, each run through the real command line in a subprocess.

Every case asserts the contract of the command line: the exit code (2: bad usage or configuration, 1: a failure,
130: Ctrl-C), one line `llmfs COMMAND: error: WHAT - WHAT TO DO` at the end of stderr (the only line, for a usage or
configuration error, apart from `llmfs train`'s announcement of its run), no `Traceback` (unless `--debug`), no
temporary file left behind, and every file that existed in the working folder before the call byte-identical after.

The cases use tiny inputs (a character-level corpus of a few standard-library modules, tokenizers of 300 ids, a
one-layer model) so the whole file runs in a few minutes on two CPU cores. A full disk is a small tmpfs when this
process may mount one (root in a container), else a wrapper that makes writes fail with ENOSPC; a read-only folder is
`chmod 555` (as root, run without the capability that ignores permissions)."""
from __future__ import annotations

import errno
import hashlib
import os
import re
import shutil
import signal
import subprocess
import sys
import sysconfig
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pytest

LLMFS = [sys.executable, "-m", "llm_from_scratch.cli"]
TMP_MARK = ".llmfs-tmp-"                      # the prefix of `atomic_path`'s temporary files
TIMEOUT = 180

# A one-layer model on characters: a few seconds to train; every error case fails long before training would start.
MODEL = {"--preset": "tiny", "--n-layer": "1", "--n-embd": "32", "--n-head": "2", "--block-size": "32",
         "--batch-size": "4", "--max-steps": "8", "--eval-interval": "2", "--eval-batches": "1", "--ckpt-interval": "2"}
QUIET = ["--sample", "0", "--no-progress"]

def tiny(*extra: str, drop: tuple[str, ...] = (), **over: str) -> list[str]:
    "`llmfs train` arguments for the tiny model on corpus.txt into ./run, with flags in `drop` left out and `over` changed."
    flags = {**MODEL, **{"--" + k.replace("_", "-"): v for k, v in over.items()}}
    args = [x for k, v in flags.items() if k not in drop for x in (k, v)]
    return ["train", "--data", "char:corpus.txt", "--out", "run", *args, *QUIET, *extra]


# ---------------------------------------------------------------------------------------------------- helpers
def run_env(d: Path, **extra: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LLMFS_")}
    env.update(LLMFS_CACHE=str(d / "cache"), LLMFS_SCALE="test", OMP_NUM_THREADS="1", MPLBACKEND="Agg",
               PYTHONDONTWRITEBYTECODE="1")
    for k, v in extra.items():
        if v is None: env.pop(k, None)
        else: env[k] = v
    return env

def llmfs(argv: list[str], d: Path, env: dict[str, str | None] | None = None, prefix: list[str] = (),
          timeout: int = TIMEOUT) -> subprocess.CompletedProcess:
    "Run `llmfs ARGV` in folder `d` with no stdin, the cache in `d/cache` and the test scale."
    return subprocess.run([*prefix, *LLMFS, *argv], cwd=d, env=run_env(d, **(env or {})), stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=timeout)

def popen(argv: list[str], d: Path) -> subprocess.Popen:
    return subprocess.Popen([*LLMFS, *argv], cwd=d, env=run_env(d), stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

def _excluded(rel: str, exclude: tuple[str, ...]) -> bool:
    return any(rel == e or rel.startswith(e.rstrip("/") + "/") for e in exclude)

def snapshot(d: Path, exclude: tuple[str, ...] = ()) -> dict[str, str]:
    "sha256 of every file under `d` by relative path, leaving out paths under the relative prefixes in `exclude`."
    out = {}
    for p in sorted(d.rglob("*")):
        rel = p.relative_to(d).as_posix()
        if p.is_symlink() or not p.is_file() or _excluded(rel, exclude): continue
        out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out

def changes(before: dict[str, str], d: Path, exclude: tuple[str, ...] = ()) -> list[str]:
    "What went wrong with the files: those in `before` that changed or vanished, and temporary files left behind."
    after, out = snapshot(d, exclude), []
    changed = sorted(k for k in before if after.get(k) != before[k] and not _excluded(k, exclude))
    if changed: out.append(f"files written before the call changed or vanished: {changed}")
    left = sorted(p.relative_to(d).as_posix() for p in d.rglob(f"*{TMP_MARK}*"))
    if left: out.append(f"temporary files left behind: {left}")
    return out

INFO_LINE = re.compile(r"^llmfs train: preset \S+, .*, run folder ")   # `llmfs train`'s one line before it starts

def error_problems(r: subprocess.CompletedProcess, cmd: str, codes: tuple[int, ...], needles: tuple[str, ...] = (),
                   strict: bool = True) -> list[str]:
    """How `r` breaks the contract: it should fail with an exit code in `codes` and end in one line
    `llmfs{cmd}: error: WHAT - WHAT TO DO` (`cmd` is a regex such as ' train') holding each of `needles`, with no
    traceback; `strict`: no other line on stderr (but train's announcement), else no other error line."""
    out = []
    if "Traceback" in r.stdout + r.stderr: out.append("a Traceback is shown")
    if r.returncode not in codes: out.append(f"exit code {r.returncode}, expected {' or '.join(map(str, codes))}")
    lines = [l for l in r.stderr.splitlines() if l.strip()]
    if not lines: return out + ["nothing on stderr"]
    last = lines[-1]
    if not re.match(rf"llmfs{cmd}: error: ", last): out.append(f"the last line is not 'llmfs{cmd}: error: ...'")
    if " - " not in last: out.append("the message has no ' - WHAT TO DO' part")
    missing = [n for n in needles if n.lower() not in last.lower()]
    if missing: out.append(f"the message does not mention {missing}")
    others = [l for l in lines[:-1] if not INFO_LINE.match(l)]
    if strict and others: out.append(f"{len(others) + 1} lines on stderr, expected one")
    elif [l for l in others if ": error:" in l]: out.append("more than one error line")
    return out

def check(r: subprocess.CompletedProcess, *problem_lists: list[str]) -> None:
    "Fail with every problem found, the exit code and the end of stderr."
    probs = [p for ps in problem_lists for p in ps]
    if probs:
        pytest.fail("; ".join(probs) + f"\n--- exit code {r.returncode}; stderr (end):\n{r.stderr[-2500:]}"
                    + (f"--- stdout (end):\n{r.stdout[-800:]}" if r.stdout.strip() else ""), pytrace=False)


# ---------------------------------------------------------------------------------------------------- shared inputs
@pytest.fixture(scope="session")
def base(tmp_path_factory) -> Path:
    """Made once: corpus.txt (a few stdlib modules), tok.json (a 300-id tokenizer, by `llmfs tokenizer train`) and
    run/ (a run of the tiny model stopped after step 3 of 8: ckpt.pt at step 2, metrics.jsonl to step 3)."""
    b = tmp_path_factory.mktemp("base")
    lib = Path(sysconfig.get_paths()["stdlib"])
    (b / "corpus.txt").write_text("".join((lib / f).read_text(encoding="utf-8") for f in ("textwrap.py", "shlex.py", "fnmatch.py")),
                                  encoding="utf-8")
    r = llmfs(["tokenizer", "train", "corpus.txt", "--vocab-size", "300", "--out", "tok.json"], b)
    assert r.returncode == 0 and (b / "tok.json").is_file(), r.stderr
    r = llmfs(tiny("--stop-after", "3"), b)
    assert r.returncode == 3 and (b / "run" / "ckpt.pt").is_file(), r.stderr
    return b

@pytest.fixture(scope="session")
def default_cache(base) -> Path:
    "The book's default corpus, tokenizer and shards at the test scale, built once (by `llmfs shards`) into base/cache."
    r = llmfs(["shards", "--quiet"], base, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    return base / "cache"

def nb_json(source: str = "# A chapter") -> str:
    import json
    return json.dumps({"nbformat": 4, "nbformat_minor": 5, "metadata": {},
                       "cells": [{"cell_type": "markdown", "id": "a1", "metadata": {}, "source": source},
                                 {"cell_type": "code", "id": "b2", "metadata": {}, "execution_count": None, "outputs": [],
                                  "source": "open('EXECUTED', 'w').write('yes')"}]}, indent=1)


# ---------------------------------------------------------------------------------------------------- setups
Setup = Callable[[Path, Path], None]

def files(**content: str | bytes) -> Setup:
    "Write files (name: text or bytes; '__' in a name is a '/', '_DOT_' a '.') into the case folder."
    def setup(d: Path, base: Path) -> None:
        for name, c in content.items():
            p = d / name.replace("__", "/").replace("_DOT_", ".")
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(c if isinstance(c, bytes) else c.encode("utf-8"))
    return setup

def cfg(name: str, text: str | bytes) -> Setup:
    def setup(d: Path, base: Path) -> None:
        (d / name).write_bytes(text if isinstance(text, bytes) else text.encode("utf-8"))
    return setup

def with_tok(d: Path, base: Path) -> None: shutil.copy(base / "tok.json", d / "tok.json")

def with_run(d: Path, base: Path) -> None: shutil.copytree(base / "run", d / "run")

def with_ckpt(make: Callable[[bytes], bytes]) -> Setup:
    "The stopped run, its checkpoint replaced by make(the checkpoint's bytes)."
    def setup(d: Path, base: Path) -> None:
        with_run(d, base)
        p = d / "run" / "ckpt.pt"
        p.write_bytes(make(p.read_bytes()))
    return setup

def foreign_torch_file(_: bytes) -> bytes:
    import io
    import torch
    buf = io.BytesIO()
    torch.save({"format": 1, "weights": torch.zeros(3)}, buf)
    return buf.getvalue()

def book_fixture(d: Path, base: Path) -> None:
    (d / "book" / "nbs").mkdir(parents=True)
    (d / "book" / "_quarto.yml").write_text("project:\n  type: book\nbook:\n  title: T\n  chapters:\n    - nbs/01_a.ipynb\n")
    (d / "book" / "nbs" / "01_a.ipynb").write_text(nb_json())

def both(*setups: Setup) -> Setup:
    def setup(d: Path, base: Path) -> None:
        for s in setups: s(d, base)
    return setup

NOT_UTF8 = b"def f():\n    return 'caf\xe9'\n" * 50         # Latin-1, not UTF-8
RANDOM = bytes((i * 7919 + 13) % 256 for i in range(4096))


# ---------------------------------------------------------------------------------------------------- the table
@dataclass
class Case:
    id: str
    argv: list[str]
    codes: tuple[int, ...]
    needles: tuple[str, ...] = ()
    setup: Setup | None = None
    cmd: str | None = None                    # regex after 'llmfs' in the error line; default: ' ' + argv's command
    env: dict[str, str | None] = field(default_factory=dict)
    strict: bool | None = None                # one line only; default: for exit code 2

    def __post_init__(self):
        if isinstance(self.needles, str): self.needles = (self.needles,)
        if self.cmd is None:
            c = next(a for a in self.argv if not a.startswith("-"))
            self.cmd = r" tokenizer( \w+)?" if c == "tokenizer" else f" {c}"
        if self.strict is None: self.strict = self.codes == (2,)

CASES = [
    # --- the command line itself, scales and devices
    Case("unknown-command", ["frobnicate"], (2,), "frobnicate", cmd=""),
    Case("scale-flag-huge", ["--scale", "huge", "info"], (2,), "huge", cmd=""),
    Case("device-flag-tpu", ["--device", "tpu", "info"], (2,), "tpu", cmd="( info)?"),
    Case("env-scale-huge", ["info"], (2,), "LLMFS_SCALE", cmd="( info)?", env={"LLMFS_SCALE": "huge"}),
    Case("env-device-tpu", ["info"], (2,), "tpu", cmd="( info)?", env={"LLMFS_DEVICE": "tpu"}),
    # --- train: config files
    Case("cfg-missing-file", tiny("--config", "nope.yaml"), (2,), "nope.yaml"),
    Case("cfg-invalid-yaml", tiny("--config", "c.yaml"), (2,), ("c.yaml", "YAML"),
         cfg("c.yaml", "model: {n_layer: 1\ntrain: [\n")),
    Case("cfg-invalid-json", tiny("--config", "c.json"), (2,), ("c.json", "JSON"), cfg("c.json", '{"model": {"n_layer": 1,}}')),
    Case("cfg-top-level-list", tiny("--config", "c.yaml"), (2,), "list", cfg("c.yaml", "- model\n- train\n")),
    Case("cfg-top-level-string", tiny("--config", "c.yaml"), (2,), "str", cfg("c.yaml", "just some words\n")),
    Case("cfg-unknown-section", tiny("--config", "c.yaml"), (2,), "modle", cfg("c.yaml", "modle:\n  n_layer: 1\n")),
    Case("cfg-section-not-mapping", tiny("--config", "c.json"), (2,), "model", cfg("c.json", '{"model": [1, 2]}')),
    Case("cfg-unknown-field", tiny("--config", "c.yaml"), (2,), "n_layers", cfg("c.yaml", "model:\n  n_layers: 1\n")),
    Case("cfg-n-layer-two", tiny("--config", "c.yaml", drop=("--n-layer",)), (2,), "n_layer",
         cfg("c.yaml", "model:\n  n_layer: two\n")),
    Case("cfg-bias-maybe", tiny("--config", "c.yaml"), (2,), "bias", cfg("c.yaml", "model:\n  bias: maybe\n")),
    Case("cfg-lr-fast", tiny("--config", "c.yaml"), (2,), "lr", cfg("c.yaml", "train:\n  lr: fast\n")),
    Case("cfg-max-steps-fraction", tiny("--config", "c.yaml", drop=("--max-steps",)), (2,), "max_steps",
         cfg("c.yaml", "train:\n  max_steps: 4.5\n")),
    Case("cfg-json-list-for-int", tiny("--config", "c.json", drop=("--n-embd",)), (2,), "n_embd",
         cfg("c.json", '{"model": {"n_embd": [32]}}')),
    Case("cfg-unknown-preset", tiny("--config", "c.yaml", drop=("--preset",)), (2,), "huge", cfg("c.yaml", "preset: huge\n")),
    Case("cfg-data-not-string", tiny("--config", "c.yaml"), (2,), "data", cfg("c.yaml", "data: 5\n")),
    Case("cfg-not-utf8", tiny("--config", "c.yaml"), (2,), ("c.yaml", "UTF-8"), cfg("c.yaml", b"model:\n  norm: caf\xe9\n")),
    # --- train: flags
    Case("flag-unknown", tiny("--frobnicate"), (2,), "frobnicate"),
    Case("flag-lr-fast", tiny(lr="fast"), (2,), "lr"),
    Case("flag-bias-maybe", tiny(bias="maybe"), (2,), "bias"),
    Case("flag-max-steps-zero", tiny(max_steps="0"), (2,), "max_steps"),
    Case("flag-n-head-indivisible", tiny(n_head="3"), (2,), "n_head"),
    Case("flag-unknown-preset", tiny(preset="huge"), (2,), "huge"),
    Case("flag-stop-after-zero", tiny("--stop-after", "0"), (2,), "stop-after"),
    Case("flag-train-device-tpu", tiny(device="tpu"), (2,), "tpu"),
    Case("flag-vocab-too-small", tiny(vocab_size="5"), (2,), "vocab_size"),
    # --- train: data
    Case("data-unknown-spec", ["train", "--data", "bogus", "--out", "run", *QUIET], (2,), "bogus"),
    Case("data-missing-file", tiny("--data", "char:nope.txt"), (1, 2), "nope.txt"),
    Case("data-empty-file", tiny("--data", "char:empty.txt"), (2,), "empty.txt", files(empty_DOT_txt="")),
    Case("data-not-utf8", tiny("--data", "char:latin1.txt"), (1, 2), "UTF-8", files(latin1_DOT_txt=NOT_UTF8)),
    Case("block-size-over-val-split", tiny(block_size="5000"), (2,), ("val", "block")),
    Case("block-size-over-both-splits", tiny(block_size="100000"), (2,), ("train", "block")),
    # --- train: the run folder
    Case("ckpt-random-bytes", tiny(), (1,), ("ckpt.pt", "--overwrite"), with_ckpt(lambda b: RANDOM)),
    Case("ckpt-truncated", tiny(), (1,), ("ckpt.pt", "--overwrite"), with_ckpt(lambda b: b[: len(b) // 2])),
    Case("ckpt-empty", tiny(), (1,), ("ckpt.pt", "--overwrite"), with_ckpt(lambda b: b"")),
    Case("ckpt-foreign-torch-file", tiny(), (1,), ("ckpt.pt", "--overwrite"), with_ckpt(foreign_torch_file)),
    Case("resume-different-model", tiny(n_embd="64"), (1,), ("n_embd", "--overwrite"), with_run),
    Case("resume-different-data", tiny("--data", "char:other.txt"), (1,), ("data", "--overwrite"),
         both(with_run, files(other_DOT_txt="a different corpus, " * 500))),
    Case("out-parent-is-a-file", tiny("--out", "afile/run"), (1, 2), "afile", files(afile="x")),
    # --- tokenizer
    Case("tok-train-missing-file", ["tokenizer", "train", "nope.txt", "--vocab-size", "300", "--out", "t.json"], (1, 2), "nope.txt"),
    Case("tok-train-not-utf8", ["tokenizer", "train", "latin1.txt", "--vocab-size", "300", "--out", "t.json"], (1, 2), "UTF-8",
         files(latin1_DOT_txt=NOT_UTF8)),
    Case("tok-train-vocab-10", ["tokenizer", "train", "corpus.txt", "--vocab-size", "10", "--out", "t.json"], (2,), "vocab_size"),
    Case("tok-train-out-exists", ["tokenizer", "train", "corpus.txt", "--vocab-size", "260", "--out", "tok.json"], (2,),
         ("tok.json", "--force"), with_tok),
    Case("tok-train-out-folder-missing", ["tokenizer", "train", "corpus.txt", "--vocab-size", "300", "--out", "nodir/t.json"],
         (1, 2), "nodir"),
    Case("tok-encode-tokenizer-missing", ["tokenizer", "encode", "corpus.txt", "--tokenizer", "nope.json"], (1, 2), "nope.json"),
    Case("tok-encode-tokenizer-truncated", ["tokenizer", "encode", "corpus.txt", "--tokenizer", "t.json"], (1, 2), "t.json",
         lambda d, b: (d / "t.json").write_bytes((b / "tok.json").read_bytes()[:200])),
    Case("tok-encode-tokenizer-random", ["tokenizer", "encode", "corpus.txt", "--tokenizer", "t.json"], (1, 2), "t.json",
         files(t_DOT_json=RANDOM)),
    Case("tok-encode-tokenizer-empty", ["tokenizer", "encode", "corpus.txt", "--tokenizer", "t.json"], (1, 2), "t.json",
         files(t_DOT_json="")),
    Case("tok-encode-input-not-utf8", ["tokenizer", "encode", "latin1.txt", "--tokenizer", "tok.json"], (1, 2), "UTF-8",
         both(with_tok, files(latin1_DOT_txt=NOT_UTF8))),
    Case("tok-encode-input-missing", ["tokenizer", "encode", "nope.txt", "--tokenizer", "tok.json"], (1, 2), "nope.txt", with_tok),
    # --- shards, data, book
    Case("shards-unknown-split", ["shards", "--split", "tset"], (2,), "tset"),
    Case("data-source-missing", ["data", "--source", "/nonexistent/corpus"], (2,), "/nonexistent/corpus"),
    Case("data-source-empty-folder", ["data", "--source", "emptydir"], (1, 2), "emptydir",
         lambda d, b: (d / "emptydir").mkdir(), strict=True),
    Case("data-source-too-little-text", ["data", "--source", "small"], (1, 2), "small", files(small__a_DOT_txt="hello world\n")),
    Case("data-max-bytes-negative", ["data", "--max-bytes", "-5"], (2,), "max-bytes"),
    Case("book-unknown-chapter", ["book", "--root", "book", "--execute", "99"], (2,), "99", book_fixture),
]

JOBS = max(1, int(os.environ.get("LLMFS_FAULTS_JOBS") or min(2, os.cpu_count() or 1)))

def _run_case(case: Case, d: Path, base: Path) -> tuple[dict[str, str], subprocess.CompletedProcess]:
    d.mkdir()
    shutil.copy(base / "corpus.txt", d / "corpus.txt")
    if case.setup: case.setup(d, base)
    before = snapshot(d)
    return before, llmfs(case.argv, d, case.env)

@pytest.fixture(scope="session")
def table(request, base, tmp_path_factory) -> dict[str, tuple[Path, Callable]]:
    """The table's selected cases, each run once in its own folder, JOBS at a time (each is a process that spends
    its time importing torch on one core): {id: (folder, future of (snapshot before, result))}."""
    from concurrent.futures import ThreadPoolExecutor
    ids = {it.callspec.params["case"].id for it in request.session.items
           if getattr(it, "originalname", None) == "test_fault" and hasattr(it, "callspec")}
    root, by_id = tmp_path_factory.mktemp("table"), {c.id: c for c in CASES}
    pool = ThreadPoolExecutor(JOBS)
    request.addfinalizer(lambda: pool.shutdown(cancel_futures=True))   # after -x: the cases not begun are dropped
    return {i: (root / i, pool.submit(_run_case, by_id[i], root / i, base)) for i in [c.id for c in CASES] if i in ids}

@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_fault(case: Case, table):
    d, future = table[case.id]
    before, r = future.result()
    ran = ["a chapter was executed"] if (d / "book" / "nbs" / "EXECUTED").exists() else []
    check(r, error_problems(r, case.cmd, case.codes, case.needles, case.strict), changes(before, d), ran)

def test_ids_are_unique():
    assert len({c.id for c in CASES}) == len(CASES)


# ---------------------------------------------------------------------------------------------------- coercion
def test_unambiguous_strings_in_a_config_are_coerced(tmp_path, base):
    'bias: "false", n_layer: "1" and max_steps: "4" are what they say; the run trains and its checkpoint records them.'
    d = tmp_path
    shutil.copy(base / "corpus.txt", d)
    (d / "c.yaml").write_text('model:\n  bias: "false"\n  n_layer: "1"\ntrain:\n  max_steps: "4"\n')
    r = llmfs(tiny("--config", "c.yaml", drop=("--n-layer", "--max-steps")), d)
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr[-3000:]
    from llm_from_scratch.checkpoint import load_checkpoint
    st = load_checkpoint(d / "run" / "ckpt.pt")
    assert st["model_config"]["bias"] is False and st["model_config"]["n_layer"] == 1 and st["train_config"]["max_steps"] == 4


@pytest.mark.parametrize("where", ["global-flag", "command-flag", "env"])
def test_debug_shows_the_traceback(tmp_path, base, where):
    shutil.copy(base / "corpus.txt", tmp_path)
    (tmp_path / "c.yaml").write_text("model: [\n")
    argv = {"global-flag": ["--debug", *tiny("--config", "c.yaml")], "command-flag": tiny("--config", "c.yaml", "--debug"),
            "env": tiny("--config", "c.yaml")}[where]
    r = llmfs(argv, tmp_path, env={"LLMFS_DEBUG": "1"} if where == "env" else None)
    check(r, [] if r.returncode != 0 and "Traceback" in r.stderr else [f"no Traceback with --debug ({where})"])


# ---------------------------------------------------------------------------------------------------- concurrency, Ctrl-C
def wait_for(cond: Callable[[], bool], proc: subprocess.Popen, what: str, timeout: float = 90) -> None:
    t0 = time.monotonic()
    while not cond():
        if proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(f"the run ended (exit {proc.returncode}) before {what}:\n{err[-3000:]}")
        if time.monotonic() - t0 > timeout:
            proc.kill(); proc.communicate()
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.05)

LONG = dict(max_steps="100000", eval_interval="100000")

def test_second_run_in_the_same_folder_is_refused(tmp_path, base):
    d = tmp_path
    shutil.copy(base / "corpus.txt", d)
    first = popen(tiny(ckpt_interval="0", **LONG), d)
    try:
        log = d / "run" / "metrics.jsonl"
        wait_for(lambda: log.is_file() and log.stat().st_size > 0, first, "its first step")
        first.send_signal(signal.SIGSTOP)                    # frozen, holding its lock: its files stay still
        before = snapshot(d)
        r = llmfs(tiny(ckpt_interval="0", **LONG), d)
        check(r, error_problems(r, " train", (1,), ("in use",), strict=False), changes(before, d))
    finally:
        first.kill()
        first.communicate()


def test_ctrl_c_exits_130_with_one_line_and_a_loadable_checkpoint(tmp_path, base):
    d = tmp_path
    shutil.copy(base / "corpus.txt", d)
    proc = popen(tiny(ckpt_interval="2", **LONG), d)
    ckpt = d / "run" / "ckpt.pt"
    wait_for(ckpt.is_file, proc, "its first checkpoint")
    time.sleep(0.3)
    proc.send_signal(signal.SIGINT)
    try: out, err = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill(); proc.communicate()
        pytest.fail("llmfs train did not stop on SIGINT within 60 s")
    assert "Traceback" not in out + err, err[-3000:]
    assert proc.returncode == 130, f"exit code {proc.returncode}\n{err[-3000:]}"
    lines = [l for l in err.splitlines() if l.strip() and not INFO_LINE.match(l)]
    assert len(lines) == 1 and lines[0].startswith("llmfs train") and "interrupted" in lines[0], lines
    from llm_from_scratch.checkpoint import load_checkpoint
    assert load_checkpoint(ckpt)["step"] >= 2
    assert not list(d.rglob(f"*{TMP_MARK}*")), "temporary files left behind"


# ---------------------------------------------------------------------------------------------------- read-only, full disk
def can_mount(d: Path) -> bool:
    if sys.platform != "linux" or os.environ.get("LLMFS_FAULTS_NO_MOUNT"): return False
    p = d / "probe"
    p.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(p)], capture_output=True)
    if r.returncode: return False
    subprocess.run(["umount", str(p)], capture_output=True)
    return True

@pytest.fixture
def mounts():
    "mount(path, size): a tmpfs of `size` at `path`, unmounted after the test."
    done = []
    def mount(path: Path, size: str) -> None:
        path.mkdir(parents=True, exist_ok=True)
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], check=True, capture_output=True)
        done.append(path)
    yield mount
    for p in reversed(done): subprocess.run(["umount", "-l", str(p)], capture_output=True)

def no_dac_override() -> list[str] | None:
    "A command prefix under which permissions apply (root without CAP_DAC_OVERRIDE), [] for a normal user, None if impossible."
    if os.geteuid() != 0: return []
    if shutil.which("setpriv") is None: return None
    pre = ["setpriv", "--bounding-set=-dac_override,-dac_read_search", "--inh-caps=-dac_override,-dac_read_search"]
    r = subprocess.run([*pre, "sh", "-c", "d=$(mktemp -d) && chmod 555 $d && ! touch $d/x 2>/dev/null; s=$?; rmdir $d; exit $s"],
                       capture_output=True)
    return pre if r.returncode == 0 else None

@pytest.mark.parametrize("argv,cmd", [
    (tiny("--out", "ro/run"), " train"),
    (["tokenizer", "train", "corpus.txt", "--vocab-size", "300", "--out", "ro/tok.json", "--force"], r" tokenizer( \w+)?"),
], ids=["train", "tokenizer"])
def test_out_in_a_read_only_folder(tmp_path, base, argv, cmd):
    pre = no_dac_override()
    if pre is None: pytest.skip("running as root without setpriv: chmod cannot make a folder read-only here")
    d = tmp_path
    shutil.copy(base / "corpus.txt", d)
    (d / "ro").mkdir()
    shutil.copy(base / "tok.json", d / "ro" / "tok.json")
    (d / "ro").chmod(0o555)
    try:
        before = snapshot(d)
        r = llmfs(argv, d, prefix=pre)
        check(r, error_problems(r, cmd, (1,), ("ro/",), strict=False), changes(before, d))
    finally:
        (d / "ro").chmod(0o755)

def test_out_on_a_read_only_file_system(tmp_path, base, mounts):
    if not can_mount(tmp_path): pytest.skip("cannot mount a tmpfs here")
    d = tmp_path
    shutil.copy(base / "corpus.txt", d)
    mounts(d / "rofs", "1m")
    shutil.copytree(base / "run", d / "rofs" / "run")
    subprocess.run(["mount", "-o", "remount,ro", str(d / "rofs")], check=True, capture_output=True)
    before = snapshot(d)
    r = llmfs(tiny("--out", "rofs/run"), d)
    check(r, error_problems(r, " train", (1,), ("read-only",), strict=False), changes(before, d))

ENOSPC_WRAPPER = r"""
import builtins, errno, io, os, sys
_dir, _left = os.path.realpath(os.environ["FAULT_ENOSPC_DIR"]), [int(os.environ["FAULT_ENOSPC_BYTES"])]
_open = io.open
class _Full:
    def __init__(self, f, name): self._f, self._name = f, name
    def write(self, b):
        if len(b) > _left[0]: raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), self._name)
        _left[0] -= len(b)
        return self._f.write(b)
    def __getattr__(self, k): return getattr(self._f, k)
    def __iter__(self): return iter(self._f)
    def __enter__(self): return self
    def __exit__(self, *a): self._f.close()
def _patched(file, mode="r", *a, **k):
    f = _open(file, mode, *a, **k)
    if (any(c in mode for c in "wax+") and isinstance(file, (str, bytes, os.PathLike))
            and os.path.realpath(file).startswith(_dir + os.sep)): return _Full(f, os.fspath(file))
    return f
builtins.open = io.open = _patched
from llm_from_scratch.cli import main
sys.exit(main(sys.argv[1:]))
"""

def full_disk(d: Path, name: str, mounts, populate: Callable[[Path], None], free: int) -> tuple[list[str], dict]:
    """The folder d/name on a disk with about `free` bytes left once `populate(folder)` has run: a tmpfs filled up
    when this process may mount one, else a wrapper that makes writes there fail. Returns (command prefix, env)."""
    folder = d / name
    if can_mount(d):
        mounts(folder, "1m")
        populate(folder)
        st = os.statvfs(folder)
        left = st.f_bavail * st.f_frsize - free
        fd = os.open(folder / "filler", os.O_WRONLY | os.O_CREAT, 0o644)
        try:
            while left > 0: left -= os.write(fd, b"\0" * min(left, 1 << 16))
            while free == 0: os.write(fd, b"\0" * 4096)       # until the disk is full to the last byte
        except OSError as e:
            if e.errno != errno.ENOSPC: raise
        finally: os.close(fd)
        return [], {}
    folder.mkdir()
    populate(folder)
    return [sys.executable, "-c", ENOSPC_WRAPPER], {"FAULT_ENOSPC_DIR": str(folder), "FAULT_ENOSPC_BYTES": str(free)}

def llmfs_full(argv, d, pre, env):
    if not pre: return llmfs(argv, d, env)
    return subprocess.run([*pre, *argv], cwd=d, env=run_env(d, **env), stdin=subprocess.DEVNULL, capture_output=True,
                          text=True, timeout=TIMEOUT)

def test_full_disk_while_replacing_a_tokenizer(tmp_path, base, mounts):
    d = tmp_path
    shutil.copy(base / "corpus.txt", d)
    pre, env = full_disk(d, "full", mounts, lambda f: shutil.copy(base / "tok.json", f / "tok.json"), free=0)
    before = snapshot(d)
    r = llmfs_full(["tokenizer", "train", "corpus.txt", "--vocab-size", "400", "--out", "full/tok.json", "--force"], d, pre, env)
    check(r, error_problems(r, r" tokenizer( \w+)?", (1,), ("no space",), strict=False), changes(before, d))

def test_full_disk_while_writing_a_checkpoint(tmp_path, base, mounts):
    "The stopped run resumes, trains to step 4 and cannot write its checkpoint: the one from step 2 is intact."
    d = tmp_path
    shutil.copy(base / "corpus.txt", d)
    pre, env = full_disk(d, "full", mounts, lambda f: shutil.copytree(base / "run", f / "run"), free=24 * 1024)
    before = snapshot(d)
    r = llmfs_full(tiny("--out", "full/run"), d, pre, env)
    from llm_from_scratch.checkpoint import load_checkpoint
    try: step = load_checkpoint(d / "full" / "run" / "ckpt.pt")["step"]
    except Exception as e: step = f"unloadable ({e})"
    check(r, error_problems(r, " train", (1,), ("no space",), strict=False),
          changes(before, d, exclude=("full/run/metrics.jsonl",)),   # the log may hold steps past the checkpoint
          [] if step == 2 else [f"the checkpoint is at step {step}, expected the old one's 2"])


# ---------------------------------------------------------------------------------------------------- corrupt caches
def _damage_shard(cache: Path) -> None:
    (shard,) = sorted(cache.glob("test/tokens/val-*/shard_00000.bin"))
    b = bytearray(shard.read_bytes()); b[100:108] = b"\xff" * 8; shard.write_bytes(bytes(b))

def _damage_manifest(cache: Path) -> None:
    (man,) = sorted(cache.glob("test/tokens/val-*/manifest.json"))
    man.write_text('{"format": "llmfs-token-sh')

def _damage_tokenizer(cache: Path) -> None:
    (tok,) = sorted(cache.glob("test/tokenizer/*.json"))
    tok.write_bytes(tok.read_bytes()[:300])

def sound(cache: Path) -> list[str]:
    "What is still damaged in the test-scale cache: the val shards and the tokenizer."
    from llm_from_scratch.core import UserError
    from llm_from_scratch.dataloader import shards_damage
    from llm_from_scratch.tokenizer import BPETokenizer
    out = [f"still damaged: {dmg}" for p in cache.glob("test/tokens/val-*") if (dmg := shards_damage(p))]
    for p in cache.glob("test/tokenizer/*.json"):
        try: BPETokenizer.load(p)
        except UserError as e: out.append(f"still damaged: {e}")
    return out

@pytest.mark.parametrize("damage,argv,rebuild_cmd", [
    (_damage_shard, ["shards", "--split", "val", "--quiet"], "llmfs shards"),
    (_damage_manifest, ["shards", "--split", "val", "--quiet"], "llmfs shards"),
    (_damage_tokenizer, ["tokenizer", "info"], "llmfs tokenizer"),
], ids=["shard-bytes", "shard-manifest", "tokenizer"])
def test_a_corrupt_cached_artefact_is_rebuilt_or_named(tmp_path, default_cache, damage, argv, rebuild_cmd):
    d = tmp_path
    shutil.copytree(default_cache, d / "cache")
    damage(d / "cache")
    r = llmfs(argv, d)
    if r.returncode == 0:                                   # rebuilt: the artefact is sound again
        check(r, ["a Traceback is shown"] if "Traceback" in r.stdout + r.stderr else [], sound(d / "cache"))
    else:
        check(r, error_problems(r, " " + argv[0] if argv[0] != "tokenizer" else r" tokenizer( \w+)?", (1, 2),
                                (rebuild_cmd,), strict=False))
    assert not list(d.rglob(f"*{TMP_MARK}*")), "temporary files left behind"


def test_atomic_write_flushes_only_what_it_wrote(tmp_path, monkeypatch):
    """`atomic_write` flushes the file it wrote and the folder's entry for it, never the neighbours: an output in
    a busy folder such as /tmp must not walk (or trip over) everything else in it."""
    from llm_from_scratch import core
    neighbour = tmp_path / "other" / "deep"
    neighbour.mkdir(parents=True)
    (neighbour / "file.bin").write_bytes(b"x")
    flushed = []
    real = core._fsync
    def spy(p, tree=True):
        flushed.append(Path(p))
        return real(p, tree)
    monkeypatch.setattr(core, "_fsync", spy)
    core.atomic_write(tmp_path / "out.txt", "hello")
    assert (tmp_path / "out.txt").read_text() == "hello"
    assert not [p for p in flushed if "other" in p.parts], flushed
