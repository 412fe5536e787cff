"""Detection with bounded memory: the run streamed by windows of steps, the windows as parallel tasks.

``analyse_store`` is what ``detect_store`` runs. A run that fits in one window (``window_rows`` GPU events:
250,000, or 1,024 per GPU track when there are more tracks; ``$KAT_DETECT_WINDOW_ROWS``) is loaded whole (``load_frame`` + ``detect_frame``), as always. A larger one is
never loaded: :class:`StreamedAnalysis` answers every question the analyses ask (``engine.detect_run``) from
summaries that tasks compute on a :mod:`kat_gui.parallel` executor (in this process, a local cluster, or a
dask scheduler):

1. per rank (``stream_scan``): the step annotations (the run's frame comes from ``load_frame`` fed with just
   those), then each rank's GPU events with their launches and steps, summarised, and its collective kernels;
2. the plan (:func:`plan_windows`): windows of consecutive steps of about ``window_rows`` events, cut only where
   every rank's work (starts and launches) is strictly ordered across the cut, so that a window's idle gaps and
   launch intervals only need a carried-over last end and last launch;
3. per window (``stream_window``), four passes: peer-matching statistics (and the step covariate sums), each
   row's peer reference (counts and ranges of the log ratios), the [rank, step] cells, and for runs over
   ``LARGE_CELL_ROWS`` rows the winsorised cells; after the findings, one more pass for the rows they blame.

Whole-run quantities are merged exactly (see ``stream_window``), so findings and anomalies are those of the
whole-run analysis, to the byte. Memory: one rank's events in a scan task, one window's in a window task, and in
this process the run's collective kernels (a few % of its events) and [rank, step] matrices.

When the exactness conditions do not hold (steps that go back along a stream, a trace over ~4.9 h with step
annotations, a run without steps), the run is analysed whole. Units: ns for times, rows for counts.
"""

from __future__ import annotations

import os
from dataclasses import fields, replace

import numpy as np

from kat_gui import parallel
from kat_gui.detect.align import Steps, marker_from_counts, match_collectives
from kat_gui.detect.analysis import late_signal, step_lengths
from kat_gui.detect.anomalies import ROOT, AnomalyPart, RowQuery
from kat_gui.detect.classify import COLLECTIVE
from kat_gui.detect.frame import RunFrame, load_frame
from kat_gui.detect.history import CovariateSums, covariates_from_sums
from kat_gui.detect.params import Params
from kat_gui.detect.signals import LARGE_CELL_ROWS, WINSOR_SAMPLE, CellSignal, centred, winsor_bounds
from kat_gui.detect.stream_plan import plan_windows
from kat_gui.detect.stream_scan import (
    ANNOTATION_COLUMNS,
    COLL_COLUMNS,
    KEY_SHIFT,
    FrameSource,
    RankScan,
    RunLayout,
    bare_frame,
    marker_counts,
    release_readers,
    scan_rank,
    step_annotations,
    store_stamp,
)
from kat_gui.detect.stream_window import ROW_COLUMNS, SIGNALS, PeerPlan, StreamContext, Window, window_stage
from kat_gui.events import EventKind, TrackKind
from kat_gui.progress import Progress, scaled

WINDOW_ROWS = 250_000  # GPU events per window (about 0.1-0.2 GB of working memory)
# Least GPU events for which detection starts a local cluster by itself; smaller runs stream in this process.
CLUSTER_MIN_ROWS = 4_000_000
_REL_BITS = 44  # align.assign_steps measures times relative to the run's start in 44 bits
STAGE_TEXT = {
    "stats": "comparing ranks with their peers: matching",
    "refs": "comparing ranks with their peers: references",
    "cells": "comparing ranks with their peers: cells",
    "winsor": "comparing ranks with their peers: winsorised cells",
    "rows": "anomaly table: the blamed events",
}


# Least rows per GPU track in a window: a window reads every track's slice of it (one read per column), so with
# many tracks (1,024 ranks: 2,048 streams) 250,000-row windows meant ~120-row reads, ~600,000 of them for 10M
# kernels, 22 s of the library's per-read cost. Windows grow with the tracks instead: memory still does not
# grow with the run's length.
WINDOW_ROWS_PER_TRACK = 1024


def window_rows(n_tracks: int = 0) -> int:
    """GPU events per window: ``$KAT_DETECT_WINDOW_ROWS`` when set, else the larger of ``WINDOW_ROWS`` and
    ``WINDOW_ROWS_PER_TRACK`` per GPU track."""
    env = os.environ.get("KAT_DETECT_WINDOW_ROWS")
    return max(int(env), 1) if env else max(WINDOW_ROWS, WINDOW_ROWS_PER_TRACK * n_tracks)


def analyse_store(store, params: Params | None = None, progress: Progress | None = None):
    """Detect on an open store (no writes): whole when the run fits in one window, else streamed; on the
    executor :func:`kat_gui.parallel.requested_scale` asks for. Returns the DetectResult."""
    from kat_gui.detect.engine import detect_frame, detect_run

    p = params or Params()
    scale = parallel.requested_scale()
    lay, n_gpu, gpu_tracks = run_layout(store)
    explicit = scale.workers is not None or scale.address() is not None

    def whole():
        frame = load_frame(store)
        return detect_frame(frame, p, scaled(progress, 0.25, 0.95))

    if n_gpu <= window_rows(len(gpu_tracks)) and not explicit:
        return whole()
    with parallel.executor(
        scale,
        n_tasks=len(np.unique(lay.track_rank[gpu_tracks])),
        n_bytes=n_gpu * 100,
        min_bytes=CLUSTER_MIN_ROWS * 100,
        paths=[store.path],
    ) as ex:
        try:
            run = StreamedAnalysis.build(store, lay, gpu_tracks, n_gpu, p, ex, scaled(progress, 0.0, 0.25))
            if run is not None:
                run_progress = scaled(progress, 0.25, 0.95)
                if run_progress is not None:  # the last pass runs inside the engine's "anomaly table" (0.9)
                    run._rows_tick = lambda _f, m: run_progress(0.9, m)
                return detect_run(run, run_progress)
        finally:
            ex.run_everywhere(release_readers)
    return whole()  # not streamable


def run_layout(store) -> tuple[RunLayout, int, np.ndarray]:
    """The run's layout for tasks, its number of GPU events and the GPU streams that have any."""
    from kat_gui.store.slices import kind_counts

    tracks = store.tracks
    kc = kind_counts(store)
    arr = {
        "rank": np.array([t.rank for t in tracks], dtype=np.int32),
        "kind": np.array([int(t.kind) for t in tracks], dtype=np.uint8),
        "device": np.array([t.device for t in tracks], dtype=np.int32),
        "stream": np.array([t.stream for t in tracks], dtype=np.int64),
        "count": np.array([t.row_count for t in tracks], dtype=np.int64),
    }
    n_gpu_t = (
        kc[:, [EventKind.KERNEL, EventKind.MEMCPY, EventKind.MEMSET]].sum(axis=1) if len(kc) else np.zeros(0)
    )
    is_gpu = arr["kind"] == TrackKind.GPU_STREAM
    gpu_tracks = np.flatnonzero(is_gpu & (n_gpu_t > 0))
    path = os.path.abspath(os.fspath(store.path))
    lay = RunLayout(
        path=path,
        stamp=store_stamp(path),
        track_rank=arr["rank"],
        track_kind=arr["kind"],
        track_device=arr["device"],
        track_stream=arr["stream"],
        track_count=arr["count"],
    )
    return lay, int(n_gpu_t[is_gpu].sum()) if len(kc) else 0, gpu_tracks


class StreamedFrame(RunFrame):
    """The run's frame without its events: ``gpu`` holds the collective-class events only; ``n_gpu`` is the
    run's count."""

    n_gpu_total: int = 0

    @property
    def n_gpu(self) -> int:  # type: ignore[override]
        return self.n_gpu_total


class StreamedAnalysis:
    """What ``engine.detect_run`` asks of a run (see ``RunAnalysis``), answered from streamed summaries."""

    @classmethod
    def build(cls, store, lay, gpu_tracks, n_gpu, params, ex, progress) -> StreamedAnalysis | None:
        tick = progress or (lambda f, m: None)
        tick(0.0, "reading steps")
        annotated = np.flatnonzero(_annotated(store, lay))
        groups = [
            [int(t) for t in annotated if lay.track_rank[t] == r]
            for r in np.unique(lay.track_rank[annotated])
        ]
        ann = _gather(
            ex, groups, lambda ts: ex.submit(step_annotations, lay, ts), tick, 0.0, 0.1, "reading steps"
        )
        ann_all = {
            c: np.concatenate([np.zeros(0, dt), *(x[c] for x in ann)]) for c, dt in ANNOTATION_COLUMNS.items()
        }
        order = np.argsort(ann_all["track"], kind="stable")  # store order: by track, rows in order
        ann_all = {c: v[order] for c, v in ann_all.items()}
        if not len(store.strings):
            return None
        frame = load_frame(FrameSource(store, ann_all, gpu_tracks))
        ranks = frame.ranks
        if not len(ranks) or len(ranks) != len(np.unique(lay.track_rank[gpu_tracks])):
            return None
        lay.frame = bare_frame(frame)
        if len(frame.steps["num"]):
            lay.mode = "table"
        else:
            tick(0.1, "looking for a marker kernel")
            counts = _gather(
                ex, ranks, lambda r: ex.submit(marker_counts, lay, int(r)), tick, 0.1, 0.2, "marker kernel"
            )
            pair = np.concatenate(
                [np.zeros(0, np.int64), *((u << 20) | i for i, (u, _c) in enumerate(counts))]
            )
            cnt = np.concatenate([np.zeros(0, np.int64), *(c for _u, c in counts)])
            o = np.argsort(pair, kind="stable")
            marker = marker_from_counts(pair[o], cnt[o], len(ranks)) if len(pair) else None
            if marker is None:
                return None  # one step: nothing to window
            lay.mode, lay.marker = "marker", marker
            lay.frame = replace(lay.frame, step_name=None)
        tick(0.2, "scanning ranks")
        scans = _gather(
            ex, ranks, lambda r: ex.submit(scan_rank, lay, int(r)), tick, 0.2, 0.9, "scanning ranks"
        )
        if not all(s.monotone for s in scans):
            return None
        if lay.mode == "table" and n_gpu:
            st = frame.steps
            t0 = min(min(s.t_min for s in scans if s.n_gpu), int(st["start_ns"].min()))
            t1 = max(max(s.t_max for s in scans if s.n_gpu), int(st["end_ns"].max()))
            if t1 - t0 >= (1 << _REL_BITS):
                return None
        run = cls(frame, lay, scans, params, n_gpu, ex, store.strings if lay.mode == "marker" else None)
        run.windows = plan_windows(run, window_rows(len(gpu_tracks)))
        if len(run.windows) < 2 and ex.workers == 0:
            return None  # one window: the whole-run analysis is the same and cheaper
        tick(1.0, f"{len(run.windows)} windows of steps")
        return run

    def __init__(self, frame: RunFrame, lay: RunLayout, scans: list[RankScan], params: Params, n_gpu: int, ex,
                 strings: list[str] | None) -> None:  # fmt: skip
        self.params = params
        self.layout = lay
        self.scans = scans
        self.ex = ex
        self.n_ranks = len(frame.ranks)
        sv = np.unique(np.concatenate([np.zeros(0, np.int64), *(s.step_values for s in scans)]))
        self.step_values = sv if len(sv) else np.zeros(1, np.int64)
        self.n_steps = max(len(sv), 1)
        self._has_steps = bool(len(sv))
        method = "marker_kernel" if lay.mode == "marker" else frame.step_source
        marker = strings[lay.marker] if lay.mode == "marker" else frame.step_name
        self.steps = Steps(np.zeros(0, np.int64), method, marker, self.n_steps)
        # The collective-class events of the run (row keys; in row order) and their collective instances.
        key = np.concatenate([np.zeros(0, np.int64), *(s.coll["key"] for s in scans)])
        o = np.argsort(key, kind="stable")
        coll = {"key": key[o]}
        for c in COLL_COLUMNS[1:]:  # one column at a time, each rank's copy dropped as it is taken
            coll[c] = np.concatenate([s.coll.pop(c) for s in scans])[o]
        for s in scans:
            s.coll.clear()
        coll["cls"] = np.full(len(key), COLLECTIVE, np.uint8)
        kw = {f.name: getattr(frame, f.name) for f in fields(RunFrame)}
        kw["gpu"] = coll
        self.frame = StreamedFrame(**kw)
        self.frame.n_gpu_total = n_gpu
        co = match_collectives(self.frame, Steps(coll["step"], method, marker, self.n_steps))  # may set hosts
        self.collectives = replace(co, row=coll["key"][co.row])
        # What the analyses read of collective-class events later (the matching columns are let go).
        self.coll = {
            c: coll[c] for c in ("key", "rank", "start_ns", "end_ns", "name", "msg_nelems", "launch_ns")
        }
        self.frame.gpu = self.coll
        del coll
        self.coll_step_idx = np.where(co.step >= 0, np.searchsorted(self.step_values, co.step), -1)
        # Per (rank, step) first start / last end / busy time: step lengths, finding windows, rank_step.
        n_cells = self.n_ranks * self.n_steps
        self.cell_lo = np.full(n_cells, np.iinfo(np.int64).max)
        self.cell_hi = np.full(n_cells, np.iinfo(np.int64).min)
        self.cell_busy_ns = np.zeros(n_cells, np.int64)
        for s in scans:
            if len(s.stp["step"]):
                ri = int(np.searchsorted(frame.ranks, s.rank))
                cell = ri * self.n_steps + np.searchsorted(self.step_values, s.stp["step"])
                self.cell_lo[cell] = s.stp["lo"]
                self.cell_hi[cell] = s.stp["hi"]
                self.cell_busy_ns[cell] = s.stp["busy"]
        self.step_len_ns = step_lengths(self.cell_lo, self.cell_hi, self.n_ranks, self.n_steps)
        self.any_launch = any(s.any_launch for s in scans)
        self.launch_signal = self.n_ranks >= 2 and any(len(s.lch["step"]) for s in scans)
        self.windows: list[Window] = []
        self._tick: Progress | None = None
        self._rows_tick: Progress | None = None
        self._cov: CovariateSums | None = None
        self._rows_cache: dict[str, np.ndarray] = {}

    # ------------------------------------------------------------------ facts
    @property
    def has_steps(self) -> bool:
        return self._has_steps

    def window_ns(self, s0: int, s1: int, ri: int | None) -> tuple[int, int]:
        lo = self.cell_lo.reshape(self.n_ranks, self.n_steps)[:, s0 : s1 + 1]
        hi = self.cell_hi.reshape(self.n_ranks, self.n_steps)[:, s0 : s1 + 1]
        if ri is not None:
            lo, hi = lo[ri], hi[ri]
        if not (hi >= lo).any():
            return 0, 0
        return int(lo.min()), int(hi.max())

    def gpu_values(self, column: str, rows: np.ndarray) -> np.ndarray:
        return self.coll[column][np.searchsorted(self.coll["key"], rows)]

    def collective_launch_ns(self) -> np.ndarray:
        return self.gpu_values("launch_ns", self.collectives.row)

    def last_end_ns_by_rank(self) -> np.ndarray:
        out = np.full(self.n_ranks, np.iinfo(np.int64).min)
        for s in self.scans:
            out[int(np.searchsorted(self.frame.ranks, s.rank))] = s.last_end_ns
        return out

    def collective_class_rows(self):
        c = self.coll
        return c["key"], np.searchsorted(self.frame.ranks, c["rank"]), c["start_ns"], c["end_ns"]

    def step_covariates(self) -> np.ndarray:
        return covariates_from_sums(self._cov, self.n_steps, self.n_ranks)

    # ------------------------------------------------------------------ signals (window passes)
    def _context(self, plans=None, cells=None) -> StreamContext:
        return StreamContext(
            self.layout, self.step_values, self.frame.ranks, self.params.sigma_floor, self.launch_signal,
            plans or {}, cells or {},
        )  # fmt: skip

    def _stage(self, ctx: StreamContext, stage: str, windows=None, queries=None, span=(0.0, 1.0)) -> list:
        windows = self.windows if windows is None else windows
        args = {w.index: (queries or {}).get(w.index) for w in windows}
        msg = f"{STAGE_TEXT[stage]} ({len(windows)} windows of steps)"
        return _gather(
            self.ex,
            windows,
            lambda w: self.ex.submit(window_stage, ctx, w, stage, args[w.index]),
            self._tick,
            *span,
            msg,
        )

    def kernel_signals(self, progress: Progress | None = None) -> dict[str, CellSignal]:
        tick = progress or (lambda f, m: None)
        self._tick = progress
        stats = self._stage(self._context(), "stats", span=(0.0, 0.3))
        self._cov = CovariateSums.merge([s["covariates"] for s in stats])
        labels = [*SIGNALS, "gaps"]
        plans = {}
        for label in labels:
            parts = [(w.index, s[label]) for w, s in zip(self.windows, stats, strict=True) if label in s]
            plan = self._plan(parts)
            if plan is not None:
                plans[label] = plan
        self._plans = plans
        refs = self._stage(self._context(plans), "refs", span=(0.3, 0.6))
        cells = {}
        for label in SIGNALS:
            got = [r[label] for r in refs if label in r]
            n_ok = sum(x["n_ok"] for x in got)
            if n_ok > LARGE_CELL_ROWS:
                stride = max(1, n_ok // WINSOR_SAMPLE)
                cells[label] = ("winsor", stride, self._ok_offsets(refs, label))
            elif got:
                lo, hi = min(x["lo"] for x in got), max(x["hi"] for x in got)
                cells[label] = ("median", (lo, hi) if n_ok else None)
        got = self._stage(self._context(plans, cells), "cells", span=(0.6, 0.85))
        n_cells = self.n_ranks * self.n_steps
        mats: dict[str, tuple] = {}
        winsor = {}
        for label, mode in cells.items():
            if mode[0] == "median":
                mats[label] = _merge_cells([g[label] for g in got if label in g], n_cells)
            else:
                pos = np.concatenate([g[label][0] for g in got if label in g])
                val = np.concatenate([g[label][1] for g in got if label in g])
                winsor[label] = ("winsor", winsor_bounds(val[np.argsort(pos)], self.params.sigma_floor))
        if winsor:
            got = self._stage(self._context(plans, winsor), "winsor", span=(0.85, 1.0))
            for label in winsor:
                mats[label] = _merge_cells([g[label] for g in got if label in g], n_cells)
        out = {}
        shape = (self.n_ranks, self.n_steps)
        for label in ("compute", "memory", "copy", *(("launch",) if self.launch_signal else ())):
            val, cnt, se = mats.get(label) or _merge_cells([], n_cells)
            out[label] = centred(label, val.reshape(shape), cnt.reshape(shape), self.params.sigma_floor,
                                 se.reshape(shape))  # fmt: skip
        late = late_signal(self)
        if late is not None:
            out["late"] = late
        tick(1.0, "comparing ranks with their peers")
        return out

    def _plan(self, parts: list[tuple[int, dict]]) -> PeerPlan | None:
        """The run-wide matching of one signal from its windows' statistics (``signals.peer_match``)."""
        parts = [(i, s) for i, s in parts if s["n"]]
        if not parts:
            return None
        n = sum(s["n"] for _, s in parts)
        n_ranks = self.n_ranks
        n_steps_sig = max(s["max_step"] for _, s in parts) + 1
        ok = 2 <= n_ranks <= 4096 and n_steps_sig * n_ranks < 2**31 and all(s["ordered"] for _, s in parts)
        if ok:
            chain = []
            for i, s in parts:
                tr, first, last = s["track_cells"]
                chain += [(int(t), i, int(a), int(b)) for t, a, b in zip(tr, first, last, strict=True)]
            chain.sort()
            ok = all(chain[k][3] <= chain[k + 1][2] for k in range(len(chain) - 1))
        if ok:
            max_pos = max(s["max_pos"] for _, s in parts)
            ok = n_steps_sig * max_pos * n_ranks <= 8 * n + 1_000_000
            ok = ok and sum(s["major_ok"] for _, s in parts) >= 0.9 * n
        if ok:
            return PeerPlan("positional")
        n_names = max(s["max_name"] for _, s in parts) + 1
        top_step = n_steps_sig - 1
        top_name = max(s["top_name"] for _, s in parts if s["max_step"] == top_step)
        offsets, acc = {}, 0
        for i, s in parts:
            offsets[i] = acc
            acc += s["n_groups"]
        return PeerPlan(
            "exact",
            n_names=n_names,
            max_ord=max(s["max_ord"] for _, s in parts) + 1,
            base_max=top_step * n_names + top_name,
            lo=min(s["lo"] for _, s in parts),
            hi=max(s["hi"] for _, s in parts),
            gid_offset=offsets,
        )

    def _ok_offsets(self, refs: list[dict], label: str) -> dict[int, dict[int, int]]:
        """Per window, per track: how many finite rows of the signal come before (run order: by track, then
        row), for the positions of the winsorising subsample."""
        per = {(t, w.index): c for w, r in zip(self.windows, refs, strict=True) if label in r
               for t, c in r[label]["ok_by_track"].items()}  # fmt: skip
        out: dict[int, dict[int, int]] = {w.index: {} for w in self.windows}
        acc = 0
        for t, wi in sorted(per):
            out[wi][t] = acc
            acc += per[(t, wi)]
        return out

    # ------------------------------------------------------------------ anomaly rows (one more pass)
    def scored_part(self, q: RowQuery, finding: int, sigma: float) -> AnomalyPart:
        return AnomalyPart(("scored", q, sigma, None), ROOT, finding, None)

    def launch_wait_part(
        self, q: RowQuery, finding: int, extra_rows: np.ndarray | None = None
    ) -> AnomalyPart:
        return AnomalyPart(("wait", q, 0.0, extra_rows), ROOT, finding, None)

    def resolve_parts(self, parts: list[AnomalyPart]) -> list[AnomalyPart]:
        deferred = [i for i, p in enumerate(parts) if isinstance(p.rows, tuple)]
        if not deferred:
            return parts
        per_window: dict[int, list] = {}
        where: dict[int, list[tuple[int, int]]] = {}
        for i in deferred:
            kind, q, sigma, _ = parts[i].rows
            for w in self.windows:
                if w.s0 <= q.s1 and q.s0 < w.s1:
                    per_window.setdefault(w.index, []).append((kind, q, sigma))
                    where.setdefault(i, []).append((w.index, len(per_window[w.index]) - 1))
        windows = [w for w in self.windows if w.index in per_window]
        self._tick = self._rows_tick
        got = dict(zip([w.index for w in windows], self._stage(self._context(self._plans), "rows", windows, per_window),
                       strict=True))  # fmt: skip
        if got:
            k = np.concatenate([r["keys"] for r in got.values()])
            uk, first = np.unique(k, return_index=True)
            cols = {c: np.concatenate([r["columns"][c] for r in got.values()])[first] for c in ROW_COLUMNS}
            self._rows_cache = {"key": uk, **cols}
        out = list(parts)
        for i in deferred:
            kind, _q, _sigma, extra = parts[i].rows
            ks = [got[wi]["queries"][j][0] for wi, j in where.get(i, [])]
            ss = [got[wi]["queries"][j][1] for wi, j in where.get(i, [])]
            rows = np.concatenate([np.zeros(0, np.int64), *ks])
            score = np.concatenate([np.zeros(0), *ss])
            o = np.argsort(rows, kind="stable")
            rows, score = rows[o], score[o]
            if extra is not None:
                rows = np.union1d(rows, extra)
                score = np.ones(len(rows))
            out[i] = AnomalyPart(rows, parts[i].role, parts[i].finding, score)
        return out

    def row_columns(self, rows: np.ndarray, columns: tuple[str, ...]) -> dict[str, np.ndarray]:
        """Columns of rows: those the last pass read (``resolve_parts``), else collective-class events."""
        out = {c: np.zeros(len(rows), np.int64) for c in columns}
        cache = self._rows_cache
        in_cache = np.zeros(len(rows), bool)
        if cache:
            pos = np.minimum(np.searchsorted(cache["key"], rows), len(cache["key"]) - 1)
            in_cache = cache["key"][pos] == rows
            for c in columns:
                out[c][in_cache] = cache[c][pos[in_cache]]
        rest = ~in_cache
        if rest.any():
            key = rows[rest]
            at = np.searchsorted(self.coll["key"], key)
            track = key >> KEY_SHIFT
            lay = self.layout
            cols = {
                "track": track,
                "index": key & ((1 << KEY_SHIFT) - 1),
                "rank": self.coll["rank"][at],
                "device": lay.track_device[track],
                "stream": lay.track_stream[track],
                "name": self.coll["name"][at],
                "start_ns": self.coll["start_ns"][at],
                "end_ns": self.coll["end_ns"][at],
            }
            for c in columns:
                out[c][rest] = cols[c]
        return out


def _annotated(store, lay: RunLayout) -> np.ndarray:
    from kat_gui.store.slices import kind_counts

    kc = kind_counts(store)
    return kc[:, EventKind.ANNOTATION] > 0 if len(kc) else np.zeros(0, bool)


def _gather(ex, items, submit, tick=None, lo: float = 0.0, hi: float = 1.0, message: str = "") -> list:
    """Results of ``submit(item)`` for every item, in order (a bounded number in flight). ``tick(frac, msg)``
    is called while waiting and between tasks, from ``lo`` to ``hi`` (it may raise Cancelled: the executor
    then cancels the rest)."""
    items = list(items)
    out = []
    for k, (_item, task) in enumerate(parallel.in_order(ex, items, lambda _ex, it: submit(it))):
        frac = lo + (hi - lo) * k / max(len(items), 1)
        poll = (lambda frac=frac: tick(frac, message)) if tick else None
        out.append(parallel.wait(task, poll))
        if tick:
            tick(frac, message)
    return out


def _merge_cells(parts: list[tuple], n_cells: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    val = np.full(n_cells, np.nan)
    cnt = np.zeros(n_cells, np.int64)
    se = np.zeros(n_cells)
    for c, v, k, e in parts:
        val[c], cnt[c], se[c] = v, k, e
    return val, cnt, se
