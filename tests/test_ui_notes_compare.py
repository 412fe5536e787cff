"""The window's second round (offscreen Qt): notes saved as the user works and undone with Ctrl+Z, exported
pictures holding the notes, the comparison view on the demo pair, and the rasterised timeline lanes."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("pytestqt")
from PySide6 import QtCore, QtGui, QtWidgets  # noqa: E402

pytestmark = [pytest.mark.gui, pytest.mark.usefixtures("private_kat_dirs")]


@pytest.fixture(scope="session")
def demo_pair(tmp_path_factory) -> tuple[Path, Path]:
    """The demo's healthy/degraded stores, built once per test session (tests/test_ui.py shares the folder)."""
    from kat_gui.demo import ensure_demo

    return ensure_demo(tmp_path_factory.getbasetemp() / "kat-demo-shared")


@pytest.fixture
def degraded_copy(demo_pair, tmp_path) -> Path:
    """A private copy of the degraded store: notes are written into it."""
    dst = tmp_path / "degraded.kat.h5"
    shutil.copy(demo_pair[1], dst)
    return dst


def _idle(qtbot, win) -> None:
    qtbot.waitUntil(lambda: not win.busy(), timeout=60_000)
    QtWidgets.QApplication.processEvents()


def test_notes_add_edit_undo_survive_reopen(qtbot, window, degraded_copy):
    view = window.open_store(degraded_copy)
    _idle(qtbot, window)
    m = view.model
    assert m.notes is not None, m.notes_error
    panel = view.notes
    view.timeline.zoom_ns(m.t0_ns + 10_000_000, m.t0_ns + 20_000_000, margin=0.0)
    a = panel.add_note("time", text="GPU2 <b>throttles</b> & peers wait")
    assert a is not None and a.start_ns is not None
    assert (
        abs(a.start_ns - (m.t0_ns + 10_000_000)) < 100_000
        and abs(a.end_ns - (m.t0_ns + 20_000_000)) < 100_000
    )
    # A kernel note pinned to the selected kernel (an anomaly's kernel).
    row = int(np.flatnonzero(m.anomalies["role"] == 1)[0])
    view.goto_anomaly(row)
    k = panel.add_note("kernel", text="this one is slow")
    assert (k.track, k.index) == (int(m.anomalies["track"][row]), int(m.anomalies["index"][row]))
    panel.add_note("rank", text="rank two", rank=2)
    assert panel.table.rowCount() == 3
    assert len(view.timeline.notes_item.notes) == 3
    panel.edit_note(a.id, text="edited text")
    assert m.notes.get(a.id).text == "edited text"
    # Ctrl+Z in the window undoes the last change (the edit), Ctrl+Shift+Z redoes nothing after a new undo.
    window.activateWindow()
    qtbot.keyClick(window, QtCore.Qt.Key.Key_Z, QtCore.Qt.KeyboardModifier.ControlModifier)
    assert m.notes.get(a.id).text == "GPU2 <b>throttles</b> & peers wait"
    panel.delete_note(k.id)
    assert panel.table.rowCount() == 2
    assert "Notes (2)" in view.bottom.tabText(view.bottom.indexOf(panel))
    # The rich-text tooltip escapes the note; the cell shows it verbatim.
    cells = [panel.table.item(r, 3) for r in range(panel.table.rowCount())]
    cell = next(c for c in cells if "throttles" in c.text())
    assert "<b>throttles</b>" in cell.text() and "&lt;b&gt;" in cell.toolTip()
    window.close_tab(window.tabs.indexOf(view))

    # Reopen: the notes were saved as the user worked (no save step).
    view2 = window.open_store(degraded_copy)
    texts = sorted(n.text for n in view2.model.notes.items())
    assert texts == sorted(["GPU2 <b>throttles</b> & peers wait", "rank two"])
    assert view2.notes.table.rowCount() == 2


def _pixels(path: Path) -> np.ndarray:
    img = QtGui.QImage(str(path)).convertToFormat(QtGui.QImage.Format.Format_RGB32)
    return np.frombuffer(img.constBits(), np.uint8).reshape(img.height(), img.width(), 4).copy()


def test_exported_png_and_svg_contain_the_note(qtbot, window, degraded_copy, tmp_path):
    view = window.open_store(degraded_copy)
    _idle(qtbot, window)
    view.timeline.fit_all()
    plain = window.export_view(tmp_path / "plain.png")
    m = view.model
    view.notes.add_note(
        "time", text="Throttle <starts> here", start_ns=m.t0_ns + 35_000_000, end_ns=m.t0_ns + 40_000_000
    )
    png = window.export_view(tmp_path / "noted.png")
    svg = window.export_view(tmp_path / "noted.svg")
    text = svg.read_text(encoding="utf-8")
    assert "<svg" in text and "Throttle &lt;starts&gt; here" in text and "<starts>" not in text
    assert m.name in text  # the run's name heads the picture
    a, b = _pixels(plain), _pixels(png)
    assert a.shape[1] == b.shape[1] and a.shape[0] > 300
    h = min(a.shape[0], b.shape[0])
    assert (np.abs(a[:h].astype(int) - b[:h].astype(int)).sum(axis=2) > 60).sum() > 200

    # The note's blue band and label are drawn: pixels of the note colour only in the noted picture.
    def blue(px):
        return ((px[..., 2] < 90) & (px[..., 1] > 80) & (px[..., 1] < 140) & (px[..., 0] > 200)).sum()

    assert blue(b) > blue(a) + 20


def test_comparison_view_syncs_and_jumps_to_diff_rows(qtbot, window, demo_pair):
    healthy, degraded = demo_pair
    job = window.open_comparison([healthy], [degraded], with_tabs=True)
    _idle(qtbot, window)
    assert job.state == "done"
    from kat_gui.ui.compare_view import CompareView

    cv = next(
        window.tabs.widget(i)
        for i in range(window.tabs.count())
        if isinstance(window.tabs.widget(i), CompareView)
    )
    qtbot.waitUntil(lambda: cv.job is not None and cv.job.state not in ("pending", "running"), timeout=60_000)
    QtWidgets.QApplication.processEvents()
    assert cv.result is not None, (cv.job.state, cv.error)
    window.tabs.setCurrentWidget(cv)
    assert window.tabs.count() == 3  # degraded, baseline, comparison
    c = cv.result["comparison"]
    tm = cv.table.model()
    assert c.significant() and tm.rowCount() == len(c.differences)
    # Significant rows are coloured and come first, the others grey.
    sig_row = next(r for r, d in enumerate(cv.rows) if d.significant)
    grey_row = next(r for r, d in enumerate(cv.rows) if not d.significant)
    assert sig_row == 0 and grey_row == len(c.significant())
    fg = QtCore.Qt.ItemDataRole.ForegroundRole
    assert tm.data(tm.index(sig_row, 6), fg).name() != "#8a8a8a"
    assert tm.data(tm.index(grey_row, 6), fg).name() == "#8a8a8a"
    # A click on the top kernel row moves both timelines to that kernel.
    row = next(r for r, d in enumerate(cv.rows) if d.kind.startswith("kernel") and d.significant)
    cv.top.fit_all()
    rect = cv.table.visualRect(cv.table.model().index(row, 1))
    qtbot.mouseClick(cv.table.viewport(), QtCore.Qt.MouseButton.LeftButton, pos=rect.center())
    assert cv.top.selected is not None and cv.bottom.selected is not None
    name = cv.rows[row].name
    for tl, model in ((cv.top, cv.degraded), (cv.bottom, cv.healthy)):
        ev = model.event(*tl.selected)
        assert model.event_name(ev) == name
        x0, x1 = tl.x_range_ns()
        assert x0 <= int(ev["start_ns"]) and int(ev["end_ns"]) <= x1
        assert (x1 - x0) < (model.t1_ns - model.t0_ns) / 10
    # Pan and zoom the top view: the bottom follows with the same width and offset.
    a0, a1 = cv.bottom.x_range()
    cv.top.pan(0.5)
    b0, b1 = cv.bottom.x_range()
    assert b0 - a0 == pytest.approx((a1 - a0) * 0.5, rel=1e-3) and (b1 - b0) == pytest.approx(
        a1 - a0, rel=1e-3
    )
    cv.bottom.zoom(2.0)
    t0, t1 = cv.top.x_range()
    assert (t1 - t0) == pytest.approx(2 * (a1 - a0), rel=1e-3)
    # Exporting the comparison names both runs.
    svg = window.export_view(Path(window.settings.path).parent / "cmp.svg").read_text(encoding="utf-8")
    assert cv.degraded.name in svg and cv.healthy.name in svg


def test_rasterised_lanes_match_the_rectangles(qtbot, demo_pair, monkeypatch):
    """The numpy raster used for dense views draws what the rectangles draw (same colours, same places)."""
    from kat_gui.ui import timeline, timeline_lanes
    from kat_gui.ui.run_model import RunModel

    m = RunModel(demo_pair[1])
    try:
        tl = timeline.TimelineView(m)
        qtbot.addWidget(tl)
        tl.resize(1200, 500)
        tl.show()
        qtbot.waitExposed(tl)
        tl.zoom_ns(m.t0_ns + 30_000_000, m.t0_ns + 60_000_000, margin=0.0)
        tl.anomaly_item.hide()
        tl.settle()  # the window's rectangles, read on the run's store thread
        vec = tl.plot.grab().toImage()
        assert not tl.lanes_item.uses_raster()
        monkeypatch.setattr(timeline_lanes, "RASTER_MIN_RECTS", 0)
        tl.lanes_item._raster = None
        tl.lanes_item.update()
        ras = tl.plot.grab().toImage()
        assert tl.lanes_item.uses_raster() and tl.lanes_item._raster is not None

        def arr(img):
            img = img.convertToFormat(QtGui.QImage.Format.Format_RGB32)
            return np.frombuffer(img.constBits(), np.uint8).reshape(img.height(), img.width(), 4)[..., :3]

        a, b = arr(vec).astype(int), arr(ras).astype(int)
        assert a.shape == b.shape
        compute = np.array([168, 120, 76])  # #4C78A8 as BGR
        in_a = (np.abs(a - compute).sum(axis=2) < 40).sum()
        in_b = (np.abs(b - compute).sum(axis=2) < 40).sum()
        assert in_a > 2000 and abs(in_a - in_b) < 0.25 * in_a
        assert np.abs(a - b).sum(axis=2).mean() < 25
    finally:
        m.close()
