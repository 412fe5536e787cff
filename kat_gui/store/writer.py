"""The streaming, atomic store writer: one :class:`RankTrace` at a time into a temporary file, renamed on commit.

Per rank, :meth:`StoreWriter.add` maps the rank's local string and args ids to run-wide ids, sorts the events
by (track, start_ns, longest first), appends them to ``/events``, and per track builds the summary levels
(``/lod``, small ones also in ``/lod_small``) and the list of its longest events (``/long``). ``commit`` writes
the small tables (``/tracks``, ``/lod/levels``, ``/index``, ``/strings``, ``/ranks``) and ``os.replace``s the
file onto its path; any exception removes the temporary file instead.

Assumptions: ``RankTrace.validate()`` holds (equal-length columns, local ids in range, ``end_ns >= start_ns``);
each rank is added once. Units: ns for every time (int64), rows for offsets and counts. Memory: one rank's
columns plus a sorted copy, and the run's string table; earlier ranks are already on disk.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from kat_gui.errors import KatInputError
from kat_gui.events import EVENT_COLUMNS, NO_ID, SCHEMA_VERSION, RankTrace, TrackInfo, TrackKind, track_label
from kat_gui.store.layout import (
    LEVEL_COLUMNS,
    LONG_COLUMNS,
    N_EVENT_KINDS,
    STORE_MARKER,
    STR_DTYPE,
    TRACK_COLUMNS,
)
from kat_gui.store.lod import LOD_COLUMNS, build_lod
from kat_gui.store.results import ResultWriting, dumps

# Module globals read at write time, so a test or benchmark may patch them on this module.
CHUNK_ROWS = 16_384  # rows per chunk of /events and /lod (and /lod_small); also the /index stride
# Rows per chunk of the side datasets (/long, /args, /strings).
SIDE_CHUNK_ROWS = 4096
# gzip level 1 + shuffle: readable by every HDF5 build; see docs/store-format.md for the lzf comparison.
COMPRESSION: dict[str, Any] = {"compression": "gzip", "compression_opts": 1, "shuffle": True}
# Stored levels of at most this many rectangles are also copied, back to back for all tracks, into /lod_small:
# a zoomed-out view of every track is then answered from one read per column (at the first such query)
# instead of one read per column and track (~0.4 ms each, ~6 per track: 0.4 s for 128 tracks).
# Each stored level has at most half the rectangles of the previous one, so a track copies < 2x this many.
LOD_SMALL_ROWS = 2_048
# Per track, the longest max(LONG_MIN, n // LONG_DIVISOR) events are kept in a side list (/long) so that the
# look-back of a window query is bounded by the longest *ordinary* event, not by one annotation that spans
# the whole run (which would make every query on that thread read the thread from its start).
LONG_MIN = 64
LONG_DIVISOR = 256


def _column_datasets(
    group: h5py.Group, columns: dict[str, np.dtype], chunk_rows: int
) -> dict[str, h5py.Dataset]:
    """One empty, resizable, compressed 1-D dataset per column in ``group``."""
    return {
        c: group.create_dataset(
            c, shape=(0,), maxshape=(None,), dtype=dt, chunks=(chunk_rows,), **COMPRESSION
        )
        for c, dt in columns.items()
    }


def _append(datasets: dict[str, h5py.Dataset], row0: int, n: int, cols: dict[str, np.ndarray]) -> None:
    """Grow every dataset to ``row0 + n`` rows and write ``cols`` (``n`` rows each) at ``row0``."""
    for c, ds in datasets.items():
        ds.resize((row0 + n,))
        ds[row0:] = cols[c]


def _chunk_index(start_ns: np.ndarray, row0: int) -> np.ndarray:
    """The entries of a chunk index (the start of every CHUNK_ROWS-th row of the dataset) that fall among
    ``start_ns``, the rows just written at ``row0``."""
    first_idx = -(-row0 // CHUNK_ROWS) * CHUNK_ROWS
    return start_ns[first_idx - row0 :: CHUNK_ROWS].copy()


class StoreWriter(ResultWriting):
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
        self._ev = _column_datasets(f.create_group("events"), EVENT_COLUMNS, CHUNK_ROWS)
        self._lod = _column_datasets(f.create_group("lod"), LOD_COLUMNS, CHUNK_ROWS)
        self._lod_small = _column_datasets(f.create_group("lod_small"), LOD_COLUMNS, CHUNK_ROWS)
        self._long = _column_datasets(f.create_group("long"), LONG_COLUMNS, SIDE_CHUNK_ROWS)
        self._args_ds = f.create_dataset(
            "args", shape=(0,), maxshape=(None,), dtype=STR_DTYPE, chunks=(SIDE_CHUNK_ROWS,), **COMPRESSION
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

    def _writable(self) -> h5py.File:
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
        f = self._writable()
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
        _append(self._ev, g0, n, cols)
        self._ev_index.append(_chunk_index(cols["start_ns"], g0))

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
        dumps(meta)  # fail now, naming the source, rather than at commit
        self._ranks.append(meta)
        f.flush()

    def _add_track(
        self, tid: int, rank: int, info: TrackInfo, row0: int, cols: dict[str, np.ndarray]
    ) -> None:
        """Record one track (its sorted rows already in /events at ``row0``): its /tracks row, its /long
        rows and its summary levels."""
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
            _append(self._long, self._long_rows, len(long_rows), long_cols)
            self._long_rows += len(long_rows)

        for lvl in build_lod(start, end, cols["name"], cols["kind"]):
            m = len(lvl.cols["start_ns"])
            r0 = self._lod_rows
            _append(self._lod, r0, m, lvl.cols)
            self._lod_index.append(_chunk_index(lvl.cols["start_ns"], r0))
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
                _append(self._lod_small, s0, m, lvl.cols)
                self._levels["small_offset"].append(s0)
                self._lod_small_rows = s0 + m
            else:
                self._levels["small_offset"].append(-1)

    def commit(self) -> None:
        """Write the tables and indexes, close, and rename the temporary file onto ``path``."""
        f = self._writable()
        try:
            tg = f.create_group("tracks")
            for c, dt in TRACK_COLUMNS.items():
                tg.create_dataset(c, data=np.array(self._tracks[c], dtype=dt))
            tg.create_dataset("label", data=np.array(self._labels, dtype=object), dtype=STR_DTYPE)
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
                dtype=STR_DTYPE,
                chunks=(SIDE_CHUNK_ROWS,) if self._strings else None,
                maxshape=(None,),
                **(COMPRESSION if self._strings else {}),
            )
            f.create_dataset("ranks", data=dumps(self._ranks), dtype=STR_DTYPE)
            f.attrs["n_events"] = self._rows
            f.close()
            self._f = None
            os.replace(self._tmp, self.path)
            self._done = True
        except BaseException:
            self.abort()
            raise
