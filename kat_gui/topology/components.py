"""Which nodes and edges of the hardware graph a finding points at (what the GUI colours)."""

from __future__ import annotations

from collections.abc import Iterable

import networkx as nx

from kat_gui.topology import model as M

NVLINK_EDGE_KINDS = ("nvlink", "nvswitch")


def _host_name(host: str | int | None) -> str | None:
    """``1``, ``"1"``, ``"host1"`` and ``"node1"`` all name ``host1``."""
    if host is None:
        return None
    if isinstance(host, int):
        return M.host_id(host)
    s = str(host)
    for prefix in ("host", "node"):
        if s.startswith(prefix) and s[len(prefix) :].isdigit():
            return M.host_id(int(s[len(prefix) :]))
    return M.host_id(int(s)) if s.isdigit() else s


def _edges(g: nx.Graph, kinds: Iterable[str], among: set[str] | None = None, touching: str | None = None):
    kinds = tuple(kinds)
    nodes = [touching] if touching is not None else None
    out = []
    for u, v, d in g.edges(nodes, data=True):
        if d.get("kind") not in kinds:
            continue
        if among is not None and not (u in among and v in among):
            continue
        out.append((u, v))
    return out


def _nics_near(g: nx.Graph, gpu: str) -> list[str]:
    """NICs under the GPU's closest PCIe switch, else on its CPU, else on its host."""
    nics = M.nodes_of(g, "nic", g.nodes[gpu]["host"])
    cur = g.nodes[gpu].get("parent")
    while cur is not None:
        near = [n for n in nics if M.ancestor(g, n, g.nodes[cur]["kind"]) == cur]
        if near:
            return near
        if g.nodes[cur]["kind"] in ("cpu", "host"):
            break
        cur = g.nodes[cur].get("parent")
    return nics


def component_targets(
    graph: nx.Graph,
    component: str,
    ranks: Iterable[int] | None = None,
    host: str | int | None = None,
    component_id: str | None = None,
) -> dict[str, list]:
    """``{"nodes": [node ids], "edges": [(u, v)]}`` to highlight for a finding.

    ``component_id`` wins when it names a node (``"GPU3"``) or an edge (``edge_id``) of the graph. Otherwise:
    gpu/hbm -> the ranks' GPUs; nvlink -> NVLink edges among the ranks' GPUs (one rank: all its NVLink and
    NVSwitch edges; GPUs joined only through NVSwitches: their NVSwitch edges); pcie -> each GPU's uplink
    edge to its parent; cpu -> the CPU/NUMA node each GPU hangs off; nic -> the NICs nearest each GPU (same
    PCIe switch, else same CPU, else same host). With no ranks, ``host`` limits the whole class to one
    host; with neither, every node/edge of the class. Ranks with no GPU in the graph are ignored.
    """
    g = graph
    if component_id:
        if component_id in g:
            return {"nodes": [component_id], "edges": []}
        e = M.parse_edge_id(component_id)
        if e is not None and g.has_edge(*e):
            return {"nodes": [], "edges": [e]}
    rank_list = [int(r) for r in ranks] if ranks is not None else []
    gpus = [n for n in (M.gpu_of_rank(g, r) for r in rank_list) if n is not None]
    hostname = _host_name(host)
    nodes: list[str] = []
    edges: list[tuple[str, str]] = []
    if not gpus:
        if rank_list:
            return {"nodes": [], "edges": []}
        in_host = (lambda n: g.nodes[n].get("host") == hostname) if hostname else (lambda n: True)
        kind_of = {"gpu": "gpu", "hbm": "gpu", "cpu": "cpu", "nic": "nic"}
        if component in kind_of:
            nodes = [n for n in M.nodes_of(g, kind_of[component]) if in_host(n)]
        elif component in ("nvlink", "pcie"):
            kinds = NVLINK_EDGE_KINDS if component == "nvlink" else ("pcie",)
            edges = [(u, v) for u, v in _edges(g, kinds) if in_host(u) or in_host(v)]
        return {"nodes": nodes, "edges": edges}
    if component in ("gpu", "hbm"):
        nodes = gpus
    elif component == "nvlink":
        if len(gpus) >= 2:
            edges = _edges(g, ("nvlink",), among=set(gpus))
            if not edges:
                edges = [e for gpu in gpus for e in _edges(g, ("nvswitch",), touching=gpu)]
        if not edges:
            edges = [e for gpu in gpus for e in _edges(g, NVLINK_EDGE_KINDS, touching=gpu)]
    elif component == "pcie":
        for gpu in gpus:
            parent = g.nodes[gpu].get("parent")
            if parent is not None and g.has_edge(gpu, parent):
                edges.append((parent, gpu))
    elif component == "cpu":
        nodes = [c for c in (M.ancestor(g, gpu, "cpu") for gpu in gpus) if c is not None]
    elif component == "nic":
        nodes = [n for gpu in gpus for n in _nics_near(g, gpu)]
    nodes = list(dict.fromkeys(nodes))
    edges = list(dict.fromkeys(tuple(sorted(e)) for e in edges))
    return {"nodes": nodes, "edges": edges}


def component_node(
    graph: nx.Graph,
    component: str,
    rank: int | Iterable[int] | None = None,
    *,
    ranks: Iterable[int] | None = None,
    host: str | int | None = None,
    component_id: str | None = None,
) -> list[str]:
    """Node ids and edge ids (``"u -- v"``, see ``edge_id``/``parse_edge_id``) to colour for a finding.

    ``rank`` and ``ranks`` are merged (a finding names one rank or several); see ``component_targets`` for
    the mapping of each component class.
    """
    all_ranks: list[int] = []
    if rank is not None:
        all_ranks.extend([int(rank)] if isinstance(rank, int) else [int(r) for r in rank])
    if ranks is not None:
        all_ranks.extend(int(r) for r in ranks)
    t = component_targets(
        graph, component, ranks=all_ranks if all_ranks else None, host=host, component_id=component_id
    )
    return list(t["nodes"]) + [M.edge_id(u, v) for u, v in t["edges"]]
