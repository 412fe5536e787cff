"""Synchronized per-rank timelines: one row per rank (or stream), one shared time axis in seconds.

Drawing follows pyqtgraph's advice: one custom GraphicsObject for all lanes that asks the store for the
visible window at the current pixel resolution (the store answers with raw events or level-of-detail
rectangles, O(pixels) either way) and draws rectangles batched by colour with one ``drawRects`` call per
colour. Anomalies are a second item on top (red outline = root, amber hatching = symptom), and an overview
strip above the lanes marks every anomaly over the whole run so they are findable when zoomed in.

x coordinates are seconds since the run's first event (float64: ns precision over ~100 days); the axis is
given ``units="s"`` so pyqtgraph prints ms/µs.
"""

from __future__ import annotations

import numpy as np
import pyqtgraph as pg
from pyqtgraph.Qt.internals import PrimitiveArray
from PySide6 import QtCore, QtGui, QtWidgets

from kat_gui.ui.kernel_classes import CLASS_COLORS, CLASS_NAMES, rect_classes
from kat_gui.ui.run_model import ROLE_ROOT, ROLE_SYMPTOM, Lane, RunModel, esc, fmt_ns

ROOT_COLOR = "#D62728"
SYMPTOM_COLOR = "#FFB000"
HIGHLIGHT_BG = "#FDE3E1"
BAND_BG = "#F4F5F7"
SELECT_COLOR = "#111111"

LANE_PAD = 0.12  # fraction of a row left empty above and below the rectangles
PREFETCH = 1.0  # view widths fetched on each side, so small pans reuse the last query
MIN_ANOMALY_PX = 3.0
RASTER_MIN_RECTS = 20_000  # above this many rectangles a lane is drawn as a numpy-rasterised image row
SHARPEN_MS = 90  # after the last zoom step, re-rasterise at the new pixel size
WIDE_PX = 60.0  # symptom blocks wider than this are filled, not hatched (speed)  # anomalies stay visible (at least this wide) when zoomed out


def _rect_array(x: np.ndarray, y: np.ndarray, w: np.ndarray, h: np.ndarray) -> PrimitiveArray:
    arr = PrimitiveArray(QtCore.QRectF, 4)
    arr.resize(len(x))
    mem = arr.ndarray()
    mem[:, 0] = x
    mem[:, 1] = y
    mem[:, 2] = w
    mem[:, 3] = h
    return arr


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


class LaneData:
    """What one lane shows for the cached window: columns (ns) plus the track of each rectangle."""

    __slots__ = ("start_ns", "end_ns", "name", "kind", "count", "index", "track", "summary")

    def __init__(self, wins: list):
        if wins:
            self.start_ns = np.concatenate([w.start_ns for w in wins])
            self.end_ns = np.concatenate([w.end_ns for w in wins])
            self.name = np.concatenate([w.name for w in wins])
            self.kind = np.concatenate([w.kind for w in wins])
            self.count = np.concatenate([w.count for w in wins])
            self.index = np.concatenate([w.index for w in wins])
            self.track = np.concatenate([np.full(len(w), w.track, np.int32) for w in wins])
        else:
            z = np.zeros(0, np.int64)
            self.start_ns, self.end_ns, self.name, self.kind = z, z, z.astype(np.int32), z.astype(np.uint8)
            self.count, self.index, self.track = z.astype(np.int32), z, z.astype(np.int32)
        self.summary = any(w.summary for w in wins)

    def __len__(self) -> int:
        return len(self.start_ns)


class LanesItem(pg.GraphicsObject):
    """Every lane's rectangles, fetched per view window and drawn batched by colour class."""

    def __init__(self, model: RunModel):
        super().__init__()
        self.model = model
        self.lanes: list[Lane] = []
        self.highlight_ranks: set[int] = set()
        self.data: list[LaneData] = []
        self._key: tuple | None = None  # (t0_ns, t1_ns, resolution_ns) of the cached query
        self._arrays: list[tuple[QtGui.QBrush, QtGui.QPen, PrimitiveArray]] = []
        self._raster: tuple[float, float, QtGui.QImage] | None = None
        self._x = self._w = np.zeros(0)
        self._lane, self._cls = np.zeros(0, np.int32), np.zeros(0, np.uint8)
        self._pad = np.array([LANE_PAD])
        self._class_rgb = np.array([QtGui.QColor(c).getRgb()[:3] for c in CLASS_COLORS], float)
        self._sharpen = QtCore.QTimer()
        self._sharpen.setSingleShot(True)
        self._sharpen.setInterval(SHARPEN_MS)
        self._sharpen.timeout.connect(self.sharpen_now)
        self.queries = 0  # number of store queries (benchmarks and tests read it)
        self._brushes = [pg.mkBrush(c) for c in CLASS_COLORS]
        self._pens = [pg.mkPen(QtGui.QColor(c).darker(140), width=0) for c in CLASS_COLORS]

    def set_lanes(self, lanes: list[Lane]) -> None:
        self.prepareGeometryChange()
        self.lanes = lanes
        self._key = None
        self.update()

    def span_s(self) -> float:
        return max((self.model.t1_ns - self.model.t0_ns) / 1e9, 1e-9)

    def boundingRect(self) -> QtCore.QRectF:
        return QtCore.QRectF(0.0, 0.0, self.span_s(), float(max(len(self.lanes), 1)))

    # ---------------------------------------------------------------- data

    def _needed(self) -> tuple[int, int, int] | None:
        vb = self.getViewBox()
        if vb is None:
            return None
        (x0, x1), _ = vb.viewRange()
        px = max(vb.width(), 1.0)
        res_ns = max(1, int((x1 - x0) * 1e9 / px))
        t0 = self.model.t0_ns + int(x0 * 1e9)
        t1 = self.model.t0_ns + int(x1 * 1e9) + 1
        return t0, t1, res_ns

    def ensure_data(self) -> None:
        """Query the store again when the view left the prefetched window or the resolution changed 2x."""
        need = self._needed()
        if need is None:
            return
        t0, t1, res = need
        if self._key is not None:
            k0, k1, kres = self._key
            # Reuse while the data is at most 2x coarser or finer than a pixel: LOD rectangles merge gaps
            # below their width, so a 2x-coarse level hides gaps of under 2 px, which nobody can see.
            if k0 <= t0 and t1 <= k1 and kres / 2 <= res < 2 * kres:
                return
        width = t1 - t0
        q0 = t0 - int(PREFETCH * width)
        q1 = t1 + int(PREFETCH * width)
        self._fetch(q0, q1, res)

    def _fetch(self, t0: int, t1: int, res: int) -> None:
        self.queries += 1
        self._key = (t0, t1, res)
        self.data = []
        self._arrays = []
        self._raster = None
        xs, ls, ws, cs = [], [], [], []
        name_class = self.model.name_class
        for i, lane in enumerate(self.lanes):
            wins = self.model.window(lane.tracks, t0, t1, res)
            ld = LaneData([wins[int(t)] for t in lane.tracks if int(t) in wins])
            self.data.append(ld)
            if not len(ld):
                continue
            xs.append((ld.start_ns - self.model.t0_ns) / 1e9)
            ws.append((ld.end_ns - ld.start_ns) / 1e9)
            ls.append(np.full(len(ld), i, np.int32))
            cs.append(rect_classes(ld.name, ld.kind, name_class))
        if xs:
            self._x, self._w, self._lane, self._cls = (np.concatenate(a) for a in (xs, ws, ls, cs))
        else:
            self._x = self._w = np.zeros(0)
            self._lane, self._cls = np.zeros(0, np.int32), np.zeros(0, np.uint8)
        self._pad = np.array([LANE_PAD if lane.kind != "host" else 0.3 for lane in self.lanes] or [LANE_PAD])

    def _vector_arrays(self) -> list[tuple[QtGui.QBrush, QtGui.QPen, PrimitiveArray]]:
        """Rectangles batched by colour class (built once per fetch; used when few enough to draw)."""
        if self._arrays or not len(self._x):
            return self._arrays
        min_w = self._key[2] / 1e9  # one pixel, so sub-pixel kernels still show
        pad = self._pad[self._lane]
        x, y, w, h, c = self._x, self._lane + pad, np.maximum(self._w, min_w), 1 - 2 * pad, self._cls
        for cls in np.unique(c):
            m = c == cls
            pen = self._pens[cls] if m.sum() < 4000 else QtGui.QPen(QtCore.Qt.PenStyle.NoPen)
            self._arrays.append((self._brushes[cls], pen, _rect_array(x[m], y[m], w[m], h[m])))
        return self._arrays

    def _rasterize(self, res_s: float) -> tuple[float, float, QtGui.QImage]:
        """One pixel row per lane, one column per ``res_s`` over the fetched window: each column's colour is
        the coverage-weighted mix of the classes drawn there, its alpha the covered fraction (a kernel is at
        least one column wide, as in the vector path). O(rectangles + pixels) with numpy, no Python loop per
        rectangle; drawing it is one scaled image row per lane, whatever the number of kernels."""
        k0 = self._key[0]
        org = (k0 - self.model.t0_ns) / 1e9
        ncols = int(np.ceil((self._key[1] - k0) / 1e9 / res_s)) + 1
        n_lanes = max(len(self.lanes), 1)
        n_cls = len(CLASS_COLORS)
        a = np.clip((self._x - org) / res_s, 0.0, ncols - 1e-6)
        b = np.clip(a + np.maximum(self._w / res_s, 1.0), 0.0, ncols - 1e-6)
        fa = a.astype(np.int64)
        fb = b.astype(np.int64)
        row = (self._lane.astype(np.int64) * n_cls + self._cls) * (ncols + 2)
        size = n_lanes * n_cls * (ncols + 2)
        # Zoomed out, nearly every rectangle falls inside one column: one bincount covers them; the few
        # spanning several columns add their last partial column and a +1/-1 run for the full ones.
        cov = np.bincount(row + fa, np.minimum(b, fa + 1) - a, size)
        multi = np.flatnonzero(fb > fa)
        if len(multi):
            cov += np.bincount(row[multi] + fb[multi], b[multi] - fb[multi], size)
            run = multi[fb[multi] > fa[multi] + 1]
            if len(run):
                diff = np.bincount(row[run] + fa[run] + 1, None, size) - np.bincount(
                    row[run] + fb[run], None, size
                )
                cov += np.cumsum(diff.reshape(-1, ncols + 2), axis=1).ravel()
        cov = cov.reshape(n_lanes, n_cls, ncols + 2)[:, :, :ncols]
        total = cov.sum(axis=1)  # (lanes, cols)
        scale = 1.0 / np.maximum(total, 1.0)
        rgb = np.matmul(cov.transpose(0, 2, 1), self._class_rgb) * scale[:, :, None]
        img = np.empty((n_lanes, ncols, 4), np.uint8)  # BGRA = ARGB32 premultiplied on little endian
        img[:, :, 0] = rgb[:, :, 2]
        img[:, :, 1] = rgb[:, :, 1]
        img[:, :, 2] = rgb[:, :, 0]
        img[:, :, 3] = np.minimum(total, 1.0) * 255
        qimg = QtGui.QImage(
            img.data, ncols, n_lanes, ncols * 4, QtGui.QImage.Format.Format_ARGB32_Premultiplied
        ).copy()
        return org, res_s, qimg

    def rect_count(self) -> int:
        return len(self._x)

    def sharpen_now(self) -> None:
        """Rasterise at the current pixel size now (before a screenshot/export; the timer does it otherwise)."""
        self._sharpen.stop()
        vb = self.getViewBox()
        if vb is None or not self.uses_raster() or self._key is None:
            return
        (x0, x1), _ = vb.viewRange()
        res_s = (x1 - x0) / max(vb.width(), 1.0)
        if self._raster is None or abs(self._raster[1] - res_s) > 1e-6 * res_s:
            self._raster = self._rasterize(res_s)
            self.update()

    def uses_raster(self) -> bool:
        return len(self._x) > RASTER_MIN_RECTS

    # ---------------------------------------------------------------- paint

    def paint(self, p: QtGui.QPainter, *args) -> None:
        self.ensure_data()
        vb = self.getViewBox()
        (x0, x1), _ = vb.viewRange() if vb is not None else ((0.0, self.span_s()), None)
        p.setPen(QtCore.Qt.PenStyle.NoPen)
        band = pg.mkBrush(BAND_BG)
        hl = pg.mkBrush(HIGHLIGHT_BG)
        for i, lane in enumerate(self.lanes):
            if lane.rank in self.highlight_ranks:
                p.fillRect(QtCore.QRectF(x0, i, x1 - x0, 1.0), hl)
            elif i % 2 == 1:
                p.fillRect(QtCore.QRectF(x0, i, x1 - x0, 1.0), band)
        if not len(self._x):
            return
        if not self.uses_raster():
            for brush, pen, arr in self._vector_arrays():
                p.setBrush(brush)
                p.setPen(pen)
                p.drawRects(*arr.drawargs())
            return
        res_s = (x1 - x0) / max(vb.width(), 1.0) if vb is not None else self._key[2] / 1e9
        # Panning keeps the width, so the raster of the whole fetched window is reused (only the visible
        # columns are blitted). A zoom first shows the previous raster scaled (it is placed in data
        # coordinates, so it lands right) and rasterises again at the new pixel size once the wheel rests.
        if self._raster is None or not 0.5 <= self._raster[1] / res_s <= 2.0:
            self._raster = self._rasterize(res_s)
        elif abs(self._raster[1] - res_s) > 1e-6 * res_s:
            self._sharpen.start()
        org, rs, img = self._raster
        c0 = max(int((x0 - org) / rs) - 1, 0)
        c1 = min(int((x1 - org) / rs) + 2, img.width())
        if c1 <= c0:
            return
        p.setRenderHint(QtGui.QPainter.RenderHint.SmoothPixmapTransform, False)
        for i in range(len(self.lanes)):
            pad = float(self._pad[i])
            p.drawImage(
                QtCore.QRectF(org + c0 * rs, i + pad, (c1 - c0) * rs, 1 - 2 * pad),
                img,
                QtCore.QRectF(c0, i, c1 - c0, 1),
            )

    # ---------------------------------------------------------------- hit test

    def hit(self, x_s: float, y: float, tol_s: float) -> tuple[int, int] | None:
        """(lane, rectangle) under a point (data coords), the shortest one when several overlap."""
        lane = int(np.floor(y))
        if not 0 <= lane < len(self.data):
            return None
        ld = self.data[lane]
        if not len(ld):
            return None
        t = self.model.t0_ns + x_s * 1e9
        tol = tol_s * 1e9
        m = np.flatnonzero((ld.start_ns - tol <= t) & (ld.end_ns + tol >= t))
        if len(m) == 0:
            return None
        dur = ld.end_ns[m] - ld.start_ns[m]
        return lane, int(m[np.argmin(dur)])


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
        span = max((self.model.t1_ns - self.model.t0_ns) / 1e9, 1e-9)
        return QtCore.QRectF(0.0, 0.0, span, float(self.n_lanes))

    def visible_rects(self) -> tuple[np.ndarray, ...]:
        """(x, lane, width, role, px) of the anomaly outlines around the view, merged per pixel.

        Computed for the view plus one width on each side and reused while a pan stays inside that and the
        pixel size is unchanged, so panning costs no per-anomaly work (a zoomed-out view can hold 10^5)."""
        a = self.model.anomalies
        if not len(a["start_ns"]):
            return (np.zeros(0),) * 5
        vb = self.getViewBox()
        (x0, x1), _ = vb.viewRange()
        px = (x1 - x0) / max(vb.width(), 1.0)
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
        for mask, brush in (
            (sym & ~wide, QtGui.QBrush(QtGui.QColor(SYMPTOM_COLOR), QtCore.Qt.BrushStyle.BDiagPattern)),
            (sym & wide, QtGui.QBrush(QtGui.QColor(255, 176, 0, 70))),
        ):
            if mask.any():
                p.setPen(pg.mkPen(SYMPTOM_COLOR, width=1))
                p.setBrush(brush)
                rects = _rect_array(x[mask], y[mask], w[mask], h[mask])  # alive while drawn: drawargs
                p.drawRects(*rects.drawargs())  # hands Qt a raw pointer into its buffer
        root = role == ROLE_ROOT
        if root.any():
            p.setPen(pg.mkPen(ROOT_COLOR, width=2))
            p.setBrush(QtGui.QBrush(QtGui.QColor(214, 39, 40, 45)))
            rects = _rect_array(x[root], y[root], w[root], h[root])
            p.drawRects(*rects.drawargs())


class SelectionItem(pg.GraphicsObject):
    """The selected event: a thick dark outline."""

    def __init__(self):
        super().__init__()
        self.rect: QtCore.QRectF | None = None

    def set_rect(self, rect: QtCore.QRectF | None) -> None:
        self.prepareGeometryChange()
        self.rect = rect
        self.update()

    def boundingRect(self) -> QtCore.QRectF:
        return self.rect.adjusted(-1, -0.1, 1, 0.1) if self.rect is not None else QtCore.QRectF()

    def paint(self, p: QtGui.QPainter, *args) -> None:
        if self.rect is None:
            return
        vb = self.getViewBox()
        px = 0.0
        if vb is not None:
            (x0, x1), _ = vb.viewRange()
            px = (x1 - x0) / max(vb.width(), 1.0)
        r = QtCore.QRectF(self.rect)
        if r.width() < 4 * px:
            r.adjust(-(4 * px - r.width()) / 2, 0, (4 * px - r.width()) / 2, 0)
        p.setPen(pg.mkPen(SELECT_COLOR, width=2.5))
        p.setBrush(QtCore.Qt.BrushStyle.NoBrush)
        p.drawRect(r)


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
        for i, lane in enumerate(self.lanes):
            top = self.mapFromScene(vb.mapViewToScene(QtCore.QPointF(0, i))).y()
            bot = self.mapFromScene(vb.mapViewToScene(QtCore.QPointF(0, i + 1))).y()
            if bot < 0 or top > self.height():
                continue
            alert = lane.rank in self.alert_ranks and lane.kind == "rank"
            font = bold if alert else base
            p.setFont(font)
            p.setPen(pg.mkPen(ROOT_COLOR if alert else ("#222222" if lane.kind == "rank" else "#666666")))
            text = ("⚠ " + lane.label) if alert else lane.label
            text = QtGui.QFontMetrics(font).elidedText(text, QtCore.Qt.TextElideMode.ElideMiddle, int(width))
            rect = QtCore.QRectF(2, min(top, bot), width, abs(bot - top))
            p.drawText(
                rect, int(QtCore.Qt.AlignmentFlag.AlignRight | QtCore.Qt.AlignmentFlag.AlignVCenter), text
            )


class OverviewItem(pg.GraphicsObject):
    """Whole-run strip: finding windows shaded, every anomaly a tick (red root, amber symptom)."""

    def __init__(self, model: RunModel):
        super().__init__()
        self.model = model

    def boundingRect(self) -> QtCore.QRectF:
        span = max((self.model.t1_ns - self.model.t0_ns) / 1e9, 1e-9)
        return QtCore.QRectF(0.0, 0.0, span, 1.0)

    def paint(self, p: QtGui.QPainter, *args) -> None:
        m = self.model
        vb = self.getViewBox()
        px = 1e-9
        if vb is not None:
            (x0, x1), _ = vb.viewRange()
            px = (x1 - x0) / max(vb.width(), 1.0)
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
        x = (a["start_ns"] - m.t0_ns) / 1e9
        for role, color, y0, h in (
            (ROLE_SYMPTOM, SYMPTOM_COLOR, 0.5, 0.5),
            (ROLE_ROOT, ROOT_COLOR, 0.0, 0.55),
        ):
            sel = a["role"] == role
            if not sel.any():
                continue
            # One tick per pixel column is enough: dedupe by pixel so a million anomalies still draw fast.
            cols = np.unique(np.floor(x[sel] / px))
            p.setBrush(pg.mkBrush(color))
            rects = _rect_array(
                cols * px, np.full(len(cols), y0), np.full(len(cols), 2 * px), np.full(len(cols), h)
            )
            p.drawRects(*rects.drawargs())  # ``rects`` kept alive: drawargs is a raw pointer into it


NOTE_COLOR = "#1F6FEB"


class NotesItem(pg.GraphicsObject):
    """The run's notes on the lanes: a translucent blue band over a time/kernel note's range (its rank's
    lanes only when it names a rank, else every lane) with the note's first line as a label, and rank notes
    as a label at the left edge of the rank's lane. Labels are plain text (drawText), never rich text."""

    def __init__(self, model: RunModel):
        super().__init__()
        self.model = model
        self.lanes: list[Lane] = []
        self.notes: list = []
        self.selected_id: int | None = None

    def set_lanes(self, lanes: list[Lane]) -> None:
        self.prepareGeometryChange()
        self.lanes = lanes
        self.update()

    def set_notes(self, notes: list) -> None:
        self.notes = list(notes)
        self.update()

    def boundingRect(self) -> QtCore.QRectF:
        span = max((self.model.t1_ns - self.model.t0_ns) / 1e9, 1e-9)
        return QtCore.QRectF(-0.05 * span, 0.0, 1.1 * span, float(max(len(self.lanes), 1)))

    def _rows(self, note) -> list[int]:
        rank = note.rank
        if rank is None and note.track is not None:
            rank = self.model.rank_of_track(note.track)
        if rank is None:
            return list(range(len(self.lanes)))
        return [i for i, lane in enumerate(self.lanes) if lane.rank == rank]

    def paint(self, p: QtGui.QPainter, *args) -> None:
        if not self.notes or not self.lanes:
            return
        vb = self.getViewBox()
        if vb is None:
            return
        (x0, x1), _ = vb.viewRange()
        px = (x1 - x0) / max(vb.width(), 1.0)
        tr = p.transform()
        labels: list[tuple[QtCore.QPointF, str, bool]] = []
        color = QtGui.QColor(NOTE_COLOR)
        for note in self.notes:
            rows = self._rows(note)
            if not rows:
                continue
            sel = note.id == self.selected_id
            first = note.text.strip().splitlines()[0] if note.text.strip() else "(empty note)"
            label = f"✎ {first[:60]}"
            if note.start_ns is not None:
                a = (note.start_ns - self.model.t0_ns) / 1e9
                b = ((note.end_ns if note.end_ns is not None else note.start_ns) - self.model.t0_ns) / 1e9
                if b < x0 or a > x1:
                    continue
                w = max(b - a, 2 * px)
                fill = QtGui.QColor(color)
                fill.setAlpha(70 if sel else 38)
                p.setPen(pg.mkPen(color, width=2 if sel else 1))
                p.setBrush(QtGui.QBrush(fill))
                for lo, hi in _runs(rows):
                    p.drawRect(QtCore.QRectF(a, lo + 0.01, w, hi - lo + 0.98))
                labels.append((tr.map(QtCore.QPointF(max(a, x0), rows[0] + 0.02)), label, sel))
            elif note.target in ("rank", "component"):
                labels.append((tr.map(QtCore.QPointF(x0, rows[0] + 0.02)), label, sel))
        # Labels in device pixels: the data transform would stretch text.
        p.save()
        p.resetTransform()
        font = QtGui.QFont()
        font.setPointSizeF(8.5)
        p.setFont(font)
        fm = QtGui.QFontMetrics(font)
        for pt, text, sel in labels:
            text = fm.elidedText(text, QtCore.Qt.TextElideMode.ElideRight, 320)
            r = QtCore.QRectF(pt.x() + 2, pt.y() + 1, fm.horizontalAdvance(text) + 8, fm.height() + 2)
            p.setPen(QtCore.Qt.PenStyle.NoPen)
            p.setBrush(QtGui.QColor(NOTE_COLOR if sel else "#E8F0FE"))
            p.drawRoundedRect(r, 3, 3)
            p.setPen(QtGui.QColor("#FFFFFF" if sel else NOTE_COLOR))
            p.drawText(r.adjusted(4, 0, 0, 0), int(QtCore.Qt.AlignmentFlag.AlignVCenter), text)
        p.restore()


def _runs(rows: list[int]) -> list[tuple[int, int]]:
    """Consecutive row numbers grouped: [0, 1, 2, 5] -> [(0, 2), (5, 5)]."""
    out: list[tuple[int, int]] = []
    for r in rows:
        if out and r == out[-1][1] + 1:
            out[-1] = (out[-1][0], r)
        else:
            out.append((r, r))
    return out


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
        self.selected: tuple[int, int] | None = None
        self._anomaly_pos = -1
        self._order = self._anomaly_order()

        lay = QtWidgets.QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.setSpacing(0)

        self.overview = pg.PlotWidget(background="w")
        self.overview.setFixedHeight(56)
        ov = self.overview.getPlotItem()
        ov.hideAxis("left")
        ov.hideAxis("bottom")
        ov.setMenuEnabled(False)
        ov.hideButtons()
        ov.getViewBox().setMouseEnabled(x=False, y=False)
        ov.getViewBox().setYRange(0, 1, padding=0)
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
        self.plot = pg.PlotWidget(background="w", axisItems={"left": self.axis})
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
        lay.addWidget(self.plot, 1)
        lay.addWidget(self._legend())

        self.vb.sigXRangeChanged.connect(self._on_range)
        self.region.sigRegionChanged.connect(self._on_region)
        self.plot.scene().sigMouseMoved.connect(self._on_hover)
        self.plot.scene().sigMouseClicked.connect(self._on_click)
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
        """Finish deferred drawing now (a crisp raster at the current zoom) before a screenshot or export."""
        self.lanes_item.sharpen_now()

    # ---------------------------------------------------------------- lanes

    def _legend(self) -> QtWidgets.QWidget:
        w = QtWidgets.QWidget()
        h = QtWidgets.QHBoxLayout(w)
        h.setContentsMargins(6, 2, 6, 2)
        items = [(CLASS_NAMES[i], CLASS_COLORS[i], "fill") for i in range(5)]
        items += [
            ("root anomaly", ROOT_COLOR, "outline"),
            ("symptom (waits on a root)", SYMPTOM_COLOR, "hatch"),
        ]
        for name, color, style in items:
            sw = QtWidgets.QLabel()
            pm = QtGui.QPixmap(14, 10)
            pm.fill(QtGui.QColor("white"))
            pt = QtGui.QPainter(pm)
            if style == "fill":
                pt.fillRect(0, 0, 14, 10, QtGui.QColor(color))
            elif style == "outline":
                pt.setPen(QtGui.QPen(QtGui.QColor(color), 2))
                pt.drawRect(1, 1, 12, 8)
            else:
                pt.fillRect(
                    0, 0, 14, 10, QtGui.QBrush(QtGui.QColor(color), QtCore.Qt.BrushStyle.BDiagPattern)
                )
                pt.setPen(QtGui.QPen(QtGui.QColor(color), 1))
                pt.drawRect(0, 0, 13, 9)
            pt.end()
            sw.setPixmap(pm)
            h.addWidget(sw)
            lab = QtWidgets.QLabel(name)
            lab.setStyleSheet("color:#333")
            h.addWidget(lab)
            h.addSpacing(10)
        keys = QtWidgets.QLabel(
            "wheel/W/S zoom · drag/A/D pan · F fit · Z zoom to selection · N/P next/prev anomaly"
        )
        keys.setStyleSheet("color:#777")
        # The key hints give way (clipped) before the legend forces the window wider.
        keys.setSizePolicy(QtWidgets.QSizePolicy.Policy.Ignored, QtWidgets.QSizePolicy.Policy.Preferred)
        keys.setAlignment(QtCore.Qt.AlignmentFlag.AlignRight | QtCore.Qt.AlignmentFlag.AlignVCenter)
        h.addWidget(keys, 1)
        return w

    def rebuild_lanes(self) -> None:
        self.lanes = self.model.lanes(self.expanded, self.rank_filter)
        self.lanes_item.set_lanes(self.lanes)
        self.anomaly_item.set_lanes(self.lanes)
        self.notes_item.set_lanes(self.lanes)
        self.axis.set_lanes(self.lanes)
        self.vb.setLimits(yMin=-0.2, yMax=max(len(self.lanes), 1) + 0.2)
        self.vb.setYRange(0, max(len(self.lanes), 1), padding=0)
        self._place_selection()

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
        return max((self.model.t1_ns - self.model.t0_ns) / 1e9, 1e-9)

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
        self.overview.getPlotItem().getViewBox().setXRange(0, self._span_s(), padding=0.01)

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
        self.zoom_ns(s, e, margin=4.0)
        self.select(int(a["track"][row]), int(a["index"][row]))

    def step_anomaly(self, direction: int) -> None:
        """N/P: the next/previous root anomaly in time (all anomalies when there are no roots)."""
        if not len(self._order):
            return
        self._anomaly_pos = (self._anomaly_pos + direction) % len(self._order)
        self.goto_anomaly(int(self._order[self._anomaly_pos]))

    # ---------------------------------------------------------------- selection, hover

    def select(self, track: int, index: int) -> None:
        self.selected = (int(track), int(index))
        self._place_selection()
        self.eventSelected.emit(int(track), int(index))

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
        try:
            ev = self.model.event(track, index)
        except (IndexError, ValueError):
            self.selection_item.set_rect(None)
            return
        x = (int(ev["start_ns"]) - self.model.t0_ns) / 1e9
        w = (int(ev["end_ns"]) - int(ev["start_ns"])) / 1e9
        self.selection_item.set_rect(QtCore.QRectF(x, lane + 0.02, w, 0.96))

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
        if hit is None:
            QtWidgets.QToolTip.hideText()
            return
        view = self.plot
        gp = view.mapToGlobal(view.mapFromScene(pos))
        QtWidgets.QToolTip.showText(gp, self.tooltip_text(*hit), view)

    def _on_click(self, ev) -> None:
        if ev.button() != QtCore.Qt.MouseButton.LeftButton:
            return
        pos = ev.scenePos()
        # A click on a rank label toggles that rank's streams.
        if self.axis.sceneBoundingRect().contains(pos):
            y = self.vb.mapSceneToView(pos).y()
            i = int(np.floor(y))
            if 0 <= i < len(self.lanes):
                self.toggle_expand(self.lanes[i].rank)
            return
        hit = self._hit_at_scene(pos)
        if hit is None:
            return
        lane, i = hit
        ld = self.lanes_item.data[lane]
        if int(ld.index[i]) < 0:
            self.zoom_ns(int(ld.start_ns[i]), int(ld.end_ns[i]), margin=0.05)
            return
        self.select(int(ld.track[i]), int(ld.index[i]))

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
        }
        fn = actions.get(key)
        if fn is None:
            return False
        fn()
        return True
