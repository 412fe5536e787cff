"""Topology findings: anomalies of an observed topology file (fewer links, a narrower PCIe link...) as
findings of kind ``topology``.

Only a topology read from a file counts (``kat_gui.topology.topology_anomalies`` ignores an inferred
default). These are configuration facts, not timings: they carry no time window (``start_ns`` = ``end_ns`` =
0) and a fixed confidence.
"""

from __future__ import annotations

from kat_gui.detect.frame import RunFrame
from kat_gui.detect.placement import topology_graph

TOPOLOGY_CONFIDENCE = 0.7  # an observed configuration fact (fewer links, narrower PCIe), not a timing


def topology_findings(fr: RunFrame, findings: list[dict]) -> None:
    """Anomalies of an observed topology file (never of an inferred default) as findings of kind topology."""
    g = topology_graph(fr)
    if g is None:
        return
    try:
        from kat_gui.topology import edge_id, topology_anomalies

        found = topology_anomalies(g)
    except Exception:
        return
    for t in found:
        nodes = list(t.get("nodes", [])) + [edge_id(u, v) for u, v in t.get("edges", [])]
        findings.append(
            {
                "component": t.get("component", "unknown"),
                "component_id": t.get("component_id") or (nodes[0] if nodes else ""),
                "ranks": [int(r) for r in t.get("ranks", [])],
                "confidence": TOPOLOGY_CONFIDENCE,
                "start_ns": 0,
                "end_ns": 0,
                "summary": t.get("summary", "topology anomaly"),
                "kind": "topology",
                "nodes": nodes,
                "evidence": dict(t.get("evidence", {})),
            }
        )
