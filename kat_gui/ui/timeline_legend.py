"""The legend row under the lanes: a swatch per kernel class and anomaly role, then the keyboard hints.

Swatches are 14x10 pixmaps drawn like the items they stand for: a fill per kernel class
(``kernel_classes.CLASS_COLORS``, host work left out), a red outline for a root anomaly, thin translucent
amber hatching for a symptom (as light as the lanes draw it). Built once per view; nothing redrawn.
"""

from __future__ import annotations

from PySide6 import QtCore, QtGui, QtWidgets

from kat_gui.ui.kernel_classes import CLASS_COLORS, CLASS_NAMES, HOST
from kat_gui.ui.timeline_paint import ROOT_COLOR, ROOT_PEN_PX, SYMPTOM_COLOR, SYMPTOM_PEN_PX, symptom_color


def legend_widget() -> QtWidgets.QWidget:
    w = QtWidgets.QWidget()
    h = QtWidgets.QHBoxLayout(w)
    h.setContentsMargins(6, 2, 6, 2)
    items = [(CLASS_NAMES[i], CLASS_COLORS[i], "fill") for i in range(HOST)]  # host work: no swatch
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
            pt.setPen(QtGui.QPen(QtGui.QColor(color), ROOT_PEN_PX))
            pt.drawRect(1, 1, 12, 8)
        else:
            pt.fillRect(0, 0, 14, 10, QtGui.QBrush(symptom_color(), QtCore.Qt.BrushStyle.BDiagPattern))
            pt.setPen(QtGui.QPen(symptom_color(), SYMPTOM_PEN_PX))
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
