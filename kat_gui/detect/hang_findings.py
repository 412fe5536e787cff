"""Hang findings: one rank stops issuing GPU work while its peers sit in a collective that never completes.

A rank is silent when its last GPU event ends more than 5 typical step lengths (the median of
``RunAnalysis.step_len_ns``) before the run's last end; exactly one rank must be silent, and its peers must
hold a collective kernel after that point longer than 20 x the run's median collective duration. Timing
cannot tell a fatal GPU memory error (Xid 48/63/94, reported first as ``hbm``) from the GPU itself falling
over (Xid 79 or a driver fault, reported second as ``gpu``): both are emitted for the same event.
Times in ns.
"""

from __future__ import annotations

import numpy as np

from kat_gui.detect.analysis import RunAnalysis
from kat_gui.detect.anomalies import SYMPTOM, AnomalyPart
from kat_gui.detect.placement import component_id, finding_nodes


def hang_findings(run: RunAnalysis, findings: list[dict], parts: list[AnomalyPart]) -> None:
    """Append the hang finding and its alternative cause (when there is a hang) to ``findings``."""
    fr = run.frame
    if run.n_ranks < 2 or not fr.n_gpu:
        return
    last_end_ns = run.last_end_ns_by_rank()
    run_end_ns = int(last_end_ns.max())
    typical_step_ns = float(np.median(run.step_len_ns))
    stopped = np.flatnonzero(run_end_ns - last_end_ns > 5 * typical_step_ns)
    if len(stopped) != 1 or run.n_ranks - len(stopped) < 1:
        return
    ri = int(stopped[0])
    rank = int(fr.ranks[ri])
    # Peers' longest collective near the end must dwarf the usual instance.
    c_rows, c_rank_idx, c_start_ns, c_end_ns = run.collective_class_rows()
    tail = (c_end_ns > last_end_ns[ri]) & (c_rank_idx != ri)
    if not tail.any():
        return
    dur_ns = c_end_ns - c_start_ns
    usual_ns = float(np.median(dur_ns)) if len(c_rows) else 0.0
    hung = tail & (dur_ns > 20 * max(usual_ns, 1.0))
    if not hung.any():
        return
    fid = len(findings)
    sel = np.flatnonzero(hung)
    rows = c_rows[sel]
    score = (dur_ns[sel] / max(usual_ns, 1.0)).astype(np.float64)
    parts.append(AnomalyPart(rows, SYMPTOM, fid, score, (dur_ns[sel] - usual_ns).astype(np.int64)))
    findings.append(
        {
            "component": "hbm",
            "component_id": component_id(fr, "hbm", [rank]),
            "ranks": [rank],
            "confidence": 0.6,
            "start_ns": int(last_end_ns[ri]),
            "end_ns": run_end_ns,
            "summary": f"rank {rank} stops issuing GPU work while its peers hang in a collective "
            f"({dur_ns[sel].max() / 1e6:.1f} ms); a fatal GPU memory error (Xid 48/63/94) is the usual "
            "cause",
            "kind": "timing",
            "nodes": finding_nodes(fr, "hbm", [rank]),
            "evidence": {
                "silent_ns": int(run_end_ns - last_end_ns[ri]),
                "hung_collectives": int(len(rows)),
                "usual_collective_ns": usual_ns,
            },
            "reason": "hang: one rank silent, peers blocked",
        }
    )
    # Timing cannot tell a fatal memory error from the GPU itself falling over (Xid 79, a driver or SM
    # fault): the GPU is offered as the second candidate for the same event, ranked below.
    alt = dict(findings[-1])
    alt.update(
        component="gpu",
        component_id=component_id(fr, "gpu", [rank]),
        confidence=0.55,
        nodes=finding_nodes(fr, "gpu", [rank]),
        summary=f"rank {rank} stops issuing GPU work while its peers hang in a collective; the GPU itself "
        f"(fallen off the bus, Xid 79, or a driver fault) is the other usual cause",
        reason="hang: alternative cause of the same event",
    )
    findings.append(alt)
