"""The facts an explanation may state: short sentences computed from the hypotheses (and from ``detect/meta`` for
a healthy run), plus the retrieved playbook check. They are the whole prompt of the language model, the whole
allow-list of the grounding verifier, and the material of the deterministic narrative."""

from __future__ import annotations

from dataclasses import dataclass

from kat_gui.reasoning import COMPONENT_NOUN, OWN_NUMBER, Hypothesis, fmt

MAX_EVIDENCE_FACTS = 3
MAX_COUNTER_FACTS = 2
KERNEL_FACT_CHARS = 40
HEADLINE_NOUN = {
    "gpu": "a GPU compute slowdown",
    "hbm": "a GPU memory (HBM) problem",
    "nvlink": "NVLink degradation",
    "pcie": "a slow PCIe link",
    "nic": "a network (NIC) slowdown",
    "cpu": "host CPU stalls",
}


@dataclass(frozen=True)
class Fact:
    text: str
    role: str  # headline | evidence | counter | chain | check | second | healthy


def _sentence(s: str) -> str:
    s = " ".join(s.split()).rstrip(". ")
    return (s[:1].upper() + s[1:] + ".") if s else ""


def _who(h: Hypothesis) -> str:
    if h.kind == "hang" or h.component in ("gpu", "hbm", "pcie", "cpu", "unknown"):
        if len(h.ranks) == 1:
            return (
                f"{h.component_id} (rank {h.ranks[0]})"
                if h.component_id.upper().startswith("GPU")
                else f"rank {h.ranks[0]}"
            )
    return f"{h.component_id} (ranks {fmt.ranks_text(h.ranks)})" if h.ranks else h.component_id


def _upper_first(s: str) -> str:
    """ "rank 7" -> "Rank 7"; "GPU7 (rank 7)" stays as it is (str.capitalize would write "Gpu7")."""
    return s[:1].upper() + s[1:]


def headline(h: Hypothesis) -> str:
    conf = f"confidence {h.confidence:.2f}"
    noun = HEADLINE_NOUN.get(h.component, COMPONENT_NOUN.get(h.component, h.component))
    if h.kind == "hang":
        return _sentence(f"Most likely cause: a hang of {_who(h)}, usually a fatal GPU memory error, {conf}")
    if h.component == "unknown" and any(e.get("key") == "last_at" for e in h.evidence):
        return _sentence(
            f"{_upper_first(_who(h))} is the straggler: the cause is not visible in the trace, {conf}"
        )
    if h.component == "unknown":
        return _sentence(
            f"{_upper_first(_who(h))} arrives late without slower kernels or launches, "
            f"so the cause is not clear from the trace, {conf}"
        )
    return _sentence(f"Most likely cause: {noun} on {_who(h)}, {conf}")


def _evidence_order(h: Hypothesis) -> list[dict]:
    """Evidence that best tells the story first: the component's own number, then waiting and skew."""
    pri = {
        "compute_bound_slowdown": 0,
        "memory_bound_slowdown": 0,
        "host_copy_slowdown": 0,
        "launch_interval_ratio": 0,
        "transfer_ratio": 0,
        "silent_ns": 0,
        "launch_delay_share": 0,
        "last_at": 1,
        "peer_wait_ns": 2,
        "hung_collectives": 1,
        "wait_share": 2,
        "arrival_skew_ns": 3,
        "late_share_of_step": 4,
        "spans_hosts": 5,
        "steps": 6,
    }
    # Links: every own-number fact is told (transfer and, when present, the other slowdowns).
    main = None if h.component in ("nvlink", "nic") else OWN_NUMBER.get(h.component)
    if any(e.get("key") == "last_at" for e in h.evidence):
        # A straggler: its own launch pacing is not the story, its late collective launches are.
        main = "launch_delay_share" if h.component == "cpu" else "__none__"
    items = [e for e in h.evidence if e.get("key") in pri]
    # Secondary slowdowns (e.g. memory-bound on a GPU-compute finding) belong to the counter-evidence.
    items = [e for e in items if pri[e["key"]] != 0 or main is None or e["key"] == main]
    return sorted(items, key=lambda e: pri[e["key"]])


def build_facts(hyps: list[Hypothesis], meta: dict | None = None) -> list[Fact]:
    """Ordered facts: headline, evidence, counter-evidence, chain, first check, runner-up. Healthy: what was checked."""
    meta = meta or {}
    if not hyps:
        return healthy_facts(meta)
    h = hyps[0]
    facts = [Fact(headline(h), "headline")]
    facts += [Fact(_sentence(e["text"]), "evidence") for e in _evidence_order(h)[:MAX_EVIDENCE_FACTS]]
    kern = next((e for e in h.evidence if e.get("key") == "kernels"), None)
    if kern and kern["value"]:
        # One name, short: long mangled names cost ~40 prompt tokens each (the full list is in the evidence).
        name = str(kern["value"][0])
        name = name if len(name) <= KERNEL_FACT_CHARS else name[: KERNEL_FACT_CHARS - 1] + "…"
        facts.append(Fact(_sentence(f"Most affected kernel: {name}"), "evidence"))
    facts += [Fact(_sentence(c), "counter") for c in h.counter_evidence[:MAX_COUNTER_FACTS]]
    if h.chain:
        facts.append(Fact(_sentence("Cause and effect: " + ", then ".join(h.chain)), "chain"))
    if h.next_checks:
        cmd = h.next_checks[0].split(" — ")[0]
        facts.append(Fact(_sentence(f"First check: {cmd}"), "check"))
    if len(hyps) > 1:
        h2 = hyps[1]
        noun2 = HEADLINE_NOUN.get(h2.component, COMPONENT_NOUN.get(h2.component, h2.component))
        facts.append(
            Fact(_sentence(f"Runner-up: {noun2} on {_who(h2)}, confidence {h2.confidence:.2f}"), "second")
        )
    seen: set[str] = set()
    out = []
    for f in facts:  # one fault seen in two windows can repeat a sentence word for word
        if f.text and f.text not in seen:
            seen.add(f.text)
            out.append(f)
    return out


def healthy_facts(meta: dict) -> list[Fact]:
    steps = (meta.get("steps") or {}).get("count")
    coll = (meta.get("collectives") or {}).get("instances")
    skew = (meta.get("collectives") or {}).get("median_arrival_skew_ns")
    ranks = meta.get("ranks") or []
    facts = [Fact("No anomaly found.", "healthy")]
    what = []
    if ranks:
        what.append(f"{len(ranks)} ranks")
    if steps:
        what.append(f"{steps} steps")
    if coll:
        what.append(f"{coll} collective instances")
    if what:
        facts.append(Fact(_sentence("Checked " + ", ".join(what)), "healthy"))
    facts.append(
        Fact(
            "No rank's kernels, copies or launches deviate from its peers or from its own history beyond "
            "the detector's thresholds.",
            "healthy",
        )
    )
    facts.append(
        Fact(
            "No collective is slower than its own history on every rank, and no rank stops early.", "healthy"
        )
    )
    if skew is not None and coll:
        facts.append(
            Fact(
                _sentence(
                    f"Median arrival skew at collectives is {fmt.duration(skew)}, with no rank "
                    f"arriving last persistently"
                ),
                "healthy",
            )
        )
    return facts


def narrative(facts: list[Fact]) -> str:
    """The deterministic narrative: the facts in their computed order, as one paragraph (checks on their own line)."""
    body = [f.text for f in facts if f.role not in ("check", "second")]
    tail = [f.text for f in facts if f.role in ("check", "second")]
    return " ".join(body) + ("\n" + " ".join(tail) if tail else "")
