"""Which rows of a run-vs-run diff changed more than noise: the test of every row and its verdict.

Method: two-sided Mann-Whitney U per row (normal approximation, ties corrected; :mod:`kat_gui.compare.stats`)
on the rows' test values, Benjamini-Hochberg over all rows at once, and a minimum effect. A row is
*significant* when q < ``alpha``, its relative effect is at least ``min_effect`` (``min_effect_modelled``
for kernels a workload model adjusted) and its absolute shift at least ``min_abs_ns`` (for per-rank
busy/idle/wait rows: at least a share of the healthy median step time). The relative effect is the test
values' median relative change, or their trimmed mean's when both move the same way and the mean moved more
(a fault that covers a third of the steps moves the mean before it moves the median).

Counts and totals are exact; quantiles and tests use at most about ``max_samples`` samples per row and side
(a random thinning with a fixed seed, so results are reproducible) and leave out the samples whose workload
the healthy run never ran.

Units: ``*_ns`` columns are ns (raw durations, what the reader sees); effects are relative changes
(degraded/healthy - 1); p- and q-values are probabilities.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from kat_gui.compare.result import RANK_METRIC_KINDS, SYMPTOM_KINDS, Difference, Params
from kat_gui.compare.samples import GroupLayout, KernelVocabulary, Samples
from kat_gui.compare.stats import GroupStats, MannWhitney, benjamini_hochberg, group_stats, two_sample_tests

THINNING_SEED = 0x4B4154


def thin(cell: np.ndarray, n_cell: np.ndarray, cap: int) -> np.ndarray | None:
    """Keep mask that leaves about ``cap`` samples per cell (all of them in smaller cells); None = keep all."""
    if not len(cell) or n_cell.max() <= cap:
        return None
    prob = np.minimum(1.0, cap / np.maximum(n_cell, 1))
    rng = np.random.default_rng(THINNING_SEED)
    return rng.random(len(cell)) < prob[cell]


@dataclass
class RowTests:
    """Per row: ``stats`` of the raw values (ns; ``n``, ``total`` and ``mean`` exact), ``test_stats`` of the
    test values, the Mann-Whitney test ``mw`` of the test values, ``q`` (BH-adjusted p; 1 where untested)
    and ``tested`` (both sides have samples)."""

    stats: GroupStats
    test_stats: GroupStats
    mw: MannWhitney
    q: np.ndarray
    tested: np.ndarray


def row_tests(samples: Samples, n_groups: int, p: Params) -> RowTests:
    """Statistics and tests of every row at once."""
    group, side, value, tvalue, excluded = samples[:5]
    # Exact counts and sums for the reader; quantiles and tests on at most ``max_samples`` per (row, side):
    # a random thinning (fixed seed) that leaves p-values overwhelming for real shifts and effect sizes
    # within a fraction of a percent, and halves the cost on million-kernel runs.
    cell = group * 2 + side
    n_exact = np.bincount(cell, minlength=2 * n_groups)
    tot_exact = np.bincount(cell, weights=value.astype(np.float64), minlength=2 * n_groups)
    keep = thin(cell, n_exact, p.max_samples)
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
    return RowTests(stats=st, test_stats=tst, mw=mw, q=q, tested=tested)


def relative_change(new: float, old: float) -> float:
    """new/old - 1; +inf for something out of nothing, 0 for nothing out of nothing."""
    if old > 0:
        return new / old - 1.0
    return float("inf") if new > 0 else 0.0


def difference_rows(
    tests: RowTests,
    layout: GroupLayout,
    vocab: KernelVocabulary,
    degraded_ranks: list[int],
    modelled: np.ndarray,
    healthy_step_ns: float,
    p: Params,
) -> list[Difference]:
    """One :class:`Difference` per tested row, in row id order, with its effect and verdict.
    ``modelled``: per kernel name id, whether a workload model adjusted it; ``healthy_step_ns``: the healthy
    run's median step time (the scale of the per-rank rows' floor)."""
    st, tst, mw, q = tests.stats, tests.test_stats, tests.mw, tests.q
    rows: list[Difference] = []
    for gid in np.flatnonzero(tests.tested).tolist():
        key = layout.row_key(gid, vocab, degraded_ranks)
        kind, nm, cname = key.kind, key.name, key.kernel_class
        h50, d50 = float(st.p50[gid, 0]), float(st.p50[gid, 1])
        hm, dm = float(st.mean[gid, 0]), float(st.mean[gid, 1])
        rel50 = relative_change(float(tst.p50[gid, 1]), float(tst.p50[gid, 0]))
        relm = relative_change(float(tst.tmean[gid, 1]), float(tst.tmean[gid, 0]))
        effect = rel50
        if relm * rel50 >= 0 and abs(relm) > abs(rel50):
            effect = relm
        absd = abs(effect) * hm if np.isfinite(effect) else abs(dm - hm)
        if kind in RANK_METRIC_KINDS:
            absd = max(abs(d50 - h50), abs(dm - hm))
        floor = p.min_abs_ns
        if kind in RANK_METRIC_KINDS:
            share = p.min_wait_share if kind == "rank_wait" else p.min_step_share
            floor = max(floor, share * healthy_step_ns)
        min_eff = p.min_effect
        if (kind in ("kernel", "kernel_rank") and modelled[vocab.ids[nm]]) or (
            kind in ("class", "class_rank") and cname == "collective" and modelled.any()
        ):
            min_eff = max(min_eff, p.min_effect_modelled)
        sig = bool(q[gid] < p.alpha and abs(effect) >= min_eff and absd >= floor)
        rows.append(
            Difference(
                **key._asdict(),
                **_side_columns(st, gid),
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
    return rows


def _side_columns(st: GroupStats, gid: int) -> dict[str, int | float]:
    """The per-side columns of row ``gid``: ``n_healthy``, ``n_degraded``, then ``total``, ``mean``, ``p50``
    and ``p99`` (ns) of each side, as :class:`Difference` names them."""
    out: dict[str, int | float] = {}
    for side, who in enumerate(("healthy", "degraded")):
        out[f"n_{who}"] = int(st.n[gid, side])
        for stat in ("total", "mean", "p50", "p99"):
            out[f"{stat}_{who}_ns"] = float(getattr(st, stat)[gid, side])
    return out


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
