"""The desktop window on a real 8-rank trace (offscreen Qt): open, zoom/pan, select, navigate, filter, screenshot."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("pytestqt")
from PySide6 import QtCore, QtGui, QtWidgets  # noqa: E402

from kat_gui.ui import loader  # noqa: E402
from kat_gui.ui.run_model import ROLE_ROOT  # noqa: E402

pytestmark = [pytest.mark.gui, pytest.mark.usefixtures("private_kat_dirs")]


@pytest.fixture(scope="module")
def dlrm_store(dlrm_dir, tmp_path_factory) -> Path:
    """The DLRM trace ingested and analysed once for the module, exactly as the window does it."""
    stores = loader.prepare([dlrm_dir], tmp_path_factory.mktemp("ui-cache"))
    assert len(stores) == 1
    return stores[0]


@pytest.fixture(scope="module")
def anomalous_store(dlrm_store) -> Path:
    """A real analysed run with anomalies: the DLRM trace, whose rank 7 arrives last at its collectives and
    keeps its peers waiting (docs/detection.md: a cpu straggler finding, roots and symptoms)."""
    from kat_gui.ui.run_model import RunModel

    m = RunModel(dlrm_store)
    try:
        assert m.anomaly_count() > 0 and m.culprit_ranks() == [7]
    finally:
        m.close()
    return dlrm_store


@pytest.fixture(scope="module")
def demo_pair(tmp_path_factory) -> tuple[Path, Path]:
    from kat_gui.demo import ensure_demo

    # The same folder as tests/test_ui_notes_compare.py: the demo is built once per session.
    return ensure_demo(tmp_path_factory.getbasetemp() / "kat-demo-shared")


def test_demo_degraded_run_names_the_throttled_gpu_and_is_cached(demo_pair):
    from kat_gui.demo import ensure_demo
    from kat_gui.ui.run_model import RunModel

    healthy, degraded = demo_pair
    m = RunModel(degraded)
    try:
        assert m.findings and m.findings[0]["component"] in ("gpu", "hbm")
        assert m.findings[0]["ranks"] == [2]  # the scenario throttles GPU 2
        assert m.culprit_ranks() == [2]
    finally:
        m.close()
    stamp = degraded.stat().st_mtime_ns
    again = ensure_demo(degraded.parent.parent)
    assert again == (healthy, degraded) and degraded.stat().st_mtime_ns == stamp


def _open(qtbot, win, path):
    win.open_paths([path])
    qtbot.waitUntil(lambda: win.tabs.count() >= 1 and not win.busy(), timeout=60_000)
    view = win.current_view()
    assert view is not None
    QtWidgets.QApplication.processEvents()
    return view


def test_open_trace_folder_ingests_and_analyses(qtbot, window, dlrm_dir, tmp_path):
    view = _open(qtbot, window, dlrm_dir)
    m = view.model
    assert sorted(m.ranks) == list(range(8))
    assert m.has_detection
    assert "8 ranks" in window.run_label.text()
    # The recent-files list persisted in the private config dir.
    saved = (tmp_path / "config" / "gui.json").read_text()
    assert "param_dlrm_8rank" in saved
    assert [lane.rank for lane in view.timeline.lanes if lane.kind == "rank"] == list(range(8))
    assert "V100" in view.timeline.lanes[0].label


def test_keys_and_wheel_zoom_and_pan(qtbot, window, dlrm_store):
    view = _open(qtbot, window, dlrm_store)
    tl = view.timeline
    tl.fit_all()
    x0, x1 = tl.x_range()
    qtbot.keyClick(tl.plot, QtCore.Qt.Key.Key_W)
    a0, a1 = tl.x_range()
    assert (a1 - a0) == pytest.approx((x1 - x0) / 2, rel=1e-3)
    assert (a0 + a1) / 2 == pytest.approx((x0 + x1) / 2, rel=1e-3)
    qtbot.keyClick(tl.plot, QtCore.Qt.Key.Key_D)
    b0, b1 = tl.x_range()
    assert b0 > a0 and (b1 - b0) == pytest.approx(a1 - a0, rel=1e-3)
    qtbot.keyClick(tl.plot, QtCore.Qt.Key.Key_A)
    qtbot.keyClick(tl.plot, QtCore.Qt.Key.Key_A)
    c0, _ = tl.x_range()
    assert c0 < b0
    qtbot.keyClick(tl.plot, QtCore.Qt.Key.Key_S)
    d0, d1 = tl.x_range()
    assert (d1 - d0) == pytest.approx(2 * (a1 - a0), rel=1e-3)
    qtbot.keyClick(tl.plot, QtCore.Qt.Key.Key_F)
    assert tl.x_range() == pytest.approx((0.0, tl._span_s()))

    # Wheel up at a point a quarter into the view zooms in around that point.
    vb = tl.vb
    e0, e1 = tl.x_range()
    target = e0 + 0.25 * (e1 - e0)
    scene_pt = vb.mapViewToScene(QtCore.QPointF(target, 1.5))
    widget_pt = tl.plot.mapFromScene(scene_pt)
    ev = QtGui.QWheelEvent(
        QtCore.QPointF(widget_pt),
        QtCore.QPointF(tl.plot.mapToGlobal(widget_pt)),
        QtCore.QPoint(0, 0),
        QtCore.QPoint(0, 240),
        QtCore.Qt.MouseButton.NoButton,
        QtCore.Qt.KeyboardModifier.NoModifier,
        QtCore.Qt.ScrollPhase.NoScrollPhase,
        False,
    )
    QtWidgets.QApplication.sendEvent(tl.plot.viewport(), ev)
    f0, f1 = tl.x_range()
    assert (f1 - f0) < 0.9 * (e1 - e0)
    assert f0 > e0 and f1 < e1
    assert f0 < target < f1


def test_click_selects_kernel_and_details_show_it(qtbot, window, dlrm_store):
    view = _open(qtbot, window, dlrm_store)
    tl = view.timeline
    # Zoom to the longest kernel of rank 0's first GPU track, where kernels are raw events (not summaries).
    track = view.model.ranks[0].gpu_tracks[0]
    ev = view.model.store.track_events(track, ["start_ns", "end_ns"])
    k = int(np.argmax(ev["end_ns"] - ev["start_ns"]))
    tl.zoom_ns(int(ev["start_ns"][k]), int(ev["end_ns"][k]), margin=1.0)
    tl.settle()  # the window's rectangles, read on the run's store thread
    lane = next(i for i, ld in enumerate(tl.lanes_item.data) if len(ld) and (ld.index >= 0).any())
    ld = tl.lanes_item.data[lane]
    j = int(np.flatnonzero(ld.index >= 0)[np.argmax((ld.end_ns - ld.start_ns)[ld.index >= 0])])
    mid_s = ((int(ld.start_ns[j]) + int(ld.end_ns[j])) / 2 - view.model.t0_ns) / 1e9
    pt = tl.plot.mapFromScene(tl.vb.mapViewToScene(QtCore.QPointF(mid_s, lane + 0.5)))
    qtbot.mouseClick(tl.plot.viewport(), QtCore.Qt.MouseButton.LeftButton, pos=pt)
    assert tl.selected == (int(ld.track[j]), int(ld.index[j]))
    name = view.model.string(int(ld.name[j]))
    # The details are read on the run's store thread and shown when they arrive.
    qtbot.waitUntil(lambda: view.details.shown == tl.selected, timeout=10_000)
    assert name[:30] in view.details.toPlainText()
    assert "Same kernel on the other ranks" in view.details.toPlainText()


def test_anomaly_table_row_navigates_timeline(qtbot, window, anomalous_store):
    view = _open(qtbot, window, anomalous_store)
    tl = view.timeline
    tl.fit_all()
    table = view.findings.table
    model = view.findings.table_model
    assert model.rowCount() == view.model.anomaly_count() > 0
    idx = model.index(0, 1)
    rect = table.visualRect(idx)
    qtbot.mouseClick(table.viewport(), QtCore.Qt.MouseButton.LeftButton, pos=rect.center())
    r = model.anomaly_row(0)
    a = view.model.anomalies
    x0, x1 = tl.x_range_ns()
    assert x0 <= int(a["start_ns"][r]) and int(a["end_ns"][r]) <= x1
    assert (x1 - x0) < (view.model.t1_ns - view.model.t0_ns) / 2
    assert tl.selected == (int(a["track"][r]), int(a["index"][r]))
    # Filtering by rank keeps only that rank's rows.
    rank = int(a["rank"][r])
    view.findings.rank_box.setCurrentIndex(view.findings.rank_box.findData(rank))
    ranks = {model.data(model.index(i, 0)) for i in range(model.rowCount())}
    assert ranks == {rank}
    # N steps to a root anomaly and zooms to it.
    qtbot.keyClick(tl.plot, QtCore.Qt.Key.Key_N)
    tr, ix = tl.selected
    hits = view.model.anomalies_of(tr, ix)
    # N visits root anomalies (a kernel may also be a symptom of another finding); the run has roots.
    assert (a["role"] == ROLE_ROOT).any()
    assert len(hits) and ROLE_ROOT in {int(x) for x in a["role"][hits]}


def test_a_closed_tab_gives_its_run_back(qtbot, window, dlrm_store):
    """The window keeps long-lived objects out of the cyclic collector's way (``ui.collector``: frozen once a
    tab has painted); closing the tab hands them back, so the run and its view are freed, not kept for good."""
    import gc
    import weakref

    view = _open(qtbot, window, dlrm_store)
    assert gc.get_freeze_count() > 0  # the open tab's objects are frozen
    run, tab = weakref.ref(view.model), weakref.ref(view)
    window.close_tab(window.tabs.indexOf(view))
    del view
    qtbot.waitUntil(lambda: run() is None and tab() is None, timeout=10_000)


def test_anomaly_table_sorts_by_header_and_back_to_score(qtbot, window, anomalous_store):
    view = _open(qtbot, window, anomalous_store)
    table, model = view.findings.table, view.findings.table_model
    a = view.model.anomalies
    score = a["score"].astype(float)

    def shown(col: int) -> np.ndarray:
        return np.array([a[col][model.anomaly_row(i)] for i in range(model.rowCount())], dtype=float)

    # Opens highest score first, every row once.
    assert sorted(model.anomaly_row(i) for i in range(model.rowCount())) == list(range(len(score)))
    assert (np.diff(score[[model.anomaly_row(i) for i in range(model.rowCount())]]) <= 0).all()
    desc, asc = QtCore.Qt.SortOrder.DescendingOrder, QtCore.Qt.SortOrder.AscendingOrder
    table.sortByColumn(0, desc)  # rank, highest first
    assert (np.diff(shown("rank")) <= 0).all()
    table.sortByColumn(6, asc)  # back to score (its ascending key is -score): highest score first again
    assert (np.diff(shown("score")) <= 0).all()
    table.sortByColumn(6, desc)
    assert (np.diff(shown("score")) >= 0).all()


def test_topology_click_filters_lanes(qtbot, window, dlrm_store):
    view = _open(qtbot, window, dlrm_store)
    topo = view.topology
    assert "inferred topology" in topo.title.text()
    item = topo.node_items["GPU5"]
    pt = topo.view.mapFromScene(item.sceneBoundingRect().center())
    qtbot.mouseClick(topo.view.viewport(), QtCore.Qt.MouseButton.LeftButton, pos=pt)
    assert {lane.rank for lane in view.timeline.lanes} == {5}
    qtbot.mouseClick(topo.view.viewport(), QtCore.Qt.MouseButton.LeftButton, pos=pt)
    assert {lane.rank for lane in view.timeline.lanes} == set(range(8))
    # A PCIe switch stands for the GPUs below it.
    sw = next(n for n in topo.node_items if n.startswith("PCIe"))
    topo.click_node(sw)
    shown = {lane.rank for lane in view.timeline.lanes}
    assert 0 < len(shown) < 8
    topo.clear_btn.click()
    assert {lane.rank for lane in view.timeline.lanes} == set(range(8))


def test_explanation_panel_fills(qtbot, window, dlrm_store):
    view = _open(qtbot, window, dlrm_store)
    panel = view.explanation
    qtbot.waitUntil(
        lambda: panel.job is None or panel.job.state not in ("pending", "running"), timeout=60_000
    )
    text = panel.text.toPlainText()
    assert text.strip()
    header = panel.source_label.text()
    assert "[fallback]" in header or "not available" in header  # the window ran it without the model
    assert view.model.findings  # the DLRM trace's rank-7 straggler
    assert panel.tree.topLevelItemCount() >= 1
    # Evidence items with a window navigate the timeline.
    role = QtCore.Qt.ItemDataRole.UserRole + 1
    top = panel.tree.topLevelItem(0)
    with_window = [top.child(i) for i in range(top.childCount()) if top.child(i).data(0, role)]
    assert with_window, "the top hypothesis's evidence carries its time window"
    ev = with_window[0]
    s, e, _rank = ev.data(0, role)
    assert s is not None and e is not None and int(e) > int(s)
    # Start from a view that does not hold the window (the last microsecond of the run), then click.
    view.timeline.zoom_ns(view.model.t1_ns - 1_000, view.model.t1_ns, margin=0.0)
    x0, x1 = view.timeline.x_range_ns()
    assert not (x0 <= int(s) and int(e) <= x1)
    panel._clicked(ev, 0)
    x0, x1 = view.timeline.x_range_ns()
    assert x0 <= int(s) and int(e) <= x1


def test_bad_input_reports_file_and_problem(qtbot, window, tmp_path):
    bad = tmp_path / "broken.kat.h5"
    bad.write_bytes(b"\x89HDF\r\n\x1a\nnot really")
    window.open_paths([bad])
    qtbot.waitUntil(lambda: not window.busy(), timeout=20_000)
    assert window.errors and "broken.kat.h5" in window.errors[-1]
    assert window.tabs.count() == 0


def test_cancel_opens_nothing(qtbot, window, dlrm_dir):
    job = window.open_paths([dlrm_dir])
    job.cancel()
    qtbot.waitUntil(lambda: not window.busy(), timeout=30_000)
    assert job.state == "cancelled"
    assert window.tabs.count() == 0


def test_tooltip_escapes_trace_strings(qtbot, window, dlrm_store, monkeypatch):
    view = _open(qtbot, window, dlrm_store)
    tl = view.timeline
    tl.settle()
    lane = next(i for i, ld in enumerate(tl.lanes_item.data) if len(ld))
    monkeypatch.setattr(view.model, "string", lambda sid: "<img src=x onerror=alert(1)>")
    tip = tl.tooltip_text(lane, 0)
    assert "<img" not in tip and "&lt;img" in tip


def test_geometry_and_settings_persist(qtbot, tmp_path):
    from kat_gui.ui.main_window import MainWindow
    from kat_gui.ui.settings import Settings

    win = MainWindow(interactive=False)
    qtbot.addWidget(win)
    win.resize(700, 520)  # inside the offscreen screen (800x600), so no clamping
    win.show()
    qtbot.waitExposed(win)
    win.close()
    s = Settings()
    assert s.path.parent == tmp_path / "config"
    assert s.get("geometry")
    win2 = MainWindow(interactive=False)
    qtbot.addWidget(win2)
    assert (win2.width(), win2.height()) == (700, 520)


def test_screenshot_quit_contains_anomaly_colour(qtbot, anomalous_store, tmp_path):
    from kat_gui.ui import app

    out = tmp_path / "shot.png"
    (tmp_path / "config").mkdir(exist_ok=True)
    (tmp_path / "config" / "gui.json").write_text('{"explain_with_model": false}')
    args = argparse.Namespace(
        paths=[str(anomalous_store)], compare=None, demo=False, screenshot=str(out), quit=True
    )
    assert app.run(args) == 0
    img = QtGui.QImage(str(out))
    assert not img.isNull() and img.width() >= 1000 and img.height() >= 600
    ptr = img.convertToFormat(QtGui.QImage.Format.Format_RGB32).constBits()
    px = np.frombuffer(ptr, np.uint8).reshape(img.height(), img.width(), 4)
    b, g, r = px[..., 0].astype(int), px[..., 1].astype(int), px[..., 2].astype(int)
    red = (abs(r - 214) < 12) & (abs(g - 39) < 12) & (abs(b - 40) < 12)
    assert red.sum() > 200  # root anomaly outlines and overview marks
