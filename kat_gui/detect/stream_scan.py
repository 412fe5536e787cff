"""Streamed detection, first passes: what the run is made of, read one rank at a time.

Streamed detection (``streamed.py``) never holds the run's events; it asks tasks (``kat_gui.parallel``) for
small summaries. This module has the tasks that run before the step windows are known, each over one rank:

- :func:`step_annotations`: the rank's step-like host annotations (``ProfilerStep#N`` and the names
  ``frame.ANNOTATION_STEP_RX`` accepts), so that the run's step table, hosts and ranks come from
  ``frame.load_frame`` itself, fed by :class:`FrameSource` instead of the whole event table;
- :func:`marker_counts`: without step annotations, the rank's non-collective kernels per name (the marker
  kernel is chosen from these, ``align.marker_from_counts``);
- :func:`scan_rank`: the rank's GPU events with their launches and steps (``align.launch_times``,
  ``align.assign_steps``, exactly as for the whole run), summarised as :class:`RankScan`: per GPU track the
  steps as runs of rows, per step and per group of rows the time and launch ranges the window plan needs, and
  every collective-class event (matched across ranks later, over the whole run: they are few).

A task holds one rank's GPU events and launches (about 100 bytes an event), never the run. Units: ns for
times; rows are indices within a track (0 = its first event); rank indices index ``RunFrame.ranks``.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field, replace
from functools import lru_cache

import numpy as np

from kat_gui.detect.align import assign_steps, launch_rows
from kat_gui.detect.classify import COLLECTIVE, classify_strings, copy_class_strings, event_classes
from kat_gui.detect.frame import GPU_COLUMNS, STEP_RX, RunFrame
from kat_gui.detect.rank_step import busy_ns
from kat_gui.detect.stats import count_before_by_rank, small_unique
from kat_gui.events import EventKind, TrackKind

try:  # step names other tools write (frame.py); older frames know ProfilerStep#N only
    from kat_gui.detect.frame import ANNOTATION_STEP_RX
except ImportError:  # pragma: no cover
    ANNOTATION_STEP_RX = None

GPU_KINDS = np.array([EventKind.KERNEL, EventKind.MEMCPY, EventKind.MEMSET], dtype=np.uint8)
KEY_SHIFT = 40  # row key = (track << 40) | row in track: ordered as the whole run's GPU rows
READ_ROWS = 1 << 20  # rows per read of a host track (bounded memory on long threads)
SCAN_COLUMNS = tuple(c for c in GPU_COLUMNS if c != "bytes")  # copy sizes are read per window
# Columns of the collective-class table (the run's collective kernels, kept whole: a few % of the events, up to
# a third in tensor-parallel decode): what collective matching reads, and what findings read later. Track,
# row, device and stream follow from the row key.
COLL_COLUMNS = (
    "key",
    "rank",
    "start_ns",
    "end_ns",
    "kind",
    "name",
    "coll",
    "pg",
    "seq",
    "msg_nelems",
    "step",
    "launch_ns",
)


def row_keys(track: np.ndarray, index: np.ndarray) -> np.ndarray:
    """Row keys: ordered like the rows of the whole run's ``RunFrame.gpu`` (by track, then row)."""
    return (track.astype(np.int64) << KEY_SHIFT) | index.astype(np.int64)


@dataclass
class RunLayout:
    """What every task knows of the run (small, sent with each task): the store, its tracks, the run's frame
    without events (``frame``: ranks, steps table, hosts; ``strings``/``topology`` left out), and how steps
    are found (``mode``: ``"table"`` from annotations, ``"marker"`` by the marker kernel, ``"none"``)."""

    path: str
    stamp: tuple[int, int]
    track_rank: np.ndarray
    track_kind: np.ndarray
    track_device: np.ndarray
    track_stream: np.ndarray
    track_count: np.ndarray
    frame: RunFrame | None = None
    mode: str = "table"
    marker: int | None = None

    def tracks_of(self, rank: int, kind: TrackKind) -> list[int]:
        return [int(t) for t in np.flatnonzero((self.track_rank == rank) & (self.track_kind == kind))]


def store_stamp(path: str) -> tuple[int, int]:
    st = os.stat(path)
    return st.st_size, st.st_mtime_ns


@lru_cache(maxsize=2)
def _reader(path: str, stamp: tuple[int, int]):
    from kat_gui.store.slices import RowReader

    r = RowReader(path)
    _reader_cache.append(r)
    return r


def release_readers() -> None:
    """Close the readers this process keeps open (after a streamed detection)."""
    for r in list(_reader_cache):
        r.close()
    _reader_cache.clear()
    _reader.cache_clear()
    _classes.cache_clear()


_reader_cache: list = []


def open_store(layout: RunLayout):
    """The run's events (``kat_gui.store.slices.RowReader``), opened once per process and kept open for its
    later tasks (read-only; small chunk caches)."""
    return contextlib.nullcontext(_reader(layout.path, layout.stamp))


@lru_cache(maxsize=4)
def _classes(path: str, stamp: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(kernel class, copy class, step-like flag) per string id of a store (once per process and store)."""
    from kat_gui.store import TraceStore

    with TraceStore.open(path) as st:
        strings = st.strings
    steplike = np.array(
        [
            bool(STEP_RX.match(s) or (ANNOTATION_STEP_RX is not None and ANNOTATION_STEP_RX.match(s)))
            for s in strings
        ],
        dtype=bool,
    )
    return classify_strings(strings), copy_class_strings(strings), steplike


def classes(layout: RunLayout) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return _classes(layout.path, layout.stamp)


def _read_track(store, track: int, count: int, columns, keep_fn):
    """The rows of one track that ``keep_fn(cols)`` keeps, read ``READ_ROWS`` at a time: (rows, columns)."""
    rows, parts = [], []
    for lo in range(0, int(count), READ_ROWS):
        cols = store.rows(track, lo, lo + READ_ROWS, columns)
        keep = keep_fn(cols)
        rows.append(lo + np.flatnonzero(keep))
        parts.append({c: v[keep] for c, v in cols.items()})
    if not parts:
        return np.zeros(0, np.int64), {c: np.zeros(0) for c in columns}
    return np.concatenate(rows), {c: np.concatenate([p[c] for p in parts]) for c in columns}


# ---------------------------------------------------------------------------------------------- step table


def step_annotations(layout: RunLayout, tracks: list[int]) -> dict[str, np.ndarray]:
    """Task: the step-like annotations of some tracks (those with any annotation; ``track``, ``kind``,
    ``name``, ``start_ns``, ``end_ns``), in store order."""
    _, _, steplike = classes(layout)
    out: dict[str, list] = {c: [] for c in ANNOTATION_COLUMNS}
    with open_store(layout) as store:
        for t in tracks:

            def keep(cols):
                return (cols["kind"] == EventKind.ANNOTATION) & steplike[cols["name"]]

            names = list(ANNOTATION_COLUMNS)[1:]
            _, cols = _read_track(store, t, layout.track_count[t], names, keep)
            out["track"].append(np.full(len(cols["kind"]), t, np.int32))
            for c in names:
                out[c].append(cols[c])
    return {c: np.concatenate([np.zeros(0, dt), *out[c]]).astype(dt) for c, dt in ANNOTATION_COLUMNS.items()}


ANNOTATION_COLUMNS = {
    "track": np.dtype(np.int32),
    "kind": np.dtype(np.uint8),
    "name": np.dtype(np.int32),
    "start_ns": np.dtype(np.int64),
    "end_ns": np.dtype(np.int64),
}


class FrameSource:
    """A TraceStore stand-in for :func:`kat_gui.detect.frame.load_frame`: its event table holds the run's
    step-like annotations and one GPU event per GPU stream that has any (which ranks have GPU work, on which
    devices), and no runtime calls. ``load_frame`` then builds the run's frame (steps table, ranks, hosts,
    topology) as it does from the whole table, minus the events."""

    def __init__(self, store, annotations: dict[str, np.ndarray], gpu_tracks: np.ndarray):
        self._store = store
        self._ann = annotations
        self._gpu_tracks = gpu_tracks

    def __getattr__(self, name: str):
        return getattr(self._store, name)

    def events(self, columns=None, kinds=None) -> dict[str, np.ndarray]:
        from kat_gui.events import COLUMN_DEFAULTS, EVENT_COLUMNS

        cols = list(columns or EVENT_COLUMNS)
        n_g = len(self._gpu_tracks)
        n_a = len(self._ann["track"])
        out = {}
        for c in cols:
            gpu = np.full(n_g, COLUMN_DEFAULTS[c], dtype=EVENT_COLUMNS[c])
            if c == "kind":
                gpu[:] = EventKind.KERNEL
            elif c == "name":
                gpu[:] = 0
            ann = self._ann[c] if c in self._ann else np.full(n_a, COLUMN_DEFAULTS[c], dtype=EVENT_COLUMNS[c])
            out[c] = np.concatenate([gpu, ann.astype(EVENT_COLUMNS[c])])
        out["track"] = np.concatenate([self._gpu_tracks.astype(np.int32), self._ann["track"]])
        return out


def bare_frame(frame: RunFrame) -> RunFrame:
    """The frame as tasks get it: no events, strings or topology (they are not needed there)."""
    empty = {c: np.zeros(0) for c in ("rank", "correlation", "start_ns")}
    return replace(frame, strings=[], topology=None, gpu={}, launch=empty)


# ---------------------------------------------------------------------------------------------- marker


def marker_counts(layout: RunLayout, rank: int) -> tuple[np.ndarray, np.ndarray]:
    """Task: (name ids, counts) of one rank's non-collective kernels (for ``align.marker_from_counts``)."""
    name_class, copy_class, _ = classes(layout)
    names = []
    with open_store(layout) as store:
        for t in layout.tracks_of(rank, TrackKind.GPU_STREAM):
            _, cols = _read_track(
                store,
                t,
                layout.track_count[t],
                ("kind", "name", "coll", "copy_kind"),
                lambda c: c["kind"] == EventKind.KERNEL,
            )
            cls = event_classes(
                cols["kind"], cols["name"], cols["coll"], cols["copy_kind"], name_class, copy_class
            )
            names.append(cols["name"][cls != COLLECTIVE].astype(np.int64))
    u, c = np.unique(np.concatenate([np.zeros(0, np.int64), *names]), return_counts=True)
    return u, c


# ---------------------------------------------------------------------------------------------- rank scan


@dataclass
class RankScan:
    """One rank's GPU events, summarised (:func:`scan_rank`).

    - ``runs``: per GPU track, its steps as runs over its GPU rows: (first row of each run, step; -1 outside
      every step); ``monotone``: every track's steps (ignoring -1) never go down, so that a window of steps is
      a contiguous range of rows of each track;
    - per *group* (``grp``): a row's group is its step, or for a row outside every step the step of the row
      before it on its track (-2 before the track's first step). Per group: rows, min/max start, max end, and
      per host thread the range of rows holding the runtime calls that launched them (``grp_host``);
    - per step (``stp``): first start, last end (step lengths, finding windows) and busy time (``busy``, ns of
      non-collective GPU work: ``rank_step``); per step, over rows with a
      known launch (``lch``): the first and last launch time;
    - ``coll``: every collective-class event (:data:`COLL_COLUMNS`).
    """

    rank: int
    n_gpu: int
    step_values: np.ndarray
    t_min: int
    t_max: int
    monotone: bool
    runs: dict[int, tuple[np.ndarray, np.ndarray]]
    grp: dict[str, np.ndarray]
    grp_host: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]]
    stp: dict[str, np.ndarray]
    lch: dict[str, np.ndarray]
    last_end_ns: int
    any_launch: bool
    coll: dict[str, np.ndarray] = field(default_factory=dict)


def load_rank(layout: RunLayout, store, rank: int) -> tuple[RunFrame, np.ndarray, np.ndarray]:
    """One rank's GPU events as a frame (``gpu`` with ``track``/``index``/``rank``/``device``/``stream``/``cls``,
    ``launch`` with its runtime calls, their ``host_track``/``host_row``), and per event its launch row."""
    name_class, copy_class, _ = classes(layout)
    parts = []
    for t in layout.tracks_of(rank, TrackKind.GPU_STREAM):
        idx, cols = _read_track(
            store, t, layout.track_count[t], SCAN_COLUMNS, lambda c: np.isin(c["kind"], GPU_KINDS)
        )
        cols["track"] = np.full(len(idx), t, np.int32)
        cols["index"] = idx.astype(np.int64)
        parts.append(cols)
    gpu = _concat(parts, (*SCAN_COLUMNS, "track", "index"))
    track = gpu["track"]
    gpu["rank"] = np.full(len(track), rank, np.int32)
    gpu["device"] = layout.track_device[track].astype(np.int32)
    gpu["stream"] = layout.track_stream[track].astype(np.int64)
    gpu["cls"] = event_classes(
        gpu["kind"], gpu["name"], gpu["coll"], gpu["copy_kind"], name_class, copy_class
    )
    lparts = []
    for h in layout.tracks_of(rank, TrackKind.HOST_THREAD):
        idx, cols = _read_track(
            store,
            h,
            layout.track_count[h],
            ("kind", "correlation", "start_ns"),
            lambda c: (c["kind"] == EventKind.RUNTIME) & (c["correlation"] >= 0),
        )
        lparts.append(
            {**cols, "host_track": np.full(len(idx), h, np.int64), "host_row": idx.astype(np.int64)}
        )
    la = _concat(lparts, ("correlation", "start_ns", "host_track", "host_row"))
    la["rank"] = np.full(len(la["correlation"]), rank, np.int32)
    fr = replace(layout.frame, gpu=gpu, launch=la)
    lrow = launch_rows(fr)
    launch_ns = np.full(len(lrow), -1, dtype=np.int64)
    launch_ns[lrow >= 0] = la["start_ns"][lrow[lrow >= 0]]
    return fr, lrow, launch_ns


def _concat(parts: list[dict[str, np.ndarray]], columns) -> dict[str, np.ndarray]:
    from kat_gui.events import EVENT_COLUMNS

    out = {}
    for c in columns:
        dt = EVENT_COLUMNS.get(c, np.dtype(np.int64))
        out[c] = np.concatenate([np.zeros(0, dt), *(p[c] for p in parts)])
    return out


def rank_steps(layout: RunLayout, fr: RunFrame, launch_ns: np.ndarray) -> np.ndarray:
    """Step number per GPU event of one rank, as ``align.assign_steps`` gives it over the whole run."""
    g = fr.gpu
    if layout.mode == "table":
        return assign_steps(fr, launch_ns).step
    if layout.mode == "marker":
        is_m = (g["name"] == layout.marker) & (g["kind"] == EventKind.KERNEL)
        return count_before_by_rank(g["rank"], g["start_ns"], is_m)
    return np.zeros(fr.n_gpu, dtype=np.int64)


def scan_rank(layout: RunLayout, rank: int) -> RankScan:
    """Task: read one rank and summarise it (:class:`RankScan`)."""
    with open_store(layout) as store:
        fr, lrow, launch_ns = load_rank(layout, store, rank)
    g = fr.gpu
    n = fr.n_gpu
    step = rank_steps(layout, fr, launch_ns)
    t = np.where(launch_ns >= 0, launch_ns, g["start_ns"])
    track = g["track"]
    # Runs of steps per track, and each row's group (its step, or the step of the row before it).
    runs: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    grp = np.empty(n, dtype=np.int64)
    monotone = True
    for tr in np.unique(track):
        sel = np.flatnonzero(track == tr)
        s = step[sel]
        brk = np.flatnonzero(np.r_[True, s[1:] != s[:-1]])
        runs[int(tr)] = (g["index"][sel][brk].astype(np.int64), s[brk].astype(np.int64))
        stepped = s[s >= 0]
        monotone &= bool(not len(stepped) or (np.diff(stepped) >= 0).all())
        last = np.maximum.accumulate(np.where(s >= 0, np.arange(len(s)), -1))
        grp[sel] = np.where(last >= 0, s[np.maximum(last, 0)], -2)
    grp_stats = _group_stats(grp, g["start_ns"], g["end_ns"])
    # Runtime calls that launched each group's rows, per host thread: a window reads those rows only.
    grp_host: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
    has = lrow >= 0
    if has.any():
        la = fr.launch
        h_track = la["host_track"][lrow[has]]
        h_row = la["host_row"][lrow[has]]
        g_has = grp[has]
        for h in np.unique(h_track):
            m = h_track == h
            keys, inv = np.unique(g_has[m], return_inverse=True)
            lo = np.full(len(keys), np.iinfo(np.int64).max)
            hi = np.full(len(keys), -1, dtype=np.int64)
            np.minimum.at(lo, inv, h_row[m])
            np.maximum.at(hi, inv, h_row[m])
            grp_host[int(h)] = (keys, lo, hi)
    ok = step >= 0
    stp = _step_stats(step[ok], g["start_ns"][ok], g["end_ns"][ok])
    stp["busy"] = np.zeros(len(stp["step"]), np.int64)  # per step: busy time (``rank_step.busy_ns``)
    np.add.at(
        stp["busy"],
        np.searchsorted(stp["step"], step[ok]),
        busy_ns(g["cls"][ok], g["start_ns"][ok], g["end_ns"][ok]),
    )
    okl = ok & (launch_ns >= 0)
    lch = _step_stats(step[okl], launch_ns[okl], launch_ns[okl])
    c = np.flatnonzero(g["cls"] == COLLECTIVE)
    coll = {k: g[k][c] for k in COLL_COLUMNS if k in g}
    coll["key"] = row_keys(g["track"][c], g["index"][c])
    coll["step"] = step[c].astype(np.int64)
    coll["launch_ns"] = launch_ns[c]
    return RankScan(
        rank=rank,
        n_gpu=n,
        step_values=small_unique(step[ok]) if ok.any() else np.zeros(0, np.int64),
        t_min=int(t.min()) if n else 0,
        t_max=int(t.max()) if n else 0,
        monotone=monotone,
        runs=runs,
        grp=grp_stats,
        grp_host=grp_host,
        stp=stp,
        lch={"step": lch["step"], "min": lch["lo"], "max": lch["hi"]},
        last_end_ns=int(g["end_ns"].max()) if n else np.iinfo(np.int64).min,
        any_launch=bool((launch_ns >= 0).any()),
        coll=coll,
    )


def _group_stats(grp: np.ndarray, start: np.ndarray, end: np.ndarray) -> dict[str, np.ndarray]:
    keys, inv = np.unique(grp, return_inverse=True)
    m = len(keys)
    out = {
        "grp": keys,
        "rows": np.bincount(inv, minlength=m).astype(np.int64),
        "min_start": np.full(m, np.iinfo(np.int64).max),
        "max_start": np.full(m, np.iinfo(np.int64).min),
        "max_end": np.full(m, np.iinfo(np.int64).min),
    }
    np.minimum.at(out["min_start"], inv, start)
    np.maximum.at(out["max_start"], inv, start)
    np.maximum.at(out["max_end"], inv, end)
    return out


def _step_stats(step: np.ndarray, lo_v: np.ndarray, hi_v: np.ndarray) -> dict[str, np.ndarray]:
    keys, inv = np.unique(step, return_inverse=True)
    lo = np.full(len(keys), np.iinfo(np.int64).max)
    hi = np.full(len(keys), np.iinfo(np.int64).min)
    np.minimum.at(lo, inv, lo_v)
    np.maximum.at(hi, inv, hi_v)
    return {"step": keys.astype(np.int64), "lo": lo, "hi": hi}
