"""Anomalous kernels on the lanes: roots with a red outline, symptoms (waits on a root) lighter, in amber.

Each row of the run's anomaly table (``RunModel.anomalies``: ``start_ns``, ``end_ns``, ``track``, ``role``)
is drawn on the lane showing its track (a collapsed host's summary lane shows its ranks'), x in seconds since
the run start, y the lane row (see ``timeline_paint``), ``MIN_ANOMALY_PX`` pixels wide at least so it stays
visible when zoomed out.

Symptoms without the flood: a symptom is drawn lighter than a root (thin translucent outline and hatching, or a
light fill; ``timeline_paint``'s alphas) and, **zoomed out** (the median symptom in view narrower than
``AGG_PX`` pixels, or lanes thinner than ``THIN_LANE_PX``), not per kernel but as light bands (a fill, no
outline) over the union of their time, merged across gaps under ``AGG_GAP_PX`` pixels: one band per host
block where lanes are thinner than ``BLOCK_LANE_PX`` (consecutive lanes of one host: a host's expanded ranks,
a collapsed host's summary lane, adjacent pinned lanes of one host; ``host_lanes.host_blocks``), one per lane
where lanes are taller (a few big lanes: a band across a block would also cover a lane that did not wait).
Roots are drawn last, always on top, per lane.

Caching: the anomalies of the lanes on screen and a screenful around them are gathered from the model's
per-track grouping through the lane set's runs of rows (``_marks``), so the work follows the lanes on screen,
not the run (477,000 symptoms of a 1,024-rank run took 80-170 ms a frame when every lane's were merged, 12-18
ms when every shown lane's were gathered). The outlines are computed for the view
plus one width on each side, merged per pixel (``coalesce``), and reused while a pan stays inside that and the
pixel size (and the zoomed-out mode) is unchanged, so panning costs no per-anomaly work. All numpy.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import pyqtgraph as pg
from PySide6 import QtCore, QtGui

from kat_gui.detect.stats import run_rows
from kat_gui.ui.host_lanes import host_blocks
from kat_gui.ui.run_model import ROLE_ROOT, ROLE_SYMPTOM, Lane, RunModel
from kat_gui.ui.timeline_paint import (
    ROOT_COLOR,
    ROOT_FILL_ALPHA,
    ROOT_PEN_PX,
    SYMPTOM_FILL_ALPHA,
    SYMPTOM_PEN_PX,
    pixel_s,
    rect_array,
    span_s,
    symptom_color,
)

MIN_ANOMALY_PX = 3.0  # anomalies stay visible (at least this wide) when zoomed out
WIDE_PX = 60.0  # symptom blocks wider than this are filled, not hatched (speed)
# Zoomed out on a big run, thousands of symptom blocks are only a few pixels wide: stroking each one's outline
# costs ~1 µs a block (10-40 ms a frame at 10^4 blocks), and at that width an outlined, hatched block is an
# amber bar anyway. When more than DENSE_BLOCKS blocks narrower than NARROW_PX are in view, those are filled
# over the pixels their outline covered, in amber as strong as the outline looked (a plain fill: ~5x faster).
NARROW_PX = 4.0
DENSE_BLOCKS = 2_000
NARROW_ALPHA = 90  # about the share of an outlined block's pixels that its (translucent) outline covers
# Zoomed out: the median symptom in view is narrower than AGG_PX -> one band per host block. Hatching (an 8 px
# pattern) cannot show on a narrower mark, which is then only an amber smudge repeated on every waiting lane.
AGG_PX = 8.0
THIN_LANE_PX = 6.0  # ... or the lanes are thinner than this
AGG_GAP_PX = 3.0  # symptoms of one host block closer than this merge into one band
BLOCK_LANE_PX = 40.0  # zoomed out with lanes thinner than this: one band per host block, else per lane


def coalesce(
    x: np.ndarray,
    w: np.ndarray,
    lane: np.ndarray,
    role: np.ndarray,
    px: float,
    n_lanes: int,
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


class LaneMarks(NamedTuple):
    """Anomaly marks on some of the shown lanes, grouped by lane."""

    xs: np.ndarray  # start, seconds since the run start
    ws: np.ndarray  # width, seconds
    lane: np.ndarray
    role: np.ndarray


class AnomalyItem(pg.GraphicsObject):
    """Anomalous instances on the lanes: roots with a red outline (on top), symptoms lighter, per host block
    when zoomed out."""

    def __init__(self, model: RunModel):
        super().__init__()
        self.model = model
        self.lane_of_track = np.full(max(len(model.tracks), 1), -1, np.int32)
        self.n_lanes = 1
        self._block = np.zeros(1, np.int64)  # lane -> host block; first row and rows of each block
        self._block_top = np.zeros(1, np.int64)
        self._block_rows = np.ones(1, np.int64)
        # each shown track's run of rows in the model's per-track grouping, in lane order (see _marks)
        self._segments = (np.zeros(0, np.int64),) * 3  # (lane, first row, row count)
        self._by: tuple[tuple[int, int], LaneMarks] | None = None  # the last lanes' marks: ((l0, l1), marks)
        self._cache: tuple | None = None  # (x0_s, x1_s, px_s, lane mode, visible_rects result)
        self.aggregated = False  # the last view's symptoms were drawn per host block (zoomed out)
        self.drawn = {"root": 0, "symptom": 0}  # rectangles of each role drawn by the last paint (tests)

    def set_lanes(self, lanes: list[Lane], hosts: list[str | None] | None = None) -> None:
        """``hosts``: each lane's host (``host_lanes.lane_hosts``); None = every lane a block of its own."""
        self.prepareGeometryChange()
        sizes = np.array([len(lane.tracks) for lane in lanes], np.int64)
        tracks = (
            np.concatenate([np.asarray(lane.tracks, np.int64) for lane in lanes])
            if sizes.sum()
            else np.zeros(0, np.int64)
        )
        lane_ix = np.repeat(np.arange(len(lanes), dtype=np.int64), sizes)
        self.lane_of_track[:] = -1
        # a track drawn in two lanes keeps its marks in the last
        last, at = np.unique(tracks[::-1], return_index=True)
        self.lane_of_track[last] = lane_ix[::-1][at]
        _rows, bounds = self.model.anomalies_by_track()
        own = (tracks < len(bounds) - 1) & (self.lane_of_track[tracks] == lane_ix)
        tracks, lane_ix = tracks[own], lane_ix[own]
        self._segments = (lane_ix, bounds[tracks], bounds[tracks + 1] - bounds[tracks])
        self.n_lanes = max(len(lanes), 1)
        blk, top, rows = host_blocks(hosts if hosts is not None else [None] * len(lanes))
        self._block, self._block_top, self._block_rows = (
            (blk, top, rows)
            if len(blk)
            else (np.zeros(1, np.int64), np.zeros(1, np.int64), np.ones(1, np.int64))
        )
        self._by = None
        self._cache = None
        self.update()

    def boundingRect(self) -> QtCore.QRectF:
        return QtCore.QRectF(0.0, 0.0, span_s(self.model), float(self.n_lanes))

    def _lane_mode(self, vb) -> tuple[bool, bool]:
        """(lanes thinner than THIN_LANE_PX, thinner than BLOCK_LANE_PX) at the view's lane height."""
        (_x, (y0, y1)) = vb.viewRange()
        lane_px = vb.height() / max(abs(y1 - y0), 1e-9)
        return lane_px < THIN_LANE_PX, lane_px < BLOCK_LANE_PX

    def _lane_window(self, y0: float, y1: float, per_block: bool) -> tuple[int, int, int, int]:
        """(first, end) lanes whose marks are computed for a view showing lanes ``y0..y1``: the visible lanes
        plus one screenful above and below (whole host blocks when banding per block), and (first, end) of
        the lanes actually visible (the computed marks serve while those stay inside)."""
        n = self.n_lanes
        v0, v1 = max(int(np.floor(y0)), 0), min(int(np.ceil(y1)), n)
        page = max(v1 - v0, 1)
        l0, l1 = max(v0 - page, 0), min(v1 + page, n)
        if per_block and l1 > l0:
            blk = self._block
            l0 = int(self._block_top[blk[min(l0, len(blk) - 1)]])
            last = blk[min(l1, len(blk)) - 1]
            l1 = min(int(self._block_top[last] + self._block_rows[last]), n)
        return l0, l1, v0, v1

    def visible_rects(self) -> tuple[np.ndarray, ...]:
        """(x, y, width, height, role, px) of the anomaly marks around the view: roots merged per pixel and
        lane; symptoms per lane, or per host block when zoomed out (``aggregated``).

        Computed for the view plus one width on each side and one screenful of lanes above and below, and
        reused while a pan or a scroll stays inside that and the pixel size is unchanged, so panning costs no
        per-anomaly work (a zoomed-out view can hold 10^5), and the work follows the lanes on screen, not the
        run (a 1,024-rank run's 477,000 symptoms took 80-170 ms a frame)."""
        if not len(self._segments[0]):
            return (np.zeros(0),) * 6
        vb = self.getViewBox()
        (x0, x1), (y0, y1) = vb.viewRange()
        px = pixel_s(vb)
        mode = self._lane_mode(vb)
        thin, per_block = mode
        c = self._cache
        l0, l1, v0, v1 = self._lane_window(y0, y1, per_block)
        if (
            c is not None
            and c[0] <= x0
            and x1 <= c[1]
            and abs(c[2] - px) <= 1e-6 * px
            and c[3] == mode
            and c[5] <= v0
            and v1 <= c[6]
        ):
            return c[4]
        q0, q1 = x0 - (x1 - x0), x1 + (x1 - x0)
        xs, ws, lane, role = self._marks(l0, l1)
        m = (xs + ws >= q0 - MIN_ANOMALY_PX * px) & (xs <= q1)
        xs, ws, lane, role = xs[m], ws[m], lane[m], role[m]
        sym = role == ROLE_SYMPTOM
        self.aggregated = bool(sym.any()) and (thin or float(np.median(ws[sym])) < AGG_PX * px)
        grow = np.maximum(MIN_ANOMALY_PX * px - ws, 0)
        x, w = xs - grow / 2, ws + grow
        if self.aggregated:
            per_lane = ~sym
            if per_block:
                group, top, rows_ = self._block[lane[sym]], self._block_top, self._block_rows
            else:
                group, top, rows_ = lane[sym], np.arange(self.n_lanes), np.ones(self.n_lanes, np.int64)
            bx, bg, bw, brole = coalesce(x[sym], w[sym], group, role[sym], AGG_GAP_PX * px, len(top))
            bi = bg.astype(np.int64)
            band = (bx, top[bi].astype(float), bw, rows_[bi].astype(float), brole)
        else:
            per_lane = np.ones(len(x), bool)
            band = (np.zeros(0), np.zeros(0), np.zeros(0), np.zeros(0), np.zeros(0, np.uint8))
        lx, ly, lw, lrole = coalesce(
            x[per_lane], w[per_lane], lane[per_lane], role[per_lane], px, self.n_lanes
        )
        out = (
            np.concatenate([band[0], lx]),
            np.concatenate([band[1], ly]),
            np.concatenate([band[2], lw]),
            np.concatenate([band[3], np.ones(len(lx))]),
            np.concatenate([band[4], lrole]).astype(np.uint8),
            px,
        )
        self._cache = (q0, q1, px, mode, out, l0, l1)
        return out

    def _marks(self, l0: int, l1: int) -> LaneMarks:
        """The anomalies on lanes ``l0..l1`` in seconds, with their lanes: gathered from the model's per-track
        grouping (``RunModel.anomalies_by_track``) through the lane set's track runs, without a pass over the
        whole table (the last lanes' marks are kept: a pan along the time axis reuses them)."""
        if self._by is not None and self._by[0] == (l0, l1):
            return self._by[1]
        seg_lane, first, count = self._segments
        lo, hi = np.searchsorted(seg_lane, [l0, l1])
        first, count = first[lo:hi], count[lo:hi]
        rows, _bounds = self.model.anomalies_by_track()
        keep = rows[run_rows(first, count)]  # the rows of every run, in lane order
        xs, ws = self.model.anomaly_seconds()
        lane = np.repeat(seg_lane[lo:hi], count)
        marks = LaneMarks(xs[keep], ws[keep], lane, self.model.anomalies["role"][keep])
        self._by = ((l0, l1), marks)
        return marks

    def paint(self, p: QtGui.QPainter, *args) -> None:
        x, y, w, h, role, px = self.visible_rects()
        self.drawn = {"root": 0, "symptom": 0}
        if not len(x):
            return
        # 4 % of a lane left free above and below a mark (a band spans its block's lanes)
        y = y + 0.04
        h = h - 0.08
        sym = role == ROLE_SYMPTOM
        self.drawn["symptom"] = int(np.count_nonzero(sym))
        light = QtGui.QBrush(symptom_color(SYMPTOM_FILL_ALPHA))
        if self.aggregated:
            # zoomed out: one light band per host block and time run, no outline, no hatching
            p.setPen(QtCore.Qt.PenStyle.NoPen)
            p.setBrush(light)
            rects = rect_array(x[sym], y[sym], w[sym], h[sym])  # alive while drawn: drawargs
            p.drawRects(*rects.drawargs())  # hands Qt a raw pointer into its buffer
        else:
            self._paint_symptoms(p, x, y, w, h, sym, px, light)
        root = role == ROLE_ROOT
        self.drawn["root"] = int(np.count_nonzero(root))
        if root.any():  # last: roots always on top
            p.setPen(pg.mkPen(ROOT_COLOR, width=ROOT_PEN_PX))
            tint = QtGui.QColor(ROOT_COLOR)
            tint.setAlpha(ROOT_FILL_ALPHA)
            p.setBrush(QtGui.QBrush(tint))
            rects = rect_array(x[root], y[root], w[root], h[root])
            p.drawRects(*rects.drawargs())

    def _paint_symptoms(self, p, x, y, w, h, sym, px, light) -> None:
        """Per-kernel symptoms: thin translucent amber outline + hatching; a light fill when wide (hatching is
        a slow pattern fill over large areas) or when thousands are only a few pixels wide (``DENSE_BLOCKS``)."""
        wide = w > WIDE_PX * px
        narrow = sym & (w < NARROW_PX * px)
        if np.count_nonzero(narrow) <= DENSE_BLOCKS:
            narrow[:] = False
        pen = QtGui.QPen(symptom_color(), SYMPTOM_PEN_PX)
        pen.setCosmetic(True)
        for mask, brush in (
            (sym & ~wide & ~narrow, QtGui.QBrush(symptom_color(), QtCore.Qt.BrushStyle.BDiagPattern)),
            (sym & wide, light),
        ):
            if mask.any():
                p.setPen(pen)
                p.setBrush(brush)
                rects = rect_array(x[mask], y[mask], w[mask], h[mask])  # alive while drawn: drawargs
                p.drawRects(*rects.drawargs())  # hands Qt a raw pointer into its buffer
        if narrow.any():
            vb = self.getViewBox()
            _px, py = vb.viewPixelSize() if vb is not None else (px, 0.0)
            p.setPen(QtCore.Qt.PenStyle.NoPen)
            p.setBrush(QtGui.QBrush(symptom_color(NARROW_ALPHA)))
            rects = rect_array(x[narrow] - px / 2, y[narrow] - py / 2, w[narrow] + px, h[narrow] + py)
            p.drawRects(*rects.drawargs())
