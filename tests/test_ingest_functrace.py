"""The plain function-trace format (CSV / JSON Lines): fixtures, exactness, error messages, the documented example."""

from __future__ import annotations

import gzip
import json
import re
from pathlib import Path

import numpy as np
import pytest

from kat_gui.errors import Cancelled, KatInputError
from kat_gui.events import CopyKind, EventKind, TrackKind
from kat_gui.ingest import functrace
from kat_gui.ingest.base import IngestOptions

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures" / "functrace"
DOC = ROOT / "docs" / "formats.md"
HEADER = "rank,device,stream,tid,kind,name,start_ns,end_ns"


def _read(path: Path, **kw):
    trace = functrace.read(path, IngestOptions(**kw), None)
    trace.validate()
    return trace


def _write(tmp_path: Path, name: str, text: str) -> Path:
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return p


def _error(path: Path, **kw) -> str:
    with pytest.raises(KatInputError) as err:
        functrace.read(path, IngestOptions(**kw), None)
    msg = str(err.value)
    assert msg.startswith(f"{path}: ") and "\n" not in msg
    return msg


def test_csv_and_jsonl_examples_give_identical_traces():
    csv_trace = _read(FIXTURES / "example.csv")
    json_trace = _read(FIXTURES / "example.jsonl")
    assert csv_trace.meta["flavour"] == "csv" and json_trace.meta["flavour"] == "jsonl"
    assert set(csv_trace.events) == set(json_trace.events)
    for col, values in csv_trace.events.items():
        assert values.dtype == json_trace.events[col].dtype, col
        np.testing.assert_array_equal(values, json_trace.events[col], err_msg=col)
    assert csv_trace.strings == json_trace.strings
    assert csv_trace.args == json_trace.args
    assert csv_trace.tracks == json_trace.tracks
    assert csv_trace.rank == json_trace.rank == 0


def test_example_content():
    trace = _read(FIXTURES / "example.csv")
    ev = trace.events
    assert len(trace) == 8
    kinds = [EventKind(k) for k in ev["kind"]]
    assert kinds.count(EventKind.KERNEL) == 2 and kinds.count(EventKind.RUNTIME) == 3
    by_name = {trace.strings[n]: i for i, n in enumerate(ev["name"])}
    # The C++ kernel name holds commas and quotes in the CSV; it comes back whole.
    templ = next(
        s for s in trace.strings if s.startswith("void at::native::vectorized_elementwise_kernel<4, ")
    )
    k = by_name[templ]
    assert ev["end_ns"][k] - ev["start_ns"][k] == 41234  # given as dur_ns
    nccl = by_name["ncclDevKernel_AllReduce_Sum_bf16_RING_LL"]
    assert trace.strings[ev["coll"][nccl]] == "allreduce" and trace.strings[ev["pg"][nccl]] == "0"
    assert (ev["seq"][nccl], ev["msg_nelems"][nccl], ev["group_size"][nccl]) == (57, 8388608, 8)
    assert ev["end_ns"][nccl] == 1732530000001890123
    copy = by_name["Memcpy HtoD"]
    assert ev["copy_kind"][copy] == int(CopyKind.HTOD) and ev["bytes"][copy] == 4194304
    # Launch -> GPU work link by correlation.
    assert ev["correlation"][copy] == ev["correlation"][by_name["cudaMemcpyAsync"]] == 101
    # Tracks: two GPU streams of device 0 and one host thread.
    tracks = {(t.kind, t.device, t.stream, t.pid, t.tid) for t in trace.tracks}
    assert tracks == {
        (TrackKind.GPU_STREAM, 0, 7, 4242, 7),
        (TrackKind.GPU_STREAM, 0, 13, 4242, 13),
        (TrackKind.HOST_THREAD, -1, -1, 4242, 4242),
    }
    assert trace.tracks[ev["track"][nccl]].stream == 13
    # Host runtime call naming a device keeps it in args, with the tracer's extra field.
    launch = [i for i, n in enumerate(ev["name"]) if trace.strings[n] == "cudaLaunchKernel"][0]
    assert json.loads(trace.args[ev["args"][launch]]) == {"device": 0, "op_id": 17}
    assert trace.meta["extra_fields"] == ["op_id"]


def test_doc_example_is_the_fixture_and_parses(tmp_path: Path):
    doc = DOC.read_text(encoding="utf-8")
    blocks = re.findall(r"<!-- example: (\S+) -->\n```\w*\n(.*?)```", doc, flags=re.S)
    assert {name for name, _ in blocks} == {
        "tests/fixtures/functrace/example.csv",
        "tests/fixtures/functrace/example.jsonl",
    }
    traces = []
    for name, body in blocks:
        assert body == (ROOT / name).read_text(encoding="utf-8"), f"docs/formats.md shows a stale {name}"
        traces.append(_read(_write(tmp_path, Path(name).name, body)))
    np.testing.assert_array_equal(traces[0].events["start_ns"], traces[1].events["start_ns"])


def test_sniff():
    for name in ("example.csv", "example.jsonl"):
        assert functrace.sniff(FIXTURES / name, (FIXTURES / name).read_bytes())
    assert not functrace.sniff("x.csv", b"a,b,c\n1,2,3\n")
    assert not functrace.sniff("x.csv", b"rank,kind,name\n0,kernel,k\n")  # no start_ns
    assert not functrace.sniff("x.json", b'{"traceEvents": [{"name": "k", "ts": 1}]}')
    assert not functrace.sniff("x.json", b'{"schemaVersion": 1,\n "traceEvents": []}')
    assert not functrace.sniff("x.sqlite", b"SQLite format 3\x00" + bytes(100))
    assert functrace.sniff("x.csv", b"\xef\xbb\xbf# comment\n\nRank, Kind, Name, Start_ns, End_ns\n")
    assert functrace.sniff("x.jsonl", b'{"rank":1,"kind":"kernel","name":"k","start_ns":1,"dur_ns":2}\n')


@pytest.mark.parametrize("flavour", ["csv", "jsonl"])
def test_int64_values_near_2_62_are_exact(tmp_path: Path, flavour: str):
    start = 2**62 + 123_456_789  # a double would round this to a multiple of 1024
    ends = [start + 1, start + 3, 2**63 - 1]
    if flavour == "csv":
        rows = [f"7,0,1,,kernel,k{i},{start + i},{e}" for i, e in enumerate(ends)]
        path = _write(tmp_path, "t.csv", HEADER + "\n" + "\n".join(rows) + "\n")
    else:
        rows = [
            json.dumps(
                {
                    "rank": 7,
                    "device": 0,
                    "kind": "kernel",
                    "name": f"k{i}",
                    "start_ns": start + i,
                    "end_ns": e,
                }
            )
            for i, e in enumerate(ends)
        ]
        path = _write(tmp_path, "t.jsonl", "\n".join(rows) + "\n")
    trace = _read(path)
    assert trace.rank == 7
    assert trace.events["start_ns"].tolist() == [start, start + 1, start + 2]
    assert trace.events["end_ns"].tolist() == ends


def test_json_string_integers_accepted_and_floats_refused(tmp_path: Path):
    ok = _write(
        tmp_path,
        "ok.jsonl",
        '{"rank": "3", "device": 1, "kind": "KERNEL", "name": "k", "start_ns": "4611686018427387905", "dur_ns": 5}\n',
    )
    trace = _read(ok)
    assert trace.rank == 3 and int(trace.events["start_ns"][0]) == 4611686018427387905
    assert int(trace.events["end_ns"][0]) == 4611686018427387910
    bad = _write(
        tmp_path,
        "bad.jsonl",
        '{"rank": 0, "device": 0, "kind": "kernel", "name": "a", "start_ns": 10, "end_ns": 20}\n'
        '{"rank": 0, "device": 0, "kind": "kernel", "name": "b", "start_ns": 1.7325e18, "end_ns": 20}\n',
    )
    assert _error(bad).endswith(
        "line 2: start_ns 1.7325e+18 is not an integer (write integer ns: a float loses precision past 2**53)"
    )


@pytest.mark.parametrize(
    ("rows", "expected"),
    [
        (
            ["0,0,1,,kernel,k,1,2", "# note", "0,0,1,,kernel,k,abc,5"],
            "line 4: start_ns 'abc' is not an integer",
        ),
        (["0,0,1,,kernel,k,10,20", "0,0,1,,kernel,k,30,25"], "line 3: end_ns before start_ns (25 < 30)"),
        (["0,0,1,,kernel,k,10,20", "0,0,1,kernel,k,30,35"], "line 3: 7 fields, but the header has 8"),
        (["0,,,5,kernel,k,10,20"], "line 2: kind kernel needs a device (GPU index >= 0)"),
        (["0,0,1,,kernal,k,10,20"], "line 2: kind 'kernal' is not one of kernel, memcpy"),
        (["0,0,1,,kernel,,10,20"], "line 2: name is missing (required)"),
        (["0,0,1,,kernel,k,,20"], "line 2: start_ns is missing (required)"),
        (["0,0,1,,kernel,k,10,"], "line 2: needs end_ns or dur_ns"),
        (
            ["0,0,1,,kernel,k,10,99999999999999999999"],
            "line 2: end_ns '99999999999999999999' is out of the int64",
        ),
        (['0,0,1,,kernel,"k,10,20'], "line 2: malformed CSV record"),
    ],
)
def test_csv_errors_name_the_line(tmp_path: Path, rows: list[str], expected: str):
    path = _write(tmp_path, "bad.csv", HEADER + "\n" + "\n".join(rows) + "\n")
    assert expected in _error(path)


def test_header_and_jsonl_errors(tmp_path: Path):
    no_name = _write(tmp_path, "h.csv", "# tracer v1\nrank,kind,start_ns\n0,kernel,1\n")
    assert _error(no_name).endswith("line 2: header lacks required column(s): name, end_ns (or dur_ns)")
    dup = _write(tmp_path, "d.csv", "rank,kind,name,start_ns,end_ns,name\n")
    assert "line 1: duplicate column(s) in header: name" in _error(dup)
    header_only = _write(tmp_path, "e.csv", HEADER + "\n")
    assert "no events" in _error(header_only)
    assert "empty" in _error(_write(tmp_path, "empty.csv", "# nothing\n\n"))

    good = '{"rank": 0, "device": 0, "kind": "kernel", "name": "k", "start_ns": 1, "end_ns": 2}'
    broken = _write(tmp_path, "b.jsonl", good + "\n" + '{"rank": 0, "kind": }\n')
    assert "line 2: not valid JSON" in _error(broken)
    array = _write(tmp_path, "a.jsonl", good + "\n\n[1, 2]\n")
    assert "line 3: expected one JSON object per line, got list" in _error(array)
    no_start = _write(
        tmp_path, "s.jsonl", good + "\n" + '{"rank": 0, "kind": "runtime", "name": "f", "end_ns": 2}\n'
    )
    assert "line 2: start_ns is missing (required)" in _error(no_start)
    clash = _write(
        tmp_path,
        "c.jsonl",
        '{"rank": 0, "kind": "runtime", "name": "f", "start_ns": 1, "end_ns": 5, "dur_ns": 3}\n',
    )
    assert "line 1: end_ns 5 disagrees with start_ns + dur_ns 4" in _error(clash)


def test_several_ranks_refused_by_read_and_split_by_read_many(tmp_path: Path):
    rows = ["1,0,1,,kernel,a,10,20", "0,0,1,,kernel,b,10,20", "1,,,9,runtime,c,5,6"]
    path = _write(tmp_path, "all.csv", HEADER + "\n" + "\n".join(rows) + "\n")
    msg = _error(path)
    assert "holds events of 2 ranks (0, 1)" in msg and "one file per rank" in msg
    traces = functrace.read_many(path, IngestOptions())
    assert [t.rank for t in traces] == [0, 1]
    for t in traces:
        t.validate()
    assert len(traces[0]) == 1 and len(traces[1]) == 2
    assert {traces[1].strings[n] for n in traces[1].events["name"]} == {"a", "c"}
    assert "2 ranks" in _error(path, rank=3)  # a forced rank does not merge ranks
    with pytest.raises(KatInputError, match="forced rank"):
        functrace.read_many(path, IngestOptions(rank=3))


def test_rank_option_skips_and_gzip(tmp_path: Path):
    rows = [
        "2,0,1,,kernel,k,10,20",
        "2,,,4,cpu_op,aten::mm,11,19",
        "2,,,4,python,f,12,13",
        "2,,,4,sync,w,12,30",
    ]
    text = HEADER + "\n" + "\n".join(rows) + "\n"
    path = _write(tmp_path, "r.csv", text)
    trace = _read(path)
    assert trace.rank == 2 and len(trace) == 2  # cpu_op and python skipped by default
    assert trace.meta["skipped"] == {"cpu_op": 1, "python": 1}
    sync = trace.events["kind"] == int(EventKind.SYNC)
    assert trace.tracks[int(trace.events["track"][sync][0])].kind == TrackKind.HOST_THREAD
    full = _read(path, keep_cpu_ops=True, keep_python=True, rank=5)
    assert full.rank == 5 and len(full) == 4

    gz = tmp_path / "r.csv.gz"
    gz.write_bytes(gzip.compress(text.encode()))
    np.testing.assert_array_equal(_read(gz).events["start_ns"], trace.events["start_ns"])


def test_non_utf8_bytes_and_multiline_cells(tmp_path: Path):
    data = (HEADER + "\n0,0,1,,kernel,k\xe1,1,2\n").encode("latin-1")
    path = tmp_path / "latin.csv"
    path.write_bytes(data)
    assert _read(path).strings[0] == "k\ufffd"
    # A quoted cell spanning two lines is one record; the following record keeps its physical line number.
    multi = _write(tmp_path, "m.csv", HEADER + '\n0,0,1,,kernel,"two\nlines",1,2\n0,0,1,,kernel,k,5,1\n')
    assert "line 4: end_ns before start_ns" in _error(multi)
    ok = _write(tmp_path, "m2.csv", HEADER + '\n0,0,1,,kernel,"two\nlines",1,2\n0,0,1,,kernel,k,5,6\n')
    assert _read(ok).strings[0] == "two\nlines"


@pytest.mark.parametrize("multiline_at", [None, 700])
def test_rows_stay_exact_across_blocks(tmp_path: Path, monkeypatch, multiline_at: int | None):
    # Small blocks so that a few thousand rows cross many block boundaries (and a quoted two-line cell
    # switches the reader to its record-by-record path mid-file).
    monkeypatch.setattr(functrace._LineSource, "BLOCK_CHARS", 1000)
    monkeypatch.setattr(functrace, "CHUNK_ROWS", 97)
    n = 3000
    start = 1_732_530_000_000_000_000 + np.arange(n, dtype=np.int64) * 1000
    names = [f"k{i % 7}" for i in range(n)]
    if multiline_at is not None:
        names[multiline_at] = '"two\nlines"'
    lines = [HEADER] + [
        f"4,{i % 2},{i % 3},,kernel,{names[i]},{s},{s + 500}" for i, s in enumerate(start.tolist())
    ]
    lines.append("4,0,0,,kernel,last,10,5")
    path = _write(tmp_path, "big.csv", "\n".join(lines) + "\n")
    extra = 1 if multiline_at is not None else 0
    assert f"line {n + 2 + extra}: end_ns before start_ns" in _error(path)
    path = _write(tmp_path, "big.csv", "\n".join(lines[:-1]) + "\n")
    trace = _read(path)
    np.testing.assert_array_equal(trace.events["start_ns"], start)
    assert len(trace.tracks) == 6 and len(trace.strings) == 7 + extra


def test_copy_kind_spellings(tmp_path: Path):
    head = "rank,device,kind,name,start_ns,dur_ns,copy_kind\n"
    rows = "0,0,memcpy,a,1,1,HtoD\n0,0,memcpy,b,1,1,dtoh\n0,0,memcpy,c,1,1,PtoP\n0,0,memcpy,d,1,1,8\n0,0,kernel,k,1,1,\n"
    trace = _read(_write(tmp_path, "c.csv", head + rows))
    assert trace.events["copy_kind"].tolist() == [
        CopyKind.HTOD,
        CopyKind.DTOH,
        CopyKind.PTOP,
        CopyKind.DTOD,
        0,
    ]
    bad = _write(tmp_path, "bad.csv", head + "0,0,memcpy,a,1,1,HtoD\n0,0,memcpy,b,1,1,sideways\n")
    assert "line 3: copy_kind 'sideways' is not one of HtoD, DtoH, DtoD, PtoP, HtoH" in _error(bad)


def test_progress_reports_and_cancel_passes_through():
    seen: list[float] = []
    functrace.read(FIXTURES / "example.jsonl", IngestOptions(), lambda frac, msg: seen.append(frac))
    assert seen and seen[-1] == 1.0 and all(0.0 <= f <= 1.0 for f in seen)

    def cancel(frac: float, msg: str) -> None:
        raise Cancelled()

    with pytest.raises(Cancelled):
        functrace.read(FIXTURES / "example.csv", IngestOptions(), cancel)


def test_bom_crlf_and_case_insensitive_header(tmp_path: Path):
    text = "\ufeff# exported on Windows\r\nRANK,Device,Stream,TID,Kind,Name,Start_ns,End_ns\r\n1,0,2,,Kernel,k,10,20\r\n"
    trace = _read(_write(tmp_path, "w.csv", text))
    assert trace.rank == 1 and trace.strings == ["k"] and trace.events["end_ns"].tolist() == [20]
    assert trace.tracks[0].stream == 2
    jsonl = '\ufeff{"rank": 1, "device": 0, "kind": "kernel", "name": "k", "start_ns": 10, "end_ns": 20}\r\n'
    assert _read(_write(tmp_path, "w.jsonl", jsonl)).events["start_ns"].tolist() == [10]
