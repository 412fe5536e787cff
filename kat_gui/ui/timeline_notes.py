"""The run's notes on the lanes: time and kernel notes as translucent blue bands, every note a label.

A note with a time range is a band over its range (x seconds since the run start, y its rows; see
``timeline_paint``), on its rank's lanes when it names a rank (or a track of one), else on every lane, at
least 2 pixels wide; a rank or component note is a label at the left edge of the view. Labels (the note's
first line) are drawn in device pixels, where text is not stretched by the data transform, as plain text
(``drawText``), never rich text. Nothing cached: a run has few notes.
"""

from __future__ import annotations

import pyqtgraph as pg
from PySide6 import QtCore, QtGui

from kat_gui.ui.run_model import Lane, RunModel
from kat_gui.ui.timeline_paint import NOTE_COLOR, pixel_s, span_s


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
        span = span_s(self.model)
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
        px = pixel_s(vb)
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
