"""The detection scorer (benchmarks/scoring.py) on hand-made truth/detection dicts, and end to end on the simulator."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # benchmarks/ is a folder of scripts, not an installed package
    sys.path.insert(0, str(ROOT))

from benchmarks import scoring  # noqa: E402

T0 = 1_700_000_000_000_000_000


def _truth(faults=None, steps=10):
    """Two ranks, 10 kernels each on stream 7, 1 ms apart. Fault 0 (if any) makes rank 1's kernels 2..5 roots and
    rank 0's collective at index 6 a symptom; rank 0's index 8 is also a symptom."""
    labels = {}
    for rank in (0, 1):
        start = [T0 + i * 1_000_000 + rank * 10 for i in range(10)]
        end = [s + 500_000 for s in start]
        label = [0] * 10
        fault = [-1] * 10
        if faults:
            if rank == 1:
                for i in (2, 3, 4, 5):
                    label[i], fault[i] = 1, 0
            else:
                for i in (6, 8):
                    label[i], fault[i] = 2, 0
        labels[str(rank)] = {
            "stream": [7] * 10,
            "start_ns": start,
            "end_ns": end,
            "label": label,
            "fault": fault,
        }
    return {
        "schema": "kat.truth/1",
        "scenario": "hand",
        "steps": steps,
        "faults": faults or [],
        "labels": labels,
    }


GPU_FAULT = {
    "id": 0,
    "component": "gpu",
    "component_id": "GPU1",
    "ranks": [1],
    "severity": 0.2,
    "window": [T0 + 2_000_000, T0 + 6_000_000],
}


def _anomaly(truth, rank, i, role="root", component="gpu"):
    lab = truth["labels"][str(rank)]
    return {
        "rank": rank,
        "device": rank,
        "stream": 7,
        "name": "k",
        "start_ns": lab["start_ns"][i],
        "end_ns": lab["end_ns"][i],
        "role": role,
        "component": component,
        "score": 5.0,
    }


def _finding(component="gpu", ranks=(1,), start=0, end=0, conf=0.9):
    return {
        "component": component,
        "component_id": "x",
        "ranks": list(ranks),
        "confidence": conf,
        "start_ns": start,
        "end_ns": end,
        "summary": "s",
    }


def _det(anomalies=(), findings=()):
    return {"schema": "kat.detect/1", "run": "hand", "anomalies": list(anomalies), "findings": list(findings)}


def test_perfect_detector_scores_one():
    t = _truth([GPU_FAULT])
    d = _det(
        [_anomaly(t, 1, i) for i in (2, 3, 4, 5)] + [_anomaly(t, 0, i, role="symptom") for i in (6, 8)],
        [_finding()],
    )
    m = scoring.aggregate([scoring.score_run(t, d)])
    k = m["kernel"]
    assert k["precision_lenient"] == k["precision_strict"] == k["recall"] == k["f1_strict"] == 1.0
    assert m["event_recall"] == m["culprit_rank_top1"] == m["component_top1"] == m["component_top3"] == 1.0
    assert m["by_severity"]["20%"]["event_recall"] == 1.0
    assert m["by_severity"]["20%"]["kernel_recall"] == 1.0


def test_symptoms_called_root_hurt_strict_not_lenient():
    t = _truth([GPU_FAULT])
    d = _det([_anomaly(t, 1, i) for i in (2, 3, 4, 5)] + [_anomaly(t, 0, i) for i in (6, 8)], [_finding()])
    k = scoring.aggregate([scoring.score_run(t, d)])["kernel"]
    assert k["precision_lenient"] == 1.0
    assert k["precision_strict"] == pytest.approx(4 / 6)
    assert k["recall"] == 1.0


def test_missed_roots_and_normal_false_positives():
    t = _truth([GPU_FAULT])
    # two of four roots found, one normal kernel called root, one anomaly at a time that matches nothing
    stray = _anomaly(t, 0, 0)
    stray["start_ns"] += 3
    d = _det([_anomaly(t, 1, 2), _anomaly(t, 1, 3), _anomaly(t, 1, 9), stray], [])
    rs = scoring.score_run(t, d)
    assert (rs.tp, rs.fn, rs.fp_lenient, rs.fp_strict, rs.unmatched) == (2, 2, 2, 2, 1)
    # a tolerance makes the stray match its (normal) instance; counts stay the same, unmatched goes to 0
    rs = scoring.score_run(t, d, tol_ns=5)
    assert (rs.tp, rs.fp_lenient, rs.unmatched) == (2, 2, 0)
    m = scoring.aggregate([rs])
    assert m["event_recall"] == 0.0  # no finding
    assert m["component_top3"] == 0.0


def test_duplicate_anomalies_count_once():
    t = _truth([GPU_FAULT])
    d = _det([_anomaly(t, 1, 2), _anomaly(t, 1, 2)], [])
    rs = scoring.score_run(t, d)
    assert (rs.tp, rs.fp_lenient, rs.fn) == (1, 0, 3)


def test_healthy_empty_detection_has_no_false_alarms():
    t = _truth(steps=50)
    m = scoring.aggregate([scoring.score_run(t, _det())])
    h = m["healthy"]
    assert h["false_alarms_per_1k_steps"] == 0.0
    assert h["anomalies"] == 0
    assert m["event_recall"] is None  # no faults: recall undefined, not 1.0
    assert m["kernel"]["precision_lenient"] is None


def test_one_finding_on_healthy_run_is_counted():
    t = _truth(steps=50)
    d = _det([_anomaly(t, 0, 3)], [_finding(ranks=[0])])
    m = scoring.aggregate([scoring.score_run(t, d), scoring.score_run(_truth(steps=150), _det())])
    h = m["healthy"]
    assert h["findings"] == 1
    assert h["false_alarms_per_1k_steps"] == pytest.approx(1000 / 200)
    assert h["anomalies"] == 1
    assert h["runs_with_findings"] == 1
    assert m["kernel"]["fp_lenient"] == 1
    assert m["kernel"]["precision_lenient"] == 0.0


def test_component_top3_logic():
    t = _truth([GPU_FAULT])
    wrong_first = [
        _finding("cpu", [0], conf=0.9),
        _finding("hbm", [0], conf=0.8),
        _finding("gpu", [1], conf=0.7),
    ]
    m = scoring.aggregate([scoring.score_run(t, _det([], wrong_first))])
    assert m["component_top1"] == 0.0
    assert m["component_top3"] == 1.0
    assert m["culprit_rank_top1"] == 0.0  # top finding names rank 0
    assert m["event_recall"] == 1.0  # the third finding matches (rank and component)
    assert m["spurious_findings_on_faulty_runs"] == 2
    assert m["finding_precision"] == pytest.approx(1 / 3)

    too_late = wrong_first[:2] + [_finding("cpu", [0]), _finding("gpu", [1])]
    m = scoring.aggregate([scoring.score_run(t, _det([], too_late))])
    assert m["component_top3"] == 0.0
    assert m["event_recall"] == 1.0


def test_event_match_needs_window_overlap():
    t = _truth([GPU_FAULT])
    outside = _finding("gpu", [1], start=T0 + 7_000_000, end=T0 + 9_000_000)
    inside = _finding("gpu", [1], start=T0 + 5_000_000, end=T0 + 9_000_000)
    assert scoring.score_run(t, _det([], [outside])).faults[0]["found"] is False
    assert scoring.score_run(t, _det([], [inside])).faults[0]["found"] is True
    # rank match alone is enough, and component match alone too
    assert scoring.score_run(t, _det([], [_finding("unknown", [1])])).faults[0]["found"] is True
    assert scoring.score_run(t, _det([], [_finding("gpu", [0])])).faults[0]["found"] is True
    assert scoring.score_run(t, _det([], [_finding("cpu", [0])])).faults[0]["found"] is False


def test_hangs_have_their_own_severity_bucket():
    hang = {**GPU_FAULT, "kind": "hang", "severity": None}
    m = scoring.aggregate(
        [scoring.score_run(_truth([GPU_FAULT]), _det()), scoring.score_run(_truth([hang]), _det())]
    )
    assert set(m["by_severity"]) == {"20%", "hang"}
    assert m["by_severity"]["hang"]["faults"] == 1


def test_symmetric_faults_not_scored_for_culprit_rank():
    nv = {**GPU_FAULT, "component": "nvlink", "ranks": [0, 1]}
    m = scoring.aggregate([scoring.score_run(_truth([nv]), _det([], [_finding("nvlink", [0, 1])]))])
    assert m["culprit_knowable_faults"] == 0
    assert m["culprit_rank_top1"] is None
    assert m["component_top1"] == 1.0


def test_stream_breaks_ties_between_same_start():
    t = _truth([GPU_FAULT])
    lab = t["labels"]["1"]
    # a second instance on another stream starting at the same ns as root index 2, labelled normal
    for col, val in (
        ("stream", 9),
        ("start_ns", lab["start_ns"][2]),
        ("end_ns", lab["end_ns"][2] + 7),
        ("label", 0),
        ("fault", -1),
    ):
        lab[col].append(val)
    a = _anomaly(t, 1, 2)
    assert scoring.score_run(t, _det([a])).tp == 1
    a9 = {**a, "stream": 9, "end_ns": lab["end_ns"][-1]}
    rs = scoring.score_run(t, _det([a9]))
    assert (rs.tp, rs.fp_lenient) == (0, 1)


def test_check_detection_rejects_wrong_schema():
    scoring.check_detection(_det())
    with pytest.raises(ValueError):
        scoring.check_detection({"schema": "other", "anomalies": [], "findings": []})
    with pytest.raises(ValueError):
        scoring.check_detection({**_det(), "findings": [{"ranks": [1]}]})


def test_baseline_end_to_end_on_simulated_scenario(tmp_path):
    from benchmarks import baseline_zscore, suite
    from kat_gui import simulate

    spec = suite.e2e_case()
    run_dir = suite.generate_case(simulate, spec, tmp_path / "case", seed=1)
    truth = json.loads((run_dir / "truth.json").read_text())
    det = baseline_zscore.detect_dir(run_dir)
    scoring.check_detection(det)
    rs = scoring.score_run(truth, det)
    assert rs.n_instances > 0
    assert rs.unmatched == 0, "baseline anomalies must match truth instances exactly by (rank, start_ns)"
    assert not rs.healthy and rs.faults
    m = scoring.aggregate([rs])
    assert m["kernel"]["recall"] is not None
