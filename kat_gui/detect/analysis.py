"""The shared per-run intermediate arrays of one detection pass (:class:`RunAnalysis`).

Built once per run and read by every analysis (``rank_findings``, ``straggler_findings``, ``link_findings``,
``hang_findings``, the anomaly table):

- steps (``align.assign_steps``): a step number per GPU event, the distinct step numbers, and each event's
  step *index* into them (-1 outside every step);
- ranks: each event's rank index into ``RunFrame.ranks``;
- collective instances matched across ranks (``align.match_collectives``) and each instance's step index;
- the typical length of each step (ns), the median across ranks of the step's GPU span;
- the per-(rank, step) peer signals (``kernel_signals``) and the GPU idle gaps before each event
  (``idle_gaps``), computed on demand.

Assumptions: ``RunFrame.gpu`` rows are ordered by (track, start_ns) (``frame.py``). Times are ns on the
trace's clock; signal cells are log ratios to peers, except ``late`` (a share of the step).
"""

from __future__ import annotations

from functools import cached_property
from typing import NamedTuple

import numpy as np

from kat_gui.detect.align import Collectives, Steps, assign_steps, launch_times, match_collectives
from kat_gui.detect.anomalies import ROOT, AnomalyPart, RowQuery, launch_wait_rows, scored_rows
from kat_gui.detect.classify import COLLECTIVE, COMPUTE, COPY_HOST, MEMORY
from kat_gui.detect.frame import RunFrame
from kat_gui.detect.history import step_covariates
from kat_gui.detect.params import Params
from kat_gui.detect.rank_step import busy_ns
from kat_gui.detect.signals import CellSignal, PeerMatch, cell_signal, peer_match
from kat_gui.detect.stats import quiet_nanmedian, segments, small_unique
from kat_gui.progress import Progress

# Noise floor of the ``late`` signal, whose cells are a share of the step (1e-4 = 0.01 % of a step), not a log
# ratio: ``Params.sigma_floor`` (a floor for log ratios) does not apply to it.
LATE_SHARE_SIGMA_FLOOR = 1e-4


def _no_progress(_frac: float, _msg: str) -> None:
    pass


def step_lengths(lo: np.ndarray, hi: np.ndarray, n_ranks: int, n_steps: int) -> np.ndarray:
    """Median across ranks of each step's GPU span from the per-(rank, step) first start ``lo`` and last end
    ``hi`` (flat [rank * n_steps + step]; int64 max/min where a rank has nothing in a step), ns; 1 where
    unknown."""
    span = np.where(hi > lo, hi - lo, np.nan).astype(np.float64).reshape(n_ranks, n_steps)
    med = quiet_nanmedian(span, 0)
    return np.where(np.isfinite(med) & (med > 0), med, 1.0)


def late_signal(run) -> CellSignal | None:
    """The ``late`` cells of a run (whole or streamed: it reads only the collectives, the step lengths and
    the run's shape): the waiting a rank imposes on the median peer at collectives, summed per step as a
    share of the step length; None without collectives."""
    co = run.collectives
    if not co.n:
        return None
    m_step = run.coll_step_idx[co.inst]
    ok = m_step >= 0
    share = np.clip(co.late_ns, 0, None).astype(np.float64) / run.step_len_ns[np.maximum(m_step, 0)]
    ridx = np.searchsorted(run.frame.ranks, co.rank)
    return cell_signal(
        "late",
        ridx[ok],
        m_step[ok],
        share[ok],
        run.n_ranks,
        run.n_steps,
        LATE_SHARE_SIGMA_FLOOR,
        reduce="sum",
    )


class IdleGaps(NamedTuple):
    """Per GPU event (row of ``RunFrame.gpu``): how long its rank's GPU sat idle before it, and the same op's
    gap on its peers (median of the matched peers; NaN outside steps or unmatched), both in ns."""

    own_ns: np.ndarray
    peer_ns: np.ndarray


class RunAnalysis:
    """The intermediate arrays of one detection pass over a :class:`RunFrame` (see the module docstring)."""

    def __init__(self, frame: RunFrame, params: Params, progress: Progress | None = None):
        """``progress(frac, msg)`` is called between the steps (it may raise Cancelled to stop)."""
        self.frame = frame
        self.params = params
        tick = progress or _no_progress
        tick(0.0, "aligning ranks: launches")
        self.launch_ns = launch_times(frame)  # per GPU event: its host launch time (-1 when unknown)
        tick(0.35, "aligning ranks: steps")
        self.steps: Steps = assign_steps(frame, self.launch_ns)
        tick(0.55, "aligning ranks: step numbers")
        self.step_values = small_unique(self.steps.step[self.steps.step >= 0])  # distinct step numbers
        self.n_steps = max(len(self.step_values), 1)
        if not len(self.step_values):
            self.step_values = np.zeros(1, np.int64)
        st = self.steps.step
        self.step_idx = np.where(st >= 0, np.searchsorted(self.step_values, st), -1)
        self.n_ranks = len(frame.ranks)
        self.rank_idx = np.searchsorted(frame.ranks, frame.gpu["rank"])
        tick(0.7, "aligning ranks: collectives")
        self.collectives: Collectives = match_collectives(frame, self.steps)
        self.coll_step_idx = np.where(
            self.collectives.step >= 0, np.searchsorted(self.step_values, self.collectives.step), -1
        )
        tick(0.85, "aligning ranks: step lengths")
        self.step_len_ns = self._step_lengths()
        tick(1.0, "aligning ranks")
        self.peer_matches: dict[str, PeerMatch] = {}  # filled by kernel_signals, per signal name

    def _step_lengths(self) -> np.ndarray:
        """Median across ranks of each step's GPU span (first start to last end), ns; 1 where unknown. Keeps
        the per-(rank, step) first start, last end and busy time (``cell_lo``, ``cell_hi``, ``cell_busy_ns``,
        flat [rank * n_steps + step]; see :func:`kat_gui.detect.rank_step.busy_ns`)."""
        g = self.frame.gpu
        ok = self.step_idx >= 0
        cell = self.rank_idx[ok].astype(np.int64) * self.n_steps + self.step_idx[ok]
        n = self.n_ranks * self.n_steps
        lo = np.full(n, np.iinfo(np.int64).max)
        hi = np.full(n, np.iinfo(np.int64).min)
        busy = np.zeros(n, np.int64)
        order = np.argsort(cell, kind="stable")
        c_s = cell[order]
        first, _ = segments(c_s)
        if len(first):
            lo[c_s[first]] = np.minimum.reduceat(g["start_ns"][ok][order], first)
            hi[c_s[first]] = np.maximum.reduceat(g["end_ns"][ok][order], first)
            work = busy_ns(g["cls"][ok], g["start_ns"][ok], g["end_ns"][ok])
            busy[c_s[first]] = np.add.reduceat(work[order], first)
        self.cell_lo, self.cell_hi, self.cell_busy_ns = lo, hi, busy
        return step_lengths(lo, hi, self.n_ranks, self.n_steps)

    # ------------------------------------------------------------------ signals
    def kernel_signals(self, progress: Progress | None = None) -> dict[str, CellSignal]:
        """The [rank, step] peer signals: ``compute``, ``memory`` and ``copy`` (log ratio of each kernel's or
        host copy's duration to the same op on the peers), ``launch`` (log ratio of the host's launch
        interval, when launches are known and there are peers) and ``late`` (the waiting a rank imposes on
        the median peer at collectives, summed per step as a share of the step length; when there are
        collectives). Records each signal's :class:`PeerMatch` in ``peer_matches``. ``progress(frac, msg)`` is
        called between the signals and their steps (it may raise Cancelled to stop)."""
        tick = progress or _no_progress
        g = self.frame.gpu
        p = self.params
        out: dict[str, CellSignal] = {}
        dur = (g["end_ns"] - g["start_ns"]).astype(np.float64)
        for k, (label, cls) in enumerate((("compute", COMPUTE), ("memory", MEMORY), ("copy", COPY_HOST))):
            tick(0.2 * k, f"comparing ranks with their peers: {label} kernels")
            rows = np.flatnonzero((g["cls"] == cls) & (self.step_idx >= 0))
            pm = peer_match(
                rows, self.step_idx[rows], g["name"][rows], self.rank_idx[rows], dur[rows], self.n_ranks
            )
            self.peer_matches[label] = pm
            out[label] = cell_signal(
                label,
                self.rank_idx[rows],
                self.step_idx[rows],
                pm.log_ratio,
                self.n_ranks,
                self.n_steps,
                p.sigma_floor,
            )
        # Host launch pacing: interval between a rank's consecutive launches, matched like kernels.
        tick(0.6, "comparing ranks with their peers: launches")
        has = self.launch_ns >= 0
        rows = np.flatnonzero(has & (self.step_idx >= 0))
        if len(rows) and self.n_ranks >= 2:
            ri_, lt_ = self.rank_idx[rows], self.launch_ns[rows]
            in_order = (
                not (np.diff(ri_) < 0).any() and not ((np.diff(lt_) < 0) & (np.diff(ri_) == 0)).any()
            )  # one stream per rank: rows are already in launch order, no sort
            order = np.arange(len(rows)) if in_order else np.lexsort((lt_, ri_))
            tick(0.63, "comparing ranks with their peers: launches")
            r_o = rows[order]
            t = self.launch_ns[r_o]
            same = np.r_[False, self.rank_idx[r_o][1:] == self.rank_idx[r_o][:-1]]
            interval = np.where(same, np.r_[0, np.diff(t)], np.nan)
            keep = np.isfinite(interval)
            r_k = r_o[keep]
            iv = interval[keep]
            if in_order:
                r_k_sorted, iv_sorted = r_k, iv
            else:
                tick(0.66, "comparing ranks with their peers: launches")
                r_k_sorted = np.sort(r_k)  # back to (track, start) order for the ordinal in peer_match
                tick(0.68, "comparing ranks with their peers: launches")
                iv_sorted = iv[np.argsort(r_k, kind="stable")]
            tick(0.7, "comparing ranks with their peers: launches")
            pm = peer_match(
                r_k_sorted,
                self.step_idx[r_k_sorted],
                g["name"][r_k_sorted],
                self.rank_idx[r_k_sorted],
                iv_sorted,
                self.n_ranks,
            )
            self.peer_matches["launch"] = pm
            tick(0.8, "comparing ranks with their peers: launches")
            out["launch"] = cell_signal(
                "launch",
                self.rank_idx[r_k_sorted],
                self.step_idx[r_k_sorted],
                pm.log_ratio,
                self.n_ranks,
                self.n_steps,
                p.sigma_floor,
            )
        # Collective arrival: the waiting a rank imposes on the median peer, as a share of the step.
        tick(0.9, "comparing ranks with their peers: collective arrival")
        late = late_signal(self)
        if late is not None:
            out["late"] = late
        return out

    @cached_property
    def idle_gaps(self) -> IdleGaps:
        """Each GPU event's idle gap before it on its rank (ns) and the matched peers' gap (see
        :class:`IdleGaps`): with a slow host, the GPU waits for each launch."""
        g = self.frame.gpu
        order = np.lexsort((g["start_ns"], self.rank_idx))
        # Running maximum of ends per rank in one pass: each rank's times are lifted into its own band.
        t0 = int(min(g["start_ns"].min(), g["end_ns"].min()))
        band = int(max(g["end_ns"].max(), g["start_ns"].max())) - t0 + 1
        lift = self.rank_idx[order].astype(np.int64) * band
        end_l = g["end_ns"][order] - t0 + lift
        prev_end = np.maximum.accumulate(np.r_[0, end_l[:-1]])
        same = np.r_[False, self.rank_idx[order][1:] == self.rank_idx[order][:-1]]
        gap = np.zeros(self.frame.n_gpu)
        gap[order] = np.where(same, np.maximum(g["start_ns"][order] - t0 + lift - prev_end, 0), 0)
        rows = np.flatnonzero(self.step_idx >= 0)
        pm = peer_match(
            rows, self.step_idx[rows], g["name"][rows], self.rank_idx[rows], gap[rows] + 1.0, self.n_ranks
        )
        ref = np.full(self.frame.n_gpu, np.nan)
        ref[rows] = pm.ref_ns - 1.0
        return IdleGaps(gap, ref)

    def window_ns(self, s0: int, s1: int, ri: int | None) -> tuple[int, int]:
        """(first start, last end) in ns of the GPU events in step indices ``s0..s1`` (of rank index ``ri``
        when given); (0, 0) when there are none."""
        g = self.frame.gpu
        m = (self.step_idx >= s0) & (self.step_idx <= s1)
        if ri is not None:
            m &= self.rank_idx == ri
        if not m.any():
            return 0, 0
        return int(g["start_ns"][m].min()), int(g["end_ns"][m].max())

    # ------------------------------------------------------------------ what the analyses ask of a run
    # The finding modules read per-event facts through these methods, never through the per-event arrays, so
    # that a streamed analysis (kat_gui.detect.streamed), which never holds the run's events, answers the
    # same questions (its rows are row keys and its parts are resolved by one more pass over the windows).

    @property
    def has_steps(self) -> bool:
        """Whether any GPU event falls in a step."""
        return bool((self.steps.step >= 0).any())

    @property
    def any_launch(self) -> bool:
        """Whether any GPU event has a known host launch."""
        return bool((self.launch_ns >= 0).any())

    def query_mask(self, q: RowQuery) -> np.ndarray:
        """The GPU events of rank index ``q.rank_idx`` in step indices ``q.s0..q.s1`` (of ``q.classes``)."""
        m = (self.step_idx >= q.s0) & (self.step_idx <= q.s1) & (self.rank_idx == q.rank_idx)
        if q.classes:
            m &= np.isin(self.frame.gpu["cls"], q.classes)
        return m

    def scored_part(self, q: RowQuery, finding: int, sigma: float) -> AnomalyPart:
        """Root rows of ``q`` scored by their log ratio to peers in units of ``sigma`` (``anomalies.scored_rows``)."""
        return scored_rows(self, self.query_mask(q), finding, sigma)

    def launch_wait_part(
        self, q: RowQuery, finding: int, extra_rows: np.ndarray | None = None
    ) -> AnomalyPart:
        """Root rows of ``q`` whose GPU waited for a late launch (``anomalies.launch_wait_rows``; score: the
        grown gap in µs). With ``extra_rows``, their union with those rows, every score 1."""
        rows, score = launch_wait_rows(self, self.query_mask(q))
        if extra_rows is not None:
            rows = np.union1d(rows, extra_rows)
            score = np.ones(len(rows))
        return AnomalyPart(rows, ROOT, finding, score)

    def resolve_parts(self, parts: list[AnomalyPart]) -> list[AnomalyPart]:
        """Parts with concrete rows (a whole-run analysis makes them concrete at once)."""
        return parts

    def row_columns(self, rows: np.ndarray, columns: tuple[str, ...]) -> dict[str, np.ndarray]:
        """GPU event columns (``RunFrame.gpu``) of ``rows``."""
        g = self.frame.gpu
        return {c: g[c][rows] for c in columns}

    def gpu_values(self, column: str, rows: np.ndarray) -> np.ndarray:
        """One ``RunFrame.gpu`` column at ``rows`` (rows from ``collectives.row``, say)."""
        return self.frame.gpu[column][rows]

    def collective_launch_ns(self) -> np.ndarray:
        """Host launch time of each member row of ``collectives`` (-1 when unknown)."""
        return self.launch_ns[self.collectives.row]

    def last_end_ns_by_rank(self) -> np.ndarray:
        """Per rank index: the last end of its GPU events (int64 min for a rank without any)."""
        out = np.full(self.n_ranks, np.iinfo(np.int64).min)
        np.maximum.at(out, self.rank_idx, self.frame.gpu["end_ns"])
        return out

    def collective_class_rows(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(rows, rank index, start_ns, end_ns) of the GPU events classed collective, in row order."""
        g = self.frame.gpu
        rows = np.flatnonzero(g["cls"] == COLLECTIVE)
        return rows, self.rank_idx[rows], g["start_ns"][rows], g["end_ns"][rows]

    def step_covariates(self) -> np.ndarray:
        """[n_steps, k] work-size covariates of each step (``history.step_covariates``)."""
        g = self.frame.gpu
        kern = np.flatnonzero(np.isin(g["cls"], (COMPUTE, MEMORY)) & (self.step_idx >= 0))
        dur = np.maximum(g["end_ns"][kern] - g["start_ns"][kern], 1).astype(np.float64)
        cp = np.flatnonzero(g["cls"] == COPY_HOST)
        return step_covariates(
            self.step_idx[kern],
            self.n_steps,
            np.log(dur),
            g["name"][kern],
            g["cls"][kern],
            self.rank_idx[kern],
            self.n_ranks,
            self.step_idx[cp],
            self.rank_idx[cp],
            g["bytes"][cp],
        )
