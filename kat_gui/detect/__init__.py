"""Detection: align ranks, analyse collective synchronicity, compare each rank with its peers and with its
own history, and attribute persistent deviations to a hardware component (gpu, hbm, nvlink, pcie, nic, cpu).

Public API:

- ``detect_store(path_or_store, progress=None, params=None) -> DetectResult``: analyse a ``.kat.h5`` store,
  persist ``detect/anomalies``, ``detect/findings`` and ``detect/meta`` into it, return the result;
- ``load_result(store) -> DetectResult | None``: what an earlier run stored (for the GUI and explain);
- ``to_contract_json(result, store) -> dict``: the ``kat.detect/1`` document (``kat detect --json``);
- ``detect_frame(frame, params) -> DetectResult``: the same on an in-memory :class:`RunFrame` (no writes);
- ``classify.kernel_class(name) -> str``: the kernel class a name falls in (compute, memory, collective...).

The method is described in ``docs/detection.md``. This package never sees simulator ground truth.
"""

from __future__ import annotations

import os

from kat_gui.detect import classify
from kat_gui.detect.engine import DETECTOR_VERSION, detect_frame
from kat_gui.detect.frame import RunFrame, load_frame
from kat_gui.detect.params import Params
from kat_gui.detect.result import DetectResult, load_result, save_result, to_contract_json
from kat_gui.detect.streamed import analyse_store
from kat_gui.progress import Progress


def detect_store(
    path_or_store: str | os.PathLike | object, progress: Progress | None = None, params: Params | None = None
) -> DetectResult:
    """Detect anomalies in a store and save the results into it.

    ``path_or_store`` is a path (opened ``"r+"`` here, closed afterwards) or an open TraceStore (must be
    ``"r+"``). The events are read through the store's read-only handle, so other processes (a GUI, reports)
    may have the run open meanwhile; the results are written at the end in one short write under the store's
    write lock. Raises :class:`kat_gui.errors.KatInputError` for a file that is not a store, and
    :class:`kat_gui.store.lock.StoreBusy` when another process keeps writing it past ``$KAT_LOCK_WAIT``.
    """
    from kat_gui.store import TraceStore

    own = not hasattr(path_or_store, "events")
    store = TraceStore.open(path_or_store, "r+") if own else path_or_store
    try:
        if progress:
            progress(0.0, "reading events")
        result = analyse_store(store, params, progress)  # whole, or streamed by windows of steps
        if progress:
            progress(0.96, "saving results")
        with store.writing():
            save_result(store, result)
        if progress:
            progress(1.0, "done")
        return result
    finally:
        if own:
            store.close()


__all__ = [
    "DETECTOR_VERSION",
    "DetectResult",
    "Params",
    "RunFrame",
    "classify",
    "detect_frame",
    "detect_store",
    "load_frame",
    "load_result",
    "save_result",
    "to_contract_json",
]
