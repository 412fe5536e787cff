"""Vectorised group statistics used by every detector signal (no Python loop over events)."""

from __future__ import annotations

import warnings

import numpy as np

MAD_TO_SIGMA = 1.4826  # MAD of a normal distribution times this is its standard deviation


def segments(sorted_key: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Start index and length of each run of equal values in a sorted array."""
    if not len(sorted_key):
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    first = np.flatnonzero(np.r_[True, sorted_key[1:] != sorted_key[:-1]])
    return first, np.diff(np.r_[first, len(sorted_key)])


def run_rows(first: np.ndarray, length: np.ndarray) -> np.ndarray:
    """The indices of every run ``first[i] : first[i] + length[i]``, run after run (the inverse of
    :func:`segments`): one arange with each run's offset added, no loop over runs."""
    return np.arange(int(length.sum())) + np.repeat(first - (np.cumsum(length) - length), length)


def count_before_by_rank(rank: np.ndarray, start_ns: np.ndarray, mark: np.ndarray) -> np.ndarray:
    """Per event: how many ``mark`` events of its own rank start before it (rows ordered by (rank, start), ties
    in input order). Step numbers from per-step marker kernels, or segments from collective order."""
    order = np.lexsort((start_ns, rank))
    m_o = mark[order].astype(np.int64)
    cum = np.cumsum(m_o) - m_o
    r_o = rank[order]
    first = np.r_[True, r_o[1:] != r_o[:-1]] if len(r_o) else np.zeros(0, bool)
    base = np.maximum.accumulate(np.where(first, cum, 0)) if len(r_o) else cum
    out = np.empty(len(rank), dtype=np.int64)
    out[order] = cum - base
    return out


def group_sort(
    group: np.ndarray,
    value: np.ndarray,
    lo: float | None = None,
    hi: float | None = None,
    key_offset: int = 0,
) -> np.ndarray:
    """Order sorting rows by (group, value) with one argsort: ``value`` is squeezed into [0, 0.5) and added
    to the group id (float64 keeps ~1e-9 resolution of the value range, plenty for medians).

    ``lo``/``hi`` (default: the values' own range) and ``key_offset`` (added to the group ids) let a part of
    a larger set of rows be ordered with the keys the whole set would have: streamed detection orders each
    window's groups exactly as a pass over the whole run would (``kat_gui.detect.streamed``)."""
    if not len(group):
        return np.zeros(0, np.int64)
    v = value.astype(np.float64)
    if lo is None or hi is None:
        lo, hi = float(np.nanmin(v)), float(np.nanmax(v))
    scaled = (v - lo) / ((hi - lo) * 2.0 + 1e-300)
    key = (
        group.astype(np.float64)
        if not key_offset
        else (group.astype(np.int64) + key_offset).astype(np.float64)
    )
    return np.argsort(key + scaled, kind="stable")


def group_median(
    group: np.ndarray,
    value: np.ndarray,
    n_groups: int,
    lo: float | None = None,
    hi: float | None = None,
    key_offset: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Median and count of ``value`` per group id in ``[0, n_groups)``; NaN where a group is empty.
    ``lo``/``hi``/``key_offset``: see :func:`group_sort`."""
    med = np.full(n_groups, np.nan)
    cnt = np.bincount(group, minlength=n_groups) if len(group) else np.zeros(n_groups, np.int64)
    if not len(group):
        return med, cnt
    order = group_sort(group, value, lo, hi, key_offset)
    g_s = group[order]
    v_s = value[order].astype(np.float64)
    first, length = segments(g_s)
    lo_v = v_s[first + (length - 1) // 2]
    hi_v = v_s[first + length // 2]
    med[g_s[first]] = 0.5 * (lo_v + hi_v)
    return med, cnt


def quiet_nanmedian(x: np.ndarray, axis: int) -> np.ndarray:
    """``np.nanmedian`` along ``axis``, silent about all-NaN slices (their median is NaN: a step or rank with
    nothing to compare)."""
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmedian(x, axis=axis)


def robust_sigma(x: np.ndarray, floor: float) -> float:
    """1.4826 x MAD of the finite values of ``x``, never below ``floor`` (exact synthetic data has MAD 0)."""
    x = x[np.isfinite(x)]
    if len(x) < 3:
        return floor
    mad = float(np.median(np.abs(x - np.median(x))))
    return max(MAD_TO_SIGMA * mad, floor)


def runs(flags: np.ndarray, merge_gap: int) -> list[tuple[int, int, int]]:
    """Runs of True in a 1-D bool array, joining runs separated by at most ``merge_gap`` False cells.

    Returns (first, last inclusive, number of True cells) per run.
    """
    idx = np.flatnonzero(flags)
    if not len(idx):
        return []
    breaks = np.flatnonzero(np.diff(idx) > merge_gap + 1)
    starts = np.r_[0, breaks + 1]
    ends = np.r_[breaks, len(idx) - 1]
    return [(int(idx[a]), int(idx[b]), int(b - a + 1)) for a, b in zip(starts, ends, strict=True)]


def small_unique(x: np.ndarray) -> np.ndarray:
    """Sorted distinct values of an integer array whose range is small compared with its length (step
    numbers, string ids, class codes): one bincount instead of a sort or a hash."""
    if not len(x):
        return np.zeros(0, dtype=x.dtype)
    lo, hi = int(x.min()), int(x.max())
    if hi - lo > 4 * len(x) + 1_000_000:
        return np.unique(x)
    return (np.flatnonzero(np.bincount(x - lo, minlength=hi - lo + 1)) + lo).astype(x.dtype)


def small_inverse(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(distinct values, index of each element's value) for small-range integers, like
    ``np.unique(x, return_inverse=True)`` without sorting."""
    u = small_unique(x)
    if not len(x):
        return u, np.zeros(0, np.int64)
    lo = int(u[0])
    lut = np.zeros(int(u[-1]) - lo + 1, dtype=np.int64)
    lut[u - lo] = np.arange(len(u))
    return u, lut[x - lo]
