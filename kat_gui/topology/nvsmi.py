"""``nvidia-smi topo -m`` text -> hardware graph (one host).

Assumes the matrix nvidia-smi prints: a header line whose first token is ``GPU0``, device columns (``GPU#``,
``NIC#`` or NIC names such as ``mlx5_0`` on old drivers) then the optional ``CPU Affinity``, ``NUMA
Affinity``, ``GPU NUMA ID`` columns; one row per device; then an optional ``Legend:`` and ``NIC Legend:``
block (``NIC0: mlx5_0``). Cells are whitespace-free, so rows are split on any whitespace: tab-separated,
space-aligned and re-indented pastes parse alike, and the empty cell nvidia-smi leaves before ``GPU NUMA
ID`` disappears harmlessly. ANSI escapes (``\\x1b[4m`` ... ``\\x1b[0m``, or their ``[4m`` remains when a
paste lost the ESC byte) are stripped first.

What is built, and from what:
- NUMA nodes: the ``NUMA Affinity`` column; else distinct ``CPU Affinity`` values; else groups of devices
  that are not SYS/SOC to each other. NICs (no affinity columns) join the NUMA node of the nearest GPU.
- PCIe switches: devices joined by PIX/PXB cells (union-find) share one inferred switch node
  ``PCIe host0 sw#`` (``relation`` PIX if every joining cell is PIX, else PXB); the rest hang off their CPU
  (PHB/NODE). The raw matrix is kept in ``graph.graph["relations"]`` as ``[a, b, cell]`` for reasoning.
- NVLinks: ``NV#`` cells become GPU-GPU ``nvlink`` edges with ``count`` = #. The matrix cannot tell
  whether an NVSwitch sits in between, so none is invented.
Ranks are not in the matrix: GPU# is assumed to be rank # (``rank_known`` False).
"""

from __future__ import annotations

import os
import re

import networkx as nx

from kat_gui.errors import KatInputError
from kat_gui.topology import model as M

ANSI_RE = re.compile(r"(?:\x1b)?\[[0-9;]*m")
_CELL_RE = re.compile(r"^(X|PIX|PXB|PHB|NODE|SYS|SOC|PSB|NV\d+)$")
_LEGEND_RE = re.compile(r"^\s*(NIC\d+)\s*:\s*(\S+)\s*$")
_EXTRA_COLUMNS = ("CPU Affinity", "NUMA Affinity", "GPU NUMA ID")
_SWITCH_CELLS = ("PIX", "PXB", "PSB")
_CROSS_SOCKET = ("SYS", "SOC")


def clean_lines(text: str) -> list[str]:
    return [ANSI_RE.sub("", line).rstrip("\r\n") for line in text.splitlines()]


def find_header(lines: list[str]) -> int | None:
    """Index of the matrix header line (first token ``GPU0``, followed by a row starting ``GPU0``)."""
    for i, line in enumerate(lines):
        toks = line.split()
        if toks and toks[0] == "GPU0":
            for nxt in lines[i + 1 : i + 3]:
                t = nxt.split()
                if t and t[0] == "GPU0":
                    return i
    return None


def _header_columns(header: str) -> tuple[list[str], list[str]]:
    """Device column names and the extra (affinity) column names, in order."""
    toks = header.split()
    devices: list[str] = []
    i = 0
    while i < len(toks) and toks[i] not in ("CPU", "NUMA") and not (toks[i] == "GPU" and i + 1 < len(toks)):
        devices.append(toks[i])
        i += 1
    rest = " ".join(toks[i:])
    extras = [c for c in _EXTRA_COLUMNS if c in rest]
    extras.sort(key=rest.index)
    return devices, extras


class _UnionFind:
    def __init__(self, items: list[str]):
        self.parent = {x: x for x in items}

    def find(self, x: str) -> str:
        while self.parent[x] != x:
            self.parent[x] = self.parent[self.parent[x]]
            x = self.parent[x]
        return x

    def union(self, a: str, b: str) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)


def parse_nvsmi_topo(text: str, path: str | os.PathLike) -> nx.Graph:
    """Build the hardware graph from ``nvidia-smi topo -m`` output; KatInputError when it is not one."""
    lines = clean_lines(text)
    hi = find_header(lines)
    if hi is None:
        raise KatInputError(
            path, "no `nvidia-smi topo -m` matrix found (expected a header line starting GPU0)"
        )
    devices, extras = _header_columns(lines[hi])
    n = len(devices)
    if len(set(devices)) != n:
        raise KatInputError(path, f"line {hi + 1}: repeated column names in the topology matrix header")
    cells: dict[str, list[str]] = {}
    row_extras: dict[str, list[str]] = {}
    legend: dict[str, str] = {}
    in_matrix = True
    for ln in range(hi + 1, len(lines)):
        toks = lines[ln].split()
        if not toks:
            continue
        m = _LEGEND_RE.match(lines[ln])
        if m:
            legend[m.group(1)] = m.group(2)
            continue
        if toks[0].rstrip(":") in ("Legend", "NIC"):
            in_matrix = False
            continue
        if not in_matrix or toks[0] not in devices:
            continue
        row = toks[1 : 1 + n]
        if len(row) < n:
            raise KatInputError(path, f"line {ln + 1}: row {toks[0]} has {len(row)} cells, expected {n}")
        bad = [c for c in row if not _CELL_RE.match(c)]
        if bad:
            raise KatInputError(path, f"line {ln + 1}: unknown topology cell {bad[0]!r} in row {toks[0]}")
        cells[toks[0]] = row
        row_extras[toks[0]] = toks[1 + n :]
    gpus = [d for d in devices if re.fullmatch(r"GPU\d+", d)]
    missing = [d for d in gpus if d not in cells]
    if missing:
        raise KatInputError(path, f"topology matrix has no row for {missing[0]}")
    nics = [d for d in devices if d not in gpus]

    def cell(a: str, b: str) -> str:
        if a in cells:
            return cells[a][devices.index(b)]
        return cells[b][devices.index(a)] if b in cells else "SYS"

    g = M.new_graph("nvidia_smi_topo", os.path.basename(os.fspath(path)))
    g.graph["ranks_known"] = False
    M.add_note(g, "nvidia-smi names no ranks: GPU# assumed to be rank #")
    M.add_host(g, 0)
    g.graph["relations"] = [
        [a, b, cell(a, b)]
        for i, a in enumerate(devices)
        for b in devices[i + 1 :]
        if a in cells or b in cells
    ]
    numa_of = _numa_groups(g, gpus, nics, extras, row_extras, cell)
    cpu_attrs: dict[int, dict] = {}
    for gname in gpus:
        ex = dict(zip(extras, row_extras.get(gname, []), strict=False))
        if "CPU Affinity" in ex and ex["CPU Affinity"] != "N/A":
            cpu_attrs.setdefault(numa_of[gname], {"affinity": ex["CPU Affinity"]})
    for numa in sorted(set(numa_of.values())):
        M.add_cpu(g, 0, numa, **cpu_attrs.get(numa, {}))

    node_of: dict[str, str] = {}
    for gname in gpus:
        dev = int(gname[3:])
        nid = M.gpu_id(dev)
        g.add_node(
            nid,
            kind="gpu",
            label=nid,
            host="host0",
            parent=None,
            rank=dev,
            rank_known=False,
            device=dev,
            busid=None,
        )
        ex = dict(zip(extras, row_extras.get(gname, []), strict=False))
        if ex.get("GPU NUMA ID", "").isdigit():
            g.nodes[nid]["gpu_numa_id"] = int(ex["GPU NUMA ID"])
        node_of[gname] = nid
    for name in nics:
        real = legend.get(name, name)
        nid = M.nic_id(0, real)
        g.add_node(nid, kind="nic", label=real, host="host0", parent=None, name=real)
        if real != name:
            g.nodes[nid]["alias"] = name
        g.add_edge(nid, M.ensure_fabric(g), kind="net")
        node_of[name] = nid
    g.graph["relations"] = [[node_of[a], node_of[b], c] for a, b, c in g.graph["relations"]]

    # PCIe switches from PIX/PXB cells.
    uf = _UnionFind(devices)
    joined_by: dict[tuple[str, str], str] = {}
    for i, a in enumerate(devices):
        for b in devices[i + 1 :]:
            c = cell(a, b)
            if c in _SWITCH_CELLS and numa_of[a] == numa_of[b]:
                uf.union(a, b)
                joined_by[(a, b)] = c
    groups: dict[str, list[str]] = {}
    for d in devices:
        groups.setdefault(uf.find(d), []).append(d)
    sw = 0
    for members in sorted(groups.values(), key=lambda ms: devices.index(ms[0])):
        cpu = M.cpu_id(0, numa_of[members[0]])
        if len(members) == 1:
            M.add_pcie(g, cpu, node_of[members[0]], relation="PHB")
            continue
        rels = {c for (a, b), c in joined_by.items() if a in members and b in members}
        relation = "PIX" if rels == {"PIX"} else "PXB"
        sid = M.switch_id(0, f"sw{sw}")
        sw += 1
        g.add_node(
            sid, kind="pci_switch", label=f"PCIe switch {sw - 1} ({relation})", host="host0", parent=None
        )
        g.nodes[sid]["relation"] = relation
        M.add_pcie(g, cpu, sid)
        for d in members:
            M.add_pcie(g, sid, node_of[d], relation=relation)

    # NVLinks.
    for i, a in enumerate(gpus):
        for b in gpus[i + 1 :]:
            counts = [
                c for c in (cells[a][devices.index(b)], cells[b][devices.index(a)]) if c.startswith("NV")
            ]
            for c in counts:
                M.add_nvlink(g, node_of[a], node_of[b], int(c[2:]))
    return g


def _numa_groups(g, gpus, nics, extras, row_extras, cell) -> dict[str, int]:
    """NUMA node of every device (see the module docstring for the order of evidence)."""
    numa_of: dict[str, int] = {}
    values = {d: dict(zip(extras, row_extras.get(d, []), strict=False)) for d in gpus}
    numa_col = {d: v.get("NUMA Affinity", "N/A") for d, v in values.items()}
    if gpus and all(re.fullmatch(r"\d+", numa_col[d]) for d in gpus):
        numa_of = {d: int(numa_col[d]) for d in gpus}
    elif gpus and all(values[d].get("CPU Affinity") for d in gpus):
        order: list[str] = []
        for d in gpus:
            if values[d]["CPU Affinity"] not in order:
                order.append(values[d]["CPU Affinity"])
        numa_of = {d: order.index(values[d]["CPU Affinity"]) for d in gpus}
        if len(order) > 1:
            M.add_note(g, "no NUMA Affinity column: NUMA nodes numbered by distinct CPU Affinity")
    else:
        uf = _UnionFind(gpus)
        for i, a in enumerate(gpus):
            for b in gpus[i + 1 :]:
                if cell(a, b) not in _CROSS_SOCKET:
                    uf.union(a, b)
        roots: list[str] = []
        for d in gpus:
            if uf.find(d) not in roots:
                roots.append(uf.find(d))
        numa_of = {d: roots.index(uf.find(d)) for d in gpus}
        M.add_note(g, "no affinity columns: NUMA nodes inferred from SYS/SOC cells")
    rank_of_cell = {"X": 0, "PIX": 1, "PSB": 1, "PXB": 2, "PHB": 3, "NODE": 4, "SYS": 9, "SOC": 9}
    for nic in nics:
        best = None
        for d in gpus:
            c = cell(nic, d)
            dist = rank_of_cell.get(c, 9)
            if dist < 9 and (best is None or dist < best[0]):
                best = (dist, numa_of[d])
        if best is None:
            # SYS/SOC from every GPU: on a NUMA node that holds no GPU (numbered after the GPUs' ones).
            gpu_numas = {numa_of[d] for d in gpus}
            numa_of[nic] = min(set(range(len(gpu_numas) + 1)) - gpu_numas)
            M.add_note(g, "NICs that are SYS from every GPU are placed on a NUMA node of their own")
        else:
            numa_of[nic] = best[1]
    return numa_of
