"""Chrome Trace Event Format reader: sniffing beside Kineto, events and times, rank mapping, and detection on
simulated runs converted to plain Chrome-trace operations (one process per rank; ranks in thread names)."""

from __future__ import annotations

import gzip
import json
from decimal import Decimal
from pathlib import Path

import numpy as np
import pytest

from kat_gui import pipeline
from kat_gui import simulate as sim
from kat_gui.cli import main
from kat_gui.detect import detect_store
from kat_gui.errors import KatInputError
from kat_gui.events import CopyKind, EventKind, TrackKind
from kat_gui.ingest import IngestOptions, chrome, read_traces, sniff_format
from kat_gui.ingest.chrome import RankFrom

# ------------------------------------------------------------------------------------------------ helpers


def _write(tmp_path: Path, name: str, doc: object | str | bytes) -> Path:
    p = tmp_path / name
    if isinstance(doc, bytes):
        p.write_bytes(doc)
    elif isinstance(doc, str):
        p.write_text(doc)
    else:
        p.write_text(json.dumps(doc))
    return p


def _x(name: str, ts: float | str, dur: float | str, pid: object = 1, tid: object = 1, **extra) -> dict:
    return {"ph": "X", "name": name, "pid": pid, "tid": tid, "ts": ts, "dur": dur, **extra}


def _rows(trace) -> list[tuple]:
    ev = trace.events
    order = np.lexsort((ev["end_ns"], ev["start_ns"]))
    return [
        (
            trace.strings[ev["name"][i]],
            int(ev["start_ns"][i]),
            int(ev["end_ns"][i]),
            EventKind(ev["kind"][i]).name,
        )
        for i in order.tolist()
    ]


def to_chrome(simdir: Path, layout: str) -> str:
    """The simulated Kineto rank files of ``simdir`` as one Chrome trace (JSON array text) of plain operations:
    every kernel and copy of a rank as an ``X`` event named as the kernel, its ``ProfilerStep#N`` ranges, and
    nothing else (no categories, no args, no Kineto header). Times are absolute epoch µs written as exact
    decimal text (19 significant digits).

    ``layout``: ``"process"``: one process per rank (pids 4000 + 10 * rank, stream = tid);
    ``"dp_threads"``: one process per pair of ranks (a data-parallel group), threads named
    ``PP rank 0, TP rank {rank % 2}, compute`` / ``..., comm`` (collectives on the comm thread), the way
    Megatron-style timelines name them."""
    out: list[str] = []
    names: dict[tuple[int, int], str] = {}
    for f in sorted(simdir.glob("rank-*.pt.trace.json")):
        rank = int(f.name.split("-")[1].split(".")[0])
        doc = json.loads(f.read_text(), parse_float=Decimal)
        base_us = Decimal(doc.get("baseTimeNanoseconds", 0)) / 1000
        for e in doc["traceEvents"]:
            cat, name = e.get("cat"), e.get("name", "")
            if e.get("ph") != "X" or cat not in ("kernel", "gpu_memcpy", "user_annotation"):
                continue
            if cat == "user_annotation" and not name.startswith("ProfilerStep#"):
                continue
            ts = base_us + Decimal(e["ts"])
            if layout == "process":
                pid, tid = 4000 + 10 * rank, (1 if cat == "user_annotation" else e["tid"])
            else:
                pid = 100 + rank // 2
                comm = "nccl" in name.lower() or "reduce" in name.lower()
                role = "host" if cat == "user_annotation" else ("comm" if comm else "compute")
                tid = 10 * (rank % 2) + {"host": 1, "compute": 2, "comm": 3}[role]
                names[(pid, tid)] = f"PP rank 0, TP rank {rank % 2}, {role}"
            out.append(
                f'{{"ph": "X", "name": {json.dumps(name)}, "pid": {pid}, "tid": {tid}, "ts": {ts}, '
                f'"dur": {e["dur"]}}}'
            )
    for (pid, tid), label in sorted(names.items()):
        out.append(
            json.dumps({"ph": "M", "name": "thread_name", "pid": pid, "tid": tid, "args": {"name": label}})
        )
        out.append(json.dumps({"ph": "M", "name": "process_name", "pid": pid, "args": {"name": "python3"}}))
    return "[\n" + ",\n".join(out) + "\n]\n"


@pytest.fixture(scope="module")
def gpu_fault_run(tmp_path_factory) -> Path:
    """The simulator's gpu_throttle_tp4 (GPU 2 throttled by 20 % from step 16), Kineto rank files."""
    d = tmp_path_factory.mktemp("sim")
    sim.simulate(d, "gpu_throttle_tp4", seed=0)
    return d


def _gpu_times(trace) -> list[tuple[str, int, int]]:
    ev = trace.events
    gpu = np.isin(ev["kind"], [EventKind.KERNEL, EventKind.MEMCPY])
    return sorted(
        (trace.strings[n], s, e)
        for n, s, e in zip(
            ev["name"][gpu].tolist(), ev["start_ns"][gpu].tolist(), ev["end_ns"][gpu].tolist(), strict=True
        )
    )


def _gpu_finding_ranks(store: Path) -> list[list[int]]:
    res = detect_store(store)
    assert res.meta["collectives"]["instances"] > 0
    assert res.meta["collectives"]["grouping"] == "collective_name"  # matched by name and order
    return [f["ranks"] for f in res.findings if f["component"] == "gpu"]


# ------------------------------------------------------------------------------------------------ detection


def test_one_process_per_rank_no_option_finds_the_slow_gpu(gpu_fault_run: Path, tmp_path: Path) -> None:
    trace = _write(tmp_path, "timeline.json.gz", gzip.compress(to_chrome(gpu_fault_run, "process").encode()))
    assert sniff_format(trace) == "chrome"
    store = pipeline.ingest([trace], tmp_path / "run.kat.h5")
    info = json.loads(_cli_out(["info", str(store), "--json"]))
    assert [r["rank"] for r in info["ranks"]] == [0, 1, 2, 3]
    assert {r["format"] for r in info["ranks"]} == {"chrome"}
    assert (
        info["counts"]["kernel"] > 0
        and info["counts"]["memcpy"] > 0
        and info["counts"]["annotation"] == 4 * 48
    )
    times = info["kernel_time_by_class"]
    assert times["compute"] > 0 and times["memory"] > 0 and times["collective"] > 0 and times["copy_host"] > 0
    # exact times: the GPU events of rank 2 have the very ns the Kineto reader gives for the same file
    (kin,) = read_traces([gpu_fault_run / "rank-2.pt.trace.json"])
    (ours,) = [t for t in read_traces([trace]) if t.rank == 2]
    assert _gpu_times(ours) == _gpu_times(kin)
    found = _gpu_finding_ranks(store)
    assert found and found[0] == [2], found


def test_ranks_in_thread_names_need_rank_from(gpu_fault_run: Path, tmp_path: Path) -> None:
    trace = _write(tmp_path, "timeline-dp.json", to_chrome(gpu_fault_run, "dp_threads"))
    # two processes (data-parallel groups) without rank names: one rank per process by default
    traces = list(read_traces([trace]))
    assert [t.rank for t in traces] == [0, 1]
    spec = r"thread:PP rank (\d+), TP rank (\d+)"
    store = pipeline.ingest([trace], tmp_path / "run.kat.h5", options=IngestOptions(rank_from=spec))
    info = json.loads(_cli_out(["info", str(store), "--json"]))
    # key (process, PP, TP) numbered in order: process 100 -> ranks 0, 1; process 101 -> ranks 2, 3
    assert [r["rank"] for r in info["ranks"]] == [0, 1, 2, 3]
    assert all(r["streams"] == 2 and r["host_threads"] == 1 for r in info["ranks"])  # compute + comm
    found = _gpu_finding_ranks(store)
    assert found and found[0] == [2], found


def test_one_process_holding_every_rank(gpu_fault_run: Path, tmp_path: Path) -> None:
    doc = json.loads(to_chrome(gpu_fault_run, "process"))
    for e in doc:  # every rank's threads under one process, named after the rank
        rank = (e["pid"] - 4000) // 10
        e["pid"], e["tid"] = 7, 100 * rank + e["tid"]
    labels = {e["tid"]: f"worker rank {e['tid'] // 100} stream {e['tid'] % 100}" for e in doc}
    doc += [
        {"ph": "M", "name": "thread_name", "pid": 7, "tid": t, "args": {"name": n}} for t, n in labels.items()
    ]
    trace = _write(tmp_path, "one_process.json", doc)
    with pytest.raises(KatInputError, match="--rank-from"):
        list(read_traces([trace]))
    opts = IngestOptions(rank_from=r"thread:rank (\d+)")
    store = pipeline.ingest([trace], tmp_path / "run.kat.h5", options=opts)
    found = _gpu_finding_ranks(store)
    assert found and found[0] == [2], found


def _cli_out(argv: list[str]) -> str:
    import contextlib
    import io

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        assert main(argv) == 0
    return buf.getvalue()


# ------------------------------------------------------------------------------------------------ sniffing


def test_sniff_rules(tmp_path: Path, shared_data: Path) -> None:
    ev = [_x("forward-compute", 1.0, 2.0)]
    assert sniff_format(_write(tmp_path, "a.json", ev)) == "chrome"  # array
    assert sniff_format(_write(tmp_path, "b.json", {"traceEvents": ev})) == "chrome"
    assert sniff_format(_write(tmp_path, "c.json", {"traceEvents": ev, "displayTimeUnit": "ns"})) == "chrome"
    # Kineto's marks win: a header key, or an event of a Kineto category
    assert sniff_format(_write(tmp_path, "d.json", {"schemaVersion": 1, "traceEvents": ev})) == "kineto"
    kev = [dict(ev[0], cat="kernel")]
    assert sniff_format(_write(tmp_path, "e.json", {"traceEvents": kev})) == "kineto"
    assert (
        sniff_format(_write(tmp_path, "f.json", {"traceEvents": []})) == "kineto"
    )  # no event: Kineto's errors
    with pytest.raises(KatInputError, match="not a trace format"):
        sniff_format(_write(tmp_path, "g.json", [1, 2, 3]))
    for p in sorted((shared_data / "kineto").rglob("*.json.gz")):
        assert sniff_format(p) == "kineto", p.name


def test_simulator_output_stays_kineto(gpu_fault_run: Path) -> None:
    for p in sorted(gpu_fault_run.glob("rank-*.json")):
        assert sniff_format(p) == "kineto"


# ------------------------------------------------------------------------------------------------ events


def test_complete_and_begin_end_events_exact_times(tmp_path: Path) -> None:
    events = [
        {"ph": "M", "name": "process_name", "pid": 1, "args": {"name": "trainer"}},
        {"ph": "M", "name": "thread_name", "pid": 1, "tid": 1, "args": {"name": "main"}},
        # epoch µs with ns digits: exact (a float64 would lose them)
        _x("gemm_a", "1732530000000001.234", "2.5", args={"flops": 7}),
        # half a ns rounds up; an exponent is read exactly
        _x("gemm_b", "1732530000000010.0005", "1e0"),
        {"ph": "B", "name": "outer", "pid": 1, "tid": 2, "ts": 1732530000000020},
        {"ph": "B", "name": "inner", "pid": 1, "tid": 2, "ts": 1732530000000021},
        {"ph": "E", "pid": 1, "tid": 2, "ts": 1732530000000022.5},
        {"ph": "E", "pid": 1, "tid": 2, "ts": 1732530000000030},
        {"ph": "E", "pid": 1, "tid": 2, "ts": 1732530000000031},  # no B left: counted, dropped
        {"ph": "B", "name": "never_ends", "pid": 1, "tid": 3, "ts": 1732530000000040},
        {"ph": "i", "name": "instant", "pid": 1, "tid": 1, "ts": 1732530000000050},
        {"ph": "C", "name": "counter", "pid": 1, "ts": 1732530000000050, "args": {"v": 1}},
    ]
    (trace,) = chrome.read_many(_write(tmp_path, "t.json", {"traceEvents": events}))
    trace.validate()
    assert trace.rank is None  # one process, no rank in its name: the registry decides
    assert _rows(trace) == [
        ("gemm_a", 1732530000000001234, 1732530000000003734, "KERNEL"),
        ("gemm_b", 1732530000000010001, 1732530000000011001, "KERNEL"),
        ("outer", 1732530000000020000, 1732530000000030000, "GPU_ANNOTATION"),  # encloses "inner"
        ("inner", 1732530000000021000, 1732530000000022500, "KERNEL"),
    ]
    assert trace.meta["skipped"] == {"ph=i": 1, "ph=C": 1, "E without B": 1, "B without E": 1}
    assert trace.meta["process_names"] == {"1": "trainer"} and trace.meta["thread_names"] == {"1/1": "main"}
    assert trace.meta["time_base"] == "chrome_us"
    assert {t.kind for t in trace.tracks} == {TrackKind.GPU_STREAM}
    k = trace.strings.index("gemm_a")
    row = int(np.flatnonzero(trace.events["name"] == k)[0])
    assert json.loads(trace.args[trace.events["args"][row]]) == {"flops": 7}


def test_copies_memsets_steps_and_bytes(tmp_path: Path) -> None:
    events = [
        _x("ProfilerStep#3", 0, 100),
        _x("Memcpy HtoD (Pageable -> Device)", 1, 2, tid=7, args={"bytes": 4096}),
        _x("copy_d2h", 4, 2, tid=7),
        _x("p2p-copy", 7, 1, tid=7),
        _x("memset_zero", 9, 1, tid=7, args={"bytes": 64}),
        _x("optimizer-copy-to-main-grad", 11, 2, tid=7),  # an on-device copy kernel, not a memcpy
    ]
    (trace,) = chrome.read_many(_write(tmp_path, "rank_5.json", events))
    ev = trace.events
    by_name = {
        trace.strings[ev["name"][i]]: (
            EventKind(ev["kind"][i]).name,
            int(ev["copy_kind"][i]),
            int(ev["bytes"][i]),
        )
        for i in range(len(trace))
    }
    assert by_name["Memcpy HtoD (Pageable -> Device)"] == ("MEMCPY", CopyKind.HTOD, 4096)
    assert by_name["copy_d2h"] == ("MEMCPY", CopyKind.DTOH, -1)
    assert by_name["p2p-copy"] == ("MEMCPY", CopyKind.PTOP, -1)
    assert by_name["memset_zero"] == ("MEMSET", 0, 64)
    assert by_name["optimizer-copy-to-main-grad"][0] == "KERNEL"
    assert by_name["ProfilerStep#3"][0] == "ANNOTATION"  # a step range stays on a host thread
    step_track = trace.tracks[
        trace.events["track"][trace.strings.index("ProfilerStep#3") == trace.events["name"]][0]
    ]
    assert step_track.kind == TrackKind.HOST_THREAD
    (t,) = read_traces([tmp_path / "rank_5.json"])
    assert t.rank == 5 and t.meta["rank_source"] == "file name"


def test_missing_closing_bracket_is_accepted(tmp_path: Path) -> None:
    text = '[{"ph": "X", "name": "a", "pid": 1, "tid": 1, "ts": 1, "dur": 2},\n'
    (trace,) = chrome.read_many(_write(tmp_path, "cut.json", text))
    assert _rows(trace) == [("a", 1000, 3000, "KERNEL")]


# ------------------------------------------------------------------------------------------------ ranks


def test_default_ranks_from_pid_order_or_process_names(tmp_path: Path) -> None:
    events = [_x("k", 1, 1, pid=p) for p in (900, 30, 4000)]
    traces = chrome.read_many(_write(tmp_path, "a.json", events))
    assert [(t.rank, t.tracks[0].pid) for t in traces] == [(0, 30), (1, 900), (2, 4000)]
    rank_of = {900: 5, 30: 7, 4000: 6}
    names = [
        {"ph": "M", "name": "process_name", "pid": p, "args": {"name": f"Rank {r}"}}
        for p, r in rank_of.items()
    ]
    traces = chrome.read_many(_write(tmp_path, "b.json", events + names))
    assert [(t.rank, t.tracks[0].pid) for t in traces] == [(5, 900), (6, 4000), (7, 30)]


def test_rank_from_sources(tmp_path: Path) -> None:
    events = [_x("k", 1, 1, pid=p, tid=t) for p in (11, 12) for t in (1, 2)]
    events += [
        {"ph": "M", "name": "process_name", "pid": p, "args": {"name": f"dp{p - 11}-node"}} for p in (11, 12)
    ]
    path = _write(tmp_path, "a.json", events)

    def ranks(spec: str) -> list[int]:
        return [t.rank for t in chrome.read_many(path, IngestOptions(rank_from=spec))]

    assert ranks("pid") == [11, 12]
    assert ranks("process") == [0, 1]  # the last number of the name
    assert ranks(r"process:dp(\d+)") == [0, 1]
    assert ranks("tid") == [0, 1, 2, 3]  # tid 1 and 2 under both processes: (process, tid) numbered
    assert ranks("thread") == [0, 1, 2, 3]  # no thread names: the tid text


def test_rank_from_errors(tmp_path: Path) -> None:
    path = _write(tmp_path, "a.json", [_x("k", 1, 1, pid=p) for p in (1, 2)])
    for spec, match in (("gpu", "source must be"), ("thread:(", "bad regular expression")):
        with pytest.raises(KatInputError, match=match):
            RankFrom.parse(spec)
    with pytest.raises(KatInputError, match="nothing to read a rank from matched"):
        chrome.read_many(path, IngestOptions(rank_from=r"process:rank (\d+)"))
    with pytest.raises(KatInputError, match="forced rank"):
        chrome.read_many(path, IngestOptions(rank=3))


def test_unmatched_threads_are_dropped_and_counted(tmp_path: Path) -> None:
    events = [_x("k", 1, 1, tid=t) for t in (1, 2, 3)]
    labels = {1: "rank 0", 2: "rank 1", 3: "logger"}
    events += [
        {"ph": "M", "name": "thread_name", "pid": 1, "tid": t, "args": {"name": n}} for t, n in labels.items()
    ]
    traces = chrome.read_many(
        _write(tmp_path, "a.json", events), IngestOptions(rank_from=r"thread:rank (\d+)")
    )
    assert [t.rank for t in traces] == [0, 1]
    assert traces[0].meta["unmatched_tracks"] == ["logger"]
    assert traces[0].meta["skipped"]["rank_from: no match"] == 1


# ------------------------------------------------------------------------------------------------ errors


@pytest.mark.parametrize(
    ("doc", "match"),
    [
        ([_x("k", "soon", 1)], "bad event time"),
        ('[{"ph": "X", "name": "k", "pid": 1, "tid": 1, "ts": 1e999999999, "dur": 1}]', "out of range"),
        (b'[{"ph": "X", "name": "k\xff", "pid": 1, "tid": 1, "ts": 1, "dur": 1}]', "not valid UTF-8"),
        (
            '[{"ph": "X", "name": "k", "pid": 1, "tid": 1, "ts": 1, "args": '
            + "[" * 9000
            + "]" * 9000
            + "}]",
            "nested",
        ),
        ('"just a string"', "not a trace"),
        ({"traceEvents": [_x("k", 1, 1), 5]}, "not an event"),
        ([{"ph": "i", "name": "x", "pid": 1, "ts": 1}], "no timed events"),
        ('[{"ph": "X", "name": "k" "ts": 1}]', "not valid JSON"),
    ],
)
def test_bad_input_is_one_line(tmp_path: Path, doc, match: str) -> None:
    path = _write(tmp_path, "bad.json", doc)
    with pytest.raises(KatInputError, match=match) as info:
        chrome.read_many(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_cli_rank_from(tmp_path: Path, capsys) -> None:
    events = [_x("forward-compute", 1, 1, tid=t) for t in (1, 2)]
    events += [
        {"ph": "M", "name": "thread_name", "pid": 1, "tid": t, "args": {"name": f"rank {t}"}} for t in (1, 2)
    ]
    path = _write(tmp_path, "a.json", events)
    out = tmp_path / "a.kat.h5"
    assert main(["ingest", str(path), "-o", str(out), "--rank-from", "thread"]) == 0
    assert "2 ranks" in capsys.readouterr().out
    assert main(["ingest", str(path), "-o", str(out), "--rank-from", "gpu:x"]) == 2
    assert "--rank-from 'gpu:x'" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------------ the documented example

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "tests" / "fixtures" / "chrome" / "example.json"


def test_doc_example_is_the_fixture_and_reads_as_described() -> None:
    import re

    doc = (ROOT / "docs" / "formats.md").read_text(encoding="utf-8")
    (body,) = re.findall(
        r"<!-- chrome example: tests/fixtures/chrome/example.json -->\n```json\n(.*?)```", doc, re.S
    )
    assert body == EXAMPLE.read_text(encoding="utf-8"), "docs/formats.md shows a stale example"
    assert sniff_format(EXAMPLE) == "chrome"
    default = chrome.read_many(EXAMPLE)
    assert [t.rank for t in default] == [0, 1]
    assert [len(t.tracks) for t in default] == [3, 2]
    spec = r"thread:PP rank (\d+), TP rank (\d+)"
    ranks = chrome.read_many(EXAMPLE, IngestOptions(rank_from=spec))
    assert [t.rank for t in ranks] == [0, 1, 2, 3]
    r0 = ranks[0]
    assert len(r0.tracks) == 2  # compute and pp-comm lanes
    rows = _rows(r0)
    assert ("forward-backward", 1732530000000000000, 1732530000005200500, "GPU_ANNOTATION") in rows
    assert ("forward-compute", 1732530000000010125, 1732530000001210375, "KERNEL") in rows
    assert ("backward-compute", 1732530000002500000, 1732530000004900750, "KERNEL") in rows
    assert r0.meta["skipped"] == {"ph=i": 1}
    assert r0.meta["displayTimeUnit"] == "ms"
    assert r0.meta["thread_names"]["1/11"] == "PP rank 0, TP rank 0, pp-comm"
