"""Changes located in time (kat_gui.compare.window): a row that changed in a part of the run reports that
window of steps, and its numbers (p50s, means, effect) come from those steps; a change over the whole run,
and no change at all, leave the comparison exactly as it was."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from kat_gui import pipeline
from kat_gui import simulate as sim
from kat_gui.compare import Params, compare_runs, compare_stores, load_run
from kat_gui.compare.command import summary_lines
from kat_gui.compare.window import best_window

# ------------------------------------------------------------------------------ the segment search


def _series(n: int, a: int, b: int, shift: float, seed: int, sigma: float = 0.01) -> np.ndarray:
    x = np.random.default_rng(seed).normal(0.0, sigma, n)
    x[a:b] += shift
    return x


def test_best_window_finds_a_step_change_and_its_side():
    hit = best_window(_series(48, 16, 40, 0.2, 0), 8, 0.04)
    assert hit is not None and (hit.a, hit.b) == (16, 40)
    assert hit.inside == pytest.approx(0.2, abs=0.02) and abs(hit.outside) < 0.01
    # A change from step 10 to the end: the window is the changed part, not the healthy start before it.
    hit = best_window(_series(48, 10, 48, -0.15, 1), 8, 0.04)
    assert hit is not None and (hit.a, hit.b) == (10, 48) and hit.inside < 0


@pytest.mark.parametrize(
    "x",
    [
        _series(48, 0, 48, 0.2, 2),  # the whole run moved: no window
        _series(48, 0, 0, 0.0, 3, sigma=0.02),  # noise only
        _series(48, 20, 21, 5.0, 4),  # one odd step
        _series(48, 16, 40, 0.02, 5, sigma=0.002),  # a clear change, but under the effect floor
        np.r_[_series(24, 0, 24, 0.2, 6), _series(24, 0, 24, 0.3, 7)],  # moved everywhere, by varying amounts
    ],
    ids=["whole_run", "noise", "one_step", "below_floor", "varying_whole_run"],
)
def test_best_window_invents_nothing(x):
    assert best_window(x, 8, 0.04) is None


# ------------------------------------------------------------------------------ simulated runs


def _store(tmp: Path, name: str, spec, seed: int) -> Path:
    out = sim.simulate(tmp / name, spec, seed=seed)
    files = sorted(p for p in Path(out).glob("*.json") if p.name != "truth.json")
    return pipeline.ingest(files, tmp / f"{name}.kat.h5", name=name)


def _json(c) -> str:
    """The JSON output, less the switch itself (written only when off)."""
    js = c.to_json()
    js["params"].pop("locate_in_time", None)
    return json.dumps(js, indent=1)


def _agrees(d, tol: float = 0.03) -> bool:
    """The row's p50 and mean columns move as its effect says."""
    return abs(d.p50_degraded_ns / d.p50_healthy_ns - 1 - d.effect) < tol and (
        abs(d.mean_degraded_ns / d.mean_healthy_ns - 1 - d.effect) < tol
    )


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """The demo pair (GPU 2 throttled by 20 % in steps 16-39 of 48), shared with the GUI tests' folder."""
    from kat_gui.demo import ensure_demo

    return ensure_demo(tmp_path_factory.getbasetemp() / "kat-demo-shared")


def test_demo_pair_reports_the_throttled_window(demo, tmp_path):
    healthy, degraded = demo
    c = compare_stores(healthy, degraded)
    top = c.differences[0]
    assert top.significant and top.rank == 2 and top.kernel_class == "compute", top
    assert top.effect >= 0.15
    w = top.window
    assert w is not None
    assert abs(w["steps"][0] - 16) <= 2 and abs(w["steps"][1] - 39) <= 2, w["steps"]
    assert w["healthy_steps"] == w["steps"]  # anchored at each run's first step
    for key in ("healthy_ns", "degraded_ns"):
        assert w[key][0] < w[key][1]
    # The columns agree with the change (over the whole run the p50s of these kernels did not move).
    assert _agrees(top), (top.p50_healthy_ns, top.p50_degraded_ns, top.effect)
    assert w["whole_run"]["effect"] < top.effect
    for d in c.significant():
        if d.window is not None and d.kind in ("kernel_rank", "class_rank") and d.kernel_class == "compute":
            assert d.rank == 2 and _agrees(d)
    # The rank's busy time comes from the same window; the per-rank table says so.
    busy = next(r for r in c.ranks if r["rank"] == 2)["busy"]
    assert busy["significant"] and busy["window"]["steps"] == w["steps"]
    # JSON: the window is there, every whole-run key still is.
    js = c.to_json()
    row = js["differences"][0]
    assert row["window"]["steps"] == w["steps"] and "p50_healthy_ns" in row and "delta_p50_ns" in row
    assert "locate_in_time" not in js["params"]  # at its default: left out, the params stay as they were
    # Text: the window is named on the row and in the line above the table.
    text = "\n".join(summary_lines(c))
    a, b = w["steps"]
    assert f"steps {a}-{b}" in text and "changed in part of the run only" in text
    # Without the search, the old whole-run numbers.
    old = compare_stores(healthy, degraded, params=Params(locate_in_time=False))
    assert not old.located() and not any("window" in r for r in old.to_json()["differences"])


def test_report_shows_the_window(demo, tmp_path):
    from kat_gui.report.build import write_report

    healthy, degraded = demo
    out = write_report(degraded, tmp_path / "rep", compare_with=healthy)
    html = Path(out).read_text(encoding="utf-8")
    assert "steps 16-39" in html or "steps 15-39" in html or "steps 16-40" in html
    md = (Path(out).parent / "report.md").read_text(encoding="utf-8")
    assert "steps" in md and "changed in part of the run only" in md


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cw")
    base = sim.SCENARIOS["healthy_tp4_decode"].with_(n_layers=4)
    whole = base.with_(faults=[sim.FaultSpec("gpu", [1], 0.25, 0)])
    transient = base.with_(faults=[sim.FaultSpec("gpu", [1], 0.2, 20, 30)])
    return {
        "healthy11": _store(tmp, "healthy11", base, 11),
        "healthy12": _store(tmp, "healthy12", base, 12),
        "whole11": _store(tmp, "whole11", whole, 11),
        "transient11": _store(tmp, "transient11", transient, 11),
    }


def test_whole_run_fault_keeps_the_whole_run_output(runs):
    h, d = load_run(runs["healthy11"]), load_run(runs["whole11"])
    c = compare_runs(h, d)
    assert c.differences[0].rank == 1 and c.differences[0].significant
    assert not c.located()
    assert _json(c) == _json(compare_runs(h, d, params=Params(locate_in_time=False)))
    assert summary_lines(c) == summary_lines(compare_runs(h, d, params=Params(locate_in_time=False)))


def test_healthy_pair_gets_no_window(runs):
    h, d = load_run(runs["healthy11"]), load_run(runs["healthy12"])
    c = compare_runs(h, d)
    assert not c.significant() and not c.located()
    assert _json(c) == _json(compare_runs(h, d, params=Params(locate_in_time=False)))


@pytest.mark.parametrize("healthy", ["healthy11", "healthy12"], ids=["twin", "other_seed"])
def test_transient_fault_mid_run_is_found_and_located(runs, healthy):
    """GPU 1 throttled by 20 % in steps 20-29 of 48 only (seed 11): over the whole run that is ~+4 %, at
    or under the effect floor; in its window it is the top row, with its own numbers. Against the twin
    (same seed) and against a healthy run of another seed (a different batch per step)."""
    h, d = load_run(runs[healthy]), load_run(runs["transient11"])
    c = compare_runs(h, d)
    top = c.differences[0]
    assert top.significant and top.rank == 1 and top.kernel_class == "compute", top
    assert top.window is not None
    a, b = top.window["steps"]
    assert abs(a - 20) <= 2 and abs(b - 29) <= 2, (a, b)
    assert top.effect > 0.15 and _agrees(top, tol=0.05)
    assert top.window["whole_run"]["effect"] < 0.08
    # Every located significant row is on the throttled rank (or pooled over all ranks).
    assert all(x.rank in (1, None) for x in c.located() if x.significant and not x.symptom)


# ------------------------------------------------------------------------------ the GUI's comparison view


@pytest.mark.gui
@pytest.mark.skipif(importlib.util.find_spec("pytestqt") is None, reason="pytest-qt is not installed")
@pytest.mark.usefixtures("private_kat_dirs")
def test_comparison_view_shades_the_window_on_both_timelines(qtbot, demo):
    from kat_gui.ui.compare_view import CompareView, compute_comparison
    from kat_gui.ui.run_model import RunModel

    healthy, degraded = demo
    h, d = RunModel(healthy), RunModel(degraded)
    try:
        cv = CompareView(h, d)
        qtbot.addWidget(cv)
        cv.set_result(compute_comparison(str(healthy), str(degraded)))
        c = cv.result["comparison"]
        top = c.differences[0]
        assert top.window is not None and cv.window_row is top
        assert "steps 16-39 (shaded)" in cv.banner.text()
        # One shaded region on each timeline's lanes and overview, at that run's own times of the steps.
        assert len(cv._window_items) == 4
        for (_plot, item), (model, key) in zip(
            cv._window_items,
            [(d, "degraded_ns"), (d, "degraded_ns"), (h, "healthy_ns"), (h, "healthy_ns")],
            strict=True,
        ):
            want = [(t - model.t0_ns) / 1e9 for t in top.window[key]]
            assert list(item.getRegion()) == pytest.approx(want)
            assert not item.movable
        # A row without a window keeps the shading; the view clears it when asked to mark nothing.
        plain = next(i for i, x in enumerate(cv.rows) if x.window is None and x.kind.startswith("kernel"))
        cv.goto_row(plain)
        assert cv.window_row is top and len(cv._window_items) == 4
        cv.result = None
        assert cv.mark_window() is False and cv._window_items == []
    finally:
        h.close()
        d.close()
