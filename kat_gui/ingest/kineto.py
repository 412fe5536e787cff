"""PyTorch profiler / Kineto JSON (``*.json``, ``*.json.gz``; one file = one rank) -> :class:`RankTrace`.

Two paths give the same RankTrace (every column, string, args and track table, meta):

- **Compiled scanner** (``_kscan.c``, built by the install when a C compiler is there; off with
  ``KAT_KINETO_SCANNER=0``). A plain file is mapped, not copied. One C pass validates the whole document
  (strict JSON, escapes, surrogate pairs, UTF-8) and, for the events kept, returns columns: kind, interned
  name, pid/tid, exact ts/dur (the same half-up rule as :mod:`kat_gui.ingest.timeparse`; other number texts
  come back as spans for timeparse itself), correlation, and an args key (the args text minus the instance
  members, which the interned text drops too, so equal keys mean equal args text). A kept event whose args
  text equals an earlier event's byte for byte except for integer instance ids reuses that event's key and
  skips the walk of its args (the ids are still read as integer tokens, every other byte compared), and each
  (pid, tid) pair gets a small id. Python then does only what shows in the tables' order, in the pieces of
  the msgspec path below: new names and args keys and a typed msgspec decode of the few events whose args
  feed columns (memcpy bytes, collectives, cuda_sync device, the first event of a track), piece by piece;
  tracks once, from the pair ids, in the order the pieces would make them. A mapped file that shrinks while
  it is scanned ends the scan (the SIGBUS of a read past its new end is caught inside the mapping; the size
  is checked again before Python slices the mapping) and the file is read again by the msgspec path; a
  shrink in the few ms after that check is not covered. Whatever the scanner does not handle exactly
  like this path (escaped keys, a key twice, pid text that ``int()`` reads another way, numbers out of range,
  a piece cut that would fall inside an event, any bad input) raises ``_kscan.Unsupported`` and the msgspec
  path reads the file, so errors read as they always did.
- **msgspec path** (the reference, and the fallback):

  - The whole document is decoded once by msgspec into ``{key: Raw}``: this validates the JSON and gives
    the ``traceEvents`` array as a zero-copy view without building any event.
  - The array is cut at event boundaries into ~4 MiB pieces, and each piece is decoded into a typed
    :class:`_Ev` (``ts``/``dur``/``args`` kept as raw text). Only one piece's events exist as objects at a time,
    so a file that is 90% ``python_function`` never holds those events as dicts or structs. A cut found by
    pattern is proven right by the piece decoding as a JSON array (a cut inside an event cannot); if that ever
    fails the array falls back to a one-``Raw``-per-event split.
  - Times come from the decimal text of ``ts``/``dur`` (see :mod:`kat_gui.ingest.timeparse`): exact to the ns.
  - ``args`` of kept events are not decoded one by one: the raw texts of a piece are joined and scanned with
    numpy (:func:`_scan_args`) for the per-instance ids; ``correlation`` is read from its digits, and the texts
    minus the id spans are the keys that intern args as JSON text (decoded once per distinct key). Only events
    whose args feed other columns (memcpy bytes, collective fields, cuda_sync device, the first event of a
    track) or whose args are not flat objects with integer ids take a typed msgspec decode.
  - Per-event Python work is kept to C-level iteration (``map``/``attrgetter``, ``Counter``, list filters), and
    the cyclic GC is paused while reading (no cycles are built; its passes over fresh objects cost time).
"""

from __future__ import annotations

import gzip
import mmap
import os
import re
import zlib
from collections import Counter
from collections.abc import Callable
from itertools import repeat
from operator import attrgetter
from pathlib import Path
from typing import Any

import msgspec
import numpy as np

from kat_gui.errors import Cancelled, KatInputError
from kat_gui.events import COLUMN_DEFAULTS, EVENT_COLUMNS, GPU_KINDS, NO_ID, CopyKind, EventKind, TrackKind
from kat_gui.ingest.base import IngestOptions, Progress, RankTrace, TrackInfo
from kat_gui.ingest.timeparse import decimal_us_to_ns
from kat_gui.ingest.util import gc_paused as _gc_paused

try:  # the compiled scanner (kat_gui/ingest/_kscan.c); optional: the msgspec path below does the same work
    from kat_gui.ingest import _kscan
except ImportError:  # pragma: no cover - depends on the build
    _kscan = None

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
_PIECE_BYTES = 4 << 20  # 16 MiB measured slower and +90 MB peak on a 54 MB file
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
    """Read one Kineto JSON file (plain or gzip) into a :class:`RankTrace`; raises KatInputError on bad input.

    Uses the compiled scanner when it is built and ``KAT_KINETO_SCANNER`` is not ``"0"``; whatever the scanner
    does not take (and any bad input, so that errors read the same) goes through the msgspec path.
    """
    options = options or IngestOptions()
    path = Path(path)
    if scanner_enabled():
        data = _load_bytes(path, mapped=True)
        try:
            trace = _read_scanned(path, data, options, progress)
        except Cancelled:
            raise
        except (
            _kscan.Unsupported,
            KatInputError,
            ValueError,
            OverflowError,
            TypeError,
            msgspec.MsgspecError,
        ):
            trace = None  # the msgspec path below gives the answer, or the error, of record
        if trace is not None:
            return trace
        if isinstance(data, mmap.mmap):
            data = _load_bytes(path)
    else:
        data = _load_bytes(path)
    return _read_python(path, data, options, progress)


def scanner_enabled() -> bool:
    """True when the compiled scanner is importable and not switched off with ``KAT_KINETO_SCANNER=0``."""
    return _kscan is not None and os.environ.get("KAT_KINETO_SCANNER", "1") != "0"


def _read_python(path: Path, data: bytes, options: IngestOptions, progress: Progress | None) -> RankTrace:
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
    meta, base_ns = _header(path, top)
    builder = _Builder(path, options)
    total = max(len(trace_events), 1)
    with _gc_paused():
        for done, events in _pieces(path, trace_events):
            builder.add(events)
            del events
            if progress is not None:
                progress(min(done / total, 1.0), f"reading {path.name}")
        trace = builder.finish(meta, base_ns)
    return _with_host_and_rank(trace, meta)


def _header(path: Path, top: dict[str, msgspec.Raw]) -> tuple[dict[str, Any], int]:
    meta = _top_meta(path, top)
    base_ns = meta.get("baseTimeNanoseconds")
    if base_ns is not None and not isinstance(base_ns, int):
        raise KatInputError(path, f"baseTimeNanoseconds is not an integer: {base_ns!r}")
    meta["time_base"] = "relative+base" if base_ns is not None else "epoch_us"
    return meta, base_ns or 0


def _with_host_and_rank(trace: RankTrace, meta: dict[str, Any]) -> RankTrace:
    host = _hostname(meta)
    if host is not None:
        meta["hostname"] = host
    rank = (
        meta.get("distributedInfo", {}).get("rank") if isinstance(meta.get("distributedInfo"), dict) else None
    )
    trace.rank = rank if isinstance(rank, int) else None
    return trace


def _load_bytes(path: Path, mapped: bool = False) -> bytes | mmap.mmap:
    """The file's bytes, gunzipped. With ``mapped``, a plain file of at least 64 KiB whose size is not a
    multiple of the page size comes back as a read-only mmap instead (no copy: reading 150 MB into a bytes
    object costs more than scanning it); the zeros after its end in the last page are the NUL that the
    compiled scanner relies on."""
    try:
        with open(path, "rb") as fh:
            if mapped:
                size = os.fstat(fh.fileno()).st_size
                if size >= 65536 and size % mmap.PAGESIZE and fh.read(2) != b"\x1f\x8b":
                    if not hasattr(mmap, "MAP_PRIVATE"):  # Windows
                        return mmap.mmap(fh.fileno(), size, access=mmap.ACCESS_READ)
                    flags = mmap.MAP_PRIVATE | getattr(mmap, "MAP_POPULATE", 0)
                    return mmap.mmap(fh.fileno(), size, flags=flags, prot=mmap.PROT_READ)
                fh.seek(0)
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


_HOST_KEYS = ("hostname", "host_name", "host")
_HOST_PID_RE = re.compile(r"^(.+):(\d+)$")


def _hostname(meta: dict[str, Any]) -> str | None:
    """The host the trace was taken on, when the file says: a ``hostname``/``host_name``/``host`` key at the
    top level or in a nested object of the header (``distributedInfo``, ``metadata.system.env.HOSTNAME``),
    searched level by level, else a process name ``"<host>:<pid>"`` whose pid is that process's own."""
    level = [meta]
    for _ in range(4):
        below = []
        for obj in level:
            for key, value in obj.items():
                if key in ("process_names", "thread_names"):
                    continue
                if key.lower() in _HOST_KEYS and isinstance(value, str) and value.strip():
                    return value.strip()
                if isinstance(value, dict):
                    below.append(value)
        level = below
    for pid, name in meta.get("process_names", {}).items():
        m = _HOST_PID_RE.match(name) if isinstance(name, str) else None
        if m and m.group(2) == pid:
            return m.group(1)
    return None


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


_GET_PH = attrgetter("ph")
_GET_CAT = attrgetter("cat")
_GET_NAME = attrgetter("name")
_GET_TS = attrgetter("ts")
_GET_DUR = attrgetter("dur")
_GET_ARGS = attrgetter("args")
_GET_PID = attrgetter("pid")
_GET_TID = attrgetter("tid")
_IS_GPU = np.zeros(256, dtype=bool)
_IS_GPU[list(_GPU_KIND_VALUES)] = True
_NEEDS_TYPED_ARGS = np.zeros(256, dtype=bool)  # kinds whose args always feed a column (bytes, sync device)
_NEEDS_TYPED_ARGS[[EventKind.MEMCPY, EventKind.MEMSET, EventKind.SYNC]] = True

# Args scanning (see _scan_args). A value window holds ': ' + sign + up to 12 digits + the terminator.
_WIN = 16
_WIN_COLS = np.arange(_WIN)
_POW10 = np.array([10**k for k in range(18)], dtype=np.int64)
_CORR_KEY = b'"correlation"'
# device and stream are per-instance args too, but constant along a track: left in the dedup key they cost
# a few extra keys, while cutting them out would cost a scan per event.
_STRIP_KEYS = tuple(b'"' + k.encode() + b'"' for k in _INSTANCE_ARGS if k not in ("device", "stream"))
# Events whose args hold these keys are decoded with _Args (collective columns).
_TYPED_KEYS = (b'"Collective name"', b'"Seq"')


def _key_signatures(keys: tuple[bytes, ...]) -> list[tuple[int, int]]:
    """(mask, value) over the 8 bytes before a colon that say ``"<key>"`` ends there (little endian)."""
    out = []
    for key in keys:
        tail = key[-8:]
        pad = 8 - len(tail)
        mask = int.from_bytes(bytes(pad) + b"\xff" * len(tail), "little")
        out.append((mask, int.from_bytes(bytes(pad) + tail, "little")))
    return out


_STRIP_SIGS = _key_signatures(_STRIP_KEYS)
_TYPED_SIGS = _key_signatures(_TYPED_KEYS)


def _key_positions(
    buf: np.ndarray, tails: np.ndarray, colons: np.ndarray, key: bytes, sig: tuple[int, int]
) -> np.ndarray:
    """Offsets of ``"<key>"`` immediately followed by a colon, given the 8 bytes before every colon."""
    mask, value = sig
    cand = colons[(tails & np.uint64(mask)) == np.uint64(value)] - len(key)
    if len(key) > 8 and len(cand):
        whole = np.frombuffer(key, dtype=np.uint8)
        cand = cand[(buf[cand[:, None] + np.arange(len(key))] == whole).all(axis=1)]
    return cand


def _int_after_keys(
    buf: np.ndarray, wins: np.ndarray, pos: np.ndarray, key_len: int, want_value: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """(ok, delete_end, value) for each key occurrence at ``pos``: ``"key": <int>`` then ``,`` or ``}``.

    ``ok`` is False for anything else (a float, a string, a space before the colon, a quote that is escaped,
    more than 12 digits): those are left to the typed decode. ``delete_end`` is the offset just past the
    number and its comma; ``buf`` is padded with ``_WIN`` NULs so that every window (``wins[i]`` is
    ``buf[i:i + _WIN]``) is in range.
    """
    m = len(pos)
    rows = np.arange(m)
    win = wins[pos + key_len]  # rows of a sliding-window view: no index matrix
    first = 1 + (win[:, 1] == 32)
    neg = win[rows, first] == 45
    first = first + neg
    after = _WIN_COLS >= first[:, None]
    end = (((win - np.uint8(48)) > 9) & after).argmax(axis=1)
    term = win[rows, end]
    ok = (win[:, 0] == 58) & (end > first) & ((term == 44) | (term == 125)) & (buf[pos - 1] != 92)
    delete_end = pos + key_len + end + (term == 44)
    value = None
    if want_value:
        digits = np.where(after & (_WIN_COLS < end[:, None]), win.astype(np.int64) - 48, 0)
        value = (digits * _POW10[np.clip(end[:, None] - 1 - _WIN_COLS, 0, 17)]).sum(axis=1)
        value[neg] = -value[neg]
    return ok, delete_end, value


def _scan_args(raws: list[msgspec.Raw]) -> tuple[list[bytes], np.ndarray, np.ndarray]:
    """(dedup keys, correlation, needs typed decode) for the args texts of one piece, without decoding them.

    The args are joined with NUL (never inside JSON text) and searched for the per-instance keys. Where an
    object is flat (its only ``{`` is the first byte), an instance key followed by a plain integer is a
    top-level key: its ``"key": 123,`` span is cut out of the dedup key and, for ``correlation``, the
    integer is the column value. Equal keys then mean equal args minus instance ids, so the interned text
    (built from the decoded args of the first event with that key) is right for all of them. Anything not
    in that shape (nested objects, non-integer ids, duplicate keys) keeps its text in the key and is marked
    for the typed decode, which gives the exact values.
    """
    n = len(raws)
    joined = b"\x00".join(raws)
    size = len(joined)
    padded = joined + bytes(_WIN)
    buf = np.frombuffer(padded, dtype=np.uint8)
    body = buf[:size]
    starts = np.zeros(n, dtype=np.int64)
    starts[1:] = np.flatnonzero(body == 0) + 1
    braces = np.searchsorted(starts, np.flatnonzero(body == 123), "right") - 1
    flat = (np.bincount(braces, minlength=n) == 1) & (buf[starts] == 123)
    typed = ~flat
    wins = np.lib.stride_tricks.sliding_window_view(buf, _WIN)
    corr = np.full(n, NO_ID, dtype=np.int64)
    cut_start: list[np.ndarray] = []
    cut_end: list[np.ndarray] = []
    colons = np.flatnonzero(body == 58)
    colons = colons[colons >= 8]  # '{"k":' is 5 bytes: a colon this early ends no key we look for
    # '"key" :' (a space before the colon) is not Kineto's style: such events take the typed decode.
    spaced = colons[body[colons - 1] <= 32]
    if len(spaced):
        typed[np.searchsorted(starts, spaced, "right") - 1] = True
    # The 8 bytes before each colon, read as one little-endian integer through an unaligned view.
    tails = np.ndarray(shape=(len(padded) - 7,), dtype="<u8", buffer=padded, strides=(1,))[colons - 8]
    for key, sig in zip(_STRIP_KEYS, _STRIP_SIGS, strict=True):
        pos = _key_positions(buf, tails, colons, key, sig)
        if not len(pos):
            continue
        ev = np.searchsorted(starts, pos, "right") - 1
        ok, end, value = _int_after_keys(buf, wins, pos, len(key), key == _CORR_KEY)
        ok &= flat[ev]
        same = ev[1:] == ev[:-1]  # a key twice in one object
        if same.any():
            ok[1:] &= ~same
            ok[:-1] &= ~same
        if value is not None:
            corr[ev[ok]] = value[ok]
            typed[ev[~ok]] = True
        cut_start.append(pos[ok])
        cut_end.append(end[ok])
    for key, sig in zip(_TYPED_KEYS, _TYPED_SIGS, strict=True):
        pos = _key_positions(buf, tails, colons, key, sig)
        if len(pos):
            typed[np.searchsorted(starts, pos, "right") - 1] = True
    if cut_start:
        s = np.concatenate(cut_start)
        lens = np.concatenate(cut_end) - s
        total = int(lens.sum())
        keep = np.ones(size, dtype=bool)
        keep[np.repeat(s - (np.cumsum(lens) - lens), lens) + np.arange(total)] = False
        joined = body[keep].tobytes()
    return joined.split(b"\x00"), corr, typed


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


def _as_int(v: Any) -> int:
    if type(v) is int:
        return v
    if isinstance(v, str) and v.strip().lstrip("-").isdigit():
        return int(v)
    if isinstance(v, float) and v.is_integer():
        return int(v)
    return NO_ID


_MEMCPY, _MEMSET = int(EventKind.MEMCPY), int(EventKind.MEMSET)
# Bits of the scanner's flags column (kat_gui/ingest/_kscan.c).
_F_PID_TEXT, _F_TID_TEXT, _F_TS_SLOW, _F_DUR_SLOW, _F_TYPED, _F_NO_ARGS = 1, 2, 4, 8, 16, 32


class _Scanned:
    """The columns of one compiled scan (see ``_kscan.scan``), as numpy views, plus the id maps that the
    builder fills piece by piece (scanner name id -> string id, scanner args key -> args id)."""

    def __init__(self, data: bytes | mmap.mmap, res: dict[str, Any]):
        self.data = data
        self.kind = np.frombuffer(res["kind"], dtype=np.uint8)
        self.flags = np.frombuffer(res["flags"], dtype=np.uint8)
        self.name = np.frombuffer(res["name"], dtype=np.int32)
        self.key = np.frombuffer(res["key"], dtype=np.int32)
        self.pair = np.frombuffer(res["pair"], dtype=np.int32)
        self.pid = np.frombuffer(res["pid"], dtype=np.int64)
        self.tid = np.frombuffer(res["tid"], dtype=np.int64)
        self.ts = np.frombuffer(res["ts"], dtype=np.int64)
        self.dur = np.frombuffer(res["dur"], dtype=np.int64)
        self.corr = np.frombuffer(res["corr"], dtype=np.int64)
        self.args_start = np.frombuffer(res["as"], dtype=np.int64)
        self.args_end = np.frombuffer(res["ae"], dtype=np.int64)
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


def _read_scanned(
    path: Path, data: bytes | mmap.mmap, options: IngestOptions, progress: Progress | None
) -> RankTrace | None:
    """The compiled scanner's reading of ``data``, or None when it needs the Python path. Raises
    ``_kscan.Unsupported`` (or a KatInputError / ValueError that the Python path will raise its own way)."""
    builder = _Builder(path, options)
    on_piece = None
    if progress is not None:
        size = max(len(data), 1)

        def on_piece(done: int) -> None:
            progress(min(done / size, 1.0), f"reading {path.name}")

    with _gc_paused():
        res = _kscan.scan(data, {c: int(k) for c, k in builder.cat_kind.items()}, _PIECE_BYTES, on_piece)
        if isinstance(data, mmap.mmap) and os.stat(path).st_size != len(data):
            # Shrunk or rewritten while mapped: reading the mapping past its new end would fault (SIGBUS).
            raise _kscan.Unsupported("the file changed while it was read")
        top = res.pop("top")
        if len({key for key, _, _ in top}) != len(top):
            return None  # a top-level key twice: the msgspec path applies its own rule
        meta, base_ns = _header(path, {key: data[s:e] for key, s, e in top if key != "traceEvents"})
        sc = _Scanned(data, res)
        spans = np.frombuffer(res["meta_spans"], dtype=np.int64).reshape(-1, 2).tolist()
        if spans:
            builder._metadata(_EV_LIST.decode(b"[" + b",".join(data[s:e] for s, e in spans) + b"]"))
        pieces = np.frombuffer(res["pieces"], dtype=np.int64).reshape(-1, 4).tolist()
        events = builder.scanned_events(sc, pieces)
        builder.count_scanned(res["cats"], res["ph"])
        del sc, res
        trace = builder.result(events, meta, base_ns)
    return _with_host_and_rank(trace, meta)


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
        keys, corr, typed = _scan_args(arg_raws)
        typed |= _NEEDS_TYPED_ARGS[kind]
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

    def count_scanned(self, cats: list[tuple], phs: list[tuple[str, int]]) -> None:
        """Category and ph counts of a compiled scan, entered in first-seen order like :meth:`add` does."""
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
            raise KatInputError(self.path, _NO_KEPT)
        sid = self.strings
        kind, flags, corr = sc.kind, sc.flags, sc.corr
        typed_all = ((flags & _F_TYPED) != 0) | _NEEDS_TYPED_ARGS[kind]
        text_ids = (flags & (_F_PID_TEXT | _F_TID_TEXT)) != 0
        extra: dict[str, np.ndarray] = {}
        # Tracks are made once at the end, in the order the per-piece work would make them (piece of first
        # use, then key); they need the pids/tids as _ids maps them and the typed args of each piece.
        all_pid, all_tid = sc.pid, sc.tid
        all_typed: dict[int, _Args] = {}
        starts: list[int] = []
        lo = name_lo = key_lo = 0
        for hi, _done, name_hi, key_hi in pieces:
            for cid in range(name_lo, name_hi):
                sc.name_gid[cid] = sid.setdefault(sc.names[cid], len(sid))
            if hi > lo:
                raw_of = sc.raw_of(lo)
                sub = np.flatnonzero(typed_all[lo:hi]).tolist()
                typed_args = dict(zip(sub, self._decode_args([raw_of(i) for i in sub]), strict=True))
                for i, a in typed_args.items():
                    c = a.correlation
                    corr[lo + i] = c if type(c) is int and -(2**63) <= c < 2**63 else NO_ID
                for k in range(key_lo, key_hi):
                    start, end = sc.key_first[k]
                    sc.key_aid[k] = self._new_args(sc.data[start:end] if end else b"{}")
                if text_ids[lo:hi].any():
                    # Same order of first use as _ids: the piece's pids, then its tids.
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
        self, sc: _Scanned, pid: np.ndarray, tid: np.ndarray, typed_args: dict[int, _Args], starts: list[int]
    ) -> np.ndarray:
        """Track id of each event of a compiled scan, made in the order that :meth:`_tracks` piece by piece
        makes them: by the piece of first use, then by (gpu, pid, tid). ``pid``/``tid``: the columns as
        :meth:`_ids` maps them; ``starts``: the first event of each piece; ``typed_args``: by event."""
        kind = sc.kind
        gpu = _IS_GPU[kind]
        sync = np.flatnonzero(kind == EventKind.SYNC).tolist()
        gpu[sync] = [type(typed_args[i].device) is int for i in sync]
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
            key, i = keys[j], first[j]
            t = self.tracks.get(key)
            if t is None:
                a = typed_args.get(i)
                if a is None:
                    a = self._decode_args([raw_of(i)])[0]
                t = self._new_track(key, a)
            local[present[j]] = t
        return local[combo]

    def _typed_columns(
        self,
        extra: dict[str, np.ndarray],
        n: int,
        lo: int,
        kind: np.ndarray,
        sc: _Scanned,
        typed_args: dict[int, _Args],
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
            extra["bytes"][rows] = [_as_int(typed_args[i].nbytes) for i in idx]
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
        typed_args: dict[int, _Args],
        raw_of: Callable[[int], bytes],
        name_of: Callable[[int], str],
    ) -> None:
        """One piece's columns from its kept events; ``typed_args`` (event -> typed decode) holds every event
        whose args feed a column, and its correlation is the one of record."""
        n = len(kind)
        for i, a in typed_args.items():
            c = a.correlation
            corr[i] = c if type(c) is int and -(2**63) <= c < 2**63 else NO_ID
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
            nbytes[idx] = [_as_int(typed_args[i].nbytes) for i in idx.tolist()]
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

    def _decode_args(self, raws: list[msgspec.Raw]) -> list[_Args]:
        if not raws:
            return []
        try:
            return _ARGS_LIST.decode(b"[" + b",".join(raws) + b"]")
        except msgspec.ValidationError as exc:
            raise KatInputError(self.path, f"event args are not an object ({exc})") from None

    def _args_ids(self, keys: list[bytes], arg_raws: list[msgspec.Raw]) -> np.ndarray:
        table = self.args_key
        ids = np.fromiter(map(table.get, keys, repeat(-2)), dtype=np.int32, count=len(keys))
        for i in np.flatnonzero(ids == -2).tolist():
            aid = table.get(keys[i])
            if aid is None:
                aid = table[keys[i]] = self._new_args(arg_raws[i])
            ids[i] = aid
        return ids

    def _metadata(self, meta_events: list[_Ev]) -> None:
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
        typed_args: dict[int, _Args],
        raw_of: Callable[[int], bytes],
    ) -> np.ndarray:
        gpu = _IS_GPU[kind]
        sync = np.flatnonzero(kind == EventKind.SYNC).tolist()
        # cuda_sync sits on a GPU stream when it names a device, else on the host thread that waited.
        gpu[sync] = [type(typed_args[i].device) is int for i in sync]
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
            key = (bool(gpu[i]), int(pid[i]), int(tid[i]))
            t = self.tracks.get(key)
            if t is None:
                a = typed_args.get(i)
                if a is None:
                    a = self._decode_args([raw_of(i)])[0]
                t = self._new_track(key, a)
            local[j] = t
        return local[inv.reshape(-1)]

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
        return self.result(events, meta, base_ns)

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
