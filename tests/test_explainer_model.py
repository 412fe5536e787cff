"""The shipped explainer adapter (models/kat-explainer-lora.gguf): intact, loads on the bundled base, and its
explanations of fixed fact sets pass the grounding check; the switches that turn it off work."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_reasoning import CASES, RANKS8

from kat_gui.errors import KatInputError
from kat_gui.explain import explain_findings, load_store_inputs
from kat_gui.explain.grounding import verify
from kat_gui.explain.llm import LocalModel
from kat_gui.explain.model_files import (
    MANIFEST,
    adapter_entry,
    bundled_adapter_path,
    bundled_model_path,
    sha256_of,
    verify_adapter,
)
from kat_gui.topology import default_topology

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _private_cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("KAT_CACHE_DIR", str(tmp_path))
    monkeypatch.delenv("KAT_EXPLAINER_ADAPTER", raising=False)


def test_manifest_names_the_adapter_and_the_file_matches_its_sha256():
    entry = adapter_entry()
    assert entry is not None and entry.base == json.loads(MANIFEST.read_text())["default"]
    path = verify_adapter()
    assert path == bundled_adapter_path() and path.name == entry.file
    assert sha256_of(path) == entry.sha256 and path.stat().st_size == entry.bytes
    assert (path.parent / entry.card).is_file()
    card = (path.parent / entry.card).read_text(encoding="utf-8")
    assert entry.sha256 in card and "license: apache-2.0" in card  # the card describes this very file


def test_a_damaged_adapter_is_reported(tmp_path, monkeypatch):
    bad = tmp_path / "kat-explainer-lora.gguf"
    bad.write_bytes(b"GGUF" + b"\0" * 64)
    monkeypatch.setattr("kat_gui.explain.model_files.MANIFEST", tmp_path / "manifest.json")
    man = json.loads(MANIFEST.read_text())
    (tmp_path / "manifest.json").write_text(json.dumps(man))
    with pytest.raises(KatInputError, match="size|sha256"):
        verify_adapter()


def test_adapter_switches(monkeypatch, tmp_path):
    assert bundled_adapter_path() is not None
    monkeypatch.setenv("KAT_EXPLAINER_ADAPTER", "0")
    assert bundled_adapter_path() is None
    other = tmp_path / "other.gguf"
    monkeypatch.setenv("KAT_EXPLAINER_ADAPTER", str(other))
    assert bundled_adapter_path() == other


@pytest.mark.llm
def test_the_adapter_loads_on_the_bundled_base_and_changes_its_output():
    msgs = [
        {"role": "system", "content": "You summarise a diagnosis for an engineer."},
        {"role": "user", "content": "Facts:\n1. No anomaly found."},
    ]
    base = LocalModel.load(bundled_model_path(), 1).generate(msgs, max_tokens=24)
    tuned = LocalModel.load(bundled_model_path(), 1, adapter=bundled_adapter_path())
    assert tuned.adapter == bundled_adapter_path()
    assert tuned.generate(msgs, max_tokens=24).text != base.text


def _dlrm_inputs(dlrm_dir, tmp_path):
    from kat_gui.pipeline import ingest

    store = ingest(sorted(dlrm_dir.glob("*.json*")), tmp_path / "dlrm.kat.h5")
    return load_store_inputs(store)


@pytest.mark.llm
@pytest.mark.parametrize("case", ["gpu", "nvlink", "dlrm"])
def test_the_shipped_model_explains_fixed_fact_sets_with_grounded_text(case, dlrm_dir, tmp_path):
    if case == "dlrm":
        findings, graph, meta = _dlrm_inputs(dlrm_dir, tmp_path)
    else:
        findings, graph, meta = [CASES[case]], default_topology(RANKS8), {"ranks": RANKS8}
    exp = explain_findings(findings, graph, meta, timeout_s=180)
    assert exp.adapter == bundled_adapter_path().name and exp.style == "free"
    assert exp.source == "model", (exp.reason, exp.raw_text)
    # Raw model text, before any sentence is dropped: every sentence passes grounding.
    raw = verify(exp.raw_text, exp.facts)
    assert 2 <= raw.sentences <= 5 and raw.verified == raw.sentences, raw.dropped
    assert exp.grounding["shown_verified"] == exp.grounding["shown_sentences"]
    # The shown text tells the causal chain: culprit, component, who waits and how much, the first check.
    assert exp.story == {"culprit": True, "component": True, "wait": True, "check": True}, exp.text


@pytest.mark.llm
def test_without_the_adapter_the_base_model_selects_facts():
    exp = explain_findings(
        [CASES["gpu"]], default_topology(RANKS8), {"ranks": RANKS8}, use_adapter=False, timeout_s=180
    )
    assert exp.adapter is None and exp.style == "select"
    assert exp.source == "model" and exp.raw_text.startswith("1")
