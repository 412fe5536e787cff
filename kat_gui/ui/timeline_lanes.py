"""Every lane's kernels, copies and host calls: one GraphicsObject for all lanes of the timeline.

Draws, per lane (y row ``i`` spans ``[i, i + 1)``, x in seconds since the run start; see ``timeline_paint``),
the rectangles the store returns for the visible window, coloured by kernel class (``kernel_classes``), on
alternating grey bands (implicated ranks' lanes in light red). The store answers a window at a resolution
with raw events or level-of-detail rectangles (merged runs, ``index < 0``), O(pixels) either way.

Caching, from the store to the screen:

* **Query**: the window asked of the store is the view plus ``PREFETCH`` view widths on each side, at one
  pixel's duration (``res_ns``); it is kept (``LaneData`` per lane) and reused while the view stays inside
  it and the pixel duration is within 2x of the query's, so small pans and zooms cost no query.
* **Vector path** (up to ``RASTER_MIN_RECTS`` rectangles): rectangles batched by colour class, built once
  per query, drawn with one ``drawRects`` call per class; every rectangle is at least one pixel wide.
* **Raster path** (more rectangles): one image row per lane, one column per pixel of the query window,
  each column the coverage-weighted colour mix (numpy, no Python loop per rectangle). Pans blit the
  visible columns of the same image; a zoom shows the previous image scaled and re-rasterises at the new
  pixel size ``SHARPEN_MS`` after the wheel rests (``sharpen_now`` does it at once, for screenshots).
"""

from __future__ import annotations

import numpy as np
import pyqtgraph as pg
from pyqtgraph.Qt.internals import PrimitiveArray
from PySide6 import QtCore, QtGui

from kat_gui.ui.kernel_classes import CLASS_COLORS, rect_classes
from kat_gui.ui.run_model import Lane, RunModel
from kat_gui.ui.timeline_paint import BAND_BG, HIGHLIGHT_BG, pixel_s, rect_array, span_s

LANE_PAD = 0.12  # fraction of a row left empty above and below the rectangles
PREFETCH = 1.0  # view widths fetched on each side, so small pans reuse the last query
RASTER_MIN_RECTS = 20_000  # above this many rectangles a lane is drawn as a numpy-rasterised image row
SHARPEN_MS = 90  # after the last zoom step, re-rasterise at the new pixel size


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

    def boundingRect(self) -> QtCore.QRectF:
        return QtCore.QRectF(0.0, 0.0, span_s(self.model), float(max(len(self.lanes), 1)))

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
            self._arrays.append((self._brushes[cls], pen, rect_array(x[m], y[m], w[m], h[m])))
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
        res_s = pixel_s(vb)
        if self._raster is None or abs(self._raster[1] - res_s) > 1e-6 * res_s:
            self._raster = self._rasterize(res_s)
            self.update()

    def uses_raster(self) -> bool:
        return len(self._x) > RASTER_MIN_RECTS

    # ---------------------------------------------------------------- paint

    def paint(self, p: QtGui.QPainter, *args) -> None:
        self.ensure_data()
        vb = self.getViewBox()
        (x0, x1), _ = vb.viewRange() if vb is not None else ((0.0, span_s(self.model)), None)
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
        res_s = pixel_s(vb) if vb is not None else self._key[2] / 1e9
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
