"""Every lane's kernels, copies and host calls: one GraphicsObject for all lanes of the timeline.

Draws, per lane (y row ``i`` spans ``[i, i + 1)``, x in seconds since the run start; see ``timeline_paint``),
the rectangles the store returns for the visible window, coloured by kernel class (``kernel_classes``), on
alternating grey bands (implicated ranks' lanes in light red; a host's header or summary lane in light
blue-grey under a rule, ``host_lanes``). A collapsed host's summary lane is one lane of all its ranks' GPU
tracks: the raster's column alpha saturates at full coverage, so it shows the union of their activity, in
the same pass as every other lane (no extra work per rank). Only the lanes in view are painted. The store answers a window at a resolution
with raw events or level-of-detail rectangles (merged runs, ``index < 0``), O(pixels) either way.

Caching, from the store to the screen:

* **Query** (on the run's store thread, never in ``paint``): the window asked of the store is the view plus
  ``PREFETCH`` view widths on each side, at one pixel's duration (``res_ns``). A paint whose view is not
  covered by the shown answer (or is 2x finer or coarser) asks for it (``fetch_lanes`` on the store thread,
  through ``async_reads.Deliver``) and meanwhile draws what it has: the previous answer where it overlaps
  the view (coarser or finer), empty lanes elsewhere. The answer is swapped in and drawn when it arrives;
  a newer request makes an older one stop between lanes. Small pans and zooms cost no query.
* **Vector path** (up to ``RASTER_MIN_RECTS`` rectangles): rectangles batched by colour class, built once
  per answer, drawn with one ``drawRects`` call per class; every rectangle is at least one pixel wide.
* **Raster path** (more rectangles): one image row per lane, one column per pixel of the query window,
  each column the coverage-weighted colour mix (numpy, no Python loop per rectangle), made on the store
  thread with the answer. Pans blit the visible columns of the same image; a zoom shows the previous image
  scaled and re-rasterises at the new pixel size on the store thread ``SHARPEN_MS`` after the wheel rests
  (``sharpen_now`` does it at once, for screenshots; ``fetch_now`` waits for a pending answer).
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future
from functools import partial

import numpy as np
import pyqtgraph as pg
from pyqtgraph.Qt.internals import PrimitiveArray
from PySide6 import QtCore, QtGui

from kat_gui.ui.async_reads import Deliver
from kat_gui.ui.host_lanes import HEADER, SUMMARY
from kat_gui.ui.kernel_classes import CLASS_COLORS, rect_classes
from kat_gui.ui.run_model import Lane, RunModel
from kat_gui.ui.timeline_paint import BAND_BG, HIGHLIGHT_BG, HOST_BG, HOST_RULE, pixel_s, rect_array, span_s

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


Key = tuple[int, int, int]  # (t0_ns, t1_ns, resolution_ns) of a window query


class Fetched:
    """One window query's answer for every lane, made on the store thread and read-only once delivered:
    per lane its ``LaneData``, the rectangles of all lanes as flat columns (x and width in seconds, lane row,
    colour class), each lane's padding, and the raster (``None`` when drawn as vectors)."""

    __slots__ = ("key", "gen", "data", "x", "w", "lane", "cls", "pad", "raster")

    def __init__(self, key: Key, gen: int, data, x, w, lane, cls, pad, raster):
        self.key, self.gen, self.data = key, gen, data
        self.x, self.w, self.lane, self.cls, self.pad, self.raster = x, w, lane, cls, pad, raster


def rasterize(
    x: np.ndarray,
    w: np.ndarray,
    lane: np.ndarray,
    cls: np.ndarray,
    key: Key,
    t0_ns: int,
    n_lanes: int,
    class_rgb: np.ndarray,
    res_s: float,
) -> tuple[float, float, QtGui.QImage]:
    """One pixel row per lane, one column per ``res_s`` over the query window ``key``: each column's colour is
    the coverage-weighted mix of the classes drawn there, its alpha the covered fraction (a kernel is at least
    one column wide, as in the vector path). O(rectangles + pixels) with numpy, no Python loop per rectangle;
    drawing it is one scaled image row per lane, whatever the number of kernels. Returns (x origin in
    seconds, seconds per column, image); safe on any thread (a QImage, not a pixmap)."""
    k0 = key[0]
    org = (k0 - t0_ns) / 1e9
    ncols = int(np.ceil((key[1] - k0) / 1e9 / res_s)) + 1
    n_lanes = max(n_lanes, 1)
    n_cls = len(CLASS_COLORS)
    a = np.clip((x - org) / res_s, 0.0, ncols - 1e-6)
    b = np.clip(a + np.maximum(w / res_s, 1.0), 0.0, ncols - 1e-6)
    fa = a.astype(np.int64)
    fb = b.astype(np.int64)
    row = (lane.astype(np.int64) * n_cls + cls) * (ncols + 2)
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
    rgb = np.matmul(cov.transpose(0, 2, 1), class_rgb) * scale[:, :, None]
    img = np.empty((n_lanes, ncols, 4), np.uint8)  # BGRA = ARGB32 premultiplied on little endian
    img[:, :, 0] = rgb[:, :, 2]
    img[:, :, 1] = rgb[:, :, 1]
    img[:, :, 2] = rgb[:, :, 0]
    img[:, :, 3] = np.minimum(total, 1.0) * 255
    qimg = QtGui.QImage(
        img.data, ncols, n_lanes, ncols * 4, QtGui.QImage.Format.Format_ARGB32_Premultiplied
    ).copy()
    return org, res_s, qimg


def fetch_lanes(
    model: RunModel,
    lanes: list[tuple[np.ndarray, str]],
    key: Key,
    gen: int,
    raster_res_s: float,
    class_rgb: np.ndarray,
    stale: Callable[[], bool],
) -> Fetched | None:
    """The store's answer for ``lanes`` ((track ids, kind) per lane) over ``key``, ready to draw: runs on
    the run's store thread. None when ``stale()`` turns true between lanes (a newer request replaced it)."""
    t0, t1, res = key
    data, xs, ls, ws, cs = [], [], [], [], []
    name_class = model.name_class
    for i, (tracks, _kind) in enumerate(lanes):
        if stale():
            return None
        if not len(tracks):  # a host's header lane
            data.append(LaneData([]))
            continue
        wins = model.window(tracks, t0, t1, res)
        ld = LaneData([wins[int(t)] for t in tracks if int(t) in wins])
        data.append(ld)
        if not len(ld):
            continue
        xs.append((ld.start_ns - model.t0_ns) / 1e9)
        ws.append((ld.end_ns - ld.start_ns) / 1e9)
        ls.append(np.full(len(ld), i, np.int32))
        cs.append(rect_classes(ld.name, ld.kind, name_class))
    if xs:
        x, w, lane, cls = (np.concatenate(a) for a in (xs, ws, ls, cs))
    else:
        x = w = np.zeros(0)
        lane, cls = np.zeros(0, np.int32), np.zeros(0, np.uint8)
    pad = np.array([LANE_PAD if kind != "host" else 0.3 for _t, kind in lanes] or [LANE_PAD])
    raster = None
    if len(x) > RASTER_MIN_RECTS and raster_res_s > 0:  # even when stale: it may still be shown meanwhile
        raster = rasterize(x, w, lane, cls, key, model.t0_ns, len(lanes), class_rgb, raster_res_s)
    return Fetched(key, gen, data, x, w, lane, cls, pad, raster)


class LanesItem(pg.GraphicsObject):
    """Every lane's rectangles, fetched per view window on the store thread and drawn batched by colour."""

    def __init__(self, model: RunModel):
        super().__init__()
        self.model = model
        self.lanes: list[Lane] = []
        self.highlight_ranks: set[int] = set()
        self.data: list[LaneData] = []
        self._key: Key | None = None  # query window of the answer shown
        self._gen = 0  # lane set generation (set_lanes); an answer for an older lane set is not drawn
        self._data_gen = -1
        self._arrays: list[tuple[QtGui.QBrush, QtGui.QPen, PrimitiveArray]] = []
        self._raster: tuple[float, float, QtGui.QImage] | None = None
        self._x = self._w = np.zeros(0)
        self._lane, self._cls = np.zeros(0, np.int32), np.zeros(0, np.uint8)
        self._pad = np.array([LANE_PAD])
        self._class_rgb = np.array([QtGui.QColor(c).getRgb()[:3] for c in CLASS_COLORS], float)
        self._sharpen = QtCore.QTimer()
        self._sharpen.setSingleShot(True)
        self._sharpen.setInterval(SHARPEN_MS)
        self._sharpen.timeout.connect(self._sharpen_async)
        self._deliver = Deliver(self)
        self._serial = 0  # requests made; the newest one is ``_token[0]``
        self._token = [0]  # read by the store thread: an older request stops when it changes
        self._applied = 0  # serial of the answer shown
        self._pending: tuple[Key, int, int] | None = (
            None  # (key, gen, serial) of the newest request in flight
        )
        self._future: Future | None = None
        self._failed: tuple[Key, int] | None = None  # a query that raised: not asked again for the same view
        self.error = ""  # the last query's error, if it failed
        self.queries = 0  # number of store queries (benchmarks and tests read it)
        self._brushes = [pg.mkBrush(c) for c in CLASS_COLORS]
        self._pens = [pg.mkPen(QtGui.QColor(c).darker(140), width=0) for c in CLASS_COLORS]

    def set_lanes(self, lanes: list[Lane]) -> None:
        self.prepareGeometryChange()
        self.lanes = lanes
        self._gen += 1
        self._key = None
        self._failed = None
        self.update()

    def boundingRect(self) -> QtCore.QRectF:
        return QtCore.QRectF(0.0, 0.0, span_s(self.model), float(max(len(self.lanes), 1)))

    # ---------------------------------------------------------------- data

    def _needed(self) -> Key | None:
        vb = self.getViewBox()
        if vb is None:
            return None
        (x0, x1), _ = vb.viewRange()
        px = max(vb.width(), 1.0)
        res_ns = max(1, int((x1 - x0) * 1e9 / px))
        t0 = self.model.t0_ns + int(x0 * 1e9)
        t1 = self.model.t0_ns + int(x1 * 1e9) + 1
        return t0, t1, res_ns

    def _covers(self, key: Key | None, gen: int, need: Key) -> bool:
        """Whether an answer for ``key`` serves the view ``need``: inside its window, and at most 2x coarser or
        finer than a pixel (LOD rectangles merge gaps below their width, so a 2x-coarse level hides gaps of
        under 2 px, which nobody can see)."""
        if key is None or gen != self._gen:
            return False
        k0, k1, kres = key
        t0, t1, res = need
        return k0 <= t0 and t1 <= k1 and kres / 2 <= res < 2 * kres

    def ensure_data(self) -> None:
        """Ask the store thread for the view's window when the shown answer does not cover it and no request
        in flight will; never reads the store here (paint calls it)."""
        need = self._needed()
        if need is None or self._covers(self._key, self._data_gen, need):
            return
        if self._pending is not None and self._covers(self._pending[0], self._pending[1], need):
            return
        if self._failed is not None and self._covers(self._failed[0], self._failed[1], need):
            return
        t0, t1, res = need
        width = t1 - t0
        self._request((t0 - int(PREFETCH * width), t1 + int(PREFETCH * width), res))

    def _request(self, key: Key) -> None:
        self._serial += 1
        serial = self._serial
        self._token[0] = serial
        if self._future is not None:
            self._future.cancel()  # not started yet: dropped; running: stops at its next lane (stale)
        gen = self._gen
        self._pending = (key, gen, serial)
        self.queries += 1
        vb = self.getViewBox()
        token = self._token
        fn = partial(
            fetch_lanes,
            self.model,
            [(lane.tracks, lane.kind) for lane in self.lanes],
            key,
            gen,
            pixel_s(vb) if vb is not None else key[2] / 1e9,
            self._class_rgb,
            lambda: token[0] != serial,
        )
        self._future = self._deliver.submit(self.model, fn, lambda f: self._arrived(f, key, gen, serial))
        if self._future is None:  # the run is closed
            self._pending = None

    def _arrived(self, fut: Future, key: Key, gen: int, serial: int) -> None:
        """An answer (on the GUI thread): shown unless it is older than the one shown or for other lanes."""
        if self._pending is not None and self._pending[2] == serial:
            self._pending = None
            self._future = None
        if fut.cancelled() or serial <= self._applied:
            return
        try:
            res = fut.result()
        except Exception as exc:  # keep drawing what we have; do not ask again for this view
            self.error = f"{type(exc).__name__}: {exc}"
            self._failed = (key, gen)
            return
        if res is None or res.gen != self._gen:
            return
        self._applied = serial
        self._key, self._data_gen, self.data = res.key, res.gen, res.data
        self._x, self._w, self._lane, self._cls, self._pad = res.x, res.w, res.lane, res.cls, res.pad
        self._raster = res.raster
        self._arrays = []
        self.error = ""
        self.update()

    def fetch_now(self, timeout_s: float = 60.0) -> None:
        """Wait for the view's window (asking for it when needed) and show it: before a screenshot or an
        export, and in tests. Blocks the GUI thread; interactive drawing never calls it."""
        for _ in range(3):  # a request may be replaced once by a newer view; never loop forever
            need = self._needed()
            if need is None or self._covers(self._key, self._data_gen, need):
                return
            self.ensure_data()
            fut, pending = self._future, self._pending
            if fut is None or pending is None:
                return
            try:
                fut.result(timeout_s)
            except Exception:
                pass
            if not fut.done():
                return
            self._arrived(fut, pending[0], pending[1], pending[2])

    def _vector_arrays(self) -> list[tuple[QtGui.QBrush, QtGui.QPen, PrimitiveArray]]:
        """Rectangles batched by colour class (built once per answer; used when few enough to draw)."""
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
        return rasterize(
            self._x, self._w, self._lane, self._cls, self._key, self.model.t0_ns, len(self.lanes),
            self._class_rgb, res_s,
        )  # fmt: skip

    def rect_count(self) -> int:
        return len(self._x)

    def _sharp_res(self) -> float | None:
        """The pixel size to re-rasterise at, or None when the raster is sharp (or a new answer will bring
        one: the view's pixel is over 2x off the shown answer's)."""
        vb = self.getViewBox()
        if vb is None or not self.uses_raster() or self._key is None or self._data_gen != self._gen:
            return None
        res_s = pixel_s(vb)
        if not 0.5 <= (self._key[2] / 1e9) / res_s <= 2.0:
            return None
        if self._raster is not None and abs(self._raster[1] - res_s) <= 1e-6 * res_s:
            return None
        return res_s

    def sharpen_now(self) -> None:
        """Rasterise at the current pixel size now (before a screenshot/export; the timer does it on the
        store thread otherwise)."""
        self._sharpen.stop()
        res_s = self._sharp_res()
        if res_s is not None:
            self._raster = self._rasterize(res_s)
            self.update()

    def _sharpen_async(self) -> None:
        res_s = self._sharp_res()
        if res_s is None:
            return
        applied = self._applied
        fn = partial(
            rasterize, self._x, self._w, self._lane, self._cls, self._key, self.model.t0_ns, len(self.lanes),
            self._class_rgb, res_s,
        )  # fmt: skip

        def done(fut: Future) -> None:
            if fut.cancelled() or fut.exception() is not None or self._applied != applied:
                return
            self._raster = fut.result()
            self.update()

        self._deliver.submit(self.model, fn, done)

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
        host = pg.mkBrush(HOST_BG)
        first, last = self._rows_in_view()
        rules = []
        for i in range(first, last):
            lane = self.lanes[i]
            if lane.kind in (HEADER, SUMMARY):
                p.fillRect(QtCore.QRectF(x0, i, x1 - x0, 1.0), host)
                rules.append(QtCore.QLineF(x0, i, x1, i))
            elif lane.rank in self.highlight_ranks:
                p.fillRect(QtCore.QRectF(x0, i, x1 - x0, 1.0), hl)
            elif i % 2 == 1:
                p.fillRect(QtCore.QRectF(x0, i, x1 - x0, 1.0), band)
        if rules:
            p.setPen(pg.mkPen(HOST_RULE, width=1))
            p.drawLines(rules)
            p.setPen(QtCore.Qt.PenStyle.NoPen)
        if not len(self._x) or self._data_gen != self._gen:
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
        # coordinates, so it lands right) and rasterises again at the new pixel size once the wheel rests,
        # on the store thread; past 2x the new answer brings its own raster.
        if self._raster is None:  # the answer came without one (fewer rectangles then): make it once
            kres = self._key[2] / 1e9
            self._raster = self._rasterize(res_s if 0.5 <= kres / res_s <= 2.0 else kres)
        elif self._sharp_res() is not None:
            self._sharpen.start()
        org, rs, img = self._raster
        c0 = max(int((x0 - org) / rs) - 1, 0)
        c1 = min(int((x1 - org) / rs) + 2, img.width())
        if c1 <= c0:
            return
        p.setRenderHint(QtGui.QPainter.RenderHint.SmoothPixmapTransform, False)
        for i in range(first, last):
            pad = float(self._pad[i])
            p.drawImage(
                QtCore.QRectF(org + c0 * rs, i + pad, (c1 - c0) * rs, 1 - 2 * pad),
                img,
                QtCore.QRectF(c0, i, c1 - c0, 1),
            )

    def _rows_in_view(self) -> tuple[int, int]:
        """[first, last) lanes at least partly in view (every lane when there is no view)."""
        vb = self.getViewBox()
        if vb is None:
            return 0, len(self.lanes)
        (_x, (y0, y1)) = vb.viewRange()
        lo, hi = sorted((y0, y1))
        return max(int(np.floor(lo)), 0), min(int(np.ceil(hi)), len(self.lanes))

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
