"""Detection against the simulator's ground truth: every named scenario, healthy ones with confounders
included. Healthy runs must produce no finding; each fault must be found with its component (and, except
for symmetric link faults, its culprit rank) among the top findings."""

from __future__ import annotations

import json

import pytest

from kat_gui import pipeline
from kat_gui import simulate as sim
from kat_gui.detect import detect_store

pytestmark = pytest.mark.slow

# Known gaps of the current detector, kept visible (non-strict xfail) rather than hidden. None at the moment:
# the false NVLink findings on healthy decode (batch churn), the launch-signal finding on the noisy-host TP=2
# confounder and the nic-called-nvlink runs are fixed (docs/detection.md §1, §3, §4).
KNOWN_GAPS: set[str] = set()
HANG_COMPONENTS = ["hbm", "gpu"]


@pytest.mark.parametrize(
    "scenario",
    [
        pytest.param(n, marks=pytest.mark.xfail(reason="known detector gap, see KNOWN_GAPS", strict=False))
        if n in KNOWN_GAPS
        else n
        for n in sorted(sim.SCENARIOS)
    ],
)
def test_scenario(scenario, tmp_path):
    out = sim.simulate(tmp_path / "traces", scenario, seed=0)
    truth_path = next((tmp_path / "traces").rglob("truth.json"), None) or (out / "truth.json")
    truth = json.loads(truth_path.read_text())
    store = pipeline.ingest(
        [p for p in (tmp_path / "traces").rglob("*.json*") if p.name != "truth.json"], tmp_path / "run.kat.h5"
    )
    res = detect_store(store)
    faults = truth.get("faults", [])
    if not faults:
        assert res.findings == [], [f["summary"] for f in res.findings]
        return
    top = res.findings[: len(faults) + 2]
    comps = {f["component"] for f in top}
    ranks = {r for f in top for r in f["ranks"]}
    for fault in faults:
        if fault.get("kind") == "hang":
            # A hang is reported on the silent rank as hbm (a fatal memory error, the usual cause), with the
            # gpu as the second candidate of the same event (docs/detection.md, component attribution).
            on_rank = [f["component"] for f in top if set(fault["ranks"]) <= set(f["ranks"])]
            assert on_rank[:2] == HANG_COMPONENTS, (fault, [f["summary"] for f in res.findings])
            assert fault["component"] in HANG_COMPONENTS, fault
            continue
        assert fault["component"] in comps, (fault, [f["summary"] for f in res.findings])
        if fault["component"] not in ("nvlink", "nic"):
            assert ranks & set(fault["ranks"]), (fault, [f["summary"] for f in res.findings])
