"""The workload model of the comparison: what a kernel's duration is compared against, so that a different
workload (batch size, prompt length, context) does not read as a slowdown while a fault still does.

Steps, in the order :func:`kat_gui.compare.engine.compare_runs` applies them:

1. :func:`op_ratios`: each kernel's duration over the healthy run's median of the same *op* (kernel name,
   occurrence in its step on its rank): a name often covers several shapes, an op has one.
2. :func:`common_mode_ratios`: that ratio over the *common mode* of the op in its step (the lower median over
   ranks): a workload change moves all ranks together, a fault on some ranks moves theirs against their
   peers. Collectives cannot use their own common mode (a slow link slows every member alike); each is
   compared with the healthy steps of the same shape (its own recorded message size, else the copy bytes
   or kernel time that explains it best), and an instance at a shape the healthy run never ran is not
   compared (``WorkloadModel.outside``).
3. :func:`common_mode_shift`: the additive version for per-(rank, step) busy and idle times, among the
   ranks that run the same program (:func:`program_groups`).

Assumptions: ranks of one step run the same ops (SPMD; pipeline stages differ in layers, not in shapes);
sizes recorded in the trace (copy bytes, ``In msg nelems``) are facts no hardware fault moves.

Units: durations in ns; ratios are fixed-point integers in :data:`RATIO_ONE` units (the tests sort
integers); sizes in bytes (copies) or elements (collective messages), -1 where unknown.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, NamedTuple

import numpy as np

from kat_gui.compare.stats import group_medians
from kat_gui.detect.classify import COLLECTIVE
from kat_gui.detect.stats import segments

if TYPE_CHECKING:
    from kat_gui.compare.samples import KernelSamples

RATIO_ONE = 1 << 16  # fixed-point 1.0 of duration ratios (the tests sort integers)


def op_ratios(samples: list[KernelSamples], n_names: int) -> list[np.ndarray]:
    """Per side (healthy, degraded): each kernel's duration over the healthy median of the same op (name,
    occurrence), in RATIO_ONE units; ops the healthy run lacks fall back on the healthy median of the name,
    then on the degraded one.

    Why: a kernel name often covers several shapes (a GEMM used by QKV and by the MLP); pooled, its median
    jumps between modes when the mix shifts slightly, which reads as a large change that is not one."""
    healthy, degraded = samples
    k_max = int(max([1] + [int(s.occurrence.max()) + 1 for s in samples if len(s.occurrence)]))
    cell_med = group_medians(healthy.name_id * k_max + healthy.occurrence, healthy.dur_ns, n_names * k_max)
    name_med = group_medians(healthy.name_id, healthy.dur_ns, n_names)
    d_name_med = group_medians(degraded.name_id, degraded.dur_ns, n_names)
    out = []
    for s in samples:
        nm = s.name_id
        ref = cell_med[nm * k_max + s.occurrence]
        ref = np.where(np.isfinite(ref), ref, name_med[nm])
        ref = np.where(np.isfinite(ref), ref, d_name_med[nm])
        ref = np.maximum(ref, 1.0)
        out.append(np.rint(s.dur_ns / ref * RATIO_ONE).astype(np.int64))
    return out


def lower_median_by(cell: np.ndarray, value: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per sample: the lower median of ``value`` over its ``cell`` and the number of samples in the cell.

    The lower median of ranks is the common mode that a fault on up to half of them (one of two, two of
    four) does not move: with two ranks it is the faster one."""
    if not len(cell):
        return np.zeros(0, np.float64), np.zeros(0, np.int64)
    order = np.lexsort((value, cell))
    first, n = segments(cell[order])
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
    """What :func:`common_mode_ratios` decided, per run: ``ratios`` (test-space values, RATIO_ONE units),
    ``outside`` (instances whose workload lies outside the healthy run's range for their op: not compared),
    and per name id ``modelled`` (a workload model adjusted it) and ``covariate`` (what it regressed on)."""

    ratios: list[np.ndarray]
    outside: list[np.ndarray]
    modelled: np.ndarray
    covariate: dict[int, str] = field(default_factory=dict)


def cell_matrix(cell: np.ndarray, value: np.ndarray, n_pos: int, uniq: np.ndarray) -> np.ndarray:
    """(position x op) matrix of a per-cell value (NaN where the op did not run in that step)."""
    m = np.full((n_pos, len(uniq)), np.nan)
    m[cell >> OP_BITS, np.searchsorted(uniq, cell & OP_MASK)] = value
    return m


class AffineFits(NamedTuple):
    """Per (target t, candidate c): ``r2`` and ``slope`` of the fit, ``xbar`` the candidate's mean over the
    target's steps (shapes (t, c)); per target: ``ybar`` its mean (shape (t,))."""

    r2: np.ndarray
    slope: np.ndarray
    xbar: np.ndarray
    ybar: np.ndarray


def affine_fits(y: np.ndarray, x: np.ndarray) -> AffineFits:
    """Least squares ``y_t = ybar_t + b (x_c - xbar_tc)`` of every target column t of ``y`` on every candidate
    column c of ``x`` over the steps where the target ran (NaN = did not run; a missing candidate counts as
    its mean)."""
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
    return AffineFits(r2, slope, sx / n[:, None], ybar)


NEIGHBOUR_GATE = 0.1  # healthy steps whose covariate is within 10 % of an instance's are "the same shape"
MIN_NEIGHBOURS = (
    3  # fewer such steps: not compared (one odd healthy step, e.g. warm-up, would be the reference)
)


def neighbour_mean(
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


def widened_range(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per column of ``x`` (NaN = absent): the range of its values widened by a tenth of its width or 5 %
    of its largest value, whichever is more (a constant covariate still admits its own value's noise);
    NaN bounds where a column has no value (nothing falls outside them)."""
    px = np.isfinite(x)
    has = px.any(axis=0)
    lo = np.where(has, np.where(px, x, np.inf).min(axis=0), np.nan)
    hi = np.where(has, np.where(px, x, -np.inf).max(axis=0), np.nan)
    margin = np.maximum(0.1 * (hi - lo), 0.05 * np.abs(hi))
    return lo - margin, hi + margin


def common_mode_ratios(
    samples: list[KernelSamples], ratios: list[np.ndarray], min_steps: int = 8
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
    n_names = int(max([1] + [int(s.name_id.max()) + 1 for s in samples if len(s.name_id)]))
    modelled = np.zeros(n_names, bool)
    normed, cells, cms, peers_l, colls = [], [], [], [], []
    for s, rt in zip(samples, ratios, strict=True):
        ps = s.position.astype(np.int64)
        cell = (ps << OP_BITS) | ((s.name_id & 0xFFFFFF) << 16) | (s.occurrence & 0xFFFF)
        cm, n = lower_median_by(cell, rt)
        coll = s.cls == COLLECTIVE
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
    for cell, cm, sz in zip(cells, cms, [s.size for s in samples], strict=True):
        dur_m.append(cell_matrix(cell, cm / RATIO_ONE, n_pos, uniq))
        rec = sz > 0  # few instances record a size (copies, c10d collectives): no sort of the rest
        smed, _ = lower_median_by(cell[rec], sz[rec])
        size_m.append(cell_matrix(cell[rec], smed, n_pos, uniq))
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
    fit = affine_fits(y, columns(0))
    r2, slope = fit.r2, fit.slope
    own_h = size_m[0][:, t_idx]
    own_slope = np.array(
        [affine_fits(y[:, j : j + 1], own_h[:, j : j + 1]).slope[0, 0] for j in range(len(t_idx))]
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
            pred[run][:, j] = neighbour_mean(
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
    s_lo, s_hi = widened_range(step_sizes[0])
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


def common_mode_shift(cell: np.ndarray, value: np.ndarray, base: np.ndarray | float) -> np.ndarray:
    """Per (rank, step) value minus the lower median of its cell (the step, among ranks running the same
    program), plus ``base`` (clipped at 0): a workload change moves every rank's busy/idle/wait in a step
    together; a fault on one rank does not."""
    cm, n = lower_median_by(cell.astype(np.int64), value)
    out = np.where(n >= 2, value - cm + base, value)
    return np.maximum(np.rint(out), 0).astype(np.int64)


def program_groups(name_id: np.ndarray, rank: np.ndarray) -> dict[int, int]:
    """Rank -> id of the ranks that run the same program (the same set of kernel names): the TP ranks of one
    pipeline stage. Stages run different ops (embedding, lm_head, sampling), so their busy times differ by
    a workload-dependent amount and share no common mode."""
    if not len(name_id):
        return {}
    pairs = np.unique((rank.astype(np.int64) << 32) | name_id.astype(np.int64))
    prog: dict[int, int] = {}
    sig_id: dict[bytes, int] = {}
    r_of = pairs >> 32
    first, length = segments(r_of)
    for a, n in zip(first.tolist(), length.tolist(), strict=True):
        sig = (pairs[a : a + n] & 0xFFFFFFFF).tobytes()
        prog[int(r_of[a])] = sig_id.setdefault(sig, len(sig_id))
    return prog


def workload_model(
    kernels: list[KernelSamples], n_names: int, common_mode: bool, min_steps: int
) -> WorkloadModel:
    """The test values of both runs' kernels: ratios to the healthy median of the same op
    (:func:`op_ratios`), then, with ``common_mode``, over the op's common mode in its step or, for
    collectives, over the workload model's expectation (:func:`common_mode_ratios`; ``min_steps``: fewest
    steps per side an op must be compared in)."""
    ratios = op_ratios(kernels, n_names)
    if not common_mode:
        return WorkloadModel(
            ratios, [np.zeros(len(k.name_id), bool) for k in kernels], np.zeros(n_names, bool)
        )
    return common_mode_ratios(kernels, ratios, min_steps)
