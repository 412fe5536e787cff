"""Progress reporting for long work, shared by the CLI (a terminal bar) and the GUI (a Qt progress bar).

Long functions take ``progress: Callable[[float, str], None] | None``; the callback may raise
:class:`kat_gui.errors.Cancelled` to stop the work.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable

Progress = Callable[[float, str], None]


def scaled(progress: Progress | None, lo: float, hi: float) -> Progress | None:
    """A callback that maps [0, 1] onto [lo, hi] of ``progress`` (for sub-steps of a longer job)."""
    if progress is None:
        return None

    def _cb(frac: float, msg: str) -> None:
        progress(lo + (hi - lo) * min(max(frac, 0.0), 1.0), msg)

    return _cb


class TerminalProgress:
    """A one-line progress bar on stderr, drawn only when stderr is a terminal (quiet in pipes and CI logs)."""

    def __init__(self, label: str, stream=None, min_interval_s: float = 0.1):
        self.label = label
        self.stream = stream or sys.stderr
        self.enabled = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.min_interval_s = min_interval_s
        self._last = 0.0
        self._drawn = False

    def __call__(self, frac: float, msg: str) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if now - self._last < self.min_interval_s and frac < 1.0:
            return
        self._last = now
        width = 30
        filled = int(round(width * min(max(frac, 0.0), 1.0)))
        bar = "#" * filled + "-" * (width - filled)
        text = f"\r{self.label} [{bar}] {frac * 100:5.1f}% {msg[:60]:<60}"
        self.stream.write(text)
        self.stream.flush()
        self._drawn = True

    def close(self) -> None:
        if self._drawn:
            self.stream.write("\r" + " " * 110 + "\r")
            self.stream.flush()
            self._drawn = False

    def __enter__(self) -> TerminalProgress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
