"""A plausible hardware graph when no topology file was given (marked ``graph.graph["inferred"] = True``)."""

from __future__ import annotations

import networkx as nx

from kat_gui.topology import model as M

DEFAULT_GPUS_PER_HOST = 8


def default_topology(
    ranks: list[int], ranks_per_host: int | None = None, gpu_names: dict[int, str] | None = None
) -> nx.Graph:
    """A guess at the hardware behind ``ranks``: what a typical NVSwitch box looks like, not what was measured.

    Assumes one GPU per rank, ranks laid out host-major in sorted order (ranks 0..7 on host0, 8..15 on host1),
    ``ranks_per_host`` per host (default: all on one host, or 8 per host when there are more than 8). Each
    host gets one CPU (numa0), a PCIe switch per pair of GPUs, one NVSwitch joining its GPUs (when it has at
    least two), and, when there are at least two hosts, one NIC (on the host's first PCIe switch) linked to
    a shared ``fabric`` node. ``gpu_names`` (rank -> device name) only labels the GPUs.
    """
    rs = sorted(set(int(r) for r in ranks))
    if ranks_per_host is None:
        ranks_per_host = len(rs) if len(rs) <= DEFAULT_GPUS_PER_HOST else DEFAULT_GPUS_PER_HOST
    ranks_per_host = max(1, int(ranks_per_host))
    names = gpu_names or {}
    g = M.new_graph("default")
    g.graph["inferred"] = True
    M.add_note(g, "no topology file: a typical layout was assumed (one GPU per rank, NVSwitch within a host)")
    hosts = [rs[i : i + ranks_per_host] for i in range(0, len(rs), ranks_per_host)]
    for h, host_ranks in enumerate(hosts):
        M.add_host(g, h)
        cpu = M.add_cpu(g, h, 0)
        switches = []
        for pair in range((len(host_ranks) + 1) // 2):
            sid = M.switch_id(h, f"sw{pair}")
            g.add_node(sid, kind="pci_switch", label=f"PCIe switch {pair}", host=M.host_id(h), parent=None)
            M.add_pcie(g, cpu, sid)
            switches.append(sid)
        nvs = None
        if len(host_ranks) >= 2:
            nvs = M.nvswitch_id(h)
            g.add_node(nvs, kind="nvswitch", label=nvs, host=M.host_id(h), parent=None)
        for dev, rank in enumerate(host_ranks):
            nid = M.gpu_id(rank)
            label = f"{nid} ({names[rank]})" if rank in names else nid
            g.add_node(
                nid,
                kind="gpu",
                label=label,
                host=M.host_id(h),
                parent=None,
                rank=rank,
                rank_known=True,
                device=dev,
                busid=None,
            )
            if rank in names:
                g.nodes[nid]["name"] = names[rank]
            M.add_pcie(g, switches[dev // 2], nid)
            if nvs is not None:
                g.add_edge(nid, nvs, kind="nvswitch", count=None)
        if len(hosts) >= 2:
            nic = M.nic_id(h, "nic0", qualify=True)
            g.add_node(nic, kind="nic", label=f"host{h} NIC", host=M.host_id(h), parent=None, name="nic0")
            M.add_pcie(g, switches[0] if switches else cpu, nic)
            g.add_edge(nic, M.ensure_fabric(g), kind="net")
    return g
