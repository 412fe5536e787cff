"""The rank x step overview of a large run: one row per rank (grouped by host), one column per step, coloured by
the stored detection results (red = root anomalies, by score; light amber = the rank only waited). Implicated
rows are labelled; host names are printed where there is room (never on top of each other). One ``QImage``
blitted with one ``drawImage``, so 1,024 x 1,000 cells draw in a few ms. A click emits ``cellActivated(rank,
start_ns, end_ns)``.
"""

from __future__ import annotations

import time

import numpy as np
from PySide6 import QtCore, QtGui, QtWidgets

from kat_gui.ui.run_model import RunModel, esc, fmt_ns
from kat_gui.ui.scale import RankStepMatrix, heat_rgba, implicated_ranks, rank_step_matrix

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
        self.setMouseTracking(True)
        self.setMinimumHeight(120)
        self.set_matrix(matrix)

    def set_matrix(self, matrix: RankStepMatrix) -> None:
        self.matrix = matrix
        self._rgba = np.ascontiguousarray(heat_rgba(matrix))
        rows, cols = self._rgba.shape[:2]
        self._image = QtGui.QImage(
            self._rgba.data, max(cols, 1), max(rows, 1), 4 * max(cols, 1), QtGui.QImage.Format.Format_RGBA8888
        )
        self.update()

    # ------------------------------------------------------------------ geometry

    def pinned(self) -> list[int]:
        """Rows drawn again, tall, above the matrix: the implicated ranks (so a culprit among 1,024 ranks is
        never a hairline)."""
        return [self.matrix.row_of(r) for r in self.implicated[:PIN_MAX]]

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
        m = self.matrix
        rank = int(m.ranks[row])
        host = next((h for h, a, b in m.hosts if a <= row < b), "?")
        s, e = m.window(col)
        what = f"step {int(m.step_numbers[col])}" if m.by_steps else f"{fmt_ns(s - self.model.t0_ns)}"
        root = float(m.root[row, col])
        sym = int(m.symptom[row, col])
        detail = (
            f"root anomalies, score up to {root:.1f}"
            if root > 0
            else (f"{sym} waiting kernel(s)" if sym else "normal")
        )
        self.setToolTip(
            f"<b>rank {rank}</b> · {esc(host)} · {what}<br>{esc(detail)}<br><i>click: show it in the timeline</i>"
        )

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


class HeatmapView(QtWidgets.QWidget):
    """Title line + canvas. ``cellActivated(rank, start_ns, end_ns)`` is the canvas's signal."""

    def __init__(self, model: RunModel, parent=None):
        super().__init__(parent)
        self.model = model
        self.matrix = rank_step_matrix(model)
        lay = QtWidgets.QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.setSpacing(1)
        rows, cols = self.matrix.root.shape
        imp = implicated_ranks(model)
        what = "step" if self.matrix.by_steps else "time bin"
        self.title = QtWidgets.QLabel(
            f"<b>Overview: {rows} ranks x {cols} {what}s</b> <span style='color:#555'>· rows grouped by host ·"
            " <span style='color:#B71C1C'>red</span> = root anomalies (darker = larger score) ·"
            " <span style='background:#FAE8C4'>amber</span> = waited on a root · click a cell to see that rank"
            " at that step</span>"
            + (
                f" · <span style='color:#B71C1C'><b>implicated: rank {', '.join(map(str, imp))}</b></span>"
                if imp
                else ""
            )
        )
        self.title.setStyleSheet("padding:2px 4px")
        lay.addWidget(self.title)
        self.canvas = HeatmapCanvas(model, self.matrix)
        self.cellActivated = self.canvas.cellActivated
        lay.addWidget(self.canvas, 1)
