"""Export what the window shows: an annotated picture of the current view (PNG or SVG) and the postmortem
report folder (``kat_gui.report.write_report``) with those pictures inside.

The picture holds the run name(s), the time range shown, the verdict, the timeline(s) with their notes and
legend, and the list of the notes in view. SVG output goes through QSvgGenerator, so the rectangles, labels
and note texts stay vector/text (a dense view's rasterised lanes are embedded as images). Note text is drawn
with drawText (plain text; the SVG writer escapes it), never as rich text.
"""

from __future__ import annotations

import os
from pathlib import Path

from PySide6 import QtCore, QtGui, QtWidgets

from kat_gui.ui.run_model import RunModel, fmt_ns

MARGIN = 12
LINE_PX = 18


def view_parts(view) -> tuple[list[str], list[tuple[str, RunModel, QtWidgets.QWidget]]]:
    """(header lines, [(title, model, timeline widget)]) of a RunView or CompareView."""
    from kat_gui.ui.compare_view import CompareView

    if isinstance(view, CompareView):
        lines = [f"KAT comparison — {view.degraded.name} (degraded) vs {view.healthy.name} (healthy)"]
        lines.append(QtGui.QTextDocumentFragment.fromHtml(view.banner.text()).toPlainText())
        parts = [
            (f"degraded: {view.degraded.name}", view.degraded, view.top),
            (f"healthy: {view.healthy.name}", view.healthy, view.bottom),
        ]
        return lines, parts
    m = view.model
    lines = [f"KAT — {m.name}", QtGui.QTextDocumentFragment.fromHtml(view.banner.text()).toPlainText()]
    return lines, [(m.name, m, view.timeline)]


def _note_lines(model: RunModel, t0_ns: int, t1_ns: int) -> list[str]:
    from kat_gui.ui.notes_panel import where_text

    out = []
    for a in model.read_only_notes:
        if a.start_ns is not None and not a.overlaps(t0_ns, t1_ns):
            continue
        text = " ".join(a.text.split())
        out.append(f"✎ #{a.id} [{where_text(model, a)}] {text[:300]}")
    return out


def _paint(p: QtGui.QPainter, view, width: int) -> int:
    """Draw the annotated view with ``p`` (origin top-left); returns the height used."""
    header, parts = view_parts(view)
    y = MARGIN
    bold = QtGui.QFont()
    bold.setBold(True)
    bold.setPointSizeF(11)
    normal = QtGui.QFont()
    normal.setPointSizeF(9)
    p.setPen(QtGui.QColor("#1F1F1F"))
    for i, line in enumerate(header):
        p.setFont(bold if i == 0 else normal)
        r = p.boundingRect(
            QtCore.QRectF(MARGIN, y, width - 2 * MARGIN, 1000), int(QtCore.Qt.TextFlag.TextWordWrap), line
        )
        p.drawText(r, int(QtCore.Qt.TextFlag.TextWordWrap), line)
        y += int(r.height()) + 4
    for title, model, tl in parts:
        t0, t1 = tl.x_range_ns()
        p.setFont(bold)
        p.drawText(
            QtCore.QPointF(MARGIN, y + LINE_PX - 4),
            f"{title} — shown: {fmt_ns(t0 - model.t0_ns)} to {fmt_ns(t1 - model.t0_ns)} after the run's start "
            f"({fmt_ns(t1 - t0)} wide)",
        )
        y += LINE_PX + 2
        tl.settle()
        tl.render(p, QtCore.QPoint(0, y))
        y += tl.height() + 6
        p.setFont(normal)
        p.setPen(QtGui.QColor("#1F4FB0"))
        for line in _note_lines(model, t0, t1):
            p.drawText(QtCore.QPointF(MARGIN, y + LINE_PX - 5), line)
            y += LINE_PX
        p.setPen(QtGui.QColor("#1F1F1F"))
        y += 6
    return y + MARGIN


def _size(view) -> tuple[int, int]:
    """Width of the timelines and a height bound for the picture (measured by a dry run)."""
    _, parts = view_parts(view)
    width = max(tl.width() for _t, _m, tl in parts)
    img = QtGui.QImage(1, 1, QtGui.QImage.Format.Format_ARGB32)
    p = QtGui.QPainter(img)
    header, _ = view_parts(view)
    bold = QtGui.QFont()
    bold.setPointSizeF(11)
    p.setFont(bold)
    y = MARGIN
    for line in header:
        y += int(p.boundingRect(QtCore.QRectF(0, 0, width - 2 * MARGIN, 1000), 0x1000, line).height()) + 4
    p.end()
    for _t, m, tl in parts:
        t0, t1 = tl.x_range_ns()
        y += LINE_PX + 2 + tl.height() + 6 + LINE_PX * len(_note_lines(m, t0, t1)) + 6
    return width, y + MARGIN + LINE_PX


def export_view(view, path: str | os.PathLike) -> Path:
    """Write the annotated picture of ``view`` (a RunView or CompareView) to ``path``: SVG when the name
    ends in .svg, else PNG. Returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    width, height = _size(view)
    if path.suffix.lower() == ".svg":
        from PySide6.QtSvg import QSvgGenerator

        gen = QSvgGenerator()
        gen.setFileName(str(path))
        gen.setSize(QtCore.QSize(width, height))
        gen.setViewBox(QtCore.QRect(0, 0, width, height))
        header, _ = view_parts(view)
        gen.setTitle(header[0])
        gen.setDescription("KAT timeline export")
        p = QtGui.QPainter(gen)
        p.fillRect(QtCore.QRect(0, 0, width, height), QtGui.QColor("white"))
        _paint(p, view, width)
        p.end()
        return path
    img = QtGui.QImage(width, height, QtGui.QImage.Format.Format_ARGB32)
    img.fill(QtGui.QColor("white"))
    p = QtGui.QPainter(img)
    p.setRenderHint(QtGui.QPainter.RenderHint.TextAntialiasing, True)
    used = _paint(p, view, width)
    p.end()
    img = img.copy(0, 0, width, min(height, used))
    if not img.save(str(path), "PNG"):
        from kat_gui.errors import KatInputError

        raise KatInputError(path, "cannot write the picture")
    return path
