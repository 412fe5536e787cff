"""The msgspec path of the Kineto reader: the reference reading, and the fallback of the compiled scanner.

- The whole document is decoded once by msgspec into ``{key: Raw}`` (:func:`kineto_header.decode_top`): this
  validates the JSON and gives the ``traceEvents`` array as a zero-copy view without building any event.
- The array is cut at event boundaries into ~4 MiB pieces (:data:`PIECE_BYTES`), and each piece is decoded
  into typed :class:`~kat_gui.ingest.kineto_tables.KinetoEvent` (``ts``/``dur``/``args`` kept as raw text).
  Only one piece's events exist as objects at a time, so a file that is 90% ``python_function`` never holds
  those events as dicts or structs. A cut found by pattern is proven right by the piece decoding as a JSON
  array (a cut inside an event cannot); if that ever fails the array falls back to a one-``Raw``-per-event
  split.
- Times come from the decimal text of ``ts``/``dur`` (µs; see :mod:`kat_gui.ingest.timeparse`): exact int64
  ns, relative to ``baseTimeNanoseconds`` until the tables add it.
- ``args`` of kept events are not decoded one by one: :func:`kat_gui.ingest.kineto_args.scan_args` finds the
  per-instance ids with numpy; ``correlation`` is read from its digits, and the texts minus the id spans are
  the keys that intern args as JSON text (decoded once per distinct key). Only events whose args feed other
  columns (memcpy bytes, collective fields, cuda_sync device, the first event of a track) or whose args are
  not flat objects with integer ids take a typed msgspec decode.
- Per-event Python work is kept to C-level iteration (``map``/``attrgetter``, ``Counter``, list filters), and
  the cyclic GC is paused while reading (no cycles are built; its passes over fresh objects cost time).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from itertools import repeat
from operator import attrgetter
from pathlib import Path
from typing import Any

import msgspec
import numpy as np

from kat_gui.errors import KatInputError
from kat_gui.events import COLUMN_DEFAULTS, EVENT_COLUMNS, NO_ID, EventKind
from kat_gui.ingest.base import IngestOptions, Progress, RankTrace
from kat_gui.ingest.kineto_args import scan_args
from kat_gui.ingest.kineto_header import decode_top, header, with_host_and_rank
from kat_gui.ingest.kineto_tables import (
    EVENT_LIST,
    NEEDS_TYPED_ARGS,
    NO_KEPT,
    ColumnArgs,
    KinetoEvent,
    RankTables,
    as_int,
    on_gpu,
    set_typed_correlation,
)
from kat_gui.ingest.timeparse import decimal_us_to_ns
from kat_gui.ingest.util import gc_paused as _gc_paused

# Bytes of traceEvents text per piece; the compiled scanner cuts its pieces at the same places (read at call
# time: tests make it small). 16 MiB measured slower and +90 MB peak on a 54 MB file.
PIECE_BYTES = 4 << 20
_EVENT_CUT_RE = re.compile(rb"\}\s*,\s*\{")
_COMMA_RE = re.compile(rb"\s*,")
_RAW_LIST = msgspec.json.Decoder(list[msgspec.Raw])
_GET_PH = attrgetter("ph")
_GET_CAT = attrgetter("cat")
_GET_NAME = attrgetter("name")
_GET_TS = attrgetter("ts")
_GET_DUR = attrgetter("dur")
_GET_ARGS = attrgetter("args")
_GET_PID = attrgetter("pid")
_GET_TID = attrgetter("tid")


def read_python(path: Path, data: bytes, options: IngestOptions, progress: Progress | None) -> RankTrace:
    """The RankTrace of the Kineto document ``data`` (read from ``path``); raises KatInputError on bad input."""
    top = decode_top(path, data)
    trace_events = top.pop("traceEvents", None)
    if trace_events is None:
        raise KatInputError(path, "JSON is not a trace (no traceEvents)")
    meta, base_ns = header(path, top)
    builder = MsgspecBuilder(path, options)
    total = max(len(trace_events), 1)
    with _gc_paused():
        start = 0
        for done, events in _pieces(path, trace_events):
            try:
                builder.add(events)  # decodes the args objects, which the piece decode kept raw
            except UnicodeDecodeError:
                raise KatInputError(path, _bad_utf8(start)) from None
            except RecursionError:
                raise KatInputError(path, _too_deep(start)) from None
            start = done
            del events
            if progress is not None:
                progress(min(done / total, 1.0), f"reading {path.name}")
        trace = builder.finish(meta, base_ns)
    return with_host_and_rank(trace, meta)


def _pieces(path: Path, trace_events: msgspec.Raw):
    """Yield (bytes consumed, list of KinetoEvent) for ~4 MiB pieces of the traceEvents array."""
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
        if body_end - pos > PIECE_BYTES:
            m = _EVENT_CUT_RE.search(view, pos + PIECE_BYTES, body_end)
            if m is not None:
                cut = m.start() + 1  # just after the '}' that closes an event
        stop = cut if cut is not None else body_end
        try:
            events = EVENT_LIST.decode(b"[" + view[pos:stop] + b"]")
        except msgspec.DecodeError:
            # The cut fell inside an event (a "},{" in nested args): split exactly, one Raw per event.
            yield from _pieces_exact(path, view[pos:body_end], pos)
            return
        except msgspec.ValidationError as exc:
            raise KatInputError(path, f"traceEvents holds something that is not an event ({exc})") from None
        except UnicodeDecodeError as exc:
            raise KatInputError(path, _bad_utf8(pos + exc.start)) from None
        except RecursionError:
            raise KatInputError(path, _too_deep(pos)) from None
        yield stop, events
        if cut is None:
            break
        m = _COMMA_RE.match(view, cut)
        pos = m.end() if m else cut


def _bad_utf8(near: int) -> str:
    """A string that is not UTF-8 (the top-level decode keeps event bodies raw, so it did not see it)."""
    return f"invalid UTF-8 in a string of traceEvents (near byte {near})"


def _too_deep(near: int) -> str:
    return f"an event of traceEvents is nested deeper than any trace nests (near byte {near})"


def _pieces_exact(path: Path, rest: memoryview, offset: int):
    # The rest may start with a leading comma-free list body: wrap it back into an array.
    raws = _RAW_LIST.decode(b"[" + rest + b"]")
    step = 32768
    for i in range(0, len(raws), step):
        chunk = raws[i : i + step]
        try:
            events = EVENT_LIST.decode(b"[" + b",".join(chunk) + b"]")
        except msgspec.ValidationError as exc:
            raise KatInputError(path, f"traceEvents holds something that is not an event ({exc})") from None
        except UnicodeDecodeError:
            raise KatInputError(path, _bad_utf8(offset)) from None
        except RecursionError:
            raise KatInputError(path, _too_deep(offset)) from None
        yield offset + int(len(rest) * (i + len(chunk)) / max(len(raws), 1)), events


def _unique_few(values: np.ndarray, most: int = 16) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``np.unique(values, return_index=True, return_inverse=True)`` for a 1-D int array. A piece's events
    sit on a few tracks, so up to ``most`` distinct values are found by one pass each instead of a sort."""
    n = len(values)
    inv = np.full(n, -1, dtype=np.intp)
    found: list[int] = []
    firsts: list[int] = []
    i = 0
    while i < n:
        if len(found) == most:
            return np.unique(values, return_index=True, return_inverse=True)
        v = values[i]
        inv[values == v] = len(found)
        found.append(int(v))
        firsts.append(i)
        free = inv[i:] < 0
        j = int(free.argmax())
        i = i + j if free[j] else n
    order = np.argsort(np.array(found, dtype=values.dtype), kind="stable")
    rank = np.empty(len(found), dtype=np.intp)
    rank[order] = np.arange(len(found))
    return (
        np.array(found, dtype=values.dtype)[order],
        np.array(firsts, dtype=np.intp)[order],
        rank[inv] if n else inv,
    )


class MsgspecBuilder(RankTables):
    """Accumulates kept events piece by piece as lists of small column arrays."""

    def __init__(self, path: Path, options: IngestOptions):
        super().__init__(path, options)
        self.args_key: dict[bytes, int] = {}  # dedup key of scan_args -> args id
        self.parts: list[dict[str, np.ndarray]] = []

    def add(self, events: list[KinetoEvent]) -> None:
        # Per-event work stays in C (map/attrgetter, Counter, list comprehension filters); everything after
        # the filter is per kept event and vectorised where it can be.
        cat_kind = self.cat_kind
        self.all_cats.update(map(_GET_CAT, events))
        other = [e for e in events if e.ph != "X"]
        if other:
            self.other_cats.update(map(_GET_CAT, other))
            self.other_ph.update(map(_GET_PH, other))
            meta_events = [e for e in other if e.ph == "M"]
            if meta_events:
                self._metadata(meta_events)
        kept = [e for e in events if e.cat in cat_kind and e.ph == "X"]
        if not kept:
            return
        n = len(kept)
        cats = list(map(_GET_CAT, kept))
        self.kept.update(cats)
        kind = np.fromiter(map(cat_kind.__getitem__, cats), dtype=np.uint8, count=n)
        name = self._name_ids(list(map(_GET_NAME, kept)))
        try:
            start = decimal_us_to_ns(list(map(_GET_TS, kept)))
            dur = decimal_us_to_ns(list(map(_GET_DUR, kept)))
        except (ValueError, OverflowError) as exc:  # OverflowError: "inf" (Decimal infinity)
            raise KatInputError(self.path, f"bad event time: {exc}") from None

        arg_raws = list(map(_GET_ARGS, kept))
        keys, corr, typed = scan_args(arg_raws)
        typed |= NEEDS_TYPED_ARGS[kind]
        sub = np.flatnonzero(typed).tolist()
        typed_args = dict(zip(sub, self._decode_args([arg_raws[i] for i in sub]), strict=True))
        args = self._args_ids(keys, arg_raws)
        pid = self._ids(list(map(_GET_PID, kept)))
        tid = self._ids(list(map(_GET_TID, kept)))
        self._append(
            start,
            dur,
            kind,
            name,
            corr,
            args,
            pid,
            tid,
            typed_args,
            arg_raws.__getitem__,
            lambda i: kept[i].name,
        )

    def _append(
        self,
        start: np.ndarray,
        dur: np.ndarray,
        kind: np.ndarray,
        name: np.ndarray,
        corr: np.ndarray,
        args: np.ndarray,
        pid: np.ndarray,
        tid: np.ndarray,
        typed_args: dict[int, ColumnArgs],
        raw_of: Callable[[int], bytes],
        name_of: Callable[[int], str],
    ) -> None:
        """One piece's columns from its kept events; ``typed_args`` (event -> typed decode) holds every event
        whose args feed a column, and its correlation is the one of record."""
        n = len(kind)
        set_typed_correlation(corr, typed_args, 0)
        cols: dict[str, np.ndarray] = {
            "start_ns": start,
            "end_ns": start + np.maximum(dur, 0),
            "kind": kind,
            "name": name,
            "correlation": corr,
            "args": args,
            "track": self._tracks(pid, tid, kind, typed_args, raw_of),
        }
        is_copy = (kind == EventKind.MEMCPY) | (kind == EventKind.MEMSET)
        if is_copy.any():
            idx = np.flatnonzero(is_copy)
            nbytes = np.full(n, NO_ID, dtype=np.int64)
            nbytes[idx] = [as_int(typed_args[i].nbytes) for i in idx.tolist()]
            cols["bytes"] = nbytes
            copy_kind = np.zeros(n, dtype=np.int8)
            memcpy = np.flatnonzero(kind == EventKind.MEMCPY).tolist()
            copy_kind[memcpy] = [self._copy_kind(int(name[i]), name_of(i)) for i in memcpy]
            cols["copy_kind"] = copy_kind
        coll_idx = [i for i, a in typed_args.items() if a.coll is not None or a.seq is not None]
        if coll_idx:
            self._collective_columns(cols, n, coll_idx, typed_args)
        self.parts.append(cols)

    def _name_ids(self, names: list[str]) -> np.ndarray:
        sid = self.strings
        ids = np.fromiter(map(sid.get, names, repeat(-1)), dtype=np.int32, count=len(names))
        for i in np.flatnonzero(ids < 0).tolist():
            ids[i] = sid.setdefault(names[i], len(sid))
        return ids

    def _args_ids(self, keys: list[bytes], arg_raws: list[msgspec.Raw]) -> np.ndarray:
        table = self.args_key
        ids = np.fromiter(map(table.get, keys, repeat(-2)), dtype=np.int32, count=len(keys))
        for i in np.flatnonzero(ids == -2).tolist():
            aid = table.get(keys[i])
            if aid is None:
                aid = table[keys[i]] = self._new_args(arg_raws[i])
            ids[i] = aid
        return ids

    def _ids(self, values: list[Any]) -> np.ndarray:
        try:
            return np.fromiter(values, dtype=np.int64, count=len(values))
        except (TypeError, ValueError, OverflowError):  # text pids/tids ("GPU 1", "Spans")
            return np.array([self._text_id(v) for v in values], dtype=np.int64)

    def _tracks(
        self,
        pid: np.ndarray,
        tid: np.ndarray,
        kind: np.ndarray,
        typed_args: dict[int, ColumnArgs],
        raw_of: Callable[[int], bytes],
    ) -> np.ndarray:
        gpu = on_gpu(kind, typed_args)
        # One sortable key per (gpu, pid, tid): new tracks are made in that order, whatever the key's form.
        p0, t0 = (int(pid.min()), int(tid.min())) if len(pid) else (0, 0)
        n_pid, n_tid = int(pid.max()) - p0 + 1 if len(pid) else 1, int(tid.max()) - t0 + 1 if len(tid) else 1
        if 2 * n_pid * n_tid < 2**62:
            combo = (gpu.astype(np.int64) * n_pid + (pid - p0)) * n_tid + (tid - t0)
        else:
            upid, pinv = np.unique(pid, return_inverse=True)
            utid, tinv = np.unique(tid, return_inverse=True)
            combo = (gpu.astype(np.int64) * len(upid) + pinv) * len(utid) + tinv
        ucombo, first, inv = _unique_few(combo)
        local = np.empty(len(ucombo), dtype=np.int32)
        for j, i in enumerate(first.tolist()):
            local[j] = self._track((bool(gpu[i]), int(pid[i]), int(tid[i])), i, typed_args, raw_of)
        return local[inv.reshape(-1)]

    def finish(self, meta: dict[str, Any], base_ns: int) -> RankTrace:
        if not self.parts:
            raise KatInputError(self.path, NO_KEPT)
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
        return self.result(events, meta, base_ns)
