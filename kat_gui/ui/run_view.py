"""Everything about one opened run: a verdict banner, the timelines (dominant), findings/anomalies/details
below, topology and explanation on the right. Panels talk through signals; none knows another's internals."""

from __future__ import annotations

from PySide6 import QtCore, QtWidgets

from kat_gui.ui.details import DetailsPanel
from kat_gui.ui.explain_panel import ExplanationPanel
from kat_gui.ui.findings import FindingsPanel
from kat_gui.ui.heatmap_view import HeatmapView
from kat_gui.ui.notes_panel import NotesPanel
from kat_gui.ui.run_model import RunModel, esc, fmt_ns
from kat_gui.ui.scale import LARGE_RUN_RANKS, cell_ranks, focus_ranks, parse_rank_filter
from kat_gui.ui.timeline import TimelineView
from kat_gui.ui.topology_view import TopologyView
from kat_gui.ui.turns import next_turn


def verdict_html(m: RunModel) -> tuple[str, str]:
    """(html, background colour) of the one-line verdict above the timeline."""
    if not m.has_detection:
        return (
            "<b>Not analysed</b> — no detection results in this store; showing the timelines only.",
            "#EEEEEE",
        )
    if not m.findings:
        return (f"<b>✔ No anomaly found</b> in {esc(m.name)}: {len(m.ranks)} ranks run in step.", "#E3F2E1")
    f = m.findings[0]
    ranks = ", ".join(str(r) for r in f.get("ranks", []))
    where = ""
    if int(f.get("end_ns", 0)) > int(f.get("start_ns", 0)):
        where = f" · from {fmt_ns(int(f['start_ns']) - m.t0_ns)} to {fmt_ns(int(f['end_ns']) - m.t0_ns)}"
    more = f" (+{len(m.findings) - 1} more finding(s))" if len(m.findings) > 1 else ""
    return (
        f"<span style='color:#B71C1C'><b>⚠ {esc(f.get('component_id') or f.get('component', '?'))}"
        f" · {esc(f.get('component', '?'))} · rank {esc(ranks)}</b></span> — {esc(f.get('summary', ''))}"
        f" <span style='color:#555'>(confidence {float(f.get('confidence', 0)):.2f}{where}){esc(more)}</span>",
        "#FDE3E1",
    )


class RunView(QtWidgets.QWidget):
    def __init__(self, model: RunModel, parent=None):
        super().__init__(parent)
        self.model = model
        lay = QtWidgets.QVBoxLayout(self)
        lay.setContentsMargins(2, 2, 2, 2)
        lay.setSpacing(2)
        text, bg = verdict_html(model)
        self.banner = QtWidgets.QLabel(text)
        self.banner.setWordWrap(True)
        self.banner.setStyleSheet(f"background:{bg}; padding:6px; font-size:13px; border-radius:3px")
        lay.addWidget(self.banner)

        self.timeline = TimelineView(model)
        self.findings = FindingsPanel(model)
        self.details = DetailsPanel(model)
        self.topology = TopologyView(model)
        self.explanation = ExplanationPanel(model)
        self.notes = NotesPanel(model, self.note_context)

        self.bottom = QtWidgets.QTabWidget()
        self.bottom.addTab(self.findings, "Findings && anomalies")
        self.bottom.addTab(self.details, "Details")
        self.bottom.addTab(self.notes, "Notes")
        self._notes_tab_title()
        if model.notes is not None:
            model.notes.connect(lambda _ev: self._notes_tab_title())
        # Large runs (more ranks than fit as lanes): the rank x step overview on top, and the lanes start on the
        # implicated ranks and a few reference peers; the filter line takes numbers, ranges, hosts, keywords.
        self.large = len(model.ranks) > LARGE_RUN_RANKS
        self.heatmap: HeatmapView | None = None
        self.filter_edit = QtWidgets.QLineEdit()
        self.filter_edit.setPlaceholderText(
            "all ranks — or e.g. 509, 500-511, host63, implicated, waiting, focus (Enter)"
        )
        self.filter_edit.setClearButtonEnabled(True)
        self.filter_edit.setFocusPolicy(QtCore.Qt.FocusPolicy.ClickFocus)  # keys stay with the timeline
        self.filter_edit.returnPressed.connect(self.apply_filter_text)
        self.filter_msg = QtWidgets.QLabel()
        self.filter_msg.setStyleSheet("color:#555")
        bar = QtWidgets.QHBoxLayout()
        bar.setContentsMargins(4, 0, 4, 0)
        bar.addWidget(QtWidgets.QLabel("Lanes:"))
        bar.addWidget(self.filter_edit, 1)
        bar.addWidget(self.filter_msg)
        tl_box = QtWidgets.QWidget()
        tl_lay = QtWidgets.QVBoxLayout(tl_box)
        tl_lay.setContentsMargins(0, 0, 0, 0)
        tl_lay.setSpacing(1)
        tl_lay.addLayout(bar)
        tl_lay.addWidget(self.timeline, 1)
        left = QtWidgets.QSplitter(QtCore.Qt.Orientation.Vertical)
        if self.large:
            self.heatmap = HeatmapView(model)
            self.heatmap.cellActivated.connect(self.goto_cell)
            left.addWidget(self.heatmap)
        left.addWidget(tl_box)
        left.addWidget(self.bottom)
        if self.large:
            left.setSizes([300, 400, 170])
        else:
            left.setStretchFactor(0, 3)
            left.setStretchFactor(1, 1)
            left.setSizes([640, 230])
        if self.large and focus_ranks(model):
            self.filter_edit.setText("focus")
            self.apply_filter_text()
        right = QtWidgets.QSplitter(QtCore.Qt.Orientation.Vertical)
        right.addWidget(self.topology)
        right.addWidget(self.explanation)
        right.setSizes([360, 520])
        self.split = QtWidgets.QSplitter(QtCore.Qt.Orientation.Horizontal)
        self.split.addWidget(left)
        self.split.addWidget(right)
        self.split.setStretchFactor(0, 3)
        self.split.setStretchFactor(1, 1)
        self.split.setSizes([1180, 420])
        lay.addWidget(self.split, 1)
        # A new tab paints in steps, each in its own event-loop turn, so that none holds the GUI thread long (a
        # heartbeat on the GUI thread gets in between): first the tab is built and laid out, then the banner and
        # the timeline paint, then a large run's overview, then the panels below and beside it (tables,
        # topology, text).
        self._later: list[tuple[QtWidgets.QWidget, ...]] = [(self.bottom, right)]
        if self.heatmap is not None:
            self._later.insert(0, (self.heatmap,))
        for group in self._later:
            for w in group:
                w.setUpdatesEnabled(False)
        self.setUpdatesEnabled(False)
        next_turn(self, self._paint_step)

        self.timeline.eventSelected.connect(self._on_select)
        self.findings.anomalyActivated.connect(self.goto_anomaly)
        self.findings.findingActivated.connect(self.goto_finding)
        self.topology.ranksSelected.connect(self._on_ranks)
        self.explanation.evidenceActivated.connect(self.goto_window)
        self.notes.noteActivated.connect(self.goto_note)

    def building(self) -> bool:
        """True while the tab is still being built or painted in steps (see ``_paint_step``)."""
        return bool(self._later) or not self.updatesEnabled() or self.topology.building()

    def _paint_step(self) -> None:
        if not self.updatesEnabled():
            self.setUpdatesEnabled(True)  # the banner and the timeline (the rest stays off)
        elif self._later:
            for w in self._later.pop(0):
                w.setUpdatesEnabled(True)
        if self._later:
            next_turn(self, self._paint_step)

    def _notes_tab_title(self) -> None:
        try:
            n = len(self.model.read_only_notes)
            self.bottom.setTabText(self.bottom.indexOf(self.notes), f"Notes ({n})" if n else "Notes")
        except RuntimeError:  # closed view
            pass

    def note_context(self) -> dict:
        """What a new note is pinned to: the view range, the selected kernel and its (or the culprit) rank."""
        t0, t1 = self.timeline.x_range_ns()
        sel = self.timeline.selected
        rank = self.model.rank_of_track(sel[0]) if sel is not None else None
        if rank is None:
            culprits = self.model.culprit_ranks()
            rank = culprits[0] if culprits else None
        return {
            "start_ns": max(t0, self.model.t0_ns),
            "end_ns": min(t1, self.model.t1_ns),
            "selected": sel,
            "selected_span": self.timeline.selected_span,
            "rank": rank,
        }

    def goto_note(self, ann_id: int) -> None:
        """Show a note: zoom to its time range (or highlight its rank) and outline it on the timeline."""
        notes = {a.id: a for a in self.model.read_only_notes}
        a = notes.get(ann_id)
        if a is None:
            return
        self.timeline.notes_item.selected_id = ann_id
        self.timeline.notes_item.update()
        if a.start_ns is not None:
            end = a.end_ns if a.end_ns is not None else a.start_ns
            self.timeline.zoom_ns(int(a.start_ns), int(end), margin=0.1)
        if a.target == "kernel" and a.track is not None and a.index is not None:
            span = (
                (int(a.start_ns), int(a.end_ns)) if a.start_ns is not None and a.end_ns is not None else None
            )
            self.timeline.set_selected(int(a.track), int(a.index), span)
        if a.rank is not None:
            self.timeline.set_highlight({int(a.rank)} | set(self.model.culprit_ranks()))

    def _on_select(self, track: int, index: int) -> None:
        self.details.show_event(track, index)
        self.bottom.setCurrentWidget(self.details)

    def goto_anomaly(self, row: int) -> None:
        """Zoom to anomaly ``row``, select it, and make sure its rank's lane is shown."""
        rank = int(self.model.anomalies["rank"][row])
        tl = self.timeline
        if tl.rank_filter is not None and rank not in tl.rank_filter:
            if self.large:
                self.set_lanes(set(tl.rank_filter) | {rank})
            else:
                tl.set_rank_filter(None)
                self.topology.clear()
        tl.goto_anomaly(row)
        self.bottom.setCurrentWidget(self.findings)

    def goto_finding(self, i: int) -> None:
        f = self.model.findings[i]
        s, e = int(f.get("start_ns", 0)), int(f.get("end_ns", 0))
        ranks = {int(r) for r in f.get("ranks", [])}
        self.timeline.set_highlight(ranks)
        if e > s:
            self.timeline.zoom_ns(s, e, margin=0.05)
        else:
            self.timeline.fit_all()

    def goto_window(self, start_ns: int, end_ns: int, rank) -> None:
        self.timeline.zoom_ns(int(start_ns), int(end_ns), margin=0.1)
        if rank is not None:
            self.timeline.set_highlight({int(rank)} | set(self.model.culprit_ranks()))

    def _on_ranks(self, ranks: list) -> None:
        if ranks:
            self.set_lanes(set(ranks), f"{len(ranks)} rank(s) from the topology")
        else:
            self.apply_filter_text()

    # ------------------------------------------------------------------ lanes of large runs

    def set_lanes(self, ranks: set[int] | None, why: str = "") -> None:
        """Show only ``ranks`` as lanes (None = all); says how many in the filter bar."""
        self.timeline.set_rank_filter(ranks)
        n = len(ranks) if ranks else len(self.model.ranks)
        self.filter_msg.setStyleSheet("color:#555")
        self.filter_msg.setText(f"{n} of {len(self.model.ranks)} ranks" + (f" · {why}" if why else ""))

    def apply_filter_text(self) -> None:
        """Apply the filter line (see ``scale.parse_rank_filter``); an error is shown beside it."""
        text = self.filter_edit.text()
        try:
            ranks = parse_rank_filter(text, self.model)
        except ValueError as exc:
            self.filter_msg.setStyleSheet("color:#B71C1C")
            self.filter_msg.setText(str(exc))
            return
        why = "implicated + reference peers" if text.strip().lower() == "focus" else ""
        self.set_lanes(ranks, why)

    def goto_cell(self, rank: int, start_ns: int, end_ns: int) -> None:
        """A heatmap click: that rank's lane with reference lanes (the focus set, or its own peers) at that step."""
        keep = set(self.timeline.rank_filter or cell_ranks(self.model, int(rank)))
        self.set_lanes(keep | {int(rank)}, f"rank {rank} from the overview")
        self.timeline.set_highlight({int(rank)} | set(self.model.culprit_ranks()))
        self.timeline.zoom_ns(int(start_ns), int(end_ns), margin=0.05)

    def close_run(self) -> None:
        self.explanation.stop()
        self.model.close()
