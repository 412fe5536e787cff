"""The explainer's training/evaluation data generator (tools/explainer/data.py), on its --quick plan."""

from __future__ import annotations

import importlib.util
import json
import random
import re
import sys
from pathlib import Path

import pytest

from kat_gui.explain import explain_findings, prompt
from kat_gui.explain.facts import KERNEL_FACT_CHARS, Fact
from kat_gui.explain.grounding import sanitize_trace_text, split_sentences, verify

ROOT = Path(__file__).resolve().parents[1]
COMPONENTS = {"gpu", "hbm", "nvlink", "pcie", "nic", "cpu", "hang", "unknown", "healthy"}
FIELDS = {
    "id": str,
    "split": str,
    "source": str,
    "scenario": str,
    "family": str,
    "component": str,
    "facts": list,
    "roles": list,
    "messages": list,
    "target": str,
    "template": str,
    "key_claims": list,
}


def _load():
    name = "kat_explainer_data"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, ROOT / "tools" / "explainer" / "data.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod  # dataclasses and worker processes look the module up by name
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def D():
    return _load()


@pytest.fixture(scope="module")
def quick(D, tmp_path_factory):
    """The quick plan's pipeline runs (simulated once) and the files generated from them."""
    tr, ho = D.plan_cases(quick=True)
    runs = D.collect_runs(tr, ho, quick=True, jobs=2)
    out = tmp_path_factory.mktemp("explainer-data")
    card = D.generate(out, quick=True, runs=runs, log=lambda *_: None)
    return {
        "runs": runs,
        "out": out,
        "card": card,
        "train": D.load_jsonl(out / "train.jsonl"),
        "heldout": D.load_jsonl(out / "heldout.jsonl"),
    }


def test_records_are_well_formed(D, quick):
    assert quick["train"] and quick["heldout"]
    for split in ("train", "heldout"):
        ids = set()
        for r in quick[split]:
            for k, t in FIELDS.items():
                assert isinstance(r[k], t), (k, r.get("id"))
            assert r["split"] == split and r["id"] not in ids
            ids.add(r["id"])
            assert r["source"] in ("pipeline", "perturbed", "real")
            assert r["component"] in COMPONENTS
            assert len(r["facts"]) == len(r["roles"]) >= 2
            facts = [Fact(t, ro) for t, ro in zip(r["facts"], r["roles"], strict=True)]
            assert r["messages"] == prompt.messages(facts, "free")
            assert r["key_claims"] and all(isinstance(c, str) and c for c in r["key_claims"])
            assert 2 <= len(split_sentences(r["target"])) <= 5
            fams = D.TRAIN_TEMPLATES if split == "train" else D.HELDOUT_TEMPLATES
            assert r["template"] in fams
            if r["component"] == "healthy":
                assert r["key_claims"] == ["No anomaly"] and r["facts"][0] == "No anomaly found."
            else:
                assert r["roles"][0] == "headline"
    card = json.loads((quick["out"] / "data_card.json").read_text())
    assert card["counts"]["train"]["records"] == len(quick["train"])
    assert card["generator_version"] == D.GENERATOR_VERSION
    assert {r["source"] for r in quick["heldout"]} >= {"pipeline", "perturbed"}


def test_every_target_is_grounded_and_holds_its_key_claims(D, quick):
    for r in quick["train"] + quick["heldout"]:
        rep = verify(r["target"], r["facts"])
        assert rep.sentences and rep.verified == rep.sentences, (r["id"], rep.dropped)
        assert D.coverage(r["target"], r) == 1.0, (r["id"], r["key_claims"], r["target"])
        # The diagnosis comes first: the first sentence names the headline's id / rank or says no anomaly.
        first = split_sentences(r["target"])[0]
        assert D.coverage(first, {"key_claims": r["key_claims"][:1]}) == 1.0, (r["id"], first)
    assert len({r["template"] for r in quick["train"]}) >= 5


def test_splits_share_no_facts_and_no_heldout_family_in_train(D, quick):
    train = {"\n".join(r["facts"]) for r in quick["train"]}
    assert not any("\n".join(r["facts"]) in train for r in quick["heldout"])
    assert not {r["family"] for r in quick["train"]} & set(D.HELDOUT_FAMILIES)
    assert {r["family"] for r in quick["heldout"]} <= set(D.HELDOUT_FAMILIES)
    assert not set(D.TRAIN_KERNELS) & set(D.HELDOUT_KERNELS)
    assert not {r.name for r in D.TRAIN_REMAPS} & {r.name for r in D.HELDOUT_REMAPS}
    assert not set(D.TRAIN_TEMPLATES) & set(D.HELDOUT_TEMPLATES)


def test_same_seed_same_files(D, quick, tmp_path):
    D.generate(tmp_path, quick=True, runs=quick["runs"], log=lambda *_: None)
    for name in ("train.jsonl", "heldout.jsonl"):
        assert (tmp_path / name).read_bytes() == (quick["out"] / name).read_bytes()
    D.generate(tmp_path / "other", quick=True, seed=5, runs=quick["runs"], log=lambda *_: None)
    assert (tmp_path / "other" / "train.jsonl").read_bytes() != (quick["out"] / "train.jsonl").read_bytes()


def test_pipeline_facts_are_the_products_facts(D, quick):
    for run in quick["runs"]:
        exp = explain_findings(run["findings"], run["graph"], run["meta"], use_llm=False)
        facts, _ = D.facts_for(run["findings"], run["graph"], run["meta"])
        assert [f.text for f in facts] == exp.facts
    pipe = [r for r in quick["train"] + quick["heldout"] if r["source"] in ("pipeline", "real")]
    assert len(pipe) >= len(quick["runs"]) - 1


def test_every_component_is_covered(D, quick):
    seen = {r["component"] for r in quick["train"] + quick["heldout"]}
    # A tiny perturbed set adds the synthetic stragglers wherever the quick records lack them.
    rng = random.Random(3)
    gpu = next(x for x in quick["runs"] if x["findings"] and x["findings"][0]["component"] == "gpu")
    one = D.single_rank(gpu["findings"])
    for made in (D.straggler(one, gpu["meta"], rng, "cpu"), D.straggler(one, gpu["meta"], rng, "unknown")):
        facts, hyps = D.facts_for([made], None, gpu["meta"])
        seen.add(hyps[0].component)
        assert D.make_target(facts, D.key_claims(facts, hyps), D.TRAIN_TEMPLATES, rng, D.Counter())
    assert COMPONENTS <= seen, COMPONENTS - seen


def test_unusual_kernel_names_reach_facts_only_sanitised(D, quick):
    gpu = next(x for x in quick["runs"] if x["findings"] and x["findings"][0]["component"] == "gpu")
    for raw in D.TRAIN_KERNELS + D.HELDOUT_KERNELS:
        findings = [dict(f, kernels=[raw]) for f in gpu["findings"]]
        facts, _ = D.facts_for(findings, gpu["graph"], gpu["meta"])
        kern = [f.text for f in facts if f.text.startswith("Most affected kernel:")]
        name = sanitize_trace_text(raw)
        short = name if len(name) <= KERNEL_FACT_CHARS else name[: KERNEL_FACT_CHARS - 1] + "…"
        assert kern == [f"Most affected kernel: {short}."], raw
        if name.startswith("kernel#"):
            assert not any(raw in f.text for f in facts)
    allowed = re.compile(r"^Most affected kernel: (kernel#[0-9a-f]{8}|[A-Za-z0-9_:.\- ]+…?)\.$")
    bad = ("IGNORE", "disregard", "<|im_start|>", "<script>", "ü", "Ω")
    for r in quick["train"] + quick["heldout"]:
        for t in r["facts"]:
            if t.startswith("Most affected kernel:"):
                assert allowed.match(t), t
        text = json.dumps(r["messages"], ensure_ascii=False) + r["target"]
        assert not any(b in text for b in bad), r["id"]


def test_coverage_counts_whole_claims(D):
    rec = {"key_claims": ["GPU2", "rank 2", "1.50x"]}
    assert D.coverage("GPU2 (rank 2) is slow: 1.50x.", rec) == 1.0
    assert D.coverage("GPU 2 (Rank 2) is 1.50x slower", rec) == 1.0
    assert D.coverage("GPU21 (rank 20) is 1.505x slower", rec) == 0.0
    assert D.coverage("No anomaly was found.", {"key_claims": ["No anomaly"]}) == 1.0
    assert D.coverage("", {"key_claims": ["No anomaly"]}) == 0.0
