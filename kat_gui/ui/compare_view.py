"""Run-vs-run comparison: the degraded run above its healthy twin, zoom and pan synchronized on aligned steps
(each run's time measured from its anchor step), and the ranked diff table of :mod:`kat_gui.compare` beside
them. Clicking a diff row moves both timelines to that kernel (its most slowed-down instance in the degraded
run and the same kernel at the aligned place of the healthy run), and from then on the two views stay lined
up on that pair. The diff runs on a worker thread; until it is ready, both runs are aligned at their starts.

The diff table is a ``QTableView`` over :class:`DiffTableModel`: significant rows first (in the comparison's
ranked order), then the others; a click on a header sorts each of the two parts by that column, *significant
only* hides the others. Its sort keys are numpy columns made on the worker (``diff_columns``) and its order a
permutation, so 64 ranks x 1,000 kernels (64k rows) fill, sort and filter in milliseconds and Qt formats only
the rows on screen.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from PySide6 import QtCore, QtGui, QtWidgets

from kat_gui.ui.run_model import RunModel, esc, fmt_ns
from kat_gui.ui.timeline import TimelineView
from kat_gui.ui.workers import Job, submit

SLOWER = "#C62828"
FASTER = "#1565C0"
GREY = "#8A8A8A"
WINDOW_BRUSH = (255, 179, 0, 50)  # the steps a located change covers, shaded on both timelines
WINDOW_PEN = "#FFB300"
DIFF_HEADERS = ("kind", "what", "rank", "healthy p50", "degraded p50", "Δ p50", "effect", "q")


def compute_comparison(healthy: str, degraded: str, progress=None) -> dict[str, Any]:
    """Load both runs and diff them (a worker's job): ``{"comparison", "healthy", "degraded", "table"}`` with
    the loaded :class:`kat_gui.compare.run.RunData` kept so rows can be located in each run, and the diff
    table's sort columns (``diff_columns``)."""
    from kat_gui.compare.engine import compare_runs
    from kat_gui.compare.run import load_run
    from kat_gui.progress import scaled

    h = load_run(healthy, scaled(progress, 0.0, 0.4))
    d = load_run(degraded, scaled(progress, 0.4, 0.8))
    c = compare_runs(h, d, None, None, scaled(progress, 0.8, 1.0))
    return {"comparison": c, "healthy": h, "degraded": d, "table": diff_columns(c.differences)}


def diff_columns(diffs: list) -> dict[str, np.ndarray]:
    """The diff table's sort keys, one array per column of ``DIFF_HEADERS`` plus ``significant`` (made once,
    on the worker: 64k rows of attribute reads would hold the GUI thread for tens of ms)."""
    n = len(diffs)

    def f(get) -> np.ndarray:
        return np.fromiter((get(d) for d in diffs), np.float64, n)

    def codes(get) -> np.ndarray:  # text sorts by its rank among the distinct values
        return np.unique(np.array([get(d) for d in diffs], dtype=object).astype(str), return_inverse=True)[1]

    if not n:
        z = np.zeros(0)
        return {"significant": z.astype(bool), **{h: z for h in DIFF_HEADERS}}
    effect = f(lambda d: d.effect)
    return {
        "significant": np.fromiter((bool(d.significant) for d in diffs), bool, n),
        "kind": codes(lambda d: d.kind),
        "what": codes(lambda d: d.label),
        "rank": f(lambda d: -1.0 if d.rank is None else d.rank),
        "healthy p50": f(lambda d: d.p50_healthy_ns if d.n_healthy else -np.inf),
        "degraded p50": f(lambda d: d.p50_degraded_ns if d.n_degraded else -np.inf),
        "Δ p50": f(lambda d: d.delta_p50_ns),
        "effect": np.where(np.isfinite(effect), effect, np.inf),  # "new" sorts above every change
        "q": f(lambda d: d.q_value),
    }


class DiffTableModel(QtCore.QAbstractTableModel):
    """The diff rows for a ``QTableView`` (see the module docstring): ``order`` maps view rows to diffs."""

    def __init__(self, parent: QtCore.QObject | None = None):
        super().__init__(parent)
        self.diffs: list = []
        self.cols: dict[str, np.ndarray] = diff_columns([])
        self.order = np.zeros(0, np.int64)
        self.only_significant = False
        self._sort: tuple[int, QtCore.Qt.SortOrder] = (-1, QtCore.Qt.SortOrder.AscendingOrder)

    def set_diffs(self, diffs: list, cols: dict[str, np.ndarray] | None = None) -> None:
        self.beginResetModel()
        self.diffs = list(diffs)
        self.cols = (
            cols if cols is not None and len(cols["significant"]) == len(self.diffs) else diff_columns(diffs)
        )
        self._reorder()
        self.endResetModel()

    def set_only_significant(self, on: bool) -> None:
        self.beginResetModel()
        self.only_significant = bool(on)
        self._reorder()
        self.endResetModel()

    def sort(self, column: int, order=QtCore.Qt.SortOrder.AscendingOrder) -> None:
        self.layoutAboutToBeChanged.emit()
        self._sort = (int(column), order)
        self._reorder()
        self.layoutChanged.emit()

    def _reorder(self) -> None:
        sig = self.cols["significant"]
        col, order = self._sort
        if 0 <= col < len(DIFF_HEADERS):
            key = np.unique(self.cols[DIFF_HEADERS[col]], return_inverse=True)[1].astype(np.int64)
            if order == QtCore.Qt.SortOrder.DescendingOrder:
                key = -key
            idx = np.lexsort((key, ~sig))  # significant first, then by the column; stable: ranked order
        else:
            idx = np.argsort(~sig, kind="stable")  # the comparison's ranking, significant rows first
        self.order = idx[sig[idx]] if self.only_significant else idx

    def diff(self, row: int):
        return self.diffs[int(self.order[row])]

    def rows(self) -> list:
        return [self.diffs[i] for i in self.order]

    def rowCount(self, parent=None) -> int:
        return 0 if parent is not None and parent.isValid() else len(self.order)

    def columnCount(self, parent=None) -> int:
        return 0 if parent is not None and parent.isValid() else len(DIFF_HEADERS)

    def headerData(self, section, orientation, role=QtCore.Qt.ItemDataRole.DisplayRole):
        if role == QtCore.Qt.ItemDataRole.DisplayRole and orientation == QtCore.Qt.Orientation.Horizontal:
            return DIFF_HEADERS[section]
        return None

    def data(self, index, role=QtCore.Qt.ItemDataRole.DisplayRole):
        if not index.isValid():
            return None
        d = self.diff(index.row())
        c = index.column()
        if role == QtCore.Qt.ItemDataRole.DisplayRole:
            return diff_cells(d)[c]
        if role == QtCore.Qt.ItemDataRole.ForegroundRole and (c >= 5 or c == 1):
            return QtGui.QColor(delta_color(d))
        if role == QtCore.Qt.ItemDataRole.ToolTipRole and c == 1:
            return f"<b>{esc(d.label)}</b><br>{esc(d.note)}"
        return None


def diff_cells(d) -> tuple[str, ...]:
    """The texts of one diff row, in ``DIFF_HEADERS`` order."""
    return (
        d.kind,
        d.label,
        "" if d.rank is None else str(d.rank),
        fmt_ns(d.p50_healthy_ns) if d.n_healthy else "—",
        fmt_ns(d.p50_degraded_ns) if d.n_degraded else "—",
        f"{'+' if d.delta_p50_ns > 0 else ''}{fmt_ns(d.delta_p50_ns)}",
        f"{d.effect:+.1%}" if np.isfinite(d.effect) else "new",
        f"{d.q_value:.2g}",
    )


def delta_color(d) -> str:
    """Red when the degraded run is slower, blue when faster, grey when the change is not significant."""
    if not d.significant:
        return GREY
    return SLOWER if d.effect > 0 or d.delta_p50_ns > 0 else FASTER


def _short(text: str, n: int = 70) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


def _anchor_ns(run, step: int) -> int | None:
    sr = run.step_rank
    sel = sr["step"] == step
    return int(sr["start_ns"][sel].min()) if sel.any() else None


def locate(
    run, d, anchor_step: int, prefer_max: bool, near_ns: int | None = None, flagged: np.ndarray | None = None
) -> dict | None:
    """The instance of diff row ``d`` to show in ``run`` (RunData): the longest one (``prefer_max``) or the
    one starting nearest ``near_ns``. Kernel rows match by name, class rows by class, both on ``d.rank``
    when set; rank rows and step rows give the step's span instead. Returns track/index/start_ns/end_ns
    (track -1 for a span). ``flagged``: sorted ``track << 40 | index`` keys of the detector's anomalies,
    preferred over the merely longest instance (the longest can be a warm-up outlier)."""
    g = run.gpu
    steps = g["step"]
    in_steps = steps >= anchor_step
    sel = None
    if d.kind in ("kernel", "kernel_rank", "only_healthy", "only_degraded") and d.name:
        try:
            nid = run.names.index(d.name)
        except ValueError:
            return None
        sel = (g["name"] == nid) & in_steps
    elif d.kind in ("class", "class_rank") and d.kernel_class:
        from kat_gui.detect.classify import CLASS_NAMES

        if d.kernel_class not in CLASS_NAMES:
            return None
        sel = (g["cls"] == CLASS_NAMES.index(d.kernel_class)) & in_steps
    if sel is not None:
        if d.rank is not None and (sel & (g["rank"] == d.rank)).any():
            sel &= g["rank"] == d.rank
        idx = np.flatnonzero(sel)
        if not len(idx):
            return None
        if flagged is not None and len(flagged) and near_ns is None:
            keys = (g["track"][idx].astype(np.int64) << 40) | g["index"][idx].astype(np.int64)
            pos = np.clip(np.searchsorted(flagged, keys), 0, len(flagged) - 1)
            hit = flagged[pos] == keys
            if hit.any():
                idx = idx[hit]
        if near_ns is not None:
            i = int(idx[np.argmin(np.abs(g["start_ns"][idx] - near_ns))])
        else:
            i = int(idx[np.argmax(g["dur_ns"][idx])]) if prefer_max else int(idx[0])
        return {
            "track": int(g["track"][i]),
            "index": int(g["index"][i]),
            "start_ns": int(g["start_ns"][i]),
            "end_ns": int(g["start_ns"][i] + g["dur_ns"][i]),
        }
    # Rank and step rows: the step where the degraded rank (or the run) is slowest.
    sr = run.step_rank
    m = sr["step"] >= anchor_step
    if d.rank is not None and (m & (sr["rank"] == d.rank)).any():
        m &= sr["rank"] == d.rank
    idx = np.flatnonzero(m)
    if not len(idx):
        return None
    if near_ns is not None:
        i = int(idx[np.argmin(np.abs(sr["start_ns"][idx] - near_ns))])
    else:
        span = sr["end_ns"][idx] - sr["start_ns"][idx]
        i = int(idx[np.argmax(span)]) if prefer_max else int(idx[0])
    return {"track": -1, "index": -1, "start_ns": int(sr["start_ns"][i]), "end_ns": int(sr["end_ns"][i])}


class CompareView(QtWidgets.QWidget):
    """``degraded`` above ``healthy`` (RunModels, owned by the caller), diff table on the right."""

    comparisonReady = QtCore.Signal()
    jobStarted = QtCore.Signal(object)

    def __init__(self, healthy: RunModel, degraded: RunModel, parent=None):
        super().__init__(parent)
        self.healthy = healthy
        self.degraded = degraded
        self.result: dict[str, Any] | None = None
        self.error = ""  # why the diff failed, when it did
        self.job: Job | None = None
        # Seconds to add to a degraded-view x to get the healthy-view x showing the aligned moment.
        self.offset_s = 0.0
        self._syncing = False

        lay = QtWidgets.QVBoxLayout(self)
        lay.setContentsMargins(2, 2, 2, 2)
        self.banner = QtWidgets.QLabel()
        self.banner.setWordWrap(True)
        # Long kernel names must not widen the whole window (a tab's minimum width is the window's).
        self.banner.setMinimumWidth(100)
        self.banner.setSizePolicy(
            QtWidgets.QSizePolicy.Policy.Ignored, QtWidgets.QSizePolicy.Policy.Preferred
        )
        self.banner.setStyleSheet("background:#EEF3FA; padding:6px; font-size:13px; border-radius:3px")
        lay.addWidget(self.banner)

        self.top = TimelineView(degraded)
        self.bottom = TimelineView(healthy)
        self.bottom.set_highlight(set())
        left = QtWidgets.QSplitter(QtCore.Qt.Orientation.Vertical)
        for title, tl, color in (
            (f"degraded: {degraded.name}", self.top, "#B71C1C"),
            (f"healthy: {healthy.name}", self.bottom, "#2E7D32"),
        ):
            box = QtWidgets.QWidget()
            v = QtWidgets.QVBoxLayout(box)
            v.setContentsMargins(0, 0, 0, 0)
            v.setSpacing(0)
            lab = QtWidgets.QLabel(f"<b style='color:{color}'>{esc(title)}</b>")
            v.addWidget(lab)
            v.addWidget(tl, 1)
            left.addWidget(box)

        right = QtWidgets.QWidget()
        rv = QtWidgets.QVBoxLayout(right)
        rv.setContentsMargins(0, 0, 0, 0)
        self.table_title = QtWidgets.QLabel("<b>Differences</b> — computing…")
        self.table_title.setWordWrap(True)
        rv.addWidget(self.table_title)
        self.only_sig = QtWidgets.QCheckBox("significant only")
        self.only_sig.toggled.connect(self._only_significant)
        rv.addWidget(self.only_sig)
        self.table_model = DiffTableModel(self)
        self.table = QtWidgets.QTableView()
        self.table.setModel(self.table_model)
        self.table.verticalHeader().hide()
        self.table.setSelectionBehavior(QtWidgets.QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QtWidgets.QAbstractItemView.SelectionMode.SingleSelection)
        self.table.setEditTriggers(QtWidgets.QAbstractItemView.EditTrigger.NoEditTriggers)
        header = self.table.horizontalHeader()
        header.setStretchLastSection(False)
        header.setResizeContentsPrecision(200)  # widths from the first rows, not from 64k
        header.setSortIndicator(-1, QtCore.Qt.SortOrder.AscendingOrder)  # start in the ranked order
        self.table.setSortingEnabled(True)
        self.table.setWordWrap(False)
        self.table.setMinimumWidth(200)
        self.table.setHorizontalScrollBarPolicy(QtCore.Qt.ScrollBarPolicy.ScrollBarAsNeeded)
        self.table.setTextElideMode(QtCore.Qt.TextElideMode.ElideMiddle)
        self.table.clicked.connect(lambda idx: self.goto_row(idx.row()))
        rv.addWidget(self.table, 1)
        legend = QtWidgets.QLabel(
            f"<span style='color:{SLOWER}'>■ slower</span> · <span style='color:{FASTER}'>■ faster</span> · "
            f"<span style='color:{GREY}'>■ not significant</span> · click a row: both runs jump to it"
        )
        rv.addWidget(legend)

        split = QtWidgets.QSplitter(QtCore.Qt.Orientation.Horizontal)
        split.addWidget(left)
        split.addWidget(right)
        split.setStretchFactor(0, 3)
        split.setStretchFactor(1, 2)
        split.setSizes([1000, 600])
        lay.addWidget(split, 1)

        self.top.rangeChanged.connect(lambda a, b: self._sync(self.top, a, b))
        self.bottom.rangeChanged.connect(lambda a, b: self._sync(self.bottom, a, b))
        self._set_banner()
        self.top.fit_all()

    # ------------------------------------------------------------------ sync

    def _sync(self, src: TimelineView, x0: float, x1: float) -> None:
        if self._syncing:
            return
        self._syncing = True
        try:
            if src is self.top:
                self.bottom.set_x_range(x0 + self.offset_s, x1 + self.offset_s)
            else:
                self.top.set_x_range(x0 - self.offset_s, x1 - self.offset_s)
        finally:
            self._syncing = False

    def align(self, degraded_ns: int, healthy_ns: int) -> None:
        """Line up moment ``degraded_ns`` of the degraded run with ``healthy_ns`` of the healthy one."""
        self.offset_s = ((healthy_ns - self.healthy.t0_ns) - (degraded_ns - self.degraded.t0_ns)) / 1e9
        x0, x1 = self.top.x_range()
        self._sync(self.top, x0, x1)

    # ------------------------------------------------------------------ diff

    def start(self) -> Job:
        hp, dp = str(self.healthy.path), str(self.degraded.path)

        def work(job: Job):
            return compute_comparison(hp, dp, job.progress)

        job = Job("comparing runs", work)
        job.signals.done.connect(self.set_result)
        job.signals.failed.connect(
            lambda msg, _d: self.table_title.setText(f"<b>Differences</b> — {esc(msg)}")
        )
        self.job = job
        self.jobStarted.emit(job)
        submit(job)
        return job

    def _failed(self, message: str, detail: str) -> None:
        self.error = f"{message}\n{detail}".strip()
        self.table_title.setText(f"<b>Differences</b> — {esc(message)}")

    def set_result(self, result: dict[str, Any]) -> None:
        self.result = result
        c = result["comparison"]
        al = c.alignment
        a_h = _anchor_ns(result["healthy"], int(al.get("anchor_healthy_step", 0)))
        a_d = _anchor_ns(result["degraded"], int(al.get("anchor_degraded_step", 0)))
        if a_h is not None and a_d is not None:
            self.align(a_d, a_h)
        self._set_banner()
        self._fill_table()
        self.mark_window()
        self.comparisonReady.emit()

    def _set_banner(self) -> None:
        if self.result is None:
            self.banner.setText(
                f"<b>Comparing</b> {esc(self.degraded.name)} (degraded, top) with {esc(self.healthy.name)} "
                "(healthy, below) — aligned at their starts until the step alignment is computed…"
            )
            return
        c = self.result["comparison"]
        al = c.alignment
        sig = c.significant()
        top = sig[0] if sig else None
        what = (
            f"largest significant change: <b style='color:{SLOWER}'>{esc(_short(top.label))}</b> ({top.effect:+.0%})"
            if top is not None
            else "no significant difference"
        )
        if top is not None and top.window is not None:
            a, b = top.window["steps"]
            what += f" in steps {a}-{b} (shaded)"
        self.banner.setText(
            f"<b>Comparing</b> {esc(self.degraded.name)} (degraded, top) with {esc(self.healthy.name)} "
            f"(healthy, below) · aligned on step {al.get('anchor_degraded_step')} ↔ "
            f"{al.get('anchor_healthy_step')}, {al.get('steps_compared')} steps compared · "
            f"{len(sig)} significant difference(s); {what}"
        )

    @property
    def rows(self) -> list:
        """The diff rows in the table's current order (what row ``i`` of the view shows)."""
        return self.table_model.rows()

    def _only_significant(self, on: bool) -> None:
        self.table_model.set_only_significant(on)

    def _fill_table(self) -> None:
        if self.result is None:
            return
        c = self.result["comparison"]
        n_sig = int(np.count_nonzero(self.result["table"]["significant"])) if "table" in self.result else None
        if n_sig is None:
            n_sig = len(c.significant())
        self.table_title.setText(
            f"<b>Differences</b> — {n_sig} significant of {len(c.differences)} "
            "(ranked: causes, then symptoms; significant first)"
        )
        self.table_model.only_significant = self.only_sig.isChecked()
        self.table_model.set_diffs(c.differences, self.result.get("table"))
        self.table.resizeColumnsToContents()
        self.table.setColumnWidth(1, min(self.table.columnWidth(1), 260))

    def goto_row(self, row: int) -> bool:
        """Both timelines to diff row ``row`` (of the table's current order); False when the row names
        nothing that can be shown."""
        if self.result is None or not 0 <= row < self.table_model.rowCount():
            return False
        d = self.table_model.diff(row)
        c = self.result["comparison"]
        if d.window is not None:
            self.mark_window(d)
        al = c.alignment
        a_hs = int(al.get("anchor_healthy_step", 0))
        a_ds = int(al.get("anchor_degraded_step", 0))
        an = self.degraded.anomalies
        flagged = np.sort((an["track"].astype(np.int64) << 40) | an["index"].astype(np.int64))
        hit_d = locate(self.result["degraded"], d, a_ds, prefer_max=True, flagged=flagged)
        if hit_d is None:
            return False
        near = None
        a_h = _anchor_ns(self.result["healthy"], a_hs)
        a_d = _anchor_ns(self.result["degraded"], a_ds)
        if a_h is not None and a_d is not None:
            near = hit_d["start_ns"] - a_d + a_h
        hit_h = locate(self.result["healthy"], d, a_hs, prefer_max=False, near_ns=near)
        s, e = hit_d["start_ns"], hit_d["end_ns"]
        self.top.zoom_ns(s, e, margin=3.0 if hit_d["track"] >= 0 else 0.1)
        if hit_d["track"] >= 0:
            self.top.select(hit_d["track"], hit_d["index"], (hit_d["start_ns"], hit_d["end_ns"]))
        if hit_h is not None:
            self.align(s, hit_h["start_ns"])
            if hit_h["track"] >= 0:
                self.bottom.select(hit_h["track"], hit_h["index"], (hit_h["start_ns"], hit_h["end_ns"]))
        return True

    def mark_window(self, d=None) -> bool:
        """Shade the window of steps in which diff row ``d`` changed (default: the first row located in
        time) on both timelines, lanes and overview, each run at its own steps' times; clear the shading
        when there is none. True when a window is shown (``window_row`` is then its row)."""
        import pyqtgraph as pg

        for plot, item in getattr(self, "_window_items", []):
            plot.removeItem(item)
        self._window_items: list = []
        if d is None and self.result is not None:
            d = next((x for x in self.result["comparison"].differences if x.window is not None), None)
        self.window_row = d if d is not None and d.window is not None else None
        if self.window_row is None:
            return False
        w = self.window_row.window
        for tl, model, key in (
            (self.top, self.degraded, "degraded_ns"),
            (self.bottom, self.healthy, "healthy_ns"),
        ):
            a, b = ((t - model.t0_ns) / 1e9 for t in w[key])
            for plot in (tl.plot.getPlotItem(), tl.overview_box):
                item = pg.LinearRegionItem(
                    (a, b), movable=False, brush=pg.mkBrush(*WINDOW_BRUSH), pen=pg.mkPen(WINDOW_PEN)
                )
                item.setZValue(1)  # over the lanes, under anomalies, selection and notes
                item.setToolTip(f"steps {w['steps'][0]}-{w['steps'][1]}: {self.window_row.label}")
                plot.addItem(item)
                self._window_items.append((plot, item))
        return True

    # ------------------------------------------------------------------ lifetime

    def close_view(self) -> None:
        if self.job is not None:
            self.job.cancel()
