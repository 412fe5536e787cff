"""Nsight reports that hold several ranks: the nsys-ai whole-node exports (``nsys profile torchrun
--nproc-per-node 2``: two ``python3`` processes on devices 0 and 1 beside torchrun, nsys and shells), and
node pairs made from them (docs/formats.md, "Reports of a whole node")."""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from kat_gui import pipeline
from kat_gui.cli import main as kat
from kat_gui.detect import detect_store
from kat_gui.detect.classify import COLLECTIVE, classify_name
from kat_gui.errors import KatInputError
from kat_gui.events import EventKind, TrackKind
from kat_gui.ingest import IngestOptions, nsys, read_traces
from kat_gui.ingest.placement import parse_rank_map
from kat_gui.store import TraceStore

BEFORE, AFTER = "mfu_2gpu_before.sqlite", "mfu_2gpu_after.sqlite"
PIDS = {BEFORE: (144, 145), AFTER: (148, 149)}  # the python3 processes on devices 0 and 1
SENDRECV = {BEFORE: 33, AFTER: 31}  # ncclDevKernel_SendRecv kernels per process


@pytest.fixture(scope="module")
def ai_dir(shared_data: Path) -> Path:
    return shared_data / "nsys_sqlite" / "nsys_ai"


def _copy(src: Path, dst: Path, *sql: str) -> Path:
    """A writable copy of an export with some SQL applied."""
    shutil.copyfile(src, dst)
    dst.chmod(0o644)
    conn = sqlite3.connect(dst)
    try:
        for q in sql:
            conn.execute(q)
        conn.commit()
    finally:
        conn.close()
    return dst


def _host(name: str) -> str:
    return f"UPDATE TARGET_INFO_SYSTEM_ENV SET value = '{name}' WHERE name = 'Hostname'"


def _gpu_devices(trace) -> set[int]:
    return {t.device for t in trace.tracks if t.kind == TrackKind.GPU_STREAM}


@pytest.mark.parametrize("name", [BEFORE, AFTER])
def test_whole_node_report_is_one_rank_per_gpu_process(ai_dir: Path, name: str):
    traces = list(read_traces([ai_dir / name]))
    assert [t.rank for t in traces] == [0, 1]
    assert [_gpu_devices(t) for t in traces] == [{0}, {1}]
    whole = nsys.read(ai_dir / name, IngestOptions())
    assert sum(len(t) for t in traces) == len(whole)  # torchrun, nsys and shells own no events here
    for t, pid, dev in zip(traces, PIDS[name], (0, 1), strict=True):
        t.validate()
        assert {tr.pid for tr in t.tracks} == {pid}  # its own GPU streams and host threads only
        assert t.meta["nsys_process"] == {"pid": pid, "name": "python3", "devices": [dev]}
        assert t.meta["rank_source"] == "process order (device, pid)"
        assert t.meta["hostname"] == "modal" and t.meta["node_label"] == "modal"
        assert t.meta["nsys_node"]["order_from"] == "single capture"
        assert t.meta["process_names"] == {str(pid): "python3"}
        assert all(k.startswith(f"{pid}/") for k in t.meta["thread_names"])
        names = np.array(t.strings)[t.events["name"][t.events["kind"] == EventKind.KERNEL]]
        assert (
            sum(n == "ncclDevKernel_SendRecv(ncclDevKernelArgsStorage<(unsigned long)4096>)" for n in names)
            == (SENDRECV[name])
        )
        # NVTX ranges of the process are kept as annotations
        assert (
            (t.events["kind"] == EventKind.ANNOTATION).sum() == t.meta["event_counts"]["NVTX_EVENTS"] > 8000
        )
        # strings and args are the rank's own
        assert len(t.strings) < len(whole.strings) and len(set(t.strings)) == len(t.strings)


def test_syncs_land_on_their_context_device(ai_dir: Path):
    """The export gives every sync row deviceId 0; its contextId says device 1 for the second process."""
    _, rank1 = read_traces([ai_dir / BEFORE])
    sync = rank1.events["kind"] == EventKind.SYNC
    assert sync.sum() == 188
    assert {rank1.tracks[i].device for i in np.unique(rank1.events["track"][sync])} == {1}


def test_read_keeps_the_whole_file_as_one_rank(ai_dir: Path):
    whole = nsys.read(ai_dir / BEFORE, IngestOptions(rank=0))
    assert whole.rank == 0 and _gpu_devices(whole) == {0, 1}


def test_kat_ingest_detect_compare(ai_dir: Path, tmp_path: Path, capsys):
    stores = {}
    for name in (BEFORE, AFTER):
        out = tmp_path / f"{name}.kat.h5"
        assert kat(["ingest", str(ai_dir / name), "-o", str(out)]) == 0
        stores[name] = out
        info = json.loads(_run_json(capsys, ["info", str(out), "--json"]))
        assert [(r["rank"], r["devices"]) for r in info["ranks"]] == [(0, [0]), (1, [1])]
        res = detect_store(out)
        assert res.meta["collectives"]["instances"] == SENDRECV[name]
        assert res.meta["hosts_from"] == "host_name" and res.meta["hosts"] == [[0, 1]]
    dst = tmp_path / "cmp.json"
    assert kat(["compare", str(stores[BEFORE]), str(stores[AFTER]), "--json", str(dst)]) == 0
    doc = json.loads(dst.read_text())
    assert doc["healthy"]["ranks"] == [0, 1] and doc["degraded"]["ranks"] == [0, 1]


def _run_json(capsys, argv: list[str]) -> str:
    capsys.readouterr()
    assert kat(argv) == 0
    return capsys.readouterr().out


def test_rank_option_and_rank_map(ai_dir: Path, tmp_path: Path):
    path = ai_dir / BEFORE
    with pytest.raises(KatInputError) as info:
        list(read_traces([path], IngestOptions(rank=0)))
    assert "--rank-map 144=RANK,145=RANK" in str(info.value) and path.name in str(info.value)
    swapped = list(read_traces([path], IngestOptions(rank_map=parse_rank_map("144=1,145=0"))))
    assert {t.rank: _gpu_devices(t) for t in swapped} == {1: {0}, 0: {1}}
    assert all(t.meta["rank_source"] == "rank map" for t in swapped)
    with pytest.raises(KatInputError, match="add 145=RANK"):
        list(read_traces([path], IngestOptions(rank_map=parse_rank_map("144=3"))))
    with pytest.raises(KatInputError, match="no capture has a GPU-owning process 125"):
        list(read_traces([path], IngestOptions(rank_map=parse_rank_map("125=0,144=1"))))  # torchrun
    for bad in ("144", "144=x", "a=1", "144=1,144=2", "144=1,145=1"):
        with pytest.raises(KatInputError):
            parse_rank_map(bad)
    out = tmp_path / "r.kat.h5"
    assert kat(["ingest", str(path), "-o", str(out), "--rank-map", "144=5", "--rank-map", "145=4"]) == 0
    with TraceStore.open(out) as st:
        assert sorted(m["rank"] for m in st.ranks) == [4, 5]
    assert kat(["ingest", str(path), "-o", str(out), "--rank", "0"]) == 2


def test_node_pair_ordered_by_host_name(ai_dir: Path, tmp_path: Path):
    """Two reports of the same job on two nodes: node order from the host names (node2 before node10), global
    ranks node by node, the same pids on both nodes told apart by host or file."""
    a = _copy(ai_dir / BEFORE, tmp_path / "a.sqlite", _host("gpu-node10"))
    b = _copy(ai_dir / BEFORE, tmp_path / "b.sqlite", _host("gpu-node2"))
    traces = list(read_traces([a, b]))
    got = {t.rank: (Path(t.source).name, t.meta["nsys_process"]["pid"], t.meta["node_label"]) for t in traces}
    assert got == {
        0: ("b.sqlite", 144, "gpu-node2"),
        1: ("b.sqlite", 145, "gpu-node2"),
        2: ("a.sqlite", 144, "gpu-node10"),
        3: ("a.sqlite", 145, "gpu-node10"),
    }
    assert {t.meta["nsys_node"]["order_from"] for t in traces} == {"host name"}
    spaced = list(read_traces([a, b], IngestOptions(ranks_per_node=4)))
    assert sorted(t.rank for t in spaced) == [0, 1, 4, 5]
    with pytest.raises(KatInputError, match="several captures"):
        list(read_traces([a, b], IngestOptions(rank_map=parse_rank_map("144=0"))))
    mapped = list(
        read_traces(
            [a, b], IngestOptions(rank_map=parse_rank_map("gpu-node2:144=3,b:145=2,a.sqlite:144=1,a:145=0"))
        )
    )
    assert {t.rank: (Path(t.source).name, t.meta["nsys_process"]["pid"]) for t in mapped} == {
        3: ("b.sqlite", 144),
        2: ("b.sqlite", 145),
        1: ("a.sqlite", 144),
        0: ("a.sqlite", 145),
    }
    with pytest.raises(KatInputError, match="more than --ranks-per-node 1"):
        list(read_traces([a, b], IngestOptions(ranks_per_node=1)))
    # detection takes the hosts from the reports
    store = pipeline.ingest([a, b], tmp_path / "pair.kat.h5")
    res = detect_store(store)
    assert res.meta["hosts_from"] == "host_name" and res.meta["hosts"] == [[0, 1], [2, 3]]
    assert res.meta["collectives"]["instances"] > 0


def test_node_pair_without_distinct_host_names_keeps_file_order(ai_dir: Path, tmp_path: Path):
    a = _copy(ai_dir / BEFORE, tmp_path / "z.sqlite")  # both say "modal" (container host names)
    b = _copy(
        ai_dir / AFTER, tmp_path / "y.sqlite", "DELETE FROM TARGET_INFO_SYSTEM_ENV WHERE name = 'Hostname'"
    )
    traces = list(read_traces([a, b]))
    got = {t.rank: (Path(t.source).name, t.meta["node_label"], t.meta.get("hostname")) for t in traces}
    assert got == {
        0: ("z.sqlite", "node0", "modal"),
        1: ("z.sqlite", "node0", "modal"),
        2: ("y.sqlite", "node1", None),
        3: ("y.sqlite", "node1", None),
    }
    assert {t.meta["nsys_node"]["order_from"] for t in traces} == {"file order"}
    store = pipeline.ingest([a, b], tmp_path / "pair.kat.h5")
    res = detect_store(store)
    assert res.meta["hosts_from"] == "capture_report" and res.meta["hosts"] == [[0, 1], [2, 3]]


def test_processes_without_gpu_work_are_not_ranks(ai_dir: Path, tmp_path: Path):
    """torchrun (pid 125) writes an NVTX range and a runtime call: no rank, its events are dropped."""
    gtid = (125 << 24) | 125 | (1 << 48)
    path = _copy(
        ai_dir / BEFORE,
        tmp_path / "node.sqlite",
        f"INSERT INTO NVTX_EVENTS (start, end, eventType, text, globalTid) "
        f"VALUES (60200000000, 60200001000, 59, 'launcher', {gtid})",
        "CREATE TEMP TABLE one AS SELECT * FROM CUPTI_ACTIVITY_KIND_RUNTIME LIMIT 1",
        f"UPDATE one SET start = 60200000000, end = 60200000100, globalTid = {gtid}, correlationId = 1",
        "INSERT INTO CUPTI_ACTIVITY_KIND_RUNTIME SELECT * FROM one",
    )
    traces = list(read_traces([path]))
    assert [t.rank for t in traces] == [0, 1]
    assert all(t.meta["dropped_other_process_events"] == 2 for t in traces)
    assert all(125 not in {tr.pid for tr in t.tracks} for t in traces)


def test_old_nccl_kernel_names_are_collectives(ai_dir: Path, tmp_path: Path):
    for name in (
        "ncclKernel_SendRecv_RING_SIMPLE_Sum_int8",
        "ncclDevKernel_SendRecv(ncclDevKernelArgsStorage<4096ul>)",
    ):
        assert classify_name(name) == COLLECTIVE
    path = _copy(
        ai_dir / BEFORE,
        tmp_path / "old.sqlite",
        "UPDATE StringIds SET value = 'ncclKernel_SendRecv_RING_SIMPLE_Sum_int8' WHERE value LIKE 'ncclDevKernel_SendRecv%'",
    )
    res = detect_store(pipeline.ingest([path], tmp_path / "old.kat.h5"))
    assert res.meta["collectives"]["instances"] == SENDRECV[BEFORE]


def test_steps_from_nvtx_ranges(ai_dir: Path, tmp_path: Path):
    """Without ProfilerStep#N, NVTX ranges named like steps ("train_step") cut the steps."""
    rows = []
    for gtid in (281477392629904, 281477409407121):  # the main threads of pids 144 and 145
        for k in range(3):
            t0 = 60_111_000_000 + k * 100_000_000
            rows.append(
                f"INSERT INTO NVTX_EVENTS (start, end, eventType, text, globalTid) "
                f"VALUES ({t0}, {t0 + 100_000_000}, 59, 'train_step', {gtid})"
            )
    path = _copy(ai_dir / BEFORE, tmp_path / "steps.sqlite", *rows)
    res = detect_store(pipeline.ingest([path], tmp_path / "steps.kat.h5"))
    assert res.meta["steps"] == {"method": "annotation", "count": 3, "marker": "train_step"}
    plain = detect_store(pipeline.ingest([ai_dir / BEFORE], tmp_path / "plain.kat.h5"))
    assert plain.meta["steps"]["method"] == "marker_kernel"


def test_one_process_per_report_is_unchanged(shared_data: Path, tmp_path: Path):
    """Per-rank reports (one GPU process each) read as before: one rank, rank from the file name."""
    src = shared_data / "nsys_sqlite" / "extrap" / "nsys_db__con_kernel.sqlite"
    (one,) = nsys.read_many(src, IngestOptions())
    whole = nsys.read(src, IngestOptions())
    assert one.rank is None and len(one) == len(whole) and one.strings == whole.strings
    assert "nsys_process" not in one.meta
    r3 = shutil.copyfile(src, tmp_path / "rep_3.sqlite")
    r5 = shutil.copyfile(src, tmp_path / "rep_5.sqlite")
    assert sorted(t.rank for t in read_traces([r3, r5])) == [3, 5]
