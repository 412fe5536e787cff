"""The explanation panel: the diagnosis in words, streamed as the local model writes it, with hypotheses
whose evidence items are clickable (zoom the timeline to that window).

Runs ``kat_gui.explain.explain_store`` on a worker thread. When the explain stage is not available, the
panel shows the detection findings' summaries and evidence instead and says so.
"""

from __future__ import annotations

from PySide6 import QtCore, QtWidgets

from kat_gui.ui.run_model import RunModel, esc, fmt_ns
from kat_gui.ui.workers import Job, submit

EVIDENCE_ROLE = QtCore.Qt.ItemDataRole.UserRole + 1


def explainer():
    """``kat_gui.explain.explain_store`` or None when the explain stage is not built/installed."""
    try:
        from kat_gui.explain import explain_store  # type: ignore[attr-defined]
    except Exception:
        return None
    return explain_store


class ExplanationPanel(QtWidgets.QWidget):
    """Emits ``evidenceActivated(start_ns, end_ns, rank)`` when an evidence item is clicked."""

    evidenceActivated = QtCore.Signal(object, object, object)
    jobStarted = QtCore.Signal(object)

    def __init__(self, model: RunModel, parent=None):
        super().__init__(parent)
        self.run = model
        self.job: Job | None = None
        self.result = None
        self.use_llm = True
        self._streamed: list[str] = []
        lay = QtWidgets.QVBoxLayout(self)
        lay.setContentsMargins(4, 4, 4, 4)
        head = QtWidgets.QHBoxLayout()
        self.source_label = QtWidgets.QLabel("<b>Explanation</b>")
        self.source_label.setWordWrap(True)
        head.addWidget(self.source_label, 1)
        self.run_btn = QtWidgets.QPushButton("Explain")
        self.model_path: str | None = None
        self.use_adapter = True
        self.run_btn.clicked.connect(lambda: self.start(self.use_llm, self.model_path, self.use_adapter))
        self.stop_btn = QtWidgets.QPushButton("Stop")
        self.stop_btn.setEnabled(False)
        self.stop_btn.clicked.connect(self.stop)
        head.addWidget(self.run_btn)
        head.addWidget(self.stop_btn)
        lay.addLayout(head)
        self.text = QtWidgets.QTextBrowser()
        self.text.setOpenLinks(False)
        lay.addWidget(self.text, 2)
        self.tree = QtWidgets.QTreeWidget()
        self.tree.setHeaderLabels(["hypotheses · evidence (click to see it) · next checks"])
        self.tree.itemClicked.connect(self._clicked)
        lay.addWidget(self.tree, 3)

    # ------------------------------------------------------------------ running

    def start(
        self, use_llm: bool = True, model_path: str | None = None, use_adapter: bool = True
    ) -> Job | None:
        """Explain the run on a worker thread; ``model_path`` (a user GGUF) or the bundled model, with KAT's
        explainer adapter unless ``use_adapter`` is False. The panel's own button repeats the last options."""
        fn = explainer()
        if fn is None:
            self.show_findings_only()
            return None
        if self.job is not None and self.job.state in ("pending", "running"):
            return self.job
        self.use_llm = use_llm
        self.model_path, self.use_adapter = model_path, use_adapter
        self._streamed = []
        self.text.setPlainText("")
        self.text.setPlaceholderText("Writing the explanation…")
        self.tree.clear()
        # A new text in the header label re-lays out and repaints the whole tab (a layout request climbs
        # through the splitters to the tab widget): at a large run's opening that was a full repaint while the
        # explanation's worker competes for the GIL. The first run says "writing" in the empty text instead;
        # a re-run replaces the last one's source line.
        if self.result is not None:
            self.source_label.setText("<b>Explanation</b> — writing…")
        path = self.run.path

        def work(job: Job):
            return fn(
                path,
                use_llm=use_llm,
                model_path=model_path,
                use_adapter=use_adapter,
                on_token=job.emit_token,
                cancel=lambda: job.is_cancelled,
            )

        job = Job("explanation", work)
        job.signals.token.connect(self._token)
        job.signals.done.connect(self.show_result)
        job.signals.failed.connect(self._failed)
        job.signals.cancelled.connect(lambda: self.source_label.setText("<b>Explanation</b> — stopped"))
        job.signals.finished.connect(lambda: (self.run_btn.setEnabled(True), self.stop_btn.setEnabled(False)))
        self.run_btn.setEnabled(False)
        self.stop_btn.setEnabled(True)
        self.job = job
        self.jobStarted.emit(job)
        submit(job)
        return job

    def stop(self) -> None:
        if self.job is not None:
            self.job.cancel()

    def _token(self, text: str) -> None:
        self._streamed.append(text)
        self.text.setPlainText("".join(self._streamed))
        sb = self.text.verticalScrollBar()
        sb.setValue(sb.maximum())

    def _failed(self, message: str, detail: str) -> None:
        self.source_label.setText(f"<b>Explanation failed</b>: {esc(message)} — showing the findings instead")
        self._fill_findings()

    # ------------------------------------------------------------------ display

    def show_result(self, res) -> None:
        self.result = res
        source = getattr(res, "source", "")
        line = getattr(res, "source_line", None)
        if not line:
            line = (
                "written by the local language model from the detector's facts (grounding-checked)"
                if source == "model"
                else "deterministic summary: " + (getattr(res, "reason", "") or "no language model used")
            )
        tag = "local model" if source == "model" else "fallback"
        self.source_label.setText(f"<b>Explanation</b> [{tag}] — <span style='color:#555'>{esc(line)}</span>")
        self.text.setPlainText(str(getattr(res, "text", "")))
        self.tree.clear()
        for i, h in enumerate(getattr(res, "hypotheses", []) or []):
            conf = float(h.get("confidence", 0.0))
            ranks = ", ".join(str(r) for r in h.get("ranks", []))
            top = QtWidgets.QTreeWidgetItem(
                [
                    f"{i + 1}. {h.get('component_id') or h.get('component', '?')} "
                    f"({h.get('component', '?')}) · rank {ranks} · confidence {conf:.2f}"
                ]
            )
            self.tree.addTopLevelItem(top)
            for ev in h.get("evidence", []) or []:
                self._evidence_item(top, ev)
            checks = h.get("next_checks", []) or []
            if checks:
                node = QtWidgets.QTreeWidgetItem(["next checks"])
                top.addChild(node)
                for c in checks:
                    node.addChild(QtWidgets.QTreeWidgetItem([str(c)]))
            top.setExpanded(i == 0)

    def _evidence_item(self, parent, ev: dict) -> None:
        text = str(ev.get("text", ""))
        s, e = ev.get("start_ns"), ev.get("end_ns")
        when = ""
        if s is not None and e is not None:
            when = f"  [{fmt_ns(int(s) - self.run.t0_ns)} +{fmt_ns(int(e) - int(s))}]"
        item = QtWidgets.QTreeWidgetItem(["• " + text + when])
        item.setToolTip(0, text)
        item.setData(0, EVIDENCE_ROLE, (s, e, ev.get("rank")))
        parent.addChild(item)

    def show_findings_only(self) -> None:
        self.run_btn.hide()
        self.stop_btn.hide()
        self.source_label.setText(
            "<b>Explanations are not available</b> in this build — showing the detector's "
            "findings and their evidence"
        )
        self._fill_findings()

    def _fill_findings(self) -> None:
        m = self.run
        if not m.has_detection:
            self.text.setPlainText("This run has not been analysed: no detection results.")
        elif not m.findings:
            self.text.setPlainText(
                "No anomaly found: the ranks run in step and no kernel deviates from its peers "
                "or its own history beyond the detector's thresholds."
            )
        else:
            self.text.setPlainText(
                "\n".join(f"{i + 1}. {f.get('summary', '')}" for i, f in enumerate(m.findings))
            )
        self.tree.clear()
        for i, f in enumerate(m.findings):
            top = QtWidgets.QTreeWidgetItem([f"{i + 1}. {m.finding_title(f)}"])
            self.tree.addTopLevelItem(top)
            ranks = f.get("ranks", [])
            self._evidence_item(
                top,
                {
                    "text": str(f.get("summary", "")),
                    "start_ns": f.get("start_ns"),
                    "end_ns": f.get("end_ns"),
                    "rank": ranks[0] if ranks else None,
                },
            )
            for k, v in (f.get("evidence") or {}).items():
                val = fmt_ns(v) if k.endswith("_ns") and isinstance(v, (int, float)) else v
                top.addChild(QtWidgets.QTreeWidgetItem([f"{k}: {val}"]))
            top.setExpanded(i == 0)

    def _clicked(self, item: QtWidgets.QTreeWidgetItem, _col: int) -> None:
        data = item.data(0, EVIDENCE_ROLE)
        if not data:
            return
        s, e, rank = data
        if s is None or e is None:
            return
        self.evidenceActivated.emit(int(s), int(e), rank)
