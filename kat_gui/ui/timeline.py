"""Synchronized per-rank timelines: the widget that puts the timeline's items together and drives them.

Top to bottom: the whole-run overview strip (``timeline_overview``) with a region showing the lanes' x range;
the lanes plot, one row per rank (or per stream when a rank is expanded) named by ``lane_axis``, holding
the lanes' rectangles (``timeline_lanes``), the anomalies on them (``timeline_anomalies``), the selected event
(``timeline_selection``) and the notes (``timeline_notes``), in that z order; the legend
(``timeline_legend``). Every item shares one x axis: seconds since the run start (``RunModel.t0_ns``),
float64, given ``units="s"`` so pyqtgraph prints ms/µs; the public API takes and returns absolute ns
(``zoom_ns``, ``x_range_ns``) or these seconds (``x_range``, ``set_x_range``). See ``timeline_paint``.

The view owns the lane list (ranks, expanded ranks, a rank filter; in a large run the pinned ranks and the
lanes grouped by host with collapse/expand, ``host_lanes``), the x range (zoom, pan, fit, the
overview region), anomaly stepping (N/P), selection, hover tooltips and the keyboard. Emits
``eventSelected(track, index)`` on click and ``rangeChanged(x0_s, x1_s)`` when the x range moves.
"""

from __future__ import annotations

import numpy as np
import pyqtgraph as pg
from PySide6 import QtCore, QtGui, QtWidgets

from kat_gui.ui.async_reads import Deliver
from kat_gui.ui.host_lanes import HEADER, HostLane, group_by_host, lane_hosts, pinned_order
from kat_gui.ui.lane_axis import LaneAxis
from kat_gui.ui.run_model import ROLE_ROOT, Lane, RunModel, esc, fmt_ns
from kat_gui.ui.scale import LARGE_RUN_RANKS, focus_ranks, hosts_of, implicated_ranks
from kat_gui.ui.timeline_anomalies import AnomalyItem
from kat_gui.ui.timeline_lanes import LanesItem
from kat_gui.ui.timeline_legend import legend_widget
from kat_gui.ui.timeline_notes import NotesItem
from kat_gui.ui.timeline_overview import OverviewItem
from kat_gui.ui.timeline_paint import ROOT_COLOR, span_s
from kat_gui.ui.timeline_selection import SelectionItem

MIN_LANE_PX = 18  # lanes never get thinner than this (a label's height): more lanes scroll vertically


def warm_up() -> None:
    """Build and drop one plot widget: pyqtgraph's first one costs ~20 ms more than the next (lazy imports,
    first-use caches). Called once when the window starts, so that opening the first run does not pay it."""
    w = pg.PlotWidget(background="w")
    w.deleteLater()


class TimelineView(QtWidgets.QWidget):
    """Overview strip + lanes + legend. Emits ``eventSelected(track, index)`` on click."""

    eventSelected = QtCore.Signal(int, int)
    rangeChanged = QtCore.Signal(float, float)

    def __init__(self, model: RunModel, parent: QtWidgets.QWidget | None = None):
        super().__init__(parent)
        self.model = model
        self.expanded: set[int] = set()
        self.rank_filter: set[int] | None = None
        self.lanes: list[Lane] = []
        # Large runs: lanes pinned (implicated + reference peers) and grouped by host. ``host_choice``: the
        # user's collapse (True) / expand (False) per host; a host not in it is collapsed in the all-ranks
        # view unless it holds an implicated rank, expanded under a filter (filter and collapse compose).
        self.large = len(model.ranks) > LARGE_RUN_RANKS
        self.host_choice: dict[str, bool] = {}
        self._hosts = hosts_of(model)
        self._host_of = {r: h for h, rs in self._hosts.items() for r in rs}
        self._implicated = set(implicated_ranks(model)) | set(model.culprit_ranks())
        self._focus = focus_ranks(model) if self.large else []
        self.selected: tuple[int, int] | None = None
        self._selected_span: tuple[int, int] | None = None  # (start_ns, end_ns) of the selected event
        self._deliver = Deliver(self)
        self._anomaly_pos = -1
        self._order = self._anomaly_order()

        lay = QtWidgets.QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.setSpacing(0)

        # The strip is a bare view box in a graphics view: no axes, menus or buttons (a PlotWidget costs ~8 ms
        # more to build, on the GUI thread, while a run opens).
        self.overview = pg.GraphicsView(background="w")
        self.overview.setFixedHeight(56)
        ov = self.overview_box = pg.ViewBox(enableMouse=False, enableMenu=False)
        self.overview.setCentralItem(ov)
        ov.setYRange(0, 1, padding=0)
        self.overview_item = OverviewItem(model)
        ov.addItem(self.overview_item)
        self.region = pg.LinearRegionItem(
            brush=pg.mkBrush(76, 120, 168, 50), pen=pg.mkPen("#4C78A8", width=1.5)
        )
        self.region.setZValue(10)
        ov.addItem(self.region)
        title = pg.TextItem(
            "overview: whole run · red = root anomaly, amber = symptom", color="#555555", anchor=(0, 0)
        )
        title.setPos(0, 1)
        ov.addItem(title)
        lay.addWidget(self.overview)

        self.axis = LaneAxis()
        self.plot = pg.PlotWidget(background="w", axisItems={"left": self.axis}, enableMenu=False)
        self.plot.setFocusPolicy(QtCore.Qt.FocusPolicy.StrongFocus)
        pi = self.plot.getPlotItem()
        pi.setMenuEnabled(False)
        pi.hideButtons()
        pi.setLabel("bottom", "time since run start", units="s")
        # No grid: pyqtgraph draws grid lines into the axis picture, ~25 ms a frame across a full-HD plot.
        self.vb = pi.getViewBox()
        self.vb.setMouseEnabled(x=True, y=False)
        self.vb.invertY(True)
        self.vb.setLimits(xMin=-0.05 * self._span_s(), xMax=1.05 * self._span_s(), minXRange=1e-8)
        self.lanes_item = LanesItem(model)
        self.anomaly_item = AnomalyItem(model)
        self.anomaly_item.setZValue(5)
        self.selection_item = SelectionItem()
        self.selection_item.setZValue(6)
        self.notes_item = NotesItem(model)
        self.notes_item.setZValue(7)
        for it in (self.lanes_item, self.anomaly_item, self.selection_item, self.notes_item):
            pi.addItem(it)
        # More lanes than fit at MIN_LANE_PX: the view shows what fits and this scroll bar moves over the rest.
        self.vscroll = QtWidgets.QScrollBar(QtCore.Qt.Orientation.Vertical)
        self.vscroll.valueChanged.connect(self._on_vscroll)
        self.vscroll.hide()
        row = QtWidgets.QHBoxLayout()
        row.setContentsMargins(0, 0, 0, 0)
        row.setSpacing(0)
        row.addWidget(self.plot, 1)
        row.addWidget(self.vscroll)
        lay.addLayout(row, 1)
        lay.addWidget(legend_widget())

        self.vb.sigXRangeChanged.connect(self._on_range)
        self.region.sigRegionChanged.connect(self._on_region)
        self.plot.scene().sigMouseMoved.connect(self._on_hover)
        self.plot.scene().sigMouseClicked.connect(self._on_click)
        if self._focus:
            # a large run starts on its focus set (as its tab's lane filter says): its 1,000-odd lanes are not
            # built first only to be replaced
            self.rank_filter = set(self._focus)
        self.set_highlight(set(model.culprit_ranks()))
        self.rebuild_lanes()
        self.fit_all()
        self.refresh_notes()
        if model.notes is not None:
            model.notes.connect(self._on_notes_changed)

    def refresh_notes(self) -> None:
        self.notes_item.set_notes(self.model.read_only_notes)

    def _on_notes_changed(self, _ev) -> None:
        self.refresh_notes()

    def settle(self) -> None:
        """Finish deferred drawing now before a screenshot or export (or a test's look at the lanes): wait for
        the view's window from the store thread, then make the raster crisp at the current zoom."""
        self.lanes_item.fetch_now()
        self.lanes_item.sharpen_now()

    # ---------------------------------------------------------------- lanes

    def rebuild_lanes(self, keep_host: str | None = None) -> None:
        """Rebuild the rows from the filter, the expanded ranks and (large runs) the pinned ranks and the
        hosts' collapse state. From the top, or with ``keep_host``'s lane kept on the same screen row."""
        before = self._host_row(keep_host)
        lanes = self.model.lanes(self.expanded, self.rank_filter)
        if self.large:
            # the implicated (highlighted) ranks and reference peers pinned at the top, the rest by host
            pinned = pinned_order(self._focus, self.lanes_item.highlight_ranks, self.model.ranks)
            lanes = group_by_host(
                lanes, self._host_of, list(self._hosts), pinned, self.host_collapsed, self._implicated
            )
        self.lanes = lanes
        self.lanes_item.set_lanes(self.lanes)
        self.anomaly_item.set_lanes(self.lanes, lane_hosts(self.lanes, self._host_of))
        self.notes_item.set_lanes(self.lanes)
        self.axis.set_lanes(self.lanes)
        self.vb.setLimits(yMin=-0.2, yMax=max(len(self.lanes), 1) + 0.2)
        after = self._host_row(keep_host)
        top = 0 if before is None or after is None else self.vscroll.value() + after - before
        self._fit_lanes(top)
        self._place_selection()

    # ---------------------------------------------------------------- hosts (large runs)

    def host_collapsed(self, host: str) -> bool:
        """Whether ``host`` shows as one summary lane (see ``host_choice``)."""
        if host in self.host_choice:
            return self.host_choice[host]
        hot = {self._host_of.get(r) for r in self._implicated}
        return self.large and self.rank_filter is None and host not in hot

    def set_host_collapsed(self, host: str, collapsed: bool) -> None:
        self.host_choice[host] = bool(collapsed)
        self.rebuild_lanes(keep_host=host)

    def toggle_host(self, host: str) -> None:
        self.set_host_collapsed(host, not self.host_collapsed(host))

    def set_all_hosts_collapsed(self, collapsed: bool) -> None:
        self.host_choice = {h: bool(collapsed) for h in self._hosts}
        self.rebuild_lanes()

    def host_lanes(self) -> list[HostLane]:
        return [ln for ln in self.lanes if isinstance(ln, HostLane)]

    def _host_row(self, host: str | None) -> int | None:
        if host is None:
            return None
        return next(
            (i for i, ln in enumerate(self.lanes) if isinstance(ln, HostLane) and ln.host == host), None
        )

    def _selected_host(self) -> str | None:
        """The host of the selected kernel's rank (None without a selection)."""
        if self.selected is None:
            return None
        return self._host_of.get(self.model.rank_of_track(self.selected[0]))

    def host_menu(self, lane: int) -> QtWidgets.QMenu:
        """The lanes' context menu at lane row ``lane``: collapse/expand that lane's host, all hosts."""
        menu = QtWidgets.QMenu(self)
        ln = self.lanes[lane] if 0 <= lane < len(self.lanes) else None
        host = (
            ln.host if isinstance(ln, HostLane) else (self._host_of.get(ln.rank) if ln is not None else None)
        )
        if host is not None and self.host_lanes():
            c = self.host_collapsed(host)
            menu.addAction(
                f"{'Expand' if c else 'Collapse'} {host}", lambda: self.set_host_collapsed(host, not c)
            )
        if self.host_lanes():
            menu.addAction("Collapse all hosts", lambda: self.set_all_hosts_collapsed(True))
            menu.addAction("Expand all hosts", lambda: self.set_all_hosts_collapsed(False))
        return menu

    def lanes_that_fit(self) -> int:
        """How many lanes the plot shows at once (each at least MIN_LANE_PX tall)."""
        h = self.vb.height() if self.vb.height() > 1 else max(self.plot.height() - 40, MIN_LANE_PX)
        return max(1, int(h // MIN_LANE_PX))

    def _fit_lanes(self, top: int | None = None) -> None:
        """Show ``lanes_that_fit`` lanes from lane ``top`` (None: keep the scroll position)."""
        n = max(len(self.lanes), 1)
        shown = min(n, self.lanes_that_fit())
        top = self.vscroll.value() if top is None else top
        top = int(min(max(top, 0), n - shown))
        self.vscroll.blockSignals(True)
        self.vscroll.setRange(0, n - shown)
        self.vscroll.setPageStep(shown)
        self.vscroll.setValue(top)
        self.vscroll.blockSignals(False)
        self.vscroll.setVisible(n > shown)
        self.vb.setYRange(top, top + shown, padding=0)

    def _on_vscroll(self, value: int) -> None:
        self._fit_lanes(value)

    def ensure_lane_visible(self, lane: int) -> None:
        (_x, (y0, y1)) = self.vb.viewRange()
        if not (y0 - 1e-6 <= lane and lane + 1 <= y1 + 1e-6):
            self._fit_lanes(lane - self.lanes_that_fit() // 2)

    def set_rank_filter(self, ranks: set[int] | None) -> None:
        self.rank_filter = set(ranks) if ranks else None
        self.rebuild_lanes()

    def set_highlight(self, ranks: set[int]) -> None:
        self.lanes_item.highlight_ranks = set(ranks)
        self.axis.alert_ranks = set(ranks)
        self.axis.picture = None
        self.axis.update()
        self.lanes_item.update()

    def toggle_expand(self, rank: int | None = None) -> None:
        if rank is None:
            self.expanded = set() if self.expanded else set(self.model.ranks)
        elif rank in self.expanded:
            self.expanded.discard(rank)
        else:
            self.expanded.add(rank)
        self.rebuild_lanes()

    # ---------------------------------------------------------------- view range

    def _span_s(self) -> float:
        return span_s(self.model)

    def x_range(self) -> tuple[float, float]:
        (x0, x1), _ = self.vb.viewRange()
        return float(x0), float(x1)

    def x_range_ns(self) -> tuple[int, int]:
        x0, x1 = self.x_range()
        return self.model.t0_ns + int(x0 * 1e9), self.model.t0_ns + int(x1 * 1e9)

    def set_x_range(self, x0: float, x1: float) -> None:
        self.vb.setXRange(x0, x1, padding=0)

    def zoom_ns(self, t0_ns: int, t1_ns: int, margin: float = 0.15) -> None:
        """Show ``[t0_ns, t1_ns]`` with a margin on each side (min 2 µs wide)."""
        a = (t0_ns - self.model.t0_ns) / 1e9
        b = (t1_ns - self.model.t0_ns) / 1e9
        w = max(b - a, 2e-6)
        self.set_x_range(a - margin * w, a + w + margin * w)

    def fit_all(self) -> None:
        self.set_x_range(0.0, self._span_s())

    def zoom(self, factor: float, center: float | None = None) -> None:
        """factor < 1 zooms in, around ``center`` (seconds; the middle of the view by default)."""
        x0, x1 = self.x_range()
        c = (x0 + x1) / 2 if center is None else center
        self.set_x_range(c - (c - x0) * factor, c + (x1 - c) * factor)

    def pan(self, fraction: float) -> None:
        x0, x1 = self.x_range()
        d = (x1 - x0) * fraction
        self.set_x_range(x0 + d, x1 + d)

    def zoom_to_selection(self) -> None:
        if self.selection_item.rect is not None:
            r = self.selection_item.rect
            self.zoom_ns(self.model.t0_ns + int(r.left() * 1e9), self.model.t0_ns + int(r.right() * 1e9), 1.0)

    def _on_range(self, *_a) -> None:
        x0, x1 = self.x_range()
        self.region.blockSignals(True)
        self.region.setRegion((x0, x1))
        self.region.blockSignals(False)
        self.rangeChanged.emit(x0, x1)

    def _on_region(self) -> None:
        a, b = self.region.getRegion()
        if b > a:
            self.vb.blockSignals(True)
            self.vb.setXRange(a, b, padding=0)
            self.vb.blockSignals(False)

    def resizeEvent(self, ev) -> None:
        super().resizeEvent(ev)
        self.overview_box.setXRange(0, self._span_s(), padding=0.01)
        QtCore.QTimer.singleShot(0, self, lambda: self._fit_lanes(None))  # after the plot got its new size

    # ---------------------------------------------------------------- anomalies

    def _anomaly_order(self) -> np.ndarray:
        a = self.model.anomalies
        if not len(a["start_ns"]):
            return np.zeros(0, np.int64)
        roots = np.flatnonzero(a["role"] == ROLE_ROOT)
        rows = roots if len(roots) else np.arange(len(a["start_ns"]))
        return rows[np.argsort(a["start_ns"][rows], kind="stable")]

    def goto_anomaly(self, row: int) -> None:
        """Zoom to anomaly row ``row`` (of the anomalies table) and select its kernel."""
        a = self.model.anomalies
        s, e = int(a["start_ns"][row]), int(a["end_ns"][row])
        track = int(a["track"][row])
        lane = (
            int(self.anomaly_item.lane_of_track[track])
            if track < len(self.anomaly_item.lane_of_track)
            else -1
        )
        if 0 <= lane < len(self.lanes) and isinstance(self.lanes[lane], HostLane):
            self.set_host_collapsed(self.lanes[lane].host, False)  # its rank's own lane, not the summary
        self.zoom_ns(s, e, margin=4.0)
        self.select(int(a["track"][row]), int(a["index"][row]), (s, e))

    def step_anomaly(self, direction: int) -> None:
        """N/P: the next/previous root anomaly in time (all anomalies when there are no roots)."""
        if not len(self._order):
            return
        self._anomaly_pos = (self._anomaly_pos + direction) % len(self._order)
        self.goto_anomaly(int(self._order[self._anomaly_pos]))

    # ---------------------------------------------------------------- selection, hover

    def select(self, track: int, index: int, span: tuple[int, int] | None = None) -> None:
        """Select event ``index`` of ``track`` and emit ``eventSelected``. ``span`` = its (start_ns, end_ns)
        when the caller knows them (a click, an anomaly row); otherwise they are read on the store thread."""
        self.set_selected(track, index, span)
        self.eventSelected.emit(int(track), int(index))

    @property
    def selected_span(self) -> tuple[int, int] | None:
        """(start_ns, end_ns) of the selected event, once known."""
        return self._selected_span if self.selected is not None else None

    def set_selected(self, track: int, index: int, span: tuple[int, int] | None = None) -> None:
        """Select without emitting ``eventSelected`` (see ``select``)."""
        self.selected = (int(track), int(index))
        self._selected_span = (int(span[0]), int(span[1])) if span is not None else None
        self._place_selection()

    def _place_selection(self) -> None:
        if self.selected is None:
            self.selection_item.set_rect(None)
            return
        track, index = self.selected
        lane = (
            int(self.anomaly_item.lane_of_track[track])
            if track < len(self.anomaly_item.lane_of_track)
            else -1
        )
        if lane < 0:
            self.selection_item.set_rect(None)
            return
        if self._selected_span is None:
            self.selection_item.set_rect(None)
            sel, model = self.selected, self.model

            def arrived(fut) -> None:
                if self.selected != sel or fut.exception() is not None:
                    return
                ev = fut.result()
                self._selected_span = (int(ev["start_ns"]), int(ev["end_ns"]))
                self._place_selection()

            self._deliver.submit(model, lambda: model.event(*sel), arrived)
            return
        s, e = self._selected_span
        x = (s - self.model.t0_ns) / 1e9
        self.selection_item.set_rect(QtCore.QRectF(x, lane + 0.02, (e - s) / 1e9, 0.96))
        self.ensure_lane_visible(lane)

    def _hit_at_scene(self, pos) -> tuple[int, int] | None:
        if not self.vb.sceneBoundingRect().contains(pos):
            return None
        pt = self.vb.mapSceneToView(pos)
        x0, x1 = self.x_range()
        tol = 2 * (x1 - x0) / max(self.vb.width(), 1.0)
        return self.lanes_item.hit(pt.x(), pt.y(), tol)

    def tooltip_text(self, lane: int, i: int) -> str:
        ld = self.lanes_item.data[lane]
        name = self.model.string(int(ld.name[i]))
        dur = int(ld.end_ns[i] - ld.start_ns[i])
        track = int(ld.track[i])
        where = esc(self.model.track_text(track))
        if int(ld.index[i]) < 0:
            return (
                f"<b>{int(ld.count[i]):,} events merged</b> ({fmt_ns(dur)})<br>longest: {esc(name)}<br>"
                f"{where}<br><i>click to zoom in</i>"
            )
        tip = f"<b>{esc(name)}</b><br>duration {fmt_ns(dur)}<br>{where}"
        rows = self.model.anomalies_of(track, int(ld.index[i]))
        for r in rows[:2]:
            role = "ROOT anomaly" if int(self.model.anomalies["role"][r]) == ROLE_ROOT else "symptom"
            comp = self.model.component_name(int(self.model.anomalies["component"][r]))
            tip += f"<br><span style='color:{ROOT_COLOR}'><b>{role}</b> · {esc(comp)}</span>"
        return tip

    def _on_hover(self, pos) -> None:
        hit = self._hit_at_scene(pos)
        view = self.plot
        gp = view.mapToGlobal(view.mapFromScene(pos))
        if hit is not None:
            QtWidgets.QToolTip.showText(gp, self.tooltip_text(*hit), view)
            return
        i = int(np.floor(self.vb.mapSceneToView(pos).y()))
        lane = self.lanes[i] if 0 <= i < len(self.lanes) else None
        on_row = self.axis.sceneBoundingRect().contains(pos) or self.vb.sceneBoundingRect().contains(pos)
        if isinstance(lane, HostLane) and on_row:  # a host's name or empty header row: what a click does
            QtWidgets.QToolTip.showText(gp, esc(lane.tooltip), view)
        else:
            QtWidgets.QToolTip.hideText()

    def _on_click(self, ev) -> None:
        pos = ev.scenePos()
        on_axis = self.axis.sceneBoundingRect().contains(pos)
        i = int(np.floor(self.vb.mapSceneToView(pos).y()))
        lane = self.lanes[i] if 0 <= i < len(self.lanes) else None
        if ev.button() == QtCore.Qt.MouseButton.RightButton:
            if (on_axis or self.vb.sceneBoundingRect().contains(pos)) and self.host_lanes():
                menu = self.host_menu(i)
                menu.setAttribute(QtCore.Qt.WidgetAttribute.WA_DeleteOnClose)
                menu.popup(QtGui.QCursor.pos())
            return
        if ev.button() != QtCore.Qt.MouseButton.LeftButton:
            return
        # A click on a host's name (or its empty header row) collapses/expands it; on a rank label toggles
        # that rank's streams.
        if isinstance(lane, HostLane) and (on_axis or lane.kind == HEADER):
            self.toggle_host(lane.host)
            return
        if on_axis:
            if lane is not None:
                self.toggle_expand(lane.rank)
            return
        hit = self._hit_at_scene(pos)
        if hit is None:
            return
        lane, i = hit
        ld = self.lanes_item.data[lane]
        if int(ld.index[i]) < 0:
            self.zoom_ns(int(ld.start_ns[i]), int(ld.end_ns[i]), margin=0.05)
            return
        self.select(int(ld.track[i]), int(ld.index[i]), (int(ld.start_ns[i]), int(ld.end_ns[i])))

    # ---------------------------------------------------------------- keys

    def keyPressEvent(self, ev: QtGui.QKeyEvent) -> None:
        if not self.handle_key(ev.key()):
            super().keyPressEvent(ev)

    def handle_key(self, key: int) -> bool:
        k = QtCore.Qt.Key
        actions = {
            k.Key_W: lambda: self.zoom(0.5),
            k.Key_S: lambda: self.zoom(2.0),
            k.Key_A: lambda: self.pan(-0.25),
            k.Key_D: lambda: self.pan(0.25),
            k.Key_F: self.fit_all,
            k.Key_Z: self.zoom_to_selection,
            k.Key_N: lambda: self.step_anomaly(1),
            k.Key_P: lambda: self.step_anomaly(-1),
            k.Key_PageDown: lambda: self._fit_lanes(self.vscroll.value() + self.vscroll.pageStep()),
            k.Key_PageUp: lambda: self._fit_lanes(self.vscroll.value() - self.vscroll.pageStep()),
            k.Key_H: self._toggle_selected_host,
        }
        fn = actions.get(key)
        if fn is None:
            return False
        fn()
        return True

    def _toggle_selected_host(self) -> None:
        """H: collapse/expand the selected kernel's host (large runs)."""
        host = self._selected_host()
        if host is not None and self.host_lanes():
            self.toggle_host(host)
