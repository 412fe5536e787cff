"""Partial bulk reads for detection that streams a run instead of loading it (``kat_gui.detect.streamed``):
one track's rows ``[lo, hi)``, and the per-track event counts by kind (from ``/tracks/kind_counts``, no event
read).

:class:`RowReader` reads a committed store's events read-only through datasets with a small chunk cache
(``STREAM_CACHE_BYTES`` each), opened apart from any TraceStore of the same file: a stream reads each chunk
once, so the 16 MiB per dataset a :class:`~kat_gui.store.reader.TraceStore` keeps for panning would only grow
with the run. Rows are indices
within a track (0 = its first event); columns are those of ``EVENT_COLUMNS``. A read of ``[lo, hi)`` decodes
only the chunks those rows touch.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import h5py
import numpy as np

from kat_gui.errors import KatInputError
from kat_gui.events import EVENT_COLUMNS

STREAM_CACHE_BYTES = 1 << 20  # per dataset: several 16384-row chunks of any column
STREAM_CACHE_SLOTS = 521


class RowReader:
    """Read-only access to a store's events by track and row range (see the module docstring)."""

    def __init__(self, path: str | os.PathLike):
        self.path = os.fspath(path)
        try:
            # The stdio driver, not the default sec2: HDF5 shares a file opened twice in one process through
            # the same driver, datasets and chunk caches included, so reading beside an open TraceStore (whose
            # datasets keep 16 MiB each, for panning) would fill those caches with the whole run.
            self._f = h5py.File(self.path, "r", locking=False, driver="stdio")
        except OSError as e:
            raise KatInputError(self.path, f"cannot open the store: {e}") from None
        dapl = h5py.h5p.create(h5py.h5p.DATASET_ACCESS)
        dapl.set_chunk_cache(STREAM_CACHE_SLOTS, STREAM_CACHE_BYTES, 0.75)
        self._ev = {
            c: h5py.Dataset(h5py.h5d.open(self._f.id, f"events/{c}".encode(), dapl)) for c in EVENT_COLUMNS
        }
        self._offset = self._f["tracks/row_offset"][:]
        self._count = self._f["tracks/row_count"][:]
        self._kind_counts = self._f["tracks/kind_counts"][:]

    def rows(self, track: int, lo: int, hi: int, columns: Sequence[str]) -> dict[str, np.ndarray]:
        """Rows ``lo .. hi`` (within the track, clipped to it) of one track."""
        n = int(self._count[track])
        lo = max(0, min(int(lo), n))
        hi = max(lo, min(int(hi), n))
        a, b = int(self._offset[track]) + lo, int(self._offset[track]) + hi
        return {c: self._ev[c][a:b] if b > a else np.zeros(0, EVENT_COLUMNS[c]) for c in columns}

    def kind_counts(self) -> np.ndarray:
        """[track, EventKind] event counts (int64)."""
        return np.asarray(self._kind_counts, dtype=np.int64)

    def close(self) -> None:
        self._ev = {}
        self._f.close()


def kind_counts(store) -> np.ndarray:
    """[track, EventKind] event counts of an open TraceStore (int64)."""
    return np.asarray(store._kind_counts, dtype=np.int64)
