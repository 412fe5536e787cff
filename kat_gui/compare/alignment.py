"""Which steps and ranks of two runs are compared with each other.

Steps: each run's steps are numbered as the trace numbers them (``ProfilerStep#N``; else marker kernel or
collective order, see :mod:`kat_gui.compare.run`). An :class:`~kat_gui.compare.result.Anchor` names the step
(or a time, mapped to the step running then) of each run that lines up with the other's; by default each
run's first step. Only the steps both runs have after their anchors are compared, so a longer run is cut to
the shorter one. A step's *position* is its index counted from the anchor step (0 = the anchor step).

Ranks: degraded rank r is paired with healthy rank r, or with healthy rank ``r mod n`` when the healthy run
lacks it (it has fewer ranks). Per-rank rows are numbered by *slot*: the index of the degraded rank in the
degraded run's rank list.

Units: step numbers and positions are plain integers; times (``Anchor.*_ns``) are ns on the store's clock.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from kat_gui.compare.result import Anchor
from kat_gui.compare.run import RunData


@dataclass(frozen=True)
class StepAlignment:
    """The anchor step of each run and how many steps from the anchors on are compared."""

    anchor_healthy_step: int
    anchor_degraded_step: int
    steps_compared: int

    def anchor_step(self, side: int) -> int:
        """The anchor step of side 0 (healthy) or 1 (degraded)."""
        return self.anchor_degraded_step if side else self.anchor_healthy_step


def anchor_step(run: RunData, step: int | None, t_ns: int | None) -> int:
    """The step of ``run`` that an anchor names: ``step`` (or the next step the run has), else the step
    running at ``t_ns``, else the first step (0 for a run without steps)."""
    steps = run.steps
    if not len(steps):
        return 0
    if step is None and t_ns is not None:
        step = run.step_at(int(t_ns))
    if step is None:
        return int(steps[0])
    i = min(int(np.searchsorted(steps, step)), len(steps) - 1)
    return int(steps[i])


def align_steps(healthy: RunData, degraded: RunData, anchor: Anchor | int | None) -> StepAlignment:
    """Resolve ``anchor`` (an int = the same step number in both runs; None = each run's first step) and count
    the steps both runs have from their anchors on."""
    if isinstance(anchor, int | np.integer):
        anchor = Anchor(healthy_step=int(anchor), degraded_step=int(anchor))
    anchor = anchor or Anchor()
    a_h = anchor_step(healthy, anchor.healthy_step, anchor.healthy_ns)
    a_d = anchor_step(degraded, anchor.degraded_step, anchor.degraded_ns)
    n_h = int(len(healthy.steps) - np.searchsorted(healthy.steps, a_h))
    n_d = int(len(degraded.steps) - np.searchsorted(degraded.steps, a_d))
    return StepAlignment(a_h, a_d, max(min(n_h, n_d), 0))


def positions(run: RunData, anchor_step: int, step: np.ndarray) -> np.ndarray:
    """Aligned position of each step number (0 = the anchor step; -1 before it or outside every step)."""
    steps = run.steps
    base = int(np.searchsorted(steps, anchor_step))
    pos = np.searchsorted(steps, step) - base
    return np.where(step >= 0, pos, -1)


def pair_ranks(h_ranks: np.ndarray, d_ranks: np.ndarray) -> dict[int, int]:
    """Healthy rank -> degraded rank it stands in for (identity, or ``r mod n`` when counts differ)."""
    hs = [int(r) for r in h_ranks]
    pair: dict[int, int] = {}
    for r in d_ranks:
        r = int(r)
        h = r if r in hs else hs[r % len(hs)]
        pair.setdefault(h, r)
    return pair


@dataclass
class RankPairing:
    """``degraded_ranks``: slot -> degraded rank; ``degraded_of_healthy``: healthy rank -> the degraded rank
    it is compared with (a healthy rank no degraded rank pairs with is not compared)."""

    degraded_ranks: list[int]
    degraded_of_healthy: dict[int, int]

    @classmethod
    def of(cls, healthy: RunData, degraded: RunData) -> RankPairing:
        return cls([int(r) for r in degraded.ranks], pair_ranks(healthy.ranks, degraded.ranks))

    @property
    def n_slots(self) -> int:
        return len(self.degraded_ranks)

    def slots(self, side: int, rank: np.ndarray) -> np.ndarray:
        """Slot of each rank of side 0 (healthy) or 1 (degraded); -1 for a rank that is not compared."""
        rank_index = {r: i for i, r in enumerate(self.degraded_ranks)}
        if side == 1:
            lut = {r: rank_index[r] for r in self.degraded_ranks}
        else:
            lut = {h: rank_index[d] for h, d in self.degraded_of_healthy.items()}
        if not len(rank):
            return np.zeros(0, np.int64)
        hi = int(rank.max()) + 1
        table = np.full(hi, -1, dtype=np.int64)
        for r, i in lut.items():
            if r < hi:
                table[r] = i
        return table[rank]

    def to_json(self) -> dict[str, int]:
        """Degraded rank (as a string) -> the healthy rank it is compared with, by healthy rank."""
        return {str(d): h for h, d in sorted(self.degraded_of_healthy.items())}
