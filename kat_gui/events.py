"""The event schema shared by every stage: columns, dtypes, event kinds, track kinds, component classes, and
:class:`RankTrace`, the columnar batch a reader hands to the store.

An *event* is one timed interval on one *track*. A track is one GPU stream of one rank, or one host thread
of one rank. Events are held columnar (one numpy array per column) and never as per-event Python objects.

Times are int64 absolute nanoseconds since the Unix epoch (or since the trace's own epoch when the source
has no absolute base) and are never stored as floats: an epoch in ns needs 61 bits, a float64 has 53.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

import numpy as np

SCHEMA_VERSION = 1


class EventKind(IntEnum):
    """What an event is. Values are stored in the ``kind`` column; never renumber."""

    KERNEL = 0  # GPU kernel (incl. collective kernels)
    MEMCPY = 1  # GPU memory copy (see CopyKind)
    MEMSET = 2  # GPU memset
    # host CUDA/HIP runtime or driver call (cudaLaunchKernel...), linked to GPU work by correlation
    RUNTIME = 3
    ANNOTATION = 4  # host user annotation / NVTX range (ProfilerStep#N, record_function)
    GPU_ANNOTATION = 5  # annotation drawn on a GPU stream (gpu_user_annotation)
    CPU_OP = 6  # framework operator on the host (aten::mm ...), kept only on request
    PYTHON = 7  # python_function, kept only on request
    SYNC = 8  # cuda_sync and similar waits
    OTHER = 9


GPU_KINDS = (EventKind.KERNEL, EventKind.MEMCPY, EventKind.MEMSET, EventKind.GPU_ANNOTATION)


class TrackKind(IntEnum):
    GPU_STREAM = 0
    HOST_THREAD = 1


class CopyKind(IntEnum):
    """Direction of a memcpy. Values follow Nsight Systems' ``copyKind`` codes."""

    NONE = 0
    HTOD = 1
    DTOH = 2
    HTOH = 9
    DTOD = 8
    PTOP = 10


# Hardware component classes a finding can name (the `component` field of the detect JSON contract).
COMPONENTS = ("gpu", "hbm", "nvlink", "pcie", "nic", "cpu", "unknown")

NO_ID = -1  # missing integer value / missing string id in any column

# Column name -> dtype for the event table. Every ingest module produces exactly these columns
# (plus ``track``, an index into the batch's track list); the store persists them unchanged.
EVENT_COLUMNS: dict[str, np.dtype] = {
    "start_ns": np.dtype(np.int64),
    "end_ns": np.dtype(np.int64),
    "kind": np.dtype(np.uint8),  # EventKind
    "name": np.dtype(np.int32),  # id into the string table
    # CUDA correlation id linking a runtime call to its GPU work; -1 if none
    "correlation": np.dtype(np.int64),
    "args": np.dtype(np.int32),  # id into the args table (JSON text of the remaining args); -1 if none
    "bytes": np.dtype(np.int64),  # memcpy/memset bytes; -1 if unknown
    "copy_kind": np.dtype(np.int8),  # CopyKind for memcpy, 0 otherwise
    "coll": np.dtype(np.int32),  # string id of the collective name (allreduce, all_gather...); -1 if none
    "pg": np.dtype(np.int32),  # string id of the process group name; -1 if none
    "seq": np.dtype(np.int64),  # collective sequence number within its process group; -1 if none
    "msg_nelems": np.dtype(np.int64),  # collective input message elements; -1 if none
    "group_size": np.dtype(np.int32),  # collective group size; -1 if none
}

COLUMN_DEFAULTS: dict[str, int] = {
    "start_ns": 0,
    "end_ns": 0,
    "kind": int(EventKind.OTHER),
    "name": NO_ID,
    "correlation": NO_ID,
    "args": NO_ID,
    "bytes": NO_ID,
    "copy_kind": int(CopyKind.NONE),
    "coll": NO_ID,
    "pg": NO_ID,
    "seq": NO_ID,
    "msg_nelems": NO_ID,
    "group_size": NO_ID,
}


def empty_columns(n: int = 0) -> dict[str, np.ndarray]:
    """A column dict of length ``n`` filled with each column's default."""
    return {name: np.full(n, COLUMN_DEFAULTS[name], dtype=dt) for name, dt in EVENT_COLUMNS.items()}


def track_label(rank: int, kind: TrackKind, device: int, stream: int, tid: int) -> str:
    """Human label of a track, as the timeline shows it."""
    if kind == TrackKind.GPU_STREAM:
        return f"rank {rank} · GPU {device} · stream {stream}"
    return f"rank {rank} · host thread {tid}"


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
