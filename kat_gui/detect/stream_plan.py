"""Streamed detection, the plan: which steps make each window, which rows each window reads, and what each
window inherits from the windows before it.

From the per-rank scans (``stream_scan.RankScan``): windows of consecutive step indices of about
``target_rows`` GPU events, cut only where the cut is *clean* for every rank: all its rows before the cut start,
and all its launches before the cut happen, strictly before any after it. Then, within a window, a rank's GPU
idle gaps and launch intervals follow from its rows in the window plus its last end and last launch before it
(carried in), exactly as over the whole run. Per window: per GPU track its row range (steps never go down
along a track, checked by the scans) and its step runs, per host thread the rows holding the runtime calls
that launched the window's rows. Units: ns for times, rows within a track for ranges.
"""

from __future__ import annotations

import numpy as np

from kat_gui.detect.stream_window import Window


def plan_windows(run, target_rows: int) -> list[Window]:
    """Windows of consecutive steps of about ``target_rows`` GPU events each, cut only where the cut is clean
    for every rank (its rows before the cut all start, and its launches before it all happen, strictly before
    any after it), with each track's rows, each host thread's runtime rows and the carried-over last end and
    last launch per rank (see the module docstring)."""
    n_steps = run.n_steps
    sv = run.step_values
    ranks = run.frame.ranks
    n_ranks = len(ranks)
    big, small = np.iinfo(np.int64).max, np.iinfo(np.int64).min
    # Per rank and slot (slot 0: rows before any step on their track; slot s + 1: group of step index s).
    rows = np.zeros((n_ranks, n_steps + 1), np.int64)
    min_start = np.full((n_ranks, n_steps + 1), big)
    max_start = np.full((n_ranks, n_steps + 1), small)
    max_end = np.full((n_ranks, n_steps + 1), small)
    l_min = np.full((n_ranks, n_steps), big)
    l_max = np.full((n_ranks, n_steps), small)

    def slot(grp: np.ndarray) -> np.ndarray:
        return np.where(grp < 0, 0, np.searchsorted(sv, grp) + 1)

    for s in run.scans:
        ri = int(np.searchsorted(ranks, s.rank))
        sl = slot(s.grp["grp"])
        rows[ri, sl] = s.grp["rows"]
        min_start[ri, sl] = s.grp["min_start"]
        max_start[ri, sl] = s.grp["max_start"]
        max_end[ri, sl] = s.grp["max_end"]
        if len(s.lch["step"]):
            si = np.searchsorted(sv, s.lch["step"])
            l_min[ri, si], l_max[ri, si] = s.lch["min"], s.lch["max"]
    # A cut before step index b is clean when, for every rank, everything up to b - 1 starts (and launches)
    # strictly before everything from b on.
    pre_start = np.maximum.accumulate(max_start, axis=1)  # through slot k
    suf_start = np.minimum.accumulate(min_start[:, ::-1], axis=1)[:, ::-1]  # from slot k
    pre_l = np.maximum.accumulate(l_max, axis=1)
    suf_l = np.minimum.accumulate(l_min[:, ::-1], axis=1)[:, ::-1]
    clean = np.zeros(n_steps + 1, bool)
    for b in range(1, n_steps):
        ok_start = (
            (pre_start[:, b] < suf_start[:, b + 1])
            | (pre_start[:, b] == small)
            | (suf_start[:, b + 1] == big)
        )
        ok_l = (pre_l[:, b - 1] < suf_l[:, b]) | (pre_l[:, b - 1] == small) | (suf_l[:, b] == big)
        clean[b] = bool(ok_start.all() and ok_l.all())
    per_slot = rows.sum(axis=0)
    cuts = [0]
    acc = int(per_slot[0])
    for s in range(n_steps):
        acc += int(per_slot[s + 1])
        if acc >= target_rows and s + 1 < n_steps and clean[s + 1]:
            cuts.append(s + 1)
            acc = 0
    cuts.append(n_steps)
    win_of_slot = np.zeros(n_steps + 1, np.int64)
    for wi, (a, b) in enumerate(zip(cuts[:-1], cuts[1:], strict=True)):
        win_of_slot[a + 1 : b + 1] = wi
    lay = run.layout
    windows = []
    for wi, (a, b) in enumerate(zip(cuts[:-1], cuts[1:], strict=True)):
        slots = np.flatnonzero(win_of_slot == wi)
        tracks = {}
        for s in run.scans:
            for t, (row0, stp) in s.runs.items():
                grp = _run_groups(stp)
                wins = win_of_slot[slot(grp)]
                i0, i1 = np.searchsorted(wins, wi, "left"), np.searchsorted(wins, wi, "right")
                if i0 == i1:
                    continue
                hi = int(row0[i1]) if i1 < len(row0) else int(lay.track_count[t])
                tracks[t] = (int(row0[i0]), hi, row0[i0:i1], stp[i0:i1])
        hosts: dict[int, tuple[int, int]] = {}
        for s in run.scans:
            for h, (grp, lo, hi) in s.grp_host.items():
                m = np.isin(slot(grp), slots)
                if m.any():
                    hosts[h] = (int(lo[m].min()), int(hi[m].max()) + 1)
        end_carry, launch_carry = {}, {}
        for ri in range(n_ranks):
            before = slots.min() if len(slots) else 0
            if (rows[ri, :before] > 0).any():
                end_carry[ri] = int(max_end[ri, :before].max())
            if a > 0 and (l_max[ri, :a] > small).any():
                launch_carry[ri] = int(l_max[ri, :a].max())
        windows.append(Window(wi, a, b, tracks, hosts, end_carry, launch_carry, int(rows[:, slots].sum())))
    return windows


def _run_groups(step: np.ndarray) -> np.ndarray:
    """Group of each run of a track: its step, or the step of the run before it (-2 before the first step)."""
    last = np.maximum.accumulate(np.where(step >= 0, np.arange(len(step)), -1))
    return np.where(last >= 0, step[np.maximum(last, 0)], -2)
