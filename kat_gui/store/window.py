"""Window queries: what one track shows in ``[t0, t1)`` at a given resolution, read with as few HDF5 reads as
the layout allows.

A query answers raw events (rows of ``/events``) or, when more events start in the window than it has pixels
and a stored level merges enough, the rectangles of one level-of-detail summary level (``/lod`` or its copy
``/lod_small``). The searches go through the chunk index (``/index``: the start of every chunk's first row),
so a query reads at most one chunk of ``start_ns`` per search and then only the rows it returns. The
look-back (events that start before ``t0`` and still cover it) is bounded by the track's ``lookback_ns``; the
few longer events come from the track's ``/long`` list.

Assumptions: each track's rows are sorted by ``start_ns``, as the writer stores them; summary rectangles of a
level are disjoint and sorted. Units: ns for times and resolutions (ns per pixel), rows for offsets. Memory:
small levels, ``/lod_small`` and ``/long`` are cached (see the constants below); large levels are not.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, NamedTuple

import h5py
import numpy as np

from kat_gui.store.layout import LONG_COLUMNS, SUMMARY_COLUMNS, TrackRow, Window
from kat_gui.store.lod import LOD_COLUMNS, LOD_KEEP_FRACTION

# Summary levels up to this many rectangles are read whole once and kept (LRU, MEMORY_CACHE_BYTES in all,
# shared with the per-track long-event lists): zoomed-out redraws then read nothing from the file.
SMALL_LEVEL_ROWS = 16_384
MEMORY_CACHE_BYTES = 64 * 1024 * 1024
# /lod_small is read whole only up to this size (all tracks, six columns); beyond, per level as /lod.
LOD_SMALL_READ_BYTES = 48 * 1024 * 1024
# /long (~1/256 of the events, 29 bytes a row) is read whole, one read per column, at the first raw query when
# it is at most this size: a first raw view of 128 tracks then makes 5 reads for it instead of 5 per track.
LONG_READ_BYTES = 32 * 1024 * 1024


class StoredLevel(NamedTuple):
    """One stored summary level of a track (a row of ``/lod/levels``)."""

    level: int
    width_ns: int
    row_offset: int  # first row in /lod
    row_count: int  # rectangles
    small_offset: int  # first row in /lod_small; -1 when not copied there


def levels_by_track(lv: dict[str, np.ndarray], n_tracks: int) -> list[list[StoredLevel]]:
    """The ``/lod/levels`` table grouped per track, each track's levels sorted by level."""
    levels: list[list[StoredLevel]] = [[] for _ in range(n_tracks)]
    order = np.lexsort((lv["level"], lv["track"]))
    cols = ("track", "level", "width_ns", "row_offset", "row_count", "small_offset")
    # Python ints, column by column (not cell by cell)
    for track, *row in zip(*(lv[c][order].tolist() for c in cols), strict=True):
        levels[track].append(StoredLevel(*row))
    return levels


def empty_window(track: int) -> Window:
    z64 = np.zeros(0, np.int64)
    return Window(
        track, z64, z64.copy(), np.zeros(0, np.int32), np.zeros(0, np.uint8), np.zeros(0, np.int32),
        z64.copy(), z64.copy(), False, -1,
    )  # fmt: skip


@dataclass(eq=False)
class WindowReader:
    """Answers window queries on an open store; owns the caches they fill."""

    events: dict[str, h5py.Dataset]  # /events columns
    lod: dict[str, h5py.Dataset]  # /lod columns
    lod_small: dict[str, h5py.Dataset] | None  # /lod_small (SUMMARY_COLUMNS); None: written before it existed
    long: dict[str, h5py.Dataset]  # /long columns
    track_columns: dict[str, np.ndarray]  # /tracks, in memory
    levels: list[list[StoredLevel]]  # per track, by level
    events_index: np.ndarray  # /index/events_start_ns
    lod_index: np.ndarray  # /index/lod_start_ns
    chunk_rows: int  # stride of both indexes

    def __post_init__(self) -> None:
        # /lod_small read whole at the first summary query that needs it; False: too big, read per level.
        self._lod_small_all: dict[str, np.ndarray] | bool | None = None
        # All of /long, read at the first raw query that needs it; False: too big, read per track.
        self._long_all: dict[str, np.ndarray] | bool | None = None
        self._long_cache: OrderedDict[int, dict[str, np.ndarray]] = OrderedDict()
        self._lod_cache: OrderedDict[tuple[int, int], dict[str, np.ndarray]] = OrderedDict()
        self._cache_bytes = 0

    # -- row searches through the chunk index
    def _find(self, ds: h5py.Dataset, index: np.ndarray, lo: int, hi: int, value: int, side: str) -> int:
        """First row in [lo, hi) whose value is >= value (side 'left') or > value ('right'); hi if none.

        Assumes ``ds[lo:hi]`` sorted; ``index[k]`` is ``ds[k * chunk]``. Reads at most one chunk.
        """
        if lo >= hi:
            return lo
        c = self.chunk_rows
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
        c = self.chunk_rows
        k_lo = -(-lo // c)
        k_hi = -(-hi // c)
        j = int(np.searchsorted(index[k_lo:k_hi], value, "left"))
        return lo if j == 0 else min(hi, (k_lo + j - 1) * c)

    # -- one track's window
    def track_window(self, track: int, row: TrackRow, t0: int, t1: int, resolution_ns: int) -> Window:
        """See :meth:`TraceStore.window`; ``row`` is the track's :class:`TrackRow`."""
        off, cnt = row.row_offset, row.row_count
        end_row = off + cnt
        st = self.events["start_ns"]
        if cnt == 0 or t1 <= t0 or row.first_start_ns >= t1 or row.last_end_ns < t0:
            return empty_window(track)
        # A window that holds the whole track needs no search (the common full view).
        if t0 <= row.first_start_ns:
            lo_t0 = off
        else:
            lo_t0 = self._find(st, self.events_index, off, end_row, t0, "left")
        if t1 > self.track_columns["last_start_ns"][track]:
            hi = end_row
        else:
            hi = self._find(st, self.events_index, lo_t0, end_row, t1, "left")
        if resolution_ns > 0 and (hi - lo_t0) > (t1 - t0) / resolution_ns:
            lvl = None
            for level in self.levels[track]:
                if level.width_ns <= resolution_ns:
                    lvl = level
            # A level that barely merges (a small or sparse track) costs as much to draw as the raw events
            # and loses the per-event index: answer raw then.
            if lvl is not None and lvl.row_count <= row.row_count * LOD_KEEP_FRACTION:
                return self._summary(track, lvl, t0, t1)
        lookback = int(self.track_columns["lookback_ns"][track])
        # The look-back search and the slice read share one read: from the start of the chunk that holds the
        # first start >= t0 - lookback (found in the index), then a search in memory.
        a = self._chunk_floor(self.events_index, off, lo_t0, t0 - lookback)
        block = st[a:hi]
        lo = a + int(np.searchsorted(block[: lo_t0 - a], t0 - lookback, "left"))
        s = block[lo - a :]
        e = self.events["end_ns"][lo:hi]
        keep = (e > t0) | (s >= t0)
        name = self.events["name"][lo:hi][keep]
        kind = self.events["kind"][lo:hi][keep]
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
        lc = int(self.track_columns["long_count"][track])
        if not lc:
            return None
        a = int(self.track_columns["long_offset"][track])
        if self._long_all is None:
            n = len(self.long["row"])
            if n * sum(dt.itemsize for dt in LONG_COLUMNS.values()) > LONG_READ_BYTES:
                self._long_all = False
            else:
                self._long_all = {c: self.long[c][:] for c in LONG_COLUMNS}
                for v in self._long_all.values():
                    v.flags.writeable = False
        if self._long_all:
            return {c: v[a : a + lc] for c, v in self._long_all.items()}
        hit = self._long_cache.get(track)
        if hit is None:
            hit = {c: self.long[c][a : a + lc] for c in LONG_COLUMNS}
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
        if self._lod_small_all is None:
            ds = self.lod_small
            n = len(ds["start_ns"]) if ds is not None else 0
            row_bytes = sum(LOD_COLUMNS[c].itemsize for c in SUMMARY_COLUMNS)
            if ds is None or n * row_bytes > LOD_SMALL_READ_BYTES:
                self._lod_small_all = False
            else:
                self._lod_small_all = {c: ds[c][:] for c in SUMMARY_COLUMNS}
                for v in self._lod_small_all.values():
                    v.flags.writeable = False  # windows are views of it: a caller's edit would stick
        return self._lod_small_all or None

    def _summary(self, track: int, lvl: StoredLevel, t0: int, t1: int) -> Window:
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
                    src = self.lod_small if small_off >= 0 else self.lod
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
            st = self.lod["start_ns"]
            end_row = off + cnt
            j = self._find(st, self.lod_index, off, end_row, t0, "right") - 1
            lo = off if j < off else j
            hi = self._find(st, self.lod_index, lo, end_row, t1, "left")
            cols = {c: self.lod[c][lo:hi] for c in names}
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
