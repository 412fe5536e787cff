"""Prompts and output constraints for the local model. The prompt holds only the computed facts (and the one
retrieved playbook check among them); trace strings reach it only through ``grounding.sanitize_trace_text``.

Two styles, both measured in ``benchmarks/results/explain.md``:
- ``select`` (default): a GBNF grammar lets the model write only the headline fact followed by 1-3 of the other
  fact sentences, in the order it chooses. A 135M model cannot add invented numbers this way.
- ``free``: an ordinary 2-4 sentence summary; the grounding verifier drops what the facts do not support. Suits
  a larger user-supplied model better; with the bundled 135M model most of its sentences are dropped.
"""

from __future__ import annotations

import json
import re

from kat_gui.explain.facts import Fact

STYLES = ("select", "free")
SYSTEM = (
    "You write a short diagnosis summary for a performance engineer from numbered facts computed by a trace "
    "analyser. Use only these facts; copy numbers exactly; never add a number, rank or GPU."
)


def _clean_fact(text: str) -> str:
    # Facts are our own sentences; still keep them one line and free of chat-template markers.
    t = re.sub(r"<\|[^|>]*\|>", " ", text)
    return " ".join(t.split())


def messages(facts: list[Fact], style: str = "select") -> list[dict]:
    shown = [f for f in facts if f.role != "check"]  # commands are listed with the hypotheses, not summarised
    listing = "\n".join(f"{i + 1}. {_clean_fact(f.text)}" for i, f in enumerate(shown))
    if style == "free":
        ask = "Summarize these facts in 2 to 4 short sentences."
    else:
        ask = "Write the summary: fact 1 first, then the facts that best explain it, most important first."
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": f"Facts:\n{listing}\n\n{ask}"}]


def _lit(s: str) -> str:
    return json.dumps(_clean_fact(s), ensure_ascii=False)


def select_grammar(facts: list[Fact], max_extra: int = 3) -> str:
    """GBNF: the first fact, then 1..max_extra distinct other facts in any order.

    One rule per set of facts already written (at most C(n,1) + ... + C(n,max_extra-1) rules), so the model
    cannot repeat a sentence; n is about 8 here."""
    first, rest = facts[0], [f for f in facts[1:] if f.role != "check"]
    if not rest:
        return f"root ::= {_lit(first.text)}\n"
    k = max(1, min(max_extra, len(rest)))
    lines = [f"root ::= {_lit(first.text)} t"]
    lines += [f"f{i} ::= {_lit(f.text)}" for i, f in enumerate(rest)]

    def name(used: tuple[int, ...]) -> str:
        return "t" + "".join(f"x{i}" for i in used)

    todo: list[tuple[int, ...]] = [()]
    seen: set[tuple[int, ...]] = set()
    while todo:
        used = todo.pop()
        if used in seen:
            continue
        seen.add(used)
        alts = []
        for i in range(len(rest)):
            if i in used:
                continue
            nxt = tuple(sorted((*used, i)))
            if len(nxt) < k:
                alts.append(f'" " f{i} {name(nxt)}')
                todo.append(nxt)
            else:
                alts.append(f'" " f{i}')
        body = " | ".join(alts)
        lines.append(f"{name(used)} ::= " + (body if not used else f"( {body} )?"))
    return "\n".join(lines) + "\n"


def max_tokens_for(facts: list[Fact], style: str) -> int:
    """Bound generation: the longest 4-fact answer in select style, ~4 short sentences in free style."""
    if style == "free":
        return 160
    lens = sorted((len(f.text) for f in facts[1:]), reverse=True)
    chars = len(facts[0].text) + sum(lens[:3]) + 8
    return max(32, chars // 2)  # a token is >= 2 characters of this English
