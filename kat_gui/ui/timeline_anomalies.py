"""Anomalous kernels on the lanes: roots with a red outline, symptoms (waits on a root) with amber hatching.

Each row of the run's anomaly table (``RunModel.anomalies``: ``start_ns``, ``end_ns``, ``track``, ``role``)
is drawn on the lane showing its track, x in seconds since the run start, y the lane row (see
``timeline_paint``), ``MIN_ANOMALY_PX`` pixels wide at least so it stays visible when zoomed out.

Caching: the anomalies of the shown lanes are converted to seconds once per lane set (``_all``). The
outlines around the view are computed for the view plus one width on each side, merged per pixel
(``coalesce``), and reused while a pan stays inside that and the pixel size is unchanged, so panning costs no
per-anomaly work (a zoomed-out view can hold 10^5).
"""

from __future__ import annotations

import numpy as np
import pyqtgraph as pg
from PySide6 import QtCore, QtGui

from kat_gui.ui.run_model import ROLE_ROOT, ROLE_SYMPTOM, Lane, RunModel
from kat_gui.ui.timeline_paint import ROOT_COLOR, SYMPTOM_COLOR, pixel_s, rect_array, span_s

MIN_ANOMALY_PX = 3.0  # anomalies stay visible (at least this wide) when zoomed out
WIDE_PX = 60.0  # symptom blocks wider than this are filled, not hatched (speed)
# Zoomed out on a big run, thousands of symptom blocks are only a few pixels wide: stroking each one's outline
# costs ~1 µs a block (10-40 ms a frame at 10^4 blocks), and at that width an outlined, hatched block is an
# amber bar anyway. When more than DENSE_BLOCKS blocks narrower than NARROW_PX are in view, those are filled
# over the pixels their outline covered, in amber as strong as the outline looked (a plain fill: ~5x faster).
NARROW_PX = 4.0
DENSE_BLOCKS = 2_000
NARROW_ALPHA = 150  # about the share of an outlined block's pixels that its outline covers


def coalesce(
    x: np.ndarray, w: np.ndarray, lane: np.ndarray, role: np.ndarray, px: float, n_lanes: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Merge anomaly rectangles of one lane and role that are less than a pixel apart, so a zoomed-out view
    draws O(pixels) outlines instead of one per anomaly. Returns (x, lane as float, width, role)."""
    if len(x) < 2:
        return x, lane.astype(float), w, role
    gid = role.astype(np.int64) * (n_lanes + 1) + lane
    order = np.lexsort((x, gid))
    x, w, gid = x[order], w[order], gid[order]
    # Offset each group far apart so one running maximum of ends never leaks across groups.
    span = float(x.max() - x.min() + w.max()) + 1.0
    z = (gid - gid.min()) * 4 * span + x
    end = np.maximum.accumulate(z + w)
    brk = np.concatenate(([True], (gid[1:] != gid[:-1]) | (z[1:] > end[:-1] + px)))
    first = np.flatnonzero(brk)
    last = np.concatenate((first[1:], [len(x)])) - 1
    return (
        x[first],
        (gid[first] % (n_lanes + 1)).astype(float),
        (end[last] - z[first]),
        (gid[first] // (n_lanes + 1)).astype(np.uint8),
    )


class AnomalyItem(pg.GraphicsObject):
    """Anomalous instances on the lanes: roots with a red outline, symptoms with amber hatching."""

    def __init__(self, model: RunModel):
        super().__init__()
        self.model = model
        self.lane_of_track = np.full(max(len(model.tracks), 1), -1, np.int32)
        self.n_lanes = 1
        self._all: tuple[np.ndarray, ...] | None = None  # anomalies on shown lanes: x_s, w_s, lane, role
        self._cache: tuple | None = None  # (x0_s, x1_s, px_s, visible_rects result)

    def set_lanes(self, lanes: list[Lane]) -> None:
        self.prepareGeometryChange()
        self.lane_of_track[:] = -1
        for i, lane in enumerate(lanes):
            self.lane_of_track[lane.tracks] = i
        self.n_lanes = max(len(lanes), 1)
        self._all = None
        self._cache = None
        self.update()

    def boundingRect(self) -> QtCore.QRectF:
        return QtCore.QRectF(0.0, 0.0, span_s(self.model), float(self.n_lanes))

    def visible_rects(self) -> tuple[np.ndarray, ...]:
        """(x, lane, width, role, px) of the anomaly outlines around the view, merged per pixel.

        Computed for the view plus one width on each side and reused while a pan stays inside that and the
        pixel size is unchanged, so panning costs no per-anomaly work (a zoomed-out view can hold 10^5)."""
        a = self.model.anomalies
        if not len(a["start_ns"]):
            return (np.zeros(0),) * 5
        vb = self.getViewBox()
        (x0, x1), _ = vb.viewRange()
        px = pixel_s(vb)
        c = self._cache
        if c is not None and c[0] <= x0 and x1 <= c[1] and abs(c[2] - px) <= 1e-6 * px:
            return c[3]
        q0, q1 = x0 - (x1 - x0), x1 + (x1 - x0)
        if self._all is None:
            lane = self.lane_of_track[np.clip(a["track"], 0, len(self.lane_of_track) - 1)]
            keep = lane >= 0
            self._all = (
                (a["start_ns"][keep] - self.model.t0_ns) / 1e9,
                (a["end_ns"][keep] - a["start_ns"][keep]) / 1e9,
                lane[keep],
                a["role"][keep],
            )
        xs, ws, lane, role = self._all
        grow = np.maximum(MIN_ANOMALY_PX * px - ws, 0)
        x = xs - grow / 2
        w = ws + grow
        m = (x + w >= q0) & (x <= q1)
        out = (*coalesce(x[m], w[m], lane[m], role[m], px, self.n_lanes), px)
        self._cache = (q0, q1, px, out)
        return out

    def paint(self, p: QtGui.QPainter, *args) -> None:
        x, y, w, role, px = self.visible_rects()
        if not len(x):
            return
        h = np.full(len(x), 0.92)
        y = y + 0.04
        sym = role == ROLE_SYMPTOM
        # Hatching is a pattern fill, slow over large areas: blocks wider than WIDE_PX (zoomed out, many
        # merged symptoms) get a light amber fill instead; narrow ones keep the hatching.
        wide = w > WIDE_PX * px
        narrow = sym & (w < NARROW_PX * px)
        if np.count_nonzero(narrow) <= DENSE_BLOCKS:
            narrow[:] = False
        for mask, brush in (
            (
                sym & ~wide & ~narrow,
                QtGui.QBrush(QtGui.QColor(SYMPTOM_COLOR), QtCore.Qt.BrushStyle.BDiagPattern),
            ),
            (sym & wide, QtGui.QBrush(QtGui.QColor(255, 176, 0, 70))),
        ):
            if mask.any():
                p.setPen(pg.mkPen(SYMPTOM_COLOR, width=1))
                p.setBrush(brush)
                rects = rect_array(x[mask], y[mask], w[mask], h[mask])  # alive while drawn: drawargs
                p.drawRects(*rects.drawargs())  # hands Qt a raw pointer into its buffer
        if narrow.any():
            vb = self.getViewBox()
            _px, py = vb.viewPixelSize() if vb is not None else (px, 0.0)
            p.setPen(QtCore.Qt.PenStyle.NoPen)
            p.setBrush(QtGui.QBrush(QtGui.QColor(255, 176, 0, NARROW_ALPHA)))
            rects = rect_array(x[narrow] - px / 2, y[narrow] - py / 2, w[narrow] + px, h[narrow] + py)
            p.drawRects(*rects.drawargs())
        root = role == ROLE_ROOT
        if root.any():
            p.setPen(pg.mkPen(ROOT_COLOR, width=2))
            p.setBrush(QtGui.QBrush(QtGui.QColor(214, 39, 40, 45)))
            rects = rect_array(x[root], y[root], w[root], h[root])
            p.drawRects(*rects.drawargs())
