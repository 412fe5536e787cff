"""Host membership: what the capture says first (host names, a launcher's distributedInfo, node-local process
groups, a topology file), then repeated device indices, then clock-offset clusters; and NVLink vs NIC faults
attributed right on simulated 2-node runs whatever the clocks and device numbering (docs/detection.md §1)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from kat_gui import pipeline
from kat_gui import simulate as sim
from kat_gui.detect import detect_store
from kat_gui.detect.frame import _hosts_from_capture
from kat_gui.simulate import FaultSpec, ScenarioSpec

# TP groups inside each node, pipeline send/recv across the nodes: an NVLink fault slows one node's TP
# all-reduce, a NIC fault the send/recv between the nodes.
PP_2NODE = {"tp": 4, "pp": 2, "nodes": 2, "n_steps": 40}
# TP=8 over two nodes: every all-reduce crosses the NIC.
TP_2NODE = {"tp": 8, "nodes": 2, "n_steps": 40}
FAULTS = {
    "nvlink": (PP_2NODE, FaultSpec("nvlink", [0, 1], 0.5, 12)),
    "nic_pp": (PP_2NODE, FaultSpec("nic", [5], 0.5, 12)),
    "nic_tp": (TP_2NODE, FaultSpec("nic", [4], 0.5, 12)),
}
TWO_HOSTS = [[0, 1, 2, 3], [4, 5, 6, 7]]


def _detect(tmp_path: Path, spec: ScenarioSpec):
    out = sim.simulate(tmp_path / "traces", spec, seed=0)
    store = pipeline.ingest(sorted(out.glob("rank-*.pt.trace.json")), tmp_path / "run.kat.h5")
    return detect_store(store), json.loads((out / "truth.json").read_text())


def _spec(fault: str, offset_us: float, visible: str, names: bool) -> ScenarioSpec:
    layout, f = FAULTS[fault]
    return ScenarioSpec(
        name=f"{fault}_{visible}",
        clock_offsets_us=[0.0, offset_us],
        visible_devices=visible,
        write_hostnames=names,
        faults=[f],
        **layout,
    )


def _top_link(res) -> dict:
    links = [f for f in res.findings if f["component"] in ("nvlink", "nic")]
    assert links, [f["summary"] for f in res.findings]
    return links[0]


@pytest.mark.parametrize("fault", sorted(FAULTS))
@pytest.mark.parametrize("offset_us", [1000.0, 2.0], ids=["1ms", "2us_ptp"])
@pytest.mark.parametrize(
    ("visible", "names", "hosts_from"),
    [("all", False, "device_index"), ("own", True, "host_name")],
    ids=["devices_0-3", "device0_hostnames"],
)
def test_link_fault_attributed(tmp_path, fault, offset_us, visible, names, hosts_from):
    res, truth = _detect(tmp_path, _spec(fault, offset_us, visible, names))
    (want,) = truth["faults"]
    top = _top_link(res)
    assert top["component"] == want["component"], top["summary"]
    assert res.meta["hosts_from"] == hosts_from
    assert res.meta["hosts"] == TWO_HOSTS
    assert top["evidence"]["hosts_from"] == hosts_from
    assert top["evidence"]["spans_hosts"] == (want["component"] == "nic")
    # the clock offset of host 1 is found within a µs, whatever its size (per host: domains are hosts)
    clock = res.meta["clock"]
    assert clock["domains"] == "hosts"
    offs = sorted(clock["offsets_ns"].values(), key=abs)
    assert offs[0] == 0 and abs(offs[1] - offset_us * 1000) < 1000, clock
    # a caveat only when hosts are inferred
    assert ("hosts inferred from repeated device indices" in top["summary"]) == (hosts_from == "device_index")


@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_every_rank_on_device_0_hosts_from_clock_offsets(tmp_path, fault):
    """One CUDA_VISIBLE_DEVICES per process and no host names: the 1 ms clock offset separates the hosts, even
    when most collectives stay inside a node (pipeline stages across nodes)."""
    res, truth = _detect(tmp_path, _spec(fault, 1000.0, "own", False))
    (want,) = truth["faults"]
    top = _top_link(res)
    assert top["component"] == want["component"], top["summary"]
    assert res.meta["hosts_from"] == "clock_offsets"
    assert res.meta["hosts"] == TWO_HOSTS
    assert res.meta["clock"]["domains"] == "hosts"
    assert "hosts inferred from clock offsets" in top["summary"]
    assert top["evidence"]["hosts_from"] == "clock_offsets"


def test_ptp_clocks_on_device_0_without_host_names_says_so(tmp_path):
    """Synchronised clocks (2 µs), every rank on device 0, no host names: nothing in the trace tells the hosts
    apart. The run is taken as one host and the finding says so (a NIC cannot be told from NVLink)."""
    res, _ = _detect(tmp_path, _spec("nic_tp", 2.0, "own", False))
    assert res.meta["hosts_from"] == "none"
    assert res.meta["hosts"] == [list(range(8))]
    top = _top_link(res)
    assert top["evidence"]["hosts_from"] == "none"
    assert "the trace names no hosts: all ranks taken as one host" in top["summary"]


def test_single_host_run_names_no_hosts(tmp_path):
    spec = sim.SCENARIOS["nvlink_degraded_tp8"].scaled(40)
    res, _ = _detect(tmp_path, spec)
    assert res.meta["hosts_from"] == "none"
    assert res.meta["hosts"] == [list(range(8))]
    top = _top_link(res)
    assert top["component"] == "nvlink" and top["evidence"]["hosts_from"] == "none"


def test_simulator_writes_device_0_and_host_names(tmp_path):
    spec = _spec("nic_tp", 2.0, "own", True)
    out = sim.simulate(tmp_path / "t", spec, seed=1)
    doc = json.loads((out / "rank-5.pt.trace.json").read_text())
    assert doc["hostname"] == "host1"
    assert [d["id"] for d in doc["deviceProperties"]] == [0]
    gpu = [e for e in doc["traceEvents"] if e.get("cat") == "kernel"]
    assert {e["args"]["device"] for e in gpu} == {0} and {e["pid"] for e in gpu} == {0}
    truth = json.loads((out / "truth.json").read_text())
    assert truth["spec"]["visible_devices"] == "own" and truth["spec"]["write_hostnames"] is True
    assert ScenarioSpec.from_dict(truth["spec"]) == spec
    # the default leaves both out of truth.json (older scenarios' files stay byte-identical)
    plain = sim.simulate(tmp_path / "p", sim.SCENARIOS["healthy_tp8_2node_trtllm"], seed=1)
    spec_plain = json.loads((plain / "truth.json").read_text())["spec"]
    assert "visible_devices" not in spec_plain and "write_hostnames" not in spec_plain
    assert "hostname" not in json.loads((plain / "rank-0.pt.trace.json").read_text())


def _meta(**dist) -> dict:
    return {"distributedInfo": dict(dist)}


def test_hosts_from_capture_sources_in_order():
    ranks = [0, 1, 2, 3]
    # host names
    named = {r: {"hostname": f"n{r // 2}"} for r in ranks}
    assert _hosts_from_capture(ranks, named) == ({0: "n0", 1: "n0", 2: "n1", 3: "n1"}, "host_name")
    # a node label (one report per node) wins over host names: two nodes may share a container host name
    labelled = {r: {"hostname": "modal", "node_label": f"node{r // 2}"} for r in ranks}
    hosts, src = _hosts_from_capture(ranks, labelled)
    assert src == "host_name" and len(set(hosts.values())) == 2
    assert (
        _hosts_from_capture(ranks, {r: {"node_label": f"node{r // 2}"} for r in ranks})[1] == "capture_report"
    )
    # the export machine (Nsight EXPORT_HOST, meta["host"]) is not the capture host
    assert _hosts_from_capture(ranks, {r: {"host": "laptop"} for r in ranks}) is None
    # a launcher's node index, or its local world size (ranks numbered node by node)
    by_node = {r: _meta(rank=r, node_rank=r // 2) for r in ranks}
    assert _hosts_from_capture(ranks, by_node) == (
        {0: "node0", 1: "node0", 2: "node1", 3: "node1"},
        "distributed_info",
    )
    by_lws = {r: _meta(rank=r, local_world_size=2) for r in ranks}
    assert _hosts_from_capture(ranks, by_lws) == _hosts_from_capture(ranks, by_node)
    # node-local process groups in pg_config
    pgs = [
        {"pg_name": "0", "pg_desc": "default_pg", "ranks": ranks},
        {"pg_name": "1", "pg_desc": "intra_node", "ranks": [0, 1]},
        {"pg_name": "2", "pg_desc": "intra_node", "ranks": [2, 3]},
    ]
    by_pg = {r: _meta(rank=r, pg_config=pgs) for r in ranks}
    hosts, src = _hosts_from_capture(ranks, by_pg)
    assert src == "distributed_info" and hosts[0] == hosts[1] != hosts[2] == hosts[3]
    # a tp group is no host; a plain distributedInfo says nothing
    tp_only = [{"pg_name": "1", "pg_desc": "tp", "ranks": ranks}]
    assert _hosts_from_capture(ranks, {r: _meta(rank=r, pg_config=tp_only) for r in ranks}) is None
    assert _hosts_from_capture(ranks, {r: _meta(rank=r, world_size=4) for r in ranks}) is None
    # every rank must say
    partial = {**named, 3: {}}
    assert _hosts_from_capture(ranks, partial) is None


def test_distributed_info_hosts_reach_detection(tmp_path):
    """Traces whose distributedInfo carries the launcher's node index: hosts from it, before device indices."""
    spec = _spec("nic_pp", 2.0, "own", False)
    out = sim.simulate(tmp_path / "traces", spec, seed=0)
    for p in sorted(out.glob("rank-*.pt.trace.json")):
        doc = json.loads(p.read_text())
        doc["distributedInfo"]["node_rank"] = doc["distributedInfo"]["rank"] // 4
        p.write_text(json.dumps(doc))
    store = pipeline.ingest(sorted(out.glob("rank-*.pt.trace.json")), tmp_path / "run.kat.h5")
    res = detect_store(store)
    assert res.meta["hosts_from"] == "distributed_info"
    assert res.meta["hosts"] == TWO_HOSTS
    assert _top_link(res)["component"] == "nic"
    assert np.isclose(sorted(res.meta["clock"]["offsets_ns"].values())[-1], 2000, atol=1000)
