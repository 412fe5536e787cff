"""Grouped two-sample statistics over columnar samples: per group quantiles, Mann-Whitney U, Benjamini-Hochberg.

Every function takes one flat array of samples with a group id and a side (0 = healthy, 1 = degraded) per
sample and answers one value per group, with a fixed number of numpy sorts whatever the number of groups, so
that thousands of (kernel, rank) groups over millions of kernels cost a few sorts, not a Python loop.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from kat_gui.detect.stats import segments

VALUE_BITS = 40  # sample values are non-negative ints below 2**40 (ns: 18 minutes)


@dataclass
class GroupStats:
    """Per group and side (arrays of shape ``(n_groups, 2)``; column 0 healthy, 1 degraded)."""

    n: np.ndarray  # int64
    total: np.ndarray  # float64, sum of the samples
    mean: np.ndarray
    p50: np.ndarray
    p99: np.ndarray
    tmean: np.ndarray  # mean of the central 80 % (10 % trimmed each side): moves with a partial shift,
    # ignores the few outliers that dominate a plain mean


@dataclass
class MannWhitney:
    """Per group: ``u`` (U of the degraded side), ``auc`` (P(degraded > healthy) + ties/2, 0.5 = no shift),
    two-sided normal-approximation ``p`` with tie correction (1.0 where a side has fewer than ``min_n``)."""

    u: np.ndarray
    auc: np.ndarray
    p: np.ndarray


def sorted_samples(group: np.ndarray, side: np.ndarray, value: np.ndarray) -> np.ndarray:
    """One int64 key per sample, sorted: group, then value, then side (``group << 41 | value << 1 | side``).

    One ``np.sort`` of plain int64 instead of a lexsort and an argsort: the sort is the whole cost of the
    tests on millions of samples. Assumes ``0 <= value < 2**40`` (clipped) and fewer than 2**22 groups.
    """
    v = np.clip(value.astype(np.int64, copy=False), 0, (1 << VALUE_BITS) - 1)
    key = (group.astype(np.int64) << (VALUE_BITS + 1)) | (v << 1) | side.astype(np.int64)
    key.sort()
    return key


def two_sample_tests(
    group: np.ndarray, side: np.ndarray, value: np.ndarray, n_groups: int, min_n: int = 5
) -> tuple[GroupStats, MannWhitney]:
    """:func:`group_stats` and :func:`mann_whitney` from one sort."""
    key = sorted_samples(group, side, value)
    return _stats_from_sorted(key, n_groups), _mw_from_sorted(key, n_groups, min_n)


def group_stats(group: np.ndarray, side: np.ndarray, value: np.ndarray, n_groups: int) -> GroupStats:
    """Count, sum, mean, median and 99th percentile (nearest rank, lower) per (group, side).

    Assumes ``group`` in ``[0, n_groups)``, ``side`` in {0, 1}, integer values in ``[0, 2**40)``. Empty cells
    get NaN statistics and n = 0.
    """
    return _stats_from_sorted(sorted_samples(group, side, value), n_groups)


def _stats_from_sorted(key: np.ndarray, n_groups: int) -> GroupStats:
    m = len(key)
    g = key >> (VALUE_BITS + 1)
    is1 = (key & 1).astype(bool)
    v = ((key >> 1) & ((1 << VALUE_BITS) - 1)).astype(np.float64)
    cell = g * 2 + is1
    n_cells = n_groups * 2
    n = np.bincount(cell, minlength=n_cells)
    total = np.bincount(cell, weights=v, minlength=n_cells)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = total / n
    # Rank of each sample within its (group, side): the sides interleave inside a group but each side's
    # values are already in order, so counting that side's earlier samples in the group is its rank.
    c1 = np.cumsum(is1) - is1
    c0 = np.arange(m) - c1
    g_first = np.minimum(_group_starts(np.bincount(g, minlength=n_groups)), max(m - 1, 0))
    if m:
        r = np.where(is1, c1 - c1[g_first][g], c0 - c0[g_first][g])
    else:
        r = np.zeros(0, np.int64)

    def quantile(q: float) -> np.ndarray:
        out = np.full(n_cells, np.nan)
        target = np.floor((np.maximum(n, 1) - 1) * q).astype(np.int64)
        hit = r == target[cell]
        out[cell[hit]] = v[hit]
        return out

    cut = n // 10
    inside = (r >= cut[cell]) & (r < (n - cut)[cell])
    trimmed = np.bincount(cell, weights=v * inside, minlength=n_cells)
    with np.errstate(invalid="ignore", divide="ignore"):
        tmean = np.where(n > 0, trimmed / (n - 2 * cut), np.nan)
    return GroupStats(
        n=n.reshape(n_groups, 2),
        total=total.reshape(n_groups, 2),
        mean=mean.reshape(n_groups, 2),
        p50=quantile(0.5).reshape(n_groups, 2),
        p99=quantile(0.99).reshape(n_groups, 2),
        tmean=tmean.reshape(n_groups, 2),
    )


def mann_whitney(
    group: np.ndarray, side: np.ndarray, value: np.ndarray, n_groups: int, min_n: int = 5
) -> MannWhitney:
    """Two-sided Mann-Whitney U test of degraded vs healthy samples in every group at once.

    Ranks are computed within each group over both sides (ties get their average rank). The normal
    approximation is used throughout: groups that matter have hundreds of samples, and groups with fewer
    than ``min_n`` samples on a side are reported as untestable (p = 1). Values as for :func:`group_stats`.
    """
    return _mw_from_sorted(sorted_samples(group, side, value), n_groups, min_n)


def _mw_from_sorted(key: np.ndarray, n_groups: int, min_n: int) -> MannWhitney:
    m = len(key)
    gs = key >> (VALUE_BITS + 1)
    gv = key >> 1  # group and value: equal for ties
    is1 = (key & 1).astype(np.float64)  # degraded
    counts = np.bincount(gs, minlength=n_groups)
    g_first = _group_starts(counts)
    if m:
        t_first, t_len = segments(gv)  # runs of ties
        avg = (t_first + (t_len - 1) / 2.0) - g_first[gs[t_first]] + 1.0
        rank = np.repeat(avg, t_len)
        tie_term = np.bincount(
            gs[t_first], weights=(t_len.astype(np.float64) ** 3 - t_len), minlength=n_groups
        )
    else:
        rank = np.zeros(0)
        tie_term = np.zeros(n_groups)
    n1 = np.bincount(gs, weights=is1, minlength=n_groups)
    n0 = counts - n1
    r1 = np.bincount(gs, weights=rank * is1, minlength=n_groups)
    u = r1 - n1 * (n1 + 1) / 2.0
    nn = n0 + n1
    with np.errstate(invalid="ignore", divide="ignore"):
        auc = u / (n0 * n1)
        var = n0 * n1 / 12.0 * ((nn + 1) - tie_term / (nn * (nn - 1)))
        z = (np.abs(u - n0 * n1 / 2.0) - 0.5) / np.sqrt(var)
    ok = (n0 >= min_n) & (n1 >= min_n) & (var > 0)
    z = np.where(ok, np.maximum(z, 0.0), 0.0)
    p = np.array([math.erfc(x / math.sqrt(2.0)) for x in z.tolist()], dtype=np.float64)
    p[~ok] = 1.0
    auc = np.where(ok, auc, 0.5)
    return MannWhitney(u=u, auc=auc, p=p)


def group_medians(group: np.ndarray, value: np.ndarray, n_groups: int) -> np.ndarray:
    """Median (lower) of integer ``value`` per group; NaN for empty groups."""
    key = (group.astype(np.int64) << (VALUE_BITS + 1)) | (
        np.clip(value.astype(np.int64, copy=False), 0, (1 << VALUE_BITS) - 1) << 1
    )
    key.sort()
    n = np.bincount(group, minlength=n_groups)
    first = _group_starts(n)
    out = np.full(n_groups, np.nan)
    has = n > 0
    out[has] = ((key[first[has] + (n[has] - 1) // 2] >> 1) & ((1 << VALUE_BITS) - 1)).astype(np.float64)
    return out


def _group_starts(counts: np.ndarray) -> np.ndarray:
    """Index of each group's first sample in samples sorted by group, from the per-group counts."""
    return np.concatenate(([0], np.cumsum(counts)[:-1]))


def benjamini_hochberg(p: np.ndarray) -> np.ndarray:
    """Benjamini-Hochberg adjusted p-values (q-values) controlling the false discovery rate."""
    p = np.asarray(p, dtype=np.float64)
    m = len(p)
    if not m:
        return p.copy()
    order = np.argsort(p)
    scaled = p[order] * m / np.arange(1, m + 1)
    q_sorted = np.minimum.accumulate(scaled[::-1])[::-1]
    q = np.empty(m)
    q[order] = np.minimum(q_sorted, 1.0)
    return q
