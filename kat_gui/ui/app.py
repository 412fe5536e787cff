"""``kat gui`` / ``kat-gui``: start Qt, open what was asked, optionally screenshot and quit.

``run(args)`` takes the argparse namespace of ``kat gui`` (paths, compare, demo, screenshot, quit) and returns
the exit code: 0, or 2 when something asked for could not be opened in --quit mode.
"""

from __future__ import annotations

import argparse
import sys

from PySide6 import QtCore, QtGui, QtWidgets

from kat_gui.ui.main_window import MainWindow

SCREENSHOT_SIZE = (1600, 980)


def apply_theme(app: QtWidgets.QApplication) -> None:
    """A consistent light theme (Fusion), whatever the desktop's own style."""
    app.setStyle("Fusion")
    pal = QtGui.QPalette()
    c = QtGui.QColor
    role = QtGui.QPalette.ColorRole
    pal.setColor(role.Window, c("#F5F6F8"))
    pal.setColor(role.WindowText, c("#1F1F1F"))
    pal.setColor(role.Base, c("#FFFFFF"))
    pal.setColor(role.AlternateBase, c("#F2F4F7"))
    pal.setColor(role.Text, c("#1F1F1F"))
    pal.setColor(role.Button, c("#ECEEF1"))
    pal.setColor(role.ButtonText, c("#1F1F1F"))
    pal.setColor(role.Highlight, c("#4C78A8"))
    pal.setColor(role.HighlightedText, c("#FFFFFF"))
    pal.setColor(role.ToolTipBase, c("#FFFFF0"))
    pal.setColor(role.ToolTipText, c("#1F1F1F"))
    disabled = QtGui.QPalette.ColorGroup.Disabled
    for r in (role.WindowText, role.Text, role.ButtonText):
        pal.setColor(disabled, r, c("#9A9A9A"))
    app.setPalette(pal)


def make_app() -> QtWidgets.QApplication:
    app = QtWidgets.QApplication.instance()
    if app is None:
        app = QtWidgets.QApplication(sys.argv[:1])
        app.setApplicationName("KAT")
        app.setOrganizationName("kat")
        apply_theme(app)
    return app  # type: ignore[return-value]


def run(args: argparse.Namespace) -> int:
    """Open the window; with --screenshot/--quit, wait until loading, detection and explanations finish."""
    app = make_app()
    batch = bool(args.quit)
    win = MainWindow(interactive=not batch)
    if args.screenshot:
        win.resize(*SCREENSHOT_SIZE)
    win.show()
    paths = list(getattr(args, "paths", None) or [])
    if getattr(args, "demo", False):
        win.open_demo()
    compare = getattr(args, "compare", None)
    if compare and paths:
        # ``kat gui RUN --compare BASELINE``: RUN is the run under examination (degraded, drawn on top),
        # BASELINE the healthy reference; both open in their own tabs too (after one ingest of each).
        win.open_comparison([compare], paths, with_tabs=True)
    elif paths:
        win.open_paths(paths)
    elif compare:
        win.open_paths([compare], label="baseline")
    if not (args.screenshot or batch):
        return int(app.exec())

    result = {"code": 0}
    # --quit waits in a local event loop, not QApplication.exec(): QCoreApplication.exit() would leave the
    # application refusing every later event loop (Qt keeps "quit now" set until the next exec()), which
    # breaks whatever runs after in the same process (tests, scripts).
    loop = QtCore.QEventLoop()

    def finish() -> None:
        if win.busy():
            return
        timer.stop()
        try:
            app.processEvents()
            if args.screenshot and not win.save_screenshot(args.screenshot):
                print(f"kat gui: {args.screenshot}: cannot write the screenshot", file=sys.stderr)
                result["code"] = 2
            if win.errors:
                result["code"] = 2
        except Exception as exc:  # never leave a --quit run waiting in the event loop
            print(f"kat gui: {exc}", file=sys.stderr)
            result["code"] = 2
            raise
        finally:
            if batch:
                win.close()
                loop.exit(result["code"])

    timer = QtCore.QTimer()
    timer.setInterval(200)
    timer.timeout.connect(finish)
    timer.start()
    if batch:
        loop.exec()
        return result["code"]
    return int(app.exec())
