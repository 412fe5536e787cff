"""Anomalies visible in a topology file itself, before any trace is read.

Each is judged against its *siblings*, never against a spec sheet: a box built with NV12 everywhere is
healthy, an NV16 pair in an NV18 box is not. Siblings are the same kind of link on the same host:
- NVLink GPU-GPU edges of one host; NVSwitch edges grouped per switch (on H100 a GPU legitimately has 4
  links to some switches and 5 to others);
- PCIe uplinks of devices of one kind (gpu, nic, pci_switch) on one host (unknown widths/speeds ignored);
- GPUs of one host without any NVLink while others have some;
- NICs of one host with ``gdr=0`` while others have ``gdr=1``.
The reference value of a group is its most common value (ties: the highest); only values *below* it count.
"""

from __future__ import annotations

from collections import Counter, defaultdict

import networkx as nx

from kat_gui.topology import model as M


def _reference(values: list[float]) -> float:
    counts = Counter(values)
    top = max(counts.values())
    return max(v for v, c in counts.items() if c == top)


def _ranks(g: nx.Graph, nodes) -> list[int]:
    return sorted(g.nodes[n]["rank"] for n in nodes if g.nodes[n]["kind"] == "gpu")


def topology_anomalies(graph: nx.Graph) -> list[dict]:
    """``[{component, component_id, ranks, summary, evidence, nodes, edges}]``, in a stable order.

    ``nodes``/``edges`` (node ids, ``[u, v]`` pairs) are what to colour; ``evidence`` holds the numbers.
    An inferred graph (``default_topology``) has no anomalies: nothing in it was observed.
    """
    g = graph
    if g.graph.get("inferred"):
        return []
    out: list[dict] = []
    out += _nvlink_counts(g)
    out += _missing_nvlink(g)
    out += _pcie_links(g)
    out += _nic_gdr(g)
    return out


def _nvlink_counts(g: nx.Graph) -> list[dict]:
    groups: dict[tuple, list[tuple[str, str, int]]] = defaultdict(list)
    for u, v, d in g.edges(data=True):
        if d.get("count") is None or d.get("kind") not in ("nvlink", "nvswitch"):
            continue
        if d["kind"] == "nvlink":
            key = ("nvlink", g.nodes[u].get("host"))
        else:
            key = ("nvswitch", u if g.nodes[u]["kind"] == "nvswitch" else v)
        a, b = sorted((u, v), key=lambda n: (g.nodes[n]["kind"] != "gpu", g.nodes[n].get("rank", 0), n))
        groups[key].append((a, b, int(d["count"])))
    out = []
    for _key, links in sorted(groups.items(), key=lambda kv: str(kv[0])):
        if len(links) < 2:
            continue
        ref = _reference([c for _, _, c in links])
        for a, b, c in sorted(links, key=lambda t: (g.nodes[t[0]].get("rank", 0), t[1])):
            if c >= ref:
                continue
            sib = sum(1 for _, _, x in links if x >= ref)
            out.append(
                {
                    "component": "nvlink",
                    "component_id": M.edge_id(a, b),
                    "ranks": _ranks(g, (a, b)),
                    "summary": f"NVLink {a}-{b} has {c} bonded links where {sib} sibling links have {int(ref)}",
                    "evidence": {"link_count": c, "sibling_link_count": int(ref), "siblings": len(links) - 1},
                    "nodes": [a, b],
                    "edges": [[a, b]],
                }
            )
    return out


def _missing_nvlink(g: nx.Graph) -> list[dict]:
    out = []
    for host in g.graph.get("hosts", []):
        gpus = sorted(M.nodes_of(g, "gpu", host), key=lambda n: g.nodes[n]["rank"])
        has = {
            n: any(d.get("kind") in ("nvlink", "nvswitch") for _, _, d in g.edges(n, data=True)) for n in gpus
        }
        with_links = sum(has.values())
        if with_links == 0 or with_links == len(gpus):
            continue
        for n in gpus:
            if not has[n]:
                out.append(
                    {
                        "component": "nvlink",
                        "component_id": n,
                        "ranks": _ranks(g, [n]),
                        "summary": f"{n} has no NVLink while {with_links} other GPUs on {host} have NVLinks",
                        "evidence": {"nvlinks": 0, "gpus_with_nvlink": with_links, "gpus_on_host": len(gpus)},
                        "nodes": [n],
                        "edges": [],
                    }
                )
    return out


def _pcie_links(g: nx.Graph) -> list[dict]:
    groups: dict[tuple, list[tuple[str, dict]]] = defaultdict(list)
    for n, nd in g.nodes(data=True):
        parent = nd.get("parent")
        if nd["kind"] not in ("gpu", "nic", "pci_switch") or parent is None or not g.has_edge(n, parent):
            continue
        e = g.edges[n, parent]
        if e.get("kind") == "pcie":
            groups[(nd.get("host"), nd["kind"])].append((n, e))
    out = []
    for (host, kind), links in sorted(groups.items(), key=lambda kv: str(kv[0])):
        for attr, unit in (("link_width", "x"), ("link_speed_gts", " GT/s")):
            known = [(n, e[attr]) for n, e in links if e.get(attr)]
            if len(known) < 2:
                continue
            ref = _reference([v for _, v in known])
            for n, val in known:
                if val >= ref:
                    continue
                parent = g.nodes[n]["parent"]
                what = "width" if attr == "link_width" else "speed"
                shown = f"x{val}" if attr == "link_width" else f"{val:g} GT/s"
                ref_shown = f"x{int(ref)}" if attr == "link_width" else f"{ref:g} GT/s"
                out.append(
                    {
                        "component": "pcie",
                        "component_id": M.edge_id(parent, n),
                        "ranks": _ranks(g, [n]) if kind == "gpu" else _ranks(g, _gpus_below(g, n)),
                        "summary": f"PCIe link of {n} runs at {what} {shown} where its {kind} siblings on "
                        f"{host} run at {ref_shown}",
                        "evidence": {
                            attr: val,
                            f"sibling_{attr}": ref,
                            "siblings": len(known) - 1,
                            "unit": unit.strip(),
                        },
                        "nodes": [n],
                        "edges": [[parent, n]],
                    }
                )
    return out


def _gpus_below(g: nx.Graph, node: str) -> list[str]:
    return [n for n in M.nodes_of(g, "gpu") if n != node and M.ancestor(g, n, g.nodes[node]["kind"]) == node]


def _nic_gdr(g: nx.Graph) -> list[dict]:
    out = []
    for host in g.graph.get("hosts", []):
        nics = [n for n in M.nodes_of(g, "nic", host) if g.nodes[n].get("gdr") is not None]
        on = [n for n in nics if g.nodes[n]["gdr"]]
        if not on:
            continue
        for n in nics:
            if not g.nodes[n]["gdr"]:
                out.append(
                    {
                        "component": "nic",
                        "component_id": n,
                        "ranks": [],
                        "summary": f"{n} reports GPUDirect RDMA off (gdr=0) while {len(on)} other NICs on "
                        f"{host} have it on",
                        "evidence": {"gdr": 0, "nics_with_gdr": len(on), "nics_on_host": len(nics)},
                        "nodes": [n],
                        "edges": [],
                    }
                )
    return out
