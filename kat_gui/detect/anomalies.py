"""The anomaly table (``detect/anomalies``): the GPU events each finding blames, one row per event.

Each analysis contributes :class:`AnomalyPart` s while it emits findings: rows of ``RunFrame.gpu``, their
role (``ROOT``: the event the fault slowed; ``SYMPTOM``: a peer's collective kernel that only waited), the
finding's index and a score per row. :func:`anomaly_table` merges them into store columns
(:data:`ANOMALY_COLUMNS`): an event blamed twice keeps its root role over a symptom, then the more
confident finding. Times are ns; scores are unitless (noise units, ratios, or µs for launch waits: see the
function that made them).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

import numpy as np

from kat_gui.events import COMPONENTS

if TYPE_CHECKING:  # the analyses hand themselves in; no import cycle at run time
    from kat_gui.detect.analysis import RunAnalysis

ANOMALY_COLUMNS = {
    "track": np.int32,
    "index": np.int64,
    "rank": np.int32,
    "device": np.int32,
    "stream": np.int64,
    "name": np.int32,
    "start_ns": np.int64,
    "end_ns": np.int64,
    "role": np.uint8,
    "component": np.uint8,
    "score": np.float32,
    "finding": np.int32,
    "wait_ns": np.int64,  # symptoms: the wait the fault added (``symptom_rows``; hangs: beyond usual); else 0
}
ROOT, SYMPTOM = 1, 2

LAUNCH_WAIT_NS = 1_000  # a GPU idle gap that grew by at least this waited for a later launch
# A peer's collective is a symptom when the culprit's fault made it wait longer than this (``symptom_rows``): 2 µs
# is about twice the clock-alignment residual of matched collectives and of kernel launch latency, below which
# a wait is not one a reader can act on (and not one the fault can be told to have caused).
SYMPTOM_MIN_WAIT_NS = 2_000
SYMPTOM_NOISE_K = 3.0  # ... and the culprit's added lateness more than this many standard errors (dev seeds)


class AnomalyPart(NamedTuple):
    """Rows of ``RunFrame.gpu`` that one finding blames, with one role and a score per row.

    A streamed analysis (``kat_gui.detect.streamed``) uses row keys instead of row numbers (ordered the same
    way), and may hand out a part whose ``rows`` is a :class:`RowQuery` still to be resolved
    (``resolve_parts``)."""

    rows: np.ndarray
    role: int  # ROOT or SYMPTOM
    finding: int  # index of the finding in emission order (renumbered by confidence in anomaly_table)
    score: np.ndarray
    wait_ns: np.ndarray | None = None  # symptoms: the wait the fault added per row (None: 0)


class RowQuery(NamedTuple):
    """The GPU events of one rank (``rank_idx``, an index into ``RunFrame.ranks``) in the step indices
    ``s0..s1`` (inclusive), of the classes ``classes`` (``kat_gui.detect.classify`` codes; empty: any)."""

    rank_idx: int
    s0: int
    s1: int
    classes: tuple[int, ...] = ()


ROW_COLUMNS = ("track", "index", "rank", "device", "stream", "name", "start_ns", "end_ns")


def scored_rows(run: RunAnalysis, mask: np.ndarray, finding: int, sigma: float) -> AnomalyPart:
    """Root rows of ``mask`` scored by their log ratio to peers in units of ``sigma`` (0 where unmatched)."""
    rows = np.flatnonzero(mask)
    score = np.zeros(len(rows))
    for pm in run.peer_matches.values():
        pos = np.searchsorted(pm.rows, rows)
        pos_c = np.minimum(pos, max(len(pm.rows) - 1, 0))
        if len(pm.rows):
            hit = pm.rows[pos_c] == rows
            score[hit] = np.nan_to_num(pm.log_ratio[pos_c[hit]]) / max(sigma, 1e-9)
    return AnomalyPart(rows, ROOT, finding, score)


def launch_wait_rows(run: RunAnalysis, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows of ``mask`` whose GPU sat idle before them longer than the same op's on peers (by at least
    ``LAUNCH_WAIT_NS``): with a slow host, the GPU waits for each launch, so these instances are the ones the
    host delayed. Returns (rows, score = grown gap in µs)."""
    gaps = run.idle_gaps
    grown = gaps.own_ns - gaps.peer_ns
    sel = mask & (grown >= LAUNCH_WAIT_NS)
    rows = np.flatnonzero(sel)
    return rows, grown[rows] / 1e3


def symptom_rows(
    run: RunAnalysis, cand: np.ndarray, culprit: int, s0: int, s1: int, host: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Which candidate members ``cand`` (a mask over ``run.collectives`` members: peers' collectives that
    waited for rank ``culprit`` in step indices ``s0..s1``) are symptoms, and the wait the culprit's fault added
    to each (ns).

    Healthy waits are dominated by host-paced arrival skew (often ms, docs/detection.md), so a peer's own wait
    history is too noisy to see a few µs in. The fault's share is read from the culprit instead: per
    collective (name), how much later the culprit arrives in the window than it does at that collective in the
    run's steps outside the window (its lateness against the instance's lower-median arrival; without 3 such
    steps, against the peers, lateness 0). That added lateness counts only when it exceeds the run's noise
    (``SYMPTOM_NOISE_K`` standard errors of the difference of medians) and ``SYMPTOM_MIN_WAIT_NS``. A peer
    waited that much longer, but never more than the culprit's lead over the instance's second-last arrival
    (without the culprit it would still have waited for that one). A fault on the GPU side (``host`` False) can
    only delay a collective the culprit's GPU was still busy before: one that started as soon as the host
    launched it would have started then anyway, so the added lateness is also capped by how much longer than
    the culprit's usual launch latency (its 5th percentile over the run) the collective waited after its
    launch. A member is a symptom when this added wait exceeds ``SYMPTOM_MIN_WAIT_NS``. Returns (mask, added
    wait ns)."""
    co = run.collectives
    n_mem = len(co.rank)
    if not cand.any():
        return cand, np.zeros(n_mem, np.int64)
    n_inst = len(co.skew_ns)
    # Lead of the last arrival over the second-last, per instance.
    second = np.full(n_inst, -np.inf)
    not_last = ~co.is_last
    np.maximum.at(second, co.inst[not_last], co.start_ns[not_last].astype(np.float64))
    lead = np.where(np.isfinite(second), co.last_start_ns.astype(np.float64) - second, 0.0)
    # The culprit's added lateness per collective name.
    mine = co.rank == culprit
    step = run.coll_step_idx[co.inst]
    inside = (step >= s0) & (step <= s1)
    outside = (step >= 0) & ~inside
    name = run.gpu_values("name", co.row[mine]).astype(np.int64)
    late = co.late_ns[mine].astype(np.float64)
    in_m, out_m, inst_m = inside[mine], outside[mine], co.inst[mine]
    added_inst = np.zeros(n_inst)
    for nm in np.unique(name):
        sel = name == nm
        lin, lout = late[sel & in_m], late[sel & out_m]
        if len(lin) < 3:
            continue
        var = _robust_sigma(lin) ** 2 / len(lin)
        delta = float(np.median(lin))
        if len(lout) >= 3:
            delta -= float(np.median(lout))
            var += _robust_sigma(lout) ** 2 / len(lout)
        se = 1.2533 * float(np.sqrt(var))  # standard error of a median, normal approximation
        if delta > max(float(SYMPTOM_MIN_WAIT_NS), SYMPTOM_NOISE_K * se):
            added_inst[inst_m[sel & in_m]] = delta
    if not host and run.any_launch:
        launch = run.collective_launch_ns()[mine].astype(np.float64)
        start = run.gpu_values("start_ns", co.row[mine]).astype(np.float64)
        known = launch >= 0
        if known.any():
            slack = start - launch
            base = float(np.percentile(slack[known], 5))
            cap = np.where(known, np.maximum(slack - base, 0.0), np.inf)
            added_inst[inst_m] = np.minimum(added_inst[inst_m], cap)
    added = np.minimum(added_inst, lead)[co.inst]
    keep = cand & (added > SYMPTOM_MIN_WAIT_NS)
    return keep, np.rint(np.where(keep, added, 0.0)).astype(np.int64)


def _robust_sigma(x: np.ndarray) -> float:
    return 1.4826 * float(np.median(np.abs(x - np.median(x)))) if len(x) else 0.0


def anomaly_table(
    run: RunAnalysis, findings: list[dict], parts: list[AnomalyPart], remap: dict[int, int]
) -> dict[str, np.ndarray]:
    """The store columns of the anomaly rows, ordered by start time. ``findings`` are already sorted;
    ``remap`` maps a part's emission-order finding index to the finding's final id."""
    parts = run.resolve_parts(parts)
    if parts:
        rows = np.concatenate([part.rows for part in parts]).astype(np.int64)
        role = np.concatenate([np.full(len(part.rows), part.role, np.uint8) for part in parts])
        fid = np.concatenate([np.full(len(part.rows), remap[part.finding], np.int32) for part in parts])
        score = np.concatenate([np.asarray(part.score, np.float64) for part in parts])
        wait = np.concatenate(
            [
                np.zeros(len(part.rows), np.int64)
                if part.wait_ns is None
                else np.asarray(part.wait_ns, np.int64)
                for part in parts
            ]
        )
    else:
        rows = np.zeros(0, np.int64)
        role = np.zeros(0, np.uint8)
        fid = np.zeros(0, np.int32)
        score = np.zeros(0)
        wait = np.zeros(0, np.int64)
    # One row per event: a root beats a symptom, then the more confident finding (lower id).
    order = np.lexsort((fid, role, rows))
    rows, role, fid, score, wait = rows[order], role[order], fid[order], score[order], wait[order]
    keep = np.r_[True, rows[1:] != rows[:-1]] if len(rows) else np.zeros(0, bool)
    rows, role, fid, score, wait = rows[keep], role[keep], fid[keep], score[keep], wait[keep]
    comp = np.array([COMPONENTS.index(f["component"]) for f in findings], dtype=np.uint8)
    g = run.row_columns(rows, ROW_COLUMNS)
    out = {
        "track": g["track"].astype(np.int32),
        "index": g["index"].astype(np.int64),
        "rank": g["rank"].astype(np.int32),
        "device": g["device"].astype(np.int32),
        "stream": g["stream"].astype(np.int64),
        "name": g["name"].astype(np.int32),
        "start_ns": g["start_ns"].astype(np.int64),
        "end_ns": g["end_ns"].astype(np.int64),
        "role": role.astype(np.uint8),
        "component": comp[fid] if len(fid) else np.zeros(0, np.uint8),
        "score": np.nan_to_num(score, nan=0.0).astype(np.float32),
        "finding": fid.astype(np.int32),
        "wait_ns": wait.astype(np.int64),
    }
    o = np.argsort(out["start_ns"], kind="stable")
    return {k: v[o] for k, v in out.items()}
