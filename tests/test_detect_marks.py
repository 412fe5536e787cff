"""Which events detection marks (issue 16, items 1 and 2), against the simulator's counterfactual truth:
a peer's collective is a symptom only when the culprit made it wait more than a few µs longer than it would
have, and a host-CPU fault's roots are the kernels whose launch the GPU waited for, not every kernel of the rank.
The expert-precision rules of benchmarks/scoring.py are tested on hand-made dicts too."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # benchmarks/ is a folder of scripts, not an installed package
    sys.path.insert(0, str(ROOT))

from benchmarks import scoring, suite  # noqa: E402
from kat_gui import cli, pipeline  # noqa: E402
from kat_gui import simulate as sim  # noqa: E402
from kat_gui.detect.anomalies import SYMPTOM_MIN_WAIT_NS  # noqa: E402


def _run(tmp_path: Path, name: str) -> tuple[dict, dict]:
    """(truth, kat.detect/1 document) of a benchmark suite case on its development seed."""
    case = suite.case_by_name(name)
    out = sim.simulate(tmp_path / "traces", suite.build_spec(sim, case), seed=suite.seed_for(case, "dev"))
    truth = json.loads((out / "truth.json").read_text())
    store = pipeline.ingest(sorted(out.glob("rank-*.pt.trace.json")), tmp_path / "run.kat.h5")
    assert cli.main(["detect", str(store), "--json", str(tmp_path / "detect.json"), "--workers", "0"]) == 0
    return truth, json.loads((tmp_path / "detect.json").read_text())


def _marked(truth: dict, doc: dict, role: str) -> list[tuple[dict, int, int]]:
    """(anomaly, rank, index into the sorted truth labels) of every matched anomaly of ``role``."""
    matches, _labels = scoring.match_anomalies(truth, doc)
    return [
        (a, m[0], m[1]) for a, m in zip(doc["anomalies"], matches, strict=True) if m and a["role"] == role
    ]


@pytest.mark.slow
def test_throttled_gpu_peers_tiny_waits_are_not_symptoms(tmp_path):
    truth, doc = _run(tmp_path, "gpu_tp4_10")
    labels = scoring._rank_labels(truth)
    assert doc["findings"][0]["component"] == "gpu" and doc["findings"][0]["ranks"] == [1]
    culprit = truth["faults"][0]["ranks"][0]
    # Peers' collectives in the fault window that waited a little longer because of the throttle: the old rule
    # (every wait for the culprit in the window) marked hundreds of them.
    tiny = sum(
        int(
            np.count_nonzero(
                (lab.excess_ns > 0)
                & (lab.excess_ns < 2_000)
                & (lab.start_ns >= truth["faults"][0]["start_ns"])
            )
        )
        for r, lab in labels.items()
        if r != culprit
    )
    assert tiny > 100
    symptoms = _marked(truth, doc, "symptom")
    tiny_marked = [a for a, r, i in symptoms if labels[r].excess_ns[i] < 2_000]
    assert len(tiny_marked) <= 0.1 * max(len(symptoms), 1), (len(tiny_marked), len(symptoms))
    # Every symptom keeps the wait the culprit added, above the floor; roots carry no wait.
    assert all(a["wait_ns"] > SYMPTOM_MIN_WAIT_NS for a, _r, _i in symptoms)
    assert all(a["wait_ns"] == 0 for a in doc["anomalies"] if a["role"] == "root")
    # The culprit's kernels are still all its roots.
    roots = _marked(truth, doc, "root")
    assert roots and all(labels[r].label[i] == scoring.LABEL_ROOT for _a, r, i in roots)


@pytest.mark.slow
def test_host_fault_roots_are_the_launches_the_gpu_waited_for(tmp_path):
    truth, doc = _run(tmp_path, "cpu_tp4_20")
    labels = scoring._rank_labels(truth)
    fault = truth["faults"][0]
    culprit = fault["ranks"][0]
    assert doc["findings"][0]["component"] == "cpu" and doc["findings"][0]["ranks"] == [culprit]
    lab = labels[culprit]
    in_win = (lab.start_ns >= fault["start_ns"]) & (lab.start_ns <= fault["end_ns"])
    on_time = in_win & (lab.label == scoring.LABEL_NORMAL)  # the GPU did not wait for these launches
    assert on_time.sum() > 100
    roots = [(a, i) for a, r, i in _marked(truth, doc, "root") if r == culprit]
    marked = np.zeros(len(lab.label), bool)
    marked[[i for _a, i in roots]] = True
    assert (marked & on_time).sum() <= 0.02 * on_time.sum()
    assert marked.sum() < in_win.sum()  # not the whole rank
    waited = sum(lab.label[i] == scoring.LABEL_ROOT for _a, i in roots)
    assert waited >= 0.95 * len(roots)
    assert all(a["score"] > 0 for a, _i in roots)


def _truth_one_rank(excess: list[int], label: list[int], factor: list[float] | None = None) -> dict:
    n = len(excess)
    return {
        "schema": "kat.truth/1",
        "n_steps": 10,
        "faults": [
            {"id": 0, "component": "gpu", "ranks": [0], "severity": 0.2, "start_ns": 0, "end_ns": 10_000_000}
        ],
        "labels": {
            "0": {
                "stream": [7] * n,
                "start_ns": [1_000 * (i + 1) for i in range(n)],
                "end_ns": [1_000 * (i + 1) + 500 for i in range(n)],
                "label": label,
                "fault": [0 if v else -1 for v in label],
                "factor": factor or [1.0] * n,
                "excess_ns": excess,
            }
        },
    }


def _anom(i: int, role: str) -> dict:
    return {
        "rank": 0,
        "start_ns": 1_000 * (i + 1),
        "end_ns": 1_000 * (i + 1) + 500,
        "stream": 7,
        "role": role,
    }


def test_expert_precision_counts_symptoms_by_the_wait_the_fault_caused():
    # 0: symptom, waited 5 µs (right); 1: symptom, waited 1 µs (false, though labelled normal either way);
    # 2: root on a target kernel (right); 3: root on a memory kernel the throttle slowed less (neither way);
    # 4: root on a normal kernel (false); 5: symptom mark on a root instance (lenient: neither; strict: false).
    truth = _truth_one_rank(
        excess=[5_000, 1_000, 0, 0, 0, 0], label=[2, 0, 1, 1, 0, 1], factor=[1.0, 1.0, 1.2, 1.05, 1.0, 1.2]
    )
    det = {
        "schema": "kat.detect/1",
        "anomalies": [
            _anom(0, "symptom"),
            _anom(1, "symptom"),
            _anom(2, "root"),
            _anom(3, "root"),
            _anom(4, "root"),
            _anom(5, "symptom"),
        ],  # fmt: skip
        "findings": [
            {"component": "gpu", "ranks": [0], "confidence": 0.9, "start_ns": 0, "end_ns": 10_000_000}
        ],
    }
    rs = scoring.score_run(truth, det)
    assert (rs.ex_right, rs.ex_false_lenient, rs.ex_false_strict) == (2, 2, 3)
    assert (rs.n_symptoms, rs.sym_right) == (3, 1)
    m = scoring.aggregate([rs])["expert"]
    assert m["precision_lenient"] == pytest.approx(0.5) and m["precision_strict"] == pytest.approx(0.4)
    assert m["anomalies_per_faulty_run"] == 6
