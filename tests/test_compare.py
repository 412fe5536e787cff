"""Run-vs-run comparison: the injected fault's kernels rank first against the healthy twin, two healthy
seeds differ only by noise (nothing significant), alignment anchors, structural changes, the statistics,
the JSON and the command."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import pytest

from kat_gui import cli, pipeline
from kat_gui.compare import Anchor, Params, compare_runs, compare_stores, load_run
from kat_gui.compare.stats import benjamini_hochberg, group_stats, mann_whitney
from kat_gui.errors import KatInputError

# ------------------------------------------------------------------------------ synthetic function traces


def write_functrace_run(
    folder: Path,
    ranks: int = 4,
    steps: int = 30,
    seed: int = 0,
    slow_rank: int | None = None,
    slow_factor: float = 1.0,
    slow_from_step: int = 0,
    collective: str = "ncclDevKernel_AllReduce_Sum_bf16_RING_LL",
    extra_kernel: str | None = None,
    host: str = "",
    hang_rank: int | None = None,
    hang_step: int = 0,
) -> list[Path]:
    """One CSV per rank: per step a ProfilerStep annotation, three kernels and an all-reduce whose members end
    together (the late rank's lateness becomes the others' wait). ``slow_rank`` runs its GEMM ``slow_factor``
    times longer from ``slow_from_step``. ``extra_kernel`` adds a kernel of that name to every step.
    ``hang_rank`` stops at ``hang_step``: the others enter that step's all-reduce and wait 40 ms, then the
    trace ends (the profiler stopped)."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    t0 = 1_732_530_000_000_000_000
    header = "rank,device,stream,pid,tid,kind,name,start_ns,end_ns,collective,pg,seq,correlation,hostname\n"
    rows: list[list[str]] = [[] for _ in range(ranks)]
    t = t0
    for s in range(steps):
        step_start = t
        ends = []
        plans = []
        for r in range(ranks):
            k = [("gemm_bf16_tn_128x128", 40_000), ("rms_norm_kernel", 4_000), ("act_and_mul_kernel", 6_000)]
            if extra_kernel:
                k.append((extra_kernel, 3_000))
            tt = step_start + 2_000
            evs = []
            for name, base in k:
                d = int(base * rng.lognormal(0, 0.03))
                if name.startswith("gemm") and r == slow_rank and s >= slow_from_step:
                    d = int(d * slow_factor)
                evs.append((name, tt, tt + d))
                tt += d + 500
            plans.append((evs, tt))
            ends.append(tt)
        coll_end = max(ends) + int(8_000 * rng.lognormal(0, 0.03))
        hang = hang_rank is not None and s == hang_step
        if hang:
            coll_end = max(ends) + 40_000_000
        for r in range(ranks):
            if hang and r == hang_rank:
                continue
            evs, arrive = plans[r]
            out = rows[r]
            out.append(
                f"{r},,,{100 + r},{100 + r},annotation,ProfilerStep#{s},{step_start},{coll_end + 1000},,,,,{host}"
            )
            for name, a, b in evs:
                out.append(f'{r},{r},7,{100 + r},,kernel,"{name}",{a},{b},,,,,{host}')
            out.append(
                f"{r},{r},7,{100 + r},,kernel,{collective},{arrive},{coll_end},allreduce,0,{s},,{host}"
            )
        t = coll_end + 20_000
        if hang:
            break
    paths = []
    for r in range(ranks):
        p = folder / f"rank{r}.csv"
        p.write_text(header + "\n".join(rows[r]) + "\n", encoding="utf-8")
        paths.append(p)
    return paths


def functrace_store(tmp: Path, name: str, **kw) -> Path:
    return pipeline.ingest(write_functrace_run(tmp / name, **kw), tmp / f"{name}.kat.h5", name=name)


# ------------------------------------------------------------------------------ statistics


def test_mann_whitney_matches_brute_force_and_bh():
    rng = np.random.default_rng(3)
    # Integer samples (ns) with ties on purpose.
    a, b = (rng.normal(100, 10, 40)).round(), (rng.normal(108, 10, 55)).round()
    c, d = rng.normal(1000, 10, 30).round(), rng.normal(1000, 10, 30).round()
    value = np.r_[a, b, c, d]
    side = np.r_[np.zeros(40), np.ones(55), np.zeros(30), np.ones(30)].astype(np.int8)
    group = np.r_[np.zeros(95), np.ones(60)].astype(np.int64)
    mw = mann_whitney(group, side, value, 2)
    u_brute = (b[:, None] > a[None, :]).sum() + 0.5 * (b[:, None] == a[None, :]).sum()
    assert mw.u[0] == pytest.approx(u_brute)
    # Normal approximation without the (small) tie correction, by hand.
    z = (abs(u_brute - 40 * 55 / 2) - 0.5) / np.sqrt(40 * 55 * 96 / 12)
    assert mw.p[0] == pytest.approx(math.erfc(z / math.sqrt(2)), rel=0.05)
    assert mw.p[0] < 0.01 < mw.p[1]
    st = group_stats(group, side, value, 2)
    assert st.n[0].tolist() == [40, 55]
    assert st.p50[0, 1] == np.sort(b)[27]
    rng = np.random.default_rng(1)
    g, sd, v = rng.integers(0, 50, 100_000), rng.integers(0, 2, 100_000), rng.integers(0, 10**6, 100_000)
    st = group_stats(g, sd, v, 52)  # groups 50, 51 empty
    for gi in (0, 7, 49):
        for si in (0, 1):
            x = np.sort(v[(g == gi) & (sd == si)])
            n, cut = len(x), len(x) // 10
            assert st.p50[gi, si] == x[(n - 1) // 2] and st.p99[gi, si] == x[int((n - 1) * 0.99)]
            assert st.tmean[gi, si] == pytest.approx(x[cut : n - cut].mean())
    assert st.n[50:].sum() == 0 and np.isnan(st.p50[50:]).all()
    q = benjamini_hochberg(np.array([0.01, 0.04, 0.03, 0.5]))
    assert q.tolist() == pytest.approx([0.04, 0.16 / 3, 0.16 / 3, 0.5])


# ------------------------------------------------------------------------------ simulated twins

from kat_gui import simulate as sim  # noqa: E402


def _sim_store(tmp: Path, name: str, spec, seed: int) -> Path:
    out = sim.simulate(tmp / name, spec, seed=seed)
    files = sorted(p for p in Path(out).glob("*.json") if p.name != "truth.json")
    return pipeline.ingest(files, tmp / f"{name}.kat.h5", name=name)


def _small(spec, **kw):
    flat = dataclasses.replace(spec.confounders, batch_churn=0.0)
    return spec.with_(n_steps=24, n_layers=4, confounders=flat, **kw)


@pytest.fixture(scope="module")
def sims(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cmp")
    base = _small(sim.SCENARIOS["healthy_tp4_decode"])
    gpu = base.with_(faults=[sim.FaultSpec("gpu", [2], 0.25, 8)])
    return {
        "healthy0": _sim_store(tmp, "healthy0", base, 0),
        "healthy1": _sim_store(tmp, "healthy1", base, 1),
        "gpu0": _sim_store(tmp, "gpu0", gpu, 0),
    }


def test_fault_kernels_rank_first(sims):
    c = compare_stores(sims["healthy0"], sims["gpu0"])
    sig = c.significant()
    assert sig, "a 25% GPU throttle on one rank must show"
    top = c.differences[0]
    assert top.significant and not top.symptom
    assert top.rank == 2 and top.kernel_class == "compute", top
    assert top.effect > 0.1
    # Every significant cause points at rank 2 (the others only wait, and waits are not counted as slow).
    causes = [d for d in sig if not d.symptom]
    assert all(d.rank in (2, None) for d in causes), [(d.kind, d.rank, d.name) for d in causes]
    slower = [r["rank"] for r in c.ranks if r["slower"]]
    assert slower == [2]


def test_two_healthy_seeds_differ_only_by_noise(sims):
    c = compare_stores(sims["healthy0"], sims["healthy1"])
    assert c.significant() == [], [(d.kind, d.rank, d.name, d.effect) for d in c.significant()]
    assert len(c.differences) > 20, "rows are still listed (grey)"


@pytest.mark.parametrize(
    "case",
    [
        # eager vLLM TP4 decode: latency-bound custom all-reduces whose size follows the batch
        dict(scenario="healthy_tp4_decode", tp=4, pp=1, mode="decode"),
        # SGLang (collective args: own message size) with chunked prefill; vLLM TP2 x PP2 (send/recv,
        # two programs: the stages' busy times share no common mode)
        dict(scenario="healthy_tp4_mixed_sglang", tp=4, pp=1, mode="mixed"),
        dict(scenario="healthy_tp4_decode", tp=2, pp=2, mode="decode"),
    ],
    ids=["tp4_decode", "tp4_mixed_sglang", "tp2_pp2"],
)
def test_two_healthy_churned_seeds_show_no_significant_row(tmp_path, case):
    """With batch churn the two seeds run different batch sizes on every step: kernel durations differ
    because the work differs, on all ranks alike, and every collective moves a different number of bytes.
    The per-step common mode across ranks and the collectives' workload model (affine in a recorded size)
    must absorb that: no row at all may be significant, collectives and symptoms included. The plain
    per-op ratio (common_mode off) does see the workload difference, so the test can fail."""
    spec = sim.SCENARIOS[case["scenario"]].with_(
        n_steps=32, n_layers=4, tp=case["tp"], pp=case["pp"], mode=case["mode"]
    )
    spec = spec.with_(confounders=dataclasses.replace(spec.confounders, batch_churn=0.3))
    h = load_run(_sim_store(tmp_path, "churn0", spec, 0))
    d = load_run(_sim_store(tmp_path, "churn1", spec, 1))
    c = compare_runs(h, d)
    sig = c.significant()
    assert sig == [], [(x.kind, x.rank, x.name[:40], x.effect) for x in sig]
    plain = compare_runs(h, d, params=Params(common_mode=False))
    assert plain.significant(), "the churned runs do differ in workload (otherwise this test proves nothing)"


def test_collective_workload_model_uses_recorded_sizes(tmp_path):
    """Collectives are compared against healthy steps of the same shape: SGLang's (c10d) collectives by their
    own recorded ``In msg nelems``; vLLM's custom all-reduces, which record no size, by the covariate that
    explains them best (copy bytes of the step, or a kernel's time when warm-up dominates)."""

    base = sim.SCENARIOS["healthy_tp4_decode"].with_(n_steps=24, n_layers=2)
    base = base.with_(confounders=dataclasses.replace(base.confounders, batch_churn=0.3))
    for vocab, want in (("vllm", {"copy bytes", "kernel time"}), ("sglang", {"own message size"})):
        spec = base.with_(vocabulary=vocab)
        run = load_run(_sim_store(tmp_path, f"sz_{vocab}", spec, 0))
        coll = run.gpu["cls"] == 3
        if vocab == "sglang":
            assert (run.gpu["size"][coll] > 0).all(), "c10d collectives record In msg nelems"
        from kat_gui.compare.workload import common_mode_ratios  # the model itself, on one run twice

        c = compare_runs(run, run)
        assert c.significant() == []
        kernels, ratios = _model_inputs(run)
        wm = common_mode_ratios(kernels, ratios)
        names = {run.names[i] for i in np.unique(run.gpu["name"][coll]).tolist()}
        kinds = {wm_name: k for wm_name, k in _covariates(wm, run).items() if wm_name in names}
        assert kinds and set(kinds.values()) <= want, kinds
        htod = run.gpu["size"][run.gpu["cls"] == 4]
        assert (htod > 0).any(), "host-to-device copies record their bytes"


def _model_inputs(run):
    """The kernel samples and ratios compare_runs hands the workload model, for a run compared with itself."""
    from kat_gui.compare.samples import KernelSamples, occurrence
    from kat_gui.compare.workload import op_ratios

    g = run.gpu
    pos = np.searchsorted(run.steps, g["step"])
    keep = g["step"] >= 0
    nm = g["name"][keep].astype(np.int64)
    rk = g["rank"][keep].astype(np.int64)
    one = KernelSamples(
        name_id=nm,
        cls=g["cls"][keep].astype(np.int64),
        rank=rk,
        dur_ns=g["dur_ns"][keep],
        occurrence=occurrence(rk, pos[keep], nm, g["start_ns"][keep]),
        position=pos[keep],
        size=g["size"][keep],
    )
    kernels = [one, one]
    return kernels, op_ratios(kernels, int(nm.max()) + 1)


def _covariates(wm, run) -> dict[str, str]:
    return {run.names[i]: k for i, k in wm.covariate.items()}


def test_different_workload_is_reported_as_such_not_as_a_slowdown(tmp_path):
    """Same service, same healthy hardware, but the second run serves three times the batch (and the first
    one's batch never varies, so no model can be fitted): its all-reduces move three times the bytes. That is
    a different workload, not a slower network: no significant row, and a grey row per collective saying
    that its instances ran at a workload the healthy run never reached. Without the like-with-like check the
    same all-reduces would be reported as slowdowns (checked with Params(common_mode=False))."""
    base = sim.SCENARIOS["healthy_tp4_decode"].with_(n_steps=24, n_layers=4, batch_size=16)
    base = base.with_(confounders=dataclasses.replace(base.confounders, batch_churn=0.0))
    h = load_run(_sim_store(tmp_path, "b16", base, 0))
    d = load_run(_sim_store(tmp_path, "b48", base.with_(batch_size=48), 1))
    c = compare_runs(h, d)
    assert c.significant() == [], [(x.kind, x.rank, x.name[:40], x.effect) for x in c.significant()]
    rows = [x for x in c.differences if x.kind == "different_workload"]
    assert rows and all(x.kernel_class == "collective" and not x.significant for x in rows)
    assert all("different workload" in x.note for x in rows)
    assert any("cross_device_reduce" in x.name for x in rows)
    # Those collectives were not tested as a slowdown: their kernel rows have no comparable degraded sample.
    tested = [x for x in c.differences if x.kind == "kernel" and x.name in {r.name for r in rows}]
    assert all(x.p_value == 1.0 for x in tested), [(x.name[:40], x.p_value) for x in tested]
    plain = compare_runs(h, d, params=Params(common_mode=False))
    slower = [x for x in plain.significant() if x.kernel_class == "collective" and x.effect > 0]
    assert slower, "the bigger batch does make the all-reduces longer"


def test_reverse_direction_is_a_speedup(sims):
    c = compare_stores(sims["gpu0"], sims["healthy0"])
    assert c.differences[0].effect < 0 and c.differences[0].rank == 2


def test_anchor_by_step_and_by_time(sims):
    h, d = load_run(sims["healthy0"]), load_run(sims["gpu0"])
    c = compare_runs(h, d, Anchor(healthy_step=8, degraded_step=8))
    assert c.alignment["anchor_healthy_step"] == 8 and c.alignment["steps_compared"] == 16
    # From the fault's onset on, the throttled kernels move their medians too, not only their means.
    top = c.differences[0]
    assert top.rank == 2 and top.rel_p50 > 0.15
    t8 = int(d.step_rank["start_ns"][d.step_rank["step"] == 8].min()) + 1000
    c2 = compare_runs(h, d, Anchor(healthy_step=8, degraded_ns=t8))
    assert c2.alignment["anchor_degraded_step"] == 8
    # Misaligned on purpose: healthy step 0 against degraded step 5 still runs, over fewer steps.
    c3 = compare_runs(h, h, Anchor(healthy_step=0, degraded_step=5))
    assert c3.alignment["steps_compared"] == 19


def test_json_and_command(sims, tmp_path, capsys):
    out = tmp_path / "cmp.json"
    rc = cli.main(["compare", str(sims["healthy0"]), str(sims["gpu0"]), "--json", str(out)])
    assert rc == 0
    text = capsys.readouterr().out
    assert "significant difference(s)" in text and "[rank 2]" in text
    doc = json.loads(out.read_text())
    assert doc["schema"] == "kat.compare/1"
    assert doc["differences"][0]["significant"] is True
    assert len(doc["step_time"]["healthy_ns"]) == doc["alignment"]["steps_compared"]


def test_bad_inputs(tmp_path, sims, capsys):
    trace = tmp_path / "rank0.json"
    trace.write_text("{}")
    assert cli.main(["compare", str(trace), str(sims["gpu0"])]) == 2
    assert "kat ingest" in capsys.readouterr().err
    assert cli.main(["compare", str(tmp_path / "missing.kat.h5"), str(sims["gpu0"])]) == 2
    with pytest.raises(KatInputError, match="folder"):
        load_run(tmp_path)


# ------------------------------------------------------------------------------ structure and rank counts


def test_structural_changes_and_rank_counts(tmp_path):
    h = functrace_store(tmp_path, "h", ranks=4, seed=0)
    d = functrace_store(
        tmp_path,
        "d",
        ranks=2,
        seed=1,
        collective="ncclDevKernel_AllReduce_Sum_bf16_TREE_LL",
        extra_kernel="copy_kernel_new",
    )
    c = compare_stores(h, d)
    kinds = {x.kind: x for x in c.differences if x.significant}
    assert "collective_renamed" in kinds
    assert "RING" in kinds["collective_renamed"].name and "TREE" in kinds["collective_renamed"].name
    # A kernel found in one run only is a structural difference (workload or configuration), listed grey.
    only = [x for x in c.differences if x.kind == "only_degraded" and x.name == "copy_kernel_new"]
    assert len(only) == 1 and not only[0].significant
    assert "structure differs" in only[0].note
    assert "ranks_changed" in kinds
    assert c.alignment["rank_pairs"] == {"0": 0, "1": 1}


def test_late_rank_waits_are_symptoms(tmp_path):
    """The slow rank's GEMM is the cause; the others' longer all-reduce is wait, not a slow collective."""
    h = functrace_store(tmp_path, "h", seed=0)
    d = functrace_store(tmp_path, "d", seed=1, slow_rank=1, slow_factor=1.5)
    c = compare_stores(h, d)
    top = c.differences[0]
    assert top.name == "gemm_bf16_tn_128x128" and top.rank == 1
    coll = [x for x in c.differences if x.kernel_class == "collective" and x.kind == "kernel"]
    assert coll and not coll[0].significant, "transfer time did not change"
    waits = [x for x in c.significant() if x.kind == "rank_wait"]
    assert {x.rank for x in waits if x.effect > 0} == {0, 2, 3}
    assert all(x.symptom for x in waits)
    assert all(x.effect < 0 for x in waits if x.rank == 1), "the late rank itself waits less"


def test_hung_rank_ranks_first(tmp_path):
    h = functrace_store(tmp_path, "h", seed=0)
    d = functrace_store(tmp_path, "d", seed=1, hang_rank=3, hang_step=20)
    c = compare_stores(h, d)
    top = c.differences[0]
    assert top.kind == "rank_stopped" and top.rank == 3 and top.significant
    assert [x.rank for x in c.differences if x.kind == "rank_stopped"] == [3]
    assert not [x for x in compare_stores(h, h).differences if x.kind == "rank_stopped"]
