"""The ground-truth simulator: determinism, Kineto shape, collective semantics, and labels consistent with faults."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import numpy as np
import orjson
import pytest

from kat_gui.errors import KatInputError
from kat_gui.simulate import SCENARIOS, FaultSpec, ScenarioSpec, list_scenarios, simulate

SHORT_STEPS = 12
TS_RE = re.compile(rb'"(ts|dur)":(-?[0-9.eE+]+)')


def _short(name: str) -> ScenarioSpec:
    """A named scenario with fewer steps (faults rescaled) and layers, so the whole suite stays fast."""
    return SCENARIOS[name].scaled(SHORT_STEPS).with_(n_layers=4)


@pytest.fixture(scope="module")
def short_runs(tmp_path_factory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("sim")
    return {name: simulate(base / name, _short(name), seed=1) for name in SCENARIOS}


def _truth(d: Path) -> dict:
    return orjson.loads((d / "truth.json").read_bytes())


def _hashes(d: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(d.iterdir())}


def _ops(truth: dict) -> list[dict]:
    return truth["ops"]


# ------------------------------------------------------------------------------------------- API, determinism


def test_list_scenarios_names_every_scenario_with_a_description():
    listed = list_scenarios()
    assert [n for n, _ in listed] == list(SCENARIOS)
    assert all(d and "\n" not in d for _, d in listed)
    healthy = [n for n in SCENARIOS if not SCENARIOS[n].faults]
    assert len(healthy) * 3 >= len(SCENARIOS)  # DOMAIN §5: at least a third healthy
    assert {f.component for s in SCENARIOS.values() for f in s.faults} == {
        "gpu",
        "hbm",
        "nvlink",
        "pcie",
        "nic",
        "cpu",
    }


def test_same_seed_is_byte_identical_and_seeds_differ(tmp_path):
    spec = _short("two_faults_tp8")
    a = _hashes(simulate(tmp_path / "a", spec, seed=3))
    b = _hashes(simulate(tmp_path / "b", spec, seed=3))
    c = _hashes(simulate(tmp_path / "c", spec, seed=4))
    assert a == b
    assert set(a) == {f"rank-{r}.pt.trace.json" for r in range(8)} | {"truth.json"}
    assert all(a[k] != c[k] for k in a)


def test_truth_spec_round_trips(short_runs):
    truth = _truth(short_runs["two_faults_tp8"])
    spec = ScenarioSpec.from_dict(truth["spec"])
    assert spec == _short("two_faults_tp8")
    assert spec.faults[1] == FaultSpec("cpu", [6], 0.5, 5, 10)


def test_bad_scenarios_raise_input_errors(tmp_path):
    with pytest.raises(KatInputError, match="unknown scenario"):
        simulate(tmp_path / "x", "no_such_scenario")
    with pytest.raises(KatInputError, match="nic fault needs a multi-node"):
        simulate(tmp_path / "x", ScenarioSpec(faults=[FaultSpec("nic", [1])]))
    with pytest.raises(KatInputError, match="ranks"):
        simulate(tmp_path / "x", ScenarioSpec(tp=2, faults=[FaultSpec("gpu", [5])]))
    (tmp_path / "file").write_text("x")
    with pytest.raises(KatInputError, match="not a directory"):
        simulate(tmp_path / "file", ScenarioSpec(n_steps=4))


# ------------------------------------------------------------------------------------------- Kineto shape


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_scenario_writes_kineto_json(short_runs, name):
    d = short_runs[name]
    spec = SCENARIOS[name]
    truth = _truth(d)
    assert truth["schema"] == "kat.truth/1" and truth["scenario"] == name and truth["n_steps"] == SHORT_STEPS
    for r in range(spec.world_size):
        raw = (d / f"rank-{r}.pt.trace.json").read_bytes()
        doc = orjson.loads(raw)
        assert doc["schemaVersion"] == 1 and len(doc["deviceProperties"]) == spec.gpus_per_node
        di = doc["distributedInfo"]
        assert (di["backend"], di["rank"], di["world_size"]) == ("nccl", r, spec.world_size)
        if spec.time_base == "base_ns":
            assert isinstance(doc["baseTimeNanoseconds"], int) and di["pg_count"] == len(di["pg_config"])
        else:
            assert "baseTimeNanoseconds" not in doc and "pg_config" not in di
        # every ts/dur is µs with exactly 3 decimals, as Kineto writes them
        nums = TS_RE.findall(raw)
        assert nums and all(re.fullmatch(rb"[0-9]+\.[0-9]{3}", v) for _, v in nums)
        events = doc["traceEvents"]
        cats = {e.get("cat") for e in events}
        assert {"kernel", "gpu_memcpy", "cuda_runtime", "user_annotation", "python_function"} <= cats
        gpu = [e for e in events if e.get("cat") in ("kernel", "gpu_memcpy")]
        assert len(gpu) == len(truth["labels"][str(r)]["start_ns"])
        for e in gpu[:50]:
            assert e["ph"] == "X" and {"device", "stream", "correlation", "External id"} <= set(e["args"])
            if e["cat"] == "kernel":
                assert len(e["args"]["grid"]) == 3 and len(e["args"]["block"]) == 3
        steps = [e["name"] for e in events if e.get("cat") == "user_annotation"]
        assert steps[0] == "ProfilerStep#0"
        runtime = {
            e["args"]["correlation"] for e in events if e.get("cat") in ("cuda_runtime", "cuda_driver")
        }
        assert {e["args"]["correlation"] for e in gpu} <= runtime


def test_time_bases_decode_to_the_labelled_ns(short_runs):
    """Absolute ns = baseTimeNanoseconds + ts*1000 (or epoch-µs ts*1000), computed exactly from the text."""
    for name in ("healthy_tp4_decode", "healthy_tp8_2node_trtllm"):
        d = short_runs[name]
        lab = _truth(d)["labels"]["1"]
        doc = orjson.loads((d / "rank-1.pt.trace.json").read_bytes())
        raw = (d / "rank-1.pt.trace.json").read_bytes()
        base = doc.get("baseTimeNanoseconds", 0)
        starts = []
        for line in raw.split(b"\n"):
            if b'"cat":"kernel"' in line or b'"cat":"gpu_memcpy"' in line:
                ts = re.search(rb'"ts":([0-9]+)\.([0-9]{3})', line)
                starts.append(base + int(ts.group(1)) * 1000 + int(ts.group(2)))
        assert starts == lab["start_ns"]
        if name == "healthy_tp8_2node_trtllm":
            assert starts[0] > 1_700_000_000_000_000_000  # absolute epoch


def test_graph_mode_has_one_graph_launch_per_step(short_runs):
    d = short_runs["healthy_tp8_decode_graphs"]
    doc = orjson.loads((d / "rank-0.pt.trace.json").read_bytes())
    events = doc["traceEvents"]
    launches = [e for e in events if e.get("name") == "cudaGraphLaunch"]
    assert len(launches) == SHORT_STEPS
    graph_corr = {e["args"]["correlation"] for e in launches}
    in_graph = [e for e in events if e.get("cat") == "kernel" and "graph id" in e["args"]]
    assert len(in_graph) > 10 * SHORT_STEPS and {e["args"]["correlation"] for e in in_graph} <= graph_corr
    assert any("cross_device_reduce" in e["name"] for e in in_graph)


def test_vocabularies_and_collective_args(short_runs):
    def kernels(name: str) -> list[dict]:
        doc = orjson.loads((short_runs[name] / "rank-0.pt.trace.json").read_bytes())
        return [e for e in doc["traceEvents"] if e.get("cat") == "kernel"]

    sg = kernels("healthy_tp4_mixed_sglang")
    nccl = [e for e in sg if e["name"].startswith("ncclDevKernel_AllReduce")]
    assert nccl and all(
        e["args"]["Collective name"] == "allreduce" and e["args"]["Group size"] == 4 for e in nccl
    )
    tp_group = [
        e for e in sg if e["args"].get("Process Group Name") == "1"
    ]  # all-reduces and the logits gather
    assert [e["args"]["Seq"] for e in tp_group] == list(range(len(tp_group)))
    assert any("flashinfer" in e["name"] for e in sg)
    vl = kernels("healthy_tp4_decode")
    assert any("cross_device_reduce_1stage" in e["name"] for e in vl)
    assert not any("Collective name" in e["args"] for e in vl)
    tr = kernels("nic_degraded_tp8_2node")
    assert any(e["name"].startswith("ncclDevKernel_AllReduce") for e in tr)  # inter-node: NCCL
    assert any("rms" in e["name"].lower() and "tensorrt_llm" in e["name"] for e in tr)


# ------------------------------------------------------------------------------------------- semantics


def _instances(truth: dict) -> dict[int, list[tuple[int, int, int]]]:
    """collective id -> [(rank, start, end)] in true time (per-host clock offset removed)."""
    off = truth["clock_offsets_ns"]
    host = truth["topology"]["rank_host"]
    out: dict[int, list[tuple[int, int, int]]] = {}
    for r, lab in truth["labels"].items():
        o = off[f"host{host[int(r)]}"]
        for c, s, e in zip(lab["coll"], lab["start_ns"], lab["end_ns"], strict=True):
            if c >= 0:
                out.setdefault(c, []).append((int(r), s - o, e - o))
    return out


@pytest.mark.parametrize(
    "name",
    ["gpu_throttle_tp4", "healthy_tp4_pp2_2node_prefill", "nic_degraded_tp8_2node", "cpu_contention_tp4"],
)
def test_collectives_end_together_and_the_last_arriver_is_shortest(short_runs, name):
    truth = _truth(short_runs[name])
    inst = _instances(truth)
    checked = 0
    for members in inst.values():
        assert len(members) >= 2
        ends = [e for _, _, e in members]
        assert max(ends) - min(ends) <= 8_000  # ~1 µs jitter per rank
        by_start = sorted(members, key=lambda m: m[1])
        if by_start[-1][1] - by_start[-2][1] > 2_000:
            checked += 1
            durs = [e - s for _, s, e in members]
            assert by_start[-1][2] - by_start[-1][1] == min(durs)
    assert checked > 10
    if truth["topology"]["nodes"] > 1:
        assert truth["clock_offsets_ns"]["host1"] != 0


def test_batch_changes_move_every_rank_together(short_runs):
    truth = _truth(short_runs["healthy_tp4_decode"])
    ops = _ops(truth)
    gate = next(i for i, o in enumerate(ops) if o["key"] == "gate_up_gemm")
    per_rank = []
    for r in range(4):
        lab = truth["labels"][str(r)]
        d = np.array(lab["end_ns"]) - np.array(lab["start_ns"])
        sel = np.array(lab["op"]) == gate
        steps = np.array(lab["step"])[sel]
        per_rank.append(np.array([d[sel][steps == s].mean() for s in range(truth["n_steps"])]))
    m = np.array(per_rank)
    assert m.max() / m.min() > 1.3  # the batch churns...
    for r in range(1, 4):
        assert np.corrcoef(m[0], m[r])[0, 1] > 0.9  # ...on every rank together


def test_synchronized_pauses_stall_every_rank_together(short_runs):
    truth = _truth(short_runs["healthy_tp4_decode"])
    pauses = truth["confounders"]["sync_pause_steps"]
    assert pauses
    for r, lab in truth["labels"].items():
        step = np.array(lab["step"])
        start, end = np.array(lab["start_ns"]), np.array(lab["end_ns"])
        first = np.searchsorted(step, np.arange(1, truth["n_steps"]))  # first op of steps 1..n-1
        idle = start[first] - end[first - 1]  # GPU idle between consecutive steps
        paused = np.isin(np.arange(1, truth["n_steps"]), pauses)
        assert idle[paused].min() > 1_000_000 > idle[~paused].max(), r


# ------------------------------------------------------------------------------------------- labels


def test_healthy_scenarios_label_nothing(short_runs):
    for name, spec in SCENARIOS.items():
        if spec.faults:
            continue
        truth = _truth(short_runs[name])
        assert truth["faults"] == [] and truth["healthy_steps"] == truth["n_steps"]
        for lab in truth["labels"].values():
            assert set(lab["label"]) == {0} and set(lab["fault"]) == {-1}


def test_gpu_throttle_labels(short_runs):
    truth = _truth(short_runs["gpu_throttle_tp4"])
    ops = _ops(truth)
    (fault,) = truth["faults"]
    assert (fault["component"], fault["component_id"], fault["ranks"]) == ("gpu", "GPU2", [2])
    assert truth["healthy_steps"] == truth["n_steps"] - (fault["end_step"] - fault["onset_step"])
    n_root = n_sym = 0
    for r, lab in truth["labels"].items():
        for lb, f, op, st, fac in zip(
            lab["label"], lab["fault"], lab["op"], lab["step"], lab["factor"], strict=True
        ):
            cls = ops[op]["class"]
            if lb == 1:
                n_root += 1
                assert r == "2" and f == 0 and fault["onset_step"] <= st < fault["end_step"]
                assert cls in ("compute", "memory")
                assert fac == pytest.approx(1.2 if cls == "compute" else 1.05)
            elif lb == 2:
                n_sym += 1
                assert r != "2" and f == 0 and cls == "comm" and st >= fault["onset_step"]
            elif r == "2" and fault["onset_step"] <= st < fault["end_step"]:
                assert cls not in ("compute", "memory")  # every throttled kernel is a root
    assert n_root == fault["n_root"] > 0 and n_sym == fault["n_symptom"] > 0
    assert fault["start_ns"] == truth["step_start_ns"]["2"][fault["onset_step"]] < fault["end_ns"]


def test_link_faults_are_roots_on_every_rank_of_the_group(short_runs):
    for name in ("nvlink_degraded_tp8", "nic_degraded_tp8_2node"):
        truth = _truth(short_runs[name])
        ops = _ops(truth)
        (fault,) = truth["faults"]
        assert fault["culprit_knowable"] is False
        win = range(fault["onset_step"], fault["end_step"])
        for lab in truth["labels"].values():
            roots = [
                (ops[o]["class"], s)
                for lb, o, s in zip(lab["label"], lab["op"], lab["step"], strict=True)
                if lb == 1
            ]
            assert roots and all(c == "comm" and s in win for c, s in roots)
            n_comm_in_win = sum(
                1
                for o, s in zip(lab["op"], lab["step"], strict=True)
                if ops[o]["class"] == "comm" and s in win
            )
            assert len(roots) == n_comm_in_win


def test_pcie_and_hbm_roots_stay_on_the_faulty_rank(short_runs):
    truth = _truth(short_runs["pcie_downgrade_tp4_prefill"])
    ops = _ops(truth)
    for r, lab in truth["labels"].items():
        kinds = {ops[o]["class"] for lb, o in zip(lab["label"], lab["op"], strict=True) if lb == 1}
        assert kinds == ({"copy"} if r == "3" else set())
    truth = _truth(short_runs["hbm_degraded_tp4_sglang"])
    ops = _ops(truth)
    facs = {}
    for r, lab in truth["labels"].items():
        for lb, o, fac in zip(lab["label"], lab["op"], lab["factor"], strict=True):
            if lb == 1:
                assert r == "1"
                facs[ops[o]["class"]] = fac
            if lb == 2:
                assert r != "1" and ops[o]["class"] == "comm"
    assert facs == {"memory": pytest.approx(1.2), "compute": pytest.approx(1.05)}


def test_cpu_contention_roots_are_launch_gaps_on_the_faulty_rank(short_runs):
    truth = _truth(short_runs["cpu_contention_tp4"])
    (fault,) = truth["faults"]
    win = range(fault["onset_step"], fault["end_step"])
    for r, lab in truth["labels"].items():
        start, end = np.array(lab["start_ns"]), np.array(lab["end_ns"])
        label = np.array(lab["label"])
        if r != "1":
            assert not (label == 1).any()
            continue
        roots = np.flatnonzero(label == 1)
        assert len(roots) > 100 and all(lab["step"][i] in win for i in roots)
        gaps = start[roots] - end[roots - 1]
        assert (gaps >= 1000).all()  # the GPU idled at least 1 µs waiting for the launch
        assert all(f == 0 for f in np.array(lab["fault"])[roots])
    assert fault["n_symptom"] > 0


def test_two_faults_are_attributed_separately(short_runs):
    truth = _truth(short_runs["two_faults_tp8"])
    ops = _ops(truth)
    gpu, cpu = truth["faults"]
    assert (gpu["component"], cpu["component"]) == ("gpu", "cpu")
    for r, lab in truth["labels"].items():
        for lb, f, o in zip(lab["label"], lab["fault"], lab["op"], strict=True):
            if lb == 1:
                assert (r, f) in (("1", 0), ("6", 1))
            if lb == 2:
                assert ops[o]["class"] == "comm" and f in (0, 1)
    assert gpu["n_root"] > 0 and cpu["n_root"] > 0


def test_hang_stops_the_faulty_rank_and_blocks_its_peers(short_runs):
    d = short_runs["hang_tp4"]
    truth = _truth(d)
    (fault,) = truth["faults"]
    assert fault["kind"] == "hang" and fault["ranks"] == [2]
    last_end = {}
    for r in range(4):
        doc = orjson.loads((d / f"rank-{r}.pt.trace.json").read_bytes())
        base = doc["baseTimeNanoseconds"]
        ends = [base + round(float(e["ts"]) * 1000) + round(float(e["dur"]) * 1000)
                for e in doc["traceEvents"] if e.get("cat") in ("kernel", "gpu_memcpy")]  # fmt: skip
        last_end[r] = max(ends)
    hung_stop = truth["recording_end_ns"]["2"]
    assert last_end[2] <= hung_stop + 1000
    for r in (0, 1, 3):
        assert last_end[r] > last_end[2] + 10_000_000  # peers keep recording until the profiler stops
        lab = truth["labels"][str(r)]
        # the peer's last instance is the collective it is stuck in, truncated at the profiler stop
        assert lab["label"][-1] == 2 and lab["coll"][-1] >= 0
        assert lab["end_ns"][-1] == truth["recording_end_ns"][str(r)]
    assert len(truth["step_start_ns"]["2"]) == fault["onset_step"] + 1
    assert fault["n_root"] == 0 and fault["n_symptom"] == 3


# ------------------------------------------------------------------------------------------- ingest round trip


def test_ingest_reads_back_the_labelled_instances(short_runs):
    from kat_gui import ingest
    from kat_gui.events import EventKind

    for name in ("healthy_tp8_2node_trtllm", "hang_tp4", "healthy_tp4_mixed_sglang"):
        d = short_runs[name]
        truth = _truth(d)
        traces = list(ingest.read_traces(sorted(d.glob("rank-*.pt.trace.json"))))
        assert sorted(t.rank for t in traces) == truth["ranks"]
        for t in traces:
            ev = t.events
            sel = np.isin(ev["kind"], [EventKind.KERNEL, EventKind.MEMCPY])
            lab = truth["labels"][str(t.rank)]
            assert int(sel.sum()) == len(lab["start_ns"])
            assert np.array_equal(np.sort(ev["start_ns"][sel]), np.sort(lab["start_ns"]))
            assert np.array_equal(np.sort(ev["end_ns"][sel]), np.sort(lab["end_ns"]))
