"""Keep Python's cyclic garbage collector off the GUI thread's critical path.

A full (generation-2) collection walks every tracked object the process holds: ~95,000 once the window is
up (modules, functions, Qt wrappers), ~120,000 with a 1,024-rank run open, 37-84 ms on the 2-core VM.
It runs in whichever thread happens to allocate when the collector's threshold trips — while a run opens,
usually the loader's worker — and holds the GIL from start to end, so the GUI thread cannot serve its event
loop meanwhile (the longest stall measured while a 1,024-rank run opened). Nearly all of those objects live
as long as the window or a tab. So the window moves them into the collector's permanent generation
(``gc.freeze``) once they exist: when the window has started, and when a new tab has painted. Collections
then walk only the objects made since (a few thousand: ~1 ms). Closing a tab gives the frozen objects back
to the collector (``gc.unfreeze``), collects once in the next event-loop turn (reference cycles among the
closed tab's objects are freed there) and freezes what is left.

Objects freed by reference counting are freed at once whatever the collector does; only reference cycles
among frozen objects wait for the next tab close. Headless code never calls this module.
"""

from __future__ import annotations

import gc

from PySide6 import QtCore

from kat_gui.ui.turns import next_turn


def settle() -> None:
    """Move every object alive now out of the collector's reach (until :func:`release_later`), after
    collecting the two young generations (~1-2 ms: cyclic garbage made since is not frozen with them)."""
    gc.collect(1)
    gc.freeze()


def release_later(parent: QtCore.QObject) -> None:
    """In the next event-loop turn of ``parent``'s thread: give the frozen objects back to the collector,
    collect them once (what a closed tab left in reference cycles) and freeze the survivors."""
    next_turn(parent, _collect_and_settle)


def _collect_and_settle() -> None:
    gc.unfreeze()
    gc.collect()
    gc.freeze()
