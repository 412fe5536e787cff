"""Where a finding sits in the run's topology: its node/edge ids and its component id.

A finding names a component (``gpu``, ``hbm``, ``pcie``, ``nvlink``, ``nic``, ``cpu``, ``unknown``) and the
ranks it concerns; ``kat_gui.topology.component_node`` maps that to node or edge ids of the topology graph
(``RunFrame.topology``, parsed once per frame). Without a topology, or when the mapping fails, the nodes are
``GPU<rank>``. No units: ids are strings.
"""

from __future__ import annotations

from kat_gui.detect.frame import RunFrame


def topology_graph(fr: RunFrame):
    """The frame's topology as a graph (cached on the frame), or None without a topology or when it does not
    parse."""
    if fr.topology is None:
        return None
    if not hasattr(fr, "_graph_cache"):
        try:
            from kat_gui.topology import from_json

            fr._graph_cache = from_json(fr.topology)  # type: ignore[attr-defined]
        except Exception:
            fr._graph_cache = None  # type: ignore[attr-defined]
    return fr._graph_cache  # type: ignore[attr-defined]


def finding_nodes(fr: RunFrame, comp: str, ranks: list[int]) -> list[str]:
    """The topology node/edge ids of component ``comp`` of ``ranks`` (``GPU<rank>`` without a topology)."""
    g = topology_graph(fr)
    if g is None or comp == "unknown":
        return [f"GPU{r}" for r in ranks]
    try:
        from kat_gui.topology import component_node

        return list(component_node(g, comp, ranks=ranks))
    except Exception:
        return [f"GPU{r}" for r in ranks]


def component_id(fr: RunFrame, comp: str, ranks: list[int]) -> str:
    """The one id a finding is filed under: ``GPU<rank>`` for a single rank's gpu or hbm, else its first
    node (or ``GPU<first rank>``, or "" without ranks)."""
    nodes = finding_nodes(fr, comp, ranks)
    if comp in ("gpu", "hbm") and len(ranks) == 1:
        return f"GPU{ranks[0]}"
    return nodes[0] if nodes else (f"GPU{ranks[0]}" if ranks else "")
