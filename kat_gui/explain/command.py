"""``kat explain RUN.kat.h5 [--json] [--no-llm] [--model PATH]``.

Text: the source line, each hypothesis with its evidence, counter-evidence, cause->effect chain and next checks,
then the narrative. ``--json``: the same as one JSON document on stdout. A store without detection results is
analysed first (said on stderr). A ``--model`` file that is missing or does not load is an input error (exit 2);
the bundled model failing falls back to the deterministic narrative and says why.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from kat_gui.errors import KatInputError
from kat_gui.explain.core import Explanation, explain_findings, load_store_inputs
from kat_gui.reasoning import fmt


def _check_model_file(path: str) -> None:
    p = Path(path)
    if not p.is_file():
        raise KatInputError(p, "model file not found (--model expects a .gguf file)")
    with open(p, "rb") as f:
        if f.read(4) != b"GGUF":
            raise KatInputError(p, "not a GGUF model file (--model expects a .gguf file)")


def to_json(exp: Explanation, run: str) -> dict:
    return {
        "schema": "kat.explain/1",
        "run": run,
        "source": exp.source,
        "reason": exp.reason,
        "model": exp.model,
        "style": exp.style,
        "adapter": exp.adapter,
        "narrative": exp.text,
        "hypotheses": exp.hypotheses,
        "grounding": exp.grounding,
        "timings": exp.timings,
        "facts": exp.facts,
        "fact_roles": exp.fact_roles,
        "story": exp.story,
    }


def format_text(exp: Explanation) -> str:
    lines = [exp.source_line, ""]
    if not exp.hypotheses:
        lines.append("No anomaly found.")
    for i, h in enumerate(exp.hypotheses):
        ranks = fmt.ranks_text(h.get("ranks", [])) or "-"
        lines.append(
            f"{i + 1}. {h['title']}  [{h['component']}, ranks {ranks}, confidence {h['confidence']:.2f}]"
        )
        if h.get("evidence"):
            lines.append("   evidence:")
            lines += [f"     - {e['text']}" for e in h["evidence"]]
        if h.get("counter_evidence"):
            lines.append("   why not the others:")
            lines += [f"     - {c}" for c in h["counter_evidence"]]
        if h.get("chain"):
            lines.append("   chain: " + " -> ".join(h["chain"]))
        if h.get("next_checks"):
            lines.append("   next checks:")
            lines += [f"     - {c}" for c in h["next_checks"]]
        lines.append("")
    lines += ["Explanation:", exp.text]
    g = exp.grounding
    if g.get("dropped"):
        lines.append(
            f"({len(g['dropped'])} of {g.get('sentences', 0)} model sentences failed the grounding check "
            f"and are not shown)"
        )
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    store = Path(args.store)
    model = getattr(args, "model", None)
    no_llm = bool(getattr(args, "no_llm", False))
    if model and not no_llm:
        _check_model_file(model)  # before any detection work: the user's file is wrong, say so now

    def said() -> None:
        print(f"kat: {store}: no detection results yet; running detection first", file=sys.stderr)

    findings, graph, meta = load_store_inputs(store, on_detect=said)
    exp = explain_findings(
        findings,
        graph,
        meta,
        use_llm=not no_llm,
        model_path=model,
        use_adapter=not getattr(args, "no_adapter", False),
    )
    if getattr(args, "json", False):
        json.dump(to_json(exp, store.stem), sys.stdout, indent=2, ensure_ascii=False, default=str)
        sys.stdout.write("\n")
    else:
        print(format_text(exp))
    return 0
