"""Link faults: a collective group's transfer time against its own history, with the workload regressed out.

A degraded NVLink or NIC slows every member of a collective equally, so peers cannot see it; only the group's
own past can. The past is not stationary, though: continuous batching changes the message size of *every*
collective on *every* rank together (a random walk), warm-up slows everything, and frameworks switch
all-reduce algorithms with the message size. So the per-step transfer time (ns, logged; the median over the
step's instances) of each (group, collective name) is modelled as

    log transfer[s] = a + b . covariates[s] + c . size[s]^2 + delta * 1[s in window] + noise

Covariates say how big the step's work was, from what the trace records: the logged message size
(``In msg nelems``, with the first step covariate) when every step has one, else the step covariates of
:func:`step_covariates`: the step's *common-mode* kernel factor, for compute- and memory-bound kernels
separately (per kernel name, the step's mean log duration against the name's median over steps; the median
over names: warm-up, context growth), and the logged bytes of the step's host->device copies (input ids and
metadata grow with the batch).
The quadratic term in the size bends the model from the latency-bound to the bandwidth-bound regime.
A link fault is the one thing the covariates cannot explain: a sustained shift ``delta`` (a log ratio) over a
contiguous window of steps, common to every collective of the group (scored jointly). Every window (edges on
a grid of at most ``MAX_EDGES`` steps) is scored at once (projection residuals and cumulative sums, no refit
per window), with noise from successive differences of the residuals (robust to the shift itself); the
caller (``link_findings``) keeps a window ``z_link`` noise scales out and at least ``min_slowdown``.
:func:`joint_windows` also serves ``rank_findings``' search for a weak sustained deviation of one rank.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from kat_gui.detect.stats import MAD_TO_SIGMA, group_median, quiet_nanmedian, small_unique


@dataclass
class LinkShift:
    """A sustained transfer-time rise of one collective key (group, name) over steps ``s0..s1`` (indices
    into the detector's step axis)."""

    group: int
    name: int
    s0: int
    s1: int
    delta: float  # log ratio of the transfer time inside the window to the model outside it
    z: float
    n_steps: int


def step_covariates(
    step_idx: np.ndarray,
    n_steps: int,
    log_dur: np.ndarray,
    name: np.ndarray,
    cls: np.ndarray,
    rank_idx: np.ndarray,
    n_ranks: int,
    copy_step: np.ndarray,
    copy_rank: np.ndarray,
    copy_bytes: np.ndarray,
) -> np.ndarray:
    """[n_steps, k] covariates of the step's work size (see the module docstring); NaN rows are steps
    without kernels. ``log_dur``/``name``/``step_idx``/``rank_idx`` describe compute and memory kernels;
    ``copy_*`` the host->device copies with a byte count."""
    return covariates_from_sums(
        covariate_sums(step_idx, log_dur, name, cls, copy_step, copy_rank, copy_bytes, n_steps),
        n_steps,
        n_ranks,
    )


@dataclass
class CovariateSums:
    """The sums :func:`step_covariates` reduces, per cell: per kernel class, per (step, name) the number of
    kernels and the sum of their log durations; per (rank, step) the bytes of host copies. Cells are keyed by
    step index, string id and rank index, so that the sums of disjoint windows of steps merge by union (each
    cell's sum is taken over its rows in row order, as over the whole run)."""

    kern: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]  # class -> (step, name, cnt, tot)
    names: np.ndarray  # string ids of every compute/memory kernel
    copy: tuple[np.ndarray, np.ndarray, np.ndarray]  # (rank, step, summed bytes) of cells with a copy
    any_copy_bytes: bool  # any host copy with a byte count (in or out of a step)

    @staticmethod
    def merge(parts: list[CovariateSums]) -> CovariateSums:
        kern: dict[int, list] = {}
        for p in parts:
            for c, v in p.kern.items():
                kern.setdefault(c, []).append(v)
        cat = {c: tuple(np.concatenate([x[i] for x in vs]) for i in range(4)) for c, vs in kern.items()}
        return CovariateSums(
            {c: cat[c] for c in sorted(cat)},
            np.unique(np.concatenate([np.zeros(0, np.int64), *(p.names for p in parts)])),
            tuple(
                np.concatenate([np.zeros(0, dt), *(p.copy[i] for p in parts)])
                for i, dt in enumerate((np.int64, np.int64, np.float64))
            ),
            any(p.any_copy_bytes for p in parts),
        )


def covariate_sums(
    step_idx: np.ndarray,
    log_dur: np.ndarray,
    name: np.ndarray,
    cls: np.ndarray,
    copy_step: np.ndarray,
    copy_rank: np.ndarray,
    copy_bytes: np.ndarray,
    n_steps: int,
) -> CovariateSums:
    """The per-cell sums behind :func:`step_covariates`, as sparse (key, count, sum) lists."""
    kern = {}
    names = small_unique(name.astype(np.int64)) if len(log_dur) else np.zeros(0, np.int64)
    if len(log_dur):
        ok = step_idx >= 0
        for c in small_unique(cls):
            sel = ok & (cls == c)
            key = step_idx[sel].astype(np.int64) * (int(names[-1]) + 1) + name[sel]
            uk, inv = np.unique(key, return_inverse=True)
            cnt = np.bincount(inv, minlength=len(uk))
            tot = np.bincount(inv, weights=log_dur[sel], minlength=len(uk))
            kern[int(c)] = (uk // (int(names[-1]) + 1), uk % (int(names[-1]) + 1), cnt, tot)
    any_bytes = bool(len(copy_bytes) and (copy_bytes > 0).any())
    copy = (np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0))
    if any_bytes:
        ok = (copy_step >= 0) & (copy_bytes > 0)
        cell = copy_rank[ok].astype(np.int64) * n_steps + copy_step[ok]
        uk, inv = np.unique(cell, return_inverse=True)
        tot = np.bincount(inv, weights=copy_bytes[ok].astype(np.float64), minlength=len(uk))
        copy = (uk // n_steps, uk % n_steps, tot)
    return CovariateSums(kern, names, copy, any_bytes)


def covariates_from_sums(sums: CovariateSums, n_steps: int, n_ranks: int) -> np.ndarray:
    """[n_steps, k] covariates from their per-cell sums (see :func:`step_covariates`)."""
    cols = []
    if len(sums.names):
        # Per (step, name): the mean log duration (bincounts, no sort); each name's level is its median
        # over steps; a step's common mode is the median over names of its deviation from their levels.
        n_names = len(sums.names)
        for _c, (step, nm, cnt_c, tot_c) in sums.kern.items():  # compute- and memory-bound work scale apart
            key = step * n_names + np.searchsorted(sums.names, nm)
            cnt = np.zeros(n_steps * n_names, np.int64)
            tot = np.zeros(n_steps * n_names)
            cnt[key] = cnt_c
            tot[key] = tot_c
            cnt = cnt.reshape(n_steps, n_names)
            tot = tot.reshape(n_steps, n_names)
            with np.errstate(all="ignore"):
                mean = np.where(cnt > 0, tot / np.maximum(cnt, 1), np.nan)
                level = quiet_nanmedian(mean, 0)
                cm = quiet_nanmedian(mean - level[None, :], 1)
            if np.isfinite(cm).sum() >= 3:
                cols.append(cm)
    if sums.any_copy_bytes:
        rank, step, tot_c = sums.copy
        tot = np.zeros(n_ranks * n_steps)
        tot[rank * n_steps + step] = tot_c
        tot = tot.reshape(n_ranks, n_steps)
        tot[tot <= 0] = np.nan
        with np.errstate(all="ignore"):
            cols.append(np.log(quiet_nanmedian(tot, 0)))
    if not cols:
        return np.zeros((n_steps, 0))
    return np.stack(cols, axis=1)


MAX_EDGES = 160


def _design(x: np.ndarray, n: int) -> np.ndarray:
    """[1, standardised covariates], dropping covariates that are constant or missing (singular X'X)."""
    X = np.column_stack([np.ones(n), x]) if x.size else np.ones((n, 1))
    keep = [0] + [c for c in range(1, X.shape[1]) if np.isfinite(X[:, c]).all() and np.ptp(X[:, c]) > 1e-9]
    X = X[:, keep]
    if X.shape[1] > 1:
        sd = X[:, 1:].std(axis=0)
        X[:, 1:] = (X[:, 1:] - X[:, 1:].mean(axis=0)) / np.where(sd > 0, sd, 1.0)
    return X


def _diff_sigma(r: np.ndarray) -> float:
    """Noise of a series from its successive differences (robust to one level shift and to slow drift)."""
    d = np.diff(r)
    if len(d) < 3:
        return 0.0
    return MAD_TO_SIGMA * float(np.median(np.abs(d - np.median(d)))) / math.sqrt(2.0)


def joint_windows(
    series: list[tuple[np.ndarray, np.ndarray, np.ndarray]],
    n_steps: int,
    min_len: int,
    sigma_floor: float,
    warmup_steps: int = 0,
) -> tuple[int, int, float, float] | None:
    """The window ``[i, j]`` of the step axis where a common positive shift of every series best explains
    what its linear model ``[1, x]`` does not; returns (i, j, delta, z) or None.

    ``series`` holds (step indices present, y, x) per collective of one group: a degraded link slows all of
    them at once, while workload effects the covariates missed hit one collective at a time. All windows are
    scored at once with the projection trick: with M the residual maker of a series' design and u the
    window's indicator, u'My and X'u are window sums (one cumulative sum over the step axis serves every
    window), and the series are combined by inverse-variance weights:
    delta = sum(u'My / s^2) / sum(u'Mu / s^2), z = sum(u'My / s^2) / sqrt(sum(u'Mu / s^2))."""
    # Window edges on a grid of at most MAX_EDGES steps (all steps for usual runs): the number of windows
    # grows with the square of the edges.
    stride = max(1, -(-n_steps // MAX_EDGES))
    edges = np.unique(np.r_[np.arange(0, n_steps, stride), n_steps])
    a_, c_ = np.triu_indices(len(edges), k=1)
    i, j = edges[a_], edges[c_] - 1
    length = j - i + 1
    ok = (length >= min_len) & (length <= n_steps - min_len)
    ok &= ~((i == 0) & (j < warmup_steps))  # slower first steps on every collective are warm-up
    i, j = i[ok], j[ok]
    if not len(i):
        return None
    num = np.zeros(len(i))
    den = np.zeros(len(i))
    count = np.zeros(len(i))
    for steps, y, x in series:
        n = len(y)
        if n < 2 * min_len + 1:
            continue
        X = _design(x, n)
        xtx_inv = np.linalg.pinv(X.T @ X)
        r = y - X @ (xtx_inv @ (X.T @ y))
        sigma = max(_diff_sigma(r), sigma_floor, 1e-9)
        full_r = np.zeros(n_steps)
        full_r[steps] = r
        full_x = np.zeros((n_steps, X.shape[1]))
        full_x[steps] = X
        full_c = np.zeros(n_steps)
        full_c[steps] = 1.0
        cr = np.r_[0.0, np.cumsum(full_r)]
        cx = np.vstack([np.zeros((1, X.shape[1])), np.cumsum(full_x, axis=0)])
        cc = np.r_[0.0, np.cumsum(full_c)]
        ury = cr[j + 1] - cr[i]
        xu = cx[j + 1] - cx[i]
        cnt = cc[j + 1] - cc[i]
        umu = cnt - np.einsum("wk,kl,wl->w", xu, xtx_inv, xu)
        good = umu > 1e-6 * np.maximum(cnt, 1)
        num += np.where(good, ury, 0.0) / sigma**2
        den += np.where(good, umu, 0.0) / sigma**2
        count += np.where(good, cnt, 0.0)
    valid = (den > 0) & (count >= min_len)
    if not valid.any():
        return None
    z = np.where(valid, num / np.sqrt(np.where(valid, den, 1.0)), -np.inf)
    b = int(np.argmax(z))
    if not np.isfinite(z[b]) or z[b] <= 0:
        return None
    return int(i[b]), int(j[b]), float(num[b] / den[b]), float(z[b])


def link_shifts(
    key_group: np.ndarray,
    key_name: np.ndarray,
    inst_key: np.ndarray,
    inst_step: np.ndarray,
    log_transfer: np.ndarray,
    log_msg: np.ndarray,
    cov: np.ndarray,
    n_steps: int,
    min_steps: int,
    sigma_floor: float,
    warmup_steps: int = 0,
) -> list[LinkShift]:
    """Best common shift window per collective group. ``key_*`` name the (group, collective name) keys;
    ``inst_*`` are per collective instance (key index, step index, log transfer time, log message size or
    NaN); ``cov`` the per-step covariates."""
    out: list[LinkShift] = []
    ok = inst_step >= 0
    if not ok.any():
        return out
    n_keys = len(key_group)
    cell = inst_key[ok].astype(np.int64) * n_steps + inst_step[ok]
    y_all, _ = group_median(cell, log_transfer[ok], n_keys * n_steps)
    has_msg = np.isfinite(log_msg[ok])
    m_all = np.full(n_keys * n_steps, np.nan)
    if has_msg.any():
        m_all, _ = group_median(cell[has_msg], log_msg[ok][has_msg], n_keys * n_steps)
    y_all = y_all.reshape(n_keys, n_steps)
    m_all = m_all.reshape(n_keys, n_steps)
    for grp in np.unique(key_group):
        series = []
        for k in np.flatnonzero(key_group == grp):
            present = np.flatnonzero(np.isfinite(y_all[k]))
            # Warm-up steps are slower on every collective and decay geometrically; a fault already present
            # in them has no healthy past anyway.
            present = present[present >= warmup_steps]
            if len(present) < 2 * min_steps + 1:
                continue
            series.append((present, y_all[k, present], _key_covariates(m_all[k, present], cov[present])))
        if not series:
            continue
        bw = joint_windows(series, n_steps, min_steps, sigma_floor, warmup_steps)
        if bw is None:
            continue
        i, j, delta, z = bw
        out.append(LinkShift(int(grp), -1, i, j, delta, z, j - i + 1))
    return out


def _key_covariates(m: np.ndarray, cov: np.ndarray) -> np.ndarray:
    """Covariates of one collective's per-step transfer: its logged message size when every step has one,
    else the step covariates; plus a quadratic term in the size (transfer = latency + size / bandwidth is
    convex in log size: the model must bend from the latency-bound to the bandwidth-bound regime)."""
    has_msg = np.isfinite(m).all() and np.ptp(m) > 0
    if has_msg:
        x = np.column_stack([m, cov[:, :1]]) if cov.shape[1] else m[:, None]
    else:
        x = cov.copy()
    if x.size:
        bad = ~np.isfinite(x)
        if bad.any():  # a step without the covariate: the column median (it then explains nothing there)
            col_med = np.array([np.median(c[np.isfinite(c)]) if np.isfinite(c).any() else 0.0 for c in x.T])
            x = np.where(bad, col_med[None, :], x)
    if has_msg or cov.shape[1] > 1:
        size = x[:, 0] if has_msg else x[:, -1]
        c = size - size.mean()
        x = np.column_stack([x, c * c])
    return x
