"""What every ingest module produces: one :class:`RankTrace` per source file (one rank's trace).

A reader module (``kineto.py``, ``nsys.py``, ``functrace.py``) exposes:

- ``FORMAT``: a short name (``"kineto"``, ``"nsys"``, ``"functrace-csv"``...);
- ``sniff(path, head: bytes) -> bool``: True when the content (the first 64 KiB, already gunzipped when the file
  is gzip) looks like this format; the extension is only a hint;
- ``read(path, options: IngestOptions, progress: Progress | None) -> RankTrace``.

Readers raise :class:`kat_gui.errors.KatInputError` for any bad input, never a bare exception.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from kat_gui.events import EVENT_COLUMNS, TrackKind
from kat_gui.progress import Progress  # noqa: F401  (re-exported for readers)


@dataclass
class IngestOptions:
    keep_cpu_ops: bool = False  # keep cpu_op events (skipped by default)
    keep_python: bool = False  # keep python_function events (skipped by default)
    rank: int | None = None  # force the rank of a single file (overrides file content and name)


@dataclass
class TrackInfo:
    """One lane: a GPU stream or a host thread of one rank."""

    kind: TrackKind
    device: int  # GPU index for GPU streams; -1 for host threads
    stream: int  # CUDA stream id for GPU streams; -1 for host threads
    pid: int  # process id (host threads) or the source's pid value for GPU rows
    tid: int  # thread id (host threads) or stream id (GPU rows)


@dataclass
class RankTrace:
    """One rank's events, columnar, with local string and args tables.

    ``events`` holds every column of :data:`kat_gui.events.EVENT_COLUMNS` plus ``track`` (int32 index into
    ``tracks``), all of one length, in any order (the store sorts). ``events["name"]``, ``coll`` and ``pg`` index
    ``strings``; ``events["args"]`` indexes ``args`` (JSON text). Absolute ns times.
    """

    rank: int | None
    source: str  # path of the file it came from
    format: str  # reader FORMAT
    tracks: list[TrackInfo]
    events: dict[str, np.ndarray]
    strings: list[str]
    args: list[str] = field(default_factory=list)
    # Free-form metadata kept in the store: device properties, distributedInfo, process groups, time base,
    # host name (scrubbed in exports), exporter version, counts of skipped events by category...
    meta: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.events["start_ns"])

    def validate(self) -> None:
        """Check the column contract (types, lengths, index ranges). Raises AssertionError on a reader bug."""
        n = len(self)
        for name, dt in EVENT_COLUMNS.items():
            col = self.events[name]
            assert col.dtype == dt, f"column {name} has dtype {col.dtype}, expected {dt}"
            assert len(col) == n, f"column {name} has length {len(col)}, expected {n}"
        tr = self.events["track"]
        assert tr.dtype == np.int32 and len(tr) == n
        if n:
            assert tr.min() >= 0 and tr.max() < len(self.tracks), "track index out of range"
            assert (self.events["end_ns"] >= self.events["start_ns"]).all(), "event ends before it starts"
            names = self.events["name"]
            assert names.min() >= 0 and names.max() < len(self.strings), "name id out of range"
