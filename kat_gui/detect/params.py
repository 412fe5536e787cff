"""The detector's thresholds (:class:`Params`) and the confidence of a timing finding.

Every field of :class:`Params` is written into ``detect/meta.params``: the names are part of the output and
must not change. Effects are relative (a slowdown of 0.03 is 3 %), z-scores are in robust noise units of the
signal they test, and step counts are counts of profiler steps (see ``align.py``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Params:
    """Detector thresholds. None is tuned to a scenario; each has a reason.

    - ``z_cell``: a (rank, step) cell is abnormal when it sits this many robust standard deviations (1.4826
      MAD of all cells) above the per-step peer median. 4 keeps a Gaussian cell's false-flag chance ~3e-5.
    - ``min_slowdown``: and at least this relative slowdown (3 %): below it, run-to-run GPU variation and
      silicon spread dominate, and nobody acts on it.
    - ``min_launch_slowdown``: host launch intervals must be this much (3 %) longer than peers'. Host timing
      (Python, frequency scaling) varies far more than kernel timing between healthy hosts; the launch
      signal's own, larger noise scale (``z_cell``) holds that back, not this bar.
    - ``min_late_share``: a rank must make its peers wait at least this share of a step (2 %) to count as
      late.
    - ``min_steps``: a fault must persist over this many abnormal steps (merged across ``merge_gap`` normal
      ones): a one-step blip is noise or a transient the user cannot act on. Runs with fewer steps than this
      need every step abnormal.
    - ``sigma_floor``: lower bound of the noise scale of log ratios (0.5 %), for exact synthetic inputs.
    - ``hbm_ratio``: memory-bound kernels must slow this many times more than compute-bound ones to call
      HBM rather than SM compute (clock throttling slows both, GEMMs more).
    - ``warmup_steps``: history-based findings confined to the first steps are warm-up, not faults.
    - ``z_link``: the bar of a shift found by a window search against a series' own history (a link's
      transfer time, a rank's sustained deviation), in noise units: stricter than ``z_cell`` because the
      best of many windows is kept. Also the bar of a single cell in a run too short for history.
    - ``short_run_factor``: runs with fewer than ``min_steps`` steps have no history; a cell there must be
      this many times the minimum effect (and ``z_link``) to count.
    - ``straggler_majority`` / ``straggler_p`` / ``straggler_wait_share``: a rank that arrives last (skew
      above the transfer time) at more than this share of its collective instances, at a count this
      unlikely for a rank drawn at random (binomial, 1 / group size), and whose lateness costs its peers at
      least this share of the run's step time (each peer's wait, averaged over peers) is a straggler.
      Healthy decode skew moves from rank to rank; a straggler is the same rank, costly, most of the time.
    """

    z_cell: float = 4.0
    min_slowdown: float = 0.03
    min_launch_slowdown: float = 0.03
    min_late_share: float = 0.02
    min_steps: int = 3
    merge_gap: int = 2
    sigma_floor: float = 0.005
    hbm_ratio: float = 1.5
    warmup_steps: int = 3
    z_link: float = 7.0
    short_run_factor: float = 3.0
    straggler_majority: float = 0.5
    straggler_p: float = 0.005
    straggler_wait_share: float = 0.15


def timing_confidence(z: float, n_flagged: int, p: Params) -> float:
    """Confidence of a rank or link finding from its z-score and its number of abnormal steps: grows with the
    margin over ``z_cell`` and with persistence; 0.5 at the bare minimum, at most 0.99."""
    margin = max(z - p.z_cell, 0.0) / p.z_cell
    persist = min(n_flagged / (3.0 * p.min_steps), 1.0)
    return round(min(0.99, 0.5 + 0.25 * (1 - math.exp(-margin)) + 0.24 * persist), 3)
