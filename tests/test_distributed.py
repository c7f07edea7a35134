"""Chapter 8 with real processes: collectives and the ring all-reduce, data parallelism three ways, ZeRO-1 and FSDP2,
tensor parallelism (ours and DTensor), and `llmfs train --nproc N` under torchrun.

Each check says whether it is *bitwise* (torch.equal) or within a *tolerance*, and which:
- 2 ranks: every sum across ranks is one addition per element (commutative, so order-free) and dividing by 2 is exact,
  so the ring, naive/bucketed/DDP data parallelism, ZeRO-1 and FSDP2 are bitwise equal to one process that adds the
  slices' gradients in order.
- 4 ranks: gloo adds four terms in its own order; two orders differ by at most 2 gamma_3 sum_r |x_r| per element
  (gamma_k = k u / (1 - k u), u = 2^-24), which is what is tested. Weights after AdamW steps have no sharper bound than
  the steps themselves (each moves a weight by at most about lr), so they are tested against 2 lr per step.
- Tensor parallelism splits each dot product's sum: float64, within 1e-12 of the output's scale (the bound
  2 gamma_K with K <= 4d is about 3e-14 of it).
"""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

from llm_from_scratch.distributed import (Cluster, all_gather_single, collectives_demo, data_parallel, dtensor_check, memory_formula,
                                          ring_bytes, ring_check, sharded, single_process, summation_order_check,
                                          tensor_parallel_check, toy_config, toy_model)

CFG, STEPS, BATCH, LR = toy_config(), 3, 8, 1e-2


@pytest.fixture(scope="module")
def two():
    with Cluster(2) as c: yield c


@pytest.fixture(scope="module")
def four():
    with Cluster(4) as c: yield c


@pytest.fixture(scope="module")
def reference():
    torch.set_num_threads(1)                    # as the ranks
    return {n: single_process(CFG, STEPS, BATCH, pieces=n) for n in (2, 4)}


def n_params(cfg=CFG) -> int: return sum(p.numel() for p in toy_model(cfg).parameters())

def bitwise(a: dict, b: dict) -> bool: return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)

def max_diff(a: dict, b: dict) -> float: return max((a[k] - b[k]).abs().max().item() for k in a)


def test_collectives(two):
    a, b = two.run(collectives_demo)
    assert torch.equal(a["all-reduce (sum)"], a["input"] + b["input"])
    assert torch.equal(torch.cat([a["reduce-scatter (sum)"], b["reduce-scatter (sum)"]]), a["all-reduce (sum)"])
    assert torch.equal(b["all-gather"], torch.cat([a["input"], b["input"]])) and torch.equal(b["broadcast (from 0)"], a["input"])


def test_ring_all_reduce_bitwise_with_two_ranks(two):
    for rank in two.run(ring_check, [7, 1000, 2**16]):
        for c in rank:
            assert c["equal"]                                                   # bitwise
            assert c["sent"] == ring_bytes(c["bytes"], 2) == c["bytes"]         # 2 (N-1)/N M = M, odd sizes too


def test_ring_all_reduce_within_bound_with_four_ranks(four):
    for rank in four.run(ring_check, [1024, 2**16]):
        for c in rank:
            assert c["within_bound"]                                            # tolerance: 2 gamma_3 sum |x_r|
            assert c["sent"] == ring_bytes(c["bytes"], 4)                       # counted at the sends: 1.5 M


@pytest.mark.parametrize("method", ["naive", "bucketed", "ddp"])
def test_data_parallel_bitwise_with_two_ranks(two, reference, method):
    res = two.run(data_parallel, method, CFG, STEPS, BATCH)
    assert all(bitwise(r["weights"], reference[2]) for r in res)                # bitwise, every rank
    assert res[0]["payload"]["all_reduce"] == n_params()                        # profiler: one all-reduce of P
    if method == "bucketed": assert len(res[0]["bucket_starts"]) > 1 and min(res[0]["bucket_starts"]) < 1


def test_data_parallel_four_ranks_within_tolerance(four, reference):
    order = four.run(summation_order_check, CFG, BATCH)
    assert all(o["slack"] >= 1 for o in order)                                  # gradients: 2 gamma_3 sum |g_r|
    res = four.run(data_parallel, "ddp", CFG, STEPS, BATCH)
    assert all(bitwise(r["weights"], res[0]["weights"]) for r in res)           # the ranks agree with each other
    assert max_diff(res[0]["weights"], reference[4]) <= 2 * LR * STEPS          # weights: the steps' own size


@pytest.mark.parametrize("method", ["zero1", "fsdp2"])
def test_sharding_bitwise_and_memory(two, reference, method):
    res = two.run(sharded, method, CFG, STEPS, BATCH)
    assert all(bitwise(r["weights"], reference[2]) for r in res)                # bitwise, every rank
    want = memory_formula(n_params(), 2, method)
    for r in res:
        for k, v in r["held"].items(): assert abs(v - want[k]) <= 4 * 2, (k, v, want[k])   # up to one pad element


def test_memory_per_rank_four_ranks(four):
    for method in ("replicated", "zero1", "fsdp2"):
        r = four.run(sharded, method, CFG, 2, BATCH)[0]
        want = memory_formula(r["params"], 4, method)
        assert all(abs(v - want[k]) <= 4 * 4 for k, v in r["held"].items()), (method, r["held"], want)


@pytest.mark.parametrize("nproc", [2, 4])
def test_tensor_parallel_block(two, four, nproc):
    cluster = two if nproc == 2 else four
    for r in cluster.run(tensor_parallel_check, CFG):
        assert all(v <= 1e-12 * r["scale"] for v in r["diffs"].values()), r["diffs"]   # tolerance, float64
        assert [b for _, b in r["comm"]] == [r["activation_bytes"]] * 4                # 2 forward + 2 backward
    for r in cluster.run(dtensor_check, CFG):
        assert all(v <= 1e-12 * r["scale"] for v in r["diffs"].values()), r["diffs"]
        assert r["payload"] == {"all_reduce": 4 * 4 * CFG.block_size * CFG.n_embd}      # profiler: 4 x B T d


# ---- exercise 1: a recursive-doubling all-reduce (solution) ----

def recursive_doubling_all_reduce(t: torch.Tensor) -> int:
    "Sum `t` over a power-of-two number of ranks in log2(N) exchanges of the whole tensor; returns the bytes sent."
    r, n = dist.get_rank(), dist.get_world_size()
    assert n & (n - 1) == 0, "recursive doubling needs a power-of-two number of ranks"
    sent, k = 0, 1
    while k < n:
        partner, buf = r ^ k, torch.empty_like(t)
        req = dist.isend(t.clone(), partner)
        dist.recv(buf, partner)
        req.wait()
        sent += t.nbytes
        lo, hi = (t, buf) if r < partner else (buf, t)       # both partners add in the same order: identical sums
        t.copy_(lo + hi)
        k *= 2
    return sent

def _recursive_doubling_check(numel: int) -> dict:
    r, n = dist.get_rank(), dist.get_world_size()
    x = torch.randn(numel, generator=torch.Generator().manual_seed(r))
    mine, ref = x.clone(), x.clone()
    sent = recursive_doubling_all_reduce(mine)
    dist.all_reduce(ref)
    xs = torch.empty(n * numel); all_gather_single(xs, x)
    gamma = (n - 1) * 2.0**-24 / (1 - (n - 1) * 2.0**-24)
    return {"sent": sent, "equal": torch.equal(mine, ref), "bytes": x.nbytes,
            "within": bool(((mine - ref).abs() <= 2 * gamma * xs.view(n, -1).abs().sum(0)).all())}

@pytest.mark.parametrize("nproc", [2, 4])
def test_recursive_doubling_exercise(two, four, nproc):
    res = (two if nproc == 2 else four).run(_recursive_doubling_check, 4096)
    assert all(r["sent"] == (nproc.bit_length() - 1) * r["bytes"] for r in res)   # log2(N) M per rank
    assert all(r["within"] for r in res) and (nproc > 2 or all(r["equal"] for r in res))
    assert len({tuple(r.values()) for r in res}) == 1                              # every rank the same


# ---- failures: a rank that dies is named, nobody hangs ----

def _die_on_rank_one() -> None:
    if dist.get_rank() == 1: os._exit(7)
    dist.barrier()                                            # rank 0 would wait here for ever without a timeout

def test_cluster_names_a_dead_rank():
    with Cluster(2, timeout_s=20) as c:
        with pytest.raises(RuntimeError, match=r"rank 1 died \(exit code 7\)"): c.run(_die_on_rank_one)


# ---- llmfs train --nproc N ----

@pytest.fixture(scope="module")
def text(tmp_path_factory) -> Path:
    p = tmp_path_factory.mktemp("text") / "text.txt"
    p.write_text(Path(torch.__file__).read_text()[:40_000] * 2)
    return p

def llmfs_train(text: Path, out: Path, *extra: str, env: dict | None = None) -> subprocess.CompletedProcess:
    args = ["--data", f"char:{text}", "--n-layer", "1", "--n-embd", "32", "--block-size", "32", "--batch-size", "4",
            "--max-steps", "8", "--warmup-steps", "2", "--eval-interval", "4", "--ckpt-interval", "4", "--sample", "0",
            "--no-progress", "--out", str(out)]
    return subprocess.run([sys.executable, "-m", "llm_from_scratch.cli", "train", *args, *extra], text=True,
                          capture_output=True, env={**os.environ, **(env or {})}, timeout=300)

def test_nproc_must_divide_the_batch(text, tmp_path):
    r = llmfs_train(text, tmp_path / "run", "--nproc", "3")
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "--nproc 3 does not divide the batch size 4" in r.stderr
    assert not (tmp_path / "run" / "ckpt.pt").exists()

def test_nproc_resumes_exactly_and_refuses_another_n(text, tmp_path):
    whole = llmfs_train(text, tmp_path / "whole", "--nproc", "2")
    assert whole.returncode == 0, whole.stderr
    stopped = llmfs_train(text, tmp_path / "run", "--nproc", "2", "--stop-after", "6")
    assert stopped.returncode == 3, stopped.stderr
    other = llmfs_train(text, tmp_path / "run", "--nproc", "4")               # written by 2, refused before starting
    assert other.returncode == 2 and "written by 2 process(es) and this run has 4" in other.stderr
    resumed = llmfs_train(text, tmp_path / "run", "--nproc", "2")
    assert resumed.returncode == 0, resumed.stderr
    a, b = (torch.load(tmp_path / d / "ckpt.pt", weights_only=True) for d in ("whole", "run"))
    assert a["step"] == b["step"] == 8 and a["world_size"] == 2
    assert bitwise(a["model"], b["model"])                                     # bitwise: same N, same order

def test_a_dead_rank_ends_the_run_with_one_line(text, tmp_path):
    r = llmfs_train(text, tmp_path / "dies", "--nproc", "2", env={"LLMFS_TEST_KILL": "1:3"})
    assert r.returncode == 1
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("llmfs train: error: rank 1 of 2 died (exit code 1)"), r.stderr
    assert (tmp_path / "dies" / "torchrun.log").exists()

def test_fsdp2_strategy_resumes_exactly(text, tmp_path):
    whole = llmfs_train(text, tmp_path / "whole", "--nproc", "2", "--strategy", "fsdp2", "--grad-accum", "2")
    assert whole.returncode == 0, whole.stderr
    stopped = llmfs_train(text, tmp_path / "run", "--nproc", "2", "--strategy", "fsdp2", "--grad-accum", "2",
                          "--stop-after", "6")
    assert stopped.returncode == 3, stopped.stderr
    resumed = llmfs_train(text, tmp_path / "run", "--nproc", "2", "--strategy", "fsdp2", "--grad-accum", "2")
    assert resumed.returncode == 0, resumed.stderr
    a, b = (torch.load(tmp_path / d / "ckpt.pt", weights_only=True) for d in ("whole", "run"))
    assert a["strategy"] == "fsdp2" and bitwise(a["model"], b["model"])          # bitwise: same N, same order
    assert all(isinstance(v, torch.Tensor) and not hasattr(v, "full_tensor") for v in a["model"].values())


def test_gpipe_gradients_bitwise(two):
    import dataclasses
    from llm_from_scratch.distributed import gpipe_bubble, pipeline_gpipe, toy_batch
    from llm_from_scratch.train import lm_loss
    cfg = dataclasses.replace(toy_config(n_layer=4), tie_weights=False)
    res = two.run(pipeline_gpipe, cfg, 8, 4)
    model = toy_model(cfg)
    x, y = toy_batch(0, 8, cfg)
    for xs, ys in zip(x.chunk(4), y.chunk(4)): (lm_loss(model(xs), ys) / 4).backward()   # same micro-batches, same order
    grads = {**res[0]["grads"], **res[1]["grads"]}
    assert grads.keys() == {k for k, _ in model.named_parameters()}
    assert all(torch.equal(grads[k], p.grad) for k, p in model.named_parameters())        # bitwise: no sum reordered
    assert gpipe_bubble(2, 1) == 0.5 and gpipe_bubble(4, 12) == 0.2
