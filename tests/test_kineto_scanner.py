"""The compiled Kineto scanner (kat_gui/ingest/_kscan.c) gives exactly the msgspec path's RankTrace, or gives up.

Every comparison runs both paths on the same file: the Python path (``KAT_KINETO_SCANNER=0``) is the reference.
Real traces from ../shared/data/kineto, synthetic files from benchmarks/synth_kineto.py, hand-made edge cases
and generated events (hypothesis).
"""

from __future__ import annotations

import gzip
import importlib.util
import json
import mmap
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kat_gui.errors import KatInputError
from kat_gui.ingest import kineto, kineto_header, kineto_python, kineto_scan
from kat_gui.ingest.base import IngestOptions, RankTrace

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
_kscan = kineto_scan.kscan
needs_scanner = pytest.mark.skipif(_kscan is None, reason="the compiled scanner is not built")


def _real_files() -> list[Path]:
    return sorted((SHARED / "kineto").rglob("*.json.gz"))


def _synth_module():
    spec = importlib.util.spec_from_file_location("synth_kineto", ROOT / "benchmarks" / "synth_kineto.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _python(path: Path, options: IngestOptions | None = None) -> RankTrace:
    return kineto_python.read_python(path, kineto_header.load_bytes(path), options or IngestOptions(), None)


def _scanned(path: Path, options: IngestOptions | None = None) -> RankTrace:
    """The scanner path alone (no fallback): any give-up is an error here."""
    trace = kineto_scan.read_scanned(
        path, kineto_header.load_bytes(path, mapped=True), options or IngestOptions(), None
    )
    assert trace is not None, "the scanner gave up"
    return trace


def _assert_same(a: RankTrace, b: RankTrace) -> None:
    assert (a.rank, a.source, a.format) == (b.rank, b.source, b.format)
    assert a.tracks == b.tracks
    assert a.strings == b.strings
    assert a.args == b.args
    assert a.meta == b.meta
    assert list(a.meta) == list(b.meta)
    for key in ("skipped", "kept"):  # same first-seen order, not only the same counts
        assert list(a.meta[key].items()) == list(b.meta[key].items())
    assert list(a.events) == list(b.events)
    for col, arr in a.events.items():
        other = b.events[col]
        assert arr.dtype == other.dtype, col
        assert np.array_equal(arr, other), (col, np.flatnonzero(arr != other)[:5])


def _outcome(path: Path, scanner: bool, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("KAT_KINETO_SCANNER", "1" if scanner else "0")
    try:
        return kineto.read(path)
    except Exception as exc:  # compared by type and text: the scanner must never change an error
        return (type(exc), str(exc))


def _check(path: Path, monkeypatch: pytest.MonkeyPatch) -> RankTrace | tuple:
    """read() with and without the scanner gives the same trace or the same error; returns it."""
    ref = _outcome(path, False, monkeypatch)
    got = _outcome(path, True, monkeypatch)
    if isinstance(ref, tuple):
        assert got == ref
    else:
        assert not isinstance(got, tuple), got
        _assert_same(ref, got)
    return ref


def _takes(path: Path) -> bool:
    """True when the scanner path alone produces a trace for this file."""
    try:
        return (
            kineto_scan.read_scanned(path, kineto_header.load_bytes(path, mapped=True), IngestOptions(), None)
            is not None
        )
    except (_kscan.Unsupported, KatInputError, ValueError):
        return False


def _write(tmp_path: Path, doc: dict | bytes, name: str = "t.json") -> Path:
    path = tmp_path / name
    path.write_bytes(doc if isinstance(doc, bytes) else json.dumps(doc).encode())
    return path


def test_scanner_is_built_where_a_compiler_is() -> None:
    if shutil.which("gcc") is None and shutil.which("cc") is None:
        pytest.skip("no C compiler on this machine")
    assert _kscan is not None, (
        "kat_gui.ingest._kscan did not build: run `pip install --no-build-isolation -e .`"
    )
    assert kineto.scanner_enabled()


def test_env_switch(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KAT_KINETO_SCANNER", "0")
    assert not kineto.scanner_enabled()
    monkeypatch.setenv("KAT_KINETO_SCANNER", "1")
    assert kineto.scanner_enabled() == (_kscan is not None)


@needs_scanner
@pytest.mark.parametrize("name", [p.name for p in _real_files()])
def test_real_files_same_as_python_path(shared_data: Path, name: str) -> None:
    path = next(p for p in (shared_data / "kineto").rglob(name))
    _assert_same(_python(path), _scanned(path))


@needs_scanner
@pytest.mark.parametrize(
    "name",
    [
        "inference__sglang_prefilldecode__sglang_Qwen3-8B_prefilldecode.json.gz",
        "nccl_parser_config__nccl_data.json.gz",
    ],
)
def test_real_files_all_categories_small_pieces(
    shared_data: Path, name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Small pieces: the per-piece order of string, args and track ids must still match.
    monkeypatch.setattr(kineto_python, "PIECE_BYTES", 20_000)
    path = next(p for p in (shared_data / "kineto").rglob(name))
    options = IngestOptions(keep_python=True, keep_cpu_ops=True)
    _assert_same(_python(path, options), _scanned(path, options))


@needs_scanner
@pytest.mark.parametrize("kernels", [40, 3000])
def test_synthetic_files_same_as_python_path(tmp_path: Path, kernels: int) -> None:
    synth = _synth_module()
    path = tmp_path / "rank-1.pt.trace.json"
    synth.write_rank(path, rank=1, world=4, kernels=kernels, seed=3)
    assert (path.stat().st_size >= 65536) == (kernels > 40)  # mapped and read paths both covered
    a, b = _python(path), _scanned(path)
    _assert_same(a, b)
    assert (b.events["kind"] == 0).sum() == kernels
    gz = tmp_path / "rank-1.pt.trace.json.gz"
    gz.write_bytes(gzip.compress(path.read_bytes(), compresslevel=1))
    _assert_same(_python(gz), _scanned(gz))


def _ev(**kw) -> dict:
    ev = {"ph": "X", "cat": "kernel", "name": "k", "pid": 0, "tid": 7, "ts": 1000.5, "dur": 2.25}
    ev.update(kw)
    return {k: v for k, v in ev.items() if v is not _DROP}


_DROP = object()
_BASE_EVENTS = [
    {"ph": "X", "cat": "cuda_runtime", "name": "cudaLaunchKernel", "pid": 10, "tid": 10, "ts": 999.0,
     "dur": 1.0, "args": {"External id": 1, "cbid": 211, "correlation": 1}},
]  # fmt: skip

EDGE_EVENTS = {
    "escaped_names": [
        _ev(name='a "quoted" \\ back/slash\ttab', args={"correlation": 1}),
        _ev(name="caf\u00e9 \u2603 \U0001f600", args={"correlation": 2}),  # raw UTF-8 and a surrogate pair
    ],
    "string_pids": [
        _ev(pid="GPU 1", tid="stream 7", args={"correlation": 1}),
        _ev(pid="Spans", tid="Spans", args={"correlation": 2}),
        _ev(pid=" 12 ", tid=3, args={"correlation": 3}),
        _ev(cat="cuda_runtime", pid="Traces", tid="Host", args={"correlation": 4}),
    ],
    "string_pid_int_reads_differently": [_ev(pid="-5", args={"correlation": 1})],
    "cat_case": [_ev(cat="Kernel", args={"correlation": 1}), _ev(cat="kernel", args={"correlation": 2})],
    "missing_fields": [
        _ev(dur=_DROP, args={"correlation": 1}),
        _ev(args=_DROP),
        _ev(ts=_DROP, name=_DROP, pid=_DROP, tid=_DROP),
        _ev(ph=_DROP, cat=_DROP),
    ],
    "nested_args": [
        _ev(
            args={
                "correlation": 5,
                "grid": [1, 2, 3],
                "inner": {"correlation": 9, "x": [{"a": 1}, {"b": "}, {"}]},
            }
        ),
        _ev(args={"inner": {"correlation": 9}}),
        _ev(args={"correlation": 6, "External id": 6, "device": 0, "stream": 7, "Ev Idx": 3, "note": "same"}),
        _ev(args={"correlation": 7, "External id": 7, "device": 1, "stream": 8, "Ev Idx": 4, "note": "same"}),
    ],
    "odd_correlations": [
        _ev(args={"correlation": 1.5}),
        _ev(args={"correlation": "12"}),
        _ev(args={"correlation": None}),
        _ev(args={"correlation": True}),
        _ev(args={"correlation": -3}),
        _ev(args={"correlation": 123456789012345678}),
    ],
    "huge_correlation": [_ev(args={"correlation": 2**70})],
    "huge_pid": [_ev(pid=2**63)],
    "times": [
        _ev(ts=9123456789012345, dur=0.0005, args={"correlation": 1}),  # 16 digits from 9: slow path
        _ev(ts="1694128201428473.125", dur="3.5", args={"correlation": 2}),  # quoted numbers
        _ev(ts=-5.25, dur=1e-3, args={"correlation": 3}),
        _ev(ts=1.0e3, dur=0, args={"correlation": 4}),
        _ev(ts=8999999999999999.9995, dur=0.0004999, args={"correlation": 5}),
        _ev(ts=0.0015, dur=-2, args={"correlation": 6}),
    ],
    "inf_dur": [_ev(dur="inf")],
    "bad_ts": [_ev(ts="soon")],
    "null_ts": [_ev(ts=None)],
    "typed_kinds": [
        _ev(
            cat="gpu_memcpy", name="Memcpy HtoD (Pageable -> Device)", args={"bytes": 4096, "correlation": 3}
        ),
        _ev(cat="gpu_memset", name="Memset (Device)", args={"bytes": "64", "device": 0, "stream": 7}),
        _ev(cat="cuda_sync", name="cudaStreamSynchronize", pid=10, tid=10, args={"device": 0, "stream": 7}),
        _ev(cat="cuda_sync", name="cudaDeviceSynchronize", pid=10, tid=10, args={"correlation": 9}),
        _ev(
            name="ncclDevKernel_AllReduce",
            args={
                "Collective name": "allreduce",
                "In msg nelems": 1024,
                "Group size": 8,
                "Process Group Name": "0",
                "Seq": 3,
            },
        ),
        _ev(name="ncclDevKernel_Send", args={"Seq": "7", "Process Group Description": "default_pg"}),
    ],  # fmt: skip
    "non_object_args_kept": [_ev(args=[1, 2])],
    "non_object_args_skipped": [_ev(cat="python_function", args="x"), _ev(args={"correlation": 1})],
    "other_phases": [
        {"ph": "M", "name": "process_name", "pid": 0, "args": {"name": "GPU 0"}},
        {"ph": "M", "name": "thread_name", "pid": 0, "tid": 7, "args": {"name": "stream 7"}},
        {"ph": "i", "cat": "kernel", "name": "instant", "pid": 0, "tid": 7, "ts": 5},
        {"ph": "s", "id": 1, "cat": "ac2g", "name": "ac2g", "pid": 0, "tid": 7, "ts": 5},
        {"ph": "X", "cat": "cpu_op", "name": "aten::mm", "pid": 10, "tid": 10, "ts": 5, "dur": 1},
        _ev(args={"correlation": 1}),
    ],
    "escaped_args_key": [_ev(args={"correlatio\u006e": 1})],  # json.dumps writes it plain; see below
}


@pytest.mark.parametrize("case", sorted(EDGE_EVENTS))
def test_edge_events(tmp_path: Path, case: str, monkeypatch: pytest.MonkeyPatch) -> None:
    doc = {"schemaVersion": 1, "traceEvents": _BASE_EVENTS + EDGE_EVENTS[case], "traceName": "edge"}
    for variant, text in {
        "compact": json.dumps(doc, separators=(",", ":")),
        "spaced": json.dumps(doc),
        "indented": json.dumps(doc, indent="\t"),
        "crlf": json.dumps(doc, indent=1).replace("\n", "\r\n"),
        "ascii": json.dumps(doc, ensure_ascii=True),
        "utf8": json.dumps(doc, ensure_ascii=False),
    }.items():
        path = _write(tmp_path, text.encode(), f"{case}-{variant}.json")
        _check(path, monkeypatch)
    if case in ("escaped_names", "string_pids", "cat_case", "missing_fields", "nested_args", "times"):
        assert _takes(path), "the scanner should read this case itself"
    if case in ("string_pid_int_reads_differently", "huge_correlation", "huge_pid", "non_object_args_kept"):
        assert not _takes(path), "this case needs the Python path"


RAW_CASES = {
    # text, does the scanner take it itself
    "key_order": (b'{"traceEvents": [{"args": {"correlation": 4, "b": 1}, "dur": 2, "ts": 1.5, "tid": 7, '
                  b'"pid": 0, "name": "k", "cat": "kernel", "ph": "X", "extra": {"x": [null, true, false]}}]}', True),
    "escaped_args_key": (b'{"traceEvents": [{"ph": "X", "cat": "kernel", "name": "k", "pid": 0, "tid": 7, '
                         b'"ts": 1, "dur": 2, "args": {"correlatio\\u006e": 4}}]}', False),
    "escaped_cat": (b'{"traceEvents": [{"ph": "\\u0058", "cat": "k\\u0065rnel", "name": "k\\"\\u00e9\\ud83d\\ude00",'
                    b' "pid": 0, "tid": 7, "ts": 1, "dur": 2, "args": {"correlation": 4}}]}', True),
    "duplicate_event_key": (b'{"traceEvents": [{"ph": "X", "cat": "kernel", "name": "a", "name": "b", '
                            b'"pid": 0, "tid": 7, "ts": 1, "dur": 2}]}', False),
    "duplicate_correlation": (b'{"traceEvents": [{"ph": "X", "cat": "kernel", "name": "a", "pid": 0, "tid": 7, '
                              b'"ts": 1, "dur": 2, "args": {"correlation": 1, "correlation": 2}}]}', False),
    "duplicate_top_key": (b'{"traceName": "a", "traceEvents": [{"ph": "X", "cat": "kernel", "name": "a", '
                          b'"pid": 0, "tid": 7, "ts": 1, "dur": 2}], "traceName": "b"}', False),
    "events_before_header": (b'{"traceEvents": [{"ph": "X", "cat": "kernel", "name": "a", "pid": 0, "tid": 7, '
                             b'"ts": 1, "dur": 2}], "baseTimeNanoseconds": 1700000000000000000, '
                             b'"distributedInfo": {"rank": 3, "hostname": "node7"}}', True),
    "base_not_int": (b'{"baseTimeNanoseconds": "x", "traceEvents": [{"ph": "X", "cat": "kernel", "name": "a", '
                     b'"pid": 0, "tid": 7, "ts": 1, "dur": 2}]}', False),
    "truncated": (b'{"traceEvents": [{"ph": "X", "cat": "kernel", "name": "a", "pid": 0, "tid": 7, "ts": 1, '
                  b'"dur": 2}, {"ph": "X", "cat": "kernel", "na', False),
    "truncated_in_string": (b'{"traceEvents": [{"ph": "X", "cat": "kernel", "name": "a', False),
    "trailing_garbage": (b'{"traceEvents": [{"ph": "X", "cat": "kernel", "name": "a", "pid": 0, "tid": 7, '
                         b'"ts": 1, "dur": 2}]} x', False),
    "trailing_comma": (b'{"traceEvents": [{"ph": "X", "cat": "kernel", "name": "a", "pid": 0, "tid": 7, '
                       b'"ts": 1, "dur": 2},]}', False),
    "bom": (b'\xef\xbb\xbf{"traceEvents": [{"ph": "X", "cat": "kernel", "name": "a", "ts": 1}]}', False),
    "lone_surrogate": (b'{"traceEvents": [{"ph": "X", "cat": "kernel", "name": "\\ud800", "ts": 1}]}', False),
    "lone_low_surrogate": (b'{"traceEvents": [{"ph": "X", "cat": "kernel", "name": "\\udc00x", "ts": 1}]}', False),
    "bad_utf8_skipped_name": (b'{"traceEvents": [{"ph": "X", "cat": "python_function", "name": "\xff", "ts": 1}, '
                              b'{"ph": "X", "cat": "kernel", "name": "k", "ts": 1}]}', False),
    "control_char": (b'{"traceEvents": [{"ph": "X", "cat": "kernel", "name": "a\x01", "ts": 1}]}', False),
    "not_an_event": (b'{"traceEvents": [{"ph": "X", "cat": "kernel", "name": "a", "ts": 1}, 5]}', False),
    "events_not_list": (b'{"traceEvents": {"a": 1}}', False),
    "empty_events": (b'{"traceEvents": []}', False),
    "pid_float": (b'{"traceEvents": [{"ph": "X", "cat": "kernel", "name": "a", "pid": 1.0, "ts": 1}]}', False),
    "name_null": (b'{"traceEvents": [{"ph": "X", "cat": "kernel", "name": null, "ts": 1}]}', False),
    "leading_zero": (b'{"traceEvents": [{"ph": "X", "cat": "kernel", "name": "a", "ts": 01}]}', False),
    "exponent_ts": (b'{"traceEvents": [{"ph": "X", "cat": "kernel", "name": "a", "ts": 1.5E+3, "dur": 2e0}]}', True),
    "deep_nesting": (b'{"traceEvents": [{"ph": "X", "cat": "kernel", "name": "a", "ts": 1, "args": {"x": '
                     + b"[" * 100 + b"]" * 100 + b"}}]}", False),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(RAW_CASES))
def test_raw_documents(tmp_path: Path, case: str, monkeypatch: pytest.MonkeyPatch) -> None:
    text, scanner_takes = RAW_CASES[case]
    path = _write(tmp_path, text)
    _check(path, monkeypatch)
    assert _takes(path) == scanner_takes
    # the same text padded past 64 KiB goes through the mapped path (a whitespace run before the close)
    big = text if not text.rstrip().endswith(b"}") else text.rstrip()[:-1] + b" " * 70000 + b"}"
    _check(_write(tmp_path, big, "big.json"), monkeypatch)


def test_bad_input_messages_unchanged(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for case in ("truncated", "trailing_garbage", "empty_events", "bom", "not_an_event", "base_not_int"):
        ref = _check(_write(tmp_path, RAW_CASES[case][0], f"{case}.json"), monkeypatch)
        assert isinstance(ref, tuple) and ref[0] is KatInputError, (case, ref)
    ref = _check(_write(tmp_path, {"traceEvents": [_ev(dur="inf")]}), monkeypatch)
    assert ref[0] is KatInputError and "bad event time" in ref[1]


@needs_scanner
def test_piece_cut_inside_event_gives_up(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # With tiny pieces the Python path's cut pattern "},{" falls inside nested args: it splits exactly
    # instead, so the scanner must give up rather than cut elsewhere.
    monkeypatch.setattr(kineto_python, "PIECE_BYTES", 10)
    evs = [_ev(name=f"k{i}", args={"nested": [{"a": i}, {"b": 2}], "correlation": i}) for i in range(50)]
    path = _write(tmp_path, {"traceEvents": evs})
    with pytest.raises(_kscan.Unsupported, match="piece"):
        _scanned(path)
    ref = _check(path, monkeypatch)
    assert sorted(ref.events["correlation"].tolist()) == list(range(50))
    # no pattern inside events: tiny pieces are taken
    evs = [_ev(name=f"k{i % 7}", tid=i % 3, args={"correlation": i, "grid": [i, 1, 1]}) for i in range(50)]
    path = _write(tmp_path, {"traceEvents": evs}, "flat.json")
    _assert_same(_python(path), _scanned(path))


@needs_scanner
def test_progress_and_cancel(tmp_path: Path) -> None:
    from kat_gui.errors import Cancelled

    synth = _synth_module()
    path = tmp_path / "r.json"
    synth.write_rank(path, rank=0, world=1, kernels=3000, seed=1)
    seen: list[float] = []
    kineto.read(path, progress=lambda f, msg: seen.append(f))
    assert seen and all(0 <= f <= 1 for f in seen)

    def cancel(_f: float, _msg: str) -> None:
        raise Cancelled()

    old = kineto_python.PIECE_BYTES
    try:
        kineto_python.PIECE_BYTES = 100_000
        with pytest.raises(Cancelled):
            kineto.read(path, progress=cancel)
    finally:
        kineto_python.PIECE_BYTES = old


# ----------------------------------------------------------------------------------------- generated events

_names = st.sampled_from(
    ["k", "gemm<1, 2>", 'q"uote', "back\\slash", "caf\u00e9", "\U0001f600x", "", "Memcpy HtoD"]
)
_ints = st.integers(min_value=-(2**40), max_value=2**40)
_scalars = st.one_of(_ints, st.floats(allow_nan=False, allow_infinity=False, width=32), st.booleans(), st.none(),
                     _names)  # fmt: skip
_times = st.one_of(
    st.integers(min_value=0, max_value=10**16),
    st.decimals(min_value=0, max_value=10**15, places=4, allow_nan=False, allow_infinity=False).map(float),
    st.builds(lambda a, b: f"{a}.{b}", st.integers(0, 10**12), st.integers(0, 10**6)).map(float),
)
_args = st.dictionaries(
    st.sampled_from(["correlation", "External id", "Seq", "device", "stream", "Ev Idx", "bytes", "cbid",
                     "Collective name", "grid", "x", "Group size"]),
    st.one_of(_scalars, st.lists(_ints, max_size=3), st.dictionaries(st.sampled_from(["a", "b"]), _ints, max_size=2)),
    max_size=6,
)  # fmt: skip
_event = st.fixed_dictionaries(
    {},
    optional={
        "ph": st.sampled_from(["X", "X", "X", "M", "i", "s"]),
        "cat": st.sampled_from(["kernel", "Kernel", "cuda_runtime", "gpu_memcpy", "gpu_memset", "cuda_sync",
                                "user_annotation", "gpu_user_annotation", "python_function", "cpu_op", "ac2g", ""]),
        "name": _names,
        "pid": st.one_of(st.integers(0, 5), st.sampled_from(["GPU 1", "Spans", "7"])),
        "tid": st.one_of(st.integers(0, 5), st.sampled_from(["stream 7", "Host"])),
        "ts": _times,
        "dur": _times,
        "args": _args,
        "id": _ints,
    },
)  # fmt: skip


@needs_scanner
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    events=st.lists(_event, min_size=1, max_size=25),
    indent=st.sampled_from([None, 1, "\t"]),
    ascii_only=st.booleans(),
    keep=st.booleans(),
)
def test_generated_events_same_as_python_path(events, indent, ascii_only, keep) -> None:
    doc = {"traceEvents": [{"ph": "X", "cat": "kernel", "name": "first", "ts": 1, "dur": 1}, *events]}
    text = json.dumps(doc, indent=indent, ensure_ascii=ascii_only).encode()
    options = IngestOptions(keep_python=keep, keep_cpu_ops=keep)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "g.json"
        path.write_bytes(text)
        try:
            ref = _python(path, options)
        except Exception as exc:  # the scanner path must not produce a trace where the reference fails
            with pytest.raises(Exception):  # noqa: B017
                _scanned(path, options)
            assert isinstance(exc, (KatInputError, OverflowError)), exc
            return
        try:
            got = kineto_scan.read_scanned(path, kineto_header.load_bytes(path, mapped=True), options, None)
        except _kscan.Unsupported:
            return  # given up: read() takes the Python path
        assert got is not None
        _assert_same(ref, got)


def test_mapping_rule(tmp_path: Path) -> None:
    # Plain files of 64 KiB and more are mapped (no copy); small, gzip and page-multiple files are read.
    body = b'{"traceEvents": [{"ph": "X", "cat": "kernel", "ts": 1}]}'
    big = _write(tmp_path, body[:-1] + b" " * 70000 + b"}", "big.json")
    assert not isinstance(kineto_header.load_bytes(big, mapped=True), bytes)
    assert isinstance(kineto_header.load_bytes(big), bytes)
    assert isinstance(kineto_header.load_bytes(_write(tmp_path, body, "small.json"), mapped=True), bytes)
    page = _write(tmp_path, body[:-1] + b" " * (65536 - len(body)) + b"}", "page.json")
    assert page.stat().st_size == 65536
    assert isinstance(kineto_header.load_bytes(page, mapped=True), bytes)
    gz = tmp_path / "big.json.gz"
    gz.write_bytes(gzip.compress(big.read_bytes()))
    assert isinstance(kineto_header.load_bytes(gz, mapped=True), bytes)


_TPL_ARGS = (
    b'{"External id": %s, "queued": 0, "device": %s, "context": 1, "stream": %s, "correlation": %s, '
    b'"grid": [132, 1, 1], "Seq": %s}'
)
TEMPLATE_VARIANTS = {  # (External id, device, stream, correlation, Seq) of the odd event; scanner takes it
    "same_layout": ((b"9", b"0", b"7", b"9", b"3"), True),
    "longer_ids": ((b"123456789", b"12", b"70", b"-123456789012", b"40000"), True),
    "string_id": ((b'"9"', b"0", b"7", b"9", b"3"), True),
    "float_id": ((b"9.5", b"0", b"7", b"9", b"3"), True),
    "string_correlation": ((b"9", b"0", b"7", b'"9"', b"3"), True),
    "float_correlation": ((b"9", b"0", b"7", b"9e0", b"3"), True),
    "huge_correlation": ((b"9", b"0", b"7", b"12345678901234567890", b"3"), False),
    "bad_number": ((b"9x", b"0", b"7", b"9", b"3"), False),
    "leading_zero": ((b"09", b"0", b"7", b"9", b"3"), False),
    "truncated_id": ((b"9, ", b"0", b"7", b"9", b"3"), False),
    "nested_id": ((b"[9]", b"{}", b"7", b"9", b"3"), True),
}


@pytest.mark.parametrize("case", sorted(TEMPLATE_VARIANTS))
def test_args_templates(tmp_path: Path, case: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Events whose args repeat an earlier event's layout skip the walk: every value in an id hole and every
    byte outside the holes must still be checked like the walk checks them."""
    ids, takes = TEMPLATE_VARIANTS[case]
    ev = b'{"ph": "X", "cat": "kernel", "name": "k%d", "pid": 0, "tid": 7, "ts": %d.5, "dur": 2, "args": %s}'
    events = [ev % (i % 2, i, _TPL_ARGS % (b"%d" % i, b"0", b"7", b"%d" % i, b"%d" % i)) for i in range(6)]
    events.insert(3, ev % (0, 3, _TPL_ARGS % ids))
    doc = b'{"traceEvents": [' + b", ".join(events) + b"]}"
    _check(_write(tmp_path, doc), monkeypatch)
    assert _takes(_write(tmp_path, doc)) == takes
    for old, new in ((b'"queued": 0', b'"queued": 1'), (b'"context": 1, ', b'"context": 1,  '),
                     (b"[132, 1, 1]", b"[132, 1, 1 ]"), (b'"device": ', b'"device" : ')):  # fmt: skip
        # one event differs outside the holes: its own walk (and key) decides
        odd = events[:3] + [events[3].replace(old, new)] + events[4:]
        _check(_write(tmp_path, b'{"traceEvents": [' + b", ".join(odd) + b"]}", "odd.json"), monkeypatch)


@needs_scanner
def test_file_truncated_while_scanned(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A mapped file cut short during the scan (reads past its new end fault with SIGBUS) ends the scan; the
    msgspec path then reads what is left and reports it, and the process lives on."""
    events = [
        _ev(name=f"k{i}", ts=1000.5 + i, args={"correlation": i, "grid": [i, 1, 1]}) for i in range(20000)
    ]
    path = _write(tmp_path, {"traceEvents": events})
    size = path.stat().st_size
    assert size > 1 << 20
    monkeypatch.setattr(kineto_python, "PIECE_BYTES", 64 << 10)
    monkeypatch.setenv("KAT_KINETO_SCANNER", "1")
    calls = []

    def progress(frac: float, msg: str) -> None:
        if not calls:
            # At a page boundary: no zeroed tail for the scan to stop at, the next page is gone.
            os.truncate(path, size // 3 // mmap.PAGESIZE * mmap.PAGESIZE)
        calls.append(frac)

    with pytest.raises(KatInputError, match="not valid JSON"):
        kineto.read(path, progress=progress)
    assert calls


def test_args_templates_replaced(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """More distinct args layouts than template slots, cycling: slots are replaced while guesses still point
    at them, and every event must still get its own key, correlation and typed flag."""
    events = []
    for i in range(600):
        layout = (i * 7) % 41
        args = {
            "External id": i,
            "device": 0,
            "stream": 7 + layout % 3,
            "correlation": i,
            f"attr{layout}": layout,
        }
        if layout % 5 == 0:
            args["Collective name"] = "allreduce"
            args["Seq"] = i
        events.append(
            _ev(name=f"k{layout % 9}", cat=("kernel", "gpu_memcpy")[layout % 2], ts=1000.5 + i, args=args)
        )
    path = _write(tmp_path, {"traceEvents": events})
    ref = _check(path, monkeypatch)
    assert _takes(path)
    assert len(ref.args) == 41
