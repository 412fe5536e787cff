"""Per-(rank, step) overview signals for the GUI's rank x step heatmap (:class:`RankStep`, stored as
``detect/rank_step`` and ``detect/steps``; docs/store-format.md).

- ``slowdown``: the rank's *busy time* in the step (the summed durations of its non-collective GPU events:
  kernels, copies and memsets other than collectives, overlapping streams counted each) over its peers' in the
  same step, minus 1 (0.2 = 20 % more busy time than the peers). The peers' value is the median of every rank
  with busy time in the step (the rank included) with three or more such ranks, the other rank's with two;
  NaN where the rank has no busy time in the step or it has no peer. Busy time excludes collectives, so a
  rank that only *waits* for a slow peer is not slowed down itself: its wait shows in ``wait_share``.
- ``wait_share``: the time the rank waited inside collectives in the step (per collective kernel, the last
  member's arrival minus its own, clock-corrected: ``align.Collectives.wait_ns``, summed over the instances of
  the step), as a share of the step's typical length (``RunAnalysis.step_len_ns``, the median across ranks
  of the step's GPU span), clipped to [0, 1]; 0 where the rank ran in the step without waiting, NaN where it
  has no GPU event in the step or the run has no matched collective.
- per step: its number, the first start and last end of any rank's GPU events in it (ns, each rank's own
  clock, as the timeline shows them) and its typical length (ns).

Computed from what detection already holds for the whole run and for the streamed one alike (the cells' first
start, last end and busy time, the collectives, the step lengths), with exact integer sums: both paths give
the same arrays, bit for bit. Units: ns; ratios and shares as fractions (float32 when stored).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from kat_gui.detect.classify import COLLECTIVE
from kat_gui.detect.stats import quiet_nanmedian

RANK_STEP_KEY = "detect/rank_step"
STEPS_KEY = "detect/steps"


def busy_ns(cls: np.ndarray, start_ns: np.ndarray, end_ns: np.ndarray) -> np.ndarray:
    """Per GPU event: its duration (ns, int64, >= 0) when it is not a collective, else 0 (time in a collective
    is waiting or transfer, not the rank's own work)."""
    return np.where(cls != COLLECTIVE, np.maximum(end_ns - start_ns, 0), 0).astype(np.int64)


@dataclass
class RankStep:
    """The [rank, step] overview signals of one run (see the module docstring). Rows follow ``ranks`` (sorted
    rank numbers), columns ``steps`` (sorted step numbers)."""

    ranks: np.ndarray  # int64 [R]
    steps: np.ndarray  # int64 [S]
    slowdown: np.ndarray  # float32 [R, S]
    wait_share: np.ndarray  # float32 [R, S]
    step_start_ns: np.ndarray  # int64 [S]
    step_end_ns: np.ndarray  # int64 [S]
    step_len_ns: np.ndarray  # int64 [S]

    def tables(self) -> dict[str, dict[str, np.ndarray]]:
        """The stored form: ``detect/rank_step`` (one row per rank; the [R, S] matrices as 2-D columns) and
        ``detect/steps`` (one row per step)."""
        return {
            RANK_STEP_KEY: {"rank": self.ranks, "slowdown": self.slowdown, "wait_share": self.wait_share},
            STEPS_KEY: {
                "step": self.steps,
                "start_ns": self.step_start_ns,
                "end_ns": self.step_end_ns,
                "len_ns": self.step_len_ns,
            },
        }


def rank_step_signals(run) -> RankStep:
    """The overview signals of an aligned run with at least one rank: a whole-run ``RunAnalysis`` or a
    ``StreamedAnalysis`` (both hold ``cell_lo``, ``cell_hi``, ``cell_busy_ns``, ``collectives``,
    ``coll_step_idx`` and ``step_len_ns``). A step where no rank ran has start and end 0."""
    n_r, n_s = run.n_ranks, run.n_steps
    lo = run.cell_lo.reshape(n_r, n_s)
    hi = run.cell_hi.reshape(n_r, n_s)
    present = hi >= lo
    busy = np.where(present, run.cell_busy_ns.reshape(n_r, n_s), 0)
    busy_f = np.where(busy > 0, busy, np.nan).astype(np.float64)
    n_busy = np.count_nonzero(busy > 0, axis=0)
    med = quiet_nanmedian(busy_f, 0)
    other = busy.sum(axis=0)[None, :] - busy  # with two ranks, the other one's busy time
    ref = np.where(n_busy[None, :] >= 3, med[None, :], np.where(n_busy[None, :] == 2, other, np.nan))
    with np.errstate(all="ignore"):
        slowdown = np.where((busy > 0) & (ref > 0), busy / ref - 1.0, np.nan)
    co = run.collectives
    if co.n:
        m_step = run.coll_step_idx[co.inst]
        ok = m_step >= 0
        ridx = np.searchsorted(run.frame.ranks, co.rank)
        wait = np.zeros(n_r * n_s, np.int64)
        np.add.at(wait, ridx[ok].astype(np.int64) * n_s + m_step[ok], np.maximum(co.wait_ns[ok], 0))
        share = np.clip(wait.reshape(n_r, n_s) / run.step_len_ns[None, :], 0.0, 1.0)
        wait_share = np.where(present, share, np.nan)
    else:
        wait_share = np.full((n_r, n_s), np.nan)
    any_cell = present.any(axis=0)
    start = np.where(any_cell, np.where(present, lo, np.iinfo(np.int64).max).min(axis=0), 0)
    end = np.where(any_cell, np.where(present, hi, np.iinfo(np.int64).min).max(axis=0), 0)
    return RankStep(
        ranks=np.asarray(run.frame.ranks, np.int64),
        steps=np.asarray(run.step_values, np.int64),
        slowdown=slowdown.astype(np.float32),
        wait_share=wait_share.astype(np.float32),
        step_start_ns=start.astype(np.int64),
        step_end_ns=end.astype(np.int64),
        step_len_ns=np.round(run.step_len_ns).astype(np.int64),
    )
