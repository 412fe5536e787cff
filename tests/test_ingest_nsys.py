"""Nsight Systems SQLite reader on the real exports in ../shared/data/nsys_sqlite/extrap."""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from kat_gui.errors import Cancelled, KatInputError
from kat_gui.events import CopyKind, EventKind, TrackKind
from kat_gui.ingest import nsys
from kat_gui.ingest.base import IngestOptions

FILES = {  # file -> (kernels, memcpys), from the data README (../shared/data/README.md)
    "concurrent_example__concurrent.s16__profile16.sqlite": (12, 30),
    "concurrent_example__concurrent.s1__profile1.sqlite": (12, 30),
    "nsys_db__con_kernel.sqlite": (9, 11),
    "sampled_callchains__ex-gpu.s10__ex-gpu.s10.sqlite": (6, 0),
}
OLD_EXPORT = (
    "sampled_callchains__ex-gpu.s10__ex-gpu.s10.sqlite"  # TARGET_INFO_GPU.deviceId, no EXPORT_META_DATA
)
NEW_EXPORT = (
    "concurrent_example__concurrent.s16__profile16.sqlite"  # exporter 2022.1.1.61, TARGET_INFO_GPU.id
)


@pytest.fixture(scope="module")
def nsys_dir(shared_data: Path) -> Path:
    return shared_data / "nsys_sqlite" / "extrap"


def _read(path: Path, **kw):
    return nsys.read(path, IngestOptions(**kw), None)


def _sql(path: Path, query: str):
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return conn.execute(query).fetchall()
    finally:
        conn.close()


def _kind_count(trace, kind: EventKind) -> int:
    return int((trace.events["kind"] == int(kind)).sum())


@pytest.mark.parametrize("name", sorted(FILES))
def test_real_exports_ingest(nsys_dir: Path, name: str):
    path = nsys_dir / name
    assert nsys.sniff(path, path.read_bytes()[:65536])
    trace = _read(path)
    trace.validate()
    kernels, memcpys = FILES[name]
    assert _kind_count(trace, EventKind.KERNEL) == kernels
    assert _kind_count(trace, EventKind.MEMCPY) == memcpys
    (runtime_rows,) = _sql(path, "SELECT count(*) FROM CUPTI_ACTIVITY_KIND_RUNTIME")[0]
    assert _kind_count(trace, EventKind.RUNTIME) == runtime_rows
    assert trace.rank is None and trace.format == "nsys" and trace.source == str(path)
    # Kernels link to the runtime call that launched them by correlation id (the CPU -> GPU link); the
    # con_kernel file was edited upstream to add two overlapping kernels with no launch call.
    corr = trace.events["correlation"]
    kinds = trace.events["kind"]
    unlinked = set(corr[kinds == int(EventKind.KERNEL)]) - set(corr[kinds == int(EventKind.RUNTIME)])
    assert unlinked == ({1124, 1135} if name == "nsys_db__con_kernel.sqlite" else set())
    # GPU work sits on GPU stream tracks, runtime calls on host threads.
    track_kind = np.array([int(t.kind) for t in trace.tracks])[trace.events["track"]]
    assert (track_kind[kinds == int(EventKind.KERNEL)] == int(TrackKind.GPU_STREAM)).all()
    assert (track_kind[kinds == int(EventKind.RUNTIME)] == int(TrackKind.HOST_THREAD)).all()


def test_kernel_names_times_and_tracks_match_the_database(nsys_dir: Path):
    path = nsys_dir / NEW_EXPORT
    trace = _read(path)
    (base_ns,) = _sql(path, "SELECT utcEpochNs FROM TARGET_INFO_SESSION_START_TIME")[0]
    rows = _sql(
        path,
        "SELECT k.start, k.end, k.deviceId, k.streamId, k.correlationId, s.value FROM CUPTI_ACTIVITY_KIND_KERNEL k "
        "JOIN StringIds s ON s.id = k.demangledName ORDER BY k.correlationId",
    )
    sel = np.flatnonzero(trace.events["kind"] == int(EventKind.KERNEL))
    sel = sel[np.argsort(trace.events["correlation"][sel])]
    for i, (start, end, device, stream, corr, name) in zip(sel.tolist(), rows, strict=True):
        assert int(trace.events["start_ns"][i]) == base_ns + start  # absolute ns, exact
        assert int(trace.events["end_ns"][i]) == base_ns + end
        assert int(trace.events["correlation"][i]) == corr
        assert trace.strings[trace.events["name"][i]] == name
        track = trace.tracks[trace.events["track"][i]]
        assert (track.kind, track.device, track.stream) == (TrackKind.GPU_STREAM, device, stream)
    assert trace.events["start_ns"].min() > 1_600_000_000 * 10**9  # 2020 or later: epoch ns
    assert trace.meta["time_base"] == "relative+base"
    assert trace.meta["session_start_utc_ns"] == base_ns


def test_memcpy_runtime_and_nvtx_details(nsys_dir: Path):
    path = nsys_dir / NEW_EXPORT
    trace = _read(path)
    ev = trace.events
    memcpy = ev["kind"] == int(EventKind.MEMCPY)
    names = [trace.strings[i] for i in ev["name"][memcpy]]
    assert names.count("Memcpy HtoD") == 15 and names.count("Memcpy DtoH") == 15
    htod = memcpy & (ev["copy_kind"] == int(CopyKind.HTOD))
    assert htod.sum() == 15 and (ev["bytes"][memcpy] > 0).all()
    (total_bytes,) = _sql(path, "SELECT sum(bytes) FROM CUPTI_ACTIVITY_KIND_MEMCPY")[0]
    assert int(ev["bytes"][memcpy].sum()) == total_bytes

    runtime_names = {trace.strings[i] for i in ev["name"][ev["kind"] == int(EventKind.RUNTIME)]}
    assert "cudaMemcpy" in runtime_names or any(n.startswith("cudaMemcpy") for n in runtime_names)
    (gtid,) = _sql(path, "SELECT DISTINCT globalTid FROM CUPTI_ACTIVITY_KIND_RUNTIME")[0]
    host = [t for t in trace.tracks if t.kind == TrackKind.HOST_THREAD]
    assert (host[0].pid, host[0].tid) == ((gtid >> 24) & 0xFFFFFF, gtid & 0xFFFFFF)
    assert trace.meta["process_names"] == {str(host[0].pid): "ParallelKernelsTest.exe"}  # not all 355 rows

    # 76 push/pop ranges; the domain-create marker (eventType 75, no end) is not an annotation.
    nvtx = ev["kind"] == int(EventKind.ANNOTATION)
    assert nvtx.sum() == 76
    assert {"main", "main->test_max_par"} <= {trace.strings[i] for i in ev["name"][nvtx]}


def test_schema_versions_gpu_list_and_meta(nsys_dir: Path):
    new = _read(nsys_dir / NEW_EXPORT)
    assert new.meta["exporter_version"] == "2022.1.1.61"
    assert [g["name"] for g in new.meta["gpus"]] == ["GeForce GTX 1060 with Max-Q Design"]
    gpu = new.meta["gpus"][0]
    assert (gpu["id"], gpu["sm_count"], gpu["total_memory_bytes"], gpu["bus_location"]) == (
        0,
        10,
        6442450944,
        "0000:01:00.0",
    )
    assert len(new.meta["non_cuda_gpus"]) == 2  # the laptop's display adapters, listed by Nsight too

    old = _read(nsys_dir / OLD_EXPORT)  # id column is deviceId; no EXPORT_META_DATA, no session start
    assert "exporter_version" not in old.meta
    assert [g["id"] for g in old.meta["gpus"]] == [0, 1, 2, 3]
    assert {g["name"] for g in old.meta["gpus"]} == {"A100-PCIE-40GB"}
    assert old.meta["gpus"][0]["sm_count"] == 108  # from TARGET_INFO_CUDA_GPU.numMultiprocessors
    assert old.meta["gpus"][1]["bus_location"] == "0000:AD:00.0"
    assert old.meta["time_base"] == "relative"
    assert old.meta["thread_names"] == {"868881/868881": "ex-gpu"}
    (first_start,) = _sql(nsys_dir / OLD_EXPORT, "SELECT min(start) FROM CUPTI_ACTIVITY_KIND_KERNEL")[0]
    kernels = old.events["kind"] == int(EventKind.KERNEL)
    assert int(old.events["start_ns"][kernels].min()) == first_start  # kept as-is without a base


def test_non_utf8_text_decodes_with_replacement(nsys_dir: Path, tmp_path: Path):
    trace = _read(nsys_dir / NEW_EXPORT)
    assert trace.meta["nsys_export"]["EXPORT_USER"] == "Alexander Gei\ufffd"  # b"Gei\xe1" (cp1252-ish bytes)

    # The same user name inside a kernel name (StringIds) must decode the same way, not fail the ingest.
    copy = tmp_path / "rank-2.sqlite"
    shutil.copy(nsys_dir / NEW_EXPORT, copy)
    copy.chmod(0o644)
    conn = sqlite3.connect(copy)
    (name_id,) = conn.execute("SELECT demangledName FROM CUPTI_ACTIVITY_KIND_KERNEL LIMIT 1").fetchone()
    conn.execute("UPDATE StringIds SET value = CAST(? AS TEXT) WHERE id = ?", (b"kernel_of_Gei\xe1", name_id))
    conn.commit()
    conn.close()
    trace = _read(copy)
    trace.validate()
    assert "kernel_of_Gei\ufffd" in trace.strings


def test_rank_option_and_missing_tables(nsys_dir: Path, tmp_path: Path):
    assert _read(nsys_dir / NEW_EXPORT, rank=5).rank == 5

    copy = tmp_path / "no_kernels.sqlite"
    shutil.copy(nsys_dir / NEW_EXPORT, copy)
    copy.chmod(0o644)
    conn = sqlite3.connect(copy)
    for (view,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'view'").fetchall():
        conn.execute(f'DROP VIEW "{view}"')  # views added upstream that name the kernel table
    conn.execute("DROP TABLE CUPTI_ACTIVITY_KIND_KERNEL")
    conn.execute("ALTER TABLE NVTX_EVENTS DROP COLUMN textId")  # older NVTX schema: inline text only
    conn.commit()
    conn.close()
    trace = _read(copy)
    trace.validate()
    assert _kind_count(trace, EventKind.KERNEL) == 0
    assert _kind_count(trace, EventKind.MEMCPY) == 30
    assert _kind_count(trace, EventKind.ANNOTATION) == 76


def _make_sqlite(path: Path, *statements: str) -> Path:
    conn = sqlite3.connect(path)
    for st in statements:
        conn.execute(st)
    conn.commit()
    conn.close()
    return path


def test_sqlite_that_is_not_an_nsight_export(tmp_path: Path):
    other = _make_sqlite(tmp_path / "cache.sqlite", "CREATE TABLE t (a INTEGER)", "INSERT INTO t VALUES (1)")
    assert not nsys.sniff(other, other.read_bytes())
    with pytest.raises(KatInputError, match="SQLite file but not an Nsight Systems export") as err:
        _read(other)
    assert str(other) in str(err.value)


def test_nsight_export_without_events(tmp_path: Path):
    empty = _make_sqlite(
        tmp_path / "empty.sqlite",
        "CREATE TABLE StringIds (id INTEGER PRIMARY KEY, value TEXT NOT NULL)",
        "CREATE TABLE CUPTI_ACTIVITY_KIND_KERNEL (start INT, end INT, deviceId INT, streamId INT, "
        "correlationId INT, globalPid INT, demangledName INT, shortName INT)",
    )
    assert nsys.sniff(empty, empty.read_bytes())
    with pytest.raises(KatInputError, match="no kernel") as err:
        _read(empty)
    assert str(empty) in str(err.value)


def test_table_lacking_a_needed_column(tmp_path: Path):
    odd = _make_sqlite(
        tmp_path / "odd.sqlite",
        "CREATE TABLE StringIds (id INTEGER PRIMARY KEY, value TEXT NOT NULL)",
        "CREATE TABLE CUPTI_ACTIVITY_KIND_KERNEL (start INT, end INT, deviceId INT, shortName INT)",
        "INSERT INTO CUPTI_ACTIVITY_KIND_KERNEL VALUES (1, 2, 0, 1)",
    )
    with pytest.raises(KatInputError, match="CUPTI_ACTIVITY_KIND_KERNEL lacks column.s. streamId") as err:
        _read(odd)
    assert str(odd) in str(err.value)


@pytest.mark.parametrize("damage", ["garbage", "truncated", "header_only", "no_header"])
def test_corrupt_files_raise_input_errors(nsys_dir: Path, tmp_path: Path, damage: str):
    data = (nsys_dir / NEW_EXPORT).read_bytes()
    bad = tmp_path / f"{damage}.sqlite"
    if damage == "garbage":
        bad.write_bytes(nsys.SQLITE_MAGIC + bytes(range(256)) * 64)
    elif damage == "truncated":
        bad.write_bytes(data[: len(data) // 3])
    elif damage == "header_only":
        bad.write_bytes(data[:100])
    else:
        bad.write_bytes(b"this is not a database at all\n" * 100)
    with pytest.raises(KatInputError) as err:
        _read(bad)
    assert str(bad) in str(err.value)
    assert "\n" not in str(err.value)


def test_progress_reports_and_cancel_passes_through(nsys_dir: Path):
    seen: list[float] = []
    nsys.read(nsys_dir / NEW_EXPORT, IngestOptions(), lambda frac, msg: seen.append(frac))
    assert seen[-1] == 1.0 and seen == sorted(seen)

    def cancel(frac: float, msg: str) -> None:
        raise Cancelled()

    with pytest.raises(Cancelled):
        nsys.read(nsys_dir / NEW_EXPORT, IngestOptions(), cancel)


def test_kernel_name_falls_back_to_short_name(nsys_dir: Path, tmp_path: Path):
    copy = tmp_path / "short.sqlite"
    shutil.copy(nsys_dir / NEW_EXPORT, copy)
    copy.chmod(0o644)
    conn = sqlite3.connect(copy)
    (corr, short) = conn.execute(
        "SELECT k.correlationId, s.value FROM CUPTI_ACTIVITY_KIND_KERNEL k JOIN StringIds s ON s.id = k.shortName "
        "LIMIT 1"
    ).fetchone()
    # demangledName is NOT NULL in this schema: point it at an id StringIds does not hold.
    conn.execute(
        "UPDATE CUPTI_ACTIVITY_KIND_KERNEL SET demangledName = 999999 WHERE correlationId = ?", (corr,)
    )
    conn.commit()
    conn.close()
    trace = _read(copy)
    trace.validate()
    i = int(
        np.flatnonzero(
            (trace.events["correlation"] == corr) & (trace.events["kind"] == int(EventKind.KERNEL))
        )[0]
    )
    assert trace.strings[trace.events["name"][i]] == short
    assert not any(s.startswith("<string") for s in trace.strings)
