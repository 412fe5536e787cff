"""The whole-run strip above the lanes: finding windows shaded, every anomaly a tick (red root, amber symptom).

x is seconds since the run start (see ``timeline_paint``) over the whole run whatever the lanes show, y the
strip's ``[0, 1]``: symptoms in the lower half in translucent amber, roots over the upper half in opaque red,
drawn after them. The ticks are deduplicated by pixel
column, so a million anomalies still draw as O(pixels) rectangles, and kept for the strip's pixel size: the
strip repaints whenever the view region on it moves, and then reuses them.
"""

from __future__ import annotations

import numpy as np
import pyqtgraph as pg
from PySide6 import QtCore, QtGui

from kat_gui.ui.run_model import ROLE_ROOT, ROLE_SYMPTOM, RunModel
from kat_gui.ui.timeline_paint import ROOT_COLOR, pixel_s, rect_array, span_s, symptom_color


class OverviewItem(pg.GraphicsObject):
    """Whole-run strip: finding windows shaded, every anomaly a tick (red root, amber symptom)."""

    def __init__(self, model: RunModel):
        super().__init__()
        self.model = model
        self._ticks: tuple[float, list] | None = None  # (pixel size, [(brush, rectangles)])

    def boundingRect(self) -> QtCore.QRectF:
        return QtCore.QRectF(0.0, 0.0, span_s(self.model), 1.0)

    def paint(self, p: QtGui.QPainter, *args) -> None:
        m = self.model
        vb = self.getViewBox()
        px = pixel_s(vb) if vb is not None else 1e-9
        p.setPen(QtCore.Qt.PenStyle.NoPen)
        for f in m.findings:
            s, e = int(f.get("start_ns", 0)), int(f.get("end_ns", 0))
            if e > s:
                p.fillRect(
                    QtCore.QRectF((s - m.t0_ns) / 1e9, 0.0, max((e - s) / 1e9, px), 1.0),
                    pg.mkBrush(214, 39, 40, 40),
                )
        a = m.anomalies
        if not len(a["start_ns"]):
            return
        if self._ticks is None or self._ticks[0] != px:
            bins = m.anomaly_start_bins()
            width = span_s(m) / m.START_BINS
            ticks = []
            for role, color, y0, h in (
                (ROLE_SYMPTOM, symptom_color(), 0.5, 0.5),
                (ROLE_ROOT, QtGui.QColor(ROOT_COLOR), 0.0, 0.55),
            ):
                hit = np.flatnonzero(bins[role])
                if not len(hit):
                    continue
                # One tick per pixel column is enough: the run's anomalies are binned once (several bins a
                # pixel, ``RunModel.anomaly_start_bins``), so a million anomalies cost nothing here.
                cols = np.unique(np.floor((hit + 0.5) * width / px))
                n = len(cols)
                rects = rect_array(cols * px, np.full(n, y0), np.full(n, 2 * px), np.full(n, h))
                ticks.append((pg.mkBrush(color), rects))
            self._ticks = (px, ticks)
        for brush, rects in self._ticks[1]:
            p.setBrush(brush)
            p.drawRects(*rects.drawargs())  # ``rects`` kept alive in the cache: drawargs is a raw pointer
