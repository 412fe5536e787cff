"""PyTorch profiler / Kineto JSON (``*.json``, ``*.json.gz``; one file = one rank) -> :class:`RankTrace`.

How it stays fast and small (see FORMATS.md for the format itself):

- The whole document is decoded once by msgspec into ``{key: Raw}``: this validates the JSON and gives the
  ``traceEvents`` array as a zero-copy view without building any event.
- The array is cut at event boundaries into ~4 MiB pieces, and each piece is decoded into a typed
  :class:`_Ev` (``ts``/``dur``/``args`` kept as raw text). Only one piece's events exist as objects at a time,
  so a file that is 90% ``python_function`` never holds those events as dicts or structs. A cut found by
  pattern is proven right by the piece decoding as a JSON array (a cut inside an event cannot); if that ever
  fails the array falls back to a one-``Raw``-per-event split.
- Times come from the decimal text of ``ts``/``dur`` (see :mod:`kat_gui.ingest.timeparse`): exact to the ns.
- ``args`` of kept events are decoded into a typed struct for the columns (correlation, bytes, collective
  fields) and interned as JSON text with the per-instance ids removed, keyed by their raw text minus the ids.
"""

from __future__ import annotations

import gzip
import os
import re
import zlib
from collections import Counter
from pathlib import Path
from typing import Any

import msgspec
import numpy as np

from kat_gui.errors import KatInputError
from kat_gui.events import COLUMN_DEFAULTS, EVENT_COLUMNS, GPU_KINDS, NO_ID, CopyKind, EventKind, TrackKind
from kat_gui.ingest.base import IngestOptions, Progress, RankTrace, TrackInfo
from kat_gui.ingest.timeparse import decimal_us_to_ns

FORMAT = "kineto"

_CAT_KIND: dict[str, EventKind] = {
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
_GPU_KIND_VALUES = frozenset(int(k) for k in GPU_KINDS)
# Args that differ on every instance: they live in columns (or are useless), never in the interned args text.
_INSTANCE_ARGS = ("correlation", "External id", "Seq", "device", "stream", "Ev Idx")
_INSTANCE_ARGS_RE = re.compile(
    rb'"(?:correlation|External id|Seq|device|stream|Ev Idx)"\s*:\s*-?[0-9.]+\s*,?\s*'
)
_COPY_KINDS = (
    ("HtoD", CopyKind.HTOD),
    ("DtoH", CopyKind.DTOH),
    ("DtoD", CopyKind.DTOD),
    ("PtoP", CopyKind.PTOP),
    ("HtoH", CopyKind.HTOH),
)
_PIECE_BYTES = 4 << 20
_EVENT_CUT_RE = re.compile(rb"\}\s*,\s*\{")
_COMMA_RE = re.compile(rb"\s*,")
_NO_KEPT = "no kernel, memcpy or runtime events in this trace"


class _Ev(msgspec.Struct, gc=False):
    ph: str = ""
    cat: str = ""
    name: str = ""
    pid: int | str = -1
    tid: int | str = -1
    ts: msgspec.Raw = msgspec.Raw(b"0")
    dur: msgspec.Raw = msgspec.Raw(b"0")
    args: msgspec.Raw = msgspec.Raw(b"{}")


class _Args(msgspec.Struct, gc=False):
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


_EV_LIST = msgspec.json.Decoder(list[_Ev])
_ARGS_LIST = msgspec.json.Decoder(list[_Args])
_RAW_LIST = msgspec.json.Decoder(list[msgspec.Raw])
_TOP = msgspec.json.Decoder(dict[str, msgspec.Raw])


def sniff(path: str | os.PathLike, head: bytes) -> bool:
    """True when ``head`` (the first 64 KiB, gunzipped) looks like a Kineto / Chrome trace JSON object."""
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n")
    if not text.startswith(b"{"):
        return False
    return any(key in text for key in (b'"traceEvents"', b'"schemaVersion"', b'"deviceProperties"'))


def read(
    path: str | os.PathLike, options: IngestOptions | None = None, progress: Progress | None = None
) -> RankTrace:
    """Read one Kineto JSON file (plain or gzip) into a :class:`RankTrace`; raises KatInputError on bad input."""
    options = options or IngestOptions()
    path = Path(path)
    data = _load_bytes(path)
    try:
        top = _TOP.decode(data)
    except msgspec.DecodeError as exc:
        raise KatInputError(path, f"not valid JSON ({_json_problem(exc)})") from None
    except msgspec.ValidationError:
        raise KatInputError(
            path, "JSON is not a trace (the top level is not an object with traceEvents)"
        ) from None
    trace_events = top.pop("traceEvents", None)
    if trace_events is None:
        raise KatInputError(path, "JSON is not a trace (no traceEvents)")
    meta = _top_meta(path, top)
    base_ns = meta.get("baseTimeNanoseconds")
    if base_ns is not None and not isinstance(base_ns, int):
        raise KatInputError(path, f"baseTimeNanoseconds is not an integer: {base_ns!r}")
    meta["time_base"] = "relative+base" if base_ns is not None else "epoch_us"

    builder = _Builder(path, options)
    total = max(len(trace_events), 1)
    for done, events in _pieces(path, trace_events):
        builder.add(events)
        if progress is not None:
            progress(min(done / total, 1.0), f"reading {path.name}")
    trace = builder.finish(meta, base_ns or 0)
    rank = (
        meta.get("distributedInfo", {}).get("rank") if isinstance(meta.get("distributedInfo"), dict) else None
    )
    trace.rank = rank if isinstance(rank, int) else None
    return trace


def _load_bytes(path: Path) -> bytes:
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except OSError as exc:
        raise KatInputError(path, f"cannot read the file ({exc.strerror or exc})") from None
    if not data or (len(data) < 65536 and not data.strip()):
        raise KatInputError(path, "the file is empty")
    if data[:2] == b"\x1f\x8b":
        try:
            data = gzip.decompress(data)
        except (EOFError, OSError, zlib.error) as exc:
            raise KatInputError(path, f"truncated or corrupt gzip data ({exc})") from None
        if not data or (len(data) < 65536 and not data.strip()):
            raise KatInputError(path, "the file is empty (gzip of nothing)")
    return data


def _json_problem(exc: Exception) -> str:
    msg = str(exc)
    if "truncated" in msg:
        return "the JSON text ends too early: the file is truncated"
    m = re.search(r"\(byte (\d+)\)", msg)
    where = f" near byte {m.group(1)}" if m else ""
    return msg.split(" (byte")[0].removeprefix("JSON is malformed: ") + where


def _top_meta(path: Path, top: dict[str, msgspec.Raw]) -> dict[str, Any]:
    meta: dict[str, Any] = {}
    for key, raw in top.items():
        try:
            meta[key] = msgspec.json.decode(raw)
        except msgspec.DecodeError:  # already validated as JSON by the top-level decode
            raise KatInputError(path, f"cannot decode the top-level key {key!r}") from None
    return meta


def _pieces(path: Path, trace_events: msgspec.Raw):
    """Yield (bytes consumed, list of _Ev) for ~4 MiB pieces of the traceEvents array."""
    view = memoryview(trace_events)
    size = len(view)
    body_start = 0
    while body_start < size and view[body_start] in b" \t\r\n":
        body_start += 1
    if body_start >= size or view[body_start] != ord("["):
        raise KatInputError(path, "JSON is not a trace (traceEvents is not a list)")
    body_start += 1
    body_end = size - 1
    while body_end > body_start and view[body_end] in b" \t\r\n":
        body_end -= 1
    # view[body_end] is the closing ']': the top-level decode proved the array is well formed.
    pos = body_start
    while pos < body_end:
        cut = None
        if body_end - pos > _PIECE_BYTES:
            m = _EVENT_CUT_RE.search(view, pos + _PIECE_BYTES, body_end)
            if m is not None:
                cut = m.start() + 1  # just after the '}' that closes an event
        stop = cut if cut is not None else body_end
        try:
            events = _EV_LIST.decode(b"[" + view[pos:stop] + b"]")
        except msgspec.DecodeError:
            # The cut fell inside an event (a "},{" in nested args): split exactly, one Raw per event.
            yield from _pieces_exact(path, view[pos:body_end], pos)
            return
        except msgspec.ValidationError as exc:
            raise KatInputError(path, f"traceEvents holds something that is not an event ({exc})") from None
        yield stop, events
        if cut is None:
            break
        m = _COMMA_RE.match(view, cut)
        pos = m.end() if m else cut


def _pieces_exact(path: Path, rest: memoryview, offset: int):
    # The rest may start with a leading comma-free list body: wrap it back into an array.
    raws = _RAW_LIST.decode(b"[" + rest + b"]")
    step = 32768
    for i in range(0, len(raws), step):
        chunk = raws[i : i + step]
        try:
            events = _EV_LIST.decode(b"[" + b",".join(chunk) + b"]")
        except msgspec.ValidationError as exc:
            raise KatInputError(path, f"traceEvents holds something that is not an event ({exc})") from None
        yield offset + int(len(rest) * (i + len(chunk)) / max(len(raws), 1)), events


def _as_int(v: Any) -> int:
    if type(v) is int:
        return v
    if isinstance(v, str) and v.strip().lstrip("-").isdigit():
        return int(v)
    if isinstance(v, float) and v.is_integer():
        return int(v)
    return NO_ID


class _Builder:
    """Accumulates kept events piece by piece as lists of small column arrays."""

    def __init__(self, path: Path, options: IngestOptions):
        self.path = path
        self.cat_kind = dict(_CAT_KIND)
        if options.keep_python:
            self.cat_kind["python_function"] = EventKind.PYTHON
        if options.keep_cpu_ops:
            self.cat_kind["cpu_op"] = EventKind.CPU_OP
        self.strings: dict[str, int] = {}
        self.args_key: dict[bytes, int] = {}
        self.args: list[str] = []
        self.args_text: dict[str, int] = {}
        self.tracks: dict[tuple[int, int, int], int] = {}
        self.track_info: list[TrackInfo] = []
        self.text_ids: dict[str, int] = {}  # non-numeric pid/tid text -> negative id
        self.copy_kind_of_name: dict[int, int] = {}
        self.seen = Counter()
        self.kept = Counter()
        self.process_names: dict[str, Any] = {}
        self.thread_names: dict[str, Any] = {}
        self.parts: list[dict[str, np.ndarray]] = []

    def _text_id(self, v: Any) -> int:
        if type(v) is int:
            return v
        s = str(v)
        m = re.search(r"(\d+)\s*$", s)
        if m:  # "stream 7", "GPU 0": the number is the id
            return int(m.group(1))
        if s not in self.text_ids:
            self.text_ids[s] = -2 - len(self.text_ids)
        return self.text_ids[s]

    def add(self, events: list[_Ev]) -> None:
        cat_kind = self.cat_kind
        self.seen.update([e.cat if e.ph == "X" else f"ph={e.ph}" for e in events if e.ph != "M"])
        meta_events = [e for e in events if e.ph == "M"]
        if meta_events:
            self._metadata(meta_events)
        kept = [e for e in events if e.ph == "X" and e.cat in cat_kind]
        if not kept:
            return
        self.kept.update([e.cat for e in kept])
        n = len(kept)
        kind = np.fromiter([cat_kind[e.cat] for e in kept], dtype=np.uint8, count=n)
        sid = self.strings
        name = np.fromiter([sid.setdefault(e.name, len(sid)) for e in kept], dtype=np.int32, count=n)
        try:
            start = decimal_us_to_ns([e.ts for e in kept])
            dur = decimal_us_to_ns([e.dur for e in kept])
        except ValueError as exc:
            raise KatInputError(self.path, f"bad event time: {exc}") from None

        arg_raws = [e.args for e in kept]
        try:
            args = _ARGS_LIST.decode(b"[" + b",".join(arg_raws) + b"]")
        except msgspec.ValidationError as exc:
            raise KatInputError(self.path, f"event args are not an object ({exc})") from None
        cols: dict[str, np.ndarray] = {
            "start_ns": start,
            "end_ns": start + np.maximum(dur, 0),
            "kind": kind,
            "name": name,
            "correlation": np.fromiter(
                [c if type(c := a.correlation) is int else NO_ID for a in args], dtype=np.int64, count=n
            ),
            "args": self._intern_args(arg_raws),
        }
        cols["track"] = self._tracks(kept, kind, args)

        is_copy = (kind == EventKind.MEMCPY) | (kind == EventKind.MEMSET)
        if is_copy.any():
            idx = np.flatnonzero(is_copy)
            nbytes = np.full(n, NO_ID, dtype=np.int64)
            nbytes[idx] = [_as_int(args[i].nbytes) for i in idx]
            cols["bytes"] = nbytes
            copy_kind = np.zeros(n, dtype=np.int8)
            memcpy = np.flatnonzero(kind == EventKind.MEMCPY)
            copy_kind[memcpy] = [self._copy_kind(int(name[i]), kept[i].name) for i in memcpy]
            cols["copy_kind"] = copy_kind
        coll_idx = [i for i, a in enumerate(args) if a.coll is not None or a.seq is not None]
        if coll_idx:
            self._collective_columns(cols, n, coll_idx, args)
        self.parts.append(cols)

    def _metadata(self, meta_events: list[_Ev]) -> None:
        for e in meta_events:
            if e.name not in ("process_name", "thread_name", "process_labels"):
                continue
            try:
                value = msgspec.json.decode(e.args).get("name", msgspec.json.decode(e.args).get("labels"))
            except (msgspec.DecodeError, AttributeError):
                continue
            if e.name == "thread_name":
                self.thread_names[f"{e.pid}/{e.tid}"] = value
            else:
                self.process_names[str(e.pid)] = value

    def _tracks(self, kept: list[_Ev], kind: np.ndarray, args: list[_Args]) -> np.ndarray:
        pids = [e.pid for e in kept]
        tids = [e.tid for e in kept]
        if not all(type(p) is int for p in pids):
            pids = [p if type(p) is int else self._text_id(p) for p in pids]
        if not all(type(t) is int for t in tids):
            tids = [t if type(t) is int else self._text_id(t) for t in tids]
        gpu = np.isin(kind, list(_GPU_KIND_VALUES))
        sync = np.flatnonzero(kind == EventKind.SYNC)
        # cuda_sync sits on a GPU stream when it names a device, else on the host thread that waited.
        gpu[sync] = [type(args[i].device) is int for i in sync]
        keys = list(zip(gpu.tolist(), pids, tids, strict=True))
        get = self.tracks.get
        ids = [get(k, -1) for k in keys]
        if -1 in ids:
            for i in (i for i, t in enumerate(ids) if t == -1):
                t = self.tracks.get(keys[i])
                if t is None:
                    t = self._new_track(keys[i], args[i])
                ids[i] = t
        return np.array(ids, dtype=np.int32)

    def _new_track(self, key: tuple[bool, int, int], a: _Args) -> int:
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
        self, cols: dict[str, np.ndarray], n: int, idx: list[int], args: list[_Args]
    ) -> None:
        sid = self.strings

        def string_id(v: Any) -> int:
            if v is None:
                return NO_ID
            return sid.setdefault(str(v), len(sid))

        for col, fn in (
            ("coll", lambda a: string_id(a.coll)),
            ("pg", lambda a: string_id(a.pg_name if a.pg_name is not None else a.pg_desc)),
            ("seq", lambda a: _as_int(a.seq)),
            ("msg_nelems", lambda a: _as_int(a.msg_nelems)),
            ("group_size", lambda a: _as_int(a.group_size)),
        ):
            arr = np.full(n, NO_ID, dtype=EVENT_COLUMNS[col])
            arr[idx] = [fn(args[i]) for i in idx]
            cols[col] = arr

    def _intern_args(self, arg_raws: list[msgspec.Raw]) -> np.ndarray:
        # The raw text minus the per-instance ids is the dedup key; Kineto writes args with one layout per
        # file, so equal args give equal keys. Only a new key is decoded and re-encoded as compact JSON.
        joined = _INSTANCE_ARGS_RE.sub(b"", b"\x00".join(arg_raws))
        keys = joined.split(b"\x00")
        table = self.args_key
        out = np.empty(len(keys), dtype=np.int32)
        for i, key in enumerate(keys):
            aid = table.get(key)
            if aid is None:
                aid = table[key] = self._new_args(arg_raws[i])
            out[i] = aid
        return out

    def _new_args(self, raw: msgspec.Raw) -> int:
        try:
            obj = msgspec.json.decode(raw)
        except msgspec.DecodeError:
            return NO_ID
        if not isinstance(obj, dict):
            return NO_ID
        for key in _INSTANCE_ARGS:
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

    def finish(self, meta: dict[str, Any], base_ns: int) -> RankTrace:
        if not self.parts:
            raise KatInputError(self.path, _NO_KEPT)
        n = sum(len(p["start_ns"]) for p in self.parts)
        events: dict[str, np.ndarray] = {}
        for col, dt in [*EVENT_COLUMNS.items(), ("track", np.dtype(np.int32))]:
            if all(col in p for p in self.parts):
                events[col] = (
                    np.concatenate([p[col] for p in self.parts])
                    if len(self.parts) > 1
                    else self.parts[0][col]
                )
            else:
                arr = np.full(n, COLUMN_DEFAULTS.get(col, 0), dtype=dt)
                pos = 0
                for p in self.parts:
                    m = len(p["start_ns"])
                    if col in p:
                        arr[pos : pos + m] = p[col]
                    pos += m
                events[col] = arr
        self.parts = []
        if base_ns:
            events["start_ns"] += base_ns
            events["end_ns"] += base_ns
        skipped = {k: v - self.kept.get(k, 0) for k, v in self.seen.items() if v - self.kept.get(k, 0) > 0}
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
