"""The HDF5 TraceStore (``.kat.h5``): one file per run; the only package that touches h5py.

Public API (see ``docs/store-format.md`` for the on-disk layout):

- ``TraceStore.create(path, name) -> StoreWriter``: a context manager. ``writer.add(rank_trace)`` appends one
  rank's events (sorted per track on the way in, level-of-detail summaries built per track);
  ``writer.put_json(key, obj)`` stores metadata (topology...). Leaving the ``with`` block without an exception
  commits atomically (temporary file in the same folder, then rename); an exception removes the temporary
  file and leaves any existing ``path`` untouched.
- ``TraceStore.open(path, mode="r")`` (``"r+"`` to add results): ``name``, ``ranks`` (per-rank metadata dicts),
  ``tracks`` (list of :class:`TrackRow`), ``strings`` / ``string(id)``, ``time_span()``, ``counts_by_kind()``,
  ``window(tracks, t0_ns, t1_ns, resolution_ns)``, ``track_events(track, columns)``,
  ``events(columns, kinds)``, ``event(track, index)``, ``args(args_id)``,
  ``put_table / get_table / put_json / get_json`` for results (detection, annotations...), ``writing()`` to
  group writes, ``changed() / replaced() / mark_seen() / reopen()`` for changes made by other processes.
  The file is held read-only whatever the mode, so any number of processes may have a store open; each
  results write is a short session under a sidecar lock (``lock``; "Concurrent use" in the format doc).

Modules: ``layout`` (column sets, :class:`TrackRow`, :class:`Window`), ``writer`` (:class:`StoreWriter`),
``lod`` (summary levels), ``window`` (window queries), ``results`` (``/results``: JSON and tables),
``lock`` (the write lock and the file signature), ``reader`` (:class:`TraceStore`).
"""

from kat_gui.store.layout import TrackRow, Window
from kat_gui.store.reader import TraceStore
from kat_gui.store.writer import StoreWriter


def open_files() -> int:
    """HDF5 files this process has open (any store, any mode): a process with none may be forked safely."""
    import h5py

    return int(h5py.h5f.get_obj_count(h5py.h5f.OBJ_ALL, h5py.h5f.OBJ_FILE))


__all__ = ["StoreWriter", "TraceStore", "TrackRow", "Window", "open_files"]
