"""Grounding: keep a language model to the computed facts.

Two halves:
- ``sanitize_trace_text``: trace strings (kernel names) enter the prompt only through it — control characters
  stripped, template/argument lists cut, length capped, and anything that reads like instructions replaced by a
  neutral label, so a kernel name cannot steer the model;
- ``verify``: split the model's text into sentences and keep a sentence only when every claim in it — GPU ids,
  ranks, component names, numbers with their units — appears in the facts, the claims of the sentence are found
  together in at most two facts, most of its content words come from those facts, and it does not assert a
  component the facts only rule out. Anything else is dropped and reported.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from dataclasses import dataclass, field

from kat_gui.reasoning.fmt import expand_ranks

MAX_NAME_CHARS = 60
_SUSPICIOUS = re.compile(
    r"ignore|disregard|forget|instruction|prompt|system|assistant|\buser\b|you are|you must|respond|answer|"
    r"im_start|im_end|<\||\|>|###|script|http|www\.|password|token",
    re.IGNORECASE,
)


def sanitize_trace_text(name: object, cap: int = MAX_NAME_CHARS) -> str:
    """A kernel/trace name made safe to show and to quote to a model (assumes nothing about its origin).

    Keeps the kernel's identity (``void ns::gemm_kernel<...>(...)`` -> ``ns::gemm_kernel``); a name that still
    reads like prose or instructions becomes ``kernel#<hash>`` (stable, so the user can match it in the trace).
    """
    s = "".join(ch if unicodedata.category(ch)[0] != "C" else " " for ch in str(name))
    raw = " ".join(s.split())
    s = re.sub(r"^void\s+", "", raw)
    cut = min((i for i in (s.find("<"), s.find("(")) if i > 0), default=len(s))
    s = s[:cut]
    s = re.sub(r"[^A-Za-z0-9_:.\- ]", " ", s)
    s = " ".join(s.split()).strip(" .:-")
    if not s or len(s.split()) > 3 or _SUSPICIOUS.search(raw):
        return "kernel#" + hashlib.sha1(raw.encode("utf-8", "replace")).hexdigest()[:8]
    return s if len(s) <= cap else s[: cap - 1] + "…"


# ---------------------------------------------------------------------- claims

_UNIT = {"%": "%", "x": "x", "×": "x", "ms": "ms", "µs": "us", "us": "us", "μs": "us", "ns": "ns", "s": "s"}
_NUM = re.compile(r"(?<![\w.])(\d+(?:\.\d+)?)(?:\s*(%|×|x(?![a-z])|ms\b|µs\b|μs\b|us\b|ns\b|s\b))?")
_GPU = re.compile(r"\bGPU\s?#?(\d+)\b", re.IGNORECASE)
_RANKS = re.compile(r"\branks?\s+(\d+(?:\s*-\s*\d+)?(?:\s*(?:,|and|&)\s*\d+(?:\s*-\s*\d+)?)*)", re.IGNORECASE)
_COMPONENT_WORDS = {
    "nvlink": re.compile(r"\bnvlink|nvswitch", re.IGNORECASE),
    "pcie": re.compile(r"\bpcie\b|\bpci\b", re.IGNORECASE),
    "hbm": re.compile(r"\bhbm\b|\bmemory error|\becc\b", re.IGNORECASE),
    "nic": re.compile(r"\bnic\b|\bnetwork\b|\brdma\b|infiniband", re.IGNORECASE),
    "cpu": re.compile(r"\bcpu\b|\bhost cpu\b", re.IGNORECASE),
    "gpu": re.compile(r"\bgpu compute\b|\bthrottl|\bclocks?\b", re.IGNORECASE),
}
_NEGATED = (
    r"(?:\bnot\b|\brules? out\b|\bless likely\b|\brather than\b|\bunlikely\b|\binstead of\b)[^.;:]{0,40}"
)
_STOP = set(
    "a an the and or of to in on at by for with from as is are was were be been it its this that these those "
    "than then so not no only about over into their there which while has have had do does did can could may "
    "might will would should also more most less very just such any each every other others".split()
)
_WORD = re.compile(r"[a-z][a-z\-]+")
_SENT = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9`\"(\[*-])|\n+")


def _norm_num(v: str) -> str:
    return v.rstrip("0").rstrip(".") if "." in v else v.lstrip("0") or "0"


def numbers(text: str) -> set[tuple[str, str]]:
    """(value, unit) pairs; GPU ids and digits inside identifiers are not numbers."""
    t = _GPU.sub(" ", text)
    return {(_norm_num(m.group(1)), _UNIT.get(m.group(2) or "", "")) for m in _NUM.finditer(t)}


def gpus(text: str) -> set[int]:
    return {int(m.group(1)) for m in _GPU.finditer(text)}


def ranks(text: str) -> set[int]:
    out: set[int] = set()
    for m in _RANKS.finditer(text):
        spec = re.sub(r"\s*(?:and|&)\s*", ",", m.group(1)).replace(" ", "")
        try:
            out.update(expand_ranks(spec))
        except ValueError:
            continue
    return out


def components(text: str, negated: bool | None = None) -> set[str]:
    """Component names mentioned; ``negated=False`` only the asserted mentions, ``True`` only the ruled-out ones."""
    out = set()
    for comp, rx in _COMPONENT_WORDS.items():
        for m in rx.finditer(text):
            before = text[max(0, m.start() - 48) : m.start()]
            is_neg = re.search(_NEGATED + r"$", before, re.IGNORECASE) is not None
            if negated is None or negated == is_neg:
                out.add(comp)
    return out


def content_words(text: str) -> set[str]:
    t = re.sub(r"`[^`]*`", " ", text.lower())
    return {w for w in _WORD.findall(t) if w not in _STOP and len(w) > 2}


_TOKEN = re.compile(
    r"(?<![\w.])\d+(?:\.\d+)?(?:\s*(?:%|×|x(?![a-z])|ms\b|µs\b|μs\b|us\b|ns\b|s\b))?|[A-Za-z][A-Za-z\-]+"
)


def number_contexts(text: str, near: int, far: int) -> list[tuple[tuple[str, str], list[str], list[str]]]:
    """For each number with a unit (or a decimal point): the content words just before and after it (``near``
    of them for a sentence, ``far`` for a fact). Binds a number to what it measures."""
    toks = []
    for m in _TOKEN.finditer(_GPU.sub(" ", text)):
        t = m.group(0)
        if t[0].isdigit():
            n = _NUM.match(t)
            toks.append(("num", (_norm_num(n.group(1)), _UNIT.get(n.group(2) or "", "")), t))
        elif t.lower() not in _STOP and len(t) > 2:
            toks.append(("word", t.lower(), t))
    out = []
    for i, (kind, val, raw) in enumerate(toks):
        if kind != "num" or (val[1] == "" and "." not in raw):
            continue
        before = [v for k, v, _ in toks[:i] if k == "word"]
        after = [v for k, v, _ in toks[i + 1 :] if k == "word"]
        out.append((val, before[-near:] if near else before, after[:near] if near else after))
    for j, (val, b, a) in enumerate(out):
        if far:
            out[j] = (val, b[-far:], a[:far])
    return out


def split_sentences(text: str) -> list[str]:
    parts = [p.strip(" \t-*•") for p in _SENT.split(text.strip())]
    return [p for p in parts if p and any(ch.isalnum() for ch in p)]


# ---------------------------------------------------------------------- verification


@dataclass
class _FactIndex:
    texts: list[str]
    nums: list[set]
    gpus: list[set]
    ranks: list[set]
    comps: list[set]
    asserted: set[str]
    words: list[set]
    contexts: list[list] = field(default_factory=list)

    @classmethod
    def build(cls, facts: list[str]) -> _FactIndex:
        return cls(
            texts=list(facts),
            nums=[numbers(f) for f in facts],
            gpus=[gpus(f) for f in facts],
            ranks=[ranks(f) for f in facts],
            comps=[components(f) for f in facts],
            asserted=set().union(*[components(f, negated=False) for f in facts]) if facts else set(),
            words=[content_words(f) for f in facts],
            contexts=[number_contexts(f, 0, 6) for f in facts],
        )


@dataclass
class GroundingReport:
    sentences: int = 0
    verified: int = 0
    dropped: list[dict] = field(default_factory=list)  # {"sentence", "reason"}
    claims_checked: int = 0
    kept: list[str] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return self.verified / self.sentences if self.sentences else 1.0

    def to_dict(self) -> dict:
        return {
            "sentences": self.sentences,
            "verified": self.verified,
            "dropped": list(self.dropped),
            "claims_checked": self.claims_checked,
            "rate": round(self.rate, 4),
        }


def check_sentence(sentence: str, idx: _FactIndex, min_support: float = 0.6) -> tuple[bool, str, int]:
    """(ok, reason if not, number of claims checked) for one sentence against the fact index."""
    s_nums, s_gpus, s_ranks = numbers(sentence), gpus(sentence), ranks(sentence)
    s_comps = components(sentence)
    n_claims = len(s_nums) + len(s_gpus) + len(s_ranks) + len(s_comps)
    all_nums = set().union(*idx.nums) if idx.nums else set()
    bare_ok = {v for v, _u in all_nums}
    for g in sorted(s_gpus - set().union(*idx.gpus)):
        return False, f"GPU{g} is not in the facts", n_claims
    for r in sorted(s_ranks - set().union(*idx.ranks)):
        return False, f"rank {r} is not in the facts", n_claims
    for v, u in sorted(s_nums):
        if (v, u) not in all_nums and not (u == "" and v in bare_ok):
            return False, f"number {v}{u} is not in the facts", n_claims
    for c in sorted(s_comps - set().union(*idx.comps)):
        return False, f"component {c} is not in the facts", n_claims
    for c in sorted(components(sentence, negated=False) - idx.asserted):
        return False, f"asserts {c}, which the facts rule out", n_claims
    # Each measured number must say what it says in a fact: the two content words on either side of it must be
    # among the six around the same number in some fact ("38% slower than its peers", not "... than GEMMs").
    for val, before, after in number_contexts(sentence, 2, 0):
        ok = any(
            fv == val and set(before) <= set(fb) and set(after) <= set(fa)
            for ctxs in idx.contexts
            for fv, fb, fa in ctxs
        )
        if not ok:
            return (
                False,
                f"{val[0]}{val[1]} is not said of {' '.join(before + ['…'] + after)} in the facts",
                n_claims,
            )
    # Support: the sentence's claims and most of its words must come from one or two facts.
    s_words = content_words(sentence)
    best = (-1.0, "")
    n = len(idx.texts)
    pairs = [(i, i) for i in range(n)] + [(i, j) for i in range(n) for j in range(i + 1, n)]
    for i, j in pairs:
        f_nums = idx.nums[i] | idx.nums[j]
        nums_ok = all((v, u) in f_nums or (u == "" and any(v == fv for fv, _ in f_nums)) for v, u in s_nums)
        ents_ok = (
            nums_ok
            and s_gpus <= (idx.gpus[i] | idx.gpus[j])
            and s_ranks <= (idx.ranks[i] | idx.ranks[j])
            and s_comps <= (idx.comps[i] | idx.comps[j])
        )
        if not ents_ok:
            continue
        words = idx.words[i] | idx.words[j]
        sup = len(s_words & words) / len(s_words) if s_words else 0.0
        if sup > best[0]:
            best = (sup, "")
    if best[0] < 0:
        return False, "its claims are not stated together in any fact", n_claims
    if not s_words and n_claims == 0:
        return False, "no content", n_claims
    if best[0] < min_support:
        return False, f"only {best[0]:.0%} of its words come from the facts", n_claims
    return True, "", n_claims


def verify(text: str, facts: list[str], min_support: float = 0.6) -> GroundingReport:
    """Check every sentence of ``text`` against ``facts`` (plain sentences: computed facts and playbook passages)."""
    idx = _FactIndex.build(facts)
    rep = GroundingReport()
    seen: set[str] = set()
    kept_words: list[set[str]] = []
    for sent in split_sentences(text):
        rep.sentences += 1
        key = " ".join(sent.lower().split())
        ok, why, n = check_sentence(sent, idx, min_support)
        rep.claims_checked += n
        words = content_words(sent)
        if ok and not sent.rstrip().endswith((".", "!", "?", "`")):
            ok, why = False, "unfinished sentence"
        if ok and (key in seen or any(words and len(words & w) >= 0.8 * len(words) for w in kept_words)):
            ok, why = False, "repeats an earlier sentence"
        if ok:
            kept_words.append(words)
        if ok:
            rep.verified += 1
            rep.kept.append(sent)
            seen.add(key)
        else:
            rep.dropped.append({"sentence": sent, "reason": why})
    return rep
