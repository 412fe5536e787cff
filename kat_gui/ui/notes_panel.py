"""The notes panel: an expert's annotations pinned to a time range, a kernel, a rank or a topology component.

Reads and writes through :class:`kat_gui.annotations.AnnotationModel` (owned by the run's model), which saves
every change into the store at once; the panel and the timeline redraw from its change callbacks. Note text is
user input shown as plain text (table cells, the timeline's drawText) and escaped wherever it reaches rich
text (tooltips).
"""

from __future__ import annotations

from PySide6 import QtCore, QtWidgets

from kat_gui.annotations import Annotation
from kat_gui.errors import KatInputError
from kat_gui.ui.run_model import RunModel, esc, fmt_ns


def where_text(model: RunModel, a: Annotation) -> str:
    """What the note is pinned to, in words (times relative to the run's start)."""
    if a.target == "component":
        return f"component {a.component}"
    if a.target == "rank":
        return f"rank {a.rank}"
    span = ""
    if a.start_ns is not None:
        s = a.start_ns - model.t0_ns
        e = (a.end_ns if a.end_ns is not None else a.start_ns) - model.t0_ns
        span = f"{fmt_ns(s)} – {fmt_ns(e)}" if e > s else f"at {fmt_ns(s)}"
    if a.target == "kernel" and a.track is not None:
        return f"kernel on {model.track_text(a.track)} · {span}"
    rank = f" · rank {a.rank}" if a.rank is not None else ""
    return f"{span}{rank}"


class NotesPanel(QtWidgets.QWidget):
    """Table of notes with add/edit/delete/undo/redo. ``noteActivated(id)`` asks the view to show a note.

    The ``text`` arguments of the add/edit methods skip the input dialog (scripts and tests); the ``where``
    of a new note comes from the view through ``context`` (a callable returning the current view range, the
    selected kernel and the highlighted rank)."""

    noteActivated = QtCore.Signal(int)
    HEADERS = ("#", "pinned to", "where", "note")

    def __init__(self, model: RunModel, context, parent=None):
        super().__init__(parent)
        self.run = model
        self.context = context
        lay = QtWidgets.QVBoxLayout(self)
        lay.setContentsMargins(4, 4, 4, 4)
        bar = QtWidgets.QHBoxLayout()
        self.buttons: dict[str, QtWidgets.QPushButton] = {}
        for key, text, slot, tip in (
            (
                "range",
                "Note on view range",
                lambda: self.add_note("time"),
                "pin a note to the time now shown",
            ),
            (
                "kernel",
                "Note on selected kernel",
                lambda: self.add_note("kernel"),
                "pin a note to the kernel",
            ),
            ("rank", "Note on rank…", lambda: self.add_note("rank"), "pin a note to a rank"),
            ("component", "Note on component…", lambda: self.add_note("component"), "e.g. GPU2, NVLink"),
            ("edit", "Edit", lambda: self.edit_note(), "change the selected note's text"),
            ("delete", "Delete", lambda: self.delete_note(), "delete the selected note"),
            ("undo", "Undo", lambda: self.undo(), "undo the last note change (Ctrl+Z)"),
            ("redo", "Redo", lambda: self.redo(), "redo (Ctrl+Shift+Z)"),
        ):
            b = QtWidgets.QPushButton(text)
            b.setToolTip(tip)
            b.clicked.connect(slot)
            bar.addWidget(b)
            self.buttons[key] = b
        bar.addStretch(1)
        lay.addLayout(bar)
        self.status = QtWidgets.QLabel()
        self.status.setStyleSheet("color:#777")
        self.status.setTextFormat(QtCore.Qt.TextFormat.PlainText)
        lay.addWidget(self.status)
        self.table = QtWidgets.QTableWidget(0, len(self.HEADERS))
        self.table.setHorizontalHeaderLabels(self.HEADERS)
        self.table.verticalHeader().hide()
        self.table.setSelectionBehavior(QtWidgets.QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QtWidgets.QAbstractItemView.SelectionMode.SingleSelection)
        self.table.setEditTriggers(QtWidgets.QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.horizontalHeader().setStretchLastSection(True)
        self.table.cellDoubleClicked.connect(lambda r, _c: self._activate(r))
        self.table.itemSelectionChanged.connect(self._on_selection)
        lay.addWidget(self.table, 1)
        if model.notes is not None:
            model.notes.connect(self._on_change)
        self.refresh()

    # ------------------------------------------------------------------ listing

    def notes(self) -> list[Annotation]:
        return self.run.read_only_notes

    def refresh(self) -> None:
        notes = self.notes()
        keep = self.selected_id()
        self.table.setRowCount(len(notes))
        for r, a in enumerate(notes):
            first = a.text.strip().splitlines()[0] if a.text.strip() else ""
            cells = (str(a.id), a.target, where_text(self.run, a), first)
            for c, text in enumerate(cells):
                it = QtWidgets.QTableWidgetItem(text)
                it.setData(QtCore.Qt.ItemDataRole.UserRole, a.id)
                if c == 3:
                    it.setToolTip(f"<pre>{esc(a.text)}</pre>")
                self.table.setItem(r, c, it)
            if a.id == keep:
                self.table.selectRow(r)
        self.table.resizeColumnsToContents()
        editable = self.run.notes is not None
        for key in ("range", "kernel", "rank", "component", "edit", "delete"):
            self.buttons[key].setEnabled(editable)
        self.buttons["undo"].setEnabled(editable and self.run.notes.can_undo)
        self.buttons["redo"].setEnabled(editable and self.run.notes.can_redo)
        if not editable:
            self.status.setText(f"Notes are read-only: {self.run.notes_error}")
        else:
            self.status.setText(
                f"{len(notes)} note(s), saved in the run's store as you work · double-click a note to show it"
            )

    def _on_change(self, _ev) -> None:
        try:
            self.refresh()
        except RuntimeError:  # the widget is gone while the model lives on (a closed comparison)
            self.run.notes.disconnect(self._on_change)

    def selected_id(self) -> int | None:
        rows = self.table.selectionModel().selectedRows() if self.table.selectionModel() else []
        if not rows:
            return None
        it = self.table.item(rows[0].row(), 0)
        return int(it.data(QtCore.Qt.ItemDataRole.UserRole)) if it is not None else None

    def _on_selection(self) -> None:
        i = self.selected_id()
        if i is not None:
            self.noteActivated.emit(i)

    def _activate(self, row: int) -> None:
        it = self.table.item(row, 0)
        if it is not None:
            self.noteActivated.emit(int(it.data(QtCore.Qt.ItemDataRole.UserRole)))

    # ------------------------------------------------------------------ changes

    def _ask(self, title: str, text: str = "") -> str | None:
        value, ok = QtWidgets.QInputDialog.getMultiLineText(self, title, "Note:", text)
        return value if ok and value.strip() else None

    def add_note(self, target: str, text: str | None = None, **where) -> Annotation | None:
        """Pin a note of ``target`` (time, kernel, rank, component) to what the view shows/selects now;
        ``where`` overrides (start_ns, end_ns, track, index, rank, component)."""
        notes = self.run.notes
        if notes is None:
            return None
        ctx = dict(self.context())
        fields: dict = {}
        if target == "time":
            fields = {"start_ns": ctx["start_ns"], "end_ns": ctx["end_ns"]}
        elif target == "kernel":
            sel = ctx.get("selected")
            if sel is None and "track" not in where:
                self.status.setText("Select a kernel on the timeline first.")
                return None
            if sel is not None:
                track, index = sel
                span = ctx.get("selected_span")
                if span is None:  # not known yet (being read): read the one row here
                    ev = self.run.event(track, index)
                    span = (int(ev["start_ns"]), int(ev["end_ns"]))
                fields = {"track": track, "index": index, "start_ns": int(span[0]), "end_ns": int(span[1])}
        elif target == "rank":
            if "rank" not in where:
                ranks = [str(r) for r in sorted(self.run.ranks)]
                default = ctx.get("rank")
                cur = ranks.index(str(default)) if default is not None and str(default) in ranks else 0
                choice, ok = QtWidgets.QInputDialog.getItem(
                    self, "Note on a rank", "Rank:", ranks, cur, False
                )
                if not ok:
                    return None
                fields = {"rank": int(choice)}
        elif target == "component" and "component" not in where:
            names = []
            if self.run.graph is not None:
                names = sorted(str(n) for n in getattr(self.run.graph, "nodes", []))
            choice, ok = QtWidgets.QInputDialog.getItem(
                self, "Note on a component", "Component:", names, 0, True
            )
            if not ok or not choice.strip():
                return None
            fields = {"component": choice.strip()}
        fields.update(where)
        if text is None:
            text = self._ask("New note")
            if text is None:
                return None
        return self._change(notes.add, text, target, **fields)

    def _change(self, fn, *args, **kwargs):
        """``fn(*args, **kwargs)`` on the notes model; a refused note or a store that cannot take the change
        now (another process keeps its write lock) is said in the status line, never a traceback. The model
        keeps a change it could not save and saves it with the next one."""
        try:
            return fn(*args, **kwargs)
        except ValueError as exc:
            self.status.setText(str(exc))
        except KatInputError as exc:
            self.status.setText(f"Not saved yet: {exc}. It is saved with the next change.")
        return None

    def edit_note(self, ann_id: int | None = None, text: str | None = None) -> Annotation | None:
        notes = self.run.notes
        ann_id = self.selected_id() if ann_id is None else ann_id
        if notes is None or ann_id is None:
            return None
        if text is None:
            text = self._ask("Edit note", notes.get(ann_id).text)
            if text is None:
                return None
        return self._change(notes.edit, ann_id, text=text)

    def delete_note(self, ann_id: int | None = None) -> None:
        notes = self.run.notes
        ann_id = self.selected_id() if ann_id is None else ann_id
        if notes is not None and ann_id is not None:
            self._change(notes.delete, ann_id)

    def undo(self) -> bool:
        return bool(self.run.notes is not None and self._change(self.run.notes.undo))

    def redo(self) -> bool:
        return bool(self.run.notes is not None and self._change(self.run.notes.redo))
