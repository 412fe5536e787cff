"""The HDF5 TraceStore: writer (streaming, one rank at a time, atomic) and reader (window queries, results).

The on-disk layout is documented in ``docs/store-format.md``; keep the two in step.
"""

from __future__ import annotations

import json
import os
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from kat_gui.errors import KatInputError
from kat_gui.events import EVENT_COLUMNS, NO_ID, SCHEMA_VERSION, EventKind, RankTrace, TrackKind, track_label
from kat_gui.store.lod import LOD_COLUMNS, LOD_KEEP_FRACTION, build_lod

STORE_MARKER = "KAT TraceStore"
CHUNK_ROWS = 16_384
# gzip level 1 + shuffle: readable by every HDF5 build; see docs/store-format.md for the lzf comparison.
COMPRESSION: dict[str, Any] = {"compression": "gzip", "compression_opts": 1, "shuffle": True}
# Raw chunk cache per dataset (decompressed chunks): 32 int64 chunks. Panning re-reads the same chunks.
CHUNK_CACHE_BYTES = 16 * 1024 * 1024
CHUNK_CACHE_SLOTS = 10_007
# Summary levels up to this many rectangles are read whole once and kept (LRU, MEMORY_CACHE_BYTES in all,
# shared with the per-track long-event lists): zoomed-out redraws then read nothing from the file.
SMALL_LEVEL_ROWS = 16_384
MEMORY_CACHE_BYTES = 64 * 1024 * 1024
# Stored levels of at most this many rectangles are also copied, back to back for all tracks, into /lod_small:
# a zoomed-out view of every track is then answered from one read per column (at the first such query)
# instead of one read per column and track (~0.4 ms each, ~6 per track: 0.4 s for 128 tracks).
# Each stored level has at most half the rectangles of the previous one, so a track copies < 2x this many.
LOD_SMALL_ROWS = 2_048
# /lod_small is read whole only up to this size (all tracks, six columns); beyond, per level as /lod.
LOD_SMALL_READ_BYTES = 48 * 1024 * 1024
# Columns a summary window returns (max_dur_ns is only needed while building levels).
SUMMARY_COLUMNS = ("start_ns", "end_ns", "name", "kind", "count", "busy_ns")
# Per track, the longest max(LONG_MIN, n // LONG_DIVISOR) events are kept in a side list (/long) so that the
# look-back of a window query is bounded by the longest *ordinary* event, not by one annotation that spans
# the whole run (which would make every query on that thread read the thread from its start).
LONG_MIN = 64
LONG_DIVISOR = 256
# /long (~1/256 of the events, 29 bytes a row) is read whole, one read per column, at the first raw query when
# it is at most this size: a first raw view of 128 tracks then makes 5 reads for it instead of 5 per track.
LONG_READ_BYTES = 32 * 1024 * 1024

_STR = h5py.string_dtype("utf-8")

TRACK_COLUMNS: dict[str, np.dtype] = {
    "id": np.dtype(np.int32),
    "rank": np.dtype(np.int32),
    "kind": np.dtype(np.uint8),  # TrackKind
    "device": np.dtype(np.int32),
    "stream": np.dtype(np.int64),
    "pid": np.dtype(np.int64),
    "tid": np.dtype(np.int64),
    "row_offset": np.dtype(np.int64),  # first row of the track in /events
    "row_count": np.dtype(np.int64),
    "first_start_ns": np.dtype(np.int64),  # 0 for an empty track
    "last_end_ns": np.dtype(np.int64),  # max end_ns of the track; 0 for an empty track
    "last_start_ns": np.dtype(np.int64),  # start_ns of the last row; 0 for an empty track
    "max_dur_ns": np.dtype(np.int64),
    "lookback_ns": np.dtype(np.int64),  # max duration of the events that are not in /long
    "long_offset": np.dtype(np.int64),  # first row of the track in /long
    "long_count": np.dtype(np.int64),
}
LEVEL_COLUMNS: dict[str, np.dtype] = {
    "track": np.dtype(np.int32),
    "level": np.dtype(np.int32),
    "width_ns": np.dtype(np.int64),
    "row_offset": np.dtype(np.int64),  # first row of this (track, level) in /lod
    "row_count": np.dtype(np.int64),
    # first row of this (track, level) in /lod_small, -1 when not copied there (more than LOD_SMALL_ROWS
    # rectangles). Absent in stores written before /lod_small existed (readers then use /lod only).
    "small_offset": np.dtype(np.int64),
}
LONG_COLUMNS: dict[str, np.dtype] = {
    "row": np.dtype(np.int64),  # row index within the track
    "start_ns": np.dtype(np.int64),
    "end_ns": np.dtype(np.int64),
    "name": np.dtype(np.int32),
    "kind": np.dtype(np.uint8),
}
N_EVENT_KINDS = max(EventKind) + 1


@dataclass(frozen=True)
class TrackRow:
    """One track of the store. ``id`` is its position in :attr:`TraceStore.tracks`."""

    id: int
    rank: int
    kind: TrackKind
    device: int
    stream: int
    pid: int
    tid: int
    label: str
    row_offset: int
    row_count: int
    first_start_ns: int
    last_end_ns: int
    max_dur_ns: int


@dataclass
class Window:
    """What one track shows in ``[t0, t1)``: raw events (``summary`` False) or summary rectangles.

    For raw events ``count`` is 1, ``index`` the row within the track (for :meth:`TraceStore.event`),
    ``level`` -1. For summaries ``index`` is -1, ``count`` the events merged, ``name``/``kind`` those of the
    longest merged event, ``level`` the LOD level. ``busy_ns`` is the time covered by events (== duration for
    raw events). All arrays have one length and are sorted by start.
    """

    track: int
    start_ns: np.ndarray
    end_ns: np.ndarray
    name: np.ndarray
    kind: np.ndarray
    count: np.ndarray
    index: np.ndarray
    busy_ns: np.ndarray
    summary: bool
    level: int

    def __len__(self) -> int:
        return len(self.start_ns)


# ----------------------------------------------------------------------------------------------- helpers


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, (set, tuple)):
        return list(obj)
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def _dumps(obj: Any) -> str:
    return json.dumps(obj, default=_json_default, ensure_ascii=False, separators=(",", ":"))


def _result_path(key: str) -> str:
    parts = key.split("/")
    if not key or any(p in ("", ".", "..") or p.startswith(".") or "~" in p for p in parts):
        raise ValueError(f"bad result key {key!r}: use names like 'detect/findings'")
    return "results/" + key


def _put_result(f: h5py.File, key: str, write: Any) -> None:
    """Replace ``/results/<key>`` by what ``write(group, name)`` creates, via a temporary name.

    Order: write ``<key>~new``; rename the old value to ``<key>~old``; rename the new one into place; delete
    the old one. A crash at any point leaves the old or the new value readable (readers fall back to
    ``~old``, then ``~new`` when ``<key>`` is missing).
    """
    path = _result_path(key)
    parent, name = path.rsplit("/", 1)
    grp = f.require_group(parent)
    new, old = name + "~new", name + "~old"
    if name not in grp:  # an earlier replacement was interrupted: restore what readers were seeing
        if old in grp:
            grp.move(old, name)
        elif new in grp:
            grp.move(new, name)
    for stale in (new, old):
        if stale in grp:
            del grp[stale]
    write(grp, new)
    if name in grp:
        grp.move(name, old)
    grp.move(new, name)
    if old in grp:
        del grp[old]
    f.flush()


def _get_result(f: h5py.File, key: str) -> h5py.Group | h5py.Dataset | None:
    path = _result_path(key)
    for candidate in (path, path + "~old", path + "~new"):
        if candidate in f:
            return f[candidate]
    return None


def _write_json(grp: h5py.Group, name: str, obj: Any) -> None:
    grp.create_dataset(name, data=_dumps(obj), dtype=_STR)


def _write_table(cols: dict[str, np.ndarray]) -> Any:
    def write(grp: h5py.Group, name: str) -> None:
        g = grp.create_group(name)
        n = None
        for col, values in cols.items():
            arr = np.asarray(values)
            if n is None:
                n = len(arr)
            elif len(arr) != n:
                raise ValueError(f"table column {col!r} has length {len(arr)}, expected {n}")
            if arr.dtype.kind in "UO":
                g.create_dataset(col, data=np.array([str(v) for v in arr], dtype=object), dtype=_STR)
            else:
                g.create_dataset(col, data=arr)
        g.attrs["columns"] = _dumps(list(cols))

    return write


def _read_table(node: h5py.Group) -> dict[str, np.ndarray]:
    order = json.loads(node.attrs["columns"]) if "columns" in node.attrs else list(node)
    out = {}
    for col in order:
        ds = node[col]
        out[col] = ds.asstr()[:] if h5py.check_string_dtype(ds.dtype) else ds[:]
    return out


def _read_json_node(node: h5py.Dataset) -> Any:
    return json.loads(node.asstr()[()])


# ------------------------------------------------------------------------------------------------ writer


class StoreWriter:
    """Builds a store one :class:`RankTrace` at a time; use through :meth:`TraceStore.create`.

    Memory: each ``add`` holds one rank's columns (plus a sorted copy) and the run's string table; the events
    of earlier ranks are already on disk.
    """

    def __init__(self, path: str | os.PathLike, name: str):
        self.path = Path(path)
        self.name = name
        parent = self.path.parent if str(self.path.parent) else Path(".")
        if not parent.is_dir():
            raise KatInputError(parent, "output folder does not exist")
        self._tmp = parent / f"{self.path.name}.tmp-{os.urandom(4).hex()}"
        self._f: h5py.File | None = h5py.File(self._tmp, "w")
        self._done = False
        f = self._f
        f.attrs["kat_store"] = STORE_MARKER
        f.attrs["schema_version"] = SCHEMA_VERSION
        f.attrs["name"] = name
        f.attrs["chunk_rows"] = CHUNK_ROWS
        ev = f.create_group("events")
        self._ev = {
            c: ev.create_dataset(
                c, shape=(0,), maxshape=(None,), dtype=dt, chunks=(CHUNK_ROWS,), **COMPRESSION
            )
            for c, dt in EVENT_COLUMNS.items()
        }
        lod = f.create_group("lod")
        self._lod = {
            c: lod.create_dataset(
                c, shape=(0,), maxshape=(None,), dtype=dt, chunks=(CHUNK_ROWS,), **COMPRESSION
            )
            for c, dt in LOD_COLUMNS.items()
        }
        small = f.create_group("lod_small")
        self._lod_small = {
            c: small.create_dataset(
                c, shape=(0,), maxshape=(None,), dtype=dt, chunks=(CHUNK_ROWS,), **COMPRESSION
            )
            for c, dt in LOD_COLUMNS.items()
        }
        lg = f.create_group("long")
        self._long = {
            c: lg.create_dataset(c, shape=(0,), maxshape=(None,), dtype=dt, chunks=(4096,), **COMPRESSION)
            for c, dt in LONG_COLUMNS.items()
        }
        self._args_ds = f.create_dataset(
            "args", shape=(0,), maxshape=(None,), dtype=_STR, chunks=(4096,), **COMPRESSION
        )
        self._strings: list[str] = []
        self._string_ids: dict[str, int] = {}
        self._tracks: dict[str, list] = {c: [] for c in TRACK_COLUMNS}
        self._labels: list[str] = []
        self._kind_counts: list[np.ndarray] = []
        self._levels: dict[str, list] = {c: [] for c in LEVEL_COLUMNS}
        self._ev_index: list[np.ndarray] = []
        self._lod_index: list[np.ndarray] = []
        self._ranks: list[dict] = []
        self._sources: dict[int, str] = {}
        self._rows = 0
        self._lod_rows = 0
        self._lod_small_rows = 0
        self._long_rows = 0
        self._args_rows = 0

    # -- context manager: commit on success, remove the temporary file on any exception
    def __enter__(self) -> StoreWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        if exc_type is None:
            self.commit()
        else:
            self.abort()
        return False

    def __del__(self) -> None:
        if not getattr(self, "_done", True):
            self.abort()

    def _file(self) -> h5py.File:
        if self._f is None:
            raise ValueError("store writer already committed or aborted")
        return self._f

    def abort(self) -> None:
        """Close and delete the temporary file; ``path`` is left as it was."""
        self._done = True
        if self._f is not None:
            try:
                self._f.close()
            finally:
                self._f = None
        try:
            self._tmp.unlink()
        except FileNotFoundError:
            pass

    def _intern(self, s: str) -> int:
        i = self._string_ids.get(s)
        if i is None:
            i = len(self._strings)
            self._string_ids[s] = i
            self._strings.append(s)
        return i

    def add(self, rt: RankTrace) -> None:
        """Append one rank's events. Raises KatInputError for a missing or duplicate rank."""
        f = self._file()
        if rt.rank is None:
            raise KatInputError(
                rt.source, "rank unknown: give it with --rank (one file) or name files *rank<N>*"
            )
        rank = int(rt.rank)
        if rank in self._sources:
            raise KatInputError(
                rt.source,
                f"rank {rank} is also the rank of {self._sources[rank]}; give each file its own rank",
            )
        try:
            rt.validate()
        except AssertionError as e:
            raise KatInputError(rt.source, f"inconsistent trace data: {e}") from None
        self._sources[rank] = rt.source
        ev = rt.events
        n = len(rt)

        # Local string/args ids -> global ids. The extra trailing -1 maps NO_ID (-1) to itself.
        lut = np.array([self._intern(s) for s in rt.strings] + [NO_ID], dtype=np.int32)
        args_lut = np.full(len(rt.args) + 1, NO_ID, dtype=np.int32)
        if rt.args:
            # Args are deduplicated within the rank only: a run-wide table would grow with the run.
            uniq: dict[str, int] = {}
            local = np.array([uniq.setdefault(a, len(uniq)) for a in rt.args], dtype=np.int32)
            texts = list(uniq)
            ds = self._args_ds
            ds.resize((self._args_rows + len(texts),))
            ds[self._args_rows :] = np.array(texts, dtype=object)
            args_lut[:-1] = local + self._args_rows
            self._args_rows += len(texts)

        # Sort by (track, start_ns, longest first): a parent annotation precedes children starting with it.
        order = np.lexsort((-(ev["end_ns"] - ev["start_ns"]), ev["start_ns"], ev["track"]))
        cols: dict[str, np.ndarray] = {}
        for c in EVENT_COLUMNS:
            col = ev[c][order]
            if c in ("name", "coll", "pg"):
                col = lut[col]
            elif c == "args":
                col = args_lut[col]
            cols[c] = col
        local_track = ev["track"][order]
        del order

        g0 = self._rows
        for c, ds in self._ev.items():
            ds.resize((g0 + n,))
            ds[g0:] = cols[c]
        first_idx = -(-g0 // CHUNK_ROWS) * CHUNK_ROWS
        self._ev_index.append(cols["start_ns"][first_idx - g0 :: CHUNK_ROWS].copy())

        counts = (
            np.bincount(local_track, minlength=len(rt.tracks)) if n else np.zeros(len(rt.tracks), np.int64)
        )
        bounds = np.concatenate(([0], np.cumsum(counts)))
        track_ids = []
        for li, info in enumerate(rt.tracks):
            tid = len(self._labels)
            track_ids.append(tid)
            a, b = int(bounds[li]), int(bounds[li + 1])
            self._add_track(
                tid, rank, info, g0 + a, {c: cols[c][a:b] for c in ("start_ns", "end_ns", "name", "kind")}
            )
        self._rows = g0 + n
        meta = {
            "rank": rank,
            "source": rt.source,
            "format": rt.format,
            "n_events": n,
            "tracks": track_ids,
            "n_strings": len(rt.strings),
            "n_args": len(rt.args),
            "meta": rt.meta,
        }
        _dumps(meta)  # fail now, naming the source, rather than at commit
        self._ranks.append(meta)
        f.flush()

    def _add_track(self, tid: int, rank: int, info: Any, row0: int, cols: dict[str, np.ndarray]) -> None:
        start, end = cols["start_ns"], cols["end_ns"]
        n = len(start)
        dur = end - start
        t = self._tracks
        t["id"].append(tid)
        t["rank"].append(rank)
        t["kind"].append(int(info.kind))
        t["device"].append(int(info.device))
        t["stream"].append(int(info.stream))
        t["pid"].append(int(info.pid))
        t["tid"].append(int(info.tid))
        t["row_offset"].append(row0)
        t["row_count"].append(n)
        t["first_start_ns"].append(int(start[0]) if n else 0)
        t["last_end_ns"].append(int(end.max()) if n else 0)
        t["last_start_ns"].append(int(start[-1]) if n else 0)
        t["max_dur_ns"].append(int(dur.max()) if n else 0)
        self._labels.append(track_label(rank, TrackKind(info.kind), info.device, info.stream, info.tid))
        self._kind_counts.append(np.bincount(cols["kind"], minlength=N_EVENT_KINDS)[:N_EVENT_KINDS])

        n_long = max(LONG_MIN, n // LONG_DIVISOR)
        if n <= n_long:
            lookback = int(dur.max()) if n else 0
            long_rows = np.zeros(0, np.int64)
        else:
            lookback = int(np.partition(dur, n - n_long - 1)[n - n_long - 1])
            long_rows = np.flatnonzero(dur > lookback)
        t["lookback_ns"].append(lookback)
        t["long_offset"].append(self._long_rows)
        t["long_count"].append(len(long_rows))
        if len(long_rows):
            long_cols = {
                "row": long_rows,
                **{c: cols[c][long_rows] for c in ("start_ns", "end_ns", "name", "kind")},
            }
            r0 = self._long_rows
            for c, ds in self._long.items():
                ds.resize((r0 + len(long_rows),))
                ds[r0:] = long_cols[c]
            self._long_rows += len(long_rows)

        for lvl in build_lod(start, end, cols["name"], cols["kind"]):
            m = len(lvl.cols["start_ns"])
            r0 = self._lod_rows
            for c, ds in self._lod.items():
                ds.resize((r0 + m,))
                ds[r0:] = lvl.cols[c]
            first_idx = -(-r0 // CHUNK_ROWS) * CHUNK_ROWS
            self._lod_index.append(lvl.cols["start_ns"][first_idx - r0 :: CHUNK_ROWS].copy())
            for c, v in (
                ("track", tid),
                ("level", lvl.level),
                ("width_ns", lvl.width_ns),
                ("row_offset", r0),
            ):
                self._levels[c].append(v)
            self._levels["row_count"].append(m)
            self._lod_rows = r0 + m
            if m <= LOD_SMALL_ROWS:
                s0 = self._lod_small_rows
                for c, ds in self._lod_small.items():
                    ds.resize((s0 + m,))
                    ds[s0:] = lvl.cols[c]
                self._levels["small_offset"].append(s0)
                self._lod_small_rows = s0 + m
            else:
                self._levels["small_offset"].append(-1)

    def put_json(self, key: str, obj: Any) -> None:
        """Store ``obj`` (JSON-serialisable) under ``/results/<key>`` (e.g. ``topology``)."""
        _put_result(self._file(), key, lambda g, name: _write_json(g, name, obj))

    def put_table(self, key: str, cols: dict[str, np.ndarray]) -> None:
        _put_result(self._file(), key, _write_table(cols))

    def commit(self) -> None:
        """Write the tables and indexes, close, and rename the temporary file onto ``path``."""
        f = self._file()
        try:
            tg = f.create_group("tracks")
            for c, dt in TRACK_COLUMNS.items():
                tg.create_dataset(c, data=np.array(self._tracks[c], dtype=dt))
            tg.create_dataset("label", data=np.array(self._labels, dtype=object), dtype=_STR)
            kc = np.array(self._kind_counts, dtype=np.int64).reshape(-1, N_EVENT_KINDS)
            tg.create_dataset("kind_counts", data=kc)
            lv = f["lod"].create_group("levels")
            for c, dt in LEVEL_COLUMNS.items():
                lv.create_dataset(c, data=np.array(self._levels[c], dtype=dt))
            ig = f.create_group("index")
            ig.attrs["chunk_rows"] = CHUNK_ROWS
            ig.create_dataset(
                "events_start_ns", data=np.concatenate([np.zeros(0, np.int64), *self._ev_index])
            )
            ig.create_dataset("lod_start_ns", data=np.concatenate([np.zeros(0, np.int64), *self._lod_index]))
            f.create_dataset(
                "strings",
                data=np.array(self._strings, dtype=object),
                dtype=_STR,
                chunks=(4096,) if self._strings else None,
                maxshape=(None,),
                **(COMPRESSION if self._strings else {}),
            )
            f.create_dataset("ranks", data=_dumps(self._ranks), dtype=_STR)
            f.attrs["n_events"] = self._rows
            f.close()
            self._f = None
            os.replace(self._tmp, self.path)
            self._done = True
        except BaseException:
            self.abort()
            raise


# ------------------------------------------------------------------------------------------------ reader


class TraceStore:
    """A committed store, opened for reading (``mode="r"``) or for adding results (``mode="r+"``)."""

    @staticmethod
    def create(path: str | os.PathLike, name: str) -> StoreWriter:
        """A writer for a new store at ``path`` (replaced atomically on commit)."""
        return StoreWriter(path, name)

    @classmethod
    def open(cls, path: str | os.PathLike, mode: str = "r") -> TraceStore:
        return cls(path, mode)

    def __init__(self, path: str | os.PathLike, mode: str = "r"):
        if mode not in ("r", "r+"):
            raise ValueError(f"mode must be 'r' or 'r+', not {mode!r}")
        self.path = Path(path)
        self.mode = mode
        if not self.path.exists():
            raise KatInputError(path, "no such file")
        if self.path.is_dir():
            raise KatInputError(path, "is a folder, expected a .kat.h5 store")
        try:
            f = h5py.File(self.path, mode, rdcc_nbytes=CHUNK_CACHE_BYTES, rdcc_nslots=CHUNK_CACHE_SLOTS)
        except OSError as e:
            if not h5py.is_hdf5(self.path):
                raise KatInputError(
                    path, "not a KAT store (not an HDF5 file); create one with `kat ingest`"
                ) from None
            raise KatInputError(path, f"cannot open the store: {e}") from None
        self._f = f
        try:
            self._load()
        except KatInputError:
            f.close()
            raise
        except (KeyError, OSError, ValueError) as e:
            f.close()
            raise KatInputError(path, f"damaged KAT store ({e})") from None

    def _load(self) -> None:
        f = self._f
        if f.attrs.get("kat_store") != STORE_MARKER:
            raise KatInputError(self.path, "an HDF5 file but not a KAT store; create one with `kat ingest`")
        version = int(f.attrs.get("schema_version", -1))
        if version > SCHEMA_VERSION:
            raise KatInputError(
                self.path,
                f"store schema {version} is newer than this KAT supports ({SCHEMA_VERSION}); upgrade KAT",
            )
        if version < 1:
            raise KatInputError(self.path, f"bad store schema version {version}")
        self.schema_version = version
        self.name = str(f.attrs.get("name", self.path.stem))
        self._ev = {c: f["events/" + c] for c in EVENT_COLUMNS}
        self._lod = {c: f["lod/" + c] for c in LOD_COLUMNS}
        self._long = {c: f["long/" + c] for c in LONG_COLUMNS}
        self._t = {c: f["tracks/" + c][:] for c in TRACK_COLUMNS}
        self._kind_counts = f["tracks/kind_counts"][:]
        labels = f["tracks/label"].asstr()[:]
        lv_group = f["lod/levels"]
        lv = {c: lv_group[c][:] for c in LEVEL_COLUMNS if c in lv_group}
        if "small_offset" not in lv or "lod_small" not in f:  # written before /lod_small existed
            lv["small_offset"] = np.full(len(lv["track"]), -1, np.int64)
            self._lod_small_ds: dict[str, h5py.Dataset] | None = None
        else:
            self._lod_small_ds = {c: f["lod_small/" + c] for c in SUMMARY_COLUMNS}
        # /lod_small read whole at the first summary query that needs it; False: too big, read per level.
        self._lod_small: dict[str, np.ndarray] | bool | None = None
        self._ev_index = f["index/events_start_ns"][:]
        self._lod_index = f["index/lod_start_ns"][:]
        self._chunk = int(f["index"].attrs["chunk_rows"])
        self._ranks = json.loads(f["ranks"].asstr()[()])
        self._strings: list[str] | None = None
        self._long_cache: OrderedDict[int, dict[str, np.ndarray]] = OrderedDict()
        # All of /long, read at the first raw query that needs it; False: too big, read per track.
        self._long_all: dict[str, np.ndarray] | bool | None = None
        self._lod_cache: OrderedDict[tuple[int, int], dict[str, np.ndarray]] = OrderedDict()
        self._cache_bytes = 0
        t = self._t
        self._tracks = [
            TrackRow(
                id=int(t["id"][i]),
                rank=int(t["rank"][i]),
                kind=TrackKind(int(t["kind"][i])),
                device=int(t["device"][i]),
                stream=int(t["stream"][i]),
                pid=int(t["pid"][i]),
                tid=int(t["tid"][i]),
                label=str(labels[i]),
                row_offset=int(t["row_offset"][i]),
                row_count=int(t["row_count"][i]),
                first_start_ns=int(t["first_start_ns"][i]),
                last_end_ns=int(t["last_end_ns"][i]),
                max_dur_ns=int(t["max_dur_ns"][i]),
            )
            for i in range(len(labels))
        ]
        # Per track: [(level, width_ns, row_offset, row_count, small_offset)] sorted by level.
        self._levels: list[list[tuple[int, int, int, int, int]]] = [[] for _ in self._tracks]
        for i in np.lexsort((lv["level"], lv["track"])):
            self._levels[int(lv["track"][i])].append(
                (
                    int(lv["level"][i]),
                    int(lv["width_ns"][i]),
                    int(lv["row_offset"][i]),
                    int(lv["row_count"][i]),
                    int(lv["small_offset"][i]),
                )
            )

    # -- lifetime
    def close(self) -> None:
        if self._f is not None:
            self._f.close()
            self._f = None

    def __enter__(self) -> TraceStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- metadata
    @property
    def tracks(self) -> list[TrackRow]:
        return self._tracks

    @property
    def ranks(self) -> list[dict]:
        """Per rank: ``rank``, ``source``, ``format``, ``n_events``, ``tracks`` (ids), ``meta`` (reader's)."""
        return self._ranks

    @property
    def n_events(self) -> int:
        return int(self._t["row_count"].sum())

    @property
    def strings(self) -> list[str]:
        """The run's string table (loaded on first use, then cached)."""
        if self._strings is None:
            self._strings = list(self._f["strings"].asstr()[:])
        return self._strings

    def string(self, string_id: int) -> str:
        """The string with this id; ``""`` for -1 (no string)."""
        if string_id < 0:
            return ""
        if self._strings is not None:
            return self._strings[string_id]
        return self._f["strings"].asstr()[int(string_id)]

    def args(self, args_id: int) -> dict:
        """The args of an event as a dict (``{}`` for -1); text that is not a JSON object comes as ``{"raw": text}``."""
        if args_id < 0:
            return {}
        text = self._f["args"].asstr()[int(args_id)]
        try:
            obj = json.loads(text)
        except ValueError:
            return {"raw": text}
        return obj if isinstance(obj, dict) else {"raw": obj}

    def time_span(self) -> tuple[int, int]:
        """(first start, last end) over all events, ns; (0, 0) for an empty store."""
        has = self._t["row_count"] > 0
        if not has.any():
            return (0, 0)
        return (int(self._t["first_start_ns"][has].min()), int(self._t["last_end_ns"][has].max()))

    def counts_by_kind(self) -> dict[str, int]:
        """Events per EventKind, keyed by the lower-case kind name (every kind, zeros included)."""
        total = self._kind_counts.sum(axis=0) if len(self._kind_counts) else np.zeros(N_EVENT_KINDS, np.int64)
        return {k.name.lower(): int(total[k]) for k in EventKind}

    def counts_by_rank(self) -> dict[int, int]:
        out: dict[int, int] = {}
        for r, c in zip(self._t["rank"], self._t["row_count"], strict=True):
            out[int(r)] = out.get(int(r), 0) + int(c)
        return dict(sorted(out.items()))

    # -- row searches through the chunk index
    def _find(self, ds: h5py.Dataset, index: np.ndarray, lo: int, hi: int, value: int, side: str) -> int:
        """First row in [lo, hi) whose value is >= value (side 'left') or > value ('right'); hi if none.

        Assumes ``ds[lo:hi]`` sorted; ``index[k]`` is ``ds[k * chunk]``. Reads at most one chunk.
        """
        if lo >= hi:
            return lo
        c = self._chunk
        k_lo = -(-lo // c)
        k_hi = -(-hi // c)
        j = int(np.searchsorted(index[k_lo:k_hi], value, side))
        a = lo if j == 0 else (k_lo + j - 1) * c
        b = hi if k_lo + j >= k_hi else (k_lo + j) * c
        if a >= b:
            return a
        block = ds[a:b]
        return a + int(np.searchsorted(block, value, side))

    def _chunk_floor(self, index: np.ndarray, lo: int, hi: int, value: int) -> int:
        """A row ``a`` in [lo, hi] with every row in [lo, a) < value and ``a`` at most one chunk before the
        first row >= value (the start of the chunk holding it). Assumes sorted rows; reads nothing."""
        if lo >= hi:
            return lo
        c = self._chunk
        k_lo = -(-lo // c)
        k_hi = -(-hi // c)
        j = int(np.searchsorted(index[k_lo:k_hi], value, "left"))
        return lo if j == 0 else min(hi, (k_lo + j - 1) * c)

    def _track(self, track: int) -> TrackRow:
        if not 0 <= track < len(self._tracks):
            raise ValueError(f"no track {track} (store has {len(self._tracks)})")
        return self._tracks[track]

    # -- window queries
    def window(
        self, tracks: Iterable[int], t0_ns: int, t1_ns: int, resolution_ns: int = 0
    ) -> dict[int, Window]:
        """Per track, what overlaps ``[t0_ns, t1_ns)``.

        An event overlaps when ``start < t1`` and (``end > t0`` or ``start >= t0``), so zero-length events at
        ``t0`` count. With ``resolution_ns > 0`` (ns per pixel) and more events *starting* in the window than
        ``(t1 - t0) / resolution_ns``, the answer is the coarsest LOD level whose width is <= resolution_ns:
        summary rectangles overlapping ``[t0, t1]`` (a rectangle ending exactly at t0 is included) -- unless
        that level has more than half as many rectangles as the track has events (then raw events).
        """
        t0, t1 = int(t0_ns), int(t1_ns)
        return {int(tr): self._window1(int(tr), t0, t1, int(resolution_ns)) for tr in tracks}

    def _window1(self, track: int, t0: int, t1: int, resolution_ns: int) -> Window:
        row = self._track(track)
        off, cnt = row.row_offset, row.row_count
        end_row = off + cnt
        st = self._ev["start_ns"]
        if cnt == 0 or t1 <= t0 or row.first_start_ns >= t1 or row.last_end_ns < t0:
            return self._empty(track)
        # A window that holds the whole track needs no search (the common full view).
        if t0 <= row.first_start_ns:
            lo_t0 = off
        else:
            lo_t0 = self._find(st, self._ev_index, off, end_row, t0, "left")
        if t1 > self._t["last_start_ns"][track]:
            hi = end_row
        else:
            hi = self._find(st, self._ev_index, lo_t0, end_row, t1, "left")
        if resolution_ns > 0 and (hi - lo_t0) > (t1 - t0) / resolution_ns:
            lvl = None
            for level in self._levels[track]:
                if level[1] <= resolution_ns:
                    lvl = level
            # A level that barely merges (a small or sparse track) costs as much to draw as the raw events
            # and loses the per-event index: answer raw then.
            if lvl is not None and lvl[3] <= row.row_count * LOD_KEEP_FRACTION:
                return self._summary(track, lvl, t0, t1)
        lookback = int(self._t["lookback_ns"][track])
        # The look-back search and the slice read share one read: from the start of the chunk that holds the
        # first start >= t0 - lookback (found in the index), then a search in memory.
        a = self._chunk_floor(self._ev_index, off, lo_t0, t0 - lookback)
        block = st[a:hi]
        lo = a + int(np.searchsorted(block[: lo_t0 - a], t0 - lookback, "left"))
        s = block[lo - a :]
        e = self._ev["end_ns"][lo:hi]
        keep = (e > t0) | (s >= t0)
        name = self._ev["name"][lo:hi][keep]
        kind = self._ev["kind"][lo:hi][keep]
        idx = np.flatnonzero(keep) + (lo - off)
        s, e = s[keep], e[keep]
        long = self._long_events(track)
        if long is not None:
            # Long events at rows >= lo are already in the slice; earlier ones are checked here.
            n_before = int(np.searchsorted(long["row"], lo - off, "left"))
            if n_before:
                ls = long["start_ns"][:n_before]
                le = long["end_ns"][:n_before]
                lk = (le > t0) & (ls < t1)
                if lk.any():
                    s = np.concatenate((ls[lk], s))
                    e = np.concatenate((le[lk], e))
                    name = np.concatenate((long["name"][:n_before][lk], name))
                    kind = np.concatenate((long["kind"][:n_before][lk], kind))
                    idx = np.concatenate((long["row"][:n_before][lk], idx))
        n = len(s)
        return Window(track, s, e, name, kind, np.ones(n, np.int32), idx.astype(np.int64), e - s, False, -1)

    def _long_events(self, track: int) -> dict[str, np.ndarray] | None:
        """The track's /long rows (at most ~1/256 of its events), cached after the first query."""
        lc = int(self._t["long_count"][track])
        if not lc:
            return None
        a = int(self._t["long_offset"][track])
        if self._long_all is None:
            n = len(self._long["row"])
            if n * sum(dt.itemsize for dt in LONG_COLUMNS.values()) > LONG_READ_BYTES:
                self._long_all = False
            else:
                self._long_all = {c: self._long[c][:] for c in LONG_COLUMNS}
                for v in self._long_all.values():
                    v.flags.writeable = False
        if self._long_all:
            return {c: v[a : a + lc] for c, v in self._long_all.items()}
        hit = self._long_cache.get(track)
        if hit is None:
            hit = {c: self._long[c][a : a + lc] for c in LONG_COLUMNS}
            self._cache_put(self._long_cache, track, hit)
        return hit

    def _cache_put(self, cache: OrderedDict, key: Any, value: dict[str, np.ndarray]) -> None:
        cache[key] = value
        self._cache_bytes += sum(v.nbytes for v in value.values())
        while self._cache_bytes > MEMORY_CACHE_BYTES and (len(self._long_cache) + len(self._lod_cache)) > 1:
            victim = self._lod_cache if self._lod_cache else self._long_cache
            _, old = victim.popitem(last=False)
            self._cache_bytes -= sum(v.nbytes for v in old.values())

    def _small_levels(self) -> dict[str, np.ndarray] | None:
        """All of /lod_small (every track's small levels), read once, one read per column; None when the
        store has none or it is larger than LOD_SMALL_READ_BYTES."""
        if self._lod_small is None:
            ds = self._lod_small_ds
            n = len(ds["start_ns"]) if ds is not None else 0
            row_bytes = sum(LOD_COLUMNS[c].itemsize for c in SUMMARY_COLUMNS)
            if ds is None or n * row_bytes > LOD_SMALL_READ_BYTES:
                self._lod_small = False
            else:
                self._lod_small = {c: ds[c][:] for c in SUMMARY_COLUMNS}
                for v in self._lod_small.values():
                    v.flags.writeable = False  # windows are views of it: a caller's edit would stick
        return self._lod_small or None

    def _summary(self, track: int, lvl: tuple[int, int, int, int, int], t0: int, t1: int) -> Window:
        level, _width, off, cnt, small_off = lvl
        names = SUMMARY_COLUMNS
        small = self._small_levels() if small_off >= 0 else None
        if small is not None or cnt <= SMALL_LEVEL_ROWS:
            if small is not None:
                full = {c: small[c][small_off : small_off + cnt] for c in names}  # views, no copy
            else:
                # Coarse levels are small and asked for at every zoomed-out redraw: keep them in memory.
                full = self._lod_cache.get((track, level))
                if full is None:
                    src = self._lod_small_ds if small_off >= 0 else self._lod
                    a = small_off if small_off >= 0 else off
                    full = {c: src[c][a : a + cnt] for c in names}
                    self._cache_put(self._lod_cache, (track, level), full)
                else:
                    self._lod_cache.move_to_end((track, level))
            st_full = full["start_ns"]
            lo = max(0, int(np.searchsorted(st_full, t0, "right")) - 1)
            hi = int(np.searchsorted(st_full, t1, "left"))
            cols = {c: full[c][lo:hi] for c in names}
            lo, hi = lo + off, hi + off
        else:
            st = self._lod["start_ns"]
            end_row = off + cnt
            j = self._find(st, self._lod_index, off, end_row, t0, "right") - 1
            lo = off if j < off else j
            hi = self._find(st, self._lod_index, lo, end_row, t1, "left")
            cols = {c: self._lod[c][lo:hi] for c in names}
        if hi > lo and cols["end_ns"][0] < t0:
            cols = {c: v[1:] for c, v in cols.items()}
        n = len(cols["start_ns"])
        return Window(
            track,
            cols["start_ns"],
            cols["end_ns"],
            cols["name"],
            cols["kind"],
            cols["count"],
            np.full(n, -1, np.int64),
            cols["busy_ns"],
            True,
            level,
        )

    @staticmethod
    def _empty(track: int) -> Window:
        z64 = np.zeros(0, np.int64)
        return Window(
            track, z64, z64.copy(), np.zeros(0, np.int32), np.zeros(0, np.uint8), np.zeros(0, np.int32),
            z64.copy(), z64.copy(), False, -1,
        )  # fmt: skip

    def lod_levels(self, track: int) -> list[tuple[int, int, int]]:
        """Stored summary levels of a track: (level, width_ns, rectangles)."""
        self._track(track)
        return [(lv, w, c) for lv, w, _o, c, _s in self._levels[track]]

    # -- bulk reads (detection)
    def track_events(self, track: int, columns: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        """Every event of one track, sorted by start, as columns (all of EVENT_COLUMNS by default)."""
        row = self._track(track)
        a, b = row.row_offset, row.row_offset + row.row_count
        return {
            c: self._ev[c][a:b] if b > a else np.zeros(0, EVENT_COLUMNS[c]) for c in self._columns(columns)
        }

    def events(
        self, columns: Sequence[str] | None = None, kinds: Iterable[int] | None = None
    ) -> dict[str, np.ndarray]:
        """All events of the run, sorted by (track, start), with a ``track`` column (int32 track id).

        ``kinds`` keeps only those EventKinds. Reads whole columns: meant for detection, not for drawing.
        """
        cols = self._columns(columns)
        n = self.n_events
        counts = self._t["row_count"]
        track = np.repeat(self._t["id"].astype(np.int32), counts)
        mask = None
        if kinds is not None:
            wanted = np.array(sorted({int(k) for k in kinds}), dtype=np.uint8)
            mask = np.isin(self._ev["kind"][:n] if n else np.zeros(0, np.uint8), wanted)
        out = {}
        for c in cols:
            v = self._ev[c][:n] if n else np.zeros(0, EVENT_COLUMNS[c])
            out[c] = v if mask is None else v[mask]
        out["track"] = track if mask is None else track[mask]
        return out

    @staticmethod
    def _columns(columns: Sequence[str] | None) -> list[str]:
        if columns is None:
            return list(EVENT_COLUMNS)
        bad = [c for c in columns if c not in EVENT_COLUMNS]
        if bad:
            raise ValueError(f"unknown event columns {bad}; known: {list(EVENT_COLUMNS)}")
        return list(columns)

    def event(self, track: int, index: int) -> dict[str, Any]:
        """One event (row ``index`` of ``track``) with decoded strings and args, for a details panel.

        Keys: every event column (``name``, ``coll``, ``pg`` as strings, ``""`` when absent; ``args`` as a
        dict), plus ``track``, ``index``, ``rank``, ``name_id``, ``args_id``, ``kind_name``, ``duration_ns``.
        """
        row = self._track(track)
        if not 0 <= index < row.row_count:
            raise IndexError(f"track {track} has {row.row_count} events, no index {index}")
        r = row.row_offset + int(index)
        raw = {c: self._ev[c][r].item() for c in EVENT_COLUMNS}
        out: dict[str, Any] = dict(raw)
        out["name"] = self.string(raw["name"])
        out["coll"] = self.string(raw["coll"])
        out["pg"] = self.string(raw["pg"])
        out["args"] = self.args(raw["args"])
        kind = raw["kind"]
        out.update(
            track=track,
            index=int(index),
            rank=row.rank,
            name_id=raw["name"],
            args_id=raw["args"],
            kind_name=EventKind(kind).name.lower() if kind < N_EVENT_KINDS else str(kind),
            duration_ns=raw["end_ns"] - raw["start_ns"],
        )
        return out

    # -- results (detection, topology, annotations)
    def _writable(self) -> h5py.File:
        if self.mode != "r+":
            raise ValueError(f"{self.path}: store opened read-only; open it with mode='r+' to store results")
        return self._f

    def put_json(self, key: str, obj: Any) -> None:
        """Store ``obj`` as JSON under ``/results/<key>``, replacing any previous value safely."""
        _put_result(self._writable(), key, lambda g, name: _write_json(g, name, obj))

    def get_json(self, key: str, default: Any = None) -> Any:
        node = _get_result(self._f, key)
        if node is None or not isinstance(node, h5py.Dataset):
            return default
        return _read_json_node(node)

    def put_table(self, key: str, cols: dict[str, np.ndarray]) -> None:
        """Store equal-length columns under ``/results/<key>``; string columns become UTF-8 strings."""
        _put_result(self._writable(), key, _write_table(cols))

    def get_table(self, key: str) -> dict[str, np.ndarray] | None:
        """The columns stored by put_table (string columns as object arrays of str), or None."""
        node = _get_result(self._f, key)
        if node is None or not isinstance(node, h5py.Group):
            return None
        return _read_table(node)

    def delete(self, key: str) -> bool:
        """Remove ``/results/<key>``; False when there was nothing to remove."""
        f = self._writable()
        path = _result_path(key)
        found = False
        for candidate in (path, path + "~old", path + "~new"):
            if candidate in f:
                del f[candidate]
                found = True
        f.flush()
        return found

    def result_keys(self) -> list[str]:
        """Keys stored under ``/results`` (e.g. ``["detect/anomalies", "topology"]``)."""
        if "results" not in self._f:
            return []
        keys: set[str] = set()

        def walk(grp: h5py.Group, prefix: str) -> None:
            for name, node in grp.items():
                key = prefix + name.split("~", 1)[0]
                if isinstance(node, h5py.Dataset) or "columns" in node.attrs or "~" in name:
                    keys.add(key)
                else:
                    walk(node, key + "/")

        walk(self._f["results"], "")
        return sorted(keys)
