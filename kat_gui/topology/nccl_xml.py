"""NCCL topology XML (``NCCL_TOPO_DUMP_FILE``, root ``<system>``) -> hardware graph.

Assumes the layout NCCL writes (and the Azure hand-written files follow)::

    <system><cpu numaid affinity host_hash?>
      <pci busid class link_speed link_width>      (nested: bridges/PCIe switches, class 0x0604xx)
        <gpu dev sm rank gdr><nvlink target count tclass/></gpu>
      </pci>
      <pci ...><nic><net name dev speed port gdr/></nic></pci>
      <nic><net .../></nic>                         (a NIC whose PCI path NCCL did not know)
    </cpu></system>

``<cpu host_hash>`` (multi-node dumps) splits hosts; without it everything is ``host0``. GPUs written only as
bare ``<pci class=0x0302xx|0x0300xx>`` (no ``<gpu>`` child, as in hand-maintained files) are still GPUs:
they get device indices in bus-id order per host and ranks in host-then-device order (``rank_known`` False),
and the graph's notes say so. NVLink targets of class 0x068000 are NVSwitches; a target that is a GPU bus
id gives a GPU-GPU edge (a GPU naming its own bus id, as the Azure NCv4 file does, gives a self-loop).
Hostile XML is refused: any DOCTYPE/ENTITY declaration is rejected before parsing, and ElementTree
never fetches external resources.
"""

from __future__ import annotations

import os
import re
import xml.etree.ElementTree as ET

import networkx as nx

from kat_gui.errors import KatInputError
from kat_gui.topology import model as M

_DECL_RE = re.compile(r"<!\s*(DOCTYPE|ENTITY)", re.IGNORECASE)


def parse_xml_root(text: str, path: str | os.PathLike) -> ET.Element:
    """Parse ``text`` as XML, refusing DTDs/entities (billion laughs, external entities)."""
    m = _DECL_RE.search(text)
    if m:
        raise KatInputError(
            path,
            f"XML with a {m.group(1).upper()} declaration refused (entity expansion / external entities "
            "are not allowed in a topology file); remove the declaration and retry",
        )
    try:
        return ET.fromstring(text)
    except ET.ParseError as exc:
        raise KatInputError(path, f"not well-formed XML: {exc}") from None


def _pci_class(el: ET.Element) -> str:
    c = (el.get("class") or "").lower()
    return c[2:6] if c.startswith("0x") else c[:4]


def _int(v: str | None) -> int | None:
    try:
        return int(v, 0) if v not in (None, "") else None
    except ValueError:
        return None


class _Builder:
    def __init__(self, path: str | os.PathLike):
        self.path = path
        self.g = M.new_graph("nccl_topo_xml", os.path.basename(os.fspath(path)))
        self.hosts: dict[str, int] = {}
        # Collected first, numbered once all are known: (host, busid, gpu element or None, parent, pci element).
        self.gpus: list[tuple[int, str, ET.Element | None, str, ET.Element]] = []
        self.busid_node: dict[tuple[int, str], str] = {}
        self.nvswitch_busids: dict[tuple[int, str], str] = {}
        self.nic_count = 0

    def host(self, cpu: ET.Element) -> int:
        key = cpu.get("host_hash") or ""
        if key not in self.hosts:
            self.hosts[key] = len(self.hosts)
            M.add_host(self.g, self.hosts[key])
            if key:
                self.g.nodes[M.host_id(self.hosts[key])]["host_hash"] = key
        return self.hosts[key]

    def nvswitch(self, h: int, busid: str) -> str:
        key = (h, busid.lower())
        if key not in self.nvswitch_busids:
            nid = M.nvswitch_id(len(self.nvswitch_busids))
            self.nvswitch_busids[key] = nid
            self.g.add_node(nid, kind="nvswitch", label=nid, host=M.host_id(h), parent=None, busid=busid)
            self.busid_node[key] = nid
        return self.nvswitch_busids[key]

    def add_nic(self, h: int, net: ET.Element | None, parent: str, pci: ET.Element | None) -> None:
        busid = pci.get("busid") if pci is not None else None
        name = (net.get("name") if net is not None else None) or busid
        if not name:
            name = f"nic{self.nic_count}"
        self.nic_count += 1
        nid = M.nic_id(h, name)
        attrs: dict = {"kind": "nic", "label": name, "host": M.host_id(h), "parent": None, "name": name}
        if busid:
            attrs["busid"] = busid
        if net is not None:
            for key in ("dev", "port", "gdr"):
                val = _int(net.get(key))
                if val is not None:
                    attrs[key] = val
            speed = _int(net.get("speed"))
            if speed is not None:
                attrs["speed_mbps"] = speed  # NCCL writes Mb/s
        self.g.add_node(nid, **attrs)
        M.add_pcie(
            self.g,
            parent,
            nid,
            link_width=_int(pci.get("link_width")) if pci is not None else None,
            link_speed=pci.get("link_speed") if pci is not None else None,
        )
        self.g.add_edge(nid, M.ensure_fabric(self.g), kind="net")

    def walk(self, h: int, el: ET.Element, parent: str) -> None:
        for child in el:
            if child.tag == "pci":
                self.pci(h, child, parent)
            elif child.tag == "nic":
                nets = child.findall("net")
                for net in nets or [None]:
                    self.add_nic(h, net, parent, None)

    def pci(self, h: int, pci: ET.Element, parent: str) -> None:
        busid = pci.get("busid") or ""
        cls = _pci_class(pci)
        gpu = pci.find("gpu")
        nic = pci.find("nic")
        vendor = (pci.get("vendor") or "").lower()
        # A bare display-class device from another vendor is a board's BMC VGA (ASPEED...), not a GPU.
        gpu_vendor = vendor in ("", "0x0000", *M.GPU_VENDORS)
        if gpu is not None or (cls in M.PCI_CLASS_GPU and gpu_vendor):
            self.gpus.append((h, busid, gpu, parent, pci))
        elif nic is not None or cls in M.PCI_CLASS_NIC:
            nets = nic.findall("net") if nic is not None else []
            for net in nets or [None]:
                self.add_nic(h, net, parent, pci)
        elif cls == M.PCI_CLASS_NVSWITCH:
            nid = self.nvswitch(h, busid)
            M.add_pcie(
                self.g, parent, nid, link_width=_int(pci.get("link_width")), link_speed=pci.get("link_speed")
            )
        elif cls == M.PCI_CLASS_BRIDGE or len(pci):
            nid = M.switch_id(h, busid or f"sw{len(M.nodes_of(self.g, 'pci_switch'))}")
            self.g.add_node(
                nid, kind="pci_switch", label=f"PCIe {busid}", host=M.host_id(h), parent=None, busid=busid
            )
            M.add_pcie(
                self.g, parent, nid, link_width=_int(pci.get("link_width")), link_speed=pci.get("link_speed")
            )
            self.busid_node[(h, busid.lower())] = nid
            self.walk(h, pci, nid)
        # other PCI functions (NVMe, ...) carry nothing a finding can name

    def number_gpus(self) -> list[tuple[str, ET.Element | None]]:
        g = self.g
        ranks = [_int(gel.get("rank")) if gel is not None else None for _, _, gel, _, _ in self.gpus]
        ranks_known = bool(self.gpus) and all(r is not None for r in ranks) and len(set(ranks)) == len(ranks)
        if not ranks_known:
            g.graph["ranks_known"] = False
        # Devices: the file's dev= when every GPU has one, else bus order per host.
        devs = [_int(gel.get("dev")) if gel is not None else None for _, _, gel, _, _ in self.gpus]
        devs_known = all(d is not None for d in devs)
        order = sorted(range(len(self.gpus)), key=lambda i: (self.gpus[i][0], self.gpus[i][1].lower()))
        per_host: dict[int, int] = {}
        bus_dev: dict[int, int] = {}
        for i in order:
            h = self.gpus[i][0]
            bus_dev[i] = per_host.get(h, 0)
            per_host[h] = bus_dev[i] + 1
        if not devs_known and self.gpus:
            M.add_note(
                g, "GPUs are listed only as PCI devices (no <gpu> element): numbered in bus-id order per host"
            )
        if not ranks_known and self.gpus:
            M.add_note(g, "no ranks in the file: ranks assumed to be GPU ordinals in host/device order")
        if ranks_known:
            rank_of = {i: ranks[i] for i in range(len(self.gpus))}
        else:
            by_dev = sorted(
                range(len(self.gpus)),
                key=lambda i: (self.gpus[i][0], devs[i] if devs_known else bus_dev[i], self.gpus[i][1]),
            )
            rank_of = {i: r for r, i in enumerate(by_dev)}
        out = []
        for i, (h, busid, gel, parent, pci) in enumerate(self.gpus):
            rank = int(rank_of[i])
            nid = M.gpu_id(rank)
            attrs: dict = {
                "kind": "gpu",
                "label": nid,
                "host": M.host_id(h),
                "parent": None,
                "rank": rank,
                "rank_known": ranks_known,
                "device": int(devs[i]) if devs_known else bus_dev[i],
                "busid": busid,
            }
            if gel is not None:
                for key in ("sm", "gdr"):
                    val = _int(gel.get(key))
                    if val is not None:
                        attrs[key] = val
            g.add_node(nid, **attrs)
            M.add_pcie(
                g, parent, nid, link_width=_int(pci.get("link_width")), link_speed=pci.get("link_speed")
            )
            self.busid_node[(h, busid.lower())] = nid
            out.append((nid, gel))
        return out

    def nvlinks(self, gpus: list[tuple[str, ET.Element | None]]) -> None:
        g = self.g
        for nid, gel in gpus:
            if gel is None:
                continue
            h = M.host_index(g.nodes[nid]["host"])
            sm = g.nodes[nid].get("sm")
            gen = M.NVLINK_GEN_BY_SM.get(sm) if sm is not None else None
            cls_attrs: dict = {}
            if gen is not None:
                cls_attrs = {"nvlink_gen": gen, "per_link_gbyte_s": M.NVLINK_PER_LINK_GBYTE_S[gen]}
            for link in gel.findall("nvlink"):
                target = (link.get("target") or "").lower()
                count = _int(link.get("count")) or 1
                tclass = (link.get("tclass") or "").lower()
                tnode = self.busid_node.get((h, target))
                if tnode is not None and g.nodes[tnode]["kind"] == "gpu":
                    M.add_nvlink(g, nid, tnode, count, **cls_attrs)
                    if tnode == nid:
                        M.add_note(
                            g,
                            "an <nvlink> targets its own GPU's bus id (hand-written file): kept as a self-loop",
                        )
                elif tclass[2:6] == M.PCI_CLASS_NVSWITCH or (
                    tnode is not None and g.nodes[tnode]["kind"] == "nvswitch"
                ):
                    M.add_nvlink(g, nid, self.nvswitch(h, target), count, kind="nvswitch", **cls_attrs)
                else:
                    # NVLink to the CPU (POWER9 / Grace): an nvlink edge to the GPU's CPU node.
                    cpu = M.ancestor(g, nid, "cpu")
                    if cpu is not None:
                        M.add_nvlink(g, nid, cpu, count, target=target, **cls_attrs)


def parse_nccl_topo_xml(text: str, path: str | os.PathLike) -> nx.Graph:
    """Build the hardware graph from the text of an NCCL topology dump; KatInputError on anything else."""
    root = parse_xml_root(text, path)
    if root.tag == "graphs":
        raise KatInputError(
            path,
            "this is an NCCL graph dump (NCCL_GRAPH_DUMP_FILE, root <graphs>: rings/trees), not a topology "
            "dump; give the file written with NCCL_TOPO_DUMP_FILE (root <system>)",
        )
    if root.tag != "system":
        raise KatInputError(path, f"XML root <{root.tag}> is not an NCCL topology dump (expected <system>)")
    cpus = root.findall("cpu")
    if not cpus:
        raise KatInputError(path, "NCCL topology XML has no <cpu> element: nothing to build a topology from")
    b = _Builder(path)
    for i, cpu in enumerate(cpus):
        h = b.host(cpu)
        numa = _int(cpu.get("numaid"))
        attrs = {k: cpu.get(k) for k in ("affinity", "arch", "vendor") if cpu.get(k)}
        cid = M.add_cpu(b.g, h, numa if numa is not None and numa >= 0 else i, **attrs)
        b.walk(h, cpu, cid)
    gpus = b.number_gpus()
    b.nvlinks(gpus)
    if not gpus:
        M.add_note(b.g, "no GPU found in the topology file")
    return b.g
