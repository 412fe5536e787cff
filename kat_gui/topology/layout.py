"""A deterministic hardware layout for drawing the graph (pure Python, no graph-drawing engine).

Coordinates are abstract units (one GPU slot = 1.0), y grows *downward* as in Qt scenes:
hosts side by side left to right; inside a host, rows top to bottom: host (y=0), CPUs (y=1), PCIe switches
(y=2, nested switches 0.6 lower per level), GPUs, NVSwitches one row below the GPUs; NICs in a column to
the right of the host's GPUs; the shared network fabric centred below everything.
"""

from __future__ import annotations

import networkx as nx

from kat_gui.topology import model as M

HOST_GAP = 1.5
SWITCH_LEVEL_DY = 0.6
NIC_DY = 0.5


def _depth(g: nx.Graph, node: str) -> int:
    """Number of PCIe switches above ``node``."""
    d = 0
    cur = g.nodes[node].get("parent")
    while cur is not None and g.nodes[cur]["kind"] == "pci_switch":
        d += 1
        cur = g.nodes[cur].get("parent")
    return d


def layout(graph: nx.Graph) -> dict[str, tuple[float, float]]:
    """Position of every node, ``{node_id: (x, y)}``. Same graph -> same positions."""
    g = graph
    pos: dict[str, tuple[float, float]] = {}
    hosts = list(g.graph.get("hosts") or sorted(M.nodes_of(g, "host")))
    for n in M.nodes_of(g, "host"):
        if n not in hosts:
            hosts.append(n)
    switches_all = M.nodes_of(g, "pci_switch")
    max_depth = max((_depth(g, s) for s in switches_all), default=0)
    switch_y0 = 2.0
    gpu_y = switch_y0 + (max_depth + 1) * SWITCH_LEVEL_DY + 0.8 if switches_all else 2.5
    nvswitch_y = gpu_y + 1.0
    x0 = 0.0
    bottom = nvswitch_y
    for host in hosts:
        gpus = sorted(
            M.nodes_of(g, "gpu", host), key=lambda n: (g.nodes[n].get("device", 0), g.nodes[n]["rank"])
        )
        cpus = sorted(M.nodes_of(g, "cpu", host), key=lambda n: (g.nodes[n].get("numaid", 0), n))
        switches = M.nodes_of(g, "pci_switch", host)
        nics = M.nodes_of(g, "nic", host)
        nvswitches = M.nodes_of(g, "nvswitch", host)
        gpu_x = {n: x0 + i for i, n in enumerate(gpus)}
        for n in gpus:
            pos[n] = (gpu_x[n], gpu_y)
        cols = max(len(gpus), len(cpus), len(nvswitches), 1)

        def centre(under: str, kind: str, _gpu_x=gpu_x) -> float | None:
            xs = [x for n, x in _gpu_x.items() if M.ancestor(g, n, kind) == under]
            return sum(xs) / len(xs) if xs else None

        # Switches over their GPUs; GPU-less switches (NIC-only) in a column between the GPUs and the NICs.
        spare = 0
        for sw in sorted(switches, key=lambda n: (_depth(g, n), n)):
            x = centre(sw, "pci_switch")
            y = switch_y0 + _depth(g, sw) * SWITCH_LEVEL_DY
            if x is None:
                x, y = x0 + cols - 0.25, switch_y0 + spare * SWITCH_LEVEL_DY
                spare += 1
            pos[sw] = (x, y)
        for i, c in enumerate(cpus):
            x = centre(c, "cpu")
            if x is None:
                x = x0 + (i + 0.5) * cols / len(cpus) - 0.5
            pos[c] = (x, 1.0)
        # CPUs without GPUs could land on one another: fall back to an even spread when any collide.
        if len({pos[c] for c in cpus}) < len(cpus):
            for i, c in enumerate(cpus):
                pos[c] = (x0 + (i + 0.5) * cols / len(cpus) - 0.5, 1.0)
        for i, s in enumerate(nvswitches):
            pos[s] = (x0 + (i + 0.5) * cols / len(nvswitches) - 0.5, nvswitch_y)
        nic_x = x0 + cols - 0.5 + 1.0
        for i, n in enumerate(nics):
            pos[n] = (nic_x, 1.0 + i * NIC_DY)
        if nics:
            bottom = max(bottom, 1.0 + (len(nics) - 1) * NIC_DY)
        pos[host] = (x0 + (cols - 1) / 2.0, 0.0)
        x0 += cols + (1.0 if nics else 0.0) + HOST_GAP
    placed = [p[0] for n, p in pos.items() if g.nodes[n]["kind"] == "host"]
    centre_x = sum(placed) / len(placed) if placed else 0.0
    for n in g.nodes:
        if n not in pos:
            # fabric, and anything outside the host tree (e.g. a node whose host is unknown)
            pos[n] = (centre_x, bottom + 1.0)
    return _separate(pos)


def _separate(pos: dict[str, tuple[float, float]]) -> dict[str, tuple[float, float]]:
    """Nudge right any node that landed exactly on another (e.g. switches over GPU sets with one centre)."""
    taken: set[tuple[float, float]] = set()
    out = {}
    for n, (x, y) in pos.items():
        while (x, y) in taken:
            x += 0.25
        taken.add((x, y))
        out[n] = (x, y)
    return out
