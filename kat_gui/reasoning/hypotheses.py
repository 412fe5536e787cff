"""Findings -> ranked hypotheses with evidence, counter-evidence, a cause->effect chain and next checks.

Deterministic and built only from the numbers a finding carries (``detect/findings``, see the results contract):
every number in a text here is a formatted finding value, so the explainer's grounding check can hold a language
model to the same facts. The knowledge base supplies the checks (commands) and nothing else.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import networkx as nx

from kat_gui.reasoning import fmt
from kat_gui.reasoning.knowledge import Playbook, fill_placeholders, playbook, playbooks_for

COMPONENT_TITLE = {
    "gpu": "GPU compute slowdown (clocks, power or thermal capping, a degraded GPU)",
    "hbm": "GPU memory (HBM) problem",
    "nvlink": "NVLink degradation",
    "pcie": "PCIe link slowdown",
    "nic": "network (NIC/RDMA) slowdown",
    "cpu": "host CPU stalls (launch delays)",
    "unknown": "late rank without hardware evidence (software skew?)",
}
COMPONENT_NOUN = {
    "gpu": "GPU compute",
    "hbm": "HBM",
    "nvlink": "NVLink",
    "pcie": "PCIe",
    "nic": "the network (NIC)",
    "cpu": "the host CPU",
    "unknown": "an unknown cause",
}
MAX_CHECKS = 5


@dataclass
class Hypothesis:
    component: str
    component_id: str
    ranks: list[int]
    confidence: float
    title: str
    evidence: list[dict] = field(default_factory=list)
    counter_evidence: list[str] = field(default_factory=list)
    chain: list[str] = field(default_factory=list)
    next_checks: list[str] = field(default_factory=list)
    playbooks: list[str] = field(default_factory=list)
    finding_ids: list[int] = field(default_factory=list)
    nodes: list[str] = field(default_factory=list)
    start_ns: int | None = None
    end_ns: int | None = None
    kind: str = "timing"  # "timing" | "hang" | "topology"

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def chain_text(self) -> str:
        return " -> ".join(self.chain)


# ---------------------------------------------------------------------- public


def build_hypotheses(
    findings: list[dict], topology: nx.Graph | None = None, meta: dict | None = None
) -> list[Hypothesis]:
    """Rank the causes behind ``findings`` (kat.detect/1 finding dicts, highest confidence first or not).

    Findings naming the same component and ranks (the same fault seen in several step windows) merge into one
    hypothesis; ``kind == "topology"`` findings (static anomalies such as a missing NVLink) support a timing
    hypothesis of the same component on overlapping ranks, or stand alone. No findings -> no hypotheses.
    ``meta`` is ``detect/meta`` (uses ``ranks``); ``topology`` fills GPU indices into the check commands.
    """
    meta = meta or {}
    all_ranks = _all_ranks(findings, topology, meta)
    groups: dict[tuple, list[dict]] = {}
    topo_findings: list[dict] = []
    for f in findings:
        if f.get("kind") == "topology":
            topo_findings.append(f)
            continue
        key = (
            str(f.get("component", "unknown")),
            str(f.get("component_id", "")),
            tuple(sorted(f.get("ranks", []))),
            _is_hang(f),
        )
        groups.setdefault(key, []).append(f)
    hyps = [_hypothesis(fs, all_ranks, topology) for fs in groups.values()]
    for f in topo_findings:
        comp = str(f.get("component", "unknown"))
        match = next(
            (h for h in hyps if h.component == comp and set(h.ranks) & set(f.get("ranks", []))), None
        )
        if match is not None:
            match.evidence.append(_item(f, "topology", None, "topology: " + _clean(f.get("summary", ""))))
            match.finding_ids.append(int(f.get("id", -1)))
        else:
            hyps.append(_hypothesis([f], all_ranks, topology))
    hyps.sort(key=lambda h: (-h.confidence, h.component == "unknown", h.kind == "topology", h.ranks))
    return hyps


# ---------------------------------------------------------------------- one hypothesis


def _hypothesis(fs: list[dict], all_ranks: list[int], topology: nx.Graph | None) -> Hypothesis:
    fs = sorted(fs, key=lambda f: -float(f.get("confidence", 0.0)))
    f0 = fs[0]
    comp = str(f0.get("component", "unknown"))
    ranks = sorted(int(r) for r in f0.get("ranks", []))
    kind = "hang" if _is_hang(f0) else ("topology" if f0.get("kind") == "topology" else "timing")
    cid = str(f0.get("component_id") or (f"GPU{ranks[0]}" if ranks else comp))
    title = f"{cid}: " + (
        "hang: one rank stops, its peers block in a collective"
        if kind == "hang"
        else COMPONENT_TITLE.get(comp, comp)
    )
    h = Hypothesis(
        component=comp,
        component_id=cid,
        ranks=ranks,
        confidence=round(max(float(f.get("confidence", 0.0)) for f in fs), 4),
        title=title,
        finding_ids=[int(f.get("id", -1)) for f in fs],
        nodes=list(dict.fromkeys(n for f in fs for n in f.get("nodes", []))),
        start_ns=min((int(f["start_ns"]) for f in fs if f.get("start_ns") is not None), default=None),
        end_ns=max((int(f["end_ns"]) for f in fs if f.get("end_ns") is not None), default=None),
        kind=kind,
    )
    for f in fs:
        h.evidence.extend(_evidence(f, comp))
    h.counter_evidence = _counter(f0, comp, kind, ranks, all_ranks)
    h.chain = _chain(f0, comp, kind, cid, ranks, all_ranks)
    books = _playbooks(comp, kind)
    h.playbooks = [b.id for b in books]
    h.next_checks = _checks(books, ranks, topology)
    return h


def _is_hang(f: dict) -> bool:
    return "silent_ns" in (f.get("evidence") or {})


def _all_ranks(findings: list[dict], topology: nx.Graph | None, meta: dict) -> list[int]:
    if meta.get("ranks"):
        return sorted(int(r) for r in meta["ranks"])
    if topology is not None:
        rs = [d.get("rank") for _, d in topology.nodes(data=True) if d.get("kind") == "gpu"]
        if rs and all(r is not None for r in rs):
            return sorted(int(r) for r in rs)
    return sorted({int(r) for f in findings for r in f.get("ranks", [])})


def _clean(s: object, cap: int = 200) -> str:
    """Finding summaries are our own text, but keep them one line and bounded anyway."""
    t = "".join(ch if ch.isprintable() else " " for ch in str(s))
    return " ".join(t.split())[:cap]


def _item(f: dict, key: str, value, text: str) -> dict:
    ranks = f.get("ranks", [])
    return {
        "text": text,
        "key": key,
        "value": value,
        "start_ns": f.get("start_ns"),
        "end_ns": f.get("end_ns"),
        "rank": int(ranks[0]) if len(ranks) == 1 else None,
        "ranks": [int(r) for r in ranks],
        "finding": f.get("id"),
    }


def _slower(v: float) -> str:
    return f"{fmt.pct(v)} {'slower' if v >= 0 else 'faster'}"


NOT_SLOWER = 0.03  # below this relative slowdown a rank's work is "not slower" (detection's minimum effect)


def _vs_peers(what: str, v: float, than: str) -> str:
    """'<what> are 38% slower than <than>', or counter-evidence worded as such when the difference is below the
    minimum effect: '<what> are not slower than <than> (0.4%)'."""
    if v >= NOT_SLOWER:
        return f"{what} are {_slower(v)} than {than}"
    return f"{what} are not slower than {than} ({_small(v)})"


def _small(v: float) -> str:
    """A difference below the minimum effect: its magnitude, worded as faster only when clearly so."""
    return fmt.pct(v) if v > -NOT_SLOWER else _slower(v)


def _steps_text(steps: list | tuple, n_abnormal: object) -> str:
    """'steps 14-39 (24 abnormal steps)', or 'step 10 (1 abnormal step)' for a one-step window."""
    s = f"step {steps[0]}" if steps[0] == steps[1] else f"steps {steps[0]}-{steps[1]}"
    if isinstance(n_abnormal, (int, float)) and not isinstance(n_abnormal, bool):
        n = int(n_abnormal)
        s += f" ({n} abnormal step{'' if n == 1 else 's'})"
    return s


# The evidence number that measures each component itself (the rest are effects: waits, skew, stretch).
OWN_NUMBER = {
    "gpu": "compute_bound_slowdown",
    "hbm": "memory_bound_slowdown",
    "pcie": "host_copy_slowdown",
    "cpu": "launch_interval_ratio",
    "nvlink": "transfer_ratio",
    "nic": "transfer_ratio",
}


def _evidence(f: dict, comp: str) -> list[dict]:
    """One evidence item per known evidence number of the finding; the value is copied as is."""
    ev = dict(f.get("evidence") or {})
    ranks = [int(r) for r in f.get("ranks", [])]
    r = ranks[0] if len(ranks) == 1 else None
    on = f"rank {r}" if r is not None else f"ranks {fmt.ranks_text(ranks)}"
    others = "its peers" if r is not None else "the other ranks"
    out: list[dict] = []

    def add(key: str, text: str) -> None:
        out.append(_item(f, key, ev[key], text))

    steps = ev.get("steps")
    if isinstance(steps, (list, tuple)) and len(steps) == 2:
        add("steps", "the fault spans " + _steps_text(steps, ev.get("abnormal_steps")))
    # Only the per-GPU slowdowns lead; launch pacing and transfer keep their place in the order below.
    main_key = OWN_NUMBER.get(comp) if comp in ("gpu", "hbm", "pcie") else None
    order = [main_key] if main_key else []
    order += [
        "compute_bound_slowdown",
        "memory_bound_slowdown",
        "host_copy_slowdown",
        "launch_interval_ratio",
        "last_at",
        "peer_wait_ns",
        "launch_delay_share",
        "late_share_of_step",
        "wait_share",
        "arrival_skew_ns",
        "transfer_ratio",
        "transfer_ns",
        "spans_hosts",
        "silent_ns",
        "hung_collectives",
        "usual_collective_ns",
    ]
    done: set[str] = set()
    for key in order:
        if key is None or key in done or key not in ev or not isinstance(ev[key], (int, float)):
            continue
        done.add(key)
        v = ev[key]
        if key == "compute_bound_slowdown":
            add(key, _vs_peers(f"compute-bound kernels on {on}", v, f"the same kernels on {others}"))
        elif key == "memory_bound_slowdown":
            add(key, _vs_peers(f"memory-bound kernels on {on}", v, f"on {others}"))
        elif key == "host_copy_slowdown":
            add(key, _vs_peers(f"host<->device copies on {on}", v, f"on {others}"))
        elif key == "launch_interval_ratio":
            if v - 1.0 >= NOT_SLOWER:
                add(key, f"kernel launches on {on} are {fmt.ratio(v)} as far apart as on {others}")
            else:
                add(key, f"kernel launches on {on} are not further apart than on {others} ({fmt.ratio(v)})")
        elif key == "last_at" and _num(ev, "collectives") is not None:
            add(key, f"{on} arrives last at {v} of {int(ev['collectives'])} collectives")
        elif key == "peer_wait_ns":
            share = _num(ev, "wait_share_of_step")
            add(
                key,
                f"{others} wait {fmt.duration(v)} each for {on}"
                + (f" ({fmt.pct(share)} of the step time)" if share is not None else ""),
            )
        elif key == "launch_delay_share":
            if v >= 0.5:
                add(
                    key,
                    f"the host issued those collectives late: launch delay is {fmt.pct(v)} of its lateness",
                )
            else:
                add(key, f"its collectives were launched on time (launch delay {fmt.pct(v)} of its lateness)")
        elif key == "late_share_of_step" and v > 0:
            add(key, f"{on} arrives late at collectives by {fmt.pct(v)} of a step")
        elif key == "wait_share" and v > 0 and r is not None:
            add(key, f"the other ranks spend {fmt.pct(v)} of their collective time waiting for rank {r}")
        elif key == "arrival_skew_ns":
            add(
                key, f"median arrival skew at collectives (last start minus first start) is {fmt.duration(v)}"
            )
        elif key == "transfer_ratio":
            add(key, f"collective transfer time on {on} is {fmt.ratio(v)} its earlier value")
        elif key == "transfer_ns":
            add(key, f"median collective transfer time is {fmt.duration(v)}")
        elif key == "spans_hosts":
            add(
                key,
                "the collective group spans more than one host"
                if v
                else "the collective group stays on one host",
            )
        elif key == "silent_ns":
            add(key, f"{on} issues no GPU work for the last {fmt.duration(v)} of the trace")
        elif key == "hung_collectives":
            add(
                key,
                f"1 collective of {others} never completes"
                if v == 1
                else f"{v} collectives of {others} never complete",
            )
        elif key == "usual_collective_ns":
            add(key, f"a collective usually takes {fmt.duration(v)}")
    if f.get("anomaly_count"):
        out.append(
            _item(f, "anomaly_count", f["anomaly_count"], f"{f['anomaly_count']} anomalous kernel instances")
        )
    # Names arrive shortened (templates cut): distinct kernels can shorten to the same text.
    kernels = list(dict.fromkeys(k for k in f.get("kernels", []) if k))
    if kernels:
        out.append(_item(f, "kernels", list(kernels), "most affected kernels: " + "; ".join(kernels)))
    return out


def _num(ev: dict, key: str) -> float | None:
    v = ev.get(key)
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def _counter(f: dict, comp: str, kind: str, ranks: list[int], all_ranks: list[int]) -> list[str]:
    """Why not the other components, from this finding's own numbers (only statements the numbers support)."""
    ev = f.get("evidence") or {}
    c, m = _num(ev, "compute_bound_slowdown"), _num(ev, "memory_bound_slowdown")
    cp, ln = _num(ev, "host_copy_slowdown"), _num(ev, "launch_interval_ratio")
    ws, skew, tr = _num(ev, "wait_share"), _num(ev, "arrival_skew_ns"), _num(ev, "transfer_ratio")
    r = ranks[0] if len(ranks) == 1 else None
    out: list[str] = []
    if kind == "hang" and r is not None:
        out.append(
            f"rank {r} stops entirely instead of running slower, so this is not a slowdown of GPU compute"
        )
        return out
    if r is not None and comp in ("gpu", "hbm", "pcie", "cpu", "unknown"):
        if ws is not None and ws > 0:
            out.append(
                f"collectives on the other ranks are long only while they wait for rank {r} "
                f"({fmt.pct(ws)} of their collective time), so not NVLink"
            )
        elif skew is not None:
            out.append(
                f"one rank arrives late (median arrival skew {fmt.duration(skew)}); a slow link would slow "
                f"every rank's transfer instead, so not NVLink"
            )
    if comp == "gpu" and m is not None and c is not None:
        out.append(
            f"memory-bound kernels on rank {r} are {_slower(m)} against {_slower(c)} for compute-bound "
            f"kernels, so not HBM"
            if r is not None
            else "memory-bound kernels slow down less, so not HBM"
        )
    if comp == "hbm" and c is not None and m is not None:
        out.append(
            f"compute-bound kernels are {_slower(c)} against {_slower(m)} for memory-bound kernels, so not "
            f"GPU clocks"
        )
    if comp in ("gpu", "hbm") and ln is not None:
        out.append(
            f"the kernels themselves are longer while launch spacing is {fmt.ratio(ln)} that of the peers, "
            f"so not the host CPU"
        )
    if comp in ("cpu", "unknown", "pcie"):
        if c is not None and m is not None and max(c, m) < NOT_SLOWER:
            out.append(
                f"compute-bound kernels ({_small(c)}) and memory-bound kernels ({_small(m)}) are not slower "
                f"than on the peers, so not GPU compute or HBM"
            )
        elif c is not None and m is not None:
            out.append(
                f"compute-bound kernels are {_slower(c)} and memory-bound kernels {_slower(m)} than on the "
                f"peers, so not GPU compute or HBM"
            )
    if comp == "cpu" and cp is not None:
        out.append(
            f"host<->device copies are not slower than on the peers ({_small(cp)}), so not PCIe"
            if cp < NOT_SLOWER
            else f"host<->device copies are {_slower(cp)} than on the peers, so not PCIe"
        )
    if comp == "unknown" and ln is not None:
        out.append(f"launch spacing is {fmt.ratio(ln)} that of the peers, so not clearly the host CPU")
    if comp in ("nvlink", "nic"):
        tns = _num(ev, "transfer_ns")
        if skew is not None and (tns is None or skew <= tns):
            out.append(
                f"arrival skew stays at {fmt.duration(skew)}: no single rank is late, so not one GPU, its "
                f"memory or its host"
            )
        elif skew is not None and tns is not None:
            # A large skew means ranks do arrive late: say so rather than rule the ranks out.
            out.append(
                f"caveat: arrival skew is {fmt.duration(skew)}, longer than the transfer itself "
                f"({fmt.duration(tns)}), so a late rank may explain part of it"
            )
        if tr is not None:
            out.append(f"the transfer itself is {fmt.ratio(tr)} its earlier time on every rank of the group")
        if "spans_hosts" in ev:
            out.append(
                "the group crosses hosts, so the inter-node network rather than NVLink"
                if ev["spans_hosts"]
                else "the group stays on one host, so not the inter-node network"
            )
    if len(ranks) == 1 and len(all_ranks) > 1 and comp != "unknown":
        out.append(f"only rank {ranks[0]} of {len(all_ranks)} ranks shows it, so not a workload change")
    return out


def _chain(f: dict, comp: str, kind: str, cid: str, ranks: list[int], all_ranks: list[int]) -> list[str]:
    ev = f.get("evidence") or {}
    r = ranks[0] if len(ranks) == 1 else None
    peers = [x for x in all_ranks if x not in ranks]
    peers_t = (
        f"rank {peers[0]}"
        if len(peers) == 1
        else f"ranks {fmt.ranks_text(peers)}"
        if peers
        else "the other ranks"
    )
    wait = "waits" if len(peers) == 1 else "wait"
    ws, skew, late = _num(ev, "wait_share"), _num(ev, "arrival_skew_ns"), _num(ev, "late_share_of_step")
    chain: list[str] = []
    if kind == "hang":
        chain.append(
            f"rank {r} stops issuing GPU work"
            + (f" ({fmt.duration(ev['silent_ns'])} silent)" if _num(ev, "silent_ns") is not None else "")
        )
        chain.append(f"{peers_t} {'blocks' if len(peers) == 1 else 'block'} in the next collective")
        chain.append("the job stalls (a fatal GPU memory error, Xid 48/63/94, is the usual cause)")
        return chain
    if comp in ("nvlink", "nic"):
        tr = _num(ev, "transfer_ratio")
        chain.append(f"{cid} slower" + (f" (transfer {fmt.ratio(tr)})" if tr is not None else ""))
        chain.append(f"collectives of ranks {fmt.ranks_text(ranks)} take longer on every rank")
        chain.append("every step waits for the slower collectives")
        return chain
    cause = {
        "gpu": ("compute_bound_slowdown", "slow compute-bound kernels"),
        "hbm": ("memory_bound_slowdown", "slow memory-bound kernels"),
        "pcie": ("host_copy_slowdown", "slow host<->device copies"),
    }.get(comp)
    if cause and _num(ev, cause[0]) is not None:
        chain.append(f"{cid} {cause[1]} (+{fmt.pct(ev[cause[0]])})")
    elif _num(ev, "launch_delay_share") is not None and ev["launch_delay_share"] >= 0.5:
        chain.append(f"the host of rank {r} issues its collectives late")
    elif _num(ev, "last_at") is not None:
        chain.append(f"rank {r} falls behind before its GPU (cause not visible in the trace)")
    elif comp == "cpu" and _num(ev, "launch_interval_ratio") is not None:
        chain.append(
            f"host CPU of rank {r} launches kernels {fmt.ratio(ev['launch_interval_ratio'])} as far apart"
        )
    else:
        chain.append(f"rank {r} falls behind" if r is not None else f"{cid} falls behind")
    late_t = f"rank {r} arrives last at collectives" if r is not None else "late arrival at collectives"
    if _num(ev, "last_at") is not None and _num(ev, "collectives") is not None:
        late_t = f"rank {r} arrives last at {ev['last_at']} of {int(ev['collectives'])} collectives"
    elif skew is not None and skew > 0:
        late_t += f" (median skew {fmt.duration(skew)})"
    chain.append(late_t)
    pw, pws = _num(ev, "peer_wait_ns"), _num(ev, "wait_share_of_step")
    if pw is not None and pws is not None:
        each = "" if len(peers) == 1 else " each"
        chain.append(f"{peers_t} {wait} {fmt.duration(pw)}{each} ({fmt.pct(pws)} of the step time)")
    elif ws is not None and ws > 0:
        their = "its" if len(peers) == 1 else "their"
        chain.append(f"{peers_t} {wait} ({fmt.pct(ws)} of {their} collective time)")
    else:
        chain.append(f"{peers_t} {wait}")
    if late is not None and late > 0:
        chain.append(f"every step stretches by about {fmt.pct(late)}")
    return chain


def _playbooks(comp: str, kind: str) -> list[Playbook]:
    if kind == "hang":
        first = [b for b in (playbook("gpu_hang"),) if b is not None]
        return first + [b for b in playbooks_for("hbm") if b.id != "gpu_hang"]
    if comp == "unknown":
        return [
            b
            for b in (playbook(p) for p in ("scheduler_batching", "cuda_graphs", "host_cpu_contention"))
            if b
        ]
    return playbooks_for(comp)


def _placeholder_values(ranks: list[int], topology: nx.Graph | None) -> dict[str, str]:
    vals: dict[str, str] = {"ngpus": str(len(ranks))} if len(ranks) > 1 else {}
    if topology is None or not ranks:
        return vals
    from kat_gui.topology import gpu_of_rank

    devs = []
    for r in ranks:
        node = gpu_of_rank(topology, r)
        dev = topology.nodes[node].get("device") if node is not None else None
        if dev is None:
            return vals
        devs.append(str(int(dev)))
    vals["gpu"] = ",".join(dict.fromkeys(devs))
    return vals


def _checks(books: list[Playbook], ranks: list[int], topology: nx.Graph | None) -> list[str]:
    """Up to MAX_CHECKS checks, the primary playbook's first; placeholders filled where the topology knows them."""
    vals = _placeholder_values(ranks, topology)
    assumed = topology is not None and "gpu" in vals and not topology.graph.get("ranks_known", True)
    out: list[str] = []
    for i, b in enumerate(books):
        take = b.checks if i == 0 else b.checks[:1]
        for c in take:
            cmds = [fill_placeholders(x, vals) for x in c.commands]
            line = " / ".join(f"`{x}`" for x in cmds) if cmds else c.text
            if c.look_for:
                line += f" — {c.look_for}"
            if assumed and any("<gpu>" in x for x in c.commands):
                line += " (GPU index assumed from rank order: the topology does not name ranks)"
            out.append(line)
            if len(out) >= MAX_CHECKS:
                return out
    return out
