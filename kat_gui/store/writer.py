"""The streaming, atomic store writer: one :class:`RankTrace` at a time into a temporary file, renamed on commit.

Per rank, :meth:`StoreWriter.add` maps the rank's local string and args ids to run-wide ids, sorts the events
by (track, start_ns, longest first), appends them to ``/events``, and per track builds the summary levels
(``/lod``, small ones also in ``/lod_small``) and the list of its longest events (``/long``). ``commit`` writes
the small tables (``/tracks``, ``/lod/levels``, ``/index``, ``/strings``, ``/ranks``) and ``os.replace``s the
file onto its path; any exception removes the temporary file instead.

``add`` is three steps (``prepared.py``): :func:`~kat_gui.store.prepared.prepare_rank` (sort and summarise,
local ids), :meth:`StoreWriter.place` (intern the strings, reserve rows) and
:func:`~kat_gui.store.prepared.encode_rank` (run-wide ids, whole chunks deflated), then
:meth:`StoreWriter.add_encoded`. A parallel ingest runs the first and third in dask workers and calls
``place`` and ``add_encoded`` here, in rank order (``kat_gui.pipeline``): the file is the same.

Assumptions: ``RankTrace.validate()`` holds (equal-length columns, local ids in range, ``end_ns >= start_ns``);
each rank is added once. Units: ns for every time (int64), rows for offsets and counts. Memory: one rank's
columns plus a sorted copy, and the run's string table; earlier ranks are already on disk.
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from kat_gui.errors import KatInputError
from kat_gui.events import EVENT_COLUMNS, NO_ID, SCHEMA_VERSION, RankTrace
from kat_gui.store.layout import (
    LEVEL_COLUMNS,
    LONG_COLUMNS,
    N_EVENT_KINDS,
    STORE_MARKER,
    STR_DTYPE,
    TRACK_COLUMNS,
)
from kat_gui.store.lod import LOD_COLUMNS
from kat_gui.store.prepared import (
    ChunkedColumns,
    EncodedRank,
    Layout,
    Placement,
    RankHeader,
    encode_chunk,
    encode_rank,
    prepare_rank,
)
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
_DEFAULT_COMPRESSION = dict(COMPRESSION)


def layout() -> Layout:
    """The layout parameters of this module, as they are now (tests and benchmarks patch them)."""
    return Layout(
        chunk_rows=CHUNK_ROWS,
        long_min=LONG_MIN,
        long_divisor=LONG_DIVISOR,
        lod_small_rows=LOD_SMALL_ROWS,
        encode_chunks=COMPRESSION == _DEFAULT_COMPRESSION,
    )


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


class _ChunkedGroup:
    """The resizable datasets of one chunked group (``/events`` or ``/lod``) written from
    :class:`~kat_gui.store.prepared.ChunkedColumns`: whole chunks are copied in encoded, and the rows of the
    chunk not yet complete wait here (``pending``, from row ``pending_row0``, a chunk boundary) until the next
    rank, or the commit, completes it."""

    def __init__(self, datasets: dict[str, h5py.Dataset], chunk_rows: int):
        self.ds = datasets
        self.chunk_rows = chunk_rows
        self.rows = 0  # rows received
        self.pending: dict[str, list[np.ndarray]] = {c: [] for c in datasets}
        self.n_pending = 0
        self.pending_row0 = 0

    def add(self, part: ChunkedColumns, encoded: bool) -> None:
        if part.row0 != self.rows:
            raise ValueError(f"rows out of order: got {part.row0}, expected {self.rows}")
        end = part.row0 + part.n
        if not encoded:  # other filters than the default: h5py compresses
            if part.n:
                _append(self.ds, part.row0, part.n, part.head)
            self.rows = end
            return
        if part.n:
            for ds in self.ds.values():
                ds.resize((end,))
        self._take(part.head, part.row0)
        for c, chunks in part.chunks.items():
            for j, data in enumerate(chunks):
                self.ds[c].id.write_direct_chunk(((part.first_chunk + j) * self.chunk_rows,), data, 0)
        n_tail = len(next(iter(part.tail.values()))) if part.tail else 0
        self._take(part.tail, end - n_tail)
        self.rows = end

    def _take(self, cols: dict[str, np.ndarray], row0: int) -> None:
        n = len(next(iter(cols.values()))) if cols else 0
        if not n:
            return
        if not self.n_pending:
            self.pending_row0 = row0
        if self.pending_row0 + self.n_pending != row0 or self.pending_row0 % self.chunk_rows:
            raise ValueError(f"pending rows out of order at row {row0}")
        for c in self.ds:
            self.pending[c].append(cols[c])
        self.n_pending += n
        if self.n_pending == self.chunk_rows:
            self.flush()

    def flush(self) -> None:
        """Write the pending rows as one chunk (at commit: the dataset's last chunk, padded with zeros)."""
        if not self.n_pending:
            return
        for c, parts in self.pending.items():
            data = encode_chunk(np.concatenate(parts), self.chunk_rows)
            self.ds[c].id.write_direct_chunk((self.pending_row0,), data, 0)
            self.pending[c] = []
        self.n_pending = 0


def _storable(s: str) -> str:
    """A string as HDF5 can hold it: NUL (which ends a C string) as U+FFFD, text that is not valid Unicode (a
    lone surrogate from a damaged trace) with backslash escapes. Other strings are stored as they are."""
    if "\x00" in s:
        s = s.replace("\x00", "\ufffd")
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        s = s.encode("utf-8", "backslashreplace").decode("utf-8")
    return s


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
        self._chunk_rows = CHUNK_ROWS
        self._encode_chunks = COMPRESSION == _DEFAULT_COMPRESSION
        self._events = _ChunkedGroup(
            _column_datasets(f.create_group("events"), EVENT_COLUMNS, CHUNK_ROWS), CHUNK_ROWS
        )
        self._lodg = _ChunkedGroup(
            _column_datasets(f.create_group("lod"), LOD_COLUMNS, CHUNK_ROWS), CHUNK_ROWS
        )
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
        self._lod_small_rows = 0
        self._long_rows = 0
        self._args_rows = 0
        # The next free row of each dataset (and track id), as reserved by place().
        self._next = dict.fromkeys(("tracks", "rows", "args", "lod", "lod_small", "long"), 0)

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
            self._strings.append(_storable(s))
        return i

    def layout(self) -> Layout:
        """The layout a rank added now gets: this file's chunking and filters, the module's current limits."""
        return replace(layout(), chunk_rows=self._chunk_rows, encode_chunks=self._encode_chunks)

    def add(self, rt: RankTrace) -> None:
        """Append one rank's events. Raises KatInputError for a missing or duplicate rank."""
        self._check_rank(rt.rank, rt.source)
        prep = prepare_rank(rt, self.layout())
        self.add_encoded(encode_rank(prep, self.place(prep.header)))

    def _check_rank(self, rank: int | None, source: str) -> int:
        if rank is None:
            raise KatInputError(
                source, "rank unknown: give it with --rank (one file) or name files *rank<N>*"
            )
        rank = int(rank)
        if rank in self._sources:
            raise KatInputError(
                source, f"rank {rank} is also the rank of {self._sources[rank]}; give each file its own rank"
            )
        return rank

    def place(self, header: RankHeader, rank: int | None = None, meta: dict | None = None) -> Placement:
        """Reserve a prepared rank's place in the run: intern its strings, take the next rows of every dataset.
        ``rank``/``meta`` override the header's (a parallel ingest resolves ranks after reading). Ranks are
        written by :meth:`add_encoded` in the order they were placed."""
        self._writable()
        rank = self._check_rank(header.rank if rank is None else rank, header.source)
        self._sources[rank] = header.source
        # Local string ids -> global ids. The extra trailing -1 maps NO_ID (-1) to itself.
        lut = np.array([self._intern(s) for s in header.strings] + [NO_ID], dtype=np.int32)
        nxt = self._next
        pl = Placement(
            rank=rank,
            meta=header.meta if meta is None else meta,
            lut=lut,
            track0=nxt["tracks"],
            row0=nxt["rows"],
            args_row0=nxt["args"],
            lod_row0=nxt["lod"],
            lod_small_row0=nxt["lod_small"],
            long_row0=nxt["long"],
        )
        nxt["tracks"] += header.n_tracks
        nxt["rows"] += header.n_events
        nxt["args"] += header.n_args_unique
        nxt["lod"] += header.n_lod
        nxt["lod_small"] += header.n_lod_small
        nxt["long"] += header.n_long
        return pl

    def add_encoded(self, enc: EncodedRank) -> None:
        """Write a placed, encoded rank (placements in order; see the module docstring)."""
        self._writable()
        pl = enc.placement
        if pl.row0 != self._rows or pl.track0 != len(self._labels):
            raise ValueError("ranks must be written in the order they were placed")
        if enc.args_texts:
            ds = self._args_ds
            ds.resize((self._args_rows + len(enc.args_texts),))
            ds[self._args_rows :] = np.array(enc.args_texts, dtype=object)
            self._args_rows += len(enc.args_texts)
        self._events.add(enc.events, self._encode_chunks)
        self._ev_index.append(enc.event_index)
        self._lodg.add(enc.lod, self._encode_chunks)
        self._lod_index.append(enc.lod_index)
        m = len(enc.lod_small["start_ns"])
        if m:
            _append(self._lod_small, self._lod_small_rows, m, enc.lod_small)
            self._lod_small_rows += m
        m = len(enc.long["row"])
        if m:
            _append(self._long, self._long_rows, m, enc.long)
            self._long_rows += m
        for c in TRACK_COLUMNS:
            self._tracks[c].extend(enc.tracks[c])
        self._labels.extend(enc.labels)
        self._kind_counts.extend(enc.kind_counts)
        for c in LEVEL_COLUMNS:
            self._levels[c].extend(enc.levels[c])
        self._rows = pl.row0 + enc.events.n
        self._ranks.append(enc.rank_meta)
        # No flush per rank: whole chunks are already on disk, the rest waits in bounded HDF5 caches until
        # commit (a flush per rank was a third of the writer's time).

    def commit(self) -> None:
        """Write the tables and indexes, close, and rename the temporary file onto ``path``."""
        f = self._writable()
        try:
            if self._next["rows"] != self._rows:
                raise ValueError("a placed rank was never written")
            self._events.flush()
            self._lodg.flush()
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
            ig.attrs["chunk_rows"] = self._chunk_rows
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
