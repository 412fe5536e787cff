"""Statistics safe at any size: long captures (thousands of steps, >= 10,000 collective instances) and wide jobs
(1,024 ranks) go through detection without overflow, quadratic memory or a wrong culprit."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from kat_gui import cli, pipeline
from kat_gui.detect import detect_store
from kat_gui.detect.straggler_findings import binom_tail

BASE_NS = 1_700_000_000_000_000_000
GEMM = "ampere_bf16_s16816gemm_bf16_128x128_ldg8_f2f_stages_32x5_tn"
NCCL = "ncclDevKernel_AllReduce_Sum_bf16_RING_LL(ncclDevKernelArgsStorage<4096ul>)"


def _kineto_rank(
    path: Path, rank: int, world: int, steps: int, layers: int, late: dict[int, int], seed: int
) -> None:
    """One rank of a decode-like job: per step ``layers`` x (a GEMM, then an all-reduce), launched by the host
    at the same pace on every rank. ``late`` maps step -> (late rank, ns): on those steps that rank's
    GEMMs start that long after their launch (its GPU queue was held, as by a co-running process), so it reaches
    every all-reduce last and its peers wait inside it; every all-reduce ends together, after the last arrival."""
    rnd = random.Random(seed * 7919 + rank)
    ev: list[dict] = []
    host = 100 + rank

    def x(cat: str, name: str, t0: int, dur: int, pid: int, args: dict | None = None) -> None:
        ev.append({"ph": "X", "cat": cat, "name": name, "pid": pid, "tid": pid, "ts": t0 / 1000, "dur": dur / 1000,
                   "args": args or {}})  # fmt: skip

    t, corr = 0, 1
    for s in range(steps):
        step0 = t
        for _layer in range(layers):
            late_rank, late_ns = late.get(s, (-1, 0))
            launch = t + 2_000
            start = launch + 5_000 + (late_ns if rank == late_rank else 0)
            gemm_ns = 40_000 + rnd.randrange(400)
            coll_start = start + gemm_ns
            coll_end = launch + 5_000 + late_ns + 40_400 + 8_000  # the last arrival (slowest GEMM) + transfer
            x("cuda_runtime", "cudaLaunchKernel", launch, 3_000, host, {"correlation": corr})
            x("kernel", GEMM, start, gemm_ns, rank, {"correlation": corr, "device": rank, "stream": 7})
            x("cuda_runtime", "cudaLaunchKernel", launch + 4_000, 3_000, host, {"correlation": corr + 1})
            x("kernel", NCCL, coll_start, coll_end - coll_start, rank,
              {"correlation": corr + 1, "device": rank, "stream": 7, "Collective name": "allreduce",
               "In msg nelems": 4096, "Group size": world, "Process Group Name": "0"})  # fmt: skip
            corr += 2
            t = coll_end + 10_000
        x("user_annotation", f"ProfilerStep#{s}", step0, t - step0 - 1_000, host)
    for e in ev:  # GPU events on (device, stream 7)
        if e["cat"] == "kernel":
            e["tid"] = 7
    doc = {
        "schemaVersion": 1,
        "baseTimeNanoseconds": BASE_NS,
        "distributedInfo": {"rank": rank, "world_size": world, "backend": "nccl"},
        "traceEvents": ev,
    }
    path.write_text(json.dumps(doc))


@pytest.fixture(scope="module")
def long_straggler(tmp_path_factory) -> Path:
    """4 ranks x 2,000 steps x 5 all-reduces (10,000 collective instances); rank 3 arrives 100 µs late at the
    all-reduces of about two thirds of the steps (from step 667 on)."""
    d = tmp_path_factory.mktemp("long")
    late = {s: (3, 100_000) for s in range(667, 2_000)}
    for r in range(4):
        _kineto_rank(d / f"rank{r}.json", r, 4, 2_000, 5, late, seed=1)
    return pipeline.ingest(sorted(d.glob("rank*.json")), d / "long.kat.h5", name="long")


def test_binomial_tail_in_log_space_matches_exact_sums_and_never_overflows():
    import math

    for n, k, q in ((10, 7, 0.25), (200, 120, 0.25), (1_000, 600, 0.5), (900, 1, 0.125)):
        exact = sum(math.comb(n, i) * q**i * (1 - q) ** (n - i) for i in range(k, n + 1))
        assert binom_tail(k, n, q) == pytest.approx(exact, rel=1e-9)
    assert binom_tail(0, 5, 0.25) == 1.0 and binom_tail(6, 5, 0.25) == 0.0
    assert 0.0 <= binom_tail(1_333, 2_000, 0.25) < 1e-100  # exact coefficients overflow a float here
    assert binom_tail(60_000, 100_000, 0.5) == 0.0


def test_2000_step_straggler_top_finding_names_rank_3(long_straggler, tmp_path, capsys):
    out = tmp_path / "d.json"
    assert cli.main(["detect", str(long_straggler), "--json", str(out)]) == 0
    doc = json.loads(out.read_text())
    assert doc["findings"], "the late rank must be reported"
    assert doc["findings"][0]["ranks"] == [3], doc["findings"][0]
    res = detect_store(long_straggler)
    assert res.meta["collectives"]["instances"] >= 10_000


def test_1024_ranks_detect_in_bounded_memory(tmp_path):
    """1,024 ranks: the late rank is found, and detection allocates far less than one ranks x ranks x
    instances array would take (1,024^2 x 80 instances x 8 bytes = 671 MB)."""
    import tracemalloc

    world, steps, layers = 1_024, 40, 2
    late = {s: (509, 100_000) for s in range(10, steps)}
    for r in range(world):
        _kineto_rank(tmp_path / f"rank{r}.json", r, world, steps, layers, late, seed=2)
    store = pipeline.ingest(sorted(tmp_path.glob("rank*.json")), tmp_path / "wide.kat.h5", name="wide")
    tracemalloc.start()
    try:
        res = detect_store(store)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert res.meta["collectives"]["instances"] == steps * layers
    assert res.findings and res.findings[0]["ranks"] == [509], res.findings[:1]
    assert peak < 400 * 2**20, f"detection peaked at {peak / 2**20:.0f} MB on 1,024 ranks"
