"""The main window: File/View/Help menus, one tab per opened run, a status bar with progress and cancel.

Opening (ingest + detection) and explanations run on worker threads; errors end in a dialog naming the file
and the problem (or, when the window runs non-interactively for --screenshot/--quit, on stderr).
"""

from __future__ import annotations

import base64
import sys
from pathlib import Path

from PySide6 import QtCore, QtGui, QtWidgets

from kat_gui import __version__
from kat_gui.resource_files import resource_path
from kat_gui.ui import collector, loader
from kat_gui.ui.compare_view import CompareView
from kat_gui.ui.reload_bar import ReloadBar
from kat_gui.ui.run_model import RunModel, fmt_ns
from kat_gui.ui.run_view import RunView
from kat_gui.ui.settings import Settings, cache_dir
from kat_gui.ui.timeline import TimelineView, warm_up
from kat_gui.ui.turns import next_turn
from kat_gui.ui.workers import Job, pool, submit

TRACE_FILTER = (
    "Traces and stores (*.kat.h5 *.h5 *.json *.json.gz *.sqlite *.csv *.jsonl);;KAT stores (*.kat.h5);;"
    "All files (*)"
)
ICON = resource_path("icons", "kat.svg")
# On close, how long to wait for cancelled workers to stop before the runs' stores are closed (a cancelled
# detection stops within 0.5 s; a reader inside one huge trace file may take longer).
CLOSE_WAIT_MS = 30_000
EXPLAIN_AFTER_MS = 250  # a new tab's explanation starts after its first paints (open_store)


class MainWindow(QtWidgets.QMainWindow):
    idle = QtCore.Signal()  # no job left running (loading, detection, explanations)

    def __init__(
        self, settings: Settings | None = None, interactive: bool = True, use_llm: bool | None = None
    ):
        super().__init__()
        self.settings = settings or Settings()
        # Explanations by the local model (streamed) or the deterministic narrative only; a setting.
        self.use_llm = bool(self.settings.get("explain_with_model", True)) if use_llm is None else use_llm
        self.interactive = interactive
        self.errors: list[str] = []
        self.jobs: list[Job] = []
        self._explain_pending: set[int] = set()  # tabs whose explanation starts shortly (open_store)
        self.setWindowTitle(f"KAT — kernel anomaly troubleshooter {__version__}")
        if ICON.exists():
            self.setWindowIcon(QtGui.QIcon(str(ICON)))
        self.setAcceptDrops(True)

        self.tabs = QtWidgets.QTabWidget()
        self.tabs.setTabsClosable(True)
        self.tabs.setDocumentMode(True)
        self.tabs.tabCloseRequested.connect(self.close_tab)
        self.tabs.currentChanged.connect(lambda _i: self._update_status())
        self.welcome = self._welcome()
        self.stack = QtWidgets.QStackedWidget()
        self.stack.addWidget(self.welcome)
        self.stack.addWidget(self.tabs)
        self.setCentralWidget(self.stack)

        sb = self.statusBar()
        self.run_label = QtWidgets.QLabel("no run open")
        sb.addPermanentWidget(self.run_label, 1)
        self.progress = QtWidgets.QProgressBar()
        self.progress.setRange(0, 1000)
        self.progress.setMaximumWidth(260)
        self.progress.setTextVisible(True)
        self.progress.hide()
        self.cancel_btn = QtWidgets.QPushButton("Cancel")
        self.cancel_btn.hide()
        self.cancel_btn.clicked.connect(self.cancel_jobs)
        sb.addPermanentWidget(self.progress)
        sb.addPermanentWidget(self.cancel_btn)

        self._build_menus()
        self.reload_bar = ReloadBar(self)  # offers to reload a run another process wrote
        # Pay pyqtgraph's first-widget cost while the window starts, not when the first run opens.
        QtCore.QTimer.singleShot(0, self, self._warm_up)
        geo = self.settings.get("geometry")
        restored = False
        if isinstance(geo, str):
            try:
                restored = self.restoreGeometry(QtCore.QByteArray(base64.b64decode(geo)))
            except ValueError:
                restored = False
        if not restored:
            self.resize(1600, 950)

    # ------------------------------------------------------------------ UI pieces

    def _welcome(self) -> QtWidgets.QWidget:
        w = QtWidgets.QWidget()
        lay = QtWidgets.QVBoxLayout(w)
        lay.addStretch(1)
        lab = QtWidgets.QLabel(
            "<h2>KAT — kernel-level anomaly troubleshooter</h2>"
            "<p>Open per-rank trace files (Kineto JSON, Nsight Systems SQLite, function traces) or a "
            "<code>.kat.h5</code> store — <b>File ▸ Open</b>, or drop them here.</p>"
            "<p>Or look at the demo: a healthy run and its degraded twin — <b>File ▸ Open demo</b>.</p>"
        )
        lab.setAlignment(QtCore.Qt.AlignmentFlag.AlignCenter)
        lab.setWordWrap(True)
        lay.addWidget(lab)
        lay.addStretch(2)
        return w

    def _action(self, menu: QtWidgets.QMenu, text: str, slot, shortcut=None, tip: str = "") -> QtGui.QAction:
        act = QtGui.QAction(text, self)
        if shortcut is not None:
            act.setShortcut(QtGui.QKeySequence(shortcut))
        if tip:
            act.setStatusTip(tip)
        act.triggered.connect(slot)
        menu.addAction(act)
        self.addAction(act)
        return act

    def _build_menus(self) -> None:
        mb = self.menuBar()
        f = mb.addMenu("&File")
        self._action(f, "&Open traces or store…", self.open_dialog, QtGui.QKeySequence.StandardKey.Open)
        self._action(f, "Open trace &folder…", self.open_folder_dialog)
        self.recent_menu = f.addMenu("Open &recent")
        self._rebuild_recent()
        self._action(f, "Open &demo (healthy vs degraded)", self.open_demo)
        self._action(f, "&Compare the current run with a healthy run…", self.compare_dialog)
        f.addSeparator()
        self._action(f, "Save &screenshot…", self.screenshot_dialog)
        self._action(f, "&Export view as PNG…", lambda: self.export_dialog("png"), "Ctrl+E")
        self._action(f, "Export view as S&VG…", lambda: self.export_dialog("svg"))
        self._action(f, "Export &report…", self.report_dialog)
        f.addSeparator()
        self._action(f, "&Quit", self.close, QtGui.QKeySequence.StandardKey.Quit)
        ed = mb.addMenu("&Edit")
        self._action(
            ed,
            "&Undo note change",
            lambda: self._on_view(lambda rv: rv.notes.undo()),
            QtGui.QKeySequence.StandardKey.Undo,
        )
        self._action(
            ed,
            "&Redo note change",
            lambda: self._on_view(lambda rv: rv.notes.redo()),
            QtGui.QKeySequence("Ctrl+Shift+Z"),
        )
        ed.addSeparator()
        self._action(
            ed,
            "Note on the view range…",
            lambda: self._on_view(lambda rv: rv.notes.add_note("time")),
            "Ctrl+M",
        )
        self._action(
            ed, "Note on the selected kernel…", lambda: self._on_view(lambda rv: rv.notes.add_note("kernel"))
        )
        v = mb.addMenu("&View")
        for text, key, fn in (
            ("Zoom in", "W", lambda t: t.zoom(0.5)),
            ("Zoom out", "S", lambda t: t.zoom(2.0)),
            ("Pan left", "A", lambda t: t.pan(-0.25)),
            ("Pan right", "D", lambda t: t.pan(0.25)),
            ("Fit all", "F", lambda t: t.fit_all()),
            ("Zoom to selection", "Z", lambda t: t.zoom_to_selection()),
            ("Next anomaly", "N", lambda t: t.step_anomaly(1)),
            ("Previous anomaly", "P", lambda t: t.step_anomaly(-1)),
            ("Expand/collapse all streams", "E", lambda t: t.toggle_expand(None)),
        ):
            self._action(v, text, lambda _c=False, fn=fn: self._on_timeline(fn), key)
        v.addSeparator()
        self._action(v, "Show all ranks", lambda: self._on_view(lambda rv: rv.topology.clear()))
        e = mb.addMenu("&Explain")
        self.llm_action = self._action(e, "Use the local language model", self._toggle_llm)
        self.llm_action.setCheckable(True)
        self.llm_action.setChecked(self.use_llm)
        self.adapter_action = self._action(
            e,
            "Use KAT's explainer adapter",
            self._toggle_adapter,
            tip="the bundled model with the LoRA adapter trained on KAT's own facts (off: the base model)",
        )
        self.adapter_action.setCheckable(True)
        self.adapter_action.setChecked(bool(self.settings.get("explain_adapter", True)))
        self._action(e, "Model file…", self.choose_model, tip="explain with another GGUF chat model")
        self._action(e, "Use the bundled model", lambda: self.set_model_path(None))
        e.addSeparator()
        self._action(e, "Explain again", lambda: self._on_view(self._explain))
        h = mb.addMenu("&Help")
        self._action(h, "&Keys and mouse", self.show_keys)
        self._action(h, "&About KAT", self.show_about)

    def _explain(self, rv) -> None:
        model = self.settings.get("explain_model") or None
        rv.explanation.start(self.use_llm, model, bool(self.settings.get("explain_adapter", True)))

    def _toggle_adapter(self) -> None:
        self.settings.set("explain_adapter", self.adapter_action.isChecked())
        self.settings.save()

    def set_model_path(self, path: str | None) -> None:
        """Explain with this GGUF file from now on (None: the bundled model); a bad file is reported on use."""
        self.settings.set("explain_model", path)
        self.settings.save()
        self.statusBar().showMessage(f"explanation model: {path or 'bundled'}", 5000)

    def choose_model(self) -> None:
        path, _ = QtWidgets.QFileDialog.getOpenFileName(
            self, "Explanation model (GGUF)", "", "GGUF models (*.gguf);;All files (*)"
        )
        if path:
            self.set_model_path(path)

    def _toggle_llm(self) -> None:
        self.use_llm = self.llm_action.isChecked()
        self.settings.set("explain_with_model", self.use_llm)
        self.settings.save()

    def _rebuild_recent(self) -> None:
        self.recent_menu.clear()
        for p in self.settings.recent:
            act = self.recent_menu.addAction(p)
            act.triggered.connect(lambda _c=False, p=p: self.open_paths([p]))
        self.recent_menu.setEnabled(bool(self.settings.recent))

    def current_compare(self) -> CompareView | None:
        w = self.tabs.currentWidget()
        return w if isinstance(w, CompareView) else None

    def current_view(self) -> RunView | None:
        w = self.tabs.currentWidget()
        return w if isinstance(w, RunView) else None

    def _on_view(self, fn) -> None:
        rv = self.current_view()
        if rv is not None:
            fn(rv)

    def _on_timeline(self, fn) -> None:
        rv = self.current_view()
        if rv is not None:
            fn(rv.timeline)
        cv = self.current_compare()
        if cv is not None:
            fn(cv.top)

    def _update_status(self) -> None:
        rv = self.current_view()
        cv = self.current_compare()
        if cv is not None:
            self.run_label.setText(
                f"comparing {cv.degraded.name} (degraded) with {cv.healthy.name} (healthy)"
            )
            return
        self.run_label.setText(rv.model.summary_line() if rv else "no run open")

    # ------------------------------------------------------------------ jobs

    def start_job(self, job: Job) -> Job:
        self.jobs.append(job)
        job.signals.progress.connect(self._on_progress)
        job.signals.finished.connect(lambda: self._job_finished(job))
        self.progress.setValue(0)
        self.progress.setFormat(f"{job.title} %p%")
        self.progress.show()
        self.cancel_btn.show()
        submit(job)
        return job

    def working(self) -> bool:
        """Whether a job runs, or its results have not reached the window yet (a job leaves ``jobs`` when its
        ``finished`` signal is handled here, after its ``done``: its state is final as soon as the worker
        returns, before the GUI thread has shown what it made), or a new tab's explanation is still to start.
        The progress bar shows while this is true."""
        return bool(self.jobs or self._explain_pending)

    def busy(self) -> bool:
        """``working()``, or a run's tab is still being built in steps."""
        tabs = (self.tabs.widget(i) for i in range(self.tabs.count()))
        return self.working() or any(isinstance(w, RunView) and w.building() for w in tabs)

    def _on_progress(self, frac: float, msg: str) -> None:
        self.progress.setValue(int(frac * 1000))
        if msg:
            self.progress.setFormat(f"{msg[:40]} %p%")

    def _job_finished(self, job: Job) -> None:
        if job in self.jobs and job.state not in ("pending", "running"):
            self.jobs.remove(job)
        if not self.working():
            self.progress.hide()
            self.cancel_btn.hide()
            self.idle.emit()

    def cancel_jobs(self) -> None:
        for j in self.jobs:
            j.cancel()
        self.statusBar().showMessage("cancelling…", 3000)

    def report_error(self, message: str, detail: str = "") -> None:
        self.errors.append(message)
        if not self.interactive:
            print(f"kat gui: {message}", file=sys.stderr)
            return
        box = QtWidgets.QMessageBox(self)
        box.setIcon(QtWidgets.QMessageBox.Icon.Critical)
        box.setWindowTitle("KAT")
        box.setText(message)
        if detail:
            box.setDetailedText(detail)
        box.open()

    # ------------------------------------------------------------------ opening

    def open_dialog(self) -> None:
        start = str(Path(self.settings.recent[0]).parent) if self.settings.recent else ""
        files, _ = QtWidgets.QFileDialog.getOpenFileNames(self, "Open traces or a store", start, TRACE_FILTER)
        if files:
            self.open_paths(files)

    def open_folder_dialog(self) -> None:
        d = QtWidgets.QFileDialog.getExistingDirectory(self, "Open a folder of per-rank traces")
        if d:
            self.open_paths([d])

    def open_paths(self, paths: list, label: str | None = None) -> Job:
        """Ingest/analyse on a worker, then open each resulting store in a tab."""
        paths = [str(p) for p in paths]
        cache = cache_dir()

        def work(job: Job):
            from kat_gui.progress import scaled

            stores = loader.prepare(paths, cache, scaled(job.progress, 0.0, 0.9))
            return loader.load_models(stores, scaled(job.progress, 0.9, 1.0))  # off the GUI thread

        job = Job(f"opening {Path(paths[0]).name}" if paths else "opening", work)
        job.signals.done.connect(lambda loaded: self._opened(paths, loaded, label))
        job.signals.failed.connect(self.report_error)
        job.signals.cancelled.connect(
            lambda: self.statusBar().showMessage("cancelled; nothing was opened", 5000)
        )
        return self.start_job(job)

    def _opened(self, inputs: list, stores: list, label: str | None) -> None:
        for p in inputs:
            self.settings.add_recent(p)
        self.settings.save()
        self._rebuild_recent()
        for s in stores:
            if isinstance(s, tuple):  # (path, RunModel loaded on the worker, or why it could not be)
                self._open_loaded(s, label, tab_later=True)
            else:
                self.open_store(Path(s), label)

    def _open_loaded(
        self, loaded: tuple, label: str | None = None, tab_later: bool = False
    ) -> RunView | None:
        path, model = loaded
        if isinstance(model, str):
            self.report_error(model)
            return None
        return self.open_store(Path(path), label, model=model, tab_later=tab_later)

    def open_store(
        self,
        path: Path,
        label: str | None = None,
        at: int | None = None,
        model: RunModel | None = None,
        tab_later: bool = False,
    ) -> RunView | None:
        """Open a store in a new tab (at index ``at``, else last); None when it cannot be read (reported).
        ``model``: the run already loaded (``loader.load_models`` on a worker); else it is loaded here.
        ``tab_later``: the tab is added in a later event-loop turn than the one that builds the view (each
        takes a while on a large run; busy() counts the view meanwhile)."""
        try:
            model = RunModel(path) if model is None else model
        except Exception as exc:  # a store the detector wrote but we cannot read: say which and why
            msg = str(exc) if str(path) in str(exc) else f"{path}: {exc}"
            self.report_error(msg)
            return None
        view = RunView(model)
        # The explanation starts after the tab's first paints: its worker reads the store and holds the GIL
        # in long reads, which would stretch the turns that paint the new tab. busy() counts it meanwhile.
        key = id(view)
        self._explain_pending.add(key)
        view.destroyed.connect(lambda *_a: self._explain_pending.discard(key))
        if tab_later:
            next_turn(view, lambda: self._add_run_tab(view, path, label, at))
        else:
            self._add_run_tab(view, path, label, at)
        return view

    def _add_run_tab(self, view: RunView, path: Path, label: str | None, at: int | None) -> None:
        title = label or view.model.name
        if view.model.findings:
            title = "⚠ " + title
        idx = self.tabs.addTab(view, title) if at is None else self.tabs.insertTab(at, view, title)
        self.tabs.setTabToolTip(idx, str(path))
        self.stack.setCurrentWidget(self.tabs)
        if self.tabs.count() == 1 or label is None:
            self.tabs.setCurrentIndex(idx)
        view.explanation.jobStarted.connect(self._track_explanation)
        QtCore.QTimer.singleShot(EXPLAIN_AFTER_MS, view, lambda: self._explain_later(view))
        self._update_status()

    def _explain_later(self, view) -> None:
        self._explain_pending.discard(id(view))
        collector.settle()  # the new tab and its run, painted, live until the tab closes
        self._explain(view)

    def _warm_up(self) -> None:
        warm_up()
        collector.settle()  # what lives as long as the window: modules, widgets

    def _track_explanation(self, job: Job) -> None:
        self.jobs.append(job)
        job.signals.finished.connect(lambda: self._job_finished(job))

    def open_demo(self) -> Job:
        """Generate (or reuse) the demo runs; open the degraded one, its healthy twin in a second tab."""

        def work(job: Job):
            from kat_gui.demo import ensure_demo
            from kat_gui.progress import scaled

            healthy, degraded = ensure_demo(progress=scaled(job.progress, 0.0, 0.9))
            # The two tabs' runs and the comparison's own pair, loaded here, off the GUI thread.
            return loader.load_models([degraded, healthy, healthy, degraded], scaled(job.progress, 0.9, 1.0))

        def opened(loaded) -> None:
            v = self._open_loaded(loaded[0], "demo: degraded run")
            self._open_loaded(loaded[1], "demo: healthy twin")
            self._open_compare_loaded(loaded[2], loaded[3], "demo: degraded vs healthy")
            if v is not None:
                self.tabs.setCurrentWidget(v)

        job = Job("building the demo", work)
        job.signals.done.connect(opened)
        job.signals.failed.connect(self.report_error)
        return self.start_job(job)

    # ------------------------------------------------------------------ comparison

    def compare_dialog(self) -> None:
        rv = self.current_view()
        if rv is None:
            self.statusBar().showMessage(
                "open the run to examine first, then compare it with a healthy run", 5000
            )
            return
        files, _ = QtWidgets.QFileDialog.getOpenFileNames(
            self, "Open the healthy run to compare with", str(rv.model.path.parent), TRACE_FILTER
        )
        if files:
            self.open_comparison(files, [str(rv.model.path)])

    def open_comparison(self, healthy: list, degraded: list, with_tabs: bool = False) -> Job:
        """Ingest/analyse both runs on a worker (each a list of paths making one run), then open a
        comparison tab: ``degraded`` on top, ``healthy`` below, with the diff."""
        cache = cache_dir()
        hp, dp = [str(p) for p in healthy], [str(p) for p in degraded]

        def work(job: Job):
            from kat_gui.progress import scaled

            h = loader.prepare(hp, cache, scaled(job.progress, 0.0, 0.45))
            d = loader.prepare(dp, cache, scaled(job.progress, 0.45, 0.9))
            # The runs are loaded here, off the GUI thread: the tabs' own (with_tabs) and the comparison's.
            order = ([d[0], h[0]] if with_tabs else []) + [h[0], d[0]]
            return loader.load_models(order, scaled(job.progress, 0.9, 1.0))

        job = Job("opening the runs to compare", work)

        def done(loaded) -> None:
            if with_tabs:
                self._open_loaded(loaded[0], "degraded")
                self._open_loaded(loaded[1], "baseline")
            self._open_compare_loaded(loaded[-2], loaded[-1])

        job.signals.done.connect(done)
        job.signals.failed.connect(self.report_error)
        return self.start_job(job)

    def _open_compare_loaded(
        self, healthy: tuple, degraded: tuple, label: str | None = None
    ) -> CompareView | None:
        bad = [m for _p, m in (healthy, degraded) if isinstance(m, str)]
        if bad:
            for _p, m in (healthy, degraded):
                if not isinstance(m, str):
                    m.close()
            self.report_error(bad[0])
            return None
        return self.open_comparison_stores(healthy[0], degraded[0], label, (healthy[1], degraded[1]))

    def open_comparison_stores(
        self, healthy: Path, degraded: Path, label: str | None = None, models: tuple | None = None
    ) -> CompareView | None:
        """A comparison tab of two stores; ``models``: (healthy, degraded) already loaded on a worker."""
        try:
            h, d = models if models is not None else (RunModel(healthy), RunModel(degraded))
        except Exception as exc:
            self.report_error(str(exc))
            return None
        view = CompareView(h, d)
        idx = self.tabs.addTab(view, label or f"compare: {d.name} vs {h.name}")
        self.tabs.setTabToolTip(idx, f"degraded {degraded}\nhealthy {healthy}")
        self.stack.setCurrentWidget(self.tabs)
        view.jobStarted.connect(self._track_explanation)
        view.start()
        QtCore.QTimer.singleShot(EXPLAIN_AFTER_MS, view, collector.settle)  # as a run's tab (_explain_later)
        if label is None:
            self.tabs.setCurrentIndex(idx)
        return view

    def close_tab(self, i: int) -> None:
        w = self.tabs.widget(i)
        self.tabs.removeTab(i)
        if isinstance(w, RunView):
            w.close_run()
            w.deleteLater()
        if isinstance(w, CompareView):
            w.close_view()
            w.healthy.close()
            w.degraded.close()
            w.deleteLater()
        if self.tabs.count() == 0:
            self.stack.setCurrentWidget(self.welcome)
        collector.release_later(self)  # the closed tab's reference cycles are freed there
        self._update_status()

    # ------------------------------------------------------------------ drag and drop

    def dragEnterEvent(self, ev: QtGui.QDragEnterEvent) -> None:
        if ev.mimeData().hasUrls():
            ev.acceptProposedAction()

    def dropEvent(self, ev: QtGui.QDropEvent) -> None:
        paths = [u.toLocalFile() for u in ev.mimeData().urls() if u.isLocalFile()]
        if paths:
            self.open_paths(paths)
            ev.acceptProposedAction()

    # ------------------------------------------------------------------ misc

    def save_screenshot(self, path: str | Path) -> bool:
        w = self.tabs.currentWidget()
        for tl in (getattr(w, "timeline", None), getattr(w, "top", None), getattr(w, "bottom", None)):
            if isinstance(tl, TimelineView):
                tl.settle()
        QtWidgets.QApplication.processEvents()
        pm = self.grab()
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        return bool(pm.save(str(path)))

    def screenshot_dialog(self) -> None:
        fn, _ = QtWidgets.QFileDialog.getSaveFileName(self, "Save screenshot", "kat.png", "PNG (*.png)")
        if fn:
            self.save_screenshot(fn)

    def export_target(self):
        """The tab an export shows: a run or a comparison (None on the welcome page)."""
        w = self.tabs.currentWidget() if self.stack.currentWidget() is self.tabs else None
        return w if isinstance(w, RunView | CompareView) else None

    def export_dialog(self, fmt: str) -> None:
        view = self.export_target()
        if view is None:
            return
        filt = "SVG (*.svg)" if fmt == "svg" else "PNG (*.png)"
        fn, _ = QtWidgets.QFileDialog.getSaveFileName(self, "Export the view", f"kat-view.{fmt}", filt)
        if fn:
            self.export_view(fn)

    def export_view(self, path: str | Path) -> Path | None:
        from kat_gui.ui.export import export_view

        view = self.export_target()
        if view is None:
            return None
        try:
            return export_view(view, path)
        except Exception as exc:
            self.report_error(str(exc) if str(path) in str(exc) else f"{path}: {exc}")
            return None

    def report_dialog(self) -> None:
        if self.export_target() is None:
            return
        d = QtWidgets.QFileDialog.getExistingDirectory(self, "Folder for the report (created if needed)")
        if d:
            self.export_report(d)

    def export_report(self, out_dir: str | Path) -> Job | None:
        """Picture of the current view, then ``write_report`` on a worker (the comparison's healthy run as
        ``compare_with`` when the tab is a comparison). The job's result is the report's HTML path."""
        view = self.export_target()
        if view is None:
            return None
        out = Path(out_dir)
        if isinstance(view, CompareView):
            store, baseline = view.degraded.path, view.healthy.path
        else:
            store, baseline = view.model.path, None
        import tempfile

        shot_dir = Path(tempfile.mkdtemp(prefix="kat-shot-"))
        shot = self.export_view(shot_dir / "view.png")

        def work(job: Job):
            from kat_gui.report import write_report

            return write_report(
                store,
                out,
                compare_with=baseline,
                scrub=True,
                screenshots=[shot] if shot else None,
                progress=job.progress,
            )

        job = Job("writing the report", work)
        job.signals.done.connect(lambda p: self.statusBar().showMessage(f"report written: {p}", 10000))
        job.signals.failed.connect(self.report_error)
        return self.start_job(job)

    def show_keys(self) -> None:
        QtWidgets.QMessageBox.information(
            self,
            "Keys and mouse",
            "Wheel: zoom at the cursor · drag: pan · W/S: zoom in/out · A/D: pan\n"
            "F: fit the whole run · Z: zoom to the selected kernel · N/P: next/previous root anomaly\n"
            "E: expand/collapse every rank's streams · click a rank label: expand/collapse that rank\n"
            "Click a kernel: details and the same kernel on the other ranks · click a merged block: zoom in\n"
            "Topology: click a GPU/component to show only its ranks, click again to show all",
        )

    def show_about(self) -> None:
        QtWidgets.QMessageBox.about(
            self,
            "About KAT",
            f"KAT {__version__}: offline kernel-level anomaly "
            "troubleshooter for distributed large-model inference.",
        )

    def closeEvent(self, ev: QtGui.QCloseEvent) -> None:
        self.cancel_jobs()
        self.settings.set("geometry", base64.b64encode(bytes(self.saveGeometry())).decode("ascii"))
        self.settings.save()
        for i in range(self.tabs.count()):
            w = self.tabs.widget(i)
            if isinstance(w, RunView):
                w.explanation.stop()
            if isinstance(w, CompareView):
                w.close_view()
        # The stores are closed only once the workers stopped (cancelled ones stop at their next progress
        # check); each run's close() also waits for its store thread's read in progress.
        if not pool().waitForDone(CLOSE_WAIT_MS):
            print(
                f"kat gui: workers still running after {CLOSE_WAIT_MS / 1000:.0f} s; closing", file=sys.stderr
            )
        for i in range(self.tabs.count()):
            w = self.tabs.widget(i)
            if isinstance(w, RunView):
                w.model.close()
            if isinstance(w, CompareView):
                w.healthy.close()
                w.degraded.close()
        super().closeEvent(ev)


def span_text(model: RunModel) -> str:
    return fmt_ns(model.t1_ns - model.t0_ns)
