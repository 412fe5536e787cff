"""Lanes of a large run grouped by host (offscreen Qt), on test_ui_scale's 512-rank run (64 hosts x 8 GPUs, rank
509 throttled): the all-ranks view pins the implicated rank with reference peers, opens the culprit's host and
collapses the others into one summary lane each; collapse/expand, the filter and the two together; symptoms
lighter than roots, one band per host block when zoomed out, roots drawn last."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("pytestqt")
import test_ui_scale  # noqa: E402
from PySide6 import QtCore, QtGui, QtWidgets  # noqa: E402

from kat_gui.ui.host_lanes import HEADER, SUMMARY, HostLane  # noqa: E402
from kat_gui.ui.run_model import ROLE_ROOT, ROLE_SYMPTOM  # noqa: E402

pytestmark = [pytest.mark.gui, pytest.mark.usefixtures("private_kat_dirs")]
CULPRIT = test_ui_scale.CULPRIT
big_store, view = test_ui_scale.big_store, test_ui_scale.view  # the same run and window fixtures


def all_ranks(view) -> None:
    view.filter_edit.setText("")
    view.apply_filter_text()
    QtWidgets.QApplication.processEvents()


def by_host(tl, host: str) -> HostLane:
    return next(ln for ln in tl.host_lanes() if ln.host == host)


def shown_ranks(tl) -> list[int]:
    """Every rank the lanes show: rank lanes and the ranks summarised by collapsed hosts."""
    out = [ln.rank for ln in tl.lanes if ln.kind == "rank"]
    return out + [r for ln in tl.host_lanes() if ln.collapsed for r in ln.ranks]


def inject_symptoms(model) -> int:
    """Mark every other rank's all-reduce kernels from the finding's start on as symptoms (they waited for the
    culprit): what a detector reports in such a run, ~16,000 rows, a flood if drawn per kernel."""
    a = model.anomalies
    start = int(model.findings[0]["start_ns"])
    rows = {k: [] for k in a}
    for rank, info in model.ranks.items():
        if rank == CULPRIT:
            continue
        for t in info.gpu_tracks:
            ev = model.store.track_events(t, ["start_ns", "end_ns", "name"])
            names = np.array(["AllReduce" in model.string(int(n)) for n in range(int(ev["name"].max()) + 1)])
            idx = np.flatnonzero(names[ev["name"]] & (ev["start_ns"] >= start))
            n = len(idx)
            for k, v in (("track", t), ("rank", rank), ("device", 0), ("stream", 0), ("role", ROLE_SYMPTOM)):
                rows[k].append(np.full(n, v))
            rows["index"].append(idx)
            rows["name"].append(ev["name"][idx])
            rows["start_ns"].append(ev["start_ns"][idx])
            rows["end_ns"].append(ev["end_ns"][idx])
            for k in ("component", "score", "finding"):
                rows[k].append(np.zeros(n))
    added = 0
    for k in a:
        new = np.concatenate(rows[k]).astype(a[k].dtype)
        added = len(new)
        a[k] = np.concatenate([a[k], new])
    model.derived.clear()  # the results changed: what the model computed from them goes (as on a reload)
    return added


class Recorder(QtGui.QPainter):
    """A painter that notes every batch of rectangles drawn: (pen colour, pen width, brush colour, brush style,
    how many)."""

    def __init__(self, dev):
        super().__init__(dev)
        self.calls: list[tuple[QtGui.QColor, float, QtGui.QColor, QtCore.Qt.BrushStyle, int]] = []

    def drawRects(self, *args):  # noqa: N802 (Qt's name)
        pen, brush = self.pen(), self.brush()
        pen_alpha = pen.color() if pen.style() != QtCore.Qt.PenStyle.NoPen else QtGui.QColor(0, 0, 0, 0)
        n = args[-1] if isinstance(args[-1], int) else len(args[0])
        self.calls.append((pen_alpha, pen.widthF(), brush.color(), brush.style(), n))
        return super().drawRects(*args)


def record(tl) -> list:
    img = QtGui.QImage(tl.plot.width(), tl.plot.height(), QtGui.QImage.Format.Format_ARGB32_Premultiplied)
    rec = Recorder(img)
    tl.anomaly_item.paint(rec, None, None)
    rec.end()
    return rec.calls


def test_all_ranks_view_pins_focus_and_groups_by_host(view):
    from kat_gui.ui.scale import focus_ranks
    from kat_gui.ui.timeline import MIN_LANE_PX

    tl = view.timeline
    all_ranks(view)
    focus = focus_ranks(view.model)
    assert focus[0] == CULPRIT and len(focus) >= 3
    # the implicated rank and its reference peers pinned together at the top, each naming its host
    top = tl.lanes[: len(focus)]
    assert [ln.rank for ln in top] == focus and all(ln.kind == "rank" for ln in top)
    assert top[0].label.startswith(f"rank {CULPRIT} · host63")
    # then the culprit's host, open (its header, then its other ranks), then every other host as one lane
    head = tl.lanes[len(focus)]
    assert isinstance(head, HostLane) and head.host == "host63" and head.kind == HEADER and head.implicated
    assert len(head.tracks) == 0 and "host63" in head.label
    hosts = tl.host_lanes()
    assert len(hosts) == 64 and [h.host for h in hosts].count("host63") == 1
    assert all(h.collapsed and h.kind == SUMMARY and not h.implicated for h in hosts if h.host != "host63")
    # each rank shown exactly once (pinned, under its host's header, or in its host's summary)
    ranks = shown_ranks(tl)
    assert sorted(ranks) == list(range(512))
    assert len(tl.lanes) == len(focus) + 1 + (8 - sum(r >= 504 for r in focus)) + 63 < 100
    # a summary lane is its ranks' GPU tracks; host0 lent rank 0 to the pinned lanes
    h0 = by_host(tl, "host0")
    assert h0.ranks == tuple(range(1, 8)) and "7 of 8 ranks" in h0.label
    want = sorted(t for r in range(1, 8) for t in view.model.ranks[r].gpu_tracks)
    assert sorted(h0.tracks.tolist()) == want
    # the culprit on screen without scrolling, lanes tall enough for their labels, labels apart
    vb = tl.vb
    row = [i for i, ln in enumerate(tl.lanes) if ln.rank == CULPRIT][0]
    y0 = tl.plot.mapFromScene(vb.mapViewToScene(QtCore.QPointF(0, row))).y()
    y1 = tl.plot.mapFromScene(vb.mapViewToScene(QtCore.QPointF(0, row + 1))).y()
    assert 0 <= y0 and y1 <= tl.plot.height() and y1 - y0 >= MIN_LANE_PX - 0.5
    tl.plot.grab()
    drawn = sorted(tl.axis.drawn)
    assert {i for _t, _b, i in drawn} >= {0, len(focus)}  # the culprit's and its host's labels
    assert all(b0 <= t1 + 0.5 for (_t0, b0, _a), (t1, _b1, _b) in zip(drawn, drawn[1:], strict=False))


def test_collapse_and_expand_a_host(view, qtbot):
    tl = view.timeline
    all_ranks(view)
    before = [ln.label for ln in tl.lanes]
    i = next(i for i, ln in enumerate(tl.lanes) if isinstance(ln, HostLane) and ln.host == "host63")
    tl.toggle_host("host63")
    h = tl.lanes[i]
    assert isinstance(h, HostLane) and h.collapsed and h.kind == SUMMARY
    assert h.ranks == (505, 506, 507, 508, 510)  # (504, 509, 511 are pinned above)
    assert not any(ln.rank in h.ranks for ln in tl.lanes if ln.kind == "rank")  # replaced by one lane
    assert len(tl.lanes) == len(before) - len(h.ranks)
    assert sorted(shown_ranks(tl)) == list(range(512))
    tl.toggle_host("host63")
    assert [ln.label for ln in tl.lanes] == before  # expand restores them
    # a click on a collapsed host's name opens it: its header, then its eight ranks
    tl.vscroll.setValue(tl.vscroll.maximum())
    QtWidgets.QApplication.processEvents()
    j = next(j for j, ln in enumerate(tl.lanes) if isinstance(ln, HostLane) and ln.host == "host60")
    mid = tl.vb.mapViewToScene(QtCore.QPointF(0, j + 0.5)).y()
    pt = tl.plot.mapFromScene(QtCore.QPointF(tl.axis.sceneBoundingRect().center().x(), mid))
    qtbot.mouseClick(tl.plot.viewport(), QtCore.Qt.MouseButton.LeftButton, pos=pt)
    h60 = by_host(tl, "host60")
    assert not h60.collapsed and h60.kind == HEADER
    k = tl.lanes.index(h60)
    assert [ln.rank for ln in tl.lanes[k + 1 : k + 9]] == list(range(480, 488))
    (_x, (y0, y1)) = tl.vb.viewRange()
    assert y0 <= k < y1  # the clicked header stays in view
    # the context menu and the H key act on a host too
    menu = tl.host_menu(k)
    act = next(a for a in menu.actions() if a.text() == "Collapse host60")
    act.trigger()
    assert by_host(tl, "host60").collapsed
    next(a for a in tl.host_menu(0).actions() if a.text() == "Expand all hosts").trigger()
    assert not any(h.collapsed for h in tl.host_lanes()) and len(tl.lanes) == 512 + 64
    tl.set_selected(view.model.ranks[130].gpu_tracks[0], 0)
    assert tl.handle_key(QtCore.Qt.Key.Key_H) and by_host(tl, "host16").collapsed
    next(a for a in tl.host_menu(0).actions() if a.text() == "Collapse all hosts").trigger()
    assert all(h.collapsed for h in tl.host_lanes())


def test_summary_lane_draws_its_ranks_activity(view):
    tl = view.timeline
    all_ranks(view)
    tl.settle()
    i = tl.lanes.index(by_host(tl, "host5"))
    ld = tl.lanes_item.data[i]
    tracks = set(np.unique(ld.track).tolist())
    assert len(ld) and tracks <= {t for r in range(40, 48) for t in view.model.ranks[r].gpu_tracks}
    assert len(tracks) == 8  # every rank of the host contributes, in one lane


def test_filter_and_collapse_compose(view):
    tl = view.timeline
    view.filter_edit.setText("host1 host2 host5")
    view.apply_filter_text()
    # under a filter hosts start open
    assert [h.host for h in tl.host_lanes()] == ["host1", "host2", "host5"]
    assert not any(h.collapsed for h in tl.host_lanes())
    tl.toggle_host("host2")
    assert sorted(shown_ranks(tl)) == list(range(8, 24)) + list(range(40, 48))
    assert [ln.rank for ln in tl.lanes if ln.kind == "rank"] == list(range(8, 16)) + list(range(40, 48))
    # the choice survives a new filter, and the all-ranks view
    view.filter_edit.setText("host2 host5")
    view.apply_filter_text()
    assert by_host(tl, "host2").collapsed and not by_host(tl, "host5").collapsed
    all_ranks(view)
    assert by_host(tl, "host2").collapsed and by_host(tl, "host5").collapsed  # default there: closed
    assert not by_host(tl, "host63").collapsed
    # a one-host filter needs no header: plain rank lanes
    view.filter_edit.setText("host3")
    view.apply_filter_text()
    assert [ln.rank for ln in tl.lanes] == list(range(24, 32)) and not tl.host_lanes()


def test_symptoms_lighter_than_roots_and_per_host_when_zoomed_out(view):
    tl = view.timeline
    n_sym = inject_symptoms(view.model)
    assert n_sym > 10_000
    all_ranks(view)
    tl.fit_all()
    tl.plot.grab()
    calls = record(tl)
    item = tl.anomaly_item
    assert item.aggregated
    sym = [c for c in calls if c[2].red() == 255 and c[2].green() == 176]
    root = [c for c in calls if c[0].name() == "#d62728"]
    assert sym and root and calls[-1] is root[-1]  # roots drawn last, on top
    # one band per host block: no outline, a light fill, at most one run per collective instance (48 in the
    # run) and block, not one mark per waiting kernel
    assert all(c[0].alpha() == 0 and c[2].alpha() <= 60 for c in sym)
    x, y, w, h, role, _px = item.visible_rects()
    bands = role == ROLE_SYMPTOM
    blocks = set(np.round(y[bands], 3).tolist())
    assert len(blocks) <= 1 + 1 + 63 + 5  # pinned lanes, host63's block, 63 summary lanes
    assert sum(c[4] for c in sym) == item.drawn["symptom"] <= 48 * len(blocks) < n_sym / 5
    assert h[bands].max() > 1  # host63's band spans its header and ranks
    # roots stay per lane, outlined opaque 2 px over a stronger tint than any symptom
    rc = root[-1]
    assert rc[0].alpha() == 255 and rc[1] >= 2 and rc[2].alpha() > max(c[2].alpha() for c in sym)
    assert np.all(h[role == ROLE_ROOT] == 1)
    # a few tall lanes: a band per lane (a band across the block would cover the culprit's lane too)
    tl.vb.setYRange(0, 3, padding=0)
    _x, _y, _w, h, role, _px = item.visible_rects()
    assert item.aggregated and np.all(h[role == ROLE_SYMPTOM] == 1)
    tl._fit_lanes(0)
    # zoomed in (one step): symptoms per kernel again, thin translucent outline, lighter than roots
    s = int(view.model.findings[0]["start_ns"]) + 400_000
    tl.zoom_ns(s, s + 60_000, margin=0.0)
    tl.plot.grab()
    calls = record(tl)
    assert not item.aggregated
    sym = [c for c in calls if c[0].red() == 255 and c[0].green() == 176]
    assert sym and all(c[0].alpha() < 255 and c[1] <= 1 for c in sym)
    assert calls[-1][0].name() == "#d62728" and calls[-1][0].alpha() == 255 and calls[-1][1] >= 2
    _x, _y, _w, h, role, _px = item.visible_rects()
    assert np.all(h == 1) and np.count_nonzero(role == ROLE_SYMPTOM) > 1
    # lanes squeezed thinner than a few pixels: per host block again, even zoomed in
    tl.vb.setYRange(0, 300, padding=0)
    item.visible_rects()
    assert item.aggregated
    # an anomaly on a collapsed host: the host opens so that its rank's own lane shows it
    a = view.model.anomalies
    row = int(np.flatnonzero((a["rank"] == 100) & (a["role"] == ROLE_SYMPTOM))[0])
    assert by_host(tl, "host12").collapsed
    tl.goto_anomaly(row)
    assert not by_host(tl, "host12").collapsed
    lane = int(item.lane_of_track[int(a["track"][row])])
    assert tl.lanes[lane].rank == 100 and tl.lanes[lane].kind == "rank"
