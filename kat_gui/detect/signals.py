"""Per-(rank, step) signals: each rank compared with its peers on the same work in the same step.

Every signal is a matrix ``[rank, step]`` of a *relative* number (a log ratio to the peers, or a share of the
step), centred on the per-step median across ranks so that anything every rank does together in one step
(batch churn, warm-up, a synchronized host pause) cancels out. Its noise scale is the MAD of all cells
(robust to a minority of faulty cells), so the z-scores mean the same on a quiet and a noisy run.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from kat_gui.detect.stats import group_median, quiet_nanmedian, robust_sigma, segments


@dataclass
class PeerMatch:
    """Per matched row: the peer reference duration and the log ratio own/reference (NaN if unmatched)."""

    rows: np.ndarray  # indices into RunFrame.gpu
    ref_ns: np.ndarray
    log_ratio: np.ndarray
    n_peers: np.ndarray  # members of the matched group (self included)


def peer_match(
    rows: np.ndarray,
    step_idx: np.ndarray,
    name: np.ndarray,
    rank_idx: np.ndarray,
    value: np.ndarray,
    n_ranks: int,
) -> PeerMatch:
    """Match rows across ranks by (step, name, ordinal of that name within the rank's step) and compare each
    ``value`` with the median of its group (the other member when the group has two ranks).

    Assumes ``rows`` are ordered by (track, start), so a stable sort keeps each rank's order of execution.
    """
    n = len(rows)
    if not n:
        z = np.zeros(0)
        return PeerMatch(rows, z, z, np.zeros(0, np.int64))
    v = np.maximum(value.astype(np.float64), 1.0)
    found = _positional_reference(step_idx, name, rank_idx, v, n_ranks)
    ref, members = found if found is not None else _exact_reference(step_idx, name, rank_idx, v, n_ranks)
    return PeerMatch(rows, ref, np.log(v / ref), members)


def _peer_reference(members: np.ndarray, med: np.ndarray, total: np.ndarray, v: np.ndarray) -> np.ndarray:
    """The reference of each row: its group's median with three or more members, the other member's value
    with two (``total`` - own), NaN alone."""
    return np.where(members >= 3, med, np.where(members == 2, total - v, np.nan))


def _exact_reference(
    step_idx: np.ndarray, name: np.ndarray, rank_idx: np.ndarray, v: np.ndarray, n_ranks: int
) -> tuple[np.ndarray, np.ndarray]:
    """(reference, group members) per row of ``v`` (values >= 1) matched by (step, name, ordinal of that name
    within the rank's step): sorts, works for any layout."""
    n_names = int(name.max()) + 1
    ordinal = name_ordinals(step_idx, name, rank_idx, n_names, n_ranks)
    max_ord = int(ordinal.max()) + 1
    base = step_idx.astype(np.int64) * n_names + name
    gid = exact_groups(base, ordinal, max_ord, int(base.max()))
    return exact_reference(gid, v, float(np.nanmin(v)), float(np.nanmax(v)), 0)


def name_ordinals(
    step_idx: np.ndarray, name: np.ndarray, rank_idx: np.ndarray, n_names: int, n_ranks: int
) -> np.ndarray:
    """Per row: how many rows of the same (step, name, rank) come before it (rows in execution order)."""
    n = len(step_idx)
    k1 = (step_idx.astype(np.int64) * n_names + name) * n_ranks + rank_idx
    o1 = np.argsort(k1, kind="stable")
    first, length = segments(k1[o1])
    ordinal = np.empty(n, dtype=np.int64)
    ordinal[o1] = np.arange(n) - np.repeat(first, length)
    return ordinal


def exact_groups(base: np.ndarray, ordinal: np.ndarray, max_ord: int, base_max: int) -> np.ndarray:
    """Dense group id per row, numbered in (base, ordinal) order; ``max_ord`` and ``base_max`` bound the run's
    ordinals and bases (so that a window of the run picks the encoding the whole run would)."""
    if base_max * max_ord + max_ord < 2**62:
        k2 = base * max_ord + ordinal
        _, gid = np.unique(k2, return_inverse=True)
    else:  # very long runs with huge string tables: two-column unique, slower but exact
        _, gid = np.unique(np.stack([base, ordinal], axis=1), axis=0, return_inverse=True)
    return gid.ravel()


def exact_reference(
    gid: np.ndarray, v: np.ndarray, lo: float, hi: float, gid_offset: int
) -> tuple[np.ndarray, np.ndarray]:
    """(reference, members) per row from dense group ids; ``lo``/``hi`` are the range of the run's values and
    ``gid_offset`` the number of groups before these (both only order the median sort as the whole run
    would: see :func:`kat_gui.detect.stats.group_sort`)."""
    n_groups = int(gid.max()) + 1
    med, cnt = group_median(gid, v, n_groups, lo, hi, gid_offset)
    sums = np.bincount(gid, weights=v, minlength=n_groups)
    members = cnt[gid]
    return _peer_reference(members, med[gid], sums[gid], v), members


def _positional_reference(
    step_idx: np.ndarray, name: np.ndarray, rank_idx: np.ndarray, v: np.ndarray, n_ranks: int
) -> tuple[np.ndarray, np.ndarray] | None:
    """Fast path of :func:`peer_match` without sorting: when each rank's rows are contiguous and in step
    order (one stream per rank, the usual case), the k-th row of a (rank, step) is matched with the k-th
    row of the same step on the other ranks in a dense [match, rank] matrix, and only members with the
    group's majority name count (the same kernel: a rank with an extra kernel shifts its positions, and its
    mismatched rows are left unmatched). Returns (reference, group members; 0 where unmatched) per row of
    ``v`` (values >= 1), or None when the layout does not hold or fewer than 90 % of the rows match (the
    exact (step, name, ordinal) matching is used then)."""
    n = len(v)
    if n_ranks < 2 or n_ranks > 4096:
        return None
    n_steps = int(step_idx.max()) + 1
    if n_steps * n_ranks >= 2**31:
        return None
    pos = cell_positions(step_idx, rank_idx, n_steps)
    if pos is None:
        return None
    max_pos = int(pos.max()) + 1
    if n_steps * max_pos * n_ranks > 8 * n + 1_000_000:
        return None  # ragged steps: the dense matrix would be mostly empty
    ok, ref, members = positional_match(step_idx, name, rank_idx, v, n_ranks, pos, max_pos)
    if np.count_nonzero(ok) < 0.9 * n:
        return None
    return ref, members


def cell_positions(step_idx: np.ndarray, rank_idx: np.ndarray, n_steps: int) -> np.ndarray | None:
    """Per row, its position within its (rank, step) cell when the rows run cell by cell in (rank, step)
    order (None otherwise)."""
    n = len(step_idx)
    cell = rank_idx.astype(np.int64) * n_steps + step_idx.astype(np.int64)
    brk = cell[1:] != cell[:-1]
    if n > 1 and (cell[1:][brk] < cell[:-1][brk]).any():
        return None
    first = np.flatnonzero(np.r_[True, brk])
    return np.arange(n, dtype=np.int32) - np.repeat(first.astype(np.int32), np.diff(np.r_[first, n]))


def positional_match(
    step_idx: np.ndarray,
    name: np.ndarray,
    rank_idx: np.ndarray,
    v: np.ndarray,
    n_ranks: int,
    pos: np.ndarray,
    max_pos: int,
    step0: int = 0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(matched, reference, members) per row: the k-th row of each (rank, step) against the k-th of the same
    step on the other ranks, members with the match's majority name only (see :func:`_positional_reference`).
    ``step0`` is the first step of the rows (a window of the run; 0 for the whole run)."""
    n_steps = int(step_idx.max()) + 1 - step0
    mid = (step_idx.astype(np.int64) - step0) * max_pos + pos
    n_mid = n_steps * max_pos
    # Majority name per match: with the valid names of a row sorted, the middle one is the majority name
    # whenever more than half of the ranks agree.
    names = np.full((n_mid, n_ranks), -1, dtype=np.int32)
    names[mid, rank_idx] = name
    srt = np.sort(names, axis=1)
    cnt = np.count_nonzero(srt >= 0, axis=1)
    k = n_ranks - cnt + (cnt - 1) // 2
    major = np.take_along_axis(srt, np.clip(k, 0, n_ranks - 1)[:, None], axis=1)[:, 0]
    ok = name == major[mid]
    vals = np.full((n_mid, n_ranks), np.nan)
    vals[mid[ok], rank_idx[ok]] = v[ok]
    vs = np.sort(vals, axis=1)  # NaN last
    members = np.count_nonzero(~np.isnan(vs), axis=1)
    lo = np.take_along_axis(vs, np.maximum((members - 1) // 2, 0)[:, None], axis=1)[:, 0]
    hi = np.take_along_axis(vs, np.maximum(members // 2, 0)[:, None], axis=1)[:, 0]
    med = 0.5 * (lo + hi)
    tot = np.nansum(vs, axis=1)
    m_row = members[mid]
    ref = np.where(ok, _peer_reference(m_row, med[mid], tot[mid], v), np.nan)
    return ok, ref, np.where(ok, m_row, 0)


@dataclass
class CellSignal:
    """A [rank, step] matrix, its peer-centred deviation, the robust noise scale and the z-scores."""

    name: str
    value: np.ndarray  # raw cell value (NaN where the rank had nothing to compare in that step)
    dev: np.ndarray  # value - per-step median across ranks
    sigma: float
    z: np.ndarray
    count: np.ndarray  # rows behind each cell
    scale: np.ndarray  # per-cell noise scale: max(sigma, the cell's own standard error)

    def flags(self, z_min: float, effect_min: float) -> np.ndarray:
        """Cells at least ``z_min`` noise scales *and* ``effect_min`` (in the signal's unit) above peers."""
        d = np.nan_to_num(self.dev, nan=0.0)
        return (d / self.scale >= z_min) & (d >= effect_min)


LARGE_CELL_ROWS = 200_000  # above this many rows, cell medians become winsorised means (no sort)


def cell_signal(
    name: str,
    rank_idx: np.ndarray,
    step_idx: np.ndarray,
    value: np.ndarray,
    n_ranks: int,
    n_steps: int,
    sigma_floor: float,
    reduce: str = "median",
) -> CellSignal:
    """Aggregate per-row ``value`` into [rank, step] cells (median, or sum), centre per step, z-score."""
    ok = np.isfinite(value) & (step_idx >= 0)
    cell = rank_idx[ok].astype(np.int64) * n_steps + step_idx[ok]
    n_cells = n_ranks * n_steps
    vo = value[ok]
    if reduce == "median" and ok.sum() > LARGE_CELL_ROWS:
        bounds = winsor_bounds(vo[:: max(1, len(vo) // WINSOR_SAMPLE)], sigma_floor)
        val, cnt, se = cell_values(cell, vo, n_cells, "winsor", clip=bounds)
    elif reduce == "median":
        lo_hi = (float(np.min(vo)), float(np.max(vo))) if len(vo) else None
        val, cnt, se = cell_values(cell, vo, n_cells, "median", lo_hi=lo_hi)
    else:
        val, cnt, se = cell_values(cell, vo, n_cells, "sum")
    val = val.reshape(n_ranks, n_steps)
    cnt = cnt.reshape(n_ranks, n_steps)
    return centred(name, val, cnt, sigma_floor, se.reshape(n_ranks, n_steps))


WINSOR_SAMPLE = 50_000  # rows the winsorising bounds are estimated from (every k-th row of the signal)


def winsor_bounds(sample: np.ndarray, sigma_floor: float) -> tuple[float, float]:
    """Clipping bounds of the winsorised cell means: 4 robust deviations (at least 0.05) around the median of a
    regular subsample of the signal's rows."""
    centre = float(np.median(sample))
    spread = max(4.0 * robust_sigma(sample, sigma_floor), 0.05)
    return centre - spread, centre + spread


def cell_values(
    cell: np.ndarray,
    value: np.ndarray,
    n_cells: int,
    mode: str,
    lo_hi: tuple[float, float] | None = None,
    clip: tuple[float, float] | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(value, count, standard error) per cell id in ``[0, n_cells)`` of finite per-row ``value``: ``mode``
    ``"median"`` (``lo_hi``: the range of the signal's values, which orders the median sort), ``"winsor"``
    (means of the values clipped to ``clip``) or ``"sum"``. Every cell depends on its own rows only, in their
    order, so a window of the run holding whole cells computes them as the whole run would."""
    se = np.zeros(n_cells)
    if mode == "winsor":
        # Many rows: a winsorised mean per cell (bincounts, no sort) stands in for the median. Rows are
        # clipped at 4 robust deviations of all rows (from a subsample), so a few outliers cannot move a
        # cell, while a fault, which shifts most rows of a cell, passes unclipped.
        vc = np.clip(value, clip[0], clip[1])
        cnt = np.bincount(cell, minlength=n_cells)
        with np.errstate(all="ignore"):
            val = np.bincount(cell, weights=vc, minlength=n_cells) / cnt
            sq = np.bincount(cell, weights=vc * vc, minlength=n_cells) / cnt
            sd = np.sqrt(np.maximum(sq - val * val, 0.0))
            se = np.nan_to_num(sd / np.sqrt(np.maximum(cnt, 1)), nan=0.0)
        val = np.where(cnt > 0, val, np.nan)
        # A shift larger than the bounds (a 1.6x throttle where the run's noise is 2 %) puts most of a cell's
        # rows beyond one bound: its median is beyond it too, and the clipped mean would report the bound (a
        # 60 % slowdown read as 16 %). Cells with more than half of their rows beyond one bound (few: the
        # fault's) get the exact median of their rows instead.
        over = np.bincount(cell, weights=value > clip[1], minlength=n_cells)
        under = np.bincount(cell, weights=value < clip[0], minlength=n_cells)
        beyond = np.flatnonzero(2 * np.maximum(over, under) > cnt)
        if len(beyond):
            rows = np.flatnonzero(np.isin(cell, beyond))
            sub = np.searchsorted(beyond, cell[rows])
            b_val, _cnt, b_se = _median_cells(sub, value[rows], len(beyond), None)
            val[beyond], se[beyond] = b_val, b_se
    elif mode == "median":
        val, cnt, se = _median_cells(cell, value, n_cells, lo_hi)
    else:
        cnt = np.bincount(cell, minlength=n_cells)
        val = np.bincount(cell, weights=value, minlength=n_cells).astype(np.float64)
        val[cnt == 0] = np.nan
    return val, cnt, se


def _median_cells(
    cell: np.ndarray, value: np.ndarray, n_cells: int, lo_hi: tuple[float, float] | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(median, count, standard error) per cell (``cell_values``' ``"median"``)."""
    lo, hi = lo_hi if lo_hi is not None else (None, None)
    val, cnt = group_median(cell, value, n_cells, lo, hi)
    # Standard error of each cell's median from its own rows' spread: a cell built from few or noisy
    # rows must deviate more before it counts. The spread is the mean absolute deviation from the cell
    # median (x 1.2533 = sigma for normal rows; a bincount, no second sort), and 1.2533 again is the
    # efficiency of the median relative to the mean.
    absdev = np.bincount(cell, weights=np.abs(value - val[cell]), minlength=n_cells)
    with np.errstate(all="ignore"):
        spread = 1.2533 * absdev / np.maximum(cnt, 1)
        se = np.nan_to_num(1.2533 * spread / np.sqrt(np.maximum(cnt, 1)), nan=0.0)
    return val, cnt, se


def centred(
    name: str, val: np.ndarray, cnt: np.ndarray, sigma_floor: float, se: np.ndarray | None = None
) -> CellSignal:
    """Centre a [rank, step] matrix on its per-step median across ranks and z-score it by the MAD of all
    cells. With one rank there are no peers and every deviation is 0."""
    col_med = quiet_nanmedian(val, 0) if val.size else np.zeros(val.shape[1])
    dev = val - col_med[None, :]
    if val.shape[0] < 2:
        dev = np.where(np.isfinite(val), 0.0, np.nan)
    # Noise from the run itself: successive-step differences of each rank's deviation (robust to a fault's
    # onset, which is one jump per rank, and blind to persistent offsets). With three or more ranks the
    # spread of all cells is a floor too (persistent healthy offsets, e.g. silicon spread); with two ranks
    # it is not usable: a fault makes the two deviations +d and -d, whose spread is d itself.
    diffs = np.diff(dev, axis=1).ravel() if dev.shape[1] > 1 else np.zeros(0)
    sigma = robust_sigma(diffs, sigma_floor) / np.sqrt(2.0) if len(diffs) >= 3 else sigma_floor
    if val.shape[0] >= 3:
        sigma = max(sigma, robust_sigma(dev.ravel(), sigma_floor))
    sigma = max(sigma, sigma_floor)
    scale = np.maximum(sigma, se) if se is not None else np.full(val.shape, sigma)
    return CellSignal(name, val, dev, sigma, dev / scale, cnt, scale)
