"""Streamed detection, the window passes: each task reads one window of steps (every rank) and returns partial
statistics that ``streamed.py`` merges exactly.

A window is a range of step indices; on each GPU track its rows are a contiguous range (the plan checks that
steps never go down along a track). A task reads those rows, the runtime calls that launched them, decodes
each row's step from the track's runs (``stream_scan.RankScan.runs``) and finds its launch
(``align.launch_times``), so every row carries what ``RunAnalysis`` gives it over the whole run. Then, by stage:

- ``"stats"``: per peer signal (compute, memory, copy kernels; launch intervals; GPU idle gaps) what the
  global choice of matching needs (:class:`PeerStats`), and the sums behind the link model's step covariates
  (``history.covariate_sums``);
- ``"refs"``: each row's peer reference under the chosen matching (:class:`PeerPlan`), reduced to the counts
  and range of the finite log ratios;
- ``"cells"``: per signal the [rank, step] cells of the window (median with the run's value range, or the
  regular subsample that sets the winsorising bounds), ``"winsor"``: the winsorised cells;
- ``"rows"``: the rows of the findings' queries with their scores and store columns.

Why the merge is exact: every cell, match group and covariate sum belongs to one step, hence to one window,
and is computed from the same rows in the same order as over the whole run; the few numbers that depend on
the whole run (which matching, the range of a sort key, group numbering, a subsample's positions, the launch
and end carried over from earlier windows) are computed first and passed in. Units: ns for times, log
ratios for signal values.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from kat_gui.detect.align import launch_times
from kat_gui.detect.classify import COMPUTE, COPY_HOST, MEMORY, event_classes
from kat_gui.detect.history import covariate_sums
from kat_gui.detect.signals import (
    cell_positions,
    cell_values,
    exact_groups,
    exact_reference,
    name_ordinals,
    positional_match,
)
from kat_gui.detect.stream_scan import GPU_KINDS, RunLayout, classes, open_store, row_keys
from kat_gui.events import EventKind

WINDOW_COLUMNS = ("start_ns", "end_ns", "kind", "name", "correlation", "coll", "copy_kind", "bytes")
KERNEL_SIGNALS = (("compute", COMPUTE), ("memory", MEMORY), ("copy", COPY_HOST))
SIGNALS = ("compute", "memory", "copy", "launch")  # cell signals read from the events ("late" comes from
# the collectives); "gaps" is a peer match without cells (the launch waits of cpu findings)


@dataclass
class Window:
    """One window of step indices ``[s0, s1)``: per GPU track its row range and its step runs in it, per host
    thread the rows of the runtime calls to read, and per rank index what earlier windows leave behind (the
    last end of its GPU work, its last launch)."""

    index: int
    s0: int
    s1: int
    tracks: dict[int, tuple[int, int, np.ndarray, np.ndarray]]
    hosts: dict[int, tuple[int, int]]
    end_carry: dict[int, int]
    launch_carry: dict[int, int]
    n_rows: int


@dataclass
class StreamContext:
    """What window tasks know of the run: its layout, steps and ranks, and the plans of the stages before."""

    layout: RunLayout
    step_values: np.ndarray
    ranks: np.ndarray
    sigma_floor: float
    launch_signal: bool
    plans: dict = field(default_factory=dict)  # label -> PeerPlan
    cells: dict = field(default_factory=dict)  # label -> ("median", lo, hi) | ("winsor", stride | clip)

    @property
    def n_steps(self) -> int:
        return max(len(self.step_values), 1)

    @property
    def n_ranks(self) -> int:
        return len(self.ranks)


@dataclass
class PeerPlan:
    """How one peer signal is matched over the whole run: ``"positional"``, or ``"exact"`` with the run's
    string-id and ordinal bounds, the range of its values and the number of match groups before each window."""

    mode: str
    n_names: int = 0
    max_ord: int = 0
    base_max: int = 0
    lo: float = 0.0
    hi: float = 0.0
    gid_offset: dict[int, int] = field(default_factory=dict)


@dataclass
class SignalRows:
    """The rows of one peer signal in a window (indices into the window's rows, in row order)."""

    rows: np.ndarray
    step_idx: np.ndarray
    name: np.ndarray
    rank_idx: np.ndarray
    value: np.ndarray


# ---------------------------------------------------------------------------------------------- loading


def load_window(ctx: StreamContext, w: Window, with_bytes: bool = True) -> dict[str, np.ndarray]:
    """The GPU events of a window (every rank), in (track, row) order, with ``key``, ``step``, ``step_idx``,
    ``rank_idx``, ``cls`` and ``launch_ns`` as the whole run's analysis gives them (``bytes`` only
    ``with_bytes``)."""
    columns = WINDOW_COLUMNS if with_bytes else tuple(c for c in WINDOW_COLUMNS if c != "bytes")
    lay = ctx.layout
    name_class, copy_class, _ = classes(lay)
    parts = []
    hosts = []
    with open_store(lay) as store:
        for t in sorted(w.tracks):
            lo, hi, run_row0, run_step = w.tracks[t]
            cols = store.rows(t, lo, hi, columns)
            keep = np.isin(cols["kind"], GPU_KINDS)
            idx = lo + np.flatnonzero(keep)
            part = {c: v[keep] for c, v in cols.items()}
            part["track"] = np.full(len(idx), t, np.int32)
            part["index"] = idx.astype(np.int64)
            part["step"] = run_step[np.searchsorted(run_row0, idx, side="right") - 1]
            parts.append(part)
        for h in sorted(w.hosts):
            lo, hi = w.hosts[h]
            cols = store.rows(h, lo, hi, ("kind", "correlation", "start_ns"))
            keep = (cols["kind"] == EventKind.RUNTIME) & (cols["correlation"] >= 0)
            hosts.append(
                {
                    "rank": np.full(int(keep.sum()), lay.track_rank[h], np.int32),
                    "correlation": cols["correlation"][keep],
                    "start_ns": cols["start_ns"][keep],
                }
            )
    g = {c: np.concatenate([p[c] for p in parts]) for c in (*columns, "track", "index", "step")}
    track = g["track"]
    g["rank"] = lay.track_rank[track].astype(np.int32)
    g["device"] = lay.track_device[track].astype(np.int32)
    g["stream"] = lay.track_stream[track].astype(np.int64)
    g["cls"] = event_classes(g["kind"], g["name"], g["coll"], g["copy_kind"], name_class, copy_class)
    la = {c: np.concatenate([np.zeros(0, dt), *(h[c] for h in hosts)]) for c, dt in
          (("rank", np.int32), ("correlation", np.int64), ("start_ns", np.int64))}  # fmt: skip
    g["launch_ns"] = launch_times(replace(lay.frame, gpu=g, launch=la))
    st = g["step"]
    g["step_idx"] = np.where(st >= 0, np.searchsorted(ctx.step_values, st), -1)
    g["rank_idx"] = np.searchsorted(ctx.ranks, g["rank"])
    g["key"] = row_keys(track, g["index"])
    return g


def signal_rows(
    ctx: StreamContext, w: Window, g: dict[str, np.ndarray], gaps: bool = True
) -> dict[str, SignalRows]:
    """The window's rows of every peer signal, valued as ``RunAnalysis`` values them (durations, launch
    intervals, idle gaps + 1 ns: only with ``gaps``), with the launch and the end carried over from earlier
    windows."""
    out = {}
    dur = (g["end_ns"] - g["start_ns"]).astype(np.float64)
    si, ri = g["step_idx"], g["rank_idx"]
    for label, cls in KERNEL_SIGNALS:
        rows = np.flatnonzero((g["cls"] == cls) & (si >= 0))
        out[label] = SignalRows(rows, si[rows], g["name"][rows], ri[rows], dur[rows])
    if ctx.launch_signal:
        # Interval since the rank's previous launch (rows with a launch, in a step), in (rank, launch, row)
        # order; the first of a rank here follows its last launch of earlier windows (none: no interval).
        rows = np.flatnonzero((g["launch_ns"] >= 0) & (si >= 0))
        order = np.lexsort((g["launch_ns"][rows], ri[rows]))
        r_o = rows[order]
        t = g["launch_ns"][r_o]
        same = np.r_[False, ri[r_o][1:] == ri[r_o][:-1]]
        interval = np.where(same, np.r_[0, np.diff(t)], np.nan)
        for j in np.flatnonzero(~same):
            prev = w.launch_carry.get(int(ri[r_o[j]]))
            if prev is not None:
                interval[j] = float(t[j] - prev)
        keep = np.isfinite(interval)
        r_k, iv = r_o[keep], interval[keep]
        r_ks = np.sort(r_k)
        iv_s = iv[np.argsort(r_k, kind="stable")]
        out["launch"] = SignalRows(r_ks, si[r_ks], g["name"][r_ks], ri[r_ks], iv_s)
    if gaps:
        gap = idle_gaps(w, g)
        rows = np.flatnonzero(si >= 0)
        out["gaps"] = SignalRows(rows, si[rows], g["name"][rows], ri[rows], gap[rows] + 1.0)
    return out


def idle_gaps(w: Window, g: dict[str, np.ndarray]) -> np.ndarray:
    """Per row, how long its rank's GPU sat idle before it: its start minus the last end of the rank's earlier
    work (rows in (rank, start, row) order; earlier windows' last end carried in), 0 for a rank's first row.
    One pass for all ranks: each rank's times are lifted into its own band, so a running maximum over the
    sorted rows never mixes ranks (as ``RunAnalysis.idle_gaps`` does over the whole run)."""
    ri = g["rank_idx"]
    gap = np.zeros(len(ri))
    if not len(ri):
        return gap
    order = np.lexsort((g["start_ns"], ri))
    r_o = ri[order].astype(np.int64)
    s_o = g["start_ns"][order]
    e_o = g["end_ns"][order]
    carry = np.full(int(r_o.max()) + 1, -1, np.int64)
    has = np.zeros(len(carry), bool)
    for r, c in w.end_carry.items():
        if r < len(carry):
            carry[r], has[r] = c, True
    t0 = int(min(s_o.min(), e_o.min(), carry[has].min() if has.any() else s_o.min()))
    band = int(max(s_o.max(), e_o.max(), carry[has].max() if has.any() else s_o.max())) - t0 + 1
    lift = r_o * band
    first = np.r_[True, r_o[1:] != r_o[:-1]]
    prev = np.maximum.accumulate(np.r_[-1, (e_o - t0 + lift)[:-1]])  # lower ranks' bands stay below
    before = np.where(first, -1, prev)
    before = np.maximum(before, np.where(has[r_o], carry[r_o] - t0 + lift, -1))
    gap[order] = np.where(before >= 0, np.maximum(s_o - t0 + lift - before, 0), 0)
    return gap


# ---------------------------------------------------------------------------------------------- peer plans


def planned_reference(sr: SignalRows, plan: PeerPlan, w: Window, ctx: StreamContext) -> np.ndarray:
    """Each row's peer reference under the run's plan (``signals.peer_match`` over the whole run)."""
    v = np.maximum(sr.value.astype(np.float64), 1.0)
    if not len(v):
        return np.zeros(0)
    if plan.mode == "positional":
        pos = cell_positions(sr.step_idx, sr.rank_idx, ctx.n_steps)
        _, ref, _ = positional_match(
            sr.step_idx, sr.name, sr.rank_idx, v, ctx.n_ranks, pos, int(pos.max()) + 1, int(sr.step_idx.min())
        )
        return ref
    ordinal = name_ordinals(sr.step_idx, sr.name, sr.rank_idx, plan.n_names, ctx.n_ranks)
    base = sr.step_idx.astype(np.int64) * plan.n_names + sr.name
    gid = exact_groups(base, ordinal, plan.max_ord, plan.base_max)
    ref, _ = exact_reference(gid, v, plan.lo, plan.hi, plan.gid_offset.get(w.index, 0))
    return ref


def peer_stats(sr: SignalRows, g: dict[str, np.ndarray], ctx: StreamContext) -> dict:
    """What the run-wide choice of matching needs from this window's rows of one signal."""
    n = len(sr.rows)
    if not n:
        return {"n": 0}
    v = np.maximum(sr.value.astype(np.float64), 1.0)
    si, ri, name = sr.step_idx, sr.rank_idx, sr.name
    out: dict = {"n": n, "max_step": int(si.max()), "lo": float(np.nanmin(v)), "hi": float(np.nanmax(v))}
    # Positional layout: rows cell by cell in (rank, step) order here, and per track its first and last cell
    # (the run's order also needs each track's cells to follow on from the window before).
    pos = cell_positions(si, ri, ctx.n_steps)
    out["ordered"] = pos is not None
    cell = ri.astype(np.int64) * ctx.n_steps + si
    tr = g["track"][sr.rows]
    brk = np.flatnonzero(np.r_[True, tr[1:] != tr[:-1]])
    ends = np.r_[brk[1:], n] - 1
    out["track_cells"] = (tr[brk].astype(np.int64), cell[brk], cell[ends])
    out["max_pos"] = int(pos.max()) + 1 if pos is not None else 0
    out["major_ok"] = 0
    if pos is not None and 2 <= ctx.n_ranks <= 4096:
        ok, _, _ = positional_match(si, name, ri, v, ctx.n_ranks, pos, out["max_pos"], int(si.min()))
        out["major_ok"] = int(np.count_nonzero(ok))
    # Exact matching: string-id and ordinal bounds, the number of (step, name, ordinal) groups.
    n_names = int(name.max()) + 1
    ordinal = name_ordinals(si, name, ri, n_names, ctx.n_ranks)
    out["max_name"] = n_names - 1
    out["max_ord"] = int(ordinal.max())
    top = si == si.max()
    out["top_name"] = int(name[top].max())
    base = si.astype(np.int64) * n_names + name
    out["n_groups"] = int(exact_groups(base, ordinal, int(ordinal.max()) + 1, int(base.max())).max()) + 1
    return out


# ---------------------------------------------------------------------------------------------- stages


def window_stage(ctx: StreamContext, w: Window, stage: str, queries: list | None = None) -> dict:
    """Task: one stage of one window (see the module docstring)."""
    g = load_window(ctx, w, with_bytes=stage == "stats")
    sig = signal_rows(ctx, w, g, gaps=stage == "stats" or any(q[0] == "wait" for q in queries or []))
    if stage == "stats":
        out = {label: peer_stats(sr, g, ctx) for label, sr in sig.items()}
        dur = np.maximum(g["end_ns"] - g["start_ns"], 1).astype(np.float64)
        kern = np.flatnonzero(np.isin(g["cls"], (COMPUTE, MEMORY)) & (g["step_idx"] >= 0))
        cp = np.flatnonzero(g["cls"] == COPY_HOST)
        out["covariates"] = covariate_sums(
            g["step_idx"][kern],
            np.log(dur[kern]),
            g["name"][kern],
            g["cls"][kern],
            g["step_idx"][cp],
            g["rank_idx"][cp],
            g["bytes"][cp],
            ctx.n_steps,
        )
        return out
    if stage == "rows":
        return _query_rows(ctx, w, g, sig, queries or [])
    out = {}
    for label in SIGNALS:
        if label not in sig or label not in ctx.plans or (stage != "refs" and label not in ctx.cells):
            continue
        sr = sig[label]
        v = np.maximum(sr.value.astype(np.float64), 1.0)
        lr = np.log(v / planned_reference(sr, ctx.plans[label], w, ctx)) if len(v) else np.zeros(0)
        ok = np.isfinite(lr)
        if stage == "refs":
            tr = g["track"][sr.rows[ok]]
            ut, cnt = np.unique(tr, return_counts=True)
            out[label] = {
                "n_ok": int(ok.sum()),
                "lo": float(lr[ok].min()) if ok.any() else np.inf,
                "hi": float(lr[ok].max()) if ok.any() else -np.inf,
                "ok_by_track": dict(zip(ut.tolist(), cnt.tolist(), strict=True)),
            }
            continue
        cell = sr.rank_idx[ok].astype(np.int64) * ctx.n_steps + sr.step_idx[ok]
        mode = ctx.cells[label]
        if stage == "cells" and mode[0] == "median":
            out[label] = _sparse(
                *cell_values(cell, lr[ok], ctx.n_steps * ctx.n_ranks, "median", lo_hi=mode[1])
            )
        elif stage == "cells":  # winsorised: this window's rows of the run's regular subsample
            stride, offsets = mode[1], mode[2][w.index]
            tr = g["track"][sr.rows[ok]]
            brk = np.flatnonzero(np.r_[True, tr[1:] != tr[:-1]]) if len(tr) else np.zeros(0, np.int64)
            lengths = np.diff(np.r_[brk, len(tr)])
            local = np.arange(len(tr)) - np.repeat(brk, lengths)
            base = np.array([offsets.get(int(t), 0) for t in tr[brk]], dtype=np.int64)
            pos = np.repeat(base, lengths) + local
            take = pos % stride == 0
            out[label] = (pos[take], lr[ok][take])
        else:  # "winsor"
            out[label] = _sparse(
                *cell_values(cell, lr[ok], ctx.n_steps * ctx.n_ranks, "winsor", clip=mode[1])
            )
    return out


def _sparse(val: np.ndarray, cnt: np.ndarray, se: np.ndarray) -> tuple[np.ndarray, ...]:
    c = np.flatnonzero(cnt > 0)
    return c, val[c], cnt[c], se[c]


ROW_COLUMNS = ("track", "index", "rank", "device", "stream", "name", "start_ns", "end_ns")


def _query_rows(ctx: StreamContext, w: Window, g: dict, sig: dict[str, SignalRows], queries: list) -> dict:
    """Rows of each query in this window: ``("scored", q, sigma)`` scored by the last peer signal that
    compared them (compute, memory, copy, launch; ``anomalies.scored_rows``), ``("wait", q)`` when their GPU
    idled >= ``LAUNCH_WAIT_NS`` longer than the peers' (``anomalies.launch_wait_rows``)."""
    from kat_gui.detect.anomalies import LAUNCH_WAIT_NS

    n = len(g["key"])
    lr_by = {}
    for label in SIGNALS:
        if label in sig and label in ctx.plans:
            sr = sig[label]
            v = np.maximum(sr.value.astype(np.float64), 1.0)
            lr_by[label] = (sr.rows, np.log(v / planned_reference(sr, ctx.plans[label], w, ctx)))
    grown = None
    out_rows: list = []
    for kind, q, sigma in queries:
        m = (g["step_idx"] >= q.s0) & (g["step_idx"] <= q.s1) & (g["rank_idx"] == q.rank_idx)
        if q.classes:
            m &= np.isin(g["cls"], q.classes)
        if kind == "scored":
            rows = np.flatnonzero(m)
            score = np.zeros(len(rows))
            for rws, lr in lr_by.values():
                pos = np.searchsorted(rws, rows)
                pos_c = np.minimum(pos, max(len(rws) - 1, 0))
                if len(rws):
                    hit = rws[pos_c] == rows
                    score[hit] = np.nan_to_num(lr[pos_c[hit]]) / max(sigma, 1e-9)
        else:
            if grown is None:  # own idle gap minus the matched peers' (NaN outside steps or unmatched)
                peer = np.full(n, np.nan)
                sr = sig["gaps"]
                if "gaps" in ctx.plans and len(sr.rows):
                    peer[sr.rows] = planned_reference(sr, ctx.plans["gaps"], w, ctx) - 1.0
                grown = idle_gaps(w, g) - peer
            rows = np.flatnonzero(m & (grown >= LAUNCH_WAIT_NS))
            score = grown[rows] / 1e3
        out_rows.append((g["key"][rows], score))
    used = np.unique(np.concatenate([np.zeros(0, np.int64), *(k for k, _ in out_rows)]))
    pos = np.searchsorted(g["key"], used)
    cols = {c: g[c][pos] for c in ROW_COLUMNS}
    return {"queries": out_rows, "keys": used, "columns": cols}
