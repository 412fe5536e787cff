"""The facts an explanation may state: short sentences computed from the hypotheses (and from ``detect/meta`` for
a healthy run), plus the retrieved playbook check. They are the allow-list of the grounding verifier, the material
of the deterministic narrative and, through :func:`story`, of the language model's prompt.

The story of a fault is its causal chain in at most five facts: the diagnosis (culprit and component), the
component's own number, the effect on the other ranks (who waits and how much: the peers' share of collective
time spent waiting and the median of the symptom waits the detector stored, ``wait_ns`` of the symptom rows, per
finding from ``explain.core.load_store_inputs``; for links the extra time per collective), the strongest why-not (counter-evidence that rules
out the nearest other component with its numbers) and the first check from the knowledge base, its GPU index
filled in or the rank whose host to run it on named. :func:`story_parts` tells which of those parts a text
states. Durations come from ``reasoning.fmt`` (ns in, "12.3 µs" out)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from kat_gui.explain.grounding import components, gpus, numbers, ranks, split_sentences, verify
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
    role: str  # headline | evidence | effect | counter | chain | check | second | healthy


# Which other component each finding's why-not should rule out first (the one an engineer would suspect next).
NEAREST = {
    "gpu": ("hbm", "cpu", "nvlink"),
    "hbm": ("gpu", "cpu", "nvlink"),
    "pcie": ("gpu", "hbm", "nvlink"),
    "cpu": ("gpu", "hbm", "pcie", "nvlink"),
    "nvlink": ("nic",),
    "nic": ("nvlink",),
}
STORY_ROLES = ("headline", "evidence", "effect", "counter", "check")
# Placeholders KAT cannot fill from a trace and a user cannot fill without a lookup: a check with one is skipped
# for the first check while another command needs none of them.
_UNFILLED = ("<gpu>", "<ngpus>", "<bus id>")
_WAIT_WORDS = re.compile(r"\b(wait|waits|waiting|waited|block|blocks|blocked|longer)\b", re.IGNORECASE)


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
    if h.kind == "hang":
        main = "silent_ns"
    if any(e.get("key") == "last_at" for e in h.evidence):
        # A straggler: its own launch pacing is not the story, its late collective launches are.
        main = "launch_delay_share" if h.component == "cpu" else "__none__"
    items = [e for e in h.evidence if e.get("key") in pri]
    # Secondary slowdowns (e.g. memory-bound on a GPU-compute finding) belong to the counter-evidence.
    items = [e for e in items if pri[e["key"]] != 0 or main is None or e["key"] == main]
    return sorted(items, key=lambda e: pri[e["key"]])


def _peers(h: Hypothesis, meta: dict) -> list[int]:
    return [int(r) for r in meta.get("ranks") or [] if int(r) not in h.ranks]


def _ranks_subject(rs: list[int]) -> tuple[str, bool]:
    """("Ranks 0-1,3", plural) for a sentence subject; ("The other ranks", True) when they are not known."""
    if not rs:
        return "The other ranks", True
    return (f"Rank {rs[0]}", False) if len(rs) == 1 else (f"Ranks {fmt.ranks_text(rs)}", True)


def _waits(h: Hypothesis, findings: list[dict] | None) -> dict | None:
    """The symptom waits of the hypothesis' findings (``symptom_waits`` of ``load_store_inputs``), merged."""
    ws = [
        f["symptom_waits"]
        for f in findings or []
        if int(f.get("id", -1)) in h.finding_ids and isinstance(f.get("symptom_waits"), dict)
    ]
    ws = [w for w in ws if w.get("count") and w.get("total_ns") and w.get("ranks")]
    if not ws:
        return None
    best = max(ws, key=lambda w: w["total_ns"])  # one fault in several windows: the largest window speaks
    return {
        "ranks": sorted({int(r) for r in best["ranks"]}),
        "count": int(best["count"]),
        "total_ns": float(best["total_ns"]),
        "median_ns": float(best.get("median_ns") or 0.0),
    }


def _ev(h: Hypothesis, key: str) -> float | None:
    e = next((e for e in h.evidence if e.get("key") == key), None)
    v = e.get("value") if e else None
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def effect(h: Hypothesis, meta: dict, findings: list[dict] | None = None) -> tuple[str | None, set[str]]:
    """(The effect on the other ranks as one sentence, the evidence keys it restates) for the top hypothesis.

    Single-rank faults: who waits for the culprit and how much (the peers' share of collective time waiting,
    and the median of the stored symptom waits); hangs: who blocks in collectives that never complete; link
    faults: every rank of the group waits longer per collective (the transfer's added time: median transfer
    time minus that time divided by the transfer ratio)."""
    pw = next((e for e in h.evidence if e.get("key") == "peer_wait_ns"), None)
    if pw is not None:  # a straggler finding states its peers' wait itself
        return _sentence(pw["text"]), {"peer_wait_ns"}
    waits = _waits(h, findings)
    peers = _peers(h, meta)
    if h.kind == "hang" and len(h.ranks) == 1:
        n = _ev(h, "hung_collectives")
        who, plural = _ranks_subject(waits["ranks"] if waits else peers)
        text = f"{who} {'block' if plural else 'blocks'} waiting for rank {h.ranks[0]}"
        if n is not None:
            text += (
                f" in {int(n)} collective{'s' if n != 1 else ''} that never complete{'' if n != 1 else 's'}"
            )
        if waits and waits["median_ns"] > 0:
            text += f", {fmt.duration(waits['median_ns'])} each"
        return _sentence(text), {"hung_collectives"}
    if h.component in ("nvlink", "nic") and len(h.ranks) > 1:
        tr, tns = _ev(h, "transfer_ratio"), _ev(h, "transfer_ns")
        if tr is None or tns is None or tr <= 1.0:
            return None, set()
        extra = tns - tns / tr
        return (
            _sentence(
                f"Ranks {fmt.ranks_text(h.ranks)} all wait about {fmt.duration(extra)} longer in every "
                f"collective (median transfer {fmt.duration(tns)})"
            ),
            set(),
        )
    if len(h.ranks) != 1:
        return None, set()
    r = h.ranks[0]
    ws = _ev(h, "wait_share")
    share_ok = ws is not None and ws > 0 and (waits is None or not peers or waits["ranks"] == peers)
    who, plural = _ranks_subject(waits["ranks"] if waits else peers)
    parts = []
    if share_ok:
        parts.append(f"{fmt.pct(ws)} of {'their' if plural else 'its'} collective time")
    if waits and waits["median_ns"] > 0:
        parts.append(f"a median {fmt.duration(waits['median_ns'])} per collective")
    if not parts:
        return None, set()
    text = f"{who} {'wait' if plural else 'waits'} for rank {r}: " + ", ".join(parts)
    return _sentence(text), ({"wait_share"} if share_ok else set())


def _counter_order(h: Hypothesis) -> list[str]:
    """Counter-evidence, the why-nots of the nearest other components first (their numbers in them), then the
    other why-nots, then caveats and the rest; stable otherwise."""
    near = NEAREST.get(h.component, ())

    def key(c: str) -> tuple[int, int]:
        ruled = components(c, negated=True) - {h.component}
        if ruled & set(near):
            return 0, min(near.index(x) for x in ruled & set(near))
        if ruled or " so not " in f" {c} ":
            return 1, 0
        return 2, 0

    return sorted(h.counter_evidence, key=key)


def _commands(line: str) -> list[str]:
    """The backticked commands of a check line (before its " — what to look for"). The knowledge parser also keeps
    backticked words of the explanation (`LnkSta` of the lspci grep) and flags (`--enforce-eager`): skipped."""
    cmds = re.findall(r"`([^`]+)`", line.split(" — ")[0])
    return [c for c in cmds if not c.startswith("-") and not any(c != o and c in o for o in cmds)]


def first_check(h: Hypothesis) -> str | None:
    """The first check as a fact: the playbook's first command that KAT could fill in (GPU index) or that needs
    no lookup (a later check's when every command of the first needs one, e.g. a PCIe bus id), and where to run
    it when the command names no GPU (the host of the culprit rank or ranks). A first check without a command is
    told as written."""
    gpu = re.fullmatch(r"GPU(\d+)", h.component_id.strip())
    pick = None
    for i, line in enumerate(h.next_checks):
        cmds = _commands(line)
        if gpu and len(h.ranks) == 1:  # no topology: the headline's GPU is the one to check
            cmds = [c.replace("<gpu>", gpu.group(1)) for c in cmds]
        if not cmds and i == 0:
            text = line.split(" — ")[0].strip()
            return _sentence(f"First check: {text[:1].lower() + text[1:]}") if text else None
        pick = pick or (cmds[0] if cmds else None)
        good = [c for c in cmds if not any(p in c for p in _UNFILLED)]
        if good:
            pick = good[0]
            break
    if pick is None:
        return None
    if re.search(r"-i [\d,]+", pick) or not h.ranks:
        return _sentence(f"First check: `{pick}`")
    where = (
        f"on the host of rank {h.ranks[0]}"
        if len(h.ranks) == 1
        else f"on the hosts of ranks {fmt.ranks_text(h.ranks)}"
    )
    return _sentence(f"First check, {where}: `{pick}`")


def build_facts(
    hyps: list[Hypothesis], meta: dict | None = None, findings: list[dict] | None = None
) -> list[Fact]:
    """Ordered facts: headline, own evidence, effect on the other ranks, counter-evidence (why not the nearest
    components first), the other evidence, chain, first check, runner-up. Healthy: what was checked.
    ``findings`` (optional) supply the stored symptom waits of the top hypothesis."""
    meta = meta or {}
    if not hyps:
        return healthy_facts(meta)
    h = hyps[0]
    eff, restated = effect(h, meta, findings)
    ev = [e for e in _evidence_order(h) if e["key"] not in restated][:MAX_EVIDENCE_FACTS]
    facts = [Fact(headline(h), "headline")]
    facts += [Fact(_sentence(e["text"]), "evidence") for e in ev[:1]]
    if eff:
        facts.append(Fact(eff, "effect"))
    facts += [Fact(_sentence(c), "counter") for c in _counter_order(h)[:MAX_COUNTER_FACTS]]
    facts += [Fact(_sentence(e["text"]), "evidence") for e in ev[1:]]
    kern = next((e for e in h.evidence if e.get("key") == "kernels"), None)
    if kern and kern["value"]:
        # One name, short: long mangled names cost ~40 prompt tokens each (the full list is in the evidence).
        name = str(kern["value"][0])
        name = name if len(name) <= KERNEL_FACT_CHARS else name[: KERNEL_FACT_CHARS - 1] + "…"
        facts.append(Fact(_sentence(f"Most affected kernel: {name}"), "evidence"))
    if h.chain:
        facts.append(Fact(_sentence("Cause and effect: " + ", then ".join(h.chain)), "chain"))
    check = first_check(h)
    if check:
        facts.append(Fact(check, "check"))
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


def story(facts: list[Fact]) -> list[Fact]:
    """The causal chain in at most five facts, in telling order: diagnosis, the component's own number, the effect
    on the other ranks, the first why-not, the first check. A healthy run: its facts (what was checked)."""
    if facts and facts[0].role == "healthy":
        return facts[:5]
    eff = next((x.text for x in facts if x.role == "effect"), "")
    said = {n for n in numbers(eff) if n[1]}
    out: list[Fact] = []
    for role in STORY_ROLES:
        cands = [x for x in facts if x.role == role]
        if role == "counter":  # a why-not that does not only repeat the effect's numbers
            cands = [x for x in cands if _is_why_not(x.text) and not _restates(x.text, said)]
        if cands:
            out.append(cands[0])
    return out


def _restates(text: str, said: set) -> bool:
    nums = {n for n in numbers(text) if n[1]}
    return bool(nums) and nums <= said


def _is_why_not(text: str) -> bool:
    """Counter-evidence that rules a component out (not a caveat or a plain observation)."""
    return bool(re.search(r"\bso (?:this is )?not\b|\brather than\b", text))


def narrative(facts: list[Fact]) -> str:
    """The deterministic narrative: the story (diagnosis, own number, effect on the other ranks, why not), then
    the first check and the runner-up on their own line."""
    told = story(facts)
    body = [f.text for f in told if f.role != "check"]
    tail = [f.text for f in told if f.role == "check"] + [f.text for f in facts if f.role == "second"]
    return " ".join(body) + ("\n" + " ".join(tail) if tail else "")


STORY_PARTS = ("culprit", "component", "wait", "check")


def story_parts(text: str, facts: list[Fact]) -> dict[str, bool]:
    """Which parts of the story ``text`` states, each counted only in a sentence that passes grounding against
    ``facts``: ``culprit`` (a GPU id or rank of the headline), ``component`` (the headline's component, asserted),
    ``wait`` (a waiting word with a number that has a unit from the effect fact, i.e. who waits and how much),
    ``check`` (the first check's command in backticks, or its words when it has no command). All False for a healthy run (no story)."""
    out = dict.fromkeys(STORY_PARTS, False)
    head = next((f.text for f in facts if f.role == "headline"), None)
    if head is None:
        return out
    texts = [f.text for f in facts]
    eff = next((f.text for f in facts if f.role == "effect"), "")
    eff_nums = {n for n in numbers(eff) if n[1]}
    chk = next((f.text for f in facts if f.role == "check"), "")
    cmd = re.findall(r"`[^`]+`", chk) or [re.sub(r"^First check[^:]*:\s*", "", chk).rstrip(".").lower()]
    h_gpus, h_ranks = gpus(head), ranks(head)
    h_comps = components(head, negated=False)
    for sent in split_sentences(text):
        if verify(sent, texts).verified != 1:
            continue
        out["culprit"] |= bool(gpus(sent) & h_gpus or ranks(sent) & h_ranks)
        out["component"] |= bool(components(sent, negated=False) & h_comps)
        out["wait"] |= bool(_WAIT_WORDS.search(sent) and numbers(sent) & eff_nums)
        out["check"] |= bool(cmd[0] and cmd[0] in (sent if cmd[0].startswith("`") else sent.lower()))
    return out
