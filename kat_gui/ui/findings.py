"""Findings and anomaly tables. Rows navigate the timeline (zoom to the kernel or window, select its ranks).

The anomaly model sorts and filters with numpy over the stored columns (a permutation array), so a table of
a million anomalies stays responsive; Qt only ever asks for the rows on screen.
"""

from __future__ import annotations

import functools

import numpy as np
from PySide6 import QtCore, QtGui, QtWidgets

from kat_gui.events import COMPONENTS
from kat_gui.ui.run_model import ROLE_ROOT, RunModel, fmt_ns
from kat_gui.ui.turns import next_turn

ROLE_TEXT = {1: "root", 2: "symptom"}


class AnomalyTableModel(QtCore.QAbstractTableModel):
    HEADERS = ("rank", "kernel", "start", "duration", "role", "component", "score", "finding")

    def __init__(self, model: RunModel, parent=None):
        super().__init__(parent)
        self.run = model
        a = model.anomalies
        self.n = len(a["start_ns"])
        self.rows = np.arange(self.n)
        self._sort_key: tuple[int, QtCore.Qt.SortOrder] | None = None
        self._names: dict[int, str] = {}

    @functools.cached_property
    def dur(self) -> np.ndarray:
        a = self.run.anomalies
        return (a["end_ns"] - a["start_ns"]) if self.n else np.zeros(0, np.int64)

    # -- filtering/sorting on the columns
    def set_filter(
        self, component: int | None = None, rank: int | None = None, role: int | None = None
    ) -> None:
        a = self.run.anomalies
        keep = np.ones(self.n, bool)
        if component is not None:
            keep &= a["component"] == component
        if rank is not None:
            keep &= a["rank"] == rank
        if role is not None:
            keep &= a["role"] == role
        self.beginResetModel()
        self.rows = np.flatnonzero(keep)
        self._apply_sort()
        self.endResetModel()

    def _key(self, col: int) -> np.ndarray:
        a = self.run.anomalies
        return {
            0: a["rank"],
            1: a["name"],
            2: a["start_ns"],
            3: self.dur,
            4: a["role"],
            5: a["component"],
            6: -a["score"].astype(float),
            7: a["finding"],
        }[col]

    def _apply_sort(self) -> None:
        if self._sort_key is None or not len(self.rows):
            return
        col, order = self._sort_key
        descending = order == QtCore.Qt.SortOrder.DescendingOrder
        if col == 6 and len(self.rows) == self.n:
            # the default order (highest score first) of the whole table, sorted on the loader's worker: it
            # is the rows themselves, whatever order they were in (no 480,000-row gather on the GUI thread)
            rows = self.run.anomalies_by_score()
            self.rows = rows[::-1] if descending else rows
            return
        idx = np.argsort(self._key(col)[self.rows], kind="stable")
        self.rows = self.rows[idx[::-1] if descending else idx]

    def sort(self, column: int, order=QtCore.Qt.SortOrder.AscendingOrder) -> None:
        self.beginResetModel()
        self._sort_key = (column, order)
        self._apply_sort()
        self.endResetModel()

    # -- Qt model API
    def rowCount(self, parent=None) -> int:
        return 0 if parent is not None and parent.isValid() else len(self.rows)

    def columnCount(self, parent=None) -> int:
        return len(self.HEADERS)

    def headerData(self, section, orientation, role=QtCore.Qt.ItemDataRole.DisplayRole):
        if role == QtCore.Qt.ItemDataRole.DisplayRole and orientation == QtCore.Qt.Orientation.Horizontal:
            return self.HEADERS[section]
        return None

    def anomaly_row(self, view_row: int) -> int:
        return int(self.rows[view_row])

    def _name(self, sid: int) -> str:
        if sid not in self._names:
            self._names[sid] = self.run.string(sid)
        return self._names[sid]

    def data(self, index, role=QtCore.Qt.ItemDataRole.DisplayRole):
        if not index.isValid():
            return None
        r = int(self.rows[index.row()])
        a = self.run.anomalies
        c = index.column()
        if role == QtCore.Qt.ItemDataRole.DisplayRole:
            if c == 0:
                return int(a["rank"][r])
            if c == 1:
                return self._name(int(a["name"][r]))
            if c == 2:
                return fmt_ns(int(a["start_ns"][r]) - self.run.t0_ns)
            if c == 3:
                return fmt_ns(int(a["end_ns"][r]) - int(a["start_ns"][r]))
            if c == 4:
                return ROLE_TEXT.get(int(a["role"][r]), "?")
            if c == 5:
                return self.run.component_name(int(a["component"][r]))
            if c == 6:
                return f"{float(a['score'][r]):.2f}"
            if c == 7:
                f = int(a["finding"][r])
                return "" if f < 0 else f"#{f + 1}"
        if role == QtCore.Qt.ItemDataRole.ForegroundRole and c == 4:
            return QtGui.QColor("#C62828" if int(a["role"][r]) == ROLE_ROOT else "#B26A00")
        if role == QtCore.Qt.ItemDataRole.ToolTipRole and c == 1:
            return self._name(int(a["name"][r]))
        return None


class FindingsPanel(QtWidgets.QWidget):
    """Findings (one line each) above a filterable anomaly table."""

    findingActivated = QtCore.Signal(int)  # index into model.findings
    anomalyActivated = QtCore.Signal(int)  # row of model.anomalies

    def __init__(self, model: RunModel, parent=None):
        super().__init__(parent)
        self.run = model
        lay = QtWidgets.QVBoxLayout(self)
        lay.setContentsMargins(4, 4, 4, 4)

        self.findings = QtWidgets.QTableWidget(len(model.findings), 5)
        self.findings.setHorizontalHeaderLabels(["#", "component", "ranks", "confidence", "summary"])
        self.findings.verticalHeader().hide()
        self.findings.setEditTriggers(QtWidgets.QAbstractItemView.EditTrigger.NoEditTriggers)
        self.findings.setSelectionBehavior(QtWidgets.QAbstractItemView.SelectionBehavior.SelectRows)
        self.findings.horizontalHeader().setStretchLastSection(True)
        for i, f in enumerate(model.findings):
            vals = [
                f"#{i + 1}",
                f"{f.get('component_id') or ''} ({f.get('component', '?')})",
                ", ".join(str(r) for r in f.get("ranks", [])),
                f"{float(f.get('confidence', 0)):.2f}",
                str(f.get("summary", "")),
            ]
            for j, v in enumerate(vals):
                item = QtWidgets.QTableWidgetItem(v)
                item.setToolTip(v)
                self.findings.setItem(i, j, item)
        self.findings.resizeColumnsToContents()
        self.findings.horizontalHeader().setStretchLastSection(True)
        self.findings.cellClicked.connect(lambda r, _c: self.findingActivated.emit(r))
        label = QtWidgets.QLabel(self._findings_title())
        label.setStyleSheet("font-weight:bold")
        lay.addWidget(label)
        lay.addWidget(self.findings, 1)

        bar = QtWidgets.QHBoxLayout()
        bar.addWidget(QtWidgets.QLabel(f"Anomalous kernels ({model.anomaly_count():,}):"))
        self.comp_box = QtWidgets.QComboBox()
        self.comp_box.addItem("all components", None)
        present = set(model.anomaly_presence()[1])
        for i, c in enumerate(COMPONENTS):
            if i in present:
                self.comp_box.addItem(c, i)
        self.rank_box = QtWidgets.QComboBox()
        self.rank_box.addItem("all ranks", None)  # the ranks themselves: _attach_table
        self.role_box = QtWidgets.QComboBox()
        self.role_box.addItem("roots and symptoms", None)
        self.role_box.addItem("roots", 1)
        self.role_box.addItem("symptoms", 2)
        for b in (self.comp_box, self.rank_box, self.role_box):
            b.currentIndexChanged.connect(self._refilter)
            bar.addWidget(b)
        bar.addStretch(1)
        lay.addLayout(bar)

        self.table_model = AnomalyTableModel(model, self)
        self.table = QtWidgets.QTableView()  # its model: _attach_table
        self.table.setSelectionBehavior(QtWidgets.QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QtWidgets.QAbstractItemView.SelectionMode.SingleSelection)
        self.table.verticalHeader().hide()
        self.table.verticalHeader().setDefaultSectionSize(20)
        # Kernel names are long C++ signatures: one line each, cut in the middle so both ends stay readable
        # (word wrap would show only "void ..." in a 20-px row).
        self.table.setWordWrap(False)
        self.table.setTextElideMode(QtCore.Qt.TextElideMode.ElideMiddle)
        self.table.horizontalHeader().setStretchLastSection(True)
        self.table.clicked.connect(
            lambda idx: self.anomalyActivated.emit(self.table_model.anomaly_row(idx.row()))
        )
        self.table.activated.connect(
            lambda idx: self.anomalyActivated.emit(self.table_model.anomaly_row(idx.row()))
        )
        lay.addWidget(self.table, 3)
        # The anomaly table (sorted, ~6 ms at 480,000 rows with its 1,000-rank filter) in the next event-loop
        # turn: a new run's tab is built on the GUI thread in steps that each stay short.
        next_turn(self, self._attach_table)

    def _attach_table(self) -> None:
        ranks_present, _comps = self.run.anomaly_presence()
        for r in ranks_present:  # after "all ranks", the current item: no filter change
            self.rank_box.addItem(f"rank {r}", int(r))
        self.table.setModel(self.table_model)
        # highest score first; the indicator is set before sorting is enabled, which sorts once by it (enabling
        # first sorted by column 0 too: a second full sort, 30 ms at 480,000 anomalies on the GUI thread)
        self.table.horizontalHeader().setSortIndicator(6, QtCore.Qt.SortOrder.AscendingOrder)
        self.table.setSortingEnabled(True)
        self.table.setColumnWidth(1, 320)

    def _findings_title(self) -> str:
        if not self.run.has_detection:
            return "Findings: not analysed (no detection results in this store)"
        if not self.run.findings:
            return "Findings: none — no anomaly found in this run"
        return f"Findings ({len(self.run.findings)}), most confident first — click one to go there"

    def _refilter(self) -> None:
        self.table_model.set_filter(
            self.comp_box.currentData(), self.rank_box.currentData(), self.role_box.currentData()
        )
