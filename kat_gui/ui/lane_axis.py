"""The lanes' left axis: each lane's label (rank and GPU, or stream) beside its row, implicated ranks in red.

A host's lane (``host_lanes.HostLane``: ``▾ host63 · 8 ranks`` expanded, ``▸`` collapsed) is named left-aligned in
bold slate (red with ⚠ when the host holds an implicated rank), rank lanes right-aligned, so the grouping reads
as a hierarchy. Labels never overlap: implicated ranks' labels are placed first, then hosts', then the rest
(where lanes are thinner than a line of text, only every Nth of those).

Labels are placed from the linked view's lane rows (row ``i`` spans ``[i, i + 1)``) in the axis's own pixel
coordinates and elided at the end to fit its width (the rank and host come first, the GPU name last).
Caching: the painted labels are kept as a pixmap keyed by the axis size, the view's y range, the alert set
and the lane list, and blitted while only the x range moves.
"""

from __future__ import annotations

import numpy as np
import pyqtgraph as pg
from PySide6 import QtCore, QtGui

from kat_gui.ui.host_lanes import HostLane
from kat_gui.ui.run_model import Lane
from kat_gui.ui.timeline_paint import ROOT_COLOR

HOST_LABEL = "#1F3A5F"


class LaneAxis(pg.AxisItem):
    """Left axis naming each lane; lanes of implicated ranks are drawn red and bold."""

    def __init__(self):
        super().__init__("left")
        self.lanes: list[Lane] = []
        self.alert_ranks: set[int] = set()
        self.setStyle(tickLength=0, autoExpandTextSpace=False)
        self.setWidth(215)

    def set_lanes(self, lanes: list[Lane]) -> None:
        self.lanes = lanes
        self.setTicks([[(i + 0.5, lane.label) for i, lane in enumerate(lanes)], []])
        self.picture = None
        self._pix_key = None
        self.update()

    def paint(self, p, opt, widget) -> None:
        # Replaying the labels' QPicture costs ~10 ms a frame with 64 lanes; the labels only change with the
        # y range, the size or the alert set, so keep them as a pixmap and blit it while the x range moves.
        vb = self.linkedView()
        key = (
            self.size().toSize(),
            tuple(vb.viewRange()[1]) if vb is not None else None,
            frozenset(self.alert_ranks),
            len(self.lanes),
            id(self.lanes),
        )
        if getattr(self, "_pix_key", None) != key or self.picture is None:
            size = self.size().toSize()
            pix = QtGui.QPixmap(max(size.width(), 1), max(size.height(), 1))
            pix.fill(QtCore.Qt.GlobalColor.transparent)
            painter = QtGui.QPainter(pix)
            super().paint(painter, opt, widget)
            painter.end()
            self._pix = pix
            self._pix_key = key
        p.drawPixmap(0, 0, self._pix)

    def drawPicture(self, p, axisSpec, tickSpecs, textSpecs):
        # Labels are placed from the linked view (not pyqtgraph's text specs, which drop labels wider than
        # the axis) and elided to fit, so long GPU names never hide a rank.
        p.setRenderHint(QtGui.QPainter.RenderHint.Antialiasing, False)
        p.setRenderHint(QtGui.QPainter.RenderHint.TextAntialiasing, True)
        pen, p1, p2 = axisSpec
        p.setPen(pen)
        p.drawLine(p1, p2)
        vb = self.linkedView()
        if vb is None:
            return
        base = QtGui.QFont(self.font())
        bold = QtGui.QFont(base)
        bold.setBold(True)
        width = self.width() - 8
        # Labels never overlap: where lanes are thinner than a line of text only every Nth lane is named
        # (implicated lanes always, first; others that would touch one already drawn are skipped).
        fh = QtGui.QFontMetrics(bold).height()
        rows = []
        # only the lanes in the view's y range (a 1,024-rank run has 1,152 lanes, ~50 on screen)
        (_x, (y0, y1)) = vb.viewRange()
        first = max(int(np.floor(min(y0, y1))) - 1, 0)
        last = min(int(np.ceil(max(y0, y1))) + 1, len(self.lanes))
        for i in range(first, last):
            lane = self.lanes[i]
            top = self.mapFromScene(vb.mapViewToScene(QtCore.QPointF(0, i))).y()
            bot = self.mapFromScene(vb.mapViewToScene(QtCore.QPointF(0, i + 1))).y()
            if max(top, bot) < 0 or min(top, bot) > self.height():
                continue
            rows.append((i, lane, min(top, bot), max(top, bot)))
        every = 1
        if rows:
            lane_px = max(min(b - t for _i, _l, t, b in rows), 1e-3)
            every = max(1, int(-(-fh // lane_px)))

        def rank_of(r) -> int:  # placing order: implicated ranks, hosts, the rest
            if r[1].rank in self.alert_ranks and r[1].kind == "rank":
                return 0
            return 1 if isinstance(r[1], HostLane) else 2

        taken: list[tuple[float, float]] = []
        self.drawn: list[tuple[float, float, int]] = []  # (top, bottom, lane) of each label drawn (tests)
        for i, lane, top, bot in sorted(rows, key=rank_of):
            host = isinstance(lane, HostLane)
            alert = (lane.rank in self.alert_ranks and lane.kind == "rank") or (host and lane.implicated)
            mid = (top + bot) / 2
            lo, hi = mid - fh / 2, mid + fh / 2
            if (not alert and not host and i % every) or any(lo < b and a < hi for a, b in taken):
                continue
            taken.append((lo, hi))
            self.drawn.append((lo, hi, i))
            font = bold if alert or host else base
            p.setFont(font)
            color = "#222222" if lane.kind == "rank" else "#666666"
            p.setPen(pg.mkPen(ROOT_COLOR if alert else (HOST_LABEL if host else color)))
            text = lane.label
            if alert:
                text = f"{text}  ⚠" if host else f"⚠ {text}"
            text = QtGui.QFontMetrics(font).elidedText(text, QtCore.Qt.TextElideMode.ElideRight, int(width))
            align = QtCore.Qt.AlignmentFlag.AlignLeft if host else QtCore.Qt.AlignmentFlag.AlignRight
            p.drawText(
                QtCore.QRectF(4 if host else 2, lo, width, hi - lo),
                int(align | QtCore.Qt.AlignmentFlag.AlignVCenter),
                text,
            )
