"""Long work off the GUI thread: a QRunnable per job with progress, cancel, and error reporting.

The job function receives a progress callback ``(fraction, message)`` that raises
:class:`kat_gui.errors.Cancelled` once the user pressed cancel, so the library's own checkpoints stop the work
(the same mechanism as Ctrl-C in the CLI). Exceptions never escape the worker: a KatInputError becomes a
``failed`` signal with its one-line message, anything else a ``failed`` signal with the traceback as detail.
"""

from __future__ import annotations

import threading
import traceback
import warnings
from collections.abc import Callable
from typing import Any

from PySide6 import QtCore

from kat_gui.errors import Cancelled, KatInputError


class JobSignals(QtCore.QObject):
    progress = QtCore.Signal(float, str)
    done = QtCore.Signal(object)
    failed = QtCore.Signal(str, str)  # one-line message, detail (traceback for unexpected errors)
    cancelled = QtCore.Signal()
    token = QtCore.Signal(str)  # streamed text (explanations)
    finished = QtCore.Signal()  # after done/failed/cancelled, always


SIGNAL_NAMES = tuple(n for n, v in vars(JobSignals).items() if isinstance(v, QtCore.Signal))


class Job:
    """Runs ``fn(job)`` on the pool (:func:`submit`); ``fn`` calls ``job.progress(frac, msg)`` and may call
    ``job.emit_token(text)``."""

    def __init__(self, title: str, fn: Callable[[Job], Any]):
        self.title = title
        self.fn = fn
        self.signals = JobSignals()
        self._cancel = threading.Event()
        self.state = "pending"  # pending | running | done | failed | cancelled

    def _release_later(self) -> None:
        # ``finished`` has reached every slot connected before this one; drop the connections once this slot
        # has returned (not from inside it: that would remove the connection being delivered).
        QtCore.QTimer.singleShot(0, self._release)

    def _release(self) -> None:
        """Drop every connection of the job's signals. Slots often close over the job (``lambda:
        window._job_finished(job)``): a reference cycle through Qt's connection list, which Python's collector
        cannot see, so the job and whatever its slots reach (a closed run's panels, tables and model) would
        stay alive for good."""
        for name in SIGNAL_NAMES:
            signal = getattr(self.signals, name)
            with warnings.catch_warnings():  # PySide warns when a signal has no slot to disconnect
                warnings.simplefilter("ignore", RuntimeWarning)
                try:
                    signal.disconnect()
                except (RuntimeError, TypeError):
                    pass

    def cancel(self) -> None:
        self._cancel.set()

    @property
    def is_cancelled(self) -> bool:
        return self._cancel.is_set()

    def progress(self, frac: float, msg: str = "") -> None:
        if self._cancel.is_set():
            raise Cancelled()
        self.signals.progress.emit(float(frac), str(msg))

    def emit_token(self, text: str) -> None:
        self.signals.token.emit(text)

    def run(self) -> None:
        self.state = "running"
        try:
            result = self.fn(self)
        except Cancelled:
            self.state = "cancelled"
            self.signals.cancelled.emit()
        except KatInputError as exc:
            self.state = "failed"
            self.signals.failed.emit(str(exc), "")
        except Exception as exc:  # an unexpected error must end in a dialog, never a dead window
            self.state = "failed"
            self.signals.failed.emit(
                f"{self.title}: unexpected error: {type(exc).__name__}: {exc}", traceback.format_exc()
            )
        else:
            self.state = "done"
            self.signals.done.emit(result)
        finally:
            self.signals.finished.emit()


def submit(job: Job) -> Job:
    """Run ``job`` on the pool; connect its slots before. The pool gets the job's ``run`` (PySide wraps it in a
    runnable of its own that the pool deletes when it returns); a job is no QRunnable of its own: one handed to
    ``QThreadPool.start`` is owned by C++ from then on and, not auto-deleted, would keep the job and everything
    it holds alive for good. Once ``finished`` has reached every slot the job drops its connections
    (``Job._release``): connected here, after the callers' slots, its delivery is the last one queued (Qt
    delivers a signal's queued calls in the order of the connections, one event each)."""
    job.signals.finished.connect(job._release_later)
    pool().start(job.run)
    return job


def pool() -> QtCore.QThreadPool:
    """The pool jobs run on (2 threads: one long ingest/detect plus one explanation at a time)."""
    p = QtCore.QThreadPool.globalInstance()
    if p.maxThreadCount() < 2:
        p.setMaxThreadCount(2)
    return p
