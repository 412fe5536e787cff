"""The selected event: a thick dark outline over its rectangle.

The rectangle is in the lanes plot's coordinates (x seconds since the run start, y the lane row; see
``timeline_paint``), placed by the view; narrower than 4 pixels, it is drawn 4 pixels wide around its centre.
Nothing cached.
"""

from __future__ import annotations

import pyqtgraph as pg
from PySide6 import QtCore, QtGui

from kat_gui.ui.timeline_paint import SELECT_COLOR, pixel_s


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
        px = pixel_s(vb) if vb is not None else 0.0
        r = QtCore.QRectF(self.rect)
        if r.width() < 4 * px:
            r.adjust(-(4 * px - r.width()) / 2, 0, (4 * px - r.width()) / 2, 0)
        p.setPen(pg.mkPen(SELECT_COLOR, width=2.5))
        p.setBrush(QtCore.Qt.BrushStyle.NoBrush)
        p.drawRect(r)
