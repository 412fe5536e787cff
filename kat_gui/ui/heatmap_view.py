"""The rank x step overview of a large run: one row per rank (grouped by host), one column per step, coloured by
the stored per-(rank, step) signals (``detect/rank_step``): the rank's slowdown vs its peers in that step
(default; diverging: red = busier than the peers, blue = less busy) or the share of the step it waited in
collectives (switchable in the header, with a colour legend). A store analysed before those signals were stored
falls back to the anomaly table (red = root anomalies, by score; light amber = the rank only waited) and the
legend says so. Implicated rows are labelled and pinned on top; host names are printed where there is room
(never on top of each other). One ``QImage`` (numpy lookup-table colouring) blitted with one ``drawImage``, so
1,024 x 1,000 cells draw in a few ms. A click emits ``cellActivated(rank, start_ns, end_ns)`` (the step's span).
"""

from __future__ import annotations

import time

import numpy as np
from PySide6 import QtCore, QtGui, QtWidgets

from kat_gui.ui.run_model import RunModel, esc, fmt_ns
from kat_gui.ui.scale import (
    HEAT_MODES,
    NO_DATA_RGB,
    RankStepMatrix,
    heat_rgba,
    heat_scale,
    implicated_ranks,
    rank_step_matrix,
)

LABEL_W = 150
AXIS_H = 16
PIN_H = 14  # height of a pinned (implicated) row above the matrix
PIN_MAX = 6
ROOT_RED = QtGui.QColor("#B71C1C")


class HeatmapCanvas(QtWidgets.QWidget):
    # rank, start_ns, end_ns (Python ints: ns times overflow a C int)
    cellActivated = QtCore.Signal(int, object, object)

    def __init__(self, model: RunModel, matrix: RankStepMatrix, parent=None):
        super().__init__(parent)
        self.model = model
        self.matrix = matrix
        self.implicated = [r for r in implicated_ranks(model) if matrix.row_of(r) is not None]
        self.selected: tuple[int, int] | None = None  # (row, col)
        self.drawn_labels: list[tuple[float, float, str]] = []
        self.paint_ms = 0.0
        self._pinned: tuple[RankStepMatrix, list[int]] | None = None
        self.mode = matrix.modes()[0]
        self.setMouseTracking(True)
        self.setMinimumHeight(120)
        self.set_matrix(matrix)

    def set_mode(self, mode: str) -> None:
        """Colour by ``mode`` (one of ``matrix.modes()``: "slowdown", "wait" or "anomalies")."""
        if mode not in self.matrix.modes():
            raise ValueError(f"heatmap mode {mode!r} not available (have {self.matrix.modes()})")
        self.mode = mode
        self.set_matrix(self.matrix)

    def set_matrix(self, matrix: RankStepMatrix) -> None:
        self.matrix = matrix
        if self.mode not in matrix.modes():
            self.mode = matrix.modes()[0]
        pre = self.model.derived.get("heat_rgba")  # (matrix, mode, image) from the loader
        if pre is not None and pre[0] is matrix and pre[1] == self.mode:
            self._rgba = pre[2]
        else:
            self._rgba = np.ascontiguousarray(heat_rgba(matrix, self.mode))
        rows, cols = self._rgba.shape[:2]
        self._image = QtGui.QImage(
            self._rgba.data, max(cols, 1), max(rows, 1), 4 * max(cols, 1), QtGui.QImage.Format.Format_RGBA8888
        )
        self.update()

    # ------------------------------------------------------------------ geometry

    def pinned(self) -> list[int]:
        """Rows drawn again, tall, above the matrix: the implicated ranks (so a culprit among 1,024 ranks is
        never a hairline). Computed once per matrix (the geometry asks for it per row drawn)."""
        if self._pinned is None or self._pinned[0] is not self.matrix:
            self._pinned = (self.matrix, [self.matrix.row_of(r) for r in self.implicated[:PIN_MAX]])
        return self._pinned[1]

    def pin_rect(self) -> QtCore.QRectF:
        n = len(self.pinned())
        return QtCore.QRectF(LABEL_W, 2, max(self.width() - LABEL_W - 4, 1), n * PIN_H)

    def plot_rect(self) -> QtCore.QRectF:
        top = 2 + (len(self.pinned()) * PIN_H + 6 if self.pinned() else 0)
        return QtCore.QRectF(
            LABEL_W, top, max(self.width() - LABEL_W - 4, 1), max(self.height() - AXIS_H - 2 - top, 1)
        )

    def row_y(self, row: float) -> float:
        r = self.plot_rect()
        return r.top() + row * r.height() / max(len(self.matrix.ranks), 1)

    def cell_at(self, pos: QtCore.QPointF) -> tuple[int, int] | None:
        rows, cols = self.matrix.root.shape
        pr = self.pin_rect()
        if pr.height() > 0 and pr.contains(pos):
            i = int((pos.y() - pr.top()) / PIN_H)
            col = int((pos.x() - pr.left()) / pr.width() * cols)
            pins = self.pinned()
            if 0 <= i < len(pins) and 0 <= col < cols:
                return pins[i], col
            return None
        r = self.plot_rect()
        if not r.contains(pos):
            return None
        row = int((pos.y() - r.top()) / r.height() * rows)
        col = int((pos.x() - r.left()) / r.width() * cols)
        if 0 <= row < rows and 0 <= col < cols:
            return row, col
        return None

    # ------------------------------------------------------------------ painting

    def paintEvent(self, _ev) -> None:
        t_start = time.perf_counter()
        p = QtGui.QPainter(self)
        p.fillRect(self.rect(), QtGui.QColor("white"))
        r = self.plot_rect()
        m = self.matrix
        rows, cols = m.root.shape
        p.setRenderHint(QtGui.QPainter.RenderHint.SmoothPixmapTransform, False)
        p.drawImage(r, self._image)
        pr = self.pin_rect()
        for i, row in enumerate(self.pinned()):
            dst = QtCore.QRectF(pr.left(), pr.top() + i * PIN_H, pr.width(), PIN_H - 2)
            p.drawImage(dst, self._image, QtCore.QRectF(0, row, cols, 1))
            p.setPen(QtGui.QPen(ROOT_RED, 1))
            p.setBrush(QtCore.Qt.BrushStyle.NoBrush)
            p.drawRect(dst)
        font = QtGui.QFont(self.font())
        font.setPointSizeF(8)
        bold = QtGui.QFont(font)
        bold.setBold(True)
        fh = QtGui.QFontMetrics(font).height()
        row_h = r.height() / max(rows, 1)
        # host separators (when a host is at least 3 px tall) and the implicated hosts' outline
        imp_rows = {m.row_of(x) for x in self.implicated}
        p.setPen(QtGui.QPen(QtGui.QColor(0, 0, 0, 40), 1))
        for _h, a, b in m.hosts:
            if (b - a) * row_h >= 3 and a > 0:
                y = self.row_y(a)
                p.drawLine(QtCore.QPointF(r.left(), y), QtCore.QPointF(r.right(), y))
        for _h, a, b in m.hosts:
            if any(a <= x < b for x in imp_rows):
                p.setPen(QtGui.QPen(ROOT_RED, 1.5))
                p.setBrush(QtCore.Qt.BrushStyle.NoBrush)
                p.drawRect(QtCore.QRectF(r.left() - 1, self.row_y(a), r.width() + 2, max((b - a) * row_h, 2)))
        # implicated rows: a red marker at the left of their row
        for row in imp_rows:
            y0 = self.row_y(row)
            p.fillRect(QtCore.QRectF(r.left() - 6, y0, 5, max(row_h, 2)), ROOT_RED)
            # a leader from the pinned copy to the row's place in its host
            pin_i = self.pinned().index(row) if row in self.pinned() else None
            if pin_i is not None:
                p.setPen(QtGui.QPen(ROOT_RED, 1, QtCore.Qt.PenStyle.DotLine))
                p.drawLine(
                    QtCore.QPointF(r.left() - 4, pr.top() + pin_i * PIN_H + PIN_H / 2),
                    QtCore.QPointF(r.left() - 4, y0),
                )
        # labels: implicated ranks first (always), then host names where they do not collide
        taken: list[tuple[float, float]] = []
        self.drawn_labels: list[tuple[float, float, str]] = []  # (top, bottom, text) of every row label
        host = {rk: h for h, a, b in m.hosts for rk in m.ranks[a:b].tolist()}

        def free(y: float) -> bool:
            return all(abs(y - t) >= fh for t, _ in taken)

        p.setFont(bold)
        p.setPen(ROOT_RED)
        fm_b = QtGui.QFontMetrics(bold)
        for i, rank in enumerate(self.implicated[:PIN_MAX]):
            y = pr.top() + i * PIN_H + (PIN_H - 2) / 2
            # nudge down (or up) until it does not overlap a label already drawn
            for dy in (0, fh, -fh, 2 * fh, -2 * fh):
                if free(y + dy):
                    y += dy
                    break
            else:
                continue
            taken.append((y, 1))
            self.drawn_labels.append((y - fh / 2, y + fh / 2, f"rank {rank}"))
            text = fm_b.elidedText(
                f"⚠ rank {rank} · {host.get(rank, '?')}", QtCore.Qt.TextElideMode.ElideRight, LABEL_W - 10
            )
            p.drawText(
                QtCore.QRectF(0, y - fh / 2, LABEL_W - 8, fh),
                int(QtCore.Qt.AlignmentFlag.AlignRight | QtCore.Qt.AlignmentFlag.AlignVCenter),
                text,
            )
        p.setFont(font)
        p.setPen(QtGui.QColor("#555555"))
        fm = QtGui.QFontMetrics(font)
        for h, a, b in m.hosts:
            y = self.row_y((a + b) / 2)
            if not free(y):
                continue
            taken.append((y, 0))
            self.drawn_labels.append((y - fh / 2, y + fh / 2, h))
            text = fm.elidedText(f"{h} ({b - a})", QtCore.Qt.TextElideMode.ElideMiddle, LABEL_W - 10)
            p.drawText(
                QtCore.QRectF(0, y - fh / 2, LABEL_W - 8, fh),
                int(QtCore.Qt.AlignmentFlag.AlignRight | QtCore.Qt.AlignmentFlag.AlignVCenter),
                text,
            )
        # column axis: step numbers every Nth column so that they never overlap
        col_w = r.width() / max(cols, 1)
        label_w = fm.horizontalAdvance("step 0000") if m.by_steps else fm.horizontalAdvance("0000")
        every = max(1, int(np.ceil(label_w / max(col_w, 1e-6))))
        y = r.bottom() + 1
        for c in range(0, cols, every):
            x = r.left() + (c + 0.5) * col_w
            text = f"{int(m.step_numbers[c])}"
            p.drawText(
                QtCore.QRectF(x - label_w / 2, y, label_w, AXIS_H),
                int(QtCore.Qt.AlignmentFlag.AlignCenter),
                text,
            )
        p.drawText(
            QtCore.QRectF(2, y, LABEL_W - 8, AXIS_H),
            int(QtCore.Qt.AlignmentFlag.AlignRight),
            "step ▸" if m.by_steps else "time ▸",
        )
        if self.selected is not None:
            row, col = self.selected
            p.setPen(QtGui.QPen(QtGui.QColor("#1565C0"), 2))
            p.setBrush(QtCore.Qt.BrushStyle.NoBrush)
            p.drawRect(
                QtCore.QRectF(r.left() + col * col_w - 1, self.row_y(row) - 1, col_w + 2, max(row_h, 2) + 2)
            )
            if row in self.pinned():
                i = self.pinned().index(row)
                p.drawRect(
                    QtCore.QRectF(pr.left() + col * col_w - 1, pr.top() + i * PIN_H - 1, col_w + 2, PIN_H)
                )
        p.end()
        self.paint_ms = (time.perf_counter() - t_start) * 1000

    # ------------------------------------------------------------------ mouse

    def mouseMoveEvent(self, ev: QtGui.QMouseEvent) -> None:
        cell = self.cell_at(ev.position())
        if cell is None:
            self.setToolTip("")
            return
        row, col = cell
        self.setToolTip(self.cell_text(row, col) + "<br><i>click: show it in the timeline</i>")

    def cell_text(self, row: int, col: int) -> str:
        """The tooltip of a cell (rich text): rank, host, step, slowdown and wait share, anomalies."""
        m = self.matrix
        rank = int(m.ranks[row])
        host = next((h for h, a, b in m.hosts if a <= row < b), "?")
        s, e = m.window(col)
        what = f"step {int(m.step_numbers[col])}" if m.by_steps else f"{fmt_ns(s - self.model.t0_ns)}"
        lines = [f"<b>rank {rank}</b> · {esc(host)} · {what} ({fmt_ns(e - s)})"]
        if m.slowdown is not None and m.wait_share is not None:
            sd, ws = float(m.slowdown[row, col]), float(m.wait_share[row, col])
            lines.append(
                "slowdown vs peers: "
                + (f"{sd * 100:+.1f} %" if np.isfinite(sd) else "n/a (no busy time or no peer)")
                + " · wait share: "
                + (f"{ws * 100:.1f} %" if np.isfinite(ws) else "n/a")
            )
        root = float(m.root[row, col])
        sym = int(m.symptom[row, col])
        lines.append(
            f"root anomalies, score up to {root:.1f}"
            if root > 0
            else (f"{sym} waiting kernel(s)" if sym else "no anomaly")
        )
        return "<br>".join(lines)

    def mousePressEvent(self, ev: QtGui.QMouseEvent) -> None:
        cell = self.cell_at(ev.position())
        if cell is None:
            return
        self.activate(*cell)

    def activate(self, row: int, col: int) -> None:
        self.selected = (row, col)
        self.update()
        s, e = self.matrix.window(col)
        self.cellActivated.emit(int(self.matrix.ranks[row]), s, e)


class HeatLegend(QtWidgets.QWidget):
    """The colour key of the canvas's mode: the low end's value, a gradient bar, the high end's value and a grey
    "no data" swatch (the tooltip says what the colours mean); for the anomaly colouring (a store analysed
    before the per-step signals were stored), the fixed colours and why."""

    BAR_W = 110

    def __init__(self, canvas: HeatmapCanvas, parent=None):
        super().__init__(parent)
        self.canvas = canvas
        self.setFixedHeight(18)
        self.ends = ("", "")
        self.text = ""
        self.refresh()

    def refresh(self) -> None:
        c = self.canvas
        sc = heat_scale(c.matrix, c.mode)
        fm = QtGui.QFontMetrics(self.font())
        if sc is None:
            self.ends = ("", "")
            self.text = (
                "anomalies: red = root, amber = waited (no per-step slowdown stored: run kat detect again)"
            )
            tip = (
                "This run was analysed before KAT stored each rank's slowdown and wait share per step: the "
                "overview colours the anomaly table instead (red = root anomalies, darker = larger score; "
                "light amber = the rank only waited on a root elsewhere). Run `kat detect` on it again."
            )
        elif sc.mode == "slowdown":
            self.ends = (f"{sc.lo * 100:+.0f}%", f"{sc.hi * 100:+.0f}%")
            self.text = "no data"
            tip = (
                "Slowdown vs peers: the rank's busy GPU time in the step (kernels and copies, not collectives) "
                f"over the median of its peers' in the same step, minus 1. Red = busier (slower) than the peers, "
                f"blue = less busy, white = like them; saturates at {sc.hi * 100:.0f} %. Grey: no busy time or no "
                "peer in that step."
            )
        else:
            self.ends = ("0%", f"{sc.hi * 100:.0f}%")
            self.text = "no data"
            tip = (
                "Wait share: the share of the step (its typical length across ranks) the rank spent waiting for "
                f"the last arrival in collectives; saturates at {sc.hi * 100:.0f} %. Peers of a slow rank wait "
                "more. Grey: the rank has no GPU work in that step, or the run no matched collective."
            )
        ends_w = sum(fm.horizontalAdvance(e) + 4 for e in self.ends if e)
        swatch = 16 if sc is not None else 0
        want = ends_w + (self.BAR_W if sc is not None else 0) + swatch + fm.horizontalAdvance(self.text) + 12
        self.setMinimumWidth(min(want, 260))  # longer text elides: the header never widens the window much
        self.setMaximumWidth(want)
        self.setToolTip(tip)
        self.update()

    def paintEvent(self, _ev) -> None:
        p = QtGui.QPainter(self)
        fm = QtGui.QFontMetrics(self.font())
        sc = heat_scale(self.canvas.matrix, self.canvas.mode)
        h = self.height() - 4
        x = 2.0
        grey = QtGui.QColor("#555555")
        vcenter = int(QtCore.Qt.AlignmentFlag.AlignVCenter)

        def text(t: str, width: float | None = None) -> None:
            nonlocal x
            w = fm.horizontalAdvance(t) if width is None else width
            p.setPen(grey)
            p.drawText(QtCore.QRectF(x, 0, w + 1, self.height()), vcenter, t)
            x += w + 4

        if sc is not None:
            text(self.ends[0])
            bar = np.ascontiguousarray(np.concatenate([sc.lut, np.full((256, 1), 255, np.uint8)], 1)[None])
            img = QtGui.QImage(bar.data, 256, 1, 4 * 256, QtGui.QImage.Format.Format_RGBA8888)
            p.drawImage(QtCore.QRectF(x, 2, self.BAR_W, h), img)
            p.setPen(QtGui.QColor("#888888"))
            p.drawRect(QtCore.QRectF(x, 2, self.BAR_W, h))
            x += self.BAR_W + 4
            text(self.ends[1])
            x += 4
            p.fillRect(QtCore.QRectF(x, 2, h, h), QtGui.QColor(*NO_DATA_RGB))
            x += h + 3
        room = max(self.width() - x, 1.0)
        text(fm.elidedText(self.text, QtCore.Qt.TextElideMode.ElideRight, int(room)), room)
        p.end()


class HeatmapView(QtWidgets.QWidget):
    """Header (title, colour mode, legend) + canvas. ``cellActivated(rank, start_ns, end_ns)`` is the canvas's
    signal."""

    def __init__(self, model: RunModel, parent=None):
        super().__init__(parent)
        self.model = model
        self.matrix = model.derived.get("heat_matrix") or rank_step_matrix(model)
        lay = QtWidgets.QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.setSpacing(1)
        rows, cols = self.matrix.root.shape
        imp = implicated_ranks(model)
        what = "step" if self.matrix.by_steps else "time bin"
        self.title = QtWidgets.QLabel(
            f"<b>Overview: {rows} ranks x {cols} {what}s</b> <span style='color:#555'>· rows by host</span>"
            + (
                f" · <span style='color:#B71C1C'><b>implicated: rank {', '.join(map(str, imp))}</b></span>"
                if imp
                else ""
            )
        )
        self.title.setStyleSheet("padding:2px 4px")
        self.title.setToolTip("one row per rank, grouped by host; click a cell to see that rank at that step")
        self.title.setMinimumWidth(40)  # clipped rather than widening the window
        self.title.setSizePolicy(QtWidgets.QSizePolicy.Policy.Ignored, QtWidgets.QSizePolicy.Policy.Preferred)
        self.canvas = HeatmapCanvas(model, self.matrix)
        self.cellActivated = self.canvas.cellActivated
        self.mode_box = QtWidgets.QComboBox()
        for mode in self.matrix.modes():
            self.mode_box.addItem(HEAT_MODES[mode], mode)
        self.mode_box.setEnabled(self.mode_box.count() > 1)
        self.mode_box.setToolTip(
            "slowdown vs peers: the rank's busy GPU time (kernels, copies; not collectives) in the step over "
            "its peers' median, -1\nwait share: the share of the step it spent waiting in collectives"
        )
        self.mode_box.currentIndexChanged.connect(lambda _i: self.set_mode(self.mode_box.currentData()))
        self.legend = HeatLegend(self.canvas)
        head = QtWidgets.QHBoxLayout()
        head.setContentsMargins(0, 0, 4, 0)
        head.addWidget(self.title, 1)
        head.addWidget(QtWidgets.QLabel("colour:"))
        head.addWidget(self.mode_box)
        head.addWidget(self.legend)
        lay.addLayout(head)
        lay.addWidget(self.canvas, 1)

    def set_mode(self, mode: str) -> None:
        """Colour the overview by ``mode`` ("slowdown", "wait"; "anomalies" for an older store)."""
        self.canvas.set_mode(mode)
        i = self.mode_box.findData(mode)
        if i >= 0 and i != self.mode_box.currentIndex():
            self.mode_box.setCurrentIndex(i)
        self.legend.refresh()
