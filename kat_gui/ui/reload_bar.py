"""The offer to reload a run that another process changed (a `kat detect` from a terminal, notes saved by a
second window, a re-ingest): every POLL_MS the bar asks each open run whether its store changed (one
``stat`` per run, no HDF5 read, so the GUI thread is not held up) and, when one did, shows itself above the
tabs with Reload and Dismiss. Reload loads the run again on a worker (as *File ▸ Open* does: the GUI thread
reads nothing from the file) and then puts it in the same tab, keeping the visible time range.
"""

from __future__ import annotations

from PySide6 import QtCore, QtWidgets

from kat_gui.ui import loader
from kat_gui.ui.run_model import esc
from kat_gui.ui.run_view import RunView
from kat_gui.ui.workers import Job

POLL_MS = 1500


class ReloadBar(QtWidgets.QToolBar):
    """A non-modal bar on ``win`` (a MainWindow: ``tabs``, ``open_store(path, label, at=, model=)``,
    ``close_tab``, ``start_job``, ``report_error``)."""

    def __init__(self, win: QtWidgets.QMainWindow):
        super().__init__("Run changed on disk", win)
        self.win = win
        self.setObjectName("reloadBar")
        self.setMovable(False)
        self.setFloatable(False)
        self.label = QtWidgets.QLabel()
        self.label.setStyleSheet("padding: 2px 8px")
        self.addWidget(self.label)
        self.reload_action = self.addAction("Reload", self.reload)
        self.addAction("Dismiss", self.dismiss)
        win.addToolBar(QtCore.Qt.ToolBarArea.TopToolBarArea, self)
        self.hide()
        self._reloading: set[int] = set()  # ids of the views whose run is being loaded again
        self.timer = QtCore.QTimer(self)
        self.timer.setInterval(POLL_MS)
        self.timer.timeout.connect(self.check)
        self.timer.start()

    def changed_views(self) -> list[RunView]:
        tabs = self.win.tabs
        views = [tabs.widget(i) for i in range(tabs.count())]
        return [
            v for v in views if isinstance(v, RunView) and id(v) not in self._reloading and v.model.changed()
        ]

    def check(self) -> bool:
        """Show or hide the bar; True when some open run changed."""
        views = self.changed_views()
        if not views:
            self.hide()
            return False
        names = ", ".join(esc(v.model.name) for v in views[:3]) + (" …" if len(views) > 3 else "")
        if all(v.model.replaced() for v in views):
            what = "replaced on disk (a new ingest)"
        else:
            what = "changed on disk: results or notes written by another KAT process"
        self.label.setText(f"<b>{names}</b> {what}. Reload to see them.")
        self.show()
        return True

    def dismiss(self) -> None:
        for v in self.changed_views():
            v.model.mark_seen()
        self.hide()

    def reload(self) -> Job | None:
        """Load every changed run again on a worker, then show each in its tab (``reloaded``); returns the
        job (None when nothing changed)."""
        views = self.changed_views()
        if not views:
            self.check()
            return None
        self._reloading |= {id(v) for v in views}
        self.hide()
        paths = [v.model.path for v in views]
        job = Job("reloading", lambda j: loader.load_models(paths, j.progress))
        job.signals.done.connect(lambda loaded: self.reloaded(views, loaded))
        job.signals.failed.connect(self.win.report_error)
        job.signals.finished.connect(
            lambda: (self._reloading.difference_update(map(id, views)), self.check())
        )
        return self.win.start_job(job)

    def reloaded(self, views: list[RunView], loaded: list) -> list[RunView]:
        """Put each run loaded again (``loader.load_models``' ``(path, model or why not)``) in its old view's tab;
        returns the new views."""
        new_views = []
        for old, (_path, model) in zip(views, loaded, strict=True):
            try:
                alive = self.win.tabs.indexOf(old) >= 0
            except RuntimeError:  # the view was deleted meanwhile
                alive = False
            if isinstance(model, str):
                self.win.report_error(model)  # the old view stays, no longer offered
                if alive:
                    old.model.mark_seen()
            elif not alive:  # its tab was closed while the run loaded
                model.close()
            else:
                new_views.append(self.reload_view(old, model))
        return new_views

    def reload_view(self, old: RunView, model) -> RunView:
        win = self.win
        i = win.tabs.indexOf(old)
        current = win.tabs.currentWidget() is old
        label = win.tabs.tabText(i).removeprefix("⚠ ")
        keep_range = not old.model.replaced()
        x_range = old.timeline.x_range()
        new = win.open_store(model.path, label, at=i, model=model)
        win.close_tab(win.tabs.indexOf(old))
        if keep_range:
            new.timeline.set_x_range(*x_range)
        if current:
            win.tabs.setCurrentWidget(new)
        return new
