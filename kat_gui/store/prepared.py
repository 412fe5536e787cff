"""One rank's share of a store, computed apart from the file: what :meth:`StoreWriter.add` does to a rank, split
so that the heavy part can run in a dask worker while one process writes the file.

1. :func:`prepare_rank` (anywhere; needs nothing of the run): validates the :class:`RankTrace`, sorts its events
   by (track, start_ns, longest first), deduplicates its args texts, and per track computes the summary values
   of ``/tracks``, the ``/long`` rows and the level-of-detail levels, all with the rank's *local* string ids.
   Its :class:`RankHeader` (small) is what the writer needs to place the rank.
2. :meth:`StoreWriter.place` (the writer, in rank order): interns the rank's strings into the run's table and
   reserves the rank's rows in every dataset (:class:`Placement`).
3. :func:`encode_rank` (anywhere): maps local ids to run-wide ones and cuts every column of ``/events`` and
   ``/lod`` at the dataset's chunk boundaries (every ``chunk_rows`` rows from row 0): the rows before the
   first boundary and after the last stay raw (the writer completes those chunks with its neighbours' rows);
   every whole chunk in between is encoded as HDF5 stores it (shuffle, then a deflate stream: the datasets'
   filters; ISA-L's deflate when ``isal`` is installed, zlib's otherwise), so the writer copies the bytes into
   the file unchanged (``write_direct_chunk``).
4. :meth:`StoreWriter.add_encoded` (the writer, in placement order) writes it.

The file's content is identical to writing the same ranks one after the other (same rows, same ids, same
chunk boundaries); only the compressed bytes of a chunk could differ from what libhdf5's own deflate would
write, and they decode to the same values. Units: ns for times, rows for offsets.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from kat_gui.errors import KatInputError
from kat_gui.events import EVENT_COLUMNS, NO_ID, RankTrace, TrackInfo, TrackKind, track_label
from kat_gui.store.layout import LEVEL_COLUMNS, LONG_COLUMNS, N_EVENT_KINDS, TRACK_COLUMNS
from kat_gui.store.lod import LOD_COLUMNS, build_lod
from kat_gui.store.results import dumps

# The deflate level of the datasets' gzip filter (writer.COMPRESSION).
DEFLATE_LEVEL = 1
try:  # ISA-L's deflate: ~9x zlib's speed at level 1, a zlib stream any HDF5 inflates (requirements/runtime.txt)
    from isal.isal_zlib import compress as _deflate
except ImportError:  # pragma: no cover - the stdlib's, when isal is not installed
    _deflate = zlib.compress
# Columns whose values are ids into the run's string table (mapped from the rank's local ids).
STRING_COLUMNS = ("name", "coll", "pg")


@dataclass(frozen=True)
class Layout:
    """The writer's layout parameters (``writer.py`` globals, read when a rank is added): rows per chunk of
    ``/events`` and ``/lod``, the ``/long`` share (``max(long_min, n // long_divisor)`` per track), the largest
    level copied into ``/lod_small``, and whether whole chunks are encoded here (only for the default gzip 1 +
    shuffle filters; other filters, which a benchmark may set, are left to h5py)."""

    chunk_rows: int
    long_min: int
    long_divisor: int
    lod_small_rows: int
    encode_chunks: bool


@dataclass
class PreparedTrack:
    """One track of a prepared rank: its rows in the rank's sorted columns and everything derived from them."""

    info: TrackInfo
    row0: int  # first row within the rank
    n: int
    summary: dict[str, int]  # first_start_ns, last_end_ns, last_start_ns, max_dur_ns, lookback_ns
    kind_counts: np.ndarray
    long_cols: dict[str, np.ndarray]  # LONG_COLUMNS, names local
    levels: list  # lod.LodLevel, names local


@dataclass
class RankHeader:
    """What the writer needs to place a rank (small): its identity, sizes and local string table."""

    rank: int | None
    source: str
    format: str
    n_events: int
    strings: list[str]
    n_args: int  # args texts of the trace (before deduplication)
    n_args_unique: int
    n_lod: int  # /lod rows of all its tracks
    n_lod_small: int  # rows it copies into /lod_small
    n_long: int
    n_tracks: int
    meta: dict[str, Any]


@dataclass
class PreparedRank:
    """A validated, sorted rank with its summaries, in local ids (:func:`prepare_rank`)."""

    header: RankHeader
    cols: dict[str, np.ndarray]  # EVENT_COLUMNS sorted; name/coll/pg local string ids, args local unique ids
    args_texts: list[str]
    tracks: list[PreparedTrack]
    layout: Layout


@dataclass
class Placement:
    """Where a rank goes in the run (:meth:`StoreWriter.place`): its rank, its final metadata, the local ->
    run-wide string ids (``lut``, with a trailing -1 for NO_ID) and the first row it takes in each dataset."""

    rank: int
    meta: dict[str, Any]
    lut: np.ndarray
    track0: int
    row0: int
    args_row0: int
    lod_row0: int
    lod_small_row0: int
    long_row0: int


@dataclass
class ChunkedColumns:
    """Rows ``row0 .. row0 + n`` of a chunked dataset group, cut at its chunk boundaries: ``head`` (raw, up to
    the first boundary), ``chunks`` (one list of encoded chunks per column, from chunk ``first_chunk`` on) and
    ``tail`` (raw, after the last whole chunk)."""

    row0: int
    n: int
    head: dict[str, np.ndarray]
    first_chunk: int
    chunks: dict[str, list[bytes]]
    tail: dict[str, np.ndarray]


@dataclass
class EncodedRank:
    """A placed rank ready to be written (:func:`encode_rank`)."""

    placement: Placement
    events: ChunkedColumns
    event_index: np.ndarray  # /index/events_start_ns entries among the rank's rows
    lod: ChunkedColumns
    lod_index: np.ndarray
    lod_small: dict[str, np.ndarray]
    levels: dict[str, list]  # LEVEL_COLUMNS rows
    long: dict[str, np.ndarray]
    tracks: dict[str, list]  # TRACK_COLUMNS rows
    labels: list[str]
    kind_counts: list[np.ndarray]
    args_texts: list[str]
    rank_meta: dict[str, Any] = field(default_factory=dict)


def prepare_rank(rt: RankTrace, layout: Layout) -> PreparedRank:
    """Validate and sort one rank and compute its per-track summaries (see the module docstring)."""
    try:
        rt.validate()
    except AssertionError as e:
        raise KatInputError(rt.source, f"inconsistent trace data: {e}") from None
    ev = rt.events
    n = len(rt)
    # Args are deduplicated within the rank only: a run-wide table would grow with the run.
    uniq: dict[str, int] = {}
    local = np.array([uniq.setdefault(a, len(uniq)) for a in rt.args], dtype=np.int32)
    args_lut = np.full(len(rt.args) + 1, NO_ID, dtype=np.int32)
    args_lut[:-1] = local
    # Sort by (track, start_ns, longest first): a parent annotation precedes children starting with it.
    order = np.lexsort((-(ev["end_ns"] - ev["start_ns"]), ev["start_ns"], ev["track"]))
    cols: dict[str, np.ndarray] = {}
    for c in EVENT_COLUMNS:
        col = ev[c][order]
        if c == "args":
            col = args_lut[col]
        cols[c] = col
    local_track = ev["track"][order]
    del order

    counts = np.bincount(local_track, minlength=len(rt.tracks)) if n else np.zeros(len(rt.tracks), np.int64)
    bounds = np.concatenate(([0], np.cumsum(counts)))
    tracks = []
    for li, info in enumerate(rt.tracks):
        a, b = int(bounds[li]), int(bounds[li + 1])
        tracks.append(
            _prepare_track(info, a, {c: cols[c][a:b] for c in ("start_ns", "end_ns", "name", "kind")}, layout)
        )
    header = RankHeader(
        rank=None if rt.rank is None else int(rt.rank),
        source=rt.source,
        format=rt.format,
        n_events=n,
        strings=list(rt.strings),
        n_args=len(rt.args),
        n_args_unique=len(uniq),
        n_lod=sum(len(lvl.cols["start_ns"]) for t in tracks for lvl in t.levels),
        n_lod_small=sum(
            len(lvl.cols["start_ns"])
            for t in tracks
            for lvl in t.levels
            if len(lvl.cols["start_ns"]) <= layout.lod_small_rows
        ),
        n_long=sum(len(t.long_cols["row"]) for t in tracks),
        n_tracks=len(tracks),
        meta=rt.meta,
    )
    return PreparedRank(header, cols, list(uniq), tracks, layout)


def _prepare_track(info: TrackInfo, row0: int, cols: dict[str, np.ndarray], layout: Layout) -> PreparedTrack:
    """One track's /tracks values, /long rows and summary levels (its rows sorted, local names)."""
    start, end = cols["start_ns"], cols["end_ns"]
    n = len(start)
    dur = end - start
    n_long = max(layout.long_min, n // layout.long_divisor)
    if n <= n_long:
        lookback = int(dur.max()) if n else 0
        long_rows = np.zeros(0, np.int64)
    else:
        lookback = int(np.partition(dur, n - n_long - 1)[n - n_long - 1])
        long_rows = np.flatnonzero(dur > lookback)
    summary = {
        "first_start_ns": int(start[0]) if n else 0,
        "last_end_ns": int(end.max()) if n else 0,
        "last_start_ns": int(start[-1]) if n else 0,
        "max_dur_ns": int(dur.max()) if n else 0,
        "lookback_ns": lookback,
    }
    long_cols = {"row": long_rows, **{c: cols[c][long_rows] for c in ("start_ns", "end_ns", "name", "kind")}}
    return PreparedTrack(
        info,
        row0,
        n,
        summary,
        np.bincount(cols["kind"], minlength=N_EVENT_KINDS)[:N_EVENT_KINDS],
        long_cols,
        build_lod(start, end, cols["name"], cols["kind"]),
    )


def encode_rank(prep: PreparedRank, pl: Placement) -> EncodedRank:
    """Map a prepared rank to run-wide ids at its placement and encode its whole chunks."""
    lut = pl.lut
    lay = prep.layout
    cols = dict(prep.cols)
    for c in STRING_COLUMNS:
        cols[c] = lut[cols[c]]
    args = cols["args"]
    cols["args"] = np.where(args >= 0, args + np.int32(pl.args_row0), NO_ID).astype(np.int32)
    events = chunk_columns(cols, pl.row0, lay.chunk_rows, lay.encode_chunks)
    event_index = chunk_index(cols["start_ns"], pl.row0, lay.chunk_rows)
    del cols

    tracks: dict[str, list] = {c: [] for c in TRACK_COLUMNS}
    levels: dict[str, list] = {c: [] for c in LEVEL_COLUMNS}
    labels: list[str] = []
    kind_counts: list[np.ndarray] = []
    lod_parts: list[dict[str, np.ndarray]] = []
    small_parts: list[dict[str, np.ndarray]] = []
    long_parts: list[dict[str, np.ndarray]] = []
    lod_row, small_row, long_row = pl.lod_row0, pl.lod_small_row0, pl.long_row0
    track_ids = []
    for i, t in enumerate(prep.tracks):
        tid = pl.track0 + i
        track_ids.append(tid)
        info = t.info
        for c, v in (
            ("id", tid),
            ("rank", pl.rank),
            ("kind", int(info.kind)),
            ("device", int(info.device)),
            ("stream", int(info.stream)),
            ("pid", int(info.pid)),
            ("tid", int(info.tid)),
            ("row_offset", pl.row0 + t.row0),
            ("row_count", t.n),
            *t.summary.items(),
            ("long_offset", long_row),
            ("long_count", len(t.long_cols["row"])),
        ):
            tracks[c].append(v)
        labels.append(track_label(pl.rank, TrackKind(info.kind), info.device, info.stream, info.tid))
        kind_counts.append(t.kind_counts)
        if len(t.long_cols["row"]):
            long_parts.append({**t.long_cols, "name": lut[t.long_cols["name"]]})
            long_row += len(t.long_cols["row"])
        for lvl in t.levels:
            m = len(lvl.cols["start_ns"])
            lcols = {**lvl.cols, "name": lut[lvl.cols["name"]]}
            lod_parts.append(lcols)
            for c, v in (
                ("track", tid),
                ("level", lvl.level),
                ("width_ns", lvl.width_ns),
                ("row_offset", lod_row),
            ):
                levels[c].append(v)
            levels["row_count"].append(m)
            lod_row += m
            if m <= lay.lod_small_rows:
                small_parts.append(lcols)
                levels["small_offset"].append(small_row)
                small_row += m
            else:
                levels["small_offset"].append(-1)
    lod_cols = _concat(lod_parts, LOD_COLUMNS)
    rank_meta = {
        "rank": pl.rank,
        "source": prep.header.source,
        "format": prep.header.format,
        "n_events": prep.header.n_events,
        "tracks": track_ids,
        "n_strings": len(prep.header.strings),
        "n_args": prep.header.n_args,
        "meta": pl.meta,
    }
    dumps(rank_meta)  # fail now, naming the source, rather than at commit
    return EncodedRank(
        placement=pl,
        events=events,
        event_index=event_index,
        lod=chunk_columns(lod_cols, pl.lod_row0, lay.chunk_rows, lay.encode_chunks),
        lod_index=chunk_index(lod_cols["start_ns"], pl.lod_row0, lay.chunk_rows),
        lod_small=_concat(small_parts, LOD_COLUMNS),
        levels=levels,
        long=_concat(long_parts, LONG_COLUMNS),
        tracks=tracks,
        labels=labels,
        kind_counts=kind_counts,
        args_texts=prep.args_texts,
        rank_meta=rank_meta,
    )


def _concat(parts: list[dict[str, np.ndarray]], columns: dict[str, np.dtype]) -> dict[str, np.ndarray]:
    return {
        c: np.concatenate([np.zeros(0, dt), *(p[c] for p in parts)]).astype(dt, copy=False)
        for c, dt in columns.items()
    }


def chunk_index(start_ns: np.ndarray, row0: int, chunk_rows: int) -> np.ndarray:
    """The entries of a chunk index (the start of every ``chunk_rows``-th row of the dataset) that fall among
    ``start_ns``, the rows written at ``row0``."""
    first_idx = -(-row0 // chunk_rows) * chunk_rows
    return start_ns[first_idx - row0 :: chunk_rows].copy()


def chunk_columns(
    cols: dict[str, np.ndarray], row0: int, chunk_rows: int, encode: bool = True
) -> ChunkedColumns:
    """Cut columns written at ``row0`` at the dataset's chunk boundaries and encode the whole chunks (with
    ``encode`` False, every row stays raw, in ``head``)."""
    n = len(next(iter(cols.values()))) if cols else 0
    h = min(n, (-row0) % chunk_rows) if encode else n
    k = (n - h) // chunk_rows
    body_end = h + k * chunk_rows
    return ChunkedColumns(
        row0=row0,
        n=n,
        head={c: v[:h].copy() for c, v in cols.items()},
        first_chunk=(row0 + h) // chunk_rows,
        chunks={
            c: [encode_chunk(v[h + j * chunk_rows : h + (j + 1) * chunk_rows], chunk_rows) for j in range(k)]
            for c, v in cols.items()
        },
        tail={c: v[body_end:].copy() for c, v in cols.items()},
    )


def encode_chunk(values: np.ndarray, chunk_rows: int) -> bytes:
    """One chunk of a 1-D dataset as its gzip + shuffle filters store it; a short chunk (the dataset's last)
    is padded with the fill value 0, as HDF5 does."""
    v = np.ascontiguousarray(values)
    if len(v) < chunk_rows:
        v = np.concatenate([v, np.zeros(chunk_rows - len(v), v.dtype)])
    size = v.dtype.itemsize
    raw = v.view(np.uint8).reshape(chunk_rows, size).T.tobytes() if size > 1 else v.tobytes()
    return _deflate(raw, DEFLATE_LEVEL)
