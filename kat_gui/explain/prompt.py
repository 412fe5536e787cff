"""Prompts and output constraints for the local model. The prompt holds only the computed facts (trace strings
reach them only through ``grounding.sanitize_trace_text``).

Two styles, both measured in ``benchmarks/results/explain.md``:
- ``select`` (default): the model reads the numbered facts and, under a GBNF grammar, answers with the numbers of
  the facts to tell, fact 1 (the diagnosis) first, then 1-3 distinct others in the order it chooses; the text is
  those fact sentences. It generates ~7 tokens instead of ~90, and a 135M model cannot add an invented number.
- ``free``: the model writes the story in at most five sentences (diagnosis, its number, who waits for it and
  how much, why not the nearest other component, the first check) from the story facts only
  (``facts.story``, the headline without its confidence, one per line: ~100-150 prompt tokens after the cached
  prefix); the grounding verifier drops what the facts do not support. KAT's explainer adapter is trained for it.
"""

from __future__ import annotations

import re

from kat_gui.explain.facts import Fact, story

STYLES = ("select", "free")
MAX_PROMPT_FACTS = 9  # single-digit fact numbers keep the select grammar to one token per choice
PROMPT_FACT_WORDS = 8  # select style: the model sees each fact cut to this many words (it only picks numbers)
# Everything that does not depend on the run comes first (system turn, then the user turn's "Facts:" header), so
# the evaluated prefix is identical across runs and can be reused (``LocalModel.warm_prefix``); the facts come last.
SYSTEM = (
    "You summarise a diagnosis for an engineer. Use only the given facts; never add a number, rank or GPU."
)
ASK = {
    "select": "The user lists numbered facts; fact 1 is the diagnosis. Answer with the numbers of the facts that "
    "explain fact 1 best, 1 first, most important next.",
    "free": "The user lists facts: the diagnosis, its evidence, the effect on the other ranks, why not another "
    "component, the first check. Explain them in at most 5 short sentences, in that order, with their numbers.",
}
FACTS_HEADER = "Facts:\n"


def _clean_fact(text: str) -> str:
    # Facts are our own sentences; still keep them one line and free of chat-template markers.
    t = re.sub(r"<\|[^|>]*\|>", " ", text)
    return " ".join(t.split())


def compact_fact(text: str, max_words: int = PROMPT_FACT_WORDS) -> str:
    """The short form the select-style prompt shows: no parentheticals, at most ``max_words`` words.

    Prompt evaluation is the whole latency on a CPU (~200 tokens/s on 2 cores), and the model only chooses fact
    numbers: what the user sees is always the full fact sentence."""
    t = re.sub(r"\s*\([^()]*\)", "", _clean_fact(text))
    # Measured token costs: "µs" is 3-4 byte tokens, the confidence 6; neither helps the model choose facts.
    t = (
        re.sub(r",? confidence \d+(\.\d+)?", "", t)
        .replace("µs", "us")
        .replace("Most likely cause:", "Cause:")
    )
    # Mangled kernel names tokenize at ~1 token per 2 characters: a stub is enough to tell the facts apart.
    words = [w if len(w) <= 16 else w[:10] + "…" for w in t.split()]
    cut = " ".join(words[:max_words])
    return cut.rstrip(".,;:") + ("." if len(words) <= max_words else "")


def prompt_facts(facts: list[Fact]) -> list[Fact]:
    """The facts the model sees, numbered from 1 (check commands are listed with the hypotheses instead)."""
    return [f for f in facts if f.role != "check"][:MAX_PROMPT_FACTS]


def story_line(text: str) -> str:
    """A story fact as the free-style prompt shows it: one line, the confidence left out (7 tokens the
    explanation does not need; the full fact stays in the grounding allow-list)."""
    return re.sub(r",? confidence \d+(\.\d+)?", "", _clean_fact(text))


def _messages_for(lines: list[str], style: str) -> list[dict]:
    # select: numbered (the model answers with the numbers); free: plain lines, ~2 tokens a line fewer.
    listing = "\n".join(f"{i + 1}. {t}" if style == "select" else t for i, t in enumerate(lines))
    return [
        {"role": "system", "content": f"{SYSTEM} {ASK[style]}"},
        {"role": "user", "content": FACTS_HEADER + listing},
    ]


def messages(facts: list[Fact], style: str = "select") -> list[dict]:
    """Chat messages: the fixed instructions first, the run's facts last (select: numbered and compact; free: the
    story facts, see :func:`story_line`)."""
    if style != "select":
        return _messages_for([story_line(f.text) for f in story(facts)], style)
    shown = prompt_facts(facts)
    # The headline keeps its component and GPU: it is what the other facts are chosen to explain.
    return _messages_for(
        [compact_fact(f.text, 14 if i == 0 else PROMPT_FACT_WORDS) for i, f in enumerate(shown)], style
    )


def prefix_probes(style: str = "select") -> tuple[list[dict], list[dict]]:
    """Two prompts that differ only in their facts: their common token prefix is the run-independent part."""
    return _messages_for(["Most likely cause: a."], style), _messages_for(["No anomaly found."], style)


def select_grammar(facts: list[Fact], max_extra: int = 3) -> str:
    """GBNF over fact numbers: "1", then 1..max_extra distinct other numbers, space-separated.

    One rule per set of numbers already written (C(n-1,1) + ... + C(n-1,max_extra-1) rules, n <= 9), so the
    model cannot repeat a fact."""
    n = len(prompt_facts(facts))
    others = list(range(2, n + 1))
    if not others:
        return 'root ::= "1"\n'
    k = max(1, min(max_extra, len(others)))

    def name(used: tuple[int, ...]) -> str:
        return "t" + "".join(f"x{i}" for i in used)

    lines = ['root ::= "1" t']
    todo: list[tuple[int, ...]] = [()]
    seen: set[tuple[int, ...]] = set()
    while todo:
        used = todo.pop()
        if used in seen:
            continue
        seen.add(used)
        alts = []
        for i in others:
            if i in used:
                continue
            nxt = tuple(sorted((*used, i)))
            alts.append(f'" {i}" {name(nxt)}' if len(nxt) < k else f'" {i}"')
            if len(nxt) < k:
                todo.append(nxt)
        body = " | ".join(alts)
        lines.append(f"{name(used)} ::= " + (body if not used else f"( {body} )?"))
    return "\n".join(lines) + "\n"


def chosen_facts(output: str, facts: list[Fact]) -> list[Fact]:
    """The facts a select-style answer names, in its order (unknown or repeated numbers ignored)."""
    shown = prompt_facts(facts)
    out: list[Fact] = []
    for tok in re.findall(r"\d+", output):
        i = int(tok) - 1
        if 0 <= i < len(shown) and shown[i] not in out:
            out.append(shown[i])
    return out


def max_tokens_for(facts: list[Fact], style: str) -> int:
    """Bound generation: "1 a b c" in select style (a few tokens), at most 5 short sentences in free style."""
    return 200 if style == "free" else 12
