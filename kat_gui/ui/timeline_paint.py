"""What every timeline item shares: its colours, its coordinates, and one batched-rectangle primitive.

Coordinates of the timeline's items (``timeline_lanes``, ``timeline_anomalies``, ``timeline_selection``,
``timeline_notes`` in the lanes plot; ``timeline_overview`` in the strip above it):

* x is **seconds since the run start** (``RunModel.t0_ns``, the store's first event), float64: ns
  precision over ~100 days. An event at ``start_ns`` is drawn at ``(start_ns - t0_ns) / 1e9``; the view
  converts back with ``t0_ns + int(x * 1e9)``.
* y in the lanes plot is the **lane row**: lane ``i`` spans ``[i, i + 1)``, the view is inverted so lane 0 is
  at the top. The overview strip's y runs over ``[0, 1]``.

Kernel class colours live in ``kernel_classes.CLASS_COLORS``; the anomaly colours here are chosen apart from
them (red outline = root, amber hatching = symptom). Symptoms are drawn lighter than roots: a thin translucent
amber outline and hatching (``SYMPTOM_ALPHA``) or a light amber fill (``SYMPTOM_FILL_ALPHA``), against the
roots' opaque 2 px red outline over a stronger red tint (``ROOT_FILL_ALPHA``); roots are drawn last.
"""

from __future__ import annotations

import numpy as np
from pyqtgraph.Qt.internals import PrimitiveArray
from PySide6 import QtCore, QtGui

from kat_gui.ui.run_model import RunModel

ROOT_COLOR = "#D62728"
SYMPTOM_COLOR = "#FFB000"
ROOT_PEN_PX, SYMPTOM_PEN_PX = 2, 1  # outline widths (device pixels)
ROOT_FILL_ALPHA = 80  # the red tint inside a root's outline (0-255)
SYMPTOM_ALPHA = 130  # a symptom's outline and hatching (a root's outline is opaque)
SYMPTOM_FILL_ALPHA = 60  # a symptom drawn as a fill: wide blocks, per-host bands when zoomed out
HOST_BG = "#E6ECF4"  # a host's header / summary lane
HOST_RULE = "#9AA9BD"  # the line above a host's lane
HIGHLIGHT_BG = "#FDE3E1"  # lanes of the implicated ranks
BAND_BG = "#F4F5F7"  # every other lane
SELECT_COLOR = "#111111"
NOTE_COLOR = "#1F6FEB"


def symptom_color(alpha: int = SYMPTOM_ALPHA) -> QtGui.QColor:
    c = QtGui.QColor(SYMPTOM_COLOR)
    c.setAlpha(alpha)
    return c


def span_s(model: RunModel) -> float:
    """The run's length in seconds (x extent of the items; at least 1 ns so an empty run has a width)."""
    return max((model.t1_ns - model.t0_ns) / 1e9, 1e-9)


def pixel_s(vb) -> float:
    """Seconds per device pixel of a view box at its current x range."""
    (x0, x1), _ = vb.viewRange()
    return (x1 - x0) / max(vb.width(), 1.0)


def rect_array(x: np.ndarray, y: np.ndarray, w: np.ndarray, h: np.ndarray) -> PrimitiveArray:
    """Rectangles (data coordinates) packed for one ``QPainter.drawRects(*arr.drawargs())`` call.

    ``drawargs()`` hands Qt a raw pointer into the array's buffer: keep the returned array referenced
    until the draw call has returned (never draw from a temporary)."""
    arr = PrimitiveArray(QtCore.QRectF, 4)
    arr.resize(len(x))
    mem = arr.ndarray()
    mem[:, 0] = x
    mem[:, 1] = y
    mem[:, 2] = w
    mem[:, 3] = h
    return arr
