"""Level-of-detail summaries of one track: runs of events merged into rectangles, one list per zoom level.

Level ``k`` merges consecutive events while the gap between the end of everything merged so far and the next
start is below ``LOD_BASE_WIDTH_NS * 4**k``; at a resolution of at least that width per pixel those gaps are
invisible, so drawing the rectangles instead of the events loses nothing a user could see. Levels are built
from the previous level (merging is composable: a gap below the finer width is also below the coarser one).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

LOD_BASE_WIDTH_NS = 1_000  # level 0 merges gaps below 1 µs
LOD_FACTOR = 4  # each level is 4x coarser than the previous one
LOD_MIN_RECTS = 1_000  # stop building once a track has fewer rectangles than this
LOD_MAX_LEVELS = 24  # 1 µs * 4**23 ~ 2.2 years: a safety stop, never reached by a real trace
# A level is stored only when it has at most this fraction of the rectangles of the last stored level; a
# query at a skipped level uses the finer stored one, which has at most 1/fraction times as many rectangles.
# This bounds the summaries of a track to ~2x its events even when its gaps are all larger than 1 ms.
LOD_KEEP_FRACTION = 0.5

LOD_COLUMNS: dict[str, np.dtype] = {
    "start_ns": np.dtype(np.int64),
    "end_ns": np.dtype(np.int64),
    "count": np.dtype(np.int32),  # events merged into the rectangle
    "busy_ns": np.dtype(np.int64),  # length of the union of the merged events (<= end_ns - start_ns)
    "max_dur_ns": np.dtype(np.int64),  # duration of the longest merged event
    "name": np.dtype(np.int32),  # string id of the longest merged event
    "kind": np.dtype(np.uint8),  # EventKind of the longest merged event
}


@dataclass
class LodLevel:
    level: int
    width_ns: int
    cols: dict[str, np.ndarray]  # LOD_COLUMNS, sorted by start_ns, disjoint


def level_width_ns(level: int) -> int:
    return LOD_BASE_WIDTH_NS * LOD_FACTOR**level


def _merge(cols: dict[str, np.ndarray], width_ns: int) -> dict[str, np.ndarray]:
    """Merge consecutive items of ``cols`` whose gap is < ``width_ns``.

    Assumes items sorted by start and ``end_ns`` already the running maximum of ends (monotone), so the gap
    before item i+1 is ``start[i+1] - end[i]``.
    """
    start = cols["start_ns"]
    end = cols["end_ns"]
    n = len(start)
    brk = (start[1:] - end[:-1]) >= width_ns
    if brk.all():
        return cols
    first = np.flatnonzero(np.concatenate(([True], brk)))
    last = np.concatenate((first[1:], [n])) - 1
    gid = np.cumsum(np.concatenate(([0], brk)))
    maxdur = np.maximum.reduceat(cols["max_dur_ns"], first)
    # First item per group that holds the group's longest event (O(n), no sort).
    hit = np.flatnonzero(cols["max_dur_ns"] == maxdur[gid])
    hit_gid = gid[hit]
    pick = hit[np.concatenate(([True], hit_gid[1:] != hit_gid[:-1]))]
    return {
        "start_ns": start[first],
        "end_ns": end[last],
        "count": np.add.reduceat(cols["count"], first).astype(np.int32),
        "busy_ns": np.add.reduceat(cols["busy_ns"], first),
        "max_dur_ns": maxdur,
        "name": cols["name"][pick],
        "kind": cols["kind"][pick],
    }


def build_lod(start_ns: np.ndarray, end_ns: np.ndarray, name: np.ndarray, kind: np.ndarray) -> list[LodLevel]:
    """The stored summary levels of one track.

    Assumes the events are sorted by start (ties in any order) and ``end_ns >= start_ns``. Works for nested
    host annotations too: gaps and busy time are measured against the running maximum end, so a rectangle
    covers the union of its events and ``busy_ns`` counts overlapped time once.
    """
    n = len(start_ns)
    if n == 0:
        return []
    runmax = np.maximum.accumulate(end_ns)
    prev_end = np.empty_like(runmax)
    prev_end[0] = start_ns[0]
    prev_end[1:] = runmax[:-1]
    covered = np.maximum(0, end_ns - np.maximum(start_ns, prev_end))
    items = {
        "start_ns": start_ns,
        "end_ns": runmax,
        "count": np.ones(n, np.int32),
        "busy_ns": covered,
        "max_dur_ns": end_ns - start_ns,
        "name": name,
        "kind": kind,
    }
    levels: list[LodLevel] = []
    last_stored = None
    for k in range(LOD_MAX_LEVELS):
        width = level_width_ns(k)
        items = _merge(items, width)
        m = len(items["start_ns"])
        final = m < LOD_MIN_RECTS or k == LOD_MAX_LEVELS - 1
        if last_stored is None or m <= last_stored * LOD_KEEP_FRACTION or final:
            cols = {c: np.ascontiguousarray(items[c], dtype=dt) for c, dt in LOD_COLUMNS.items()}
            levels.append(LodLevel(k, width, cols))
            last_stored = m
        if final:
            break
    return levels
