"""The result types of a run-vs-run comparison: thresholds (:class:`Params`), the alignment request
(:class:`Anchor`), one row of the diff (:class:`Difference`), a run's summary (:class:`RunSummary`) and the
whole diff (:class:`Comparison`, serialised as schema ``kat.compare/1``).

Units: every time and duration is in ns (``_ns`` fields); ``rel_*`` and ``effect`` are relative changes
(degraded/healthy - 1, so +0.10 = 10 % slower); ``p_value``/``q_value`` are probabilities. The field names
of :class:`Params` and :class:`Difference` are written into the JSON output as they are.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from kat_gui.compare.run import RunData

SCHEMA = "kat.compare/1"

# Row kinds, in the order a reader meets them. Symptom kinds are effects of a cause elsewhere.
KINDS = ("kernel", "kernel_rank", "class", "class_rank", "rank_busy", "rank_idle", "rank_wait", "step_time")
SYMPTOM_KINDS = ("rank_wait", "step_time")
RANK_METRIC_KINDS = ("rank_busy", "rank_idle", "rank_wait")  # one sample per (rank, step)
STRUCTURAL_KINDS = (
    "only_healthy",
    "only_degraded",
    "collective_renamed",
    "ranks_changed",
    "rank_stopped",
    "different_workload",
)


@dataclass
class Params:
    """Thresholds of the diff (each attribute says what it bounds; the field names are written into the
    JSON output)."""

    alpha: float = 0.01
    """False discovery rate of the Benjamini-Hochberg procedure over all tested rows."""
    min_effect: float = 0.04
    """Smallest relative change that counts."""
    min_abs_ns: float = 200.0
    """Smallest median shift (ns) that counts."""
    min_n: int = 8
    """Fewest samples per side to test a row; also the fewest steps per side a modelled collective must be
    compared in, and the fewest instances outside the healthy range that make a ``different_workload`` row."""
    min_per_step: float = 0.5
    """A kernel found in one run only is a structural change when it runs at least this often per compared
    step (a one-off kernel is not)."""
    max_samples: int = 20_000
    """Per row and side, quantiles and tests use a random subset of at most about this many samples (counts
    and totals stay exact)."""
    min_step_share: float = 0.01
    """Per-rank busy/idle rows must move by at least this share of the healthy median step time (which rank
    waits a few µs more is decided by the GPUs' speed lottery, not by a fault)."""
    min_wait_share: float = 0.03
    """The same for collective waits, which that lottery moves by up to 2-3 % of a step (the slowest GPU sets
    everyone's wait)."""
    common_mode: bool = True
    """Divide out what moves every rank of a step alike (the workload, see :mod:`kat_gui.compare.workload`)
    and demote symptoms without a cause."""
    min_effect_modelled: float = 0.08
    """Smallest relative change that counts for a kernel whose durations a workload model adjusted (and for
    the collective class when any was)."""
    locate_in_time: bool = True
    """Look for the window of steps in which each row changed and, where the change is a part of the run,
    report the row over that window (:mod:`kat_gui.compare.window`)."""


# Params fields added after schema kat.compare/1 was first written, with their defaults: left out of the
# JSON at these values, so that every comparison they do not affect stays byte for byte what it was.
LATER_PARAMS: dict[str, Any] = {"locate_in_time": True}


def params_json(p: Params) -> dict[str, Any]:
    """``p`` as written into the JSON (fields of :data:`LATER_PARAMS` only when not at their default)."""
    d = asdict(p)
    for key, default in LATER_PARAMS.items():
        if d.get(key) == default:
            del d[key]
    return d


@dataclass
class Anchor:
    """Which step of each run lines up with the other's. Steps are the trace's numbers (``ProfilerStep#N``);
    a time (ns, the store's clock) stands for the step running then. Unset sides default to the first step."""

    healthy_step: int | None = None
    degraded_step: int | None = None
    healthy_ns: int | None = None
    degraded_ns: int | None = None


@dataclass
class Difference:
    """One row of the diff. Times in ns; ``rel_*`` are degraded/healthy - 1. ``rank`` is the degraded rank
    (None for pooled rows). ``significant`` is the grey/colour switch of the GUI."""

    kind: str
    label: str
    name: str = ""
    kernel_class: str = ""
    rank: int | None = None
    n_healthy: int = 0
    n_degraded: int = 0
    total_healthy_ns: float = 0.0
    total_degraded_ns: float = 0.0
    mean_healthy_ns: float = 0.0
    mean_degraded_ns: float = 0.0
    p50_healthy_ns: float = 0.0
    p50_degraded_ns: float = 0.0
    p99_healthy_ns: float = 0.0
    p99_degraded_ns: float = 0.0
    rel_p50: float = 0.0
    rel_mean: float = 0.0
    effect: float = 0.0
    auc: float = 0.5
    p_value: float = 1.0
    q_value: float = 1.0
    significant: bool = False
    symptom: bool = False
    note: str = ""
    window: dict[str, Any] | None = None
    """Where the change is located in time (:func:`kat_gui.compare.window.window_info`): the numbers of the
    row then cover those steps of both runs only. None = the whole compared run (and not in the JSON)."""

    @property
    def delta_total_ns(self) -> float:
        return self.total_degraded_ns - self.total_healthy_ns

    @property
    def delta_p50_ns(self) -> float:
        return self.p50_degraded_ns - self.p50_healthy_ns

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        window = d.pop("window")
        d["delta_total_ns"] = self.delta_total_ns
        d["delta_p50_ns"] = self.delta_p50_ns
        if window is not None:  # only rows located in time carry one (the rest stay as they were)
            d["window"] = window
        return {k: (None if isinstance(v, float) and not np.isfinite(v) else v) for k, v in d.items()}


@dataclass
class RunSummary:
    name: str
    path: str
    ranks: list[int]
    gpus: int
    steps: int
    step_method: str
    start_ns: int
    end_ns: int
    kernels: int

    @classmethod
    def of(cls, run: RunData) -> RunSummary:
        return cls(
            name=run.name,
            path=run.path,
            ranks=[int(r) for r in run.ranks],
            gpus=run.n_gpus,
            steps=int(len(run.steps)),
            step_method=run.step_method,
            start_ns=run.span_ns[0],
            end_ns=run.span_ns[1],
            kernels=int(len(run.gpu["dur_ns"])),
        )


@dataclass
class Comparison:
    """The diff of two runs. ``differences`` is ranked (see the module docstring); ``step_time_*_ns`` are the
    per-step times of the compared steps (for overlaid histograms); ``ranks`` has one entry per degraded
    rank with its busy/idle/wait changes; ``alignment`` says which steps were compared and how."""

    healthy: RunSummary
    degraded: RunSummary
    alignment: dict[str, Any]
    differences: list[Difference]
    step_time_healthy_ns: np.ndarray
    step_time_degraded_ns: np.ndarray
    ranks: list[dict[str, Any]]
    params: Params = field(default_factory=Params)

    def significant(self) -> list[Difference]:
        return [d for d in self.differences if d.significant]

    def located(self) -> list[Difference]:
        """The rows whose change is located in a window of steps (ranked order)."""
        return [d for d in self.differences if d.window is not None]

    def top(self, n: int = 10, kinds: tuple[str, ...] | None = None) -> list[Difference]:
        """The first ``n`` ranked rows, optionally of some kinds only."""
        rows = self.differences if kinds is None else [d for d in self.differences if d.kind in kinds]
        return rows[:n]

    def to_json(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA,
            "healthy": asdict(self.healthy),
            "degraded": asdict(self.degraded),
            "alignment": self.alignment,
            "params": params_json(self.params),
            "step_time": {
                "healthy_ns": [int(x) for x in self.step_time_healthy_ns],
                "degraded_ns": [int(x) for x in self.step_time_degraded_ns],
            },
            "ranks": self.ranks,
            "differences": [d.to_json() for d in self.differences],
        }
