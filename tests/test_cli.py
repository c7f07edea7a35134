"""The `llmfs` command line: every registered sub-command exists, and bad input gets a clear error."""
from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from llm_from_scratch.cli import COMMANDS, build_parser, main

LLMFS = [sys.executable, "-m", "llm_from_scratch.cli"]
ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("cmd", sorted(COMMANDS))
def test_every_command_is_registered(cmd):
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    assert cmd in sub.choices and callable(sub.choices[cmd].get_default("func")), f"`llmfs {cmd}` has no function"


def test_library_modules_parse_no_arguments():
    "Argument parsing lives in the cli module only."
    for f in (ROOT / "llm_from_scratch").glob("*.py"):
        if f.name in ("cli.py", "_modidx.py"): continue
        tree = ast.parse(f.read_text(encoding="utf-8"))
        names = {n.name for n in ast.walk(tree) if isinstance(n, ast.alias)} | \
                {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}
        assert "argparse" not in names, f"{f.name} uses argparse"
        assert "main" not in {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}, f"{f.name} has a main()"


def test_help_lists_every_command():
    r = subprocess.run([*LLMFS, "--help"], capture_output=True, text=True)
    assert r.returncode == 0
    for cmd in COMMANDS: assert f"    {cmd}" in r.stdout


def test_unknown_command_and_no_command_fail():
    r = subprocess.run([*LLMFS, "frobnicate"], capture_output=True, text=True)
    assert r.returncode == 2 and "'frobnicate'" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert main([]) == 2


def test_console_script_is_installed():
    exe = shutil.which("llmfs")
    if exe is None: pytest.skip("the llmfs console script is not on PATH (install the package with pip install -e .)")
    r = subprocess.run([exe, "info"], capture_output=True, text=True)
    assert r.returncode == 0 and "scale:" in r.stdout


@pytest.mark.parametrize("cmd", ["data", "tokenizer", "shards", "train", "plan", "book", "info"])
def test_sub_command_help(cmd):
    r = subprocess.run([*LLMFS, cmd, "--help"], capture_output=True, text=True)
    assert r.returncode == 0 and "usage:" in r.stdout.lower()


def test_train_help_shows_every_default():
    r = subprocess.run([*LLMFS, "train", "--help"], capture_output=True, text=True)
    assert r.returncode == 0 and "--preset {book,gpt2,small,tiny}" in r.stdout
    text = " ".join(r.stdout.split())
    assert "default for this scale and device: tiny" in text and "(default: None)" not in text
    for flag, shown in (("--n-layer VALUE", "default: 2"), ("--lr VALUE", "default: 0.002"), ("--max-steps VALUE", "default: 300"),
                        ("--bias VALUE", "default: True"), ("--log-every LOG_EVERY", "(default: 10.0)")):
        after = text[text.index("options:"):]
        assert shown in after[after.index(flag):][:120], (flag, after[after.index(flag):][:120])


@pytest.mark.parametrize("budget, words", [("0", "positive"), ("-1e14", "positive"), ("twenty", "cannot read"),
                                           ("3 parsecs", "unknown unit")])
def test_plan_refuses_bad_budgets_before_any_work(budget, words):
    "A malformed or non-positive budget is refused by parse_budget, before the planner trains or measures anything."
    r = subprocess.run([*LLMFS, "plan", "--", budget], capture_output=True, text=True)   # "--": -1e14 is no option
    assert r.returncode == 2 and words in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr


@pytest.mark.parametrize("budget, words", [("1e40", "years"), ("1e3", "too small")])
def test_plan_refuses_unusable_budgets(budget, words):
    "Absurdly large and too-small budgets are refused in one line (the test-scale plan is built on first use)."
    r = subprocess.run([*LLMFS, "plan", budget], capture_output=True, text=True, env={**__import__("os").environ,
                       "LLMFS_SCALE": "test"})
    assert r.returncode == 2 and words in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_every_command_builds_at_book_scale():
    "At book scale the default preset is the planned base model: --help must not need (or run) its planning."
    import os
    r = subprocess.run([*LLMFS, "train", "--help"], capture_output=True, text=True, env={**os.environ, "LLMFS_SCALE": "book"})
    assert r.returncode == 0 and "preset book (planned on first use)" in r.stdout, r.stderr
