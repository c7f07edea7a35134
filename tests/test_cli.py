"""The `llmfs` command line: every registered sub-command exists, and bad input gets a clear error."""
from __future__ import annotations

import importlib
import shutil
import subprocess
import sys

import pytest

from llm_from_scratch.core import COMMANDS, main

LLMFS = [sys.executable, "-c", "import sys; from llm_from_scratch.core import main; sys.exit(main())"]


@pytest.mark.parametrize("cmd", sorted(COMMANDS))
def test_every_command_has_a_main(cmd):
    mod = importlib.import_module(COMMANDS[cmd][0])
    assert callable(getattr(mod, "main", None)), f"{COMMANDS[cmd][0]} has no main(argv) for `llmfs {cmd}`"


def test_help_lists_every_command():
    r = subprocess.run([*LLMFS, "--help"], capture_output=True, text=True)
    assert r.returncode == 0
    for cmd in COMMANDS: assert f"  {cmd} " in r.stdout


def test_unknown_command_and_no_command_fail():
    r = subprocess.run([*LLMFS, "frobnicate"], capture_output=True, text=True)
    assert r.returncode == 2 and "unknown command 'frobnicate'" in r.stderr
    assert main([]) == 2


def test_console_script_is_installed():
    exe = shutil.which("llmfs")
    if exe is None: pytest.skip("the llmfs console script is not on PATH (install the package with pip install -e .)")
    r = subprocess.run([exe, "info"], capture_output=True, text=True)
    assert r.returncode == 0 and "scale:" in r.stdout


@pytest.mark.parametrize("cmd", ["data", "tokenizer", "shards", "train"])
def test_sub_command_help(cmd):
    r = subprocess.run([*LLMFS, cmd, "--help"], capture_output=True, text=True)
    assert r.returncode == 0 and "usage:" in r.stdout.lower()
