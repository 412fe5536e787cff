"""Run-vs-run diff: align two runs by step, test every kernel, kernel class and rank metric for a shift, and
rank the differences (significant and largest effect first; noise comes out insignificant, shown grey).

Method (docs/compare.md):

1. Alignment. Each run's steps are numbered as the trace numbers them (``ProfilerStep#N``; else marker
   kernel or collective order, see :mod:`kat_gui.compare.run`). An :class:`Anchor` names the step (or a time,
   mapped to its step) of each run that lines up with the other's; by default each run's first step. Only
   the steps both runs have after their anchors are compared, so a longer run is cut to the shorter one.
2. Samples. Per kernel name, per (kernel name, rank), per kernel class and per (class, rank): the own
   duration of every instance. Per rank and step: busy time (sum of own durations), idle time (the step's
   GPU span minus busy and wait) and collective wait. Per step: the step time (latest end minus earliest
   start over ranks). Degraded rank r is paired with healthy rank r (or ``r mod n`` when the healthy run
   has fewer ranks).
3. Test. Two-sided Mann-Whitney U per row (normal approximation, ties corrected), Benjamini-Hochberg over all
   rows at once, and a minimum effect: a row is *significant* when q < ``alpha``, its relative effect is at
   least ``min_effect`` and its absolute median shift at least ``min_abs_ns``. The relative effect is the
   median's relative change, or the mean's when both move the same way and the mean moved more (a fault
   that covers a third of the steps moves the mean before it moves the median).
4. Ranking. Significant causes first (kernels, classes, rank busy/idle), then significant symptoms
   (collective wait grows because another rank is late), then structural changes, then the rest; each
   block by the size of its effect.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from kat_gui.compare.run import CLASS_NAMES, COLLECTIVE, RunData, load_run
from kat_gui.compare.stats import benjamini_hochberg, group_stats, two_sample_tests
from kat_gui.progress import Progress, scaled

SCHEMA = "kat.compare/1"

# Row kinds, in the order a reader meets them. Symptom kinds are effects of a cause elsewhere.
KINDS = ("kernel", "kernel_rank", "class", "class_rank", "rank_busy", "rank_idle", "rank_wait", "step_time")
SYMPTOM_KINDS = ("rank_wait", "step_time")
CLASS_ROW_DISCOUNT = 0.9
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
    """Thresholds of the diff. ``alpha``: false discovery rate; ``min_effect``: smallest relative change that
    counts; ``min_abs_ns``: smallest median shift that counts; ``min_n``: fewest samples per side to test;
    ``min_per_step``: a kernel found in one run only is a structural change when it runs at least this often
    per compared step (a one-off kernel is not); ``max_samples``: per row and side, quantiles and tests use
    a random subset of at most about this many samples (counts and totals stay exact); ``min_step_share``:
    per-rank busy/idle/wait rows must move by at least this share of the healthy median step time (which
    rank waits a few µs more is decided by the GPUs' speed lottery, not by a fault); ``min_wait_share``: the
    same for collective waits, which that lottery moves by up to 2-3 % of a step (the slowest GPU sets
    everyone's wait)."""

    alpha: float = 0.01
    min_effect: float = 0.04
    min_abs_ns: float = 200.0
    min_n: int = 8
    min_per_step: float = 0.5
    max_samples: int = 20_000
    min_step_share: float = 0.01
    min_wait_share: float = 0.03
    common_mode: bool = True
    min_effect_modelled: float = 0.08


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

    @property
    def delta_total_ns(self) -> float:
        return self.total_degraded_ns - self.total_healthy_ns

    @property
    def delta_p50_ns(self) -> float:
        return self.p50_degraded_ns - self.p50_healthy_ns

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["delta_total_ns"] = self.delta_total_ns
        d["delta_p50_ns"] = self.delta_p50_ns
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
            "params": asdict(self.params),
            "step_time": {
                "healthy_ns": [int(x) for x in self.step_time_healthy_ns],
                "degraded_ns": [int(x) for x in self.step_time_degraded_ns],
            },
            "ranks": self.ranks,
            "differences": [d.to_json() for d in self.differences],
        }


# ------------------------------------------------------------------------------------------ alignment


def _anchor_step(run: RunData, step: int | None, t_ns: int | None) -> int:
    steps = run.steps
    if not len(steps):
        return 0
    if step is None and t_ns is not None:
        step = run.step_at(int(t_ns))
    if step is None:
        return int(steps[0])
    i = min(int(np.searchsorted(steps, step)), len(steps) - 1)
    return int(steps[i])


def _positions(run: RunData, anchor_step: int, step: np.ndarray) -> np.ndarray:
    """Aligned position of each step number (0 = the anchor step; -1 before it or outside every step)."""
    steps = run.steps
    base = int(np.searchsorted(steps, anchor_step))
    pos = np.searchsorted(steps, step) - base
    return np.where(step >= 0, pos, -1)


# ------------------------------------------------------------------------------------------ the diff


def _thin(cell: np.ndarray, n_cell: np.ndarray, cap: int) -> np.ndarray | None:
    """Keep mask that leaves about ``cap`` samples per cell (all of them in smaller cells); None = keep all."""
    if not len(cell) or n_cell.max() <= cap:
        return None
    prob = np.minimum(1.0, cap / np.maximum(n_cell, 1))
    rng = np.random.default_rng(0x4B4154)
    return rng.random(len(cell)) < prob[cell]


def _rel(new: float, old: float) -> float:
    if old > 0:
        return new / old - 1.0
    return float("inf") if new > 0 else 0.0


def _occurrence(rank: np.ndarray, pos: np.ndarray, name: np.ndarray, start: np.ndarray) -> np.ndarray:
    """k for the k-th instance of its kernel name in its step on its rank: the same op (layer, shape) in
    both runs of an SPMD program, so (name, k) has one mode where a name alone mixes several shapes."""
    if not len(rank):
        return np.zeros(0, np.int64)
    key = (rank << 44) | ((pos & 0xFFFFF) << 24) | (name & 0xFFFFFF)
    order = np.lexsort((start, key))
    ks = key[order]
    first = np.flatnonzero(np.r_[True, ks[1:] != ks[:-1]])
    seg_len = np.diff(np.r_[first, len(ks)])
    occ = np.empty(len(rank), dtype=np.int64)
    occ[order] = np.arange(len(ks)) - np.repeat(first, seg_len)
    return occ


RATIO_ONE = 1 << 16  # fixed-point 1.0 of duration ratios (the tests sort integers)


def _op_ratios(per_run: list, n_names: int) -> list[np.ndarray]:
    """Each kernel's duration over the healthy median of the same op (name, occurrence), in RATIO_ONE units;
    ops the healthy run lacks fall back on the healthy median of the name, then on the degraded one.

    Why: a kernel name often covers several shapes (a GEMM used by QKV and by the MLP); pooled, its median
    jumps between modes when the mix shifts slightly, which reads as a large change that is not one."""
    h_nm, _, _, h_dur, h_occ = per_run[0]
    k_max = int(max([1] + [int(r[4].max()) + 1 for r in per_run if len(r[4])]))
    from kat_gui.compare.stats import group_medians

    cell_med = group_medians(h_nm * k_max + h_occ, h_dur, n_names * k_max)
    name_med = group_medians(h_nm, h_dur, n_names)
    d_nm, _, _, d_dur, _ = per_run[1]
    d_name_med = group_medians(d_nm, d_dur, n_names)
    out = []
    for nm, _, _, dur, occ in per_run:
        ref = cell_med[nm * k_max + occ]
        ref = np.where(np.isfinite(ref), ref, name_med[nm])
        ref = np.where(np.isfinite(ref), ref, d_name_med[nm])
        ref = np.maximum(ref, 1.0)
        out.append(np.rint(dur / ref * RATIO_ONE).astype(np.int64))
    return out


def _lower_median_by(cell: np.ndarray, value: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per sample: the lower median of ``value`` over its ``cell`` and the number of samples in the cell.

    The lower median of ranks is the common mode that a fault on up to half of them (one of two, two of
    four) does not move: with two ranks it is the faster one."""
    if not len(cell):
        return np.zeros(0, np.float64), np.zeros(0, np.int64)
    order = np.lexsort((value, cell))
    cs = cell[order]
    first = np.flatnonzero(np.r_[True, cs[1:] != cs[:-1]])
    n = np.diff(np.r_[first, len(cs)])
    med = value[order][first + (n - 1) // 2].astype(np.float64)
    seg = np.repeat(np.arange(len(first)), n)
    out_med = np.empty(len(cell), np.float64)
    out_n = np.empty(len(cell), np.int64)
    out_med[order] = med[seg]
    out_n[order] = n[seg]
    return out_med, out_n


OP_BITS = 40  # cell = position << OP_BITS | op; op = name << 16 | occurrence
OP_MASK = (1 << OP_BITS) - 1


@dataclass
class WorkloadModel:
    """What :func:`_common_mode_ratios` decided, per run: ``ratios`` (test-space values, RATIO_ONE units),
    ``outside`` (instances whose workload lies outside the healthy run's range for their op: not compared),
    and per name id ``modelled`` (a workload model adjusted it) and ``covariate`` (what it regressed on)."""

    ratios: list[np.ndarray]
    outside: list[np.ndarray]
    modelled: np.ndarray
    covariate: dict[int, str] = field(default_factory=dict)


def _cell_matrix(cell: np.ndarray, value: np.ndarray, n_pos: int, uniq: np.ndarray) -> np.ndarray:
    """(position x op) matrix of a per-cell value (NaN where the op did not run in that step)."""
    m = np.full((n_pos, len(uniq)), np.nan)
    m[cell >> OP_BITS, np.searchsorted(uniq, cell & OP_MASK)] = value
    return m


def _affine_fits(y: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Least squares ``y_t = ybar_t + b (x_c - xbar_tc)`` of every target column t of ``y`` on every candidate
    column c of ``x`` over the steps where the target ran (NaN = did not run; a missing candidate counts as
    its mean). Returns (r2, slope, xbar, ybar) with shapes (t, c), (t, c), (t, c), (t,)."""
    py = np.isfinite(y).astype(np.float64)
    n = np.maximum(py.sum(axis=0), 1.0)
    ybar = np.where(py > 0, y, 0.0).sum(axis=0) / n
    yc = np.where(py > 0, y - ybar, 0.0)
    px = np.isfinite(x)
    xm = np.where(px, x, 0.0).sum(axis=0) / np.maximum(px.sum(axis=0), 1)
    x0 = np.where(px, x, xm)
    sx = py.T @ x0
    sxx = py.T @ (x0 * x0) - sx * sx / n[:, None]
    sxy = yc.T @ x0
    syy = (yc * yc).sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        r2 = np.nan_to_num(sxy**2 / (sxx * syy[:, None]))
        slope = np.nan_to_num(sxy / sxx)
    r2[sxx <= 1e-12 * np.maximum(sx * sx, 1.0)] = 0.0  # a (near) constant covariate explains nothing
    return r2, slope, sx / n[:, None], ybar


NEIGHBOUR_GATE = 0.1  # healthy steps whose covariate is within 10 % of an instance's are "the same shape"
MIN_NEIGHBOURS = (
    3  # fewer such steps: not compared (one odd healthy step, e.g. warm-up, would be the reference)
)


def _neighbour_mean(
    x_h: np.ndarray,
    y_h: np.ndarray,
    x_q: np.ndarray,
    leave_out: bool,
    slope: float = 0.0,
    gate: float = NEIGHBOUR_GATE,
    min_n: int = MIN_NEIGHBOURS,
) -> np.ndarray:
    """Per query step: the mean of ``y_h`` over the healthy steps whose covariate ``x_h`` lies within a
    factor ``1 + gate`` of the query's ``x_q`` (NaN when there are fewer than ``min_n``, or when the query
    is NaN).
    ``leave_out``: the queries are the healthy steps themselves (same index), each leaves its own out.
    ``slope`` (dy/dx of the global fit) moves the mean from the neighbours' mean covariate to the query's:
    at the edge of the healthy range all neighbours lie on one side, and their plain mean would be biased.

    A local mean rather than one line through all steps: durations are affine in the size only piecewise
    (NCCL and custom all-reduce change algorithm, channels and protocol with the message size), so a
    global fit extrapolates a regime into another; like with like needs no such assumption."""
    ok = np.isfinite(x_h) & np.isfinite(y_h) & (x_h > 0)
    out = np.full(len(x_q), np.nan)
    if not ok.any():
        return out
    lx = np.log(x_h[ok])
    order = np.argsort(lx, kind="stable")
    lx, ys, xs = lx[order], y_h[ok][order], x_h[ok][order]
    cs = np.r_[0.0, np.cumsum(ys)]
    cx = np.r_[0.0, np.cumsum(xs)]
    q = np.isfinite(x_q) & (x_q > 0)
    lq = np.log(np.where(q, x_q, 1.0))
    w = math.log1p(gate)
    lo = np.searchsorted(lx, lq - w, side="left")
    hi = np.searchsorted(lx, lq + w, side="right")
    tot, totx, cnt = cs[hi] - cs[lo], cx[hi] - cx[lo], (hi - lo).astype(np.float64)
    if leave_out:
        self_in = q & ok
        tot = tot - np.where(self_in, np.nan_to_num(y_h), 0.0)
        totx = totx - np.where(self_in, np.nan_to_num(x_h), 0.0)
        cnt = cnt - self_in
    with np.errstate(invalid="ignore", divide="ignore"):
        local = tot / cnt + slope * (np.where(q, x_q, 0.0) - totx / cnt)
        out = np.where(q & (cnt >= max(min_n, 1)), local, np.nan)
    return out


def _range(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per column of ``x`` (NaN = absent): the range of its values widened by a tenth of its width or 5 %
    of its largest value, whichever is more (a constant covariate still admits its own value's noise);
    NaN bounds where a column has no value (nothing falls outside them)."""
    px = np.isfinite(x)
    has = px.any(axis=0)
    lo = np.where(has, np.where(px, x, np.inf).min(axis=0), np.nan)
    hi = np.where(has, np.where(px, x, -np.inf).max(axis=0), np.nan)
    margin = np.maximum(0.1 * (hi - lo), 0.05 * np.abs(hi))
    return lo - margin, hi + margin


def _common_mode_ratios(
    per_run: list,
    pos: list[np.ndarray],
    ratios: list[np.ndarray],
    sizes: list[np.ndarray],
    min_steps: int = 8,
) -> WorkloadModel:
    """Each kernel's duration over the common mode of the same op (name, occurrence) in the same step across
    ranks (their lower median), in RATIO_ONE units; collectives over a workload model instead (below).

    Why: continuous batching sets one batch per step for every rank, so a workload change (batch size,
    prompt length, context) moves the same op on all ranks together, while a fault on some ranks moves
    theirs against their peers. Dividing by the step's common mode removes the workload. Ops found on a
    single rank keep their plain ratio (no peers to compare with).

    Collectives cannot use their own common mode: a slow link slows the whole ring, every member alike, so
    that common mode is the fault itself. They are compared like with like instead: each collective op's
    duration (per-step common mode) is modelled in the healthy run as an affine function of one workload
    covariate, ``ratio = ybar + b (x - xbar)`` (latency plus bytes over bandwidth), and divided by that model's
    prediction at its own step's covariate in both runs. Candidates, the best R^2 >= 0.5 with b > 0 wins:

    - the op's own recorded message size (``In msg nelems``, c10d collectives);
    - the recorded bytes of a host-to-device copy of the step (input ids, positions: they grow with the
      step's tokens, as all-reduce messages do; every Kineto memcpy records its bytes);
    - the per-step common mode of a non-collective op (an all-gather of logits follows the softmax over the
      vocabulary), when no size is recorded.

    Sizes are facts of the trace that no hardware fault moves, so a link fault stays a shift against the
    same workload while a bigger batch does not. A degraded instance whose covariate lies outside the
    healthy run's range for its op (beyond a tenth of that range) is not compared at all (``outside``): the
    model would extrapolate, and a shape the healthy run never ran is a different workload, not a slowdown.
    Assumes ranks of one step run the same ops (SPMD; pipeline stages differ in layers, not in shapes)."""
    n_names = int(max([1] + [int(r[0].max()) + 1 for r in per_run if len(r[0])]))
    modelled = np.zeros(n_names, bool)
    normed, cells, cms, peers_l, colls = [], [], [], [], []
    for (nm, cl, _, _, occ), ps, rt in zip(per_run, pos, ratios, strict=True):
        ps = ps.astype(np.int64)
        cell = (ps << OP_BITS) | ((nm & 0xFFFFFF) << 16) | (occ & 0xFFFF)
        cm, n = _lower_median_by(cell, rt)
        coll = cl == COLLECTIVE
        peers = (n >= 2) & ~coll
        normed.append(np.where(peers, rt / np.maximum(cm, 1.0) * RATIO_ONE, rt))
        cells.append(cell)
        cms.append(cm)
        peers_l.append(peers)
        colls.append(coll)
    outside = [np.zeros(len(c), bool) for c in cells]

    def plain() -> WorkloadModel:
        return WorkloadModel([np.rint(x).astype(np.int64) for x in normed], outside, modelled)

    if not colls[0].any():
        return plain()
    # per-step common modes and recorded sizes as dense (step x op) matrices; ops = (name, occurrence)
    opid = [c & OP_MASK for c in cells]
    uniq = np.unique(np.concatenate(opid))
    n_op = len(uniq)
    n_pos = int(max(int(c.max() >> OP_BITS) + 1 for c in cells if len(c)))
    if n_op * n_pos > 4_000_000:  # keep the matrices small
        return plain()
    dur_m, size_m = [], []
    for cell, cm, sz in zip(cells, cms, sizes, strict=True):
        dur_m.append(_cell_matrix(cell, cm / RATIO_ONE, n_pos, uniq))
        rec = sz > 0  # few instances record a size (copies, c10d collectives): no sort of the rest
        smed, _ = _lower_median_by(cell[rec], sz[rec])
        size_m.append(_cell_matrix(cell[rec], smed, n_pos, uniq))
    present = np.isfinite(dur_m[0])
    regular = present.mean(axis=0) >= 0.9
    is_tgt = np.zeros(n_op, bool)
    is_tgt[np.searchsorted(uniq, opid[0][colls[0]])] = True
    is_dcov = np.zeros(n_op, bool)
    is_dcov[np.searchsorted(uniq, opid[0][peers_l[0]])] = True
    is_dcov &= regular
    is_scov = regular & ~is_tgt & (np.isfinite(size_m[0]).mean(axis=0) >= 0.9)
    t_idx = np.flatnonzero(is_tgt)
    cand_kind = np.r_[np.zeros(int(is_scov.sum()), np.int8), np.ones(int(is_dcov.sum()), np.int8)]

    def columns(run: int) -> np.ndarray:
        return np.column_stack([size_m[run][:, is_scov], dur_m[run][:, is_dcov]])

    y = dur_m[0][:, t_idx]
    r2, slope, _, _ = _affine_fits(y, columns(0))
    own_h = size_m[0][:, t_idx]
    own_slope = np.array(
        [_affine_fits(y[:, j : j + 1], own_h[:, j : j + 1])[1][0, 0] for j in range(len(t_idx))]
    )
    r2 = np.where(slope > 0, r2, 0.0)
    best = np.argmax(r2, axis=1) if r2.shape[1] else np.zeros(len(t_idx), np.int64)
    best_r2 = r2[np.arange(len(t_idx)), best] if r2.shape[1] else np.zeros(len(t_idx))
    # The op's own recorded size is its shape: used whenever recorded; else the best fitting candidate.
    use_own = (np.isfinite(own_h) & np.isfinite(y)).sum(axis=0) >= 3
    ok = use_own | (best_r2 >= 0.5)
    fit_x = []  # per run: (n_pos, n_targets) covariate of each target
    for run in (0, 1):
        own = size_m[run][:, t_idx]
        cols = columns(run)
        shared = cols[:, best] if cols.shape[1] else np.full_like(own, np.nan)
        fit_x.append(np.where(use_own[None, :], own, np.where(ok[None, :], shared, np.nan)))
    # Healthy expectation of each instance: the mean over the healthy steps whose covariate lies within
    # NEIGHBOUR_GATE of its own (leaving its own step out on the healthy side). No such step: not compared.
    pred = [np.full((n_pos, len(t_idx)), np.nan) for _ in (0, 1)]
    for j in np.flatnonzero(ok).tolist():
        b = float(own_slope[j] if use_own[j] else slope[j, best[j]])
        for run in (0, 1):
            pred[run][:, j] = _neighbour_mean(
                fit_x[0][:, j], y[:, j], fit_x[run][:, j], leave_out=run == 0, slope=max(b, 0.0)
            )
    # The step is the unit of evidence (every instance of a step shares its batch): an op compared in fewer
    # than min_steps steps on either side is not compared at all, however many instances those steps hold.
    few = np.zeros(len(t_idx), bool)
    few[ok] = (np.isfinite(pred[0][:, ok]).sum(axis=0) < min_steps) | (
        np.isfinite(pred[1][:, ok]).sum(axis=0) < min_steps
    )
    # Unmodelled ops (no recorded size, no covariate that explains them) are not adjusted, but a step whose
    # recorded copy sizes (its inputs) lie outside the healthy run's range is not compared as the same work.
    step_sizes = [size_m[r][:, is_scov] for r in (0, 1)]
    s_lo, s_hi = _range(step_sizes[0])
    with np.errstate(invalid="ignore"):
        step_out = ((step_sizes[1] < s_lo) | (step_sizes[1] > s_hi)).any(axis=1)
    col_of = np.full(n_op, -1, np.int64)
    col_of[t_idx] = np.arange(len(t_idx))
    modelled[np.unique(uniq[t_idx[ok]] >> 16 & 0xFFFFFF)] = True
    covariate: dict[int, str] = {}
    for j in np.flatnonzero(ok).tolist():
        kind = "own message size" if use_own[j] else ("copy bytes", "kernel time")[int(cand_kind[best[j]])]
        covariate.setdefault(int(uniq[t_idx[j]] >> 16 & 0xFFFFFF), kind)
    for j in np.flatnonzero(~ok).tolist():
        covariate.setdefault(int(uniq[t_idx[j]] >> 16 & 0xFFFFFF), "step input size")
    out = []
    for run, (cell, nr, coll) in enumerate(zip(cells, normed, colls, strict=True)):
        j = col_of[np.searchsorted(uniq, cell & OP_MASK).clip(0, n_op - 1)]
        j = np.where(coll & (np.isin(cell & OP_MASK, uniq)), j, -1)
        hit = j >= 0
        jj = np.where(hit, j, 0)
        row = cell >> OP_BITS
        pr = pred[run][row, jj] if len(cell) else np.zeros(0)
        known = hit & ok[jj] & np.isfinite(pr) & ~few[jj]
        no_match = hit & ok[jj] & ((np.isfinite(fit_x[run][row, jj]) & ~np.isfinite(pr)) | few[jj])
        # kernel-time covariates are no shape facts (a weight-bound GEMM takes as long at any batch): a step
        # whose recorded inputs the healthy run never saw is not compared unless the op's own size matched.
        by_step = hit & ~use_own[jj] & (step_out[row] if run == 1 else False)
        outside[run] = no_match | by_step
        pr = np.where(known, np.maximum(pr, 1e-3), 1.0)
        out.append(np.rint(np.where(known, nr / pr, nr)).astype(np.int64))
    return WorkloadModel(out, outside, modelled, covariate)


def _common_mode_shift(cell: np.ndarray, value: np.ndarray, base: np.ndarray | float) -> np.ndarray:
    """Per (rank, step) value minus the lower median of its cell (the step, among ranks running the same
    program), plus ``base`` (clipped at 0): a workload change moves every rank's busy/idle/wait in a step
    together; a fault on one rank does not."""
    cm, n = _lower_median_by(cell.astype(np.int64), value)
    out = np.where(n >= 2, value - cm + base, value)
    return np.maximum(np.rint(out), 0).astype(np.int64)


def _program_groups(nm: np.ndarray, rank: np.ndarray) -> dict[int, int]:
    """Rank -> id of the ranks that run the same program (the same set of kernel names): the TP ranks of one
    pipeline stage. Stages run different ops (embedding, lm_head, sampling), so their busy times differ by
    a workload-dependent amount and share no common mode."""
    if not len(nm):
        return {}
    pairs = np.unique((rank.astype(np.int64) << 32) | nm.astype(np.int64))
    prog: dict[int, int] = {}
    sig_id: dict[bytes, int] = {}
    r_of = pairs >> 32
    first = np.flatnonzero(np.r_[True, r_of[1:] != r_of[:-1]])
    for a, b in zip(first.tolist(), np.r_[first[1:], len(pairs)].tolist(), strict=True):
        sig = (pairs[a:b] & 0xFFFFFFFF).tobytes()
        prog[int(r_of[a])] = sig_id.setdefault(sig, len(sig_id))
    return prog


def _pair_ranks(h_ranks: np.ndarray, d_ranks: np.ndarray) -> dict[int, int]:
    """Healthy rank -> degraded rank it stands in for (identity, or ``r mod n`` when counts differ)."""
    hs = [int(r) for r in h_ranks]
    pair: dict[int, int] = {}
    for r in d_ranks:
        r = int(r)
        h = r if r in hs else hs[r % len(hs)]
        pair.setdefault(h, r)
    return pair


def compare_runs(
    healthy: RunData,
    degraded: RunData,
    anchor: Anchor | int | None = None,
    params: Params | None = None,
    progress: Progress | None = None,
) -> Comparison:
    """The diff of two loaded runs (see the module docstring). ``anchor`` an int = the same step number in
    both runs. Loading is separate (:func:`load_run`) so a view can re-anchor without re-reading."""
    p = params or Params()
    if isinstance(anchor, int | np.integer):
        anchor = Anchor(healthy_step=int(anchor), degraded_step=int(anchor))
    anchor = anchor or Anchor()
    a_h = _anchor_step(healthy, anchor.healthy_step, anchor.healthy_ns)
    a_d = _anchor_step(degraded, anchor.degraded_step, anchor.degraded_ns)
    n_h = int(len(healthy.steps) - np.searchsorted(healthy.steps, a_h))
    n_d = int(len(degraded.steps) - np.searchsorted(degraded.steps, a_d))
    n_common = max(min(n_h, n_d), 0)
    if progress:
        progress(0.1, "collecting samples")

    # Kernel names as one vocabulary over both runs (string ids differ between stores).
    vocab: dict[str, int] = {}
    name_cls: list[int] = []
    per_run = []
    kept_pos = []
    sizes: list[np.ndarray] = []
    for run, a in ((healthy, a_h), (degraded, a_d)):
        g = run.gpu
        pos = _positions(run, a, g["step"])
        keep = (pos >= 0) & (pos < n_common)
        uid, inv = np.unique(g["name"][keep], return_inverse=True)
        cls_of = np.zeros(len(uid), dtype=np.int64)
        cls_of[inv] = g["cls"][keep]
        lut = np.empty(len(uid), dtype=np.int64)
        for i, sid in enumerate(uid.tolist()):
            s = run.names[sid]
            if s not in vocab:
                vocab[s] = len(vocab)
                name_cls.append(int(cls_of[i]))
            lut[i] = vocab[s]
        nm_g = lut[inv]
        rk = g["rank"][keep].astype(np.int64)
        kept_pos.append(pos[keep])
        sizes.append(g["size"][keep] if "size" in g else np.full(int(keep.sum()), -1, np.int64))
        per_run.append(
            (
                nm_g,
                g["cls"][keep].astype(np.int64),
                rk,
                g["dur_ns"][keep],
                _occurrence(rk, pos[keep], nm_g, g["start_ns"][keep]),
            )
        )
    names = list(vocab)
    n_names = len(names)
    n_cls = len(CLASS_NAMES)
    d_ranks = [int(r) for r in degraded.ranks]
    n_rk = len(d_ranks)
    pair = _pair_ranks(healthy.ranks, degraded.ranks)
    rank_index = {r: i for i, r in enumerate(d_ranks)}

    # Group numbering: [kernel | kernel x rank | class | class x rank | busy | idle | wait | step_time]
    off_k = 0
    off_kr = off_k + n_names
    off_c = off_kr + n_names * n_rk
    off_cr = off_c + n_cls
    off_busy = off_cr + n_cls * n_rk
    off_idle = off_busy + n_rk
    off_wait = off_idle + n_rk
    off_step = off_wait + n_rk
    n_groups = off_step + 1

    gs, ss, vs = [], [], []

    def rank_slot(side: int, rank: np.ndarray) -> np.ndarray:
        if side == 1:
            lut = {r: rank_index[r] for r in d_ranks}
        else:
            lut = {h: rank_index[d] for h, d in pair.items()}
        if not len(rank):
            return np.zeros(0, np.int64)
        hi = int(rank.max()) + 1
        table = np.full(hi, -1, dtype=np.int64)
        for r, i in lut.items():
            if r < hi:
                table[r] = i
        return table[rank]

    ratios = _op_ratios(per_run, n_names)
    wm = WorkloadModel(ratios, [np.zeros(len(r[0]), bool) for r in per_run], np.zeros(n_names, bool))
    if p.common_mode:
        wm = _common_mode_ratios(per_run, kept_pos, ratios, sizes, p.min_n)
    ratios, modelled = wm.ratios, wm.modelled
    xs = []  # per sample: not compared (its workload lies outside the healthy run's range)
    ts = []  # test-space values: kernel durations as ratios to the healthy median of the same op
    for side, (nm, cl, rk, dur, _occ) in enumerate(per_run):
        slot = rank_slot(side, rk)
        ok = slot >= 0
        sd = np.full(len(nm), side, dtype=np.int8)
        rt = ratios[side]
        gs += [off_k + nm, off_kr + nm[ok] * n_rk + slot[ok], off_c + cl, off_cr + cl[ok] * n_rk + slot[ok]]
        ss += [sd, sd[ok], sd, sd[ok]]
        vs += [dur, dur[ok], dur, dur[ok]]
        ts += [rt, rt[ok], rt, rt[ok]]
        out = wm.outside[side]
        xs += [out, out[ok], out, out[ok]]

    step_times = []
    slot_base = [np.zeros(n_rk), np.zeros(n_rk), np.zeros(n_rk)]  # per degraded rank slot and metric
    progs = [_program_groups(r[0], r[2]) for r in per_run]
    for side, (run, a) in enumerate(((healthy, a_h), (degraded, a_d))):
        sr = run.step_rank
        pos = _positions(run, a, sr["step"])
        keep = (pos >= 0) & (pos < n_common)
        rk = sr["rank"][keep].astype(np.int64)
        slot = rank_slot(side, rk)
        ok = slot >= 0
        span = (sr["end_ns"] - sr["start_ns"])[keep]
        busy = sr["busy_ns"][keep].astype(np.int64)
        wait = sr["wait_ns"][keep].astype(np.int64)
        idle = np.maximum(span - busy - wait, 0)
        for j, (off, val) in enumerate(((off_busy, busy), (off_idle, idle), (off_wait, wait))):
            gs.append(off + slot[ok])
            ss.append(np.full(int(ok.sum()), side, dtype=np.int8))
            vs.append(val[ok])
            tv = val
            if p.common_mode and j < 2:  # waits: a late rank makes all others wait, a common mode itself
                st_k = pos[keep].astype(np.int64)
                pg = np.array([progs[side].get(int(r), -1) for r in rk.tolist()], np.int64) + 1
                cell = st_k * (len(progs[side]) + 1) + pg
                if side == 0:  # the scale of the test space: the healthy run's typical common mode
                    cm0, _ = _lower_median_by(cell, val)
                    base_g = {g: float(np.median(cm0[pg == g])) for g in np.unique(pg).tolist()}
                    for sl, g in zip(slot[ok].tolist(), pg[ok].tolist(), strict=True):
                        slot_base[j][sl] = base_g[g]
                base = np.zeros(len(val))
                base[ok] = slot_base[j][slot[ok]]
                tv = _common_mode_shift(cell, val, base)
            ts.append(tv[ok])
            xs.append(np.zeros(int(ok.sum()), bool))
        # Step time: latest end minus earliest start over ranks, per aligned step.
        pk = pos[keep]
        st0 = np.full(n_common, np.iinfo(np.int64).max)
        st1 = np.full(n_common, np.iinfo(np.int64).min)
        off = run.offset_of(rk)  # spans across hosts need one clock
        np.minimum.at(st0, pk, sr["start_ns"][keep] - off)
        np.maximum.at(st1, pk, sr["end_ns"][keep] - off)
        present = st1 > st0
        stt = (st1 - st0)[present]
        step_times.append(stt)
        gs.append(np.full(len(stt), off_step, dtype=np.int64))
        ss.append(np.full(len(stt), side, dtype=np.int8))
        vs.append(stt)
        ts.append(stt)
        xs.append(np.zeros(len(stt), bool))

    group = np.concatenate(gs).astype(np.int64)
    side = np.concatenate(ss)
    value = np.concatenate(vs).astype(np.int64)
    tvalue = np.concatenate(ts).astype(np.int64)
    excluded = np.concatenate(xs)
    del gs, ss, vs, ts, xs
    if progress:
        progress(0.4, "testing")
    # Exact counts and sums for the reader; quantiles and tests on at most ``max_samples`` per (row, side):
    # a random thinning (fixed seed) that leaves p-values overwhelming for real shifts and effect sizes
    # within a fraction of a percent, and halves the cost on million-kernel runs.
    cell = group * 2 + side
    n_exact = np.bincount(cell, minlength=2 * n_groups)
    tot_exact = np.bincount(cell, weights=value.astype(np.float64), minlength=2 * n_groups)
    keep = _thin(cell, n_exact, p.max_samples)
    if excluded.any():  # counts and totals stay exact; quantiles and tests see comparable instances only
        keep = ~excluded if keep is None else keep & ~excluded
    if keep is not None:
        group, side, value, tvalue = group[keep], side[keep], value[keep], tvalue[keep]
    st = group_stats(group, side, value, n_groups)  # what the reader sees, in ns
    st.n = n_exact.reshape(n_groups, 2)
    st.total = tot_exact.reshape(n_groups, 2)
    with np.errstate(invalid="ignore", divide="ignore"):
        st.mean = st.total / st.n
    tst, mw = two_sample_tests(group, side, tvalue, n_groups, min_n=p.min_n)
    tested = (st.n[:, 0] > 0) & (st.n[:, 1] > 0)
    q = np.ones(n_groups)
    q[tested] = benjamini_hochberg(mw.p[tested])
    if progress:
        progress(0.8, "ranking")

    def describe(gid: int) -> tuple[str, str, str, str, int | None]:
        """kind, label, kernel name, class name, rank of a group id."""
        if gid < off_kr:
            nm = names[gid - off_k]
            return "kernel", nm, nm, CLASS_NAMES[name_cls[gid - off_k]], None
        if gid < off_c:
            i, r = divmod(gid - off_kr, n_rk)
            nm = names[i]
            return "kernel_rank", nm, nm, CLASS_NAMES[name_cls[i]], d_ranks[r]
        if gid < off_cr:
            c = CLASS_NAMES[gid - off_c]
            return "class", f"{c} kernels", "", c, None
        if gid < off_busy:
            c, r = divmod(gid - off_cr, n_rk)
            return "class_rank", f"{CLASS_NAMES[c]} kernels", "", CLASS_NAMES[c], d_ranks[r]
        if gid < off_idle:
            return "rank_busy", "GPU busy time per step", "", "", d_ranks[gid - off_busy]
        if gid < off_wait:
            return "rank_idle", "GPU idle time per step", "", "", d_ranks[gid - off_idle]
        if gid < off_step:
            return "rank_wait", "collective wait per step", "", "", d_ranks[gid - off_wait]
        return "step_time", "step time", "", "", None

    h_step = float(np.median(step_times[0])) if len(step_times[0]) else 0.0
    rows: list[Difference] = []
    for gid in np.flatnonzero(tested).tolist():
        kind, label, nm, cname, rank = describe(gid)
        h50, d50 = float(st.p50[gid, 0]), float(st.p50[gid, 1])
        hm, dm = float(st.mean[gid, 0]), float(st.mean[gid, 1])
        rel50 = _rel(float(tst.p50[gid, 1]), float(tst.p50[gid, 0]))
        relm = _rel(float(tst.tmean[gid, 1]), float(tst.tmean[gid, 0]))
        effect = rel50
        if relm * rel50 >= 0 and abs(relm) > abs(rel50):
            effect = relm
        absd = abs(effect) * hm if np.isfinite(effect) else abs(dm - hm)
        if kind in ("rank_busy", "rank_idle", "rank_wait"):
            absd = max(abs(d50 - h50), abs(dm - hm))
        floor = p.min_abs_ns
        if kind in ("rank_busy", "rank_idle", "rank_wait"):
            share = p.min_wait_share if kind == "rank_wait" else p.min_step_share
            floor = max(floor, share * h_step)
        min_eff = p.min_effect
        if (kind in ("kernel", "kernel_rank") and modelled[vocab[nm]]) or (
            kind in ("class", "class_rank") and cname == "collective" and modelled.any()
        ):
            min_eff = max(min_eff, p.min_effect_modelled)
        sig = bool(q[gid] < p.alpha and abs(effect) >= min_eff and absd >= floor)
        rows.append(
            Difference(
                kind=kind,
                label=label,
                name=nm,
                kernel_class=cname,
                rank=rank,
                n_healthy=int(st.n[gid, 0]),
                n_degraded=int(st.n[gid, 1]),
                total_healthy_ns=float(st.total[gid, 0]),
                total_degraded_ns=float(st.total[gid, 1]),
                mean_healthy_ns=hm,
                mean_degraded_ns=dm,
                p50_healthy_ns=h50,
                p50_degraded_ns=d50,
                p99_healthy_ns=float(st.p99[gid, 0]),
                p99_degraded_ns=float(st.p99[gid, 1]),
                rel_p50=float(rel50),
                rel_mean=float(relm),
                effect=float(effect),
                auc=float(mw.auc[gid]),
                p_value=float(mw.p[gid]),
                q_value=float(q[gid]),
                significant=sig,
                symptom=kind in SYMPTOM_KINDS,
                note=_note(kind, cname, effect) or _mean_note(sig, effect, rel50),
            )
        )
    structural = _structural(healthy, degraded, per_run, names, name_cls, n_common, p)
    structural += _workload_rows(per_run, wm, names, name_cls, p)
    structural += _stopped_ranks(healthy, degraded, h_step)
    if p.common_mode and not any(d.significant and not d.symptom for d in rows + structural):
        # Symptoms need a cause: with none found on any rank, a slower step is the same work done by all
        # ranks alike (a workload difference: batch, prompt mix), and who waits for whom is the lottery of
        # which healthy GPU is slowest.
        for d in rows:
            if d.symptom and d.significant:
                d.significant = False
                d.note = (
                    "symptom without a cause on any rank: workload difference (or the GPUs' speed lottery)"
                )
    differences = _rank_rows(rows, structural)
    ranks = _rank_table(rows, d_ranks)
    if progress:
        progress(1.0, "done")
    return Comparison(
        healthy=RunSummary.of(healthy),
        degraded=RunSummary.of(degraded),
        alignment={
            "method_healthy": healthy.step_method,
            "method_degraded": degraded.step_method,
            "anchor_healthy_step": a_h,
            "anchor_degraded_step": a_d,
            "steps_compared": n_common,
            "rank_pairs": {str(d): h for h, d in sorted(pair.items())},
        },
        differences=differences,
        step_time_healthy_ns=step_times[0],
        step_time_degraded_ns=step_times[1],
        ranks=ranks,
        params=p,
    )


def _note(kind: str, cname: str, effect: float) -> str:
    if kind == "rank_wait":
        if effect < 0:
            return "symptom: this rank waits less in collectives (it now arrives last)"
        return "symptom: this rank waits longer in collectives for a later rank"
    if kind == "step_time":
        return "symptom: the sum of every cause"
    if cname == "collective" and kind in ("kernel", "kernel_rank"):
        return "collective transfer time (wait for late ranks excluded)"
    return ""


def _mean_note(sig: bool, effect: float, rel50: float) -> str:
    if sig and abs(rel50) < 0.5 * abs(effect):
        return "median barely moved: part of the instances (e.g. some steps) changed; see the mean"
    return ""


def _structural(
    healthy: RunData,
    degraded: RunData,
    per_run: list,
    names: list[str],
    name_cls: list[int],
    n_common: int,
    p: Params,
) -> list[Difference]:
    counts = [np.bincount(nm, minlength=len(names)) for nm, *_ in per_run]
    totals = [np.bincount(nm, weights=dur, minlength=len(names)) for nm, _, _, dur, _ in per_run]
    out: list[Difference] = []
    steps = max(n_common, 1)
    only = {"only_healthy": [], "only_degraded": []}
    for i in np.flatnonzero((counts[0] > 0) != (counts[1] > 0)).tolist():
        side = 0 if counts[0][i] else 1
        kind = "only_healthy" if side == 0 else "only_degraded"
        regular = counts[side][i] / steps >= p.min_per_step
        d = Difference(
            kind=kind,
            label=f"kernel runs only in the {'healthy' if side == 0 else 'degraded'} run",
            name=names[i],
            kernel_class=CLASS_NAMES[name_cls[i]],
            n_healthy=int(counts[0][i]),
            n_degraded=int(counts[1][i]),
            total_healthy_ns=float(totals[0][i]),
            total_degraded_ns=float(totals[1][i]),
            effect=float("inf") if side else -1.0,
            p_value=0.0 if regular else 1.0,
            q_value=0.0 if regular else 1.0,
            significant=bool(regular) and not p.common_mode,
            note=(
                "structure differs (a kernel or shape the workload or configuration selects): not a slowdown"
                if regular
                else "rare (less than once per step): not counted as a change"
            ),
        )
        only[kind].append((i, d))
        out.append(d)
    # A collective kernel that disappears while another appears: NCCL picked another algorithm or protocol.
    regular_of = {id(d): d.p_value == 0.0 for _, d in only["only_healthy"] + only["only_degraded"]}
    gone = [(i, d) for i, d in only["only_healthy"] if name_cls[i] == COLLECTIVE and regular_of[id(d)]]
    new = [(i, d) for i, d in only["only_degraded"] if name_cls[i] == COLLECTIVE and regular_of[id(d)]]
    gone.sort(key=lambda x: -x[1].n_healthy)
    new.sort(key=lambda x: -x[1].n_degraded)
    for (i, dh), (j, dd) in zip(gone, new, strict=False):
        out.append(
            Difference(
                kind="collective_renamed",
                label="collective kernel changed",
                name=f"{names[i]} -> {names[j]}",
                kernel_class="collective",
                n_healthy=dh.n_healthy,
                n_degraded=dd.n_degraded,
                total_healthy_ns=dh.total_healthy_ns,
                total_degraded_ns=dd.total_degraded_ns,
                effect=(dd.total_degraded_ns / dh.total_healthy_ns - 1.0) if dh.total_healthy_ns else 0.0,
                p_value=0.0,
                q_value=0.0,
                significant=True,
                note="NCCL chose another algorithm/protocol (message size, topology or env change)",
            )
        )
    h_r, d_r = set(int(r) for r in healthy.ranks), set(int(r) for r in degraded.ranks)
    if h_r != d_r:
        out.append(
            Difference(
                kind="ranks_changed",
                label=f"ranks: healthy {len(h_r)}, degraded {len(d_r)}",
                n_healthy=len(h_r),
                n_degraded=len(d_r),
                significant=True,
                p_value=0.0,
                q_value=0.0,
                note="per-rank rows pair degraded rank r with healthy rank r (or r mod n)",
            )
        )
    return out


def _workload_rows(
    per_run: list, wm: WorkloadModel, names: list[str], name_cls: list[int], p: Params
) -> list[Difference]:
    """One grey row per kernel name with a share of its degraded instances at a workload the healthy run
    never ran (outside its covariate range): those instances were not compared, and the reader must know
    that the runs differ in workload there rather than see a slowdown or nothing at all."""
    out_d = wm.outside[1]
    if not out_d.any():
        return []
    nm_d, dur_d = per_run[1][0], per_run[1][3]
    n_all = np.bincount(nm_d, minlength=len(names))
    n_out = np.bincount(nm_d[out_d], minlength=len(names))
    t_out = np.bincount(nm_d[out_d], weights=dur_d[out_d], minlength=len(names))
    rows = []
    for i in np.flatnonzero((n_out >= p.min_n) & (n_out >= 0.2 * np.maximum(n_all, 1))).tolist():
        cov = wm.covariate.get(i, "workload")
        rows.append(
            Difference(
                kind="different_workload",
                label="workload outside the healthy run's range",
                name=names[i],
                kernel_class=CLASS_NAMES[name_cls[i]],
                n_healthy=0,
                n_degraded=int(n_out[i]),
                total_degraded_ns=float(t_out[i]),
                effect=float(n_out[i] / max(n_all[i], 1)),
                p_value=0.0,
                q_value=0.0,
                significant=False,
                note=(
                    f"{n_out[i]} of {n_all[i]} degraded instances ran at a {cov} that the healthy run did "
                    f"not run in {p.min_n} steps or more: not compared (a different workload, not a slowdown)"
                ),
            )
        )
    return rows


def _last_end_by_rank(run: RunData) -> dict[int, int]:
    g = run.gpu
    end = g["start_ns"] + g["dur_ns"] + g["wait_ns"] - run.offset_of(g["rank"])
    ranks = np.unique(g["rank"])
    last = np.full(len(ranks), np.iinfo(np.int64).min)
    np.maximum.at(last, np.searchsorted(ranks, g["rank"]), end)
    return dict(zip(ranks.tolist(), last.tolist(), strict=True))


def _stopped_ranks(healthy: RunData, degraded: RunData, step_ns: float) -> list[Difference]:
    """Ranks of the degraded run whose GPU work ends long before the other ranks' (a hang or a crash: the
    others then sit in a collective that never completes, until the profiler stops). "Long" is more than two
    healthy step times and five times the spread of the healthy run's last ends."""
    last_d = _last_end_by_rank(degraded)
    last_h = _last_end_by_rank(healthy)
    if len(last_d) < 2:
        return []
    spread_h = max(last_h.values()) - min(last_h.values()) if last_h else 0
    limit = max(2.0 * step_ns, 5.0 * spread_h, 1e5)
    end = max(last_d.values())
    out = []
    for r, t in sorted(last_d.items()):
        if end - t > limit:
            out.append(
                Difference(
                    kind="rank_stopped",
                    label=f"rank stopped issuing GPU work {(end - t) / 1e6:.1f} ms before the others",
                    rank=r,
                    effect=-1.0,
                    p_value=0.0,
                    q_value=0.0,
                    significant=True,
                    note="hang or crash on this rank: the others then wait in a collective it never joins",
                )
            )
    return out


def _rank_rows(rows: list[Difference], structural: list[Difference]) -> list[Difference]:
    def mag(d: Difference) -> float:
        e = abs(d.effect)
        e = e if np.isfinite(e) else 1e9
        # A class row aggregates kernel rows: it leads only when clearly larger than the kernels it holds, so the
        # reader meets the concrete kernel first when both moved about as much.
        return e * CLASS_ROW_DISCOUNT if d.kind in ("class", "class_rank") else e

    stopped = [d for d in structural if d.kind == "rank_stopped"]
    structural = [d for d in structural if d.kind != "rank_stopped"]
    causes = [d for d in rows if d.significant and not d.symptom]
    symptoms = [d for d in rows if d.significant and d.symptom]
    struct_sig = [d for d in structural if d.significant]
    rest = [d for d in rows if not d.significant] + [d for d in structural if not d.significant]
    out: list[Difference] = list(stopped)
    for block in (causes, symptoms, struct_sig):
        out += sorted(block, key=lambda d: (-mag(d), -abs(d.delta_total_ns)))
    out += sorted(rest, key=lambda d: (d.q_value, -mag(d)))
    return out


def _rank_table(rows: list[Difference], d_ranks: list[int]) -> list[dict[str, Any]]:
    by = {(d.kind, d.rank): d for d in rows if d.kind in ("rank_busy", "rank_idle", "rank_wait")}
    out = []
    for r in d_ranks:
        entry: dict[str, Any] = {"rank": r}
        for kind in ("rank_busy", "rank_idle", "rank_wait"):
            d = by.get((kind, r))
            key = kind.split("_", 1)[1]
            if d is None:
                entry[key] = None
                continue
            entry[key] = {
                "healthy_p50_ns": d.p50_healthy_ns,
                "degraded_p50_ns": d.p50_degraded_ns,
                "effect": d.effect,
                "q_value": d.q_value,
                "significant": d.significant,
            }
        busy = entry.get("busy") or {}
        entry["slower"] = bool(busy.get("significant") and busy.get("effect", 0) > 0)
        out.append(entry)
    return out


def compare_stores(
    healthy: Any,
    degraded: Any,
    anchor: Anchor | int | None = None,
    progress: Progress | None = None,
    params: Params | None = None,
) -> Comparison:
    """Load two stores (paths or open TraceStores) and diff them; see :func:`compare_runs`.

    Raises KatInputError naming the file when an input is not a store or has no GPU work.
    """
    h = load_run(healthy, scaled(progress, 0.0, 0.4))
    d = load_run(degraded, scaled(progress, 0.4, 0.8))
    return compare_runs(h, d, anchor, params, scaled(progress, 0.8, 1.0))
