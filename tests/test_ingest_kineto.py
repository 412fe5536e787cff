"""Kineto JSON reader on the real traces in ../shared/data/kineto, and on broken inputs."""

from __future__ import annotations

import gzip
import json
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

import msgspec
import numpy as np
import pytest

from kat_gui.errors import KatInputError
from kat_gui.events import CopyKind, EventKind, TrackKind
from kat_gui.ingest import kineto, kineto_python, kineto_tables
from kat_gui.ingest.base import IngestOptions
from kat_gui.ingest.timeparse import decimal_us_to_ns

DLRM_KERNELS = [245, 310, 246, 315, 251, 245, 246, 246]


def _kineto_files(shared: Path) -> list[Path]:
    return sorted((shared / "kineto").rglob("*.json.gz"))


def _all_kineto_ids() -> list[str]:
    # Collection time: the shared_data fixture is not available yet, so resolve the same folder it uses.
    shared = Path(__file__).resolve().parents[1].parent / "shared" / "data"
    return [p.name for p in _kineto_files(shared)]


def _decimal_source(path: Path) -> dict:
    """An independent parse: stdlib json with every number as Decimal (exact)."""
    with gzip.open(path, "rt") as fh:
        return json.load(fh, parse_float=Decimal, parse_int=Decimal)


def _ns(us: Decimal) -> int:
    return int((us * 1000).to_integral_value(rounding=ROUND_HALF_UP))


@pytest.fixture(scope="module")
def dlrm(dlrm_dir: Path) -> list:
    return [kineto.read(p) for p in sorted(dlrm_dir.glob("*.json.gz"))]


def test_dlrm_ranks_and_counts(dlrm) -> None:
    assert [t.rank for t in dlrm] == list(range(8))
    for trace, n_kernels in zip(dlrm, DLRM_KERNELS, strict=True):
        trace.validate()
        kind = trace.events["kind"]
        assert (kind == EventKind.KERNEL).sum() == n_kernels
        assert (kind == EventKind.MEMCPY).sum() == 16
        names = np.array(trace.strings, dtype=object)[trace.events["name"]]
        nccl = [
            n
            for n, k in zip(names, kind, strict=True)
            if k == EventKind.KERNEL and n.startswith("ncclKernel")
        ]
        assert len(nccl) == 8
        assert trace.meta["time_base"] == "epoch_us"
        assert trace.meta["distributedInfo"]["world_size"] == 8
        # memcpy direction comes from the name; every DLRM copy has one
        mc = kind == EventKind.MEMCPY
        assert set(trace.events["copy_kind"][mc].tolist()) <= {CopyKind.HTOD, CopyKind.DTOH, CopyKind.DTOD}
        assert (trace.events["bytes"][mc] > 0).all()
        # GPU work on GPU-stream tracks, runtime calls on host threads
        tk = np.array([t.kind for t in trace.tracks])[trace.events["track"]]
        assert (tk[kind == EventKind.KERNEL] == TrackKind.GPU_STREAM).all()
        assert (tk[kind == EventKind.RUNTIME] == TrackKind.HOST_THREAD).all()


def test_dlrm_kernel_times_exact_to_the_ns(dlrm, dlrm_dir: Path) -> None:
    for trace, path in zip(dlrm, sorted(dlrm_dir.glob("*.json.gz")), strict=True):
        src = _decimal_source(path)
        want = sorted(
            (_ns(e["ts"]), _ns(e["ts"]) + _ns(e["dur"]), e["name"])
            for e in src["traceEvents"]
            if e.get("ph") == "X" and e.get("cat") in ("kernel", "Kernel")
        )
        k = trace.events["kind"] == EventKind.KERNEL
        got = sorted(
            zip(
                trace.events["start_ns"][k].tolist(),
                trace.events["end_ns"][k].tolist(),
                [trace.strings[i] for i in trace.events["name"][k]],
                strict=True,
            )
        )
        assert got == want
        # runtime launches keep their correlation id, which matches a kernel's
        rt = trace.events["kind"] == EventKind.RUNTIME
        assert np.intersect1d(trace.events["correlation"][k], trace.events["correlation"][rt]).size > 200


@pytest.mark.parametrize("name", _all_kineto_ids())
def test_every_real_kineto_file_ingests(shared_data: Path, name: str) -> None:
    path = next(p for p in _kineto_files(shared_data) if p.name == name)
    trace = kineto.read(path)
    trace.validate()
    assert len(trace) > 0
    assert (trace.events["kind"] == EventKind.KERNEL).sum() > 0
    assert trace.meta["skipped"]  # every real file has events we skip (cpu_op, flows...)
    # every arg text is JSON without per-instance ids
    for text in trace.args[:50]:
        obj = json.loads(text)
        assert "correlation" not in obj and "External id" not in obj
    assert len(set(trace.args)) == len(trace.args)  # interned
    assert trace.events["start_ns"].min() > 10**18  # absolute epoch ns (2001+)


def test_collective_args(shared_data: Path) -> None:
    trace = kineto.read(shared_data / "kineto/hta/nccl_parser_config__nccl_data.json.gz")
    ev = trace.events
    has_coll = ev["coll"] >= 0
    assert has_coll.sum() > 0
    colls = {trace.strings[i] for i in ev["coll"][has_coll]}
    assert "allreduce" in colls
    assert {trace.strings[i] for i in ev["pg"][has_coll]} == {"0"}
    assert (ev["group_size"][has_coll] == 2).all()
    assert (ev["msg_nelems"][has_coll] > 0).all()
    names = [trace.strings[i] for i in ev["name"][has_coll]]
    assert all(n.startswith("nccl") for n in names)
    assert trace.meta["distributedInfo"]["pg_config"][0]["pg_desc"] == "default_pg"


def test_seq_from_b200(shared_data: Path) -> None:
    path = shared_data / "kineto/tracelens/b200__eager_trace.json.gz"
    src = json.loads(gzip.decompress(path.read_bytes()))
    want = sorted(
        e["args"]["Seq"]
        for e in src["traceEvents"]
        if e.get("ph") == "X" and e.get("cat") == "kernel" and "Seq" in e.get("args", {})
    )
    trace = kineto.read(path)
    seq = trace.events["seq"]
    k = trace.events["kind"] == EventKind.KERNEL
    assert sorted(seq[k & (seq >= 0)].tolist()) == want


def test_base_time_nanoseconds(shared_data: Path) -> None:
    path = shared_data / "kineto/hta/nccl_parser_config__nccl_data.json.gz"
    src = _decimal_source(path)
    base = int(src["baseTimeNanoseconds"])
    want = sorted(
        base + _ns(e["ts"]) for e in src["traceEvents"] if e.get("ph") == "X" and e.get("cat") == "gpu_memcpy"
    )
    trace = kineto.read(path)
    assert trace.meta["time_base"] == "relative+base"
    mc = trace.events["kind"] == EventKind.MEMCPY
    assert sorted(trace.events["start_ns"][mc].tolist()) == want


def test_python_functions_skipped_and_counted_or_kept(shared_data: Path) -> None:
    path = (
        shared_data
        / "kineto/tracelens/inference__sglang_prefilldecode__sglang_Qwen3-8B_prefilldecode.json.gz"
    )
    src = json.loads(gzip.decompress(path.read_bytes()))
    n_py = sum(1 for e in src["traceEvents"] if e.get("ph") == "X" and e.get("cat") == "python_function")
    default = kineto.read(path)
    assert default.meta["skipped"]["python_function"] == n_py
    assert not (default.events["kind"] == EventKind.PYTHON).any()
    kept = kineto.read(path, IngestOptions(keep_python=True, keep_cpu_ops=True))
    assert (kept.events["kind"] == EventKind.PYTHON).sum() == n_py
    assert "python_function" not in kept.meta["skipped"]
    assert (kept.events["kind"] == EventKind.CPU_OP).sum() == default.meta["skipped"]["cpu_op"]
    kept.validate()


def test_string_pids_and_metadata(tmp_path: Path) -> None:
    doc = {
        "schemaVersion": 1,
        "baseTimeNanoseconds": 1_700_000_000_000_000_000,
        "traceEvents": [
            {"ph": "M", "name": "thread_name", "pid": 11, "tid": 12, "args": {"name": "main"}},
            {"ph": "X", "cat": "kernel", "name": "k", "pid": "GPU 1", "tid": "stream 7", "ts": 1.5, "dur": 2.25},
            {"ph": "X", "cat": "cuda_runtime", "name": "cudaLaunchKernel", "pid": "Spans", "tid": 12, "ts": 1,
             "dur": 0.5, "args": {"correlation": 5, "cbid": 211}},
        ],
    }  # fmt: skip
    path = tmp_path / "t.json"
    path.write_text(json.dumps(doc))
    trace = kineto.read(path)
    trace.validate()
    assert trace.meta["thread_names"] == {"11/12": "main"}
    gpu = next(t for t in trace.tracks if t.kind == TrackKind.GPU_STREAM)
    assert (gpu.device, gpu.stream) == (1, 7)
    host = next(t for t in trace.tracks if t.kind == TrackKind.HOST_THREAD)
    assert host.pid < -1 and trace.meta["pid_tid_text"][str(host.pid)] == "Spans"
    assert sorted(trace.events["start_ns"].tolist()) == [1_700_000_000_000_001_000, 1_700_000_000_000_001_500]
    assert sorted(trace.events["end_ns"].tolist()) == [1_700_000_000_000_001_500, 1_700_000_000_000_003_750]
    assert trace.args == ['{"cbid":211}']


def test_epoch_us_with_decimals_exact(tmp_path: Path) -> None:
    ts = ["1694128201428473.125", "1694128201428473.999", "1694128201428474.001"]
    events = ",".join(
        f'{{"ph":"X","cat":"kernel","name":"k","pid":0,"tid":7,"ts":{t},"dur":1.001}}' for t in ts
    )
    path = tmp_path / "x.json"
    path.write_text('{"traceEvents":[' + events + "]}")
    trace = kineto.read(path)
    assert trace.events["start_ns"].tolist() == [
        1694128201428473125,
        1694128201428473999,
        1694128201428474001,
    ]
    assert (trace.events["end_ns"] - trace.events["start_ns"]).tolist() == [1001] * 3


def test_timeparse_matches_decimal() -> None:
    texts = [b"0", b"12.", b"5.0", b"0.0005", b"0.0004999", b"-3.5", b"1e3", b'"42.1"', b"4458676522690.655",
             b"1694128201428473", b"7.12345", b"2636.669"]  # fmt: skip
    want = [_ns(Decimal(t.strip(b'"').decode())) for t in texts]
    assert decimal_us_to_ns(texts).tolist() == want
    with pytest.raises(ValueError):
        decimal_us_to_ns([b'"abc"'])


def test_piece_cut_inside_event_falls_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Force tiny pieces and a "},{" inside args: the cut is proven wrong and the exact split takes over.
    monkeypatch.setattr(kineto_python, "PIECE_BYTES", 10)
    evs = [
        {"ph": "X", "cat": "kernel", "name": f"k{i}", "pid": 0, "tid": 7, "ts": 10 + i, "dur": 1,
         "args": {"nested": [{"a": i}, {"b": 2}], "correlation": i}}
        for i in range(50)
    ]  # fmt: skip
    path = tmp_path / "n.json"
    path.write_bytes(msgspec.json.encode({"traceEvents": evs}))
    trace = kineto.read(path)
    assert sorted(trace.events["correlation"].tolist()) == list(range(50))
    assert sorted(trace.strings) == sorted(f"k{i}" for i in range(50))


BAD_INPUTS = {
    "empty.json": b"",
    "blank.json": b"   \n",
    "garbage.bin": bytes(range(256)) * 4,
    "invalid.json": b'{"traceEvents": [{"ph": "X", "cat": "kernel" "name": "k"}]}',
    "no_events_key.json": b'{"schemaVersion": 1, "deviceProperties": []}',
    "not_object.json": b"[1, 2, 3]",
    "empty_events.json": b'{"traceEvents": []}',
    "only_python.json": b'{"traceEvents": [{"ph": "X", "cat": "python_function", "name": "f", "pid": 1, '
    b'"tid": 1, "ts": 1, "dur": 1}]}',
    "bad_ts.json": b'{"traceEvents": [{"ph": "X", "cat": "kernel", "name": "k", "pid": 0, "tid": 7, '
    b'"ts": "soon", "dur": 1}]}',
}


@pytest.mark.parametrize("name", sorted(BAD_INPUTS))
def test_bad_inputs_raise_kat_input_error(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    path.write_bytes(BAD_INPUTS[name])
    with pytest.raises(KatInputError) as info:
        kineto.read(path)
    msg = str(info.value)
    assert str(path) in msg and "\n" not in msg
    if name == "invalid.json":
        assert "near byte" in msg
    if name in ("empty_events.json", "only_python.json"):
        assert "no kernel, memcpy or runtime events" in msg


def test_truncated_gzip(tmp_path: Path, dlrm_dir: Path) -> None:
    data = next(iter(sorted(dlrm_dir.glob("*.json.gz")))).read_bytes()
    path = tmp_path / "cut.json.gz"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(KatInputError, match="gzip"):
        kineto.read(path)
    # a complete gzip of a truncated JSON text
    text = gzip.decompress(data)
    path2 = tmp_path / "cut_text.json.gz"
    path2.write_bytes(gzip.compress(text[: len(text) // 2]))
    with pytest.raises(KatInputError, match="truncated"):
        kineto.read(path2)


def _expected_rows(events: list[dict], kept_cats: set[str]) -> list[tuple[int, dict | None]]:
    """(correlation, args minus per-instance ids or None) of every kept event, in file order."""
    rows = []
    for e in events:
        if e.get("ph") != "X" or e.get("cat") not in kept_cats:
            continue
        args = dict(e.get("args", {}))
        c = args.get("correlation")
        corr = c if type(c) is int else -1
        for key in ("correlation", "External id", "Seq", "device", "stream", "Ev Idx"):
            args.pop(key, None)
        rows.append((corr, args or None))
    return rows


def _got_rows(trace) -> list[tuple[int, dict | None]]:
    return [
        (c, json.loads(trace.args[a]) if a >= 0 else None)
        for c, a in zip(trace.events["correlation"].tolist(), trace.events["args"].tolist(), strict=True)
    ]


def test_args_and_correlation_per_event_match_json(dlrm_dir: Path) -> None:
    path = sorted(dlrm_dir.glob("*.json.gz"))[0]
    src = json.loads(gzip.decompress(path.read_bytes()))
    want = _expected_rows(src["traceEvents"], set(kineto_tables.CAT_KIND))
    assert _got_rows(kineto.read(path)) == want


def test_args_odd_shapes_stay_exact(tmp_path: Path) -> None:
    # Shapes the byte scan must not take at face value: nested objects, ids that are not plain integers,
    # a space before the colon, a key inside a string, and ids the scan strips from otherwise equal args.
    args_texts = [
        '{"correlation": 5, "grid": [1, 1, 1]}',
        '{"correlation": 6, "grid": [1, 1, 1]}',
        '{"grid": [1, 1, 1], "correlation": 7}',
        '{"correlation": 8.5, "grid": [2, 1, 1]}',
        '{"correlation": "9", "grid": [1, 1, 1]}',
        '{"correlation" : 10, "grid": [1, 1, 1]}',
        '{"inner": {"correlation": 11}, "External id": 3}',
        '{"inner": {"correlation": 12}, "External id": 4}',
        '{"note": "a \\"correlation\\": 13", "correlation": 14}',
        '{"note": "x", "device":1,"stream":7,"correlation":-15}',
        '{"correlation": 123456789012345678, "queued": 0}',
        '{"External id": 1}',
        "{}",
    ]
    events = ",".join(
        f'{{"ph": "X", "cat": "kernel", "name": "k", "pid": 0, "tid": 7, "ts": {i}, "dur": 1, "args": {a}}}'
        for i, a in enumerate(args_texts)
    )
    path = tmp_path / "odd.json"
    path.write_text('{"traceEvents": [' + events + "]}")
    src = json.loads(path.read_text())
    trace = kineto.read(path)
    assert _got_rows(trace) == _expected_rows(src["traceEvents"], {"kernel"})
    assert len(set(trace.args)) == len(trace.args)


def _one_kernel_doc(**header) -> dict:
    return {
        **header,
        "traceEvents": [
            {"ph": "M", "name": "process_name", "pid": 42, "tid": 0, "args": {"name": "node-a7:42"}},
            {"ph": "M", "name": "process_name", "pid": 43, "tid": 0, "args": {"name": "pyper:trainer:0:1"}},
            {"ph": "X", "cat": "kernel", "name": "k", "pid": 0, "tid": 7, "ts": 1, "dur": 1},
        ],
    }


@pytest.mark.parametrize(
    ("header", "host"),
    [
        ({"hostname": "gpu-node-3"}, "gpu-node-3"),
        ({"distributedInfo": {"rank": 0, "host_name": "gpu-node-4"}}, "gpu-node-4"),
        ({"metadata": {"system": {"env": {"HOSTNAME": "pod-17"}}}}, "pod-17"),
        ({}, "node-a7"),  # from the process name "<host>:<pid>" of pid 42
    ],
)
def test_hostname_in_meta(tmp_path: Path, header: dict, host: str) -> None:
    path = tmp_path / "h.json"
    path.write_text(json.dumps(_one_kernel_doc(**header)))
    assert kineto.read(path).meta["hostname"] == host


def test_no_hostname_when_the_file_has_none(tmp_path: Path, dlrm_dir: Path) -> None:
    doc = _one_kernel_doc()
    doc["traceEvents"] = doc["traceEvents"][1:]  # "pyper:trainer:0:1" is not "<host>:<its pid>"
    path = tmp_path / "h.json"
    path.write_text(json.dumps(doc))
    assert "hostname" not in kineto.read(path).meta


def test_hostname_of_a_real_trace(shared_data: Path) -> None:
    trace = kineto.read(shared_data / "kineto/tracelens/h100__Qwen_Qwen1.5-0.5B-Chat__1016005.json.gz")
    assert trace.meta["hostname"] == "ab5ece529443"


def test_gunzip_fast_library_and_stdlib_agree(tmp_path: Path, dlrm_dir: Path, monkeypatch) -> None:
    """The fast inflate (isal / zlib-ng when installed) gives the stdlib's bytes, and every gzip it does not
    finish cleanly (several members, truncated, bad CRC, trailing garbage) gives the stdlib's error text."""
    from kat_gui.ingest import kineto_header

    good = next(iter(sorted(dlrm_dir.glob("*.json.gz")))).read_bytes()
    text = gzip.decompress(good)
    crc_bad = bytearray(good)
    crc_bad[-8] ^= 0xFF  # the CRC32 of the trailer
    cases = {
        "good": good,
        "two members": gzip.compress(text[:1000]) + gzip.compress(text[1000:]),
        "truncated": good[: len(good) // 2],
        "bad crc": bytes(crc_bad),
        "trailing garbage": good + b"garbage!",
    }

    def outcome(data: bytes, backend: str):
        if backend == "stdlib":
            monkeypatch.setenv("KAT_GZIP", "stdlib")
        else:
            monkeypatch.delenv("KAT_GZIP", raising=False)
        path = tmp_path / "t.json.gz"
        path.write_bytes(data)
        try:
            return kineto_header.load_bytes(path)
        except KatInputError as exc:
            return str(exc)

    for name, data in cases.items():
        fast, std = outcome(data, "fast"), outcome(data, "stdlib")
        assert fast == std, name
        assert isinstance(fast, bytes) == (name in ("good", "two members")), (name, fast)
    assert outcome(cases["two members"], "fast") == text


def test_gzip_backend_is_isal_when_installed() -> None:
    from kat_gui.ingest import kineto_header

    try:
        import isal  # noqa: F401
    except ImportError:
        pytest.skip("isal is not installed")
    assert kineto_header.GZIP_BACKEND == "isal"
