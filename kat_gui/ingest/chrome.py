"""Chrome Trace Event Format (``*.json``, ``*.json.gz``: what chrome://tracing and Perfetto open) -> one
:class:`RankTrace` per rank.

In-house tracers, framework timers (Megatron-style ``forward-compute`` / ``grads-reduce-scatter``) and
exporters write this format: a JSON array of events, or an object whose ``traceEvents`` holds them. Kineto
traces are Chrome traces too; they are read by :mod:`kat_gui.ingest.kineto` (the registry tries it first and
:func:`kat_gui.ingest.kineto.plain_chrome_head` draws the line between the two). ``docs/formats.md`` is the
reference; in short:

- Events: ``X`` (complete: ``ts`` + ``dur``) and ``B``/``E`` pairs (matched per pid/tid, innermost first, in
  time order) are timed operations; ``M`` ``process_name`` / ``thread_name`` give the names the rank mapping
  reads. Every other phase (instants, counters, flows, async) is counted in ``meta["skipped"]`` and dropped.
- Times: ``ts``/``dur`` are µs, floats in the text; they are converted from their decimal text to int64 ns by
  :mod:`kat_gui.ingest.timeparse` (exact: an epoch in µs with a fraction keeps its ns; rounded half up at the
  ns, as for Kineto). ``displayTimeUnit`` does not change the unit. Times stay on the trace's own clock
  (``meta["time_base"] = "chrome_us"``).
- Ranks: one process = one rank by default (numbered in pid order, or by the ``rank N`` in every process
  name); ``IngestOptions.rank_from`` maps ranks from the pid, the tid, the process name or the thread name
  with a regular expression (:class:`RankFrom`). A file holding one process leaves the rank to the registry
  (``--rank``, the file name).
- Kinds: an operation that encloses another one of its thread is a range (``gpu_annotation``); the others
  are the rank's work, stored as GPU events on one stream per thread so that detection compares them: copies
  named with a direction (``HtoD``, ``d2h``...) become ``memcpy``, ``memset`` a memset, everything else a
  ``kernel`` whose class (compute, memory, collective) comes from the name patterns of
  ``resources/kernel_classes.toml`` at detection time. ``ProfilerStep#N`` ranges stay host annotations (they
  mark steps). Collectives are matched across ranks by name and order, as for any trace without process
  groups.
"""

from __future__ import annotations

import os
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
import numpy as np

from kat_gui.errors import KatInputError
from kat_gui.events import EVENT_COLUMNS, NO_ID, CopyKind, EventKind, TrackKind, empty_columns
from kat_gui.ingest.base import IngestOptions, Progress, RankTrace, TrackInfo
from kat_gui.ingest.kineto import plain_chrome_head
from kat_gui.ingest.kineto_header import hostname_from_meta, json_problem, load_bytes
from kat_gui.ingest.timeparse import decimal_us_to_ns
from kat_gui.ingest.util import gc_paused

FORMAT = "chrome"

_STEP_RX = re.compile(r"^ProfilerStep#\d+$")
_PROCESS_RANK_RX = re.compile(r"(?<![a-z])rank[ _-]?(\d+)(?!\d)", re.IGNORECASE)
_LAST_NUMBER_RX = re.compile(r"(\d+)(?!.*\d)")
# Copy direction in an operation's name -> (CopyKind). The long forms first; p2p only with "copy" beside it.
_COPY_RULES = (
    (re.compile(r"htod|h2d|host.?to.?device", re.IGNORECASE), CopyKind.HTOD),
    (re.compile(r"dtoh|d2h|device.?to.?host", re.IGNORECASE), CopyKind.DTOH),
    (re.compile(r"dtod|d2d|device.?to.?device", re.IGNORECASE), CopyKind.DTOD),
    (re.compile(r"ptop|(?:mem)?copy.*p2p|p2p.*(?:mem)?copy|peer.?to.?peer", re.IGNORECASE), CopyKind.PTOP),
    (re.compile(r"htoh|h2h", re.IGNORECASE), CopyKind.HTOH),
)
_MEMCPY_RX = re.compile(r"memcpy", re.IGNORECASE)
_MEMSET_RX = re.compile(r"memset", re.IGNORECASE)
RANK_FROM_SOURCES = ("pid", "tid", "process", "thread")
_UNKNOWN, _DROPPED = -2, -3  # row rank codes while splitting: rank left to the registry, owner not matched


class ChromeEvent(msgspec.Struct, gc=False):
    """One trace event as decoded: times and args stay raw JSON text (times are parsed exactly, args interned)."""

    ph: Any = ""
    name: Any = None
    pid: Any = None
    tid: Any = None
    ts: msgspec.Raw = msgspec.Raw(b"null")
    dur: msgspec.Raw = msgspec.Raw(b"0")
    args: msgspec.Raw = msgspec.Raw(b"{}")


_EVENTS = msgspec.json.Decoder(list[ChromeEvent])
_TOP = msgspec.json.Decoder(dict[str, msgspec.Raw])
_ARGS = msgspec.json.Decoder()


# ---------------------------------------------------------------------------------------------- sniffing


def sniff(path: str | os.PathLike, head: bytes) -> bool:
    """True for a JSON array whose first element is an event object (it has a ``ph`` key), or an object with
    ``traceEvents`` that shows none of Kineto's marks (:func:`kat_gui.ingest.kineto.plain_chrome_head`)."""
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n")
    if text.startswith(b"["):
        return text[1:].lstrip(b" \t\r\n").startswith(b"{") and b'"ph"' in text
    return text.startswith(b"{") and plain_chrome_head(text)


# ---------------------------------------------------------------------------------------------- rank mapping


@dataclass(frozen=True)
class RankFrom:
    """Where ranks come from: ``source`` (pid, tid, process, thread) and an optional regular expression.

    Written ``SOURCE`` or ``SOURCE:REGEX`` (``--rank-from 'thread:PP rank (\\d+), TP rank (\\d+)'``). The text
    it reads is the pid or tid as written, or the process / thread name (its pid / tid when it has none).
    Without a regex the key is the last number of the text. With one, ``re.search`` must match: its capture
    groups (the whole match if it has none) are the key; threads or processes it does not match are dropped
    and counted in ``meta["unmatched_tracks"]``.
    """

    source: str
    regex: re.Pattern[str] | None = None

    @classmethod
    def parse(cls, spec: str) -> RankFrom:
        source, sep, pattern = spec.partition(":")
        source = source.strip().lower()
        if source not in RANK_FROM_SOURCES:
            raise KatInputError(
                None,
                f"--rank-from {spec!r}: the source must be one of {', '.join(RANK_FROM_SOURCES)} "
                "(optionally followed by :REGEX)",
            )
        if not sep:
            return cls(source)
        try:
            return cls(source, re.compile(pattern))
        except re.error as exc:
            raise KatInputError(None, f"--rank-from {spec!r}: bad regular expression ({exc})") from None

    def key(self, text: str) -> tuple[str, ...] | None:
        """The key components read from ``text``, or None when it does not match."""
        if self.regex is None:
            m = _LAST_NUMBER_RX.search(text)
            return (m.group(1),) if m else None
        m = self.regex.search(text)
        if m is None:
            return None
        groups = m.groups()
        if not groups:
            return (m.group(0),)
        return tuple("" if g is None else g for g in groups)


def _sort_key(key: tuple) -> tuple:
    # numbers compare as numbers, before any text
    return tuple((0, int(c), "") if isinstance(c, str) and c.isdigit() else (1, 0, str(c)) for c in key)


def _number_keys(keys: dict[Any, tuple]) -> dict[Any, int]:
    """Owner -> rank: the distinct keys numbered 0.. in sorted order (numbers as numbers, component by
    component)."""
    number = {k: r for r, k in enumerate(sorted(set(keys.values()), key=_sort_key))}
    return {owner: number[k] for owner, k in keys.items()}


# ---------------------------------------------------------------------------------------------- reading


def read(path: str | os.PathLike, options: IngestOptions | None = None, progress: Progress | None = None):
    """The one rank of a Chrome trace; KatInputError when the file holds several (use :func:`read_many`)."""
    traces = read_many(path, options, progress)
    if len(traces) > 1:
        raise KatInputError(path, f"holds {len(traces)} ranks; read it with read_many (kat ingest does)")
    return traces[0]


def read_many(
    path: str | os.PathLike, options: IngestOptions | None = None, progress: Progress | None = None
) -> list[RankTrace]:
    """One RankTrace per rank of the Chrome trace at ``path`` (plain or gzip), sorted by rank; the rank is None
    when the file holds a single process and neither its name nor ``rank_from`` says which rank it is."""
    options = options or IngestOptions()
    path = Path(path)
    rank_from = RankFrom.parse(options.rank_from) if getattr(options, "rank_from", None) else None
    data = load_bytes(path)
    try:
        with gc_paused():
            events, meta = _decode(path, data)
            del data
            if progress is not None:
                progress(0.5, f"decoded {path.name}")
            ops = _Ops.build(path, events, meta)
            del events
            traces = ops.split(path, rank_from, options)
    except UnicodeDecodeError as exc:  # msgspec checks UTF-8 where it decodes a string
        raise KatInputError(path, f"text that is not valid UTF-8 ({exc.reason}) in an event") from None
    except RecursionError:
        raise KatInputError(path, "JSON nested too deeply in an event's args") from None
    if progress is not None:
        progress(1.0, f"read {path.name}")
    return traces


def _decode(path: Path, data: bytes) -> tuple[list[ChromeEvent], dict[str, Any]]:
    view = memoryview(data)
    start = 0
    while start < len(view) and view[start] in b"\xef\xbb\xbf \t\r\n":
        start += 1
    body = bytes(view[start:]) if start else data
    meta: dict[str, Any] = {}
    try:
        if body[:1] == b"[":
            try:
                return _EVENTS.decode(body), meta
            except msgspec.DecodeError:
                # The format allows a missing closing bracket (a tracer that died): close the array and retry.
                fixed = body.rstrip(b" \t\r\n").rstrip(b",")
                if fixed.endswith(b"]"):
                    raise
                return _EVENTS.decode(fixed + b"]"), meta
        try:
            top = _TOP.decode(body)
        except msgspec.ValidationError:
            raise KatInputError(
                path, "JSON is not a trace (neither an object with traceEvents nor an array of events)"
            ) from None
        raw = top.pop("traceEvents", None)
        if raw is None:
            raise KatInputError(path, "JSON is not a trace (no traceEvents)")
        for key, value in top.items():
            meta[key] = msgspec.json.decode(value)
        return _EVENTS.decode(raw), meta
    except msgspec.ValidationError as exc:
        raise KatInputError(
            path, f"not a Chrome trace: traceEvents holds something that is not an event ({exc})"
        ) from None
    except msgspec.DecodeError as exc:
        raise KatInputError(path, f"not valid JSON ({json_problem(exc)})") from None


def _text(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return str(v)


@dataclass
class _Ops:
    """Every timed operation of the file, columnar: times in ns, name / pid / tid / args as table ids."""

    start: np.ndarray
    end: np.ndarray
    name: np.ndarray  # into names
    owner: np.ndarray  # into owners: (pid text, tid text)
    args: np.ndarray  # into args_raw, -1 for none
    names: list[str]
    owners: list[tuple[str, str]]
    args_raw: list[bytes]
    process_names: dict[str, str]
    thread_names: dict[str, str]
    skipped: Counter
    meta: dict[str, Any]

    @classmethod
    def build(cls, path: Path, events: list[ChromeEvent], meta: dict[str, Any]) -> _Ops:
        process_names: dict[str, str] = {}
        thread_names: dict[str, str] = {}
        skipped: Counter = Counter()
        owners: dict[tuple[str, str], int] = {}
        names: dict[str, int] = {}
        args_ids: dict[bytes, int] = {}
        x_idx: list[int] = []
        be_idx: list[int] = []
        for i, e in enumerate(events):
            ph = e.ph
            if ph == "X":
                x_idx.append(i)
            elif ph == "B" or ph == "E":
                be_idx.append(i)
            elif ph == "M":
                if e.name in ("process_name", "thread_name"):
                    try:
                        value = _ARGS.decode(e.args).get("name")
                    except (msgspec.DecodeError, AttributeError):
                        value = None
                    if value is not None:
                        if e.name == "process_name":
                            process_names[_text(e.pid)] = str(value)
                        else:
                            thread_names[f"{_text(e.pid)}/{_text(e.tid)}"] = str(value)
            else:
                skipped[f"ph={ph}"] += 1

        def times(idx: list[int], attr: str) -> np.ndarray:
            try:
                return decimal_us_to_ns([getattr(events[i], attr) for i in idx])
            except (ValueError, OverflowError) as exc:
                raise KatInputError(path, f"bad event time ({attr}): {exc}") from None

        # complete events
        x_start = times(x_idx, "ts")
        x_dur = times(x_idx, "dur")
        negative = int(np.count_nonzero(x_dur < 0))
        if negative:
            skipped["negative dur (kept as 0)"] += negative
        x_end = x_start + np.maximum(x_dur, 0)
        # begin/end pairs, matched per (pid, tid) in time order (file order breaks ties)
        be_ts = times(be_idx, "ts")
        b_pos: list[int] = []
        e_pos: list[int] = []
        if be_idx:
            thread_of = [(_text(events[i].pid), _text(events[i].tid)) for i in be_idx]
            tkey = {k: n for n, k in enumerate(dict.fromkeys(thread_of))}
            tk = np.fromiter((tkey[k] for k in thread_of), dtype=np.int64, count=len(be_idx))
            order = np.lexsort((np.arange(len(be_idx)), be_ts, tk)).tolist()
            stacks: dict[int, list[int]] = {}
            for j in order:
                stack = stacks.setdefault(int(tk[j]), [])
                if events[be_idx[j]].ph == "B":
                    stack.append(j)
                elif stack:
                    b_pos.append(stack.pop())
                    e_pos.append(j)
                else:
                    skipped["E without B"] += 1
            left = sum(len(s) for s in stacks.values())
            if left:
                skipped["B without E"] += left
        rows = x_idx + [be_idx[j] for j in b_pos]
        start = np.concatenate([x_start, be_ts[b_pos]]) if b_pos else x_start
        end = np.concatenate([x_end, be_ts[e_pos]]) if b_pos else x_end

        n = len(rows)
        name = np.empty(n, dtype=np.int32)
        owner = np.empty(n, dtype=np.int32)
        args = np.empty(n, dtype=np.int32)
        args_raw: list[bytes] = []
        for k, i in enumerate(rows):
            e = events[i]
            nm = e.name if type(e.name) is str else _text(e.name)
            name[k] = names.setdefault(nm, len(names))
            owner[k] = owners.setdefault((_text(e.pid), _text(e.tid)), len(owners))
            raw = bytes(e.args)
            if raw in (b"{}", b"null") or not raw.strip(b"{} \t\r\n"):
                args[k] = NO_ID
            else:
                aid = args_ids.get(raw)
                if aid is None:
                    aid = args_ids[raw] = len(args_raw)
                    args_raw.append(raw)
                args[k] = aid
        return cls(
            start=start.astype(np.int64),
            end=end.astype(np.int64),
            name=name,
            owner=owner,
            args=args,
            names=list(names),
            owners=list(owners),
            args_raw=args_raw,
            process_names=process_names,
            thread_names=thread_names,
            skipped=skipped,
            meta=meta,
        )

    # -------------------------------------------------------------------------------------- ranks

    def _owner_ranks(self, path: Path, rank_from: RankFrom | None) -> tuple[dict[int, int | None], list[str]]:
        """Owner (pid, tid) id -> rank (None: the registry decides), and the names of unmatched owners."""
        pids = list(dict.fromkeys(p for p, _ in self.owners))
        if rank_from is None:
            named = [_PROCESS_RANK_RX.search(self.process_names.get(p, "")) for p in pids]
            numbers = [int(m.group(1)) for m in named if m]
            if len(set(numbers)) == len(pids) and max(numbers) < 2**31:
                by_pid = dict(zip(pids, numbers, strict=True))
            elif len(pids) == 1:
                by_pid = {pids[0]: None}
            else:
                by_pid = {p: r for r, p in enumerate(sorted(pids, key=lambda s: _sort_key((s,))))}
            return {o: by_pid[p] for o, (p, _) in enumerate(self.owners)}, []
        # text of each owner's source
        keys: dict[int, tuple] = {}
        unmatched: list[str] = []
        per_thread = rank_from.source in ("tid", "thread")
        for o, (p, t) in enumerate(self.owners):
            if rank_from.source == "pid":
                text = p
            elif rank_from.source == "tid":
                text = t
            elif rank_from.source == "process":
                text = self.process_names.get(p, p)
            else:
                text = self.thread_names.get(f"{p}/{t}", t)
            k = rank_from.key(text)
            if k is None:
                unmatched.append(text)
            else:
                keys[o] = k
        if not keys:
            seen = ", ".join(repr(s) for s in list(dict.fromkeys(unmatched))[:4])
            raise KatInputError(
                path, f"--rank-from {rank_from.source}: nothing to read a rank from matched (seen: {seen})"
            )
        direct = all(len(k) == 1 and k[0].isdigit() for k in keys.values())
        if direct and per_thread and len(pids) > 1:
            # the same thread key under two processes names two ranks: the process becomes part of the key
            owners_of: dict[tuple, set[str]] = {}
            for o, k in keys.items():
                owners_of.setdefault(k, set()).add(self.owners[o][0])
            direct = all(len(s) == 1 for s in owners_of.values())
        if direct:
            ranks = {o: int(k[0]) for o, k in keys.items()}
            too_big = [r for r in ranks.values() if r >= 2**31]
            if too_big:
                raise KatInputError(
                    path, f"--rank-from {rank_from.source}: rank {too_big[0]} is out of range"
                )
            return ranks, unmatched
        if per_thread and len(pids) > 1:
            pid_rank = {p: r for r, p in enumerate(sorted(pids, key=lambda s: _sort_key((s,))))}
            keys = {o: (str(pid_rank[self.owners[o][0]]), *k) for o, k in keys.items()}
        return _number_keys(keys), unmatched

    def split(self, path: Path, rank_from: RankFrom | None, options: IngestOptions) -> list[RankTrace]:
        if not len(self.start):
            raise KatInputError(path, "no timed events (ph X, or B/E pairs) in this Chrome trace")
        owner_rank, unmatched = self._owner_ranks(path, rank_from)
        ranks = sorted(set(owner_rank.values()), key=lambda r: -1 if r is None else r)
        if options.rank is not None and len(ranks) > 1:
            raise KatInputError(
                path, f"holds {len(ranks)} ranks; a forced rank (--rank) needs a one-rank file"
            )
        # per owner: its rank, _UNKNOWN (the registry decides) or _DROPPED (rank_from did not match it)
        code = {None: _UNKNOWN}
        rank_of_owner = np.array(
            [
                code.get(owner_rank[o], owner_rank[o]) if o in owner_rank else _DROPPED
                for o in range(len(self.owners))
            ],
            dtype=np.int64,
        )
        row_rank = rank_of_owner[self.owner]
        dropped = int(np.count_nonzero(row_rank == _DROPPED))
        out = []
        for r in ranks:
            sel = np.flatnonzero(row_rank == (_UNKNOWN if r is None else r))
            if not len(sel):
                continue
            trace = self._rank_trace(path, sel)
            trace.rank = r
            if unmatched:
                trace.meta["unmatched_tracks"] = sorted(set(unmatched))[:50]
                trace.meta["skipped"]["rank_from: no match"] = dropped
            out.append(trace)
        if not out:
            raise KatInputError(path, "no events left once ranks were mapped")
        return out

    # -------------------------------------------------------------------------------------- one rank

    def _rank_trace(self, path: Path, sel: np.ndarray) -> RankTrace:
        start, end = self.start[sel], self.end[sel]
        owner, name_g, args_g = self.owner[sel], self.name[sel], self.args[sel]
        n = len(sel)
        # per-rank string table: the names used, in first-use order
        used, first = np.unique(name_g, return_index=True)
        used = used[np.argsort(first, kind="stable")]
        remap = np.full(len(self.names), -1, dtype=np.int32)
        remap[used] = np.arange(len(used), dtype=np.int32)
        strings = [self.names[i] for i in used.tolist()]
        name = remap[name_g]
        # kinds by name
        n_str = len(strings)
        kind_of = np.full(n_str, int(EventKind.KERNEL), dtype=np.uint8)
        copy_of = np.zeros(n_str, dtype=np.int8)
        step_of = np.zeros(n_str, dtype=bool)
        for i, s in enumerate(strings):
            if _STEP_RX.match(s):
                step_of[i] = True
                kind_of[i] = EventKind.ANNOTATION
                continue
            ck = next((int(v) for rx, v in _COPY_RULES if rx.search(s)), 0)
            if ck or _MEMCPY_RX.search(s):
                kind_of[i], copy_of[i] = EventKind.MEMCPY, ck
            elif _MEMSET_RX.search(s):
                kind_of[i] = EventKind.MEMSET
        kind = kind_of[name]
        # tracks: one GPU stream per (pid, tid) owner (stream = its ordinal in the rank), and one host thread
        # per owner for step annotations
        owners_here = np.unique(owner)
        stream_of = {int(o): k for k, o in enumerate(owners_here.tolist())}
        is_step = step_of[name]
        tracks: list[TrackInfo] = []
        track = np.empty(n, dtype=np.int32)
        pair = owner.astype(np.int64) * 2 + is_step
        for key in np.unique(pair).tolist():
            o, host = key // 2, bool(key % 2)
            p, t = self.owners[o]
            pid, tid = _int_id(p), _int_id(t)
            if host:
                tracks.append(TrackInfo(TrackKind.HOST_THREAD, -1, -1, pid, tid))
            else:
                tracks.append(TrackInfo(TrackKind.GPU_STREAM, 0, stream_of[o], pid, tid))
            track[pair == key] = len(tracks) - 1
        # an operation that encloses another one of its track is a range, not work
        container = _containers(track, start, end) & ~is_step
        kind = np.where(container, np.uint8(EventKind.GPU_ANNOTATION), kind).astype(np.uint8)
        cols = empty_columns(n)
        cols["start_ns"] = start
        cols["end_ns"] = end
        cols["kind"] = kind
        cols["name"] = name
        is_copy = kind == EventKind.MEMCPY
        cols["copy_kind"] = np.where(is_copy, copy_of[name], 0).astype(np.int8)
        # args: interned per rank, as JSON text; memcpy / memset bytes from args["bytes"]
        args_text: dict[str, int] = {}
        args_list: list[str] = []
        arg_ids = np.full(n, NO_ID, dtype=np.int32)
        nbytes = np.full(n, NO_ID, dtype=np.int64)
        decoded: dict[int, tuple[int, int]] = {}
        has_args = np.flatnonzero(args_g >= 0)
        wants_bytes = (kind == EventKind.MEMCPY) | (kind == EventKind.MEMSET)
        for k in has_args.tolist():
            g = int(args_g[k])
            hit = decoded.get(g)
            if hit is None:
                try:
                    obj = _ARGS.decode(self.args_raw[g])
                except msgspec.DecodeError:
                    obj = None
                aid, b = NO_ID, NO_ID
                if isinstance(obj, dict) and obj:
                    text = msgspec.json.encode(obj).decode()
                    aid = args_text.setdefault(text, len(args_text))
                    if aid == len(args_list):
                        args_list.append(text)
                    v = obj.get("bytes")
                    if type(v) is int and 0 <= v < 2**63:
                        b = v
                hit = decoded[g] = (aid, b)
            arg_ids[k] = hit[0]
            if wants_bytes[k]:
                nbytes[k] = hit[1]
        cols["args"] = arg_ids
        cols["bytes"] = nbytes
        cols["track"] = track
        for col, dt in EVENT_COLUMNS.items():
            cols[col] = cols[col].astype(dt, copy=False)
        meta = {k: v for k, v in self.meta.items()}
        host = hostname_from_meta(meta)
        if host is not None:
            meta["hostname"] = host
        pids_here = {self.owners[o][0] for o in owners_here.tolist()}
        meta["time_base"] = "chrome_us"
        meta["process_names"] = {p: v for p, v in self.process_names.items() if p in pids_here}
        meta["thread_names"] = {
            f"{self.owners[o][0]}/{self.owners[o][1]}": self.thread_names[key]
            for o in owners_here.tolist()
            if (key := f"{self.owners[o][0]}/{self.owners[o][1]}") in self.thread_names
        }
        meta["skipped"] = dict(self.skipped)
        kinds = Counter(EventKind(int(k)).name.lower() for k in kind.tolist())
        meta["kept"] = dict(sorted(kinds.items()))
        return RankTrace(
            rank=None,
            source=str(path),
            format=FORMAT,
            tracks=tracks,
            events=cols,
            strings=strings,
            args=args_list,
            meta=meta,
        )


def _int_id(text: str) -> int:
    """A pid / tid as an integer: its value, or the last number of a text id ("GPU 3"), else -1 (also for a
    number that does not fit an int64)."""
    s = text.strip()
    if s.lstrip("-").isdigit():
        v = int(s)
    else:
        m = _LAST_NUMBER_RX.search(s)
        v = int(m.group(1)) if m else -1
    return v if -(2**63) <= v < 2**63 else -1  # the store keeps int64 ids


def _containers(track: np.ndarray, start: np.ndarray, end: np.ndarray) -> np.ndarray:
    """Per row: True when another row of the same track lies inside it (starts at or after its start and
    before its end, ends no later, and is not the same interval). Rows sorted by (track, start, -end): with
    well-nested ranges the next row is the first child when there is one."""
    n = len(track)
    out = np.zeros(n, dtype=bool)
    if n < 2:
        return out
    order = np.lexsort((-end, start, track))
    t, s, e = track[order], start[order], end[order]
    nxt_inside = (
        (t[1:] == t[:-1]) & (s[1:] < e[:-1]) & (e[1:] <= e[:-1]) & ((s[1:] != s[:-1]) | (e[1:] != e[:-1]))
    )
    out[order[:-1]] = nxt_inside
    return out
