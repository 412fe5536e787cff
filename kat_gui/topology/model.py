"""The hardware graph: node ids, node/edge kinds, and the helpers every parser uses to build it.

The graph is a plain ``nx.Graph`` (one edge per node pair, self-loops allowed). Bonded NVLinks between one
pair are one edge with a ``count`` attribute, never parallel edges, so a ``MultiGraph`` buys nothing and
costs every consumer a key. Undirected, but every non-host node records the node it hangs off in its
``parent`` attribute (host <- cpu <- pci_switch <- gpu/nic), which is how "the CPU a GPU hangs off" and
"the PCIe uplink of a GPU" are found without guessing edge directions.

Node ids are stable strings that findings and the GUI can name:
``host0``, ``CPU host0 numa1``, ``PCIe host0 sw0`` / ``PCIe host0 ffff:ff:01.0``, ``GPU3`` (by rank),
``NVSwitch0``, ``NIC mlx5_0`` (``NIC host1 mlx5_0`` on hosts after the first), ``fabric``.

GPU ranks: every GPU node carries an int ``rank``. When the source names ranks (NCCL XML ``rank=``, or
``default_topology``) ``rank_known`` is True. Otherwise ranks are *assumed* to be GPU ordinals in
host-then-device order (rank r = device r on a single host, as with one process per GPU) and
``rank_known`` is False; ``graph.graph["ranks_known"]`` says which holds for the whole graph.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

import networkx as nx

TOPOLOGY_VERSION = 1

NODE_KINDS = ("host", "cpu", "pci_switch", "gpu", "nvswitch", "nic", "fabric")
# host: containment host->cpu; sys: CPU<->CPU interconnect on one host (UPI/xGMI); pcie: tree links;
# nvlink: GPU<->GPU (or GPU<->CPU) bonded NVLinks; nvswitch: GPU<->NVSwitch links; net: NIC<->fabric.
EDGE_KINDS = ("host", "sys", "node", "pcie", "nvlink", "nvswitch", "net")

# PCI class codes (NCCL XML ``class``), compared on their first 4 hex digits after 0x.
PCI_CLASS_BRIDGE = "0604"
PCI_CLASS_GPU = ("0302", "0300")  # 3D controller, VGA controller
PCI_CLASS_NIC = ("0207", "0200")  # InfiniBand, Ethernet
PCI_CLASS_NVSWITCH = "0680"
GPU_VENDORS = ("0x10de", "0x1002")  # NVIDIA, AMD

# NVLink generation by CUDA SM version (NCCL XML ``sm``) and its per-link, per-direction bandwidth in GB/s.
NVLINK_GEN_BY_SM = {60: 1, 70: 2, 75: 2, 80: 3, 86: 3, 90: 4, 100: 5, 103: 5}
NVLINK_PER_LINK_GBYTE_S = {1: 20.0, 2: 25.0, 3: 25.0, 4: 25.0, 5: 50.0}

FABRIC = "fabric"
EDGE_SEP = " -- "


def host_id(h: int) -> str:
    return f"host{h}"


def cpu_id(h: int, numa: int) -> str:
    return f"CPU host{h} numa{numa}"


def switch_id(h: int, key: str) -> str:
    return f"PCIe host{h} {key}"


def gpu_id(rank: int) -> str:
    return f"GPU{rank}"


def nvswitch_id(k: int) -> str:
    return f"NVSwitch{k}"


def nic_id(h: int, name: str, qualify: bool = False) -> str:
    """``NIC mlx5_0`` on the first host (device names are unique there), ``NIC host1 mlx5_0`` elsewhere."""
    return f"NIC {name}" if h == 0 and not qualify else f"NIC host{h} {name}"


def edge_id(u: str, v: str) -> str:
    """The string naming an edge in ``component_node`` results: endpoints sorted, joined by `` -- ``."""
    a, b = sorted((u, v))
    return f"{a}{EDGE_SEP}{b}"


def parse_edge_id(s: str) -> tuple[str, str] | None:
    """Inverse of :func:`edge_id`; None when ``s`` names a node."""
    if EDGE_SEP not in s:
        return None
    a, b = s.split(EDGE_SEP, 1)
    return a, b


def new_graph(source: str, source_file: str | None = None) -> nx.Graph:
    g = nx.Graph()
    g.graph.update(
        {
            "version": TOPOLOGY_VERSION,
            "source": source,
            "source_file": source_file,
            "inferred": False,
            "ranks_known": True,
            "hosts": [],
            "notes": [],
        }
    )
    return g


def add_note(g: nx.Graph, note: str) -> None:
    """A sentence the UI/explain can show about how the graph was read (assumptions, oddities)."""
    if note not in g.graph["notes"]:
        g.graph["notes"].append(note)


def add_host(g: nx.Graph, h: int, label: str | None = None) -> str:
    nid = host_id(h)
    if nid not in g:
        g.add_node(nid, kind="host", label=label or nid, host=nid, parent=None)
        g.graph["hosts"].append(nid)
    return nid


def add_cpu(g: nx.Graph, h: int, numa: int, **attrs) -> str:
    nid = cpu_id(h, numa)
    if nid not in g:
        host = add_host(g, h)
        g.add_node(nid, kind="cpu", label=f"CPU numa{numa}", host=host, parent=host, numaid=numa, **attrs)
        g.add_edge(host, nid, kind="host")
        for other in sorted(n for n, d in g.nodes(data=True) if d["kind"] == "cpu" and d["host"] == host):
            if other != nid:
                g.add_edge(other, nid, kind="sys")
    return nid


def speed_gts(link_speed: str | None) -> float | None:
    """``"16.0 GT/s PCIe"`` -> 16.0; None when empty or unreadable."""
    if not link_speed:
        return None
    m = re.search(r"(\d+(?:\.\d+)?)\s*GT/s", link_speed)
    return float(m.group(1)) if m else None


def add_pcie(
    g: nx.Graph,
    parent: str,
    child: str,
    *,
    link_width: int | None = None,
    link_speed: str | None = None,
    relation: str | None = None,
) -> None:
    """A PCIe tree link ``parent`` -> ``child``; widths of 0 and empty speeds mean unknown (NCCL writes them)."""
    attrs: dict = {"kind": "pcie", "parent": parent}
    if link_width:
        attrs["link_width"] = int(link_width)
    if link_speed:
        attrs["link_speed"] = link_speed
        gts = speed_gts(link_speed)
        if gts is not None:
            attrs["link_speed_gts"] = gts
    if relation:
        attrs["relation"] = relation
    g.add_edge(parent, child, **attrs)
    g.nodes[child]["parent"] = parent


def add_nvlink(g: nx.Graph, u: str, v: str, count: int, kind: str = "nvlink", **attrs) -> None:
    """Bonded NVLinks between ``u`` and ``v``. When both ends report the pair, the lower count wins (the
    slower direction bounds a collective) and both counts are kept."""
    if g.has_edge(u, v) and g.edges[u, v].get("kind") == kind:
        e = g.edges[u, v]
        counts = sorted({*e.get("counts", [e["count"]]), int(count)})
        e["counts"] = counts
        e["count"] = counts[0]
        return
    g.add_edge(u, v, kind=kind, count=int(count), **attrs)


def ensure_fabric(g: nx.Graph) -> str:
    if FABRIC not in g:
        g.add_node(FABRIC, kind="fabric", label="network fabric", host=None, parent=None)
    return FABRIC


def nodes_of(g: nx.Graph, kind: str, host: str | None = None) -> list[str]:
    """Node ids of one kind (optionally on one host), in insertion order."""
    return [n for n, d in g.nodes(data=True) if d["kind"] == kind and (host is None or d.get("host") == host)]


def gpu_nodes(g: nx.Graph) -> list[str]:
    """GPU node ids ordered by rank."""
    return sorted(nodes_of(g, "gpu"), key=lambda n: g.nodes[n]["rank"])


def gpu_of_rank(g: nx.Graph, rank: int) -> str | None:
    for n in nodes_of(g, "gpu"):
        if g.nodes[n]["rank"] == rank:
            return n
    return None


def ancestor(g: nx.Graph, node: str, kind: str) -> str | None:
    """The nearest node of ``kind`` on the ``parent`` chain above ``node`` (or ``node`` itself)."""
    seen = set()
    cur: str | None = node
    while cur is not None and cur not in seen:
        seen.add(cur)
        if g.nodes[cur]["kind"] == kind:
            return cur
        cur = g.nodes[cur].get("parent")
    return None


def host_index(host: str) -> int:
    return int(host[4:]) if host.startswith("host") and host[4:].isdigit() else 0


def sorted_unique(xs: Iterable[str]) -> list[str]:
    return sorted(set(xs))
