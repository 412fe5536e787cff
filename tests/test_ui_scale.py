"""Large jobs in the GUI (offscreen Qt): a 512-rank run (64 hosts x 8 GPUs, rank 509 throttled) opens with the
culprit's lane and label readable in the first frame, labels never overlap, symptoms are lighter than roots,
the topology shows the hosts (implicated one expanded and coloured) and the rank x step overview colours each
cell by the rank's stored slowdown vs its peers or its wait share (the anomaly table for a store analysed before
those were stored) and navigates."""

from __future__ import annotations

import shutil
import sys
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("pytestqt")
from PySide6 import QtCore, QtGui, QtWidgets  # noqa: E402

from kat_gui import cli  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
from benchmarks import synth_run  # noqa: E402

pytestmark = [pytest.mark.gui, pytest.mark.usefixtures("private_kat_dirs")]
CULPRIT = 509


@pytest.fixture(scope="module")
def big_store(tmp_path_factory) -> Path:
    """512 ranks x 24 steps (86,016 GPU events), 8 ranks per host, rank 509 20 % slower from step 8."""
    d = tmp_path_factory.mktemp("big")
    synth_run.generate(d / "traces", ranks=512, steps=24, layers=2, culprit=CULPRIT, slowdown=0.2, seed=0)
    out = d / "run.kat.h5"
    assert (
        cli.main(["ingest", str(d / "traces"), "-o", str(out), "--ranks-per-node", "8", "--workers", "0"])
        == 0
    )
    assert cli.main(["detect", str(out), "--workers", "0"]) == 0
    return out


@pytest.fixture
def view(qtbot, big_store):
    from kat_gui.ui.main_window import MainWindow

    win = MainWindow(interactive=False, use_llm=False)
    qtbot.addWidget(win)
    win.resize(1600, 980)
    win.show()
    qtbot.waitExposed(win)
    win.open_paths([big_store])
    qtbot.waitUntil(lambda: win.tabs.count() >= 1 and not win.busy(), timeout=60_000)
    v = win.current_view()
    assert v is not None
    for _ in range(3):
        QtWidgets.QApplication.processEvents()
    return v


def _lane_rows_px(tl) -> list[tuple[float, float, int]]:
    """(top, bottom, rank) of every lane in the plot's pixels."""
    vb = tl.vb
    out = []
    for i, lane in enumerate(tl.lanes):
        top = tl.plot.mapFromScene(vb.mapViewToScene(QtCore.QPointF(0, i))).y()
        bot = tl.plot.mapFromScene(vb.mapViewToScene(QtCore.QPointF(0, i + 1))).y()
        out.append((top, bot, lane.rank))
    return out


def test_culprit_lane_visible_and_legible_in_first_frame(view):
    tl = view.timeline
    assert view.large and view.heatmap is not None
    ranks = [lane.rank for lane in tl.lanes]
    assert CULPRIT in ranks and len(ranks) <= 8  # implicated + a few reference peers, not 512 hairlines
    assert ranks[0] == CULPRIT  # pinned at the top
    rows = _lane_rows_px(tl)
    fh = QtGui.QFontMetrics(tl.axis.font()).height()
    viewport_h = tl.plot.height()
    for top, bot, rank in rows:
        assert bot - top >= fh + 2, (rank, bot - top, fh)  # a lane is taller than its label
        if rank == CULPRIT:
            assert 0 <= top and bot <= viewport_h  # on screen, no scrolling
    # the lane labels are one per lane, in disjoint rows: they cannot overlap
    spans = sorted((t, b) for t, b, _ in rows)
    assert all(b0 <= t1 + 0.5 for (_t0, b0), (t1, _b1) in zip(spans, spans[1:], strict=False))
    assert CULPRIT in tl.axis.alert_ranks
    assert "5 of 512" in view.filter_msg.text() or "of 512 ranks" in view.filter_msg.text()


def test_heatmap_labels_do_not_overlap_and_name_the_culprit(view):
    canvas = view.heatmap.canvas
    canvas.grab()  # paint
    labels = sorted(canvas.drawn_labels)
    assert labels and any(text == f"rank {CULPRIT}" for _t, _b, text in labels)
    for (_t0, b0, a), (t1, _b1, b) in zip(labels, labels[1:], strict=False):
        assert b0 <= t1 + 0.5, (a, b)
    # the culprit is pinned on top, tall enough to see (not a 0.4 px row among 512)
    assert canvas.pinned() == [canvas.matrix.row_of(CULPRIT)]
    assert canvas.pin_rect().height() >= 12


def test_heatmap_matrix_and_symptoms_lighter_than_roots(view):
    from kat_gui.ui.scale import RankStepMatrix, heat_rgba

    m = view.heatmap.matrix
    assert m.by_steps and m.root.shape == (512, 24)
    row = m.row_of(CULPRIT)
    assert m.root[row, 10] > 0 and m.root[row, 2] == 0  # slow from step 8 on
    assert (m.root[np.arange(512) != row] == 0).all()  # only the culprit has roots
    # symptoms (waited) clearly lighter than any root cell, whatever the detector marks as symptoms here
    sym = m.symptom.copy()
    sym[: row - 1, 8:] += 3
    img = heat_rgba(RankStepMatrix(m.ranks, m.hosts, m.edges_ns, m.step_numbers, True, m.root, sym)).astype(
        float
    )
    lum = img[..., :3] @ np.array([0.299, 0.587, 0.114])
    waited = (sym > 0) & (m.root == 0)
    assert waited.any() and lum[waited].min() > lum[m.root > 0].max() + 60
    assert lum[(sym == 0) & (m.root == 0)].min() == 255  # nothing = white
    # rows grouped by host, the culprit's host is host63
    assert [h for h, a, b in m.hosts if a <= row < b] == ["host63"]


def test_heatmap_click_navigates_timeline(view, qtbot):
    canvas = view.heatmap.canvas
    m = canvas.matrix
    peer = 130
    col = 12
    with qtbot.waitSignal(canvas.cellActivated, timeout=2000) as sig:
        r = canvas.plot_rect()
        pos = QtCore.QPointF(
            r.left() + (col + 0.5) * r.width() / m.root.shape[1], canvas.row_y(m.row_of(peer) + 0.5)
        )
        row_col = canvas.cell_at(pos)
        assert row_col is not None
        canvas.activate(*row_col)
    rank, s, e = sig.args
    assert rank == m.ranks[row_col[0]]
    assert (s, e) == tuple(m.spans_ns[col]) and e > s  # the stored step's span (detect/steps)
    tl = view.timeline
    lanes = {lane.rank for lane in tl.lanes}
    assert rank in lanes and CULPRIT in lanes and len(lanes) >= 4  # with the focus set's reference peers
    t0, t1 = tl.x_range_ns()
    assert t0 <= s and e <= t1 and (t1 - t0) < 1.5 * (e - s)  # zoomed to that step
    # a click on the pinned culprit row gives the culprit
    pr = canvas.pin_rect()
    assert canvas.cell_at(QtCore.QPointF(pr.left() + 5, pr.top() + 5))[0] == m.row_of(CULPRIT)


def test_a_cells_lanes_hold_reference_peers_even_with_nothing_implicated(view):
    from kat_gui.ui.scale import cell_ranks, focus_ranks

    m = view.model
    assert cell_ranks(m, 130) == [130, *focus_ranks(m)]
    assert cell_ranks(m, CULPRIT) == focus_ranks(m)
    m.findings = []  # a healthy run: the clicked rank, one of its host mates, and peers spread over the run
    peers = cell_ranks(m, 130)
    assert peers[0] == 130 and len(set(peers)) == 5 and peers[1] in range(128, 136)
    assert max(peers) - min(peers) > 256


def test_heatmap_colours_slowdown_vs_peers_and_wait_share(view, qtbot):
    hv = view.heatmap
    m = hv.matrix
    row = m.row_of(CULPRIT)
    others = np.arange(512) != row
    slow = m.step_numbers >= 8
    assert m.slowdown.shape == m.wait_share.shape == (512, 24)
    assert np.all(m.slowdown[row, slow] > 0.1)  # busier than its peers once throttled (step 8 on)
    assert np.all(np.abs(m.slowdown[row, ~slow]) < 0.05) and np.nanmax(np.abs(m.slowdown[others])) < 0.05
    assert np.nanmedian(m.wait_share[others][:, slow]) > 5 * np.nanmedian(m.wait_share[others][:, ~slow])
    assert (
        hv.canvas.mode == "slowdown" and hv.mode_box.currentData() == "slowdown" and hv.mode_box.isEnabled()
    )
    img = hv.canvas._rgba.astype(int)
    red = img[..., 0] - img[..., 2]  # red minus blue
    assert red[row, slow].min() > 100 and np.abs(red[others]).max() < 60
    assert hv.legend.ends[1].startswith("+") and "slowdown" in hv.legend.toolTip().lower()
    hv.canvas.grab()
    # the header's combo switches to the wait share: the culprit's peers turn purple, the culprit stays white
    hv.mode_box.setCurrentIndex(hv.mode_box.findData("wait"))
    assert hv.canvas.mode == "wait" and hv.legend.ends[0] == "0%" and "wait" in hv.legend.toolTip().lower()
    img = hv.canvas._rgba.astype(int)
    lum = img[..., :3] @ np.array([0.299, 0.587, 0.114])
    assert np.median(lum[others][:, slow]) < np.median(lum[others][:, ~slow]) - 40
    assert lum[row, slow].min() > np.median(lum[others][:, slow]) + 40
    hv.canvas.grab()
    text = hv.canvas.cell_text(row, 12)
    assert "rank 509" in text and "host63" in text and "step 12" in text
    assert f"slowdown vs peers: {m.slowdown[row, 12] * 100:+.1f} %" in text
    assert f"wait share: {m.wait_share[row, 12] * 100:.1f} %" in text
    hv.set_mode("slowdown")
    assert hv.mode_box.currentData() == "slowdown"
    with pytest.raises(ValueError):
        hv.canvas.set_mode("anomalies")


def test_heatmap_of_a_store_analysed_before_falls_back_to_anomalies(qtbot, big_store, tmp_path):
    import shutil

    from kat_gui.store import TraceStore
    from kat_gui.ui.heatmap_view import HeatmapView
    from kat_gui.ui.run_model import RunModel

    old = tmp_path / "old.kat.h5"
    shutil.copy(big_store, old)
    with TraceStore.open(old, "r+") as st:
        assert st.delete("detect/rank_step") and st.delete("detect/steps")
    model = RunModel(old).preload()
    try:
        hv = HeatmapView(model)
        qtbot.addWidget(hv)
        m = hv.matrix
        assert m.slowdown is None and m.modes() == ["anomalies"] and m.by_steps
        assert hv.canvas.mode == "anomalies" and not hv.mode_box.isEnabled()
        assert "run kat detect again" in hv.legend.text and "before" in hv.legend.toolTip()
        row = m.row_of(CULPRIT)
        assert m.root[row, 10] > 0 and hv.canvas._rgba[row, 10, 1] < 200  # the root cells are red
        assert "slowdown" not in hv.canvas.cell_text(row, 10)
        hv.resize(1000, 300)
        hv.grab()
    finally:
        model.close()


class _StubModel:
    """What a canvas reads of its model: the findings (implicated rank 1000), the run's start, and what the
    loader would have computed for it (nothing)."""

    findings = [{"ranks": [1000]}]
    t0_ns = 0
    derived: dict = {}


def _matrix_1024x1000(root, symptom, slowdown=None, wait=None):
    """A 1,024-rank (128 hosts x 8) x 1,000-step overview matrix; steps 1 µs apart, each 0.9 µs long."""
    from kat_gui.ui.scale import RankStepMatrix

    rows, cols = root.shape
    return RankStepMatrix(
        np.arange(rows),
        [(f"host{h}", 8 * h, 8 * h + 8) for h in range(rows // 8)],
        np.arange(cols + 1, dtype=np.int64) * 1000,
        np.arange(cols),
        True,
        root,
        symptom,
        slowdown,
        wait,
        np.stack([np.arange(cols) * 1000, np.arange(cols) * 1000 + 900], 1) if slowdown is not None else None,
    )


def test_heatmap_1024_by_1000_signals_map_to_an_image(qtbot):
    from kat_gui.ui.heatmap_view import HeatmapCanvas
    from kat_gui.ui.scale import NO_DATA_RGB, heat_rgba, heat_scale

    rng = np.random.default_rng(1)
    rows, cols = 1024, 1000
    slowdown = rng.normal(0, 0.01, (rows, cols)).astype(np.float32)
    slowdown[1000, 300:] = 0.5  # one slow rank
    slowdown[7, :] = -0.5  # one rank idle half the time
    slowdown[rng.random((rows, cols)) < 0.01] = np.nan
    wait = np.clip(rng.normal(0.05, 0.01, (rows, cols)), 0, 1).astype(np.float32)
    wait[:, 300:] += 0.3
    wait[1000, 300:] = 0.0
    m = _matrix_1024x1000(
        np.zeros((rows, cols), np.float32), np.zeros((rows, cols), np.int32), slowdown, wait
    )
    img = heat_rgba(m)  # default mode: slowdown
    assert img.shape == (rows, cols, 4) and img.dtype == np.uint8 and (img[..., 3] == 255).all()
    sc = heat_scale(m, "slowdown")
    assert sc.hi == 0.5 and sc.lo == -0.5  # the few slow cells saturate, the noise does not set the scale
    nan = np.isnan(slowdown)
    assert (img[1000, 300:][~nan[1000, 300:], :3] == sc.lut[255]).all()
    assert (img[7, ~nan[7], :3] == sc.lut[0]).all()
    assert (img[nan, :3] == NO_DATA_RGB).all()
    quiet = ~nan & (np.abs(slowdown) < 0.005)
    assert (img[quiet, :3].astype(int).min(axis=1) > 240).all()  # ~0 is white
    w = heat_rgba(m, "wait").astype(int)
    lum = w[..., :3] @ np.array([0.299, 0.587, 0.114])
    assert lum[:1000, 300:].mean() < lum[:1000, :300].mean() - 60 and lum[1000, 300:].min() == 255
    assert m.window(5) == (5000, 5900)

    c = HeatmapCanvas(_StubModel(), m)  # type: ignore[arg-type]
    qtbot.addWidget(c)
    c.resize(1200, 600)
    c.grab()
    assert c.mode == "slowdown" and c._image.width() == cols and c._image.height() == rows
    x = 300 + int(np.flatnonzero(~nan[1000, 300:])[0])
    assert QtGui.QColor(c._image.pixel(x, 1000)).getRgb()[:3] == tuple(int(v) for v in sc.lut[255])
    c.set_mode("wait")
    assert QtGui.QColor(c._image.pixel(x, 1000)).getRgb()[:3] == (255, 255, 255)
    print(f"paint_ms at 1,024 x 1,000 (slowdown, wait): {c.paint_ms:.1f}")


def test_topology_shows_hosts_and_expands_the_implicated_one(view):
    topo = view.topology
    assert topo.compact
    hosts = [n for n in topo.node_items if n.startswith("host") and "\0" not in n]
    assert len(hosts) == 64
    assert topo.implicated_hosts == ["host63"]
    gpu = topo.node_items[f"GPU{CULPRIT}"]
    assert gpu.brush().color().name().lower() == "#d62728"
    # readable: the view is scaled to the width only (text at >= 75 % of its size), hosts scroll
    assert topo.view.transform().m11() >= 0.75
    topo.click_node("host3")
    assert sorted(lane.rank for lane in view.timeline.lanes) == list(range(24, 32))
    topo.clear()
    assert CULPRIT in {lane.rank for lane in view.timeline.lanes} and len(view.timeline.lanes) <= 8


def test_topology_title_escapes_trace_strings(view):
    from kat_gui.ui.topology_view import TopologyView

    g = view.model.graph
    g.graph.update(inferred=False, source="<img src=x onerror=1>topo.json")
    t = TopologyView(view.model)._title_html()
    assert "&lt;img src=x onerror=1&gt;topo.json" in t and "<img" not in t


def test_rank_filter_syntax(view):
    from kat_gui.ui.scale import focus_ranks, parse_rank_filter, waiting_ranks

    m = view.model
    assert parse_rank_filter("", m) is None and parse_rank_filter("all", m) is None
    assert parse_rank_filter("1, 5-7 host2", m) == {1, 5, 6, 7} | set(range(16, 24))
    assert parse_rank_filter("implicated", m) == {CULPRIT}
    waiting = waiting_ranks(m)  # ranks with symptom kernels (what the detector marks: not asserted here)
    if waiting:
        assert parse_rank_filter("waiting", m) == set(waiting)
    else:
        with pytest.raises(ValueError):
            parse_rank_filter("waiting", m)
    f = focus_ranks(m)
    assert f[0] == CULPRIT and any(504 <= r <= 511 and r != CULPRIT for r in f[1:])
    with pytest.raises(ValueError):
        parse_rank_filter("bogus", m)
    view.filter_edit.setText("h1")
    view.apply_filter_text()
    assert sorted(lane.rank for lane in view.timeline.lanes) == list(range(8, 16))
    view.filter_edit.setText("nonsense!")
    view.apply_filter_text()
    assert "nonsense" in view.filter_msg.text()


def test_heatmap_draws_1024_by_1000_fast(qtbot):
    from kat_gui.ui.heatmap_view import HeatmapCanvas

    rng = np.random.default_rng(0)
    rows, cols = 1024, 1000
    root = np.where(rng.random((rows, cols)) < 0.01, rng.random((rows, cols)) * 40, 0).astype(np.float32)
    m = _matrix_1024x1000(root, (rng.random((rows, cols)) < 0.3).astype(np.int32))

    t = time.perf_counter()
    c = HeatmapCanvas(_StubModel(), m)  # type: ignore[arg-type]
    build_ms = (time.perf_counter() - t) * 1000
    qtbot.addWidget(c)
    c.resize(1200, 600)
    c.grab()
    c.grab()
    assert c.paint_ms < 100 and build_ms < 400, (c.paint_ms, build_ms)
    assert c.pinned() == [1000]


def test_all_lanes_keep_a_minimum_height_scroll_and_pin_the_culprit(view):
    from kat_gui.ui.timeline import MIN_LANE_PX

    tl = view.timeline
    view.filter_edit.setText("all")
    view.apply_filter_text()
    tl.set_all_hosts_collapsed(False)  # every rank its own lane (64 host headers between them)
    QtWidgets.QApplication.processEvents()
    n = len(tl.lanes)
    assert n == 512 + 64 and tl.lanes[0].rank == CULPRIT  # the implicated lane pinned on top
    assert tl.vscroll.isVisibleTo(tl) and tl.vscroll.maximum() == n - tl.lanes_that_fit()
    rows = [r for r in _lane_rows_px(tl) if r[1] > 0 and r[0] < tl.plot.height()]
    assert all(b - t >= MIN_LANE_PX - 0.5 for t, b, _r in rows[:-1])
    tl.plot.grab()  # paint the labels
    drawn = sorted(tl.axis.drawn)
    assert drawn and drawn[0][2] == 0  # the culprit's label is drawn
    assert all(b0 <= t1 + 0.5 for (_t0, b0, _a), (t1, _b1, _b) in zip(drawn, drawn[1:], strict=False))
    # scrolling moves the lanes shown; a selection on a lane below scrolls it into view
    tl.vscroll.setValue(100)
    (_x, (y0, _y1)) = tl.vb.viewRange()
    assert abs(y0 - 100) < 1e-6
    tl.ensure_lane_visible(5)
    (_x, (y0, y1)) = tl.vb.viewRange()
    assert y0 <= 5 and 6 <= y1


def test_lane_labels_every_nth_when_lanes_are_thin(view):
    tl = view.timeline
    view.filter_edit.setText("all")
    view.apply_filter_text()
    tl.vb.setYRange(0, 300, padding=0)  # squeeze 300 lanes into the plot: labels must thin out
    tl.axis.picture = None
    tl.plot.grab()
    drawn = sorted(tl.axis.drawn)
    assert 3 < len(drawn) < 100 and any(i == 0 for _t, _b, i in drawn)
    assert all(b0 <= t1 + 0.5 for (_t0, b0, _a), (t1, _b1, _b) in zip(drawn, drawn[1:], strict=False))


def test_a_finding_naming_hundreds_of_ranks_keeps_the_lanes_readable(qtbot, big_store, tmp_path):
    """A fabric-wide finding (a NIC problem can name every rank): the focus set, the highlight and the pinned
    lanes stay a readable few; the overview still knows every implicated rank."""
    from kat_gui.store import TraceStore
    from kat_gui.ui.main_window import MainWindow
    from kat_gui.ui.run_model import HIGHLIGHT_MAX
    from kat_gui.ui.scale import FOCUS_MAX_IMPLICATED, implicated_ranks

    store = tmp_path / "wide.kat.h5"
    shutil.copyfile(big_store, store)
    st = TraceStore.open(store, "r+")
    doc = st.get_json("detect/findings")
    wide = dict(doc["findings"][0], component="nic", component_id="fabric", ranks=list(range(0, 512, 2)))
    doc["findings"] = [wide, *doc["findings"]]
    with st.writing():
        st.put_json("detect/findings", doc)
    st.close()

    win = MainWindow(interactive=False, use_llm=False)
    qtbot.addWidget(win)
    win.resize(1600, 980)
    win.show()
    win.open_paths([store])
    qtbot.waitUntil(lambda: win.tabs.count() >= 1 and not win.busy(), timeout=60_000)
    v = win.current_view()
    tl = v.timeline
    assert len(implicated_ranks(v.model)) == 256 + (CULPRIT % 2)  # the overview's set: every named rank
    assert v.model.culprit_ranks() == list(range(0, 2 * HIGHLIGHT_MAX, 2))
    assert len(tl.lanes) <= FOCUS_MAX_IMPLICATED + 4
    tl.set_rank_filter(None)  # all ranks: pinned lanes on top, then the hosts
    first_host = next(i for i, lane in enumerate(tl.lanes) if lane.kind != "rank")
    assert first_host <= FOCUS_MAX_IMPLICATED + 4 + HIGHLIGHT_MAX
