"""The tables one Kineto rank's events point into, filled the same way by both reading paths.

Both paths (:mod:`kat_gui.ingest.kineto_python`, :mod:`kat_gui.ingest.kineto_scan`) subclass
:class:`RankTables`, which holds what must come out identical whichever path reads the file: the string table
(event names, collective and process-group names), the args table (interned JSON text of each distinct args
object minus its per-instance ids), the track table (one track per GPU stream or host thread), the counts of
kept and skipped categories, and the process/thread names of the ``ph == "M"`` events. A table's ids are
handed out in order of first use, so each path calls these methods in the order the msgspec path meets the
events.

What is kept: complete events (``ph == "X"``) of the categories in :data:`CAT_KIND` (plus ``python_function``
and ``cpu_op`` when the options ask). Only a few args feed columns (:class:`ColumnArgs`): ``correlation``,
memcpy/memset ``bytes``, collective fields, and the ``device``/``stream`` that place a GPU event's track.
Times are not touched here: the paths give int64 ns (relative to ``baseTimeNanoseconds`` until
:meth:`RankTables.result` adds it).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec
import numpy as np

from kat_gui.errors import KatInputError
from kat_gui.events import EVENT_COLUMNS, GPU_KINDS, NO_ID, CopyKind, EventKind, TrackKind
from kat_gui.ingest.base import IngestOptions, RankTrace, TrackInfo

FORMAT = "kineto"

CAT_KIND: dict[str, EventKind] = {
    "kernel": EventKind.KERNEL,
    "Kernel": EventKind.KERNEL,
    "gpu_memcpy": EventKind.MEMCPY,
    "gpu_memset": EventKind.MEMSET,
    "cuda_runtime": EventKind.RUNTIME,
    "cuda_driver": EventKind.RUNTIME,
    "user_annotation": EventKind.ANNOTATION,
    "gpu_user_annotation": EventKind.GPU_ANNOTATION,
    "cuda_sync": EventKind.SYNC,
}
# Args that differ on every instance: they live in columns (or are useless), never in the interned args text.
INSTANCE_ARGS = ("correlation", "External id", "Seq", "device", "stream", "Ev Idx")
_COPY_KINDS = (
    ("HtoD", CopyKind.HTOD),
    ("DtoH", CopyKind.DTOH),
    ("DtoD", CopyKind.DTOD),
    ("PtoP", CopyKind.PTOP),
    ("HtoH", CopyKind.HTOH),
)
NO_KEPT = "no kernel, memcpy or runtime events in this trace"
IS_GPU = np.zeros(256, dtype=bool)  # by EventKind value: the kinds that sit on a GPU stream
IS_GPU[[int(k) for k in GPU_KINDS]] = True
NEEDS_TYPED_ARGS = np.zeros(256, dtype=bool)  # kinds whose args always feed a column (bytes, sync device)
NEEDS_TYPED_ARGS[[EventKind.MEMCPY, EventKind.MEMSET, EventKind.SYNC]] = True


class KinetoEvent(msgspec.Struct, gc=False):
    """One trace event as the msgspec path decodes it: ``ts``/``dur`` (µs) and ``args`` stay raw JSON text."""

    ph: str = ""
    cat: str = ""
    name: str = ""
    pid: int | str = -1
    tid: int | str = -1
    ts: msgspec.Raw = msgspec.Raw(b"0")
    dur: msgspec.Raw = msgspec.Raw(b"0")
    args: msgspec.Raw = msgspec.Raw(b"{}")


class ColumnArgs(msgspec.Struct, gc=False):
    """The args that feed columns or tracks, as decoded (any JSON type: the column code checks it)."""

    correlation: Any = None
    device: Any = None
    stream: Any = None
    nbytes: Any = msgspec.field(name="bytes", default=None)
    coll: Any = msgspec.field(name="Collective name", default=None)
    pg_name: Any = msgspec.field(name="Process Group Name", default=None)
    pg_desc: Any = msgspec.field(name="Process Group Description", default=None)
    seq: Any = msgspec.field(name="Seq", default=None)
    msg_nelems: Any = msgspec.field(name="In msg nelems", default=None)
    group_size: Any = msgspec.field(name="Group size", default=None)


EVENT_LIST = msgspec.json.Decoder(list[KinetoEvent])
_ARGS_LIST = msgspec.json.Decoder(list[ColumnArgs])


def as_int(v: Any) -> int:
    """An integer arg as an int (from an int, an integer float or a digit string), else NO_ID."""
    if type(v) is int:
        return v
    if isinstance(v, str) and v.strip().lstrip("-").isdigit():
        return int(v)
    if isinstance(v, float) and v.is_integer():
        return int(v)
    return NO_ID


def on_gpu(kind: np.ndarray, typed_args: dict[int, ColumnArgs]) -> np.ndarray:
    """Per event: True when it sits on a GPU stream (``typed_args`` holds every cuda_sync event's args)."""
    gpu = IS_GPU[kind]
    sync = np.flatnonzero(kind == EventKind.SYNC).tolist()
    # cuda_sync sits on a GPU stream when it names a device, else on the host thread that waited.
    gpu[sync] = [type(typed_args[i].device) is int for i in sync]
    return gpu


def set_typed_correlation(corr: np.ndarray, typed_args: dict[int, ColumnArgs], lo: int) -> None:
    """The typed decode's correlation is the one of record for its events (rows ``lo + i`` of ``corr``):
    an integer that fits int64, else NO_ID."""
    for i, a in typed_args.items():
        c = a.correlation
        corr[lo + i] = c if type(c) is int and -(2**63) <= c < 2**63 else NO_ID


class RankTables:
    """The string, args and track tables and the category counts of one rank, and its RankTrace."""

    def __init__(self, path: Path, options: IngestOptions):
        self.path = path
        self.cat_kind = dict(CAT_KIND)
        if options.keep_python:
            self.cat_kind["python_function"] = EventKind.PYTHON
        if options.keep_cpu_ops:
            self.cat_kind["cpu_op"] = EventKind.CPU_OP
        self.strings: dict[str, int] = {}
        self.args: list[str] = []
        self.args_text: dict[str, int] = {}
        self.tracks: dict[tuple[bool, int, int], int] = {}
        self.track_info: list[TrackInfo] = []
        self.text_ids: dict[str, int] = {}  # non-numeric pid/tid text -> negative id
        self.copy_kind_of_name: dict[int, int] = {}
        self.all_cats: Counter = Counter()  # cat of every event
        self.other_cats: Counter = Counter()  # cat of every event whose ph is not X
        self.other_ph: Counter = Counter()
        self.kept: Counter = Counter()
        self.process_names: dict[str, Any] = {}
        self.thread_names: dict[str, Any] = {}

    def _text_id(self, v: Any) -> int:
        if type(v) is int:
            return self._in_range(v, v)
        s = str(v)
        m = re.search(r"(\d+)\s*$", s)
        if m:  # "stream 7", "GPU 0": the number is the id
            return self._in_range(int(m.group(1)), v)
        if s not in self.text_ids:
            self.text_ids[s] = -2 - len(self.text_ids)
        return self.text_ids[s]

    def _in_range(self, n: int, v: Any) -> int:
        if not -(1 << 63) <= n < (1 << 63):
            raise KatInputError(self.path, f"process or thread id {str(v)[:40]} is out of the 64-bit range")
        return n

    def _decode_args(self, raws: list[msgspec.Raw]) -> list[ColumnArgs]:
        if not raws:
            return []
        try:
            return _ARGS_LIST.decode(b"[" + b",".join(raws) + b"]")
        except msgspec.ValidationError as exc:
            raise KatInputError(self.path, f"event args are not an object ({exc})") from None

    def _metadata(self, meta_events: list[KinetoEvent]) -> None:
        for e in meta_events:
            if e.name not in ("process_name", "thread_name", "process_labels"):
                continue
            try:
                obj = msgspec.json.decode(e.args)
                value = obj.get("name", obj.get("labels"))
            except (msgspec.DecodeError, AttributeError):
                continue
            if e.name == "thread_name":
                self.thread_names[f"{e.pid}/{e.tid}"] = value
            else:
                self.process_names[str(e.pid)] = value

    def _track(
        self,
        key: tuple[bool, int, int],
        i: int,
        typed_args: dict[int, ColumnArgs],
        raw_of: Callable[[int], bytes],
    ) -> int:
        """The id of track ``key`` (gpu, pid, tid); a new one is made from the args of event ``i``."""
        t = self.tracks.get(key)
        if t is None:
            a = typed_args.get(i)
            if a is None:
                a = self._decode_args([raw_of(i)])[0]
            t = self._new_track(key, a)
        return t

    def _new_track(self, key: tuple[bool, int, int], a: ColumnArgs) -> int:
        gpu, pid, tid = key
        t = self.tracks[key] = len(self.track_info)
        if gpu:
            device = a.device if type(a.device) is int else pid
            stream = a.stream if type(a.stream) is int else tid
            self.track_info.append(TrackInfo(TrackKind.GPU_STREAM, device, stream, pid, tid))
        else:
            self.track_info.append(TrackInfo(TrackKind.HOST_THREAD, -1, -1, pid, tid))
        return t

    def _copy_kind(self, name_id: int, name: str) -> int:
        ck = self.copy_kind_of_name.get(name_id)
        if ck is None:
            ck = next((int(v) for key, v in _COPY_KINDS if key in name), int(CopyKind.NONE))
            self.copy_kind_of_name[name_id] = ck
        return ck

    def _collective_columns(
        self, cols: dict[str, np.ndarray], n: int, idx: list[int], args: list[ColumnArgs]
    ) -> None:
        sid = self.strings

        def string_id(v: Any) -> int:
            if v is None:
                return NO_ID
            return sid.setdefault(str(v), len(sid))

        for col, fn in (
            ("coll", lambda a: string_id(a.coll)),
            ("pg", lambda a: string_id(a.pg_name if a.pg_name is not None else a.pg_desc)),
            ("seq", lambda a: as_int(a.seq)),
            ("msg_nelems", lambda a: as_int(a.msg_nelems)),
            ("group_size", lambda a: as_int(a.group_size)),
        ):
            arr = np.full(n, NO_ID, dtype=EVENT_COLUMNS[col])
            arr[idx] = [fn(args[i]) for i in idx]
            cols[col] = arr

    def _new_args(self, raw: msgspec.Raw) -> int:
        try:
            obj = msgspec.json.decode(raw)
        except msgspec.DecodeError:
            return NO_ID
        if not isinstance(obj, dict):
            return NO_ID
        for key in INSTANCE_ARGS:
            obj.pop(key, None)
        if not obj:
            return NO_ID
        # Two raw keys can give one text (a string-valued id, other spacing): intern the text too.
        text = msgspec.json.encode(obj).decode()
        aid = self.args_text.get(text)
        if aid is None:
            aid = self.args_text[text] = len(self.args)
            self.args.append(text)
        return aid

    def result(self, events: dict[str, np.ndarray], meta: dict[str, Any], base_ns: int) -> RankTrace:
        """The RankTrace of finished columns (times still relative to ``base_ns``)."""
        if base_ns:
            events["start_ns"] += base_ns
            events["end_ns"] += base_ns
        skipped = dict(self.all_cats - self.other_cats - self.kept)
        skipped.update((f"ph={ph}", c) for ph, c in self.other_ph.items() if ph != "M")
        meta["skipped"] = skipped
        meta["kept"] = dict(self.kept)
        meta["process_names"] = self.process_names
        meta["thread_names"] = self.thread_names
        if self.text_ids:
            meta["pid_tid_text"] = {str(v): k for k, v in self.text_ids.items()}
        return RankTrace(
            rank=None,
            source=str(self.path),
            format=FORMAT,
            tracks=self.track_info,
            events=events,
            strings=list(self.strings),
            args=self.args,
            meta=meta,
        )
