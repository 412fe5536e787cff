"""Work split over event-loop turns of the GUI thread, so that no turn holds it long.

``QTimer.singleShot(0, ...)`` queues a posted event, and Qt delivers the events posted while it delivers
posted events in that same pass: a chain of zero-delay steps runs as one long turn, and timers and the window
system's input wait for the whole chain (measured here: ten 3 ms steps held a 5 ms timer for 29 ms). A timer
of 1 ms puts each step behind whatever fell due meanwhile (the same chain: no wait over 8 ms).
"""

from __future__ import annotations

from collections.abc import Callable

from PySide6 import QtCore

NEXT_TURN_MS = 1


def next_turn(receiver: QtCore.QObject, fn: Callable[[], object]) -> None:
    """Call ``fn`` in a later turn of ``receiver``'s thread (not at all if ``receiver`` is deleted first)."""
    QtCore.QTimer.singleShot(NEXT_TURN_MS, receiver, fn)
