"""The offer to reload a run that another process changed (a `kat detect` from a terminal, notes saved by a
second window, a re-ingest): every POLL_MS the bar asks each open run whether its store changed (one
``stat`` per run, no HDF5 read, so the GUI thread is not held up) and, when one did, shows itself above the
tabs with Reload and Dismiss. Reload opens the run again in the same tab, keeping the visible time range.
"""

from __future__ import annotations

from PySide6 import QtCore, QtWidgets

from kat_gui.ui.run_model import esc
from kat_gui.ui.run_view import RunView

POLL_MS = 1500


class ReloadBar(QtWidgets.QToolBar):
    """A non-modal bar on ``win`` (a MainWindow: ``tabs``, ``open_store(path, label, at=)``, ``close_tab``)."""

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
        self.timer = QtCore.QTimer(self)
        self.timer.setInterval(POLL_MS)
        self.timer.timeout.connect(self.check)
        self.timer.start()

    def changed_views(self) -> list[RunView]:
        tabs = self.win.tabs
        views = [tabs.widget(i) for i in range(tabs.count())]
        return [v for v in views if isinstance(v, RunView) and v.model.changed()]

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

    def reload(self) -> list[RunView]:
        """Open every changed run again in its tab; returns the new views."""
        new_views = []
        for old in self.changed_views():
            new = self.reload_view(old)
            if new is not None:
                new_views.append(new)
        self.check()
        return new_views

    def reload_view(self, old: RunView) -> RunView | None:
        win = self.win
        i = win.tabs.indexOf(old)
        current = win.tabs.currentWidget() is old
        label = win.tabs.tabText(i).removeprefix("⚠ ")
        keep_range = not old.model.replaced()
        x_range = old.timeline.x_range()
        new = win.open_store(old.model.path, label, at=i)
        if new is None:  # the error is reported; the old view stays, no longer offered
            old.model.mark_seen()
            return None
        win.close_tab(win.tabs.indexOf(old))
        if keep_range:
            new.timeline.set_x_range(*x_range)
        if current:
            win.tabs.setCurrentWidget(new)
        return new
