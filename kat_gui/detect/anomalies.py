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
}
ROOT, SYMPTOM = 1, 2

LAUNCH_WAIT_NS = 1_000  # a GPU idle gap that grew by at least this waited for a later launch


class AnomalyPart(NamedTuple):
    """Rows of ``RunFrame.gpu`` that one finding blames, with one role and a score per row.

    A streamed analysis (``kat_gui.detect.streamed``) uses row keys instead of row numbers (ordered the same
    way), and may hand out a part whose ``rows`` is a :class:`RowQuery` still to be resolved
    (``resolve_parts``)."""

    rows: np.ndarray
    role: int  # ROOT or SYMPTOM
    finding: int  # index of the finding in emission order (renumbered by confidence in anomaly_table)
    score: np.ndarray


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
    else:
        rows = np.zeros(0, np.int64)
        role = np.zeros(0, np.uint8)
        fid = np.zeros(0, np.int32)
        score = np.zeros(0)
    # One row per event: a root beats a symptom, then the more confident finding (lower id).
    order = np.lexsort((fid, role, rows))
    rows, role, fid, score = rows[order], role[order], fid[order], score[order]
    keep = np.r_[True, rows[1:] != rows[:-1]] if len(rows) else np.zeros(0, bool)
    rows, role, fid, score = rows[keep], role[keep], fid[keep], score[keep]
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
    }
    o = np.argsort(out["start_ns"], kind="stable")
    return {k: v[o] for k, v in out.items()}
