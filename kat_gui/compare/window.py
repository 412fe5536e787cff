"""Changes located in time: the window of aligned steps in which a row changed, and the row's numbers over
that window.

Why: a fault that starts late or ends early (a GPU throttled in steps 16-39 of 48) moves a row's mean over
the whole run by a part of its size while its median need not move at all, so the row reads "+9 %" beside
p50s that did not move. This step finds, per row, the one contiguous window of steps in which it changed;
when that window is clearly a part of the run (not all of it), the row is tested again on those steps of
both runs alone, and every number it shows (p50s, means, effect, q) comes from that window.

Method, per tested row (docs/compare.md, *Changes located in time*):

1. **Series.** The row's per-step effect: ``x_s`` = (the degraded run's mean test value in aligned step s
   minus the healthy run's in the same step) / the healthy run's mean test value over all steps. Test values
   are the workload-corrected values the row's test compares (:mod:`kat_gui.compare.workload`), so a batch
   change common to all ranks is no change here either. Steps one side lacks are left out; runs of more
   than :data:`MAX_BINS` steps are binned into that many groups of consecutive steps.
2. **Segment.** The noise of the series, sigma, is its median absolute first difference / (0.6745 sqrt 2)
   (a level shift is one difference among many). Odd steps (more than :data:`OUTLIER_SIGMAS` sigma from the
   median of their 5 neighbours) are replaced by that median (a Hampel filter: one or two odd steps cannot
   make a window, a level shift keeps its edges), and every window with at least ``Params.min_n`` steps
   inside and outside it is scored by its mean shift against that noise,
   ``T = (mean_in - mean_out) / (sigma sqrt(1/m + 1/(n - m)))``; among the windows whose outside mean
   moved by at most :data:`OUTSIDE_SHARE` of the inside's (a window and its complement score alike; the
   window is the part that changed), the largest |T| wins.
3. **Accept.** The window is a located change when |T| >= sqrt(2 ln K) + :data:`T_MARGIN` (K windows
   searched: about the largest |T| that K correlated Gaussian scores reach, plus a margin, larger by
   :data:`MODEL_T_EXTRA` for rows a workload model adjusted); the per-step
   effects inside and outside it (medians) differ by at least ``Params.min_effect`` (rows compared through
   a workload model on another op's kernel time: :data:`WEAK_MODEL_FLOOR` times
   ``Params.min_effect_modelled``); the outside moved by at most :data:`OUTSIDE_SHARE` of the inside (a
   change over the whole run whose size varies is no window); and the degraded run's own per-step series
   (its step against the healthy run's mean over all steps) moves between inside and outside the same
   way, by at least :data:`OWN_SHARE` of that (a window in which only the healthy run's steps moved is no
   change of the degraded run).
4. **Re-test.** The row's samples of the window's steps in both runs are tested as the whole run's are
   (:func:`kat_gui.compare.significance.row_tests`: Mann-Whitney, effect, floors), with the p-value
   multiplied by K and by the number of rows tested (Bonferroni: the window was chosen for its change, so
   its plain test would be too optimistic). A row whose windowed verdict is significant takes the windowed
   numbers and a ``window``; every other row keeps its whole-run numbers, byte for byte. Symptom rows
   (waits, step time) keep a window only when a located cause's window covers at least half of it.

Units: positions are aligned step indices (0 = the anchor step), step numbers are each run's own, times
are ns on each store's clock (as its timeline shows them); effects are relative changes.
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Any, NamedTuple

import numpy as np

from kat_gui.compare.alignment import StepAlignment
from kat_gui.compare.result import Difference, Params
from kat_gui.compare.run import RunData
from kat_gui.compare.samples import GroupLayout, KernelVocabulary, Samples
from kat_gui.compare.significance import RowTests, difference_rows, row_tests

MAX_BINS = 256
"""Longer runs are binned into this many groups of consecutive steps (windows then snap to bins)."""
CELL_BUDGET = 4_000_000
"""At most about this many (row, side, bin) cells in the per-step series (fewer bins for very many rows)."""
OUTLIER_SIGMAS = 6.0
"""A step this many noise sigmas away from the median of its neighbours is an outlier (see :func:`hampel`)."""
HAMPEL_HALF = 2
"""Neighbours on each side that :func:`hampel` takes the median of."""
T_MARGIN = 1.5
"""Margin over sqrt(2 ln K), the largest standardised mean shift K windows of pure noise reach."""
OUTSIDE_SHARE = 0.25
"""The steps outside a window may have moved by at most this share of the steps inside it."""
OWN_SHARE = 0.5
"""Inside against outside, the degraded run's own series must move by at least this share of the paired
series' move (and by ``min_effect``): a window where only the healthy run's steps moved is no change."""
MODEL_T_EXTRA = 4.0
"""Added to the margin for rows a workload model adjusted (collectives compared with healthy steps of the same
shape): where two runs' batches differ, that model's error over a few steps scores T ~ 6-7 (48 steps);
a link fault seen through it scores T >= 11 against a healthy run of another seed, >= 75 against a twin."""
WEAK_MODEL_FLOOR = 2.0
"""A row compared through a workload model on another op's kernel time (collectives without a recorded size)
is located only when inside and outside differ by this many times ``Params.min_effect_modelled``: over a
stretch of steps where two runs' batches drift apart, that model can be off by ~10 %."""
MIN_SIGMA = 1e-3
"""Floor of the series' noise (relative effect units): a flat series is not infinitely precise."""


def locate_changes(
    samples: Samples,
    tests: RowTests,
    rows: list[Difference],
    layout: GroupLayout,
    vocab: KernelVocabulary,
    degraded_ranks: list[int],
    modelled: np.ndarray,
    healthy_step_ns: float,
    steps: StepAlignment,
    runs: tuple[RunData, RunData],
    p: Params,
    covariate: dict[int, str] | None = None,
) -> dict[int, Difference]:
    """Index into ``rows`` (the tested rows of :func:`difference_rows`, in row id order) -> the row re-tested
    on the window of steps in which it changed, for every row whose change is located in time (see the
    module docstring). Rows whose change covers the whole run, or that did not change, are not in it.
    ``modelled`` and ``covariate``: per kernel name id, whether a workload model adjusted it and on what
    (:class:`kat_gui.compare.workload.WorkloadModel`)."""
    n_pos = int(steps.steps_compared)
    gids = np.flatnonzero(tests.tested)
    if len(gids) != len(rows) or n_pos < 2 * p.min_n or not len(gids):
        return {}
    series = _step_series(samples, gids, layout.n_groups, n_pos, p.min_n)
    x, own, valid, first_pos, last_pos, min_len = series
    weak = _weakly_modelled(rows, vocab, covariate or {})
    model_rows = _modelled_rows(rows, vocab, modelled)
    found: dict[int, tuple[int, int, Located]] = {}  # row index -> (first, last position, window)
    for i in _candidates(x, valid, min_len, p.min_effect).tolist():
        idx = np.flatnonzero(valid[i])
        floor = WEAK_MODEL_FLOOR * p.min_effect_modelled if weak[i] else p.min_effect
        margin = T_MARGIN + (MODEL_T_EXTRA if model_rows[i] else 0.0)
        hit = best_window(x[i, idx], min_len, floor, own[i, idx], margin)
        if hit is not None:
            found[i] = (int(first_pos[idx[hit.a]]), int(last_pos[idx[hit.b - 1]]), hit)
    if not found:
        return {}
    # 4. Re-test each row on its window's steps of both runs.
    lo = np.full(layout.n_groups, -1, np.int64)
    hi = np.full(layout.n_groups, -2, np.int64)
    n_windows = np.ones(layout.n_groups)
    for i, (pa, pb, hit) in found.items():
        lo[gids[i]], hi[gids[i]], n_windows[gids[i]] = pa, pb, hit.searched
    g, pos = samples.group, samples.position
    inside = (pos >= lo[g]) & (pos <= hi[g])
    wt = row_tests(Samples(*(col[inside] for col in samples)), layout.n_groups, p)
    # Bonferroni over the windows searched and the rows tested: the window was picked for its change.
    wt.q = np.where(wt.tested, np.minimum(1.0, wt.mw.p * n_windows * len(gids)), 1.0)
    w_rows = difference_rows(wt, layout, vocab, degraded_ranks, modelled, healthy_step_ns, p)
    by_gid = dict(zip(np.flatnonzero(wt.tested).tolist(), w_rows, strict=True))
    out: dict[int, Difference] = {}
    for i, (pa, pb, hit) in found.items():
        w = by_gid.get(int(gids[i]))
        if w is None or not w.significant or not np.isfinite(w.effect):
            continue
        if np.sign(w.effect) != np.sign(hit.inside):  # the window's test must see the series' change
            continue
        whole = rows[i]
        w.window = window_info(runs, steps, pa, pb, hit, whole)
        first, last = w.window["steps"]
        was = f"{whole.effect * 100:+.1f}%" if np.isfinite(whole.effect) else "new"
        located = f"changed in steps {first}-{last} only (whole run {was}): these columns compare those steps"
        w.note = f"{w.note}; {located}" if w.note and not w.note.startswith("median barely") else located
        out[i] = w
    return _symptoms_with_a_cause(out)


def _symptoms_with_a_cause(located: dict[int, Difference]) -> dict[int, Difference]:
    """``located`` less the symptom rows (waits, step time) whose window no located cause's window covers
    for at least half of its steps: symptoms need a cause, in time too (a step time that moved in some
    window while no cause did is the workload's; the row then stays over the whole run)."""
    causes = [d.window["positions"] for d in located.values() if not d.symptom]

    def covered(pos: list[int]) -> bool:
        a, b = pos
        return any(2 * (min(b, cb) - max(a, ca) + 1) >= b - a + 1 for ca, cb in causes)

    return {i: d for i, d in located.items() if not d.symptom or covered(d.window["positions"])}


def _modelled_rows(rows: list[Difference], vocab: KernelVocabulary, modelled: np.ndarray) -> np.ndarray:
    """Per row: a workload model adjusted its test values (a modelled collective kernel, or the collective
    class when any kernel was), as :func:`difference_rows` decides its effect floor."""
    out = np.zeros(len(rows), bool)
    for i, d in enumerate(rows):
        if d.kind in ("kernel", "kernel_rank") and d.name in vocab.ids:
            out[i] = bool(modelled[vocab.ids[d.name]])
        elif d.kind in ("class", "class_rank"):
            out[i] = d.kernel_class == "collective" and bool(modelled.any())
    return out


def _weakly_modelled(
    rows: list[Difference], vocab: KernelVocabulary, covariate: dict[int, str]
) -> np.ndarray:
    """Per row: its test values come from a workload model whose covariate is another op's kernel time (a
    collective kernel, or the collective class when any of its kernels is such a one)."""
    weak_names = {vocab.names[i] for i, cov in covariate.items() if cov == "kernel time"}
    out = np.zeros(len(rows), bool)
    for i, d in enumerate(rows):
        if d.kind in ("kernel", "kernel_rank"):
            out[i] = d.name in weak_names
        elif d.kind in ("class", "class_rank"):
            out[i] = d.kernel_class == "collective" and bool(weak_names)
    return out


class Located(NamedTuple):
    """A located change in a series: the window ``[a, b)`` (series indices), its score ``t`` (standardised
    mean shift), the median per-step effect ``inside`` and ``outside`` it, and how many windows were
    ``searched``."""

    a: int
    b: int
    t: float
    inside: float
    outside: float
    searched: int


def _step_series(
    samples: Samples, gids: np.ndarray, n_groups: int, n_pos: int, min_steps: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, int]:
    """Per tested row (in ``gids`` order) and step bin: the relative per-step effect ``x`` (against the
    healthy run's same step), ``own`` (the degraded run's step against the healthy run's mean over all
    steps) and ``valid`` (both runs have samples in the bin); ``first_pos``/``last_pos``: the positions each
    bin covers; ``min_len``: ``min_steps`` steps in bins."""
    n_bins = int(min(n_pos, MAX_BINS, max(16, CELL_BUDGET // max(2 * n_groups, 1))))
    bin_of = (np.arange(n_pos, dtype=np.int64) * n_bins) // n_pos
    first_pos = np.searchsorted(bin_of, np.arange(n_bins), side="left")
    last_pos = np.searchsorted(bin_of, np.arange(n_bins), side="right") - 1
    # One cell per (row, side, bin); samples lie in the compared steps (positions 0 .. n_pos - 1). Rows are
    # numbered by row id, or by tested row when there are very many possible rows.
    row, n_rows, take = samples.group, n_groups, gids
    keep = ~samples.excluded  # instances at a workload the healthy run never ran are not compared
    if 2 * n_groups * n_bins > 2 * CELL_BUDGET:
        row_of = np.full(n_groups, -1, np.int64)
        row_of[gids] = np.arange(len(gids))
        row, n_rows, take = row_of[row], len(gids), slice(None)
        keep &= row >= 0
    cell = (row * 2 + samples.side) * n_bins + bin_of[samples.position]
    weights = samples.test_value.astype(np.float64)
    if not keep.all():
        cell, weights = cell[keep], weights[keep]
    size = n_rows * 2 * n_bins
    cnt = np.bincount(cell, minlength=size).reshape(n_rows, 2, n_bins)[take]
    tot = np.bincount(cell, weights=weights, minlength=size).reshape(n_rows, 2, n_bins)[take]
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = tot / cnt
        scale = np.abs(tot[:, 0].sum(axis=1) / cnt[:, 0].sum(axis=1))
        x = (mean[:, 1] - mean[:, 0]) / scale[:, None]
        h_all = tot[:, 0].sum(axis=1) / cnt[:, 0].sum(axis=1)
        own = (mean[:, 1] - h_all[:, None]) / scale[:, None]
    valid = (cnt[:, 0] > 0) & (cnt[:, 1] > 0) & np.isfinite(x) & (scale[:, None] > 0)
    min_len = int(math.ceil(min_steps * n_bins / n_pos))
    return x, own, valid, first_pos, last_pos, max(min_len, 1)


def _candidates(x: np.ndarray, valid: np.ndarray, min_len: int, min_effect: float) -> np.ndarray:
    """Rows whose series can hold a window: enough valid bins, and rolling means over ``min_len`` bins that
    span at least ``min_effect`` (a window and its outside must differ by that much)."""
    n_valid = valid.sum(axis=1)
    ok = n_valid >= 2 * min_len
    if not ok.any():
        return np.zeros(0, np.int64)
    xs = np.where(valid, x, 0.0)
    cs = np.concatenate([np.zeros((len(x), 1)), np.cumsum(xs, axis=1)], axis=1)
    cc = np.concatenate([np.zeros((len(x), 1)), np.cumsum(valid, axis=1)], axis=1)
    s = cs[:, min_len:] - cs[:, :-min_len]
    c = cc[:, min_len:] - cc[:, :-min_len]
    with np.errstate(invalid="ignore", divide="ignore"):
        roll = np.where(c >= max(1, min_len // 2), s / c, np.nan)
    has = np.isfinite(roll).any(axis=1)
    spread = np.zeros(len(x))
    spread[has] = np.nanmax(roll[has], axis=1) - np.nanmin(roll[has], axis=1)
    return np.flatnonzero(ok & has & (spread >= min_effect))


@lru_cache(maxsize=64)
def _windows(n: int, min_len: int) -> tuple[np.ndarray, np.ndarray]:
    """All windows [a, b) of ``n`` steps with at least ``min_len`` steps inside and outside."""
    a, b = np.triu_indices(n + 1, k=min_len)
    keep = (n - (b - a)) >= min_len
    return a[keep], b[keep]


def noise_sigma(x: np.ndarray) -> float:
    """Robust noise of a series: median absolute first difference / (0.6745 sqrt 2), floored."""
    if len(x) < 3:
        return MIN_SIGMA
    mad = float(np.median(np.abs(np.diff(x))))
    return max(mad / (0.6745 * math.sqrt(2.0)), MIN_SIGMA)


def hampel(x: np.ndarray, sigma: float, half: int = HAMPEL_HALF) -> np.ndarray:
    """``x`` with every step that lies more than :data:`OUTLIER_SIGMAS` ``sigma`` from the median of its
    ``2 half + 1`` neighbours replaced by that median (a Hampel filter): one or two odd steps go, a level
    shift that lasts longer than ``half`` steps stays exactly where it is."""
    if len(x) < 2 * half + 1:
        return x
    padded = np.pad(x, half, mode="edge")
    local = np.median(np.lib.stride_tricks.sliding_window_view(padded, 2 * half + 1), axis=1)
    return np.where(np.abs(x - local) > OUTLIER_SIGMAS * sigma, local, x)


def best_window(
    x: np.ndarray,
    min_len: int,
    min_effect: float,
    own: np.ndarray | None = None,
    margin: float = T_MARGIN,
) -> Located | None:
    """The window of series ``x`` with the largest standardised mean shift against the rest, when it is a
    located change (module docstring, steps 2-3); None otherwise. ``own``: the degraded run's own series
    (against the healthy run's level over all steps), which must move between the window and its outside
    too (by :data:`OWN_SHARE` of ``x``'s move): a window in which only the healthy run moved (its steps ran
    faster or slower than its usual) is no change of the degraded run. Its outside need not stay at 0: the
    healthy run's own level varies (warm-up steps), which the paired series ``x`` cancels."""
    n = len(x)
    a, b = _windows(n, min_len)
    k = len(a)
    if not k:
        return None
    sigma = noise_sigma(x)
    xc = hampel(x, sigma)
    cs = np.r_[0.0, np.cumsum(xc)]
    m = (b - a).astype(np.float64)
    s_in = cs[b] - cs[a]
    mean_in = s_in / m
    mean_out = (cs[-1] - s_in) / (n - m)
    t = (mean_in - mean_out) / (sigma * np.sqrt(1.0 / m + 1.0 / (n - m)))
    # The window is the part that changed: its outside stays near no change (a window and its complement
    # score alike; the one whose outside moved is the other way round).
    t = np.where(np.abs(mean_out) <= OUTSIDE_SHARE * np.abs(mean_in), t, 0.0)
    j = int(np.argmax(np.abs(t)))
    score = float(t[j])
    if abs(score) < math.sqrt(2.0 * math.log(max(k, 2))) + margin:
        return None
    aj, bj = int(a[j]), int(b[j])
    inside, outside = _levels(x, aj, bj)
    if not _is_window(inside, outside, min_effect):
        return None
    if own is not None:  # the degraded run itself moved there, by at least half as much
        own_in, own_out = _levels(own, aj, bj)
        moved = own_in - own_out
        if np.sign(moved) != np.sign(inside) or abs(moved) < max(
            min_effect, OWN_SHARE * abs(inside - outside)
        ):
            return None
    return Located(aj, bj, score, inside, outside, k)


def _levels(x: np.ndarray, a: int, b: int) -> tuple[float, float]:
    """Median of ``x`` inside ``[a, b)`` and outside it."""
    return float(np.median(x[a:b])), float(np.median(np.r_[x[:a], x[b:]]))


def _is_window(inside: float, outside: float, min_effect: float) -> bool:
    """The inside moved by at least ``min_effect`` more than the outside, and the outside by at most
    :data:`OUTSIDE_SHARE` of the inside."""
    return abs(inside - outside) >= min_effect and abs(outside) <= OUTSIDE_SHARE * abs(inside)


def _step_spans(run: RunData, anchor_step: int, pa: int, pb: int) -> tuple[list[int], list[int]]:
    """The run's step numbers at positions ``pa`` and ``pb`` and the time from the first one's earliest GPU
    start to the last one's latest GPU end over all ranks (ns, the store's clock)."""
    steps = run.steps
    base = int(np.searchsorted(steps, anchor_step))
    s0 = int(steps[min(base + pa, len(steps) - 1)])
    s1 = int(steps[min(base + pb, len(steps) - 1)])
    sr = run.step_rank
    sel = (sr["step"] >= s0) & (sr["step"] <= s1)
    if not sel.any():
        return [s0, s1], [int(run.span_ns[0]), int(run.span_ns[1])]
    return [s0, s1], [int(sr["start_ns"][sel].min()), int(sr["end_ns"][sel].max())]


def window_info(
    runs: tuple[RunData, RunData],
    steps: StepAlignment,
    pa: int,
    pb: int,
    hit: Located,
    whole: Difference,
) -> dict[str, Any]:
    """The ``window`` of a located row, as written into the JSON: ``steps`` (the degraded run's step numbers,
    first and last, inclusive), ``healthy_steps``, ``positions`` (aligned), ``degraded_ns`` and
    ``healthy_ns`` (each run's time span of those steps), ``score`` (T), ``outside_effect`` (median per-step
    effect outside the window; ``inside_effect`` inside it) and ``whole_run`` (the row's numbers over all
    compared steps)."""
    h_steps, h_ns = _step_spans(runs[0], steps.anchor_healthy_step, pa, pb)
    d_steps, d_ns = _step_spans(runs[1], steps.anchor_degraded_step, pa, pb)

    def num(v: float) -> float | None:
        return float(v) if np.isfinite(v) else None

    return {
        "steps": d_steps,
        "healthy_steps": h_steps,
        "positions": [int(pa), int(pb)],
        "healthy_ns": h_ns,
        "degraded_ns": d_ns,
        "score": round(float(hit.t), 3),
        "inside_effect": float(hit.inside),
        "outside_effect": float(hit.outside),
        "whole_run": {
            "effect": num(whole.effect),
            "p50_healthy_ns": num(whole.p50_healthy_ns),
            "p50_degraded_ns": num(whole.p50_degraded_ns),
            "mean_healthy_ns": num(whole.mean_healthy_ns),
            "mean_degraded_ns": num(whole.mean_degraded_ns),
            "q_value": num(whole.q_value),
            "significant": bool(whole.significant),
        },
    }
