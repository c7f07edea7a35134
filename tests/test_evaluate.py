"""Chapter 13's evaluation code beyond the notebook: lm-evaluation-harness parity (log-likelihoods, acc, acc_norm),
the sandbox against abuse, the contamination check of the tasks, JSONL formats, the endpoint judge against a fake
server, the report, and the solution of exercise 1."""
from __future__ import annotations

import json
import math
import os
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import numpy as np
import pytest
import torch

from llm_from_scratch.core import UserError, seed_everything
from llm_from_scratch.evaluate import (EndpointJudge, MCItem, MCTask, Request, calibrate_judge, encode_pair,
                                       eval_report, judge_pair, lm_eval_yaml, loglikelihoods, read_mc_jsonl,
                                       run_sandboxed, score_multiple_choice, write_mc_jsonl)
from llm_from_scratch.model import GPT, GPTConfig

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def tok():
    from llm_from_scratch.tokenizer import default_tokenizer
    return default_tokenizer()


def encoder(tok):
    return lambda s: tok.encode(s, allowed_special="all")


def tiny_gpt(vocab_size: int, block_size: int = 48, seed: int = 0) -> GPT:
    seed_everything(seed)
    return GPT(GPTConfig(vocab_size=vocab_size, block_size=block_size, n_layer=2, n_head=2, n_embd=32,
                         pos="learned")).eval()


# ---- the harness ------------------------------------------------------------------------------------------------
def test_encode_pair_is_lm_evals(tok):
    from lm_eval.api.model import TemplateLM

    class Fake:                                     # just what lm-eval's _encode_pair touches
        backend = "causal"
        def tok_encode(self, s, **kw): return encoder(tok)(s)

    for ctx, cont in [("def f(x):\n", "    return x"), ("a = 1  ", "# one"), ("import os", "\nimport sys"),
                      ("x\t \n", "y"), ("héllo wörld ", "ünïcode")]:
        assert encode_pair(encoder(tok), ctx, cont) == TemplateLM._encode_pair(Fake(), ctx, cont), (ctx, cont)


def test_loglikelihoods_truncate_from_the_left_like_lm_eval(tok):
    model = tiny_gpt(tok.vocab_size, block_size=16).double()
    enc = encoder(tok)
    reqs = [Request("def long_function_name(argument_one, argument_two, argument_three):\n    x = 1\n", "    return x"),
            Request("a = 1", " + 2"), Request("", "print(1)")]
    ours = loglikelihoods(model, enc, reqs, batch_size=2, prefix_id=tok.eot_id)
    for r, (ll, greedy) in zip(reqs, ours):
        ctx, cont = ([tok.eot_id], enc(r.continuation)) if not r.context else encode_pair(enc, r.context, r.continuation)
        inp = (ctx + cont)[-(16 + 1):][:-1]                   # lm-eval's rule, by hand
        with torch.no_grad(): logp = model(torch.tensor([inp])).log_softmax(-1)[0, len(inp) - len(cont):]
        ref = float(logp.gather(-1, torch.tensor(cont)[:, None]).sum())
        assert math.isclose(ll, ref, rel_tol=1e-12, abs_tol=1e-12)
        assert greedy == bool((logp.argmax(-1) == torch.tensor(cont)).all())
    with pytest.raises(UserError): loglikelihoods(model, enc, [Request("", "x")])             # no prefix id given
    with pytest.raises(UserError): loglikelihoods(model, enc, [Request("a", " b" * 40)])     # longer than the block


def test_exercise_acc_bytes():
    "Exercise 1: lm-eval's acc_bytes divides by UTF-8 bytes; it can disagree with acc_norm (characters)."
    def acc_bytes(task: MCTask, res: dict) -> float:
        right = [int(np.argmax(np.array(r["lls"]) / np.array([len(c.encode("utf-8")) for c in it.choices]))) == it.gold
                 for it, r in zip(task.items, res["items"])]
        return float(np.mean(right))
    task = MCTask("t", [MCItem("1", "Le mot est", ["éé", "abc"], 0)])
    lls = {" éé": -2.0, " abc": -2.4}                        # per char: -0.67 vs -0.6; per byte: -0.4 vs -0.6
    res = score_multiple_choice(task, lambda reqs: [(lls[r.continuation], False) for r in reqs])
    assert res["acc_norm"] == 0.0 and acc_bytes(task, res) == 1.0
    from lm_eval.api.task import ConfigurableTask                 # the same numbers through lm-eval's process_results
    fake = ConfigurableTask.__new__(ConfigurableTask)
    fake.OUTPUT_TYPE, fake.multiple_input, fake.multiple_target = "multiple_choice", 0, False
    fake._metric_fn_list = {"acc": None, "acc_norm": None, "acc_bytes": None}
    fake._config = type("C", (), {"process_results": None})()
    fake.doc_to_choice = lambda doc: ["éé", "abc"]
    fake.doc_to_target = lambda doc: 0
    got = fake.process_results({}, [(-2.0, False), (-2.4, False)])
    assert (got["acc"], got["acc_norm"], got["acc_bytes"]) == (res["acc"], res["acc_norm"], acc_bytes(task, res))


# ---- tasks: real held-out data, no leaks ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tasks():
    from llm_from_scratch.evaluate import default_tasks
    return default_tasks()


def test_no_item_occurs_in_the_training_split(tasks):
    from llm_from_scratch.data import iter_texts, load_corpus, split_of
    train = "\n".join(iter_texts("train"))
    held = {d.id: d.text for d in load_corpus("val")}
    assert [t.name for t in tasks] == ["next_line", "docstring", "name", "doctest"]
    for t in tasks:
        assert len(t.items) >= 30, t.name
        for it in t.items:
            doc = it.meta["doc"]
            assert split_of(doc) == "val" and doc in held, (t.name, it.id)
            assert it.meta["probe"] in held[doc] and it.meta["probe"] not in train, (t.name, it.id)
            answer = it.answer if t.name == "doctest" else it.choices[it.gold]
            assert answer.strip() in held[doc] and answer.strip() in it.meta["probe"], (t.name, it.id)
        if t.name != "doctest":
            assert all(len(set(it.choices)) == len(it.choices) == 4 for it in t.items)
            golds = [it.gold for it in t.items]
            assert len(set(golds)) == 4                          # the right answer is not always in one place


# ---- the sandbox ------------------------------------------------------------------------------------------------
def test_sandbox_runs_a_correct_program_in_a_fresh_folder_that_disappears():
    r = run_sandboxed("import os, sys\nprint(os.getcwd()); print(sorted(os.listdir('.'))); print(dict(os.environ))\n"
                      "print(sys.flags.isolated, sys.stdin.read())", files={"data.txt": "x"}, stdin="hello")
    cwd, listing, env, flags = r.stdout.splitlines()
    assert r.ok and listing == "['data.txt', 'main.py']" and flags == "1 hello"
    assert set(eval(env)) <= {"LC_CTYPE"}                    # nothing of ours; Python's own PEP 538 coercion only
    assert not Path(cwd).exists() and Path(cwd).name == "work"
    r2 = run_sandboxed("import os; print(os.listdir('.'))")
    assert r2.stdout.strip() == "['main.py']"                 # the next run starts clean


def test_sandbox_environment_is_empty_even_with_secrets_around(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-secret")
    r = run_sandboxed("import os; print(os.environ.get('OPENAI_API_KEY'), os.environ.get('PATH'))")
    assert r.stdout.strip() == "None None"


def test_sandbox_kills_an_endless_loop_and_a_sleeper():
    r = run_sandboxed("while True: pass", timeout=1.5)
    assert not r.ok and (r.timed_out or r.returncode < 0) and r.seconds < 10
    r = run_sandboxed("import time; time.sleep(60)", timeout=1)  # no CPU used: only the wall clock stops it
    assert r.timed_out and r.seconds < 10


def test_sandbox_kills_children_left_behind():
    r = run_sandboxed("import subprocess, sys, time\n"
                      "p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
                      "print(p.pid, flush=True); time.sleep(60)", timeout=2)
    pid = int(r.stdout.split()[0])
    assert r.timed_out
    with pytest.raises(ProcessLookupError):
        for _ in range(50):
            os.kill(pid, 0)
            import time; time.sleep(0.05)


def test_sandbox_stops_a_fork_bomb():
    # a bounded bomb (it stops at 200 children) so that a failure of the limit cannot harm the machine
    r = run_sandboxed("import os, time\nn = 0\nfor _ in range(200):\n    try: pid = os.fork()\n"
                      "    except OSError: break\n    if pid == 0: time.sleep(5); os._exit(0)\n    n += 1\n"
                      "print(n, flush=True)\nos._exit(0)", timeout=10, max_procs=16)
    if r.isolation["processes"] == "none": pytest.skip("running as root without a writable pids cgroup")
    assert int(r.stdout.split()[0]) < 20, r.stdout


def test_sandbox_stops_a_big_allocation_and_a_huge_file():
    r = run_sandboxed("x = bytearray(4 << 30)\nprint('allocated')", memory_mb=512)
    assert not r.ok and "MemoryError" in r.stderr and "allocated" not in r.stdout
    r = run_sandboxed("f = open('big', 'wb')\nfor _ in range(200): f.write(b'x' * (1 << 20))\nprint('written')",
                      file_mb=8)
    assert not r.ok and "written" not in r.stdout              # SIGXFSZ, or an OSError (File too large)


def test_sandbox_has_no_network():
    code = ("import socket\nfor host in [('1.1.1.1', 53), ('127.0.0.1', 22)]:\n"
            "    try: socket.create_connection(host, timeout=3); print('connected')\n"
            "    except OSError as e: print('refused', type(e).__name__)")
    r = run_sandboxed(code)
    assert r.ok and r.stdout.count("refused") == 2, r.stdout
    r = run_sandboxed(code, network="prelude")                # the fallback stops the ordinary calls too
    assert r.stdout.count("refused") == 2 and r.isolation["network"] == "prelude"


def test_doctest_check_runs_the_example():
    from llm_from_scratch.evaluate import check_doctests
    job = {"module": "fractions", "setup": [("from fractions import Fraction\n", "")], "source": "Fraction(1, 3) * 3\n"}
    assert check_doctests([{**job, "want": "Fraction(1, 1)\n"}, {**job, "want": "Fraction(1, 3)\n"},
                           {**job, "source": "while True: pass\n", "want": "1\n"}]) == [True, False, False]


# ---- standard formats -------------------------------------------------------------------------------------------
def test_read_mc_jsonl_layouts(tmp_path):
    hs = tmp_path / "hs.jsonl"
    hs.write_text(json.dumps({"ctx": "He", "endings": ["a", "b", "c", "d"], "label": "2"}) + "\n\n" +
                  json.dumps({"ctx": "She", "endings": ["e", "f"], "label": 0}) + "\n")
    t = read_mc_jsonl(hs, "hellaswag")
    assert [(i.context, i.gold, len(i.choices)) for i in t.items] == [("He", 2, 4), ("She", 0, 2)]
    arc = tmp_path / "arc.jsonl"
    arc.write_text(json.dumps({"id": "q7", "question": "2+2?", "choices": {"text": ["3", "4"], "label": ["A", "B"]},
                               "answerKey": "B"}) + "\n")
    a = read_mc_jsonl(arc, "arc")
    assert a.items[0].gold == 1 and a.items[0].id == "q7"
    own = tmp_path / "own.jsonl"
    own.write_text(json.dumps({"q": {"text": "x"}, "opts": ["1", "2"], "ans": 1}) + "\n")
    assert read_mc_jsonl(own, {"context": "q.text", "choices": "opts", "gold": "ans"}).items[0].gold == 1
    with pytest.raises(UserError): read_mc_jsonl(own, "hellaswag")
    with pytest.raises(UserError): read_mc_jsonl(own, "no-such-layout")
    own.write_text(json.dumps({"context": "x", "choices": ["1"], "gold": 3}) + "\n")
    with pytest.raises(UserError): read_mc_jsonl(own)


# ---- judges -----------------------------------------------------------------------------------------------------
def test_judge_pair_swaps_positions():
    first_always = lambda q, a, b: "A"
    assert judge_pair(first_always, "q", "x", "y") == "tie"
    by_length = lambda q, a, b: "A" if len(a) > len(b) else "B"
    assert judge_pair(by_length, "q", "long answer", "short") == "first"
    assert judge_pair(by_length, "q", "short", "long answer") == "second"
    c = calibrate_judge(by_length, [("q", "right answer", "no"), ("q", "ok", "wrong answer")])
    assert c == {"pairs": 2, "agreement": 0.5, "wrong": 0.5, "ties": 0.0, "position-consistent": 1.0, "prefers A": 0.5}


class _FakeOpenAI(BaseHTTPRequestHandler):
    seen: list = []

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        _FakeOpenAI.seen.append((self.path, self.headers.get("Authorization"), body))
        prompt = body["messages"][0]["content"]
        a = prompt.split("Answer A:\n")[1].split("\n")[0]
        b = prompt.split("Answer B:\n")[1].split("\n")[0]
        verdict = "A" if "right" in a else "B" if "right" in b else "maybe"
        out = json.dumps({"choices": [{"message": {"role": "assistant", "content": verdict}}]}).encode()
        self.send_response(200); self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(out))); self.end_headers(); self.wfile.write(out)

    def log_message(self, *args): pass


def test_endpoint_judge_against_a_fake_server(monkeypatch):
    server = HTTPServer(("127.0.0.1", 0), _FakeOpenAI)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        monkeypatch.setenv("FAKE_KEY", "sk-test")
        judge = EndpointJudge(f"http://127.0.0.1:{server.server_port}/v1/", "fake-model", api_key_env="FAKE_KEY")
        assert judge_pair(judge, "q", "the right one", "the other") == "first"
        assert judge("q", "neither", "nor") == "tie"
        path, auth, body = _FakeOpenAI.seen[0]
        assert path == "/v1/chat/completions" and auth == "Bearer sk-test" and body["model"] == "fake-model"
        assert calibrate_judge(judge, [("q", "right", "wrong")])["agreement"] == 1.0
    finally:
        server.shutdown()
    with pytest.raises(UserError):                             # nothing listens there any more
        EndpointJudge(f"http://127.0.0.1:{server.server_port}/v1", "m", timeout=2)("q", "a", "b")


# ---- the report -------------------------------------------------------------------------------------------------
def test_eval_report_writes_table_and_figure(tmp_path, tok, tasks):
    small = [type(t)(t.name, t.items[:4], *([t.target_delimiter] if isinstance(t, MCTask) else [t.stop])) for t in tasks]
    rows = eval_report({"tiny": tiny_gpt(tok.vocab_size)}, small, tmp_path)
    assert [r["model"] for r in rows][:2] == ["chance", "tiny"] and rows[2]["model"].startswith("Kneser-Ney")
    assert set(rows[1]) == set(rows[0]) and all(0 <= rows[1][k] <= 1 for k in rows[1] if k not in ("model", "held-out bpb"))
    md = (tmp_path / "report.md").read_text()
    assert md.count("\n|") == 4 and "next_line acc_norm" in md and (tmp_path / "report.png").stat().st_size > 10_000
    assert json.loads((tmp_path / "report.json").read_text())["rows"] == rows


# ---- parity with lm-evaluation-harness ----------------------------------------------------------------------------
def test_lm_eval_parity(tmp_path, tok, tasks):
    task = MCTask("parity", tasks[0].items[:20], tasks[0].target_delimiter)   # 20 real held-out next-line items
    from llm_from_scratch.evaluate import lm_eval_parity
    r = lm_eval_parity(tiny_gpt(tok.vocab_size), tok, task, tmp_path)
    assert r["items"] == 20 and r["contexts_equal"], r
    assert r["max_abs_diff"] < 1e-9, r                 # float64 both sides: only the order of sums differs
    assert r["items_equal"] and np.allclose(r["ours"], r["theirs"]), r


# ---- the command line ----------------------------------------------------------------------------------------------
def test_llmfs_eval_writes_the_report_and_keeps_an_existing_one(tmp_path):
    import contextlib, io
    from llm_from_scratch.cli import main
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["eval", "--out", str(tmp_path / "r"), "--no-baseline"])
    assert code == 0, err.getvalue()
    md = (tmp_path / "r" / "report.md").read_text()
    assert "| chance |" in md and "| base model |" in md and "| chapter 6 model |" in md and md in out.getvalue()
    before = (tmp_path / "r" / "report.md").read_bytes()
    err = io.StringIO()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
        code = main(["eval", "--out", str(tmp_path / "r")])
    lines = err.getvalue().strip().splitlines()
    assert code == 2 and len(lines) == 1 and "--force" in lines[0], lines
    assert (tmp_path / "r" / "report.md").read_bytes() == before        # the earlier report is untouched
