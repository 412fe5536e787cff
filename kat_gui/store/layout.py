"""The on-disk layout of a ``.kat.h5`` store, shared by the writer and the reader.

What is here: the file marker, the column sets of the small tables (``/tracks``, ``/lod/levels``, ``/long``,
and the columns a summary window returns) and the two records the reader hands out, :class:`TrackRow` and
:class:`Window`. The full layout (groups, chunking, filters, compatibility rules) is documented in
``docs/store-format.md``; keep the two in step.

Units: every time is an int64 in nanoseconds on the trace's own clock (``*_ns``); row offsets and counts are
rows of the named dataset; names are int32 ids into ``/strings`` (-1: none); kinds are ``EventKind`` or
``TrackKind`` values stored as uint8.
"""

from __future__ import annotations

from dataclasses import dataclass

import h5py
import numpy as np

from kat_gui.events import EventKind, TrackKind

STORE_MARKER = "KAT TraceStore"

# Variable-length UTF-8 strings (/strings, /args, /tracks/label, JSON results).
STR_DTYPE = h5py.string_dtype("utf-8")

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
# Columns a summary window returns (max_dur_ns is only needed while building levels).
SUMMARY_COLUMNS = ("start_ns", "end_ns", "name", "kind", "count", "busy_ns")
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
