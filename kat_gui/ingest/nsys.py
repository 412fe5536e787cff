"""Nsight Systems SQLite export reader (``nsys export --type sqlite``): one report = one rank, or one rank per
GPU-owning process for a report of a whole node (``read_many``, :mod:`kat_gui.ingest.nsys_ranks`).

Assumptions, from the exporter's schema and the real files in ``../shared/data/nsys_sqlite``:

- Tables are created lazily, so any of them may be missing, and they carry no indexes: each table is read once
  with one ``SELECT`` into numpy columns, never queried per event.
- Times are ns relative to the session start; ``TARGET_INFO_SESSION_START_TIME.utcEpochNs`` (when present)
  makes them absolute. Older exports lack that table: times stay session-relative and ``meta["time_base"]``
  says so.
- Names are ids into ``StringIds(id, value)``; values may be any bytes (user names, paths), so text is read as
  bytes and decoded as UTF-8 with replacement.
- ``globalPid`` / ``globalTid`` pack the OS pid in bits 24..47 and the OS tid in bits 0..23.
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from kat_gui.errors import KatInputError
from kat_gui.events import EVENT_COLUMNS, CopyKind, EventKind, TrackKind, empty_columns
from kat_gui.ingest import nsys_ranks
from kat_gui.ingest.base import FileSurvey, IngestOptions, Progress, RankTrace, TrackInfo
from kat_gui.ingest.nsys_meta import columns as _columns
from kat_gui.ingest.nsys_meta import report_meta as _meta
from kat_gui.ingest.nsys_meta import text as _text
from kat_gui.ingest.util import gc_paused as _gc_paused
from kat_gui.ingest.util import group_rows as _group_rows

FORMAT = "nsys"

SQLITE_MAGIC = b"SQLite format 3\x00"

T_KERNEL = "CUPTI_ACTIVITY_KIND_KERNEL"
T_MEMCPY = "CUPTI_ACTIVITY_KIND_MEMCPY"
T_MEMSET = "CUPTI_ACTIVITY_KIND_MEMSET"
T_RUNTIME = "CUPTI_ACTIVITY_KIND_RUNTIME"
T_SYNC = "CUPTI_ACTIVITY_KIND_SYNCHRONIZATION"
T_NVTX = "NVTX_EVENTS"
T_STRINGS = "StringIds"
EVENT_TABLES = (T_KERNEL, T_MEMCPY, T_MEMSET, T_RUNTIME, T_SYNC, T_NVTX)

# CUpti_ActivityMemcpyKind (cupti_activity.h), used for the event name.
MEMCPY_KIND_NAMES = {
    0: "Unknown",
    1: "HtoD",
    2: "DtoH",
    3: "HtoA",
    4: "AtoH",
    5: "AtoA",
    6: "AtoD",
    7: "DtoA",
    8: "DtoD",
    9: "HtoH",
    10: "PtoP",
}
# CUpti_ActivitySynchronizationType; names as Kineto prints them.
# copy_kind column: kat_gui.events.CopyKind. CUDA-array copies count by the link they cross (HtoA goes over
# PCIe like HtoD); CopyKind follows CUPTI's codes (HtoH = 9), other CUPTI kinds go through this map.
# Codes newer than this table are stored as they are.
COPY_KIND_OF_CUPTI = {
    0: CopyKind.NONE,
    1: CopyKind.HTOD,
    2: CopyKind.DTOH,
    3: CopyKind.HTOD,
    4: CopyKind.DTOH,
    5: CopyKind.DTOD,
    6: CopyKind.DTOD,
    7: CopyKind.DTOD,
    8: CopyKind.DTOD,
    9: CopyKind.HTOH,
    10: CopyKind.PTOP,
}
SYNC_TYPE_NAMES = {
    0: "Unknown Sync",
    1: "Event Sync",
    2: "Stream Wait Event",
    3: "Stream Sync",
    4: "Context Sync",
}
NVTX_PUSHPOP_RANGE = 59
NVTX_STARTEND_RANGE = 60
FETCH_ROWS = 65536
NO_STREAM_U32 = 0xFFFFFFFF  # streamId of syncs that name no stream (event and context syncs)

KERNEL_ARG_COLUMNS = (
    "gridX",
    "gridY",
    "gridZ",
    "blockX",
    "blockY",
    "blockZ",
    "registersPerThread",
    "staticSharedMemory",
    "dynamicSharedMemory",
    "contextId",
)


def _os_pid(global_id: Any) -> Any:
    """The OS pid packed in a ``globalPid`` / ``globalTid`` (bits 24..47); int or numpy array alike."""
    return (global_id >> 24) & 0xFFFFFF


def _os_tid(global_tid: Any) -> Any:
    """The OS tid packed in a ``globalTid`` (bits 0..23)."""
    return global_tid & 0xFFFFFF


def _connect(path: str | os.PathLike) -> sqlite3.Connection:
    # Read-only URI: the shared data files are read-only and an export must never be modified by reading it.
    uri = Path(path).absolute().as_uri() + "?mode=ro"
    conn = sqlite3.connect(uri, uri=True)
    conn.text_factory = bytes
    return conn


def _tables(conn: sqlite3.Connection) -> set[str]:
    rows = conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()
    return {_text(r[0]) for r in rows}


def _is_nsight(tables: set[str]) -> bool:
    return T_STRINGS in tables or any(t.startswith("CUPTI_ACTIVITY_KIND_") for t in tables)


def sniff(path: str | os.PathLike, head: bytes) -> bool:
    """True for an SQLite file holding Nsight Systems tables (``CUPTI_ACTIVITY_KIND_*`` or ``StringIds``).

    An SQLite header on a file SQLite cannot read (truncated, corrupt) also answers True, so that ``read`` can
    report the corruption instead of the file being called an unknown format.
    """
    if not head.startswith(SQLITE_MAGIC):
        return False
    try:
        conn = _connect(path)
        try:
            return _is_nsight(_tables(conn))
        finally:
            conn.close()
    except (sqlite3.DatabaseError, UnicodeDecodeError):
        return True


class _SchemaError(Exception):
    """A table lacks a column KAT needs; ``read`` turns it into a KatInputError naming the file."""


def _select_ints(
    conn: sqlite3.Connection, table: str, exprs: dict[str, str], required: tuple[str, ...] = ()
) -> dict[str, np.ndarray]:
    """One bulk ``SELECT`` of integer columns (NULL -> -1) into int64 numpy columns, keyed like ``exprs``.

    ``start``, ``end`` and the ``required`` columns must exist; any other missing column reads as -1 (the
    schema changed across Nsight versions).
    """
    have = set(_columns(conn, table))
    lacking = [c for c in ("start", "end", *required) if c in exprs.values() and c not in have]
    if lacking:
        raise _SchemaError(f"table {table} lacks column(s) {', '.join(lacking)}: not an export KAT can read")
    cols = [f'"{c}"' if c in have else "NULL" for c in exprs.values()]
    sql = "SELECT " + ", ".join(f"COALESCE({c}, -1)" for c in cols) + f' FROM "{table}"'
    cursor = conn.execute(sql)
    # Batches bound the memory held as Python tuples (about 100 bytes per value) to one batch.
    parts = [np.empty((0, len(exprs)), dtype=np.int64)]
    while rows := cursor.fetchmany(FETCH_ROWS):
        try:
            parts.append(np.array(rows, dtype=np.int64).reshape(len(rows), len(exprs)))
        except (TypeError, ValueError, OverflowError):  # text, blobs or huge numbers where ints belong
            raise _SchemaError(
                f"table {table} holds a value that is not a 64-bit integer in column(s) "
                f"{', '.join(exprs.values())}: a damaged export"
            ) from None
    arr = np.concatenate(parts)
    return {key: np.ascontiguousarray(arr[:, i]) for i, key in enumerate(exprs)}


class _Builder:
    """Accumulates per-table column blocks, tracks and the local string/args tables of one rank."""

    def __init__(self, per_process: bool = False, context_device: dict | None = None) -> None:
        # per_process: GPU tracks are (device, stream, process), so that a report of several ranks splits by
        # process; context_device: (pid, contextId) -> device, for syncs (nsys_ranks.Survey)
        self.per_process = per_process
        self.context_device = context_device or {}
        self.blocks: list[dict[str, np.ndarray]] = []
        self.tracks: list[TrackInfo] = []
        self.track_ids: dict[tuple[int, int, int, int], int] = {}
        self.strings: list[str] = []
        self.string_ids: dict[str, int] = {}
        self.args: list[str] = []
        self.args_ids: dict[str, int] = {}

    def string(self, text: str) -> int:
        sid = self.string_ids.get(text)
        if sid is None:
            sid = self.string_ids[text] = len(self.strings)
            self.strings.append(text)
        return sid

    def arg(self, obj: dict[str, Any]) -> int:
        text = json.dumps(obj, separators=(",", ":"))
        aid = self.args_ids.get(text)
        if aid is None:
            aid = self.args_ids[text] = len(self.args)
            self.args.append(text)
        return aid

    def _track(self, key: tuple[int, int, int, int], info: TrackInfo) -> int:
        """The id of the track ``key``; ``info`` describes it the first time the key is seen."""
        track = self.track_ids.get(key)
        if track is None:
            track = self.track_ids[key] = len(self.tracks)
            self.tracks.append(info)
        return track

    def gpu_tracks(self, device: np.ndarray, stream: np.ndarray, pid: np.ndarray) -> np.ndarray:
        if len(device) == 0:
            return np.empty(0, dtype=np.int32)
        first, inverse = _group_rows([device, stream, pid] if self.per_process else [device, stream])
        ids = np.empty(len(first), dtype=np.int32)
        for i, j in enumerate(first.tolist()):
            dev, stm = int(device[j]), int(stream[j])
            key = (int(TrackKind.GPU_STREAM), dev, stm, int(pid[j]) if self.per_process else 0)
            ids[i] = self._track(key, TrackInfo(TrackKind.GPU_STREAM, dev, stm, int(pid[j]), stm))
        return ids[inverse]

    def host_tracks(self, global_tid: np.ndarray) -> np.ndarray:
        uniq, inverse = np.unique(global_tid, return_inverse=True)
        ids = np.empty(len(uniq), dtype=np.int32)
        for i, gtid in enumerate(uniq.tolist()):
            pid, tid = _os_pid(gtid), _os_tid(gtid)
            key = (int(TrackKind.HOST_THREAD), -1, pid, tid)
            ids[i] = self._track(key, TrackInfo(TrackKind.HOST_THREAD, -1, -1, pid, tid))
        return ids[inverse.reshape(-1)]

    def add(self, kind: EventKind, start: np.ndarray, end: np.ndarray, track: np.ndarray, **cols: np.ndarray):
        n = len(start)
        block = empty_columns(n)
        block["start_ns"][:] = start
        block["end_ns"][:] = end
        block["kind"][:] = int(kind)
        for name, values in cols.items():
            block[name][:] = values
        block["track"] = track.astype(np.int32)
        self.blocks.append(block)

    def columns(self) -> dict[str, np.ndarray]:
        if not self.blocks:
            out = empty_columns(0)
            out["track"] = np.empty(0, dtype=np.int32)
            return out
        return {
            name: np.concatenate([b[name] for b in self.blocks]).astype(
                EVENT_COLUMNS[name] if name in EVENT_COLUMNS else np.int32, copy=False
            )
            for name in self.blocks[0]
        }


class _StringIds:
    """StringIds looked up lazily into the rank's local string table (only the ids events use)."""

    def __init__(self, conn: sqlite3.Connection, tables: set[str], builder: _Builder):
        self._values: dict[int, bytes] = {}
        if T_STRINGS in tables:
            self._values = dict(conn.execute(f'SELECT id, value FROM "{T_STRINGS}"').fetchall())
        self._builder = builder

    def local_ids(self, ids: np.ndarray, fallback: np.ndarray | None = None) -> np.ndarray:
        """Map StringIds ids to local string ids; ``fallback`` ids are used where ``ids`` is missing/empty."""
        if len(ids) == 0:
            return np.empty(0, dtype=np.int32)
        uniq, inverse = np.unique(ids, return_inverse=True)
        inverse = inverse.reshape(-1)
        if fallback is not None:
            missing = np.array([not self._values.get(i) for i in uniq.tolist()])[inverse]
            if missing.any():
                out = np.empty(len(ids), dtype=np.int32)
                out[missing] = self.local_ids(fallback[missing])
                out[~missing] = self.local_ids(ids[~missing])
                return out
        local = np.array([self._local(int(i)) for i in uniq.tolist()], dtype=np.int32)
        return local[inverse]

    def _local(self, sid: int) -> int:
        value = self._values.get(sid)
        return self._builder.string(_text(value) if value else f"<string {sid}>")


def read(path: str | os.PathLike, options: IngestOptions, progress: Progress | None = None) -> RankTrace:
    """Read one Nsight Systems SQLite export into a :class:`RankTrace` (rank ``options.rank`` or None): the
    whole file as one rank, whatever processes it holds (``read_many`` splits a report of several ranks).

    Raises :class:`KatInputError` for a file SQLite cannot read, an SQLite file that is not an Nsight export,
    or an export without any kernel, memcpy, memset, runtime, sync or NVTX range event.
    """
    return _with_db(
        path, lambda c, p: _read(c, p, options, progress, context_device=_survey(c).context_device)
    )


def read_many(
    path: str | os.PathLike, options: IngestOptions, progress: Progress | None = None
) -> Iterator[RankTrace]:
    """One :class:`RankTrace` per rank (what ``kat ingest`` uses). A report of one GPU process is one rank, as
    :func:`read` gives it; a report of a whole node, one rank per GPU-owning process (nsys_ranks.py)."""

    def whole(conn: sqlite3.Connection, path: str) -> tuple[RankTrace, nsys_ranks.Survey | None]:
        sv = _survey(conn)
        if not nsys_ranks.splits(path, sv, options):
            return _read(conn, path, options, progress, context_device=sv.context_device), None
        nsys_ranks.process_ranks(path, sv, options)  # refuse a bad rank option before reading everything
        return _read(conn, path, options, progress, per_process=True, context_device=sv.context_device), sv

    trace, sv = _with_db(path, whole)
    if sv is None:
        yield trace
    else:
        yield from nsys_ranks.split(trace, sv, options)


def survey(path: str | os.PathLike, options: IngestOptions) -> FileSurvey:
    """The capture host and the GPU-owning processes of an export, in local rank order, without reading its
    events (one grouped scan of the kernel, memcpy and memset tables)."""
    return _with_db(path, lambda conn, _path: _survey(conn).file_survey())


def _survey(conn: sqlite3.Connection) -> nsys_ranks.Survey:
    tables = _tables(conn)
    if not _is_nsight(tables):
        return nsys_ranks.Survey(None)
    return nsys_ranks.survey(conn, tables, nsys_ranks.target_host(conn, tables))


def _with_db(path: str | os.PathLike, fn: Callable[[sqlite3.Connection, str], Any]) -> Any:
    """``fn(connection, path)`` on the export opened read-only, every failure a KatInputError naming it."""
    path = os.fspath(path)
    try:
        with open(path, "rb") as f:
            magic = f.read(len(SQLITE_MAGIC))
    except OSError as e:
        raise KatInputError(path, f"cannot open: {e.strerror or e}") from e
    if magic[:2] == b"\x1f\x8b":
        raise KatInputError(path, "gzip-compressed SQLite export: decompress it first (gunzip)")
    if magic != SQLITE_MAGIC:
        raise KatInputError(path, "not an SQLite file (expected an `nsys export --type sqlite` output)")
    try:
        conn = _connect(path)
    except sqlite3.Error as e:
        raise KatInputError(path, f"cannot open SQLite database: {e}") from e
    try:
        with _gc_paused():
            return fn(conn, path)
    except (_SchemaError, nsys_ranks.DamagedError) as e:
        raise KatInputError(path, str(e)) from None
    except (sqlite3.DatabaseError, UnicodeDecodeError) as e:  # a damaged schema may not even decode
        # one line: SQLite quotes damaged schema text, newlines included
        raise KatInputError(
            path, f"corrupt or unreadable SQLite database ({' '.join(str(e).split())})"
        ) from e
    finally:
        conn.close()


def _read(
    conn: sqlite3.Connection,
    path: str,
    options: IngestOptions,
    progress: Progress | None,
    per_process: bool = False,
    context_device: dict | None = None,
) -> RankTrace:
    tables = _tables(conn)
    if not _is_nsight(tables):
        raise KatInputError(
            path, "SQLite file but not an Nsight Systems export (no CUPTI_ACTIVITY_KIND_* tables)"
        )
    present = [t for t in EVENT_TABLES if t in tables]
    if not present:
        raise KatInputError(path, "Nsight Systems export without kernel, memcpy, runtime or NVTX tables")

    meta = _meta(conn, tables)
    base_ns = meta.get("session_start_utc_ns")
    offset = int(base_ns) if base_ns is not None else 0
    b = _Builder(per_process, context_device)
    names = _StringIds(conn, tables, b)
    counts: dict[str, int] = {}
    readers = {
        T_KERNEL: _read_kernels,
        T_MEMCPY: _read_memcpy,
        T_MEMSET: _read_memset,
        T_RUNTIME: _read_runtime,
        T_SYNC: _read_sync,
        T_NVTX: _read_nvtx,
    }
    for i, table in enumerate(present):
        if progress is not None:
            progress(i / len(present), f"reading {table}")
        before = len(b.blocks)
        readers[table](conn, b, names, offset)
        counts[table] = sum(len(blk["start_ns"]) for blk in b.blocks[before:])
    if progress is not None:
        progress(1.0, "done")

    events = b.columns()
    if len(events["start_ns"]) == 0:
        raise KatInputError(
            path, "Nsight Systems export holds no kernel, memcpy, memset, runtime or NVTX events"
        )
    bad = events["end_ns"] < events["start_ns"]
    if bad.any():
        # Unfinished activities (the app exited while they ran) are exported with end < start; clamp them.
        events["end_ns"][bad] = events["start_ns"][bad]
        meta["clamped_unfinished"] = int(bad.sum())
    if per_process:
        meta["_clamped"] = bad  # split per rank by nsys_ranks.split, which removes it
    meta["event_counts"] = counts
    meta.update(_names_of_tracks(conn, tables, b.tracks))
    return RankTrace(
        rank=options.rank,
        source=path,
        format=FORMAT,
        tracks=b.tracks,
        events=events,
        strings=b.strings,
        args=b.args,
        meta=meta,
    )


def _select_gpu_activity(
    conn: sqlite3.Connection, table: str, more: dict[str, str], required: tuple[str, ...] = ()
) -> dict[str, np.ndarray]:
    """The columns every GPU activity table has (times, device, stream, correlation, globalPid), then
    ``more``; device and stream must exist, as must ``required``."""
    exprs = {
        "start": "start",
        "end": "end",
        "device": "deviceId",
        "stream": "streamId",
        "corr": "correlationId",
        "gpid": "globalPid",
        **more,
    }
    cols = _select_ints(conn, table, exprs, required=("deviceId", "streamId", *required))
    for key in ("device", "stream"):  # stored as int32 / int64 track fields; a device id is a small number
        v = cols[key]
        if len(v) and (v.min() < -1 or (key == "device" and v.max() > np.iinfo(np.int32).max)):
            raise _SchemaError(
                f"table {table} holds a {key} id out of range ({int(v.min())}): a damaged export"
            )
    return cols


def _per_code(codes: np.ndarray, value_of: Callable[[int], int], dtype: type) -> np.ndarray:
    """``value_of(code)`` for each row of ``codes``, called once per distinct code (a table holds few)."""
    uniq, inverse = np.unique(codes, return_inverse=True)
    return np.array([value_of(c) for c in uniq.tolist()], dtype=dtype)[inverse.reshape(-1)]


def _read_kernels(conn: sqlite3.Connection, b: _Builder, names: _StringIds, offset: int) -> None:
    cols = set(_columns(conn, T_KERNEL))
    name_col = "demangledName" if "demangledName" in cols else "shortName"
    arg_cols = [c for c in KERNEL_ARG_COLUMNS if c in cols]
    exprs = {"name": name_col, "short": "shortName" if "shortName" in cols else name_col}
    exprs.update({c: c for c in arg_cols})
    k = _select_gpu_activity(conn, T_KERNEL, exprs, required=(name_col,))
    track = b.gpu_tracks(k["device"], k["stream"], _os_pid(k["gpid"]))
    args = _args_ids(b, k, arg_cols)
    b.add(
        EventKind.KERNEL,
        k["start"] + offset,
        k["end"] + offset,
        track,
        name=names.local_ids(k["name"], fallback=k["short"]),
        correlation=k["corr"],
        args=args,
    )


def _args_ids(b: _Builder, cols: dict[str, np.ndarray], arg_cols: list[str]) -> np.ndarray:
    if not arg_cols:
        return np.full(len(cols["start"]), -1, dtype=np.int32)
    # Launch configurations repeat: unique rows first, one JSON text per distinct configuration.
    if len(cols["start"]) == 0:
        return np.empty(0, dtype=np.int32)
    first, inverse = _group_rows([cols[c] for c in arg_cols])
    ids = np.array([b.arg({c: int(cols[c][j]) for c in arg_cols}) for j in first.tolist()], dtype=np.int32)
    return ids[inverse]


def _read_memcpy(conn: sqlite3.Connection, b: _Builder, names: _StringIds, offset: int) -> None:
    m = _select_gpu_activity(conn, T_MEMCPY, {"bytes": "bytes", "copy_kind": "copyKind"})
    track = b.gpu_tracks(m["device"], m["stream"], _os_pid(m["gpid"]))
    name = _per_code(
        m["copy_kind"], lambda c: b.string(f"Memcpy {MEMCPY_KIND_NAMES.get(c, f'kind {c}')}"), np.int32
    )
    b.add(
        EventKind.MEMCPY,
        m["start"] + offset,
        m["end"] + offset,
        track,
        name=name,
        correlation=m["corr"],
        bytes=m["bytes"],
        copy_kind=_per_code(
            m["copy_kind"], lambda c: int(COPY_KIND_OF_CUPTI.get(c, max(-128, min(c, 127)))), np.int8
        ),
    )


def _read_memset(conn: sqlite3.Connection, b: _Builder, names: _StringIds, offset: int) -> None:
    m = _select_gpu_activity(conn, T_MEMSET, {"bytes": "bytes"})
    track = b.gpu_tracks(m["device"], m["stream"], _os_pid(m["gpid"]))
    b.add(
        EventKind.MEMSET,
        m["start"] + offset,
        m["end"] + offset,
        track,
        name=np.full(len(track), b.string("Memset"), dtype=np.int32),
        correlation=m["corr"],
        bytes=m["bytes"],
    )


def _read_runtime(conn: sqlite3.Connection, b: _Builder, names: _StringIds, offset: int) -> None:
    r = _select_ints(
        conn,
        T_RUNTIME,
        {"start": "start", "end": "end", "gtid": "globalTid", "corr": "correlationId", "name": "nameId"},
        required=("globalTid", "nameId"),
    )
    b.add(
        EventKind.RUNTIME,
        r["start"] + offset,
        r["end"] + offset,
        b.host_tracks(r["gtid"]),
        name=names.local_ids(r["name"]),
        correlation=r["corr"],
    )


def _read_sync(conn: sqlite3.Connection, b: _Builder, names: _StringIds, offset: int) -> None:
    # Placed on the GPU stream they wait for, like Kineto's cuda_sync rows; event and context syncs name no
    # stream and go on the device's stream -1 lane.
    s = _select_gpu_activity(conn, T_SYNC, {"sync": "syncType", "ctx": "contextId"})
    stream = np.where(s["stream"] == NO_STREAM_U32, -1, s["stream"])
    pid = _os_pid(s["gpid"])
    device = nsys_ranks.context_devices(pid, s["ctx"], s["device"], b.context_device)
    track = b.gpu_tracks(device, stream, pid)
    b.add(
        EventKind.SYNC,
        s["start"] + offset,
        s["end"] + offset,
        track,
        name=_per_code(s["sync"], lambda c: b.string(SYNC_TYPE_NAMES.get(c, f"Sync type {c}")), np.int32),
        correlation=s["corr"],
    )


def _read_nvtx(conn: sqlite3.Connection, b: _Builder, names: _StringIds, offset: int) -> None:
    cols = set(_columns(conn, T_NVTX))
    lacking = [c for c in ("start", "end", "eventType") if c not in cols]
    if lacking:
        raise _SchemaError(f"table {T_NVTX} lacks column(s) {', '.join(lacking)}: not an export KAT can read")
    text_id = "textId" if "textId" in cols else "NULL"
    text = "text" if "text" in cols else "NULL"
    gtid = "globalTid" if "globalTid" in cols else "NULL"
    rows = conn.execute(
        f'SELECT start, "end", COALESCE({gtid}, 0), COALESCE({text_id}, -1), {text} FROM "{T_NVTX}" '
        f'WHERE eventType IN ({NVTX_PUSHPOP_RANGE}, {NVTX_STARTEND_RANGE}) AND "end" IS NOT NULL'
    ).fetchall()
    if not rows:
        return
    start, end, gtid, tid_text, text = zip(*rows, strict=True)
    tid_text_arr = np.array(tid_text, dtype=np.int64)
    name = np.empty(len(rows), dtype=np.int32)
    has_id = tid_text_arr >= 0
    if has_id.any():
        name[has_id] = names.local_ids(tid_text_arr[has_id])
    inline = np.flatnonzero(~has_id)
    if len(inline):
        name[inline] = [b.string(_text(text[i]) or "<unnamed NVTX range>") for i in inline.tolist()]
    b.add(
        EventKind.ANNOTATION,
        np.array(start, dtype=np.int64) + offset,
        np.array(end, dtype=np.int64) + offset,
        b.host_tracks(np.array(gtid, dtype=np.int64)),
        name=name,
    )


def _names_of_tracks(conn: sqlite3.Connection, tables: set[str], tracks: list[TrackInfo]) -> dict[str, Any]:
    """Process and thread names of the tracks only (PROCESSES lists every process on the machine), keyed like
    the Kineto reader's: ``process_names[str(pid)]``, ``thread_names[f"{pid}/{tid}"]``."""
    pids = {t.pid for t in tracks}
    threads = {(t.pid, t.tid) for t in tracks if t.kind == TrackKind.HOST_THREAD}
    out: dict[str, Any] = {}
    if "PROCESSES" in tables:
        out["process_names"] = {
            str(pid): _text(name)
            for pid, name in conn.execute("SELECT pid, name FROM PROCESSES").fetchall()
            if pid in pids
        }
    if "ThreadNames" in tables and T_STRINGS in tables:
        rows = conn.execute(
            f'SELECT t.globalTid, s.value FROM ThreadNames t JOIN "{T_STRINGS}" s ON s.id = t.nameId'
        ).fetchall()
        names = {}
        for gtid, name in rows:
            key = (_os_pid(gtid), _os_tid(gtid))
            if key in threads:
                names[f"{key[0]}/{key[1]}"] = _text(name)
        out["thread_names"] = names
    return out
