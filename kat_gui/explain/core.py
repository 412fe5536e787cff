"""explain_findings / explain_store: the diagnosis is computed deterministically (kat_gui.reasoning); the local
model only phrases it, and every sentence it writes is grounding-checked before it is shown."""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import networkx as nx
import numpy as np

from kat_gui.errors import Cancelled, KatInputError
from kat_gui.explain import prompt
from kat_gui.explain.facts import Fact, build_facts, narrative, story_parts
from kat_gui.explain.grounding import GroundingReport, sanitize_trace_text, split_sentences, verify
from kat_gui.reasoning import build_hypotheses

MIN_SENTENCES = 2  # fewer verified model sentences than this -> the deterministic narrative instead
DEFAULT_TIMEOUT_S = 30.0
KERNELS_PER_FINDING = 3


@dataclass
class Explanation:
    text: str
    source: str  # "model" | "fallback"
    reason: str | None  # why the fallback was used (None when source == "model")
    hypotheses: list[dict]
    grounding: dict
    timings: dict  # load_s, first_token_s, total_s
    model: str | None
    facts: list[str] = field(default_factory=list)
    raw_text: str | None = None  # the model's output before verification (None when no model ran)
    style: str = "select"
    adapter: str | None = None  # the LoRA adapter applied on the model (file name), None when none
    fact_roles: list[str] = field(default_factory=list)  # the role of each fact (facts.Fact.role)
    story: dict = field(default_factory=dict)  # which story parts the shown text states (facts.story_parts)

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def source_line(self) -> str:
        if self.source == "model":
            return (
                f"Source: local model {self.model} phrased the computed facts; every sentence shown passed "
                f"the grounding check ({self.grounding.get('verified', 0)} of "
                f"{self.grounding.get('sentences', 0)} kept)."
            )
        return f"Source: deterministic narrative from the computed facts ({self.reason})."


def _emit_verified_sentences(on_token: Callable[[str], None], facts: list[str]) -> Callable[[str], None]:
    """Wrap ``on_token`` so only sentences that pass grounding reach it (free style: nothing unverified shown)."""
    buf: list[str] = []
    shown: set[str] = set()

    def feed(piece: str) -> None:
        buf.append(piece)
        text = "".join(buf)
        sents = split_sentences(text)
        if len(sents) < 2:
            return
        for s in sents[:-1]:
            rep = verify(s, facts)
            if rep.verified and s not in shown:
                shown.add(s)
                on_token(("" if not shown or len(shown) == 1 else " ") + s)
        buf[:] = [sents[-1]]

    return feed


def _emit_chosen_facts(on_token: Callable[[str], None], facts: list[Fact]) -> Callable[[str], None]:
    """Wrap ``on_token`` for the select style: each fact number the model writes streams that fact's sentence."""
    buf: list[str] = []
    shown: list[Fact] = []

    def feed(piece: str) -> None:
        buf.append(piece)
        for f in prompt.chosen_facts("".join(buf), facts):
            if f not in shown:
                on_token(("" if not shown else " ") + f.text)
                shown.append(f)

    return feed


def _join(sentences: list[str]) -> str:
    return " ".join(s if s.endswith((".", "!", "?")) else s + "." for s in sentences)


def explain_findings(
    findings: list[dict],
    topology: nx.Graph | None = None,
    meta: dict | None = None,
    *,
    use_llm: bool = True,
    model_path: str | os.PathLike | None = None,
    on_token: Callable[[str], None] | None = None,
    cancel: Callable[[], bool] | None = None,
    style: str | None = None,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    n_threads: int | None = None,
    use_adapter: bool = True,
) -> Explanation:
    """Explain findings (kat.detect/1 finding dicts) without a store.

    Without ``model_path`` the bundled model runs with KAT's explainer adapter (``models/``, see
    :mod:`kat_gui.explain.model_files`) in the style it was trained for (``free``); a user model, or the bundled one
    without its adapter, defaults to ``select``; asking for a style other than the adapter's runs the base alone.
    A user-given ``model_path`` that is missing or does not load raises KatInputError naming it; the bundled model
    failing (not installed, damaged, timing out) falls back to the deterministic narrative with the reason.
    ``cancel()`` returning True stops generation between tokens and raises :class:`Cancelled`.
    ``use_adapter=False`` runs the bundled model without its adapter.
    """
    if style is not None and style not in prompt.STYLES:
        raise ValueError(f"style must be one of {prompt.STYLES}")
    adapter, adapter_style, adapter_note = (None, None, None)
    if use_llm and model_path is None and use_adapter:
        adapter, adapter_style, adapter_note = _bundled_adapter()
        if style is not None and adapter is not None and style != adapter_style:
            # The adapter was trained for one prompt style; asked for another, the base model answers alone.
            adapter, adapter_style = None, None
    style = style or adapter_style or "select"
    adapter_name = adapter.name if adapter is not None else None
    t0 = time.perf_counter()
    meta = meta or {}
    clean = _sanitized(findings)
    hyps = build_hypotheses(clean, topology, meta)
    facts = build_facts(hyps, meta, clean)
    fact_texts = [f.text for f in facts]
    roles = [f.role for f in facts]
    hyp_dicts = [h.to_dict() for h in hyps]
    timings: dict = {"load_s": None, "first_token_s": None, "total_s": None}

    def fallback(
        reason: str,
        model_name: str | None = None,
        model_rep: GroundingReport | None = None,
        raw: str | None = None,
    ) -> Explanation:
        text = narrative(facts)
        rep = verify(text, fact_texts)
        g = (model_rep or rep).to_dict()
        g.update(shown_sentences=rep.sentences, shown_verified=rep.verified)
        timings["total_s"] = time.perf_counter() - t0
        return Explanation(
            text,
            "fallback",
            reason,
            hyp_dicts,
            g,
            dict(timings),
            model_name,
            fact_texts,
            raw,
            style,
            adapter_name,
            roles,
            story_parts(text, facts),
        )

    if not use_llm:
        return fallback("language model not used (--no-llm)")
    if cancel is not None and cancel():
        raise Cancelled()

    from kat_gui.explain.llm import LocalModel

    if model_path is not None:
        model = LocalModel.load(model_path, n_threads)  # a user's model failing is their error to fix: raise
    else:
        try:
            model = _load_bundled(n_threads, adapter)
        except KatInputError as exc:
            return fallback(f"bundled model unavailable: {exc}")
    if adapter_note:
        timings["adapter_note"] = adapter_note
    timings["load_s"] = model.load_s
    name = model.name
    sink = on_token
    if on_token is not None and style == "free":
        sink = _emit_verified_sentences(on_token, fact_texts)
    elif on_token is not None:
        sink = _emit_chosen_facts(on_token, facts)
    msgs = prompt.messages(facts, style)
    grammar = prompt.select_grammar(facts) if style == "select" else None
    t_prompt = time.perf_counter()
    try:
        timings["prefix"], timings["prefix_s"] = _warm(model, style)
    except Exception as exc:  # the prefix cache is an optimisation: never let it cost the explanation
        timings["prefix"], timings["prefix_s"] = f"failed: {exc}", None
    t_gen = time.perf_counter()
    try:
        gen = model.generate(
            msgs,
            max_tokens=prompt.max_tokens_for(facts, style),
            grammar=grammar,
            on_token=sink,
            cancel=cancel,
            timeout_s=timeout_s,
        )
    except Exception as exc:  # a runtime failure of the model must not cost the user the diagnosis
        return fallback(f"the model failed while writing: {exc}", name)
    # From the start of prompt preparation (prefix restore or evaluation included), not just generate().
    timings["first_token_s"] = None if gen.first_token_s is None else gen.first_token_s + (t_gen - t_prompt)
    timings["prompt_tokens"] = _count_tokens(model, msgs)
    timings["first_token_cpu_s"] = gen.first_token_cpu_s
    timings["generate_cpu_s"] = gen.total_cpu_s
    timings["threads"] = model.n_threads
    if gen.stop == "cancelled":
        raise Cancelled()
    # select style: the model answered with fact numbers; its text is those fact sentences, in its order.
    written = _join([f.text for f in prompt.chosen_facts(gen.text, facts)]) if style == "select" else gen.text
    rep = verify(written, fact_texts)
    if gen.stop == "timeout":
        return fallback(f"the model timed out after {timeout_s:.0f} s", name, rep, gen.text)
    if rep.verified < min(MIN_SENTENCES, len(facts)) or not _states_diagnosis(rep.kept, facts, hyps):
        return fallback(
            f"too little of the model's text passed grounding ({rep.verified} of {rep.sentences} sentences)",
            name,
            rep,
            gen.text,
        )
    text = _join(rep.kept)
    shown = verify(text, fact_texts)
    g = rep.to_dict()
    g.update(shown_sentences=shown.sentences, shown_verified=shown.verified)
    if shown.verified != shown.sentences:  # cannot happen unless joining changed a sentence; never show it
        return fallback("joined text failed grounding", name, rep, gen.text)
    timings["total_s"] = time.perf_counter() - t0
    return Explanation(
        text,
        "model",
        None,
        hyp_dicts,
        g,
        timings,
        name,
        fact_texts,
        gen.text,
        style,
        adapter_name,
        roles,
        story_parts(text, facts),
    )


def _bundled_adapter() -> tuple[Path | None, str | None, str | None]:
    """(adapter path, the style it was trained for, a note when it could not be used) for the bundled model.

    A missing or damaged adapter file is not fatal: the base model explains in ``select`` style, and the note
    says why (``timings["adapter_note"]``)."""
    from kat_gui.explain.model_files import adapter_entry, bundled_adapter_path

    try:
        path = bundled_adapter_path()
    except KatInputError as exc:
        return None, None, f"explainer adapter unavailable: {exc}"
    if path is None:
        return None, None, None
    entry = adapter_entry()
    return path, (entry.style if entry is not None else "free"), None


def _load_bundled(n_threads: int | None, adapter: Path | None):
    """The bundled base model, with KAT's explainer adapter when given; named after the manifest, not the GGUF's
    internal name (which reads "Smollm2 135M 8k Lc100K Mix1 Ep2")."""
    from kat_gui.explain.llm import LocalModel
    from kat_gui.explain.model_files import adapter_entry, bundled_model_path, load_manifest

    default, entries = load_manifest()
    name = entries[default].name.split(" (")[0]
    if adapter is not None:
        entry = adapter_entry()
        name += " + " + (entry.name.split(" (")[0] if entry and entry.file == adapter.name else adapter.name)
    return LocalModel.load(bundled_model_path(), n_threads, adapter=adapter, display_name=name)


def _warm(model, style: str) -> tuple[str, float]:
    """Put the run-independent prompt prefix in the model's context (resident, from disk, or evaluated)."""
    tokens = model.prefix_tokens(*prompt.prefix_probes(style))
    if not tokens:
        return "none", 0.0
    return model.warm_prefix(tokens, use_disk=os.environ.get("KAT_PREFIX_CACHE", "1") != "0")


def _count_tokens(model, msgs: list[dict]) -> int | None:
    try:
        toks = model.prompt_tokens(msgs)
    except Exception:
        return None
    return len(toks) if toks else None


def warm_up(
    model_path: str | os.PathLike | None = None,
    style: str | None = None,
    n_threads: int | None = None,
    use_adapter: bool = True,
) -> dict:
    """Load the model and evaluate the fixed prompt prefix now, so the next explanation only evaluates its facts.

    Meant for the GUI's explanation worker thread when the window opens (only when the model is enabled); it
    blocks for the load plus up to ~0.5 s of prompt evaluation. Returns {"load_s", "prefix", "prefix_s"}; a
    failure is reported in the dict (``error``), never raised: explaining later reports it properly."""
    from kat_gui.explain.llm import LocalModel

    try:
        if model_path is None:
            adapter, adapter_style, _note = _bundled_adapter() if use_adapter else (None, None, None)
            model = _load_bundled(n_threads, adapter)
            style = style or adapter_style or "select"
        else:
            model = LocalModel.load(model_path, n_threads)
            style = style or "select"
        how, secs = _warm(model, style)
    except Exception as exc:
        return {"load_s": None, "prefix": None, "prefix_s": None, "error": str(exc)}
    return {"load_s": model.load_s, "prefix": how, "prefix_s": secs}


def _states_diagnosis(kept: list[str], facts: list[Fact], hyps: list) -> bool:
    """The shown text must carry the diagnosis: the headline fact, or (free style) a sentence naming the top
    hypothesis' component id (or saying no anomaly was found, for a healthy run)."""
    head = facts[0].text.rstrip(".") if facts else ""
    if any(" ".join(k.split()).rstrip(".") == head for k in kept):
        return True
    # Free style rephrases the headline ("The most likely cause is host CPU stalls on rank 7, ..."): its core,
    # the cause and who ("host CPU stalls on rank 7", or "GPU7 (rank 7)" for a straggler), must be there as is.
    core = re.sub(r"^Most likely cause:\s*", "", head)
    core = re.split(r",? confidence|\s+is the straggler|\s+arrives late", core)[0].strip().lower()
    if core and any(core in " ".join(k.split()).lower() for k in kept):
        return True
    if not hyps:
        return any("no anomaly" in k.lower() for k in kept)
    cid = str(hyps[0].component_id).lower().replace(" ", "")
    return any(cid in k.lower().replace(" ", "") for k in kept)


def _sanitized(findings: list[dict]) -> list[dict]:
    """Copies of the findings with trace strings (kernel names) made safe; the numbers are left untouched."""
    out = []
    for f in findings:
        g = dict(f)
        if "kernels" in g:
            g["kernels"] = [sanitize_trace_text(k) for k in g.get("kernels") or []]
        if "summary" in g:
            g["summary"] = " ".join(
                "".join(c if c.isprintable() else " " for c in str(g["summary"])).split()
            )[:300]
        out.append(g)
    return out


# ---------------------------------------------------------------------- stores


def load_store_inputs(
    path: str | os.PathLike, run_detection: bool = True, on_detect: Callable[[], None] | None = None
) -> tuple[list[dict], nx.Graph | None, dict]:
    """(findings with their top kernel names and symptom waits, topology graph, detect meta) of a ``.kat.h5`` store.

    ``symptom_waits`` of a finding: its symptom rows' stored waits (``wait_ns``, the wait the fault added to a
    peer's collective) as {"ranks", "count", "total_ns", "median_ns"}; absent when it has none.

    Runs detection first (``kat_gui.detect.detect_store``) when the store holds no results and ``run_detection``;
    ``on_detect`` is called before that so a caller can say so. Raises KatInputError for a bad store.
    """
    from kat_gui.store import TraceStore

    p = Path(path)
    if not p.is_file():
        raise KatInputError(p, "store not found")
    with TraceStore.open(p, "r") as store:
        found = store.get_json("detect/findings")
    if found is None:
        if not run_detection:
            raise KatInputError(p, "no detection results in this store; run `kat detect` first")
        if on_detect is not None:
            on_detect()
        from kat_gui.detect import detect_store

        detect_store(p)
    with TraceStore.open(p, "r") as store:
        found = store.get_json("detect/findings") or {}
        findings = [dict(f) for f in found.get("findings", [])]
        meta = store.get_json("detect/meta") or {}
        topo_obj = store.get_json("topology")
        table = store.get_table("detect/anomalies")
        if table is not None and findings and len(table.get("name", ())):
            strings = store.strings
            for f in findings:
                f["kernels"] = _top_kernels(table, int(f.get("id", -1)), strings)
                waits = _symptom_waits(table, int(f.get("id", -1)))
                if waits is not None:
                    f["symptom_waits"] = waits
    graph = None
    if topo_obj:
        try:
            from kat_gui.topology import from_json

            graph = from_json(topo_obj)
        except Exception:
            graph = None  # the checks then keep their <gpu> placeholders
    return findings, graph, meta


def _top_kernels(table: dict, fid: int, strings: list[str]) -> list[str]:
    m = (np.asarray(table["finding"]) == fid) & (np.asarray(table["role"]) == 1)
    names = np.asarray(table["name"])[m]
    names = names[names >= 0]
    if not len(names):
        return []
    ids, counts = np.unique(names, return_counts=True)
    order = np.argsort(-counts, kind="stable")[:KERNELS_PER_FINDING]
    return [strings[int(i)] for i in ids[order] if int(i) < len(strings)]


def _symptom_waits(table: dict, fid: int) -> dict | None:
    """Who waited for finding ``fid`` and how much: its symptom rows (role 2) with a stored wait > 0."""
    if "wait_ns" not in table:
        return None
    wait = np.asarray(table["wait_ns"], dtype=np.int64)
    m = (np.asarray(table["finding"]) == fid) & (np.asarray(table["role"]) == 2) & (wait > 0)
    if not m.any():
        return None
    w = wait[m]
    return {
        "ranks": np.unique(np.asarray(table["rank"])[m]).astype(int).tolist(),
        "count": int(m.sum()),
        "total_ns": int(w.sum()),
        "median_ns": float(np.median(w)),
    }


def explain_store(
    path: str | os.PathLike,
    use_llm: bool = True,
    model_path: str | os.PathLike | None = None,
    on_token: Callable[[str], None] | None = None,
    cancel: Callable[[], bool] | None = None,
    use_adapter: bool = True,
) -> Explanation:
    """Explain a ``.kat.h5`` store (detecting first when it has no results). See :func:`explain_findings`."""
    findings, graph, meta = load_store_inputs(path)
    return explain_findings(
        findings,
        graph,
        meta,
        use_llm=use_llm,
        model_path=model_path,
        on_token=on_token,
        cancel=cancel,
        use_adapter=use_adapter,
    )
