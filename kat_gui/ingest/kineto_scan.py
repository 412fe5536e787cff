"""The bridge to the compiled Kineto scanner (``_kscan.c``): its columns -> the same RankTrace as the msgspec path.

The scanner is built by the install when a C compiler is there (``KAT_KINETO_SCANNER=0`` turns it off). A plain
file is mapped, not copied. One C pass validates the whole document (strict JSON, escapes, surrogate pairs,
UTF-8) and, for the events kept, returns columns: kind, interned name, pid/tid, exact ts/dur (int64 ns from
the µs text, by the same half-up rule as :mod:`kat_gui.ingest.timeparse`; other number texts come back as
spans for timeparse itself), correlation, and an args key (the args text minus the instance members, which
the interned text drops too, so equal keys mean equal args text). A kept event whose args text equals an
earlier event's byte for byte except for integer instance ids reuses that event's key and skips the walk of
its args (the ids are still read as integer tokens, every other byte compared), and each (pid, tid) pair gets
a small id.

Python then does only what shows in the tables' order, in the pieces of the msgspec path
(:data:`kat_gui.ingest.kineto_python.PIECE_BYTES`): new names and args keys and a typed msgspec decode of the
few events whose args feed columns (memcpy bytes, collectives, cuda_sync device, the first event of a track),
piece by piece; tracks once, from the pair ids, in the order the pieces would make them.

A mapped file that shrinks while it is scanned ends the scan (the SIGBUS of a read past its new end is caught
inside the mapping; the size is checked again before Python slices the mapping) and the file is read again by
the msgspec path; a shrink in the few ms after that check is not covered. Whatever the scanner does not handle
exactly like the msgspec path (escaped keys, a key twice, pid text that ``int()`` reads another way, numbers
out of range, a piece cut that would fall inside an event, any bad input) raises ``Unsupported`` and the
msgspec path reads the file, so errors read as they always did.
"""

from __future__ import annotations

import mmap
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from kat_gui.errors import KatInputError
from kat_gui.events import COLUMN_DEFAULTS, EVENT_COLUMNS, NO_ID, EventKind
from kat_gui.ingest import kineto_python
from kat_gui.ingest.base import IngestOptions, Progress, RankTrace
from kat_gui.ingest.kineto_header import header, with_host_and_rank
from kat_gui.ingest.kineto_tables import (
    EVENT_LIST,
    NEEDS_TYPED_ARGS,
    NO_KEPT,
    ColumnArgs,
    RankTables,
    as_int,
    on_gpu,
    set_typed_correlation,
)
from kat_gui.ingest.timeparse import decimal_us_to_ns
from kat_gui.ingest.util import gc_paused as _gc_paused

try:  # the compiled scanner (kat_gui/ingest/_kscan.c); optional: the msgspec path does the same work
    from kat_gui.ingest import _kscan as kscan
except ImportError:  # pragma: no cover - depends on the build
    kscan = None

_MEMCPY, _MEMSET = int(EventKind.MEMCPY), int(EventKind.MEMSET)
# Bits of the scanner's flags column (kat_gui/ingest/_kscan.c).
_F_PID_TEXT, _F_TID_TEXT, _F_TS_SLOW, _F_DUR_SLOW, _F_TYPED, _F_NO_ARGS = 1, 2, 4, 8, 16, 32
# The per-event columns of a scan, one value per kept event in file order: (attribute of _Scanned, key in the
# scan's result, dtype).
_SCAN_COLUMNS = (
    ("kind", "kind", np.uint8),  # EventKind
    ("flags", "flags", np.uint8),  # _F_* bits
    ("name", "name", np.int32),  # index into the scan's names
    ("key", "key", np.int32),  # args key: index into key_first
    ("pair", "pair", np.int32),  # id of the event's (pid, tid) column pair
    ("pid", "pid", np.int64),  # the pid, or with _F_PID_TEXT an index into the scan's texts
    ("tid", "tid", np.int64),  # the tid, or with _F_TID_TEXT an index into the scan's texts
    ("ts", "ts", np.int64),  # start, ns (relative to baseTimeNanoseconds when the file has one)
    ("dur", "dur", np.int64),  # duration, ns
    ("corr", "corr", np.int64),  # correlation read from the args, NO_ID when none
    ("args_start", "as", np.int64),  # byte span of the args text in the document
    ("args_end", "ae", np.int64),  # (end 0: the event has no args)
)


class _Scanned:
    """The columns of one compiled scan (see ``_kscan.scan``), as numpy views (the attributes named in
    :data:`_SCAN_COLUMNS`), plus the id maps that the builder fills piece by piece (scanner name id -> string
    id, scanner args key -> args id)."""

    def __init__(self, data: bytes | mmap.mmap, res: dict[str, Any]):
        self.data = data
        for attr, key, dtype in _SCAN_COLUMNS:
            setattr(self, attr, np.frombuffer(res[key], dtype=dtype))
        self.names: list[str] = res["names"]
        self.texts: list[str] = res["texts"]
        self.key_first = np.frombuffer(res["key_first"], dtype=np.int64).reshape(-1, 2).tolist()
        self.name_gid = np.empty(len(self.names), dtype=np.int32)
        self.key_aid = np.empty(len(self.key_first), dtype=np.int32)
        # ts/dur that are not plain decimals: exact conversion by timeparse, as in the Python path.
        for col, key in ((self.ts, "slow_ts"), (self.dur, "slow_dur")):
            slow = np.frombuffer(res[key], dtype=np.int64).reshape(-1, 3)
            if len(slow):
                col[slow[:, 0]] = decimal_us_to_ns([data[s:e] for s, e in slow[:, 1:].tolist()])

    def raw_of(self, lo: int) -> Callable[[int], bytes]:
        """Args text of kept event ``lo + i`` (``{}`` when the event has none)."""
        data, start, end = self.data, self.args_start, self.args_end

        def raw(i: int) -> bytes:
            e = int(end[lo + i])
            return data[int(start[lo + i]) : e] if e else b"{}"

        return raw


def read_scanned(
    path: Path, data: bytes | mmap.mmap, options: IngestOptions, progress: Progress | None
) -> RankTrace | None:
    """The compiled scanner's reading of ``data``, or None when it needs the Python path. Raises
    ``kscan.Unsupported`` (or a KatInputError / ValueError that the Python path will raise its own way)."""
    builder = ScanBuilder(path, options)
    on_piece = None
    if progress is not None:
        size = max(len(data), 1)

        def on_piece(done: int) -> None:
            progress(min(done / size, 1.0), f"reading {path.name}")

    with _gc_paused():
        res = kscan.scan(
            data, {c: int(k) for c, k in builder.cat_kind.items()}, kineto_python.PIECE_BYTES, on_piece
        )
        if isinstance(data, mmap.mmap) and os.stat(path).st_size != len(data):
            # Shrunk or rewritten while mapped: reading the mapping past its new end would fault (SIGBUS).
            raise kscan.Unsupported("the file changed while it was read")
        top = res.pop("top")
        if len({key for key, _, _ in top}) != len(top):
            return None  # a top-level key twice: the msgspec path applies its own rule
        meta, base_ns = header(path, {key: data[s:e] for key, s, e in top if key != "traceEvents"})
        sc = _Scanned(data, res)
        spans = np.frombuffer(res["meta_spans"], dtype=np.int64).reshape(-1, 2).tolist()
        if spans:
            builder._metadata(EVENT_LIST.decode(b"[" + b",".join(data[s:e] for s, e in spans) + b"]"))
        pieces = np.frombuffer(res["pieces"], dtype=np.int64).reshape(-1, 4).tolist()
        events = builder.scanned_events(sc, pieces)
        builder.count_scanned(res["cats"], res["ph"])
        del sc, res
        trace = builder.result(events, meta, base_ns)
    return with_host_and_rank(trace, meta)


class ScanBuilder(RankTables):
    """The rank's tables filled from one compiled scan, in the order the msgspec path fills them."""

    def count_scanned(self, cats: list[tuple], phs: list[tuple[str, int]]) -> None:
        """Category and ph counts of a compiled scan, entered in first-seen order like
        :meth:`MsgspecBuilder.add <kat_gui.ingest.kineto_python.MsgspecBuilder.add>` does."""
        for cat, n_all, n_other, _n_kept, _first in cats:
            self.all_cats[cat] += n_all
            if n_other:
                self.other_cats[cat] += n_other
        for cat, _n_all, _n_other, n_kept, _first in sorted((c for c in cats if c[3]), key=lambda c: c[4]):
            self.kept[cat] += n_kept
        for ph, count in phs:
            if ph != "X":
                self.other_ph[ph] += count

    def scanned_events(self, sc: _Scanned, pieces: list[list[int]]) -> dict[str, np.ndarray]:
        """The event columns of a compiled scan. Work whose order shows in the tables (string, args and
        track ids) goes piece by piece, in the Python path's pieces (``pieces``: kept end, bytes done,
        names end, keys end); the rest is done once over all kept events."""
        n = len(sc.kind)
        if n == 0:
            raise KatInputError(self.path, NO_KEPT)
        sid = self.strings
        kind, flags, corr = sc.kind, sc.flags, sc.corr
        typed_all = ((flags & _F_TYPED) != 0) | NEEDS_TYPED_ARGS[kind]
        text_ids = (flags & (_F_PID_TEXT | _F_TID_TEXT)) != 0
        extra: dict[str, np.ndarray] = {}
        # Tracks are made once at the end, in the order the per-piece work would make them (piece of first
        # use, then key); they need the pids/tids as MsgspecBuilder._ids maps them and the typed args of each piece.
        all_pid, all_tid = sc.pid, sc.tid
        all_typed: dict[int, ColumnArgs] = {}
        starts: list[int] = []
        lo = name_lo = key_lo = 0
        for hi, _done, name_hi, key_hi in pieces:
            for cid in range(name_lo, name_hi):
                sc.name_gid[cid] = sid.setdefault(sc.names[cid], len(sid))
            if hi > lo:
                raw_of = sc.raw_of(lo)
                sub = np.flatnonzero(typed_all[lo:hi]).tolist()
                typed_args = dict(zip(sub, self._decode_args([raw_of(i) for i in sub]), strict=True))
                set_typed_correlation(corr, typed_args, lo)
                for k in range(key_lo, key_hi):
                    start, end = sc.key_first[k]
                    sc.key_aid[k] = self._new_args(sc.data[start:end] if end else b"{}")
                if text_ids[lo:hi].any():
                    # Same order of first use as MsgspecBuilder._ids: the piece's pids, then its tids.
                    if all_pid is sc.pid:
                        all_pid, all_tid = sc.pid.copy(), sc.tid.copy()
                    for col, bit in ((all_pid, _F_PID_TEXT), (all_tid, _F_TID_TEXT)):
                        for i in (lo + np.flatnonzero(flags[lo:hi] & bit)).tolist():
                            col[i] = self._text_id(sc.texts[col[i]])
                starts.append(lo)
                all_typed.update((lo + i, a) for i, a in typed_args.items())
                if typed_args:
                    self._typed_columns(extra, n, lo, kind, sc, typed_args)
            lo, name_lo, key_lo = hi, name_hi, key_hi
        track = self._scanned_tracks(sc, all_pid, all_tid, all_typed, starts)
        events: dict[str, np.ndarray] = {
            "start_ns": sc.ts,
            "end_ns": sc.ts + np.maximum(sc.dur, 0),
            "kind": kind,
            "name": sc.name_gid[sc.name],
            "correlation": corr,
            "args": sc.key_aid[sc.key],
        }
        for col, dt in EVENT_COLUMNS.items():
            if col not in events:
                events[col] = extra[col] if col in extra else np.full(n, COLUMN_DEFAULTS[col], dtype=dt)
        events["track"] = track
        return events

    def _scanned_tracks(
        self,
        sc: _Scanned,
        pid: np.ndarray,
        tid: np.ndarray,
        typed_args: dict[int, ColumnArgs],
        starts: list[int],
    ) -> np.ndarray:
        """Track id of each event of a compiled scan, made in the order that ``MsgspecBuilder._tracks`` piece by
        piece makes them: by the piece of first use, then by (gpu, pid, tid). ``pid``/``tid``: the columns as
        ``MsgspecBuilder._ids`` maps them; ``starts``: the first event of each piece; ``typed_args``: by event."""
        kind = sc.kind
        gpu = on_gpu(kind, typed_args)
        # The scanner numbers the (pid, tid) column pairs; with the gpu bit that names a track's key.
        combo = sc.pair * 2 + gpu
        present = np.flatnonzero(np.bincount(combo))
        if len(present) <= 32:  # argmax of a bool array stops at the first hit
            first = [int(np.argmax(combo == c)) for c in present.tolist()]
        else:
            at = np.full(int(present[-1]) + 1, len(combo), dtype=np.intp)
            np.minimum.at(at, combo, np.arange(len(combo)))
            first = at[present].tolist()
        keys = [(bool(gpu[i]), int(pid[i]), int(tid[i])) for i in first]
        piece_of = np.searchsorted(np.asarray(starts), first, side="right").tolist()
        local = np.zeros(int(present[-1]) + 1, dtype=np.int32)
        raw_of = sc.raw_of(0)
        for j in sorted(range(len(first)), key=lambda j: (piece_of[j], keys[j], first[j])):
            local[present[j]] = self._track(keys[j], first[j], typed_args, raw_of)
        return local[combo]

    def _typed_columns(
        self,
        extra: dict[str, np.ndarray],
        n: int,
        lo: int,
        kind: np.ndarray,
        sc: _Scanned,
        typed_args: dict[int, ColumnArgs],
    ) -> None:
        """Copy and collective columns of one piece of a compiled scan (rows ``lo + i`` of ``typed_args``)."""
        typed = np.fromiter(typed_args, dtype=np.int64, count=len(typed_args))
        typed_kind = kind[lo + typed]
        idx = typed[(typed_kind == _MEMCPY) | (typed_kind == _MEMSET)].tolist()
        if idx:
            if "bytes" not in extra:
                extra["bytes"] = np.full(n, NO_ID, dtype=np.int64)
                extra["copy_kind"] = np.zeros(n, dtype=np.int8)
            rows = np.array(idx, dtype=np.int64) + lo
            extra["bytes"][rows] = [as_int(typed_args[i].nbytes) for i in idx]
            for r in rows[kind[rows] == _MEMCPY].tolist():
                cid = int(sc.name[r])
                extra["copy_kind"][r] = self._copy_kind(int(sc.name_gid[cid]), sc.names[cid])
        coll_idx = [i for i, a in typed_args.items() if a.coll is not None or a.seq is not None]
        if coll_idx:
            part: dict[str, np.ndarray] = {}
            self._collective_columns(
                part, len(coll_idx), list(range(len(coll_idx))), [typed_args[i] for i in coll_idx]
            )
            rows = np.array(coll_idx, dtype=np.int64) + lo
            for col, values in part.items():
                if col not in extra:
                    extra[col] = np.full(n, NO_ID, dtype=EVENT_COLUMNS[col])
                extra[col][rows] = values
