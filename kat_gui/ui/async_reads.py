"""Reads of a run's store off the GUI thread, their results handed back on the GUI thread.

Every read a widget needs while the user works (the lanes' window queries, a kernel's details, the same
kernel on the other ranks) runs on the run's store thread (:meth:`RunModel.submit`: one thread per run, so
reads never overlap and the store's caches need no lock). :class:`Deliver` posts each finished Future to the
GUI thread through a queued signal and calls the widget's callback there; a widget that is gone by then (its
``Deliver`` is its child, deleted with it) simply never hears back. The GUI thread itself never calls h5py
while the user opens, pans or zooms: besides the read's own time, h5py's global lock would make it wait for
whatever read a worker is doing.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

from PySide6 import QtCore


class Deliver(QtCore.QObject):
    """Submits functions to a run's store thread and calls ``on_done(future)`` on the GUI thread."""

    _arrived = QtCore.Signal(object, object)

    def __init__(self, parent: QtCore.QObject | None = None):
        super().__init__(parent)
        self._arrived.connect(self._run)

    def submit(self, model: Any, fn: Callable[[], Any], on_done: Callable[[Future], None]) -> Future | None:
        """``fn()`` on ``model``'s store thread; ``on_done(future)`` later on this object's (GUI) thread.
        None when the model is closed (nothing runs, nothing is called back)."""
        try:
            fut = model.submit(fn)
        except RuntimeError:
            return None
        fut.add_done_callback(lambda f: self._post(on_done, f))
        return fut

    def _post(self, on_done: Callable[[Future], None], fut: Future) -> None:
        if fut.cancelled():
            return
        try:
            self._arrived.emit(on_done, fut)
        except RuntimeError:  # the receiving widget was deleted meanwhile
            pass

    def _run(self, on_done: Callable[[Future], None], fut: Future) -> None:
        on_done(fut)
