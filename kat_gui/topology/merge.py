"""Several single-host topologies (e.g. one ``nvidia-smi topo -m`` per node) -> one multi-host graph."""

from __future__ import annotations

import os
from collections.abc import Sequence

import networkx as nx

from kat_gui.errors import KatInputError
from kat_gui.topology import model as M
from kat_gui.topology.load import load_topology


def _new_id(g: nx.Graph, n: str, host_map: dict[str, int], rank_off: int, nvs_off: int) -> str:
    d = g.nodes[n]
    kind = d["kind"]
    if kind == "fabric":
        return M.FABRIC
    h = host_map.get(d.get("host"), 0)
    if kind == "host":
        return M.host_id(h)
    if kind == "cpu":
        return M.cpu_id(h, d["numaid"])
    if kind == "pci_switch":
        return M.switch_id(h, n.split(" ", 2)[2])
    if kind == "gpu":
        return M.gpu_id(d["rank"] + rank_off)
    if kind == "nvswitch":
        return M.nvswitch_id(int(n[len("NVSwitch") :]) + nvs_off)
    if kind == "nic":
        return M.nic_id(h, d["name"])
    return n


def merge_hosts(graphs: Sequence[nx.Graph]) -> nx.Graph:
    """Hosts of ``graphs`` side by side, in order (graph 0's hosts first), sharing one ``fabric``.

    Assumes each graph describes different machines. GPUs whose ranks were assumed (``rank_known`` False)
    are renumbered host-major: the second graph's GPU0 becomes rank ``len(GPUs before it)``; ranks a file
    named are kept, and a rank named twice raises ValueError.
    """
    if len(graphs) == 1:
        return graphs[0].copy()
    out = M.new_graph("merged")
    out.graph["sources"] = []
    rank_off_total = 0
    nvs_total = 0
    seen_ranks: set[int] = set()
    for g in graphs:
        host_map = {}
        for host in g.graph.get("hosts") or M.nodes_of(g, "host"):
            host_map[host] = len(out.graph["hosts"]) + len(host_map)
        rank_off = 0 if g.graph.get("ranks_known", True) else rank_off_total
        mapping = {n: _new_id(g, n, host_map, rank_off, nvs_total) for n in g.nodes}
        for n, d in g.nodes(data=True):
            nd = dict(d)
            new = mapping[n]
            if nd.get("host") is not None:
                nd["host"] = M.host_id(host_map.get(nd["host"], 0))
            if nd.get("parent") is not None:
                nd["parent"] = mapping[nd["parent"]]
            if nd["kind"] == "gpu":
                nd["rank"] = nd["rank"] + rank_off
                if nd["rank"] in seen_ranks:
                    raise ValueError(f"rank {nd['rank']} appears in two topology files")
                seen_ranks.add(nd["rank"])
            if nd.get("label") == n:
                nd["label"] = new
            if new in out and new != M.FABRIC:
                raise ValueError(f"node {new} appears in two topology files")
            out.add_node(new, **nd)
        for u, v, d in g.edges(data=True):
            ed = dict(d)
            if ed.get("parent") is not None:
                ed["parent"] = mapping[ed["parent"]]
            out.add_edge(mapping[u], mapping[v], **ed)
        out.graph["hosts"].extend(M.host_id(h) for h in sorted(set(host_map.values())))
        for note in g.graph.get("notes", []):
            M.add_note(out, note)
        if "relations" in g.graph:
            out.graph.setdefault("relations", []).extend(
                [mapping[a], mapping[b], c] for a, b, c in g.graph["relations"]
            )
        out.graph["sources"].append([g.graph.get("source"), g.graph.get("source_file")])
        out.graph["inferred"] = out.graph["inferred"] or bool(g.graph.get("inferred"))
        out.graph["ranks_known"] = out.graph["ranks_known"] and bool(g.graph.get("ranks_known", True))
        rank_off_total += len(M.nodes_of(g, "gpu"))
        nvs_total += len(M.nodes_of(g, "nvswitch"))
    return out


def load_topologies(paths: Sequence[str | os.PathLike]) -> nx.Graph:
    """One graph from one topology file per host, hosts in the order given (host0 = ``paths[0]``)."""
    if not paths:
        raise KatInputError(None, "no topology file given")
    graphs = [load_topology(p) for p in paths]
    try:
        return merge_hosts(graphs)
    except ValueError as exc:
        raise KatInputError(paths[-1], f"cannot combine with the other topology files: {exc}") from None
