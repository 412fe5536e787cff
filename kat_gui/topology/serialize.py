"""The hardware graph as JSON (what the store persists): networkx node-link data plus a format/version tag.

Every node/edge/graph attribute the parsers write is JSON-native (str, int, float, bool, None, lists and
dicts of those), so ``from_json(to_json(g))`` gives back an equal graph.
"""

from __future__ import annotations

import networkx as nx

from kat_gui.topology.model import TOPOLOGY_VERSION

JSON_FORMAT = "kat.topology"


def _node_link_data(g: nx.Graph) -> dict:
    try:
        return nx.node_link_data(g, edges="edges")
    except TypeError:  # networkx < 3.4 names the keyword ``link``
        return nx.node_link_data(g, link="edges")


def _node_link_graph(data: dict) -> nx.Graph:
    try:
        return nx.node_link_graph(data, directed=False, multigraph=False, edges="edges")
    except TypeError:
        return nx.node_link_graph(data, directed=False, multigraph=False, link="edges")


def to_json(graph: nx.Graph) -> dict:
    """``{"format": "kat.topology", "version": 1, "graph": <node-link data>}``."""
    return {"format": JSON_FORMAT, "version": TOPOLOGY_VERSION, "graph": _node_link_data(graph)}


def from_json(obj: dict) -> nx.Graph:
    """Inverse of :func:`to_json`. Raises ValueError on another format or a newer version."""
    if not isinstance(obj, dict) or obj.get("format") != JSON_FORMAT:
        raise ValueError(f"not a {JSON_FORMAT} object")
    version = obj.get("version")
    if not isinstance(version, int) or version > TOPOLOGY_VERSION:
        raise ValueError(
            f"topology JSON version {version!r} is newer than this KAT understands ({TOPOLOGY_VERSION})"
        )
    return _node_link_graph(obj["graph"])
