"""Plain function-trace reader: the documented CSV / JSON Lines format for in-house tracers.

The format (``docs/formats.md`` is the reference) is one event per row/line with the fields ``rank``, ``kind``,
``name``, ``start_ns`` and ``end_ns`` (or ``dur_ns``), plus optional ``device``, ``stream``, ``pid``, ``tid``,
``correlation``, ``bytes``, ``copy_kind``, ``collective``, ``pg``, ``seq``, ``msg_nelems``, ``group_size``; any
other field is kept in the event's args JSON.

Assumptions: times are int64 absolute ns written as integers (never parsed through a float, so values near
2**62 survive exactly); one file normally holds one rank (``read``); :func:`read_many` splits a file holding
several ranks. Rows are converted column by column in chunks, so a million rows take seconds.
"""

from __future__ import annotations

import csv
import gzip
import io
import itertools
import json
import operator
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import IO, Any

import numpy as np

from kat_gui.errors import KatInputError
from kat_gui.events import EVENT_COLUMNS, NO_ID, CopyKind, EventKind, TrackKind, empty_columns
from kat_gui.ingest.base import IngestOptions, Progress, RankTrace, TrackInfo
from kat_gui.ingest.util import gc_paused as _gc_paused
from kat_gui.ingest.util import group_rows as _group_rows

try:  # orjson is a project dependency; the stdlib parser is an exact (slower) fallback
    import orjson

    _loads = orjson.loads
    _JSON_ERRORS: tuple[type[Exception], ...] = (orjson.JSONDecodeError, ValueError)
except ImportError:  # pragma: no cover
    _loads = json.loads
    _JSON_ERRORS = (ValueError,)

FORMAT = "functrace"

REQUIRED = ("rank", "kind", "name", "start_ns")
INT_FIELDS = ("rank", "device", "stream", "pid", "tid", "start_ns", "end_ns", "dur_ns")
INT_FIELDS += ("correlation", "bytes", "seq", "msg_nelems", "group_size")
STR_FIELDS = ("kind", "name", "copy_kind", "collective", "pg")
KNOWN = frozenset(INT_FIELDS + STR_FIELDS)

KINDS = {
    "kernel": EventKind.KERNEL,
    "memcpy": EventKind.MEMCPY,
    "memset": EventKind.MEMSET,
    "runtime": EventKind.RUNTIME,
    "annotation": EventKind.ANNOTATION,
    "gpu_annotation": EventKind.GPU_ANNOTATION,
    "cpu_op": EventKind.CPU_OP,
    "python": EventKind.PYTHON,
    "sync": EventKind.SYNC,
    "other": EventKind.OTHER,
}
GPU_ONLY_KINDS = frozenset(int(k) for k in (EventKind.KERNEL, EventKind.MEMCPY, EventKind.MEMSET))
GPU_ONLY_KINDS |= {int(EventKind.GPU_ANNOTATION)}
HOST_ONLY_KINDS = frozenset(int(k) for k in (EventKind.RUNTIME, EventKind.ANNOTATION, EventKind.CPU_OP))
HOST_ONLY_KINDS |= {int(EventKind.PYTHON)}
# copy_kind spellings -> kat_gui.events.CopyKind (the same codes every reader stores).
COPY_KINDS = {k.name.lower(): int(k) for k in CopyKind if k != CopyKind.NONE}

_INT_OR_NONE = frozenset((int, type(None)))
MISSING = np.iinfo(np.int64).min  # marks an absent end_ns / dur_ns cell until the pair is resolved
CHUNK_ROWS = 65536
SNIFF_KEYS = frozenset(REQUIRED)


# ---------------------------------------------------------------------------------------------- sniffing


def _content_lines(text: str) -> Iterator[str]:
    for line in text.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            yield line


def _header_names(line: str) -> list[str]:
    return [h.strip().lower() for h in next(csv.reader([line]))]


def sniff(path: str | os.PathLike, head: bytes) -> bool:
    """True when the first content line is a CSV header naming rank, kind, name and start_ns, or a JSON object
    with those keys (comment lines starting with ``#`` and blank lines are skipped)."""
    text = head.decode("utf-8", errors="replace").lstrip("\ufeff")
    first = next(_content_lines(text), None)
    if first is None:
        return False
    if first.lstrip().startswith("{"):
        try:
            obj = _loads(first)
        except _JSON_ERRORS:
            return False
        return isinstance(obj, dict) and SNIFF_KEYS <= obj.keys()
    try:
        return SNIFF_KEYS <= set(_header_names(first))
    except csv.Error:
        return False


# ---------------------------------------------------------------------------------------------- reading


def read(path: str | os.PathLike, options: IngestOptions, progress: Progress | None = None) -> RankTrace:
    """Read a one-rank function-trace file (CSV or JSON Lines, optionally gzip-compressed).

    ``options.rank`` replaces the file's rank. A file holding several ranks raises :class:`KatInputError`
    (use :func:`read_many` to split it). Every bad value raises :class:`KatInputError` naming the line.
    """
    path = os.fspath(path)
    with _gc_paused():
        parsed = _parse_file(path, options, progress)
    ranks = np.unique(parsed.cols["rank"]).tolist()
    if len(ranks) > 1:
        shown = ", ".join(map(str, ranks[:8])) + (", ..." if len(ranks) > 8 else "")
        raise KatInputError(
            path,
            f"holds events of {len(ranks)} ranks ({shown}); KAT reads one rank per function-trace file: "
            "write one file per rank (or split this one by its rank column)",
        )
    return _rank_trace(parsed, slice(None), options.rank if options.rank is not None else int(ranks[0]))


def read_many(
    path: str | os.PathLike, options: IngestOptions, progress: Progress | None = None
) -> list[RankTrace]:
    """Read a function-trace file into one :class:`RankTrace` per rank it holds, sorted by rank.

    ``options.rank`` is only allowed when the file holds a single rank (it then replaces that rank).
    """
    path = os.fspath(path)
    with _gc_paused():
        parsed = _parse_file(path, options, progress)
    ranks = np.unique(parsed.cols["rank"])
    if options.rank is not None and len(ranks) > 1:
        raise KatInputError(path, f"holds {len(ranks)} ranks; a forced rank (--rank) needs a one-rank file")
    out = []
    for rank in ranks.tolist():
        sel = np.flatnonzero(parsed.cols["rank"] == rank) if len(ranks) > 1 else slice(None)
        out.append(_rank_trace(parsed, sel, options.rank if options.rank is not None else int(rank)))
    return out


@dataclass
class _Parsed:
    path: str
    flavour: str
    cols: dict[str, np.ndarray] = field(default_factory=dict)  # int64 / int32 columns, all rows
    strings: list[str] = field(default_factory=list)
    args: list[str] = field(default_factory=list)
    extra_fields: list[str] = field(default_factory=list)
    skipped: dict[str, int] = field(default_factory=dict)


class _Context:
    """State shared by the chunks of one file: intern tables, error reporting, the flavour's value rules."""

    def __init__(self, path: str, flavour: str, options: IngestOptions):
        self.path = path
        self.csv = flavour == "csv"
        self.options = options
        self.strings: dict[str, int] = {}
        self.args: dict[str, int] = {}
        self.kinds: dict[str, int] = {}
        self.copy_kinds: dict[str, int] = {}
        self.extra_fields: dict[str, None] = {}
        self.skipped: dict[str, int] = {}

    def fail(self, line: int, message: str) -> KatInputError:
        return KatInputError(self.path, f"line {line}: {message}")

    def missing(self, value: Any) -> bool:
        return value == "" if self.csv else value is None


def _open_text(path: str) -> tuple[IO[str], IO[bytes], int]:
    try:
        raw = open(path, "rb")  # closed by _parse_file (with raw, text)
    except OSError as e:
        raise KatInputError(path, f"cannot open: {e.strerror or e}") from e
    size = os.fstat(raw.fileno()).st_size
    binary: IO[bytes] = raw
    if raw.read(2) == b"\x1f\x8b":
        raw.seek(0)
        binary = gzip.GzipFile(fileobj=raw, mode="rb")  # type: ignore[assignment]
    else:
        raw.seek(0)
    # Tracer output may hold non-UTF-8 bytes (process names, symbols): decode with replacement, never fail.
    text = io.TextIOWrapper(binary, encoding="utf-8", errors="replace", newline="")
    return text, raw, size


def _parse_file(path: str, options: IngestOptions, progress: Progress | None) -> _Parsed:
    text, raw, size = _open_text(path)
    with raw, text:
        try:
            lines = _LineSource(text)
            first = lines.first_content_line()
            if first is None:
                raise KatInputError(path, "empty function-trace file (no header and no events)")
            line_no, first_line = first
            flavour = "jsonl" if first_line.lstrip().startswith("{") else "csv"
            ctx = _Context(path, flavour, options)
            if flavour == "csv":
                chunks = _csv_chunks(ctx, line_no, first_line, lines)
            else:
                chunks = _jsonl_chunks(ctx, first, lines)
            blocks = []
            for chunk in chunks:
                blocks.append(chunk)
                if progress is not None:
                    progress(min(raw.tell() / size, 0.99) if size else 0.5, f"parsed {_rows(blocks)} rows")
        except (OSError, EOFError, gzip.BadGzipFile) as e:
            raise KatInputError(path, f"cannot read: {e}") from e
    if not blocks or _rows(blocks) == 0:
        raise KatInputError(path, "no events (only a header, comments or skipped kinds)")
    cols = {name: np.concatenate([b[name] for b in blocks]) for name in blocks[0]}
    if progress is not None:
        progress(1.0, f"parsed {len(cols['rank'])} rows")
    return _Parsed(
        path=path,
        flavour=flavour,
        cols=cols,
        strings=list(ctx.strings),
        args=list(ctx.args),
        extra_fields=list(ctx.extra_fields),
        skipped=ctx.skipped,
    )


def _rows(blocks: list[dict[str, np.ndarray]]) -> int:
    return sum(len(b["rank"]) for b in blocks)


def _is_content(line: str) -> bool:
    stripped = line.lstrip()
    return bool(stripped) and stripped[0] != "#"


class _LineSource:
    """Physical lines of a text file in blocks, numbered from 1; comment (``#``) and blank lines dropped."""

    BLOCK_CHARS = 1 << 22

    def __init__(self, text: IO[str]):
        self._text = text
        self.line_no = 0  # physical lines consumed so far

    def first_content_line(self) -> tuple[int, str] | None:
        while True:
            line = self._text.readline()
            if not line:
                return None
            self.line_no += 1
            if self.line_no == 1:
                line = line.lstrip("\ufeff")
            if _is_content(line):
                return self.line_no, line

    def blocks(self) -> Iterator[tuple[list[str], list[int]]]:
        """(content lines, their line numbers) per block of about 4 M characters."""
        while True:
            block = self._text.readlines(self.BLOCK_CHARS)
            if not block:
                return
            base = self.line_no + 1
            self.line_no += len(block)
            keep = [i for i, line in enumerate(block) if (s := line.lstrip()) and s[0] != "#"]
            if len(keep) == len(block):
                yield block, list(range(base, base + len(block)))
            else:
                yield [block[i] for i in keep], [base + i for i in keep]


def _csv_chunks(
    ctx: _Context, header_line: int, header: str, lines: _LineSource
) -> Iterator[dict[str, np.ndarray]]:
    try:
        names = _header_names(header)
    except csv.Error as e:
        raise ctx.fail(header_line, f"unreadable CSV header ({e})") from e
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ctx.fail(header_line, f"duplicate column(s) in header: {', '.join(dupes)}")
    lacking = [n for n in REQUIRED if n not in names]
    if not ("end_ns" in names or "dur_ns" in names):
        lacking.append("end_ns (or dur_ns)")
    if lacking:
        raise ctx.fail(header_line, f"header lacks required column(s): {', '.join(lacking)}")
    width = len(names)
    extras = [(i, n) for i, n in enumerate(names) if n not in KNOWN]
    for _, n in extras:
        ctx.extra_fields[n] = None

    for rows, line_nos in _csv_records(ctx, lines):
        widths = np.fromiter(map(len, rows), dtype=np.int64, count=len(rows))
        bad = np.flatnonzero(widths != width)
        if len(bad):
            i = int(bad[0])
            raise ctx.fail(line_nos[i], f"{widths[i]} fields, but the header has {width}")
        columns = list(zip(*rows, strict=True))
        values = {n: list(columns[i]) for i, n in enumerate(names) if n in KNOWN}
        extra_rows = None
        if extras:
            extra_rows = [{n: _csv_scalar(row[i]) for i, n in extras if row[i] != ""} for row in rows]
        yield _convert_chunk(ctx, values, np.array(line_nos, dtype=np.int64), extra_rows)


def _csv_records(ctx: _Context, lines: _LineSource) -> Iterator[tuple[list[list[str]], list[int]]]:
    """CSV records with the line number each starts on, a block at a time.

    Fast path: a block whose records are one line each is parsed in one call. The first block where that does
    not hold (a quoted cell spanning lines, possibly across the block's end) and everything after it is
    parsed record by record, which is exact but slower.
    """
    blocks = lines.blocks()
    for content, line_nos in blocks:
        try:
            rows = list(csv.reader(content, strict=True))
            if len(rows) == len(content):
                yield rows, line_nos
                continue
        except csv.Error:
            pass
        rest = itertools.chain([(content, line_nos)], blocks)
        yield from _csv_records_slow(ctx, (pair for c, n in rest for pair in zip(n, c, strict=True)))
        return


def _csv_records_slow(
    ctx: _Context, numbered: Iterator[tuple[int, str]]
) -> Iterator[tuple[list[list[str]], list[int]]]:
    state = {"no": 0, "start": 0, "fresh": True}

    def physical() -> Iterator[str]:
        for no, line in numbered:
            state["no"] = no
            if state["fresh"]:
                state["start"], state["fresh"] = no, False
            yield line

    reader = csv.reader(physical(), strict=True)
    while True:
        rows: list[list[str]] = []
        starts: list[int] = []
        try:
            for row in reader:
                rows.append(row)
                starts.append(state["start"])
                state["fresh"] = True
                if len(rows) >= CHUNK_ROWS:
                    break
        except csv.Error as e:
            raise ctx.fail(state["start"], f"malformed CSV record ({e})") from e
        if not rows:
            return
        yield rows, starts


def _csv_scalar(cell: str) -> Any:
    # Integer cells become numbers so that the CSV and JSONL spellings of one event give the same args.
    try:
        return int(cell)
    except ValueError:
        return cell


def _jsonl_chunks(
    ctx: _Context, first: tuple[int, str], lines: _LineSource
) -> Iterator[dict[str, np.ndarray]]:
    for content, line_nos in itertools.chain([([first[1]], [first[0]])], lines.blocks()):
        objs: list[Any] = []
        try:
            objs = [_loads(line) for line in content]
        except _JSON_ERRORS:
            for line, no in zip(content, line_nos, strict=True):
                try:
                    _loads(line)
                except _JSON_ERRORS as e:
                    raise ctx.fail(no, f"not valid JSON ({e})") from e
        not_obj = [i for i, o in enumerate(objs) if type(o) is not dict]
        if not_obj:
            i = not_obj[0]
            raise ctx.fail(line_nos[i], f"expected one JSON object per line, got {type(objs[i]).__name__}")
        line_arr = np.array(line_nos, dtype=np.int64)
        present = sorted(KNOWN.intersection(set().union(*objs)))
        try:  # uniform records (the usual case): one C-level pass
            columns = (
                zip(*map(operator.itemgetter(*present), objs), strict=True) if len(present) > 1 else None
            )
            values = dict(zip(present, map(list, columns), strict=True)) if columns else None
        except KeyError:
            values = None
        if values is None:
            values = {n: [o.get(n) for o in objs] for n in present}
        extra_rows = None
        if not all(map(KNOWN.issuperset, objs)):
            extra_rows = [{k: v for k, v in o.items() if k not in KNOWN} for o in objs]
            for row in extra_rows:
                for k in row:
                    ctx.extra_fields[k] = None
        yield _convert_chunk(ctx, values, line_arr, extra_rows)


# ---------------------------------------------------------------------------------------------- converting


def _int_column(
    ctx: _Context,
    values: list[Any] | None,
    lines: np.ndarray,
    name: str,
    default: int,
    required: bool = False,
) -> np.ndarray:
    """Exact int64 column from CSV text cells or JSON values; never through float."""
    n = len(lines)
    if values is None:
        return np.full(n, default, dtype=np.int64)
    if required:
        empty = "" if ctx.csv else None
        if empty in values:
            raise ctx.fail(int(lines[values.index(empty)]), f"{name} is missing (required)")
    try:
        if ctx.csv:
            ints = [int(v) if v else default for v in values]
        elif set(map(type, values)) <= _INT_OR_NONE:
            ints = [default if v is None else v for v in values]
        else:
            raise TypeError
        return np.array(ints, dtype=np.int64)
    except (ValueError, TypeError, OverflowError):
        pass
    # Slow path: checks each value (strings of digits in JSON are accepted) and names the first bad line.
    ints = [_one_int(ctx, v, line, name, default) for v, line in zip(values, lines.tolist(), strict=True)]
    return np.array(ints, dtype=np.int64)


def _one_int(ctx: _Context, v: Any, line: int, name: str, default: int) -> int:
    if ctx.missing(v):
        return default
    if isinstance(v, bool) or isinstance(v, float):
        hint = " (write integer ns: a float loses precision past 2**53)" if isinstance(v, float) else ""
        raise ctx.fail(line, f"{name} {v!r} is not an integer{hint}")
    if isinstance(v, int):
        out = v
    elif isinstance(v, str):
        try:
            out = int(v)
        except ValueError:
            raise ctx.fail(line, f"{name} {v!r} is not an integer") from None
    else:
        raise ctx.fail(line, f"{name} {v!r} is not an integer")
    if not -(2**63) <= out < 2**63:
        raise ctx.fail(line, f"{name} {v!r} is out of the int64 range")
    return out


def _text_values(ctx: _Context, values: list[Any] | None, n: int) -> list[str]:
    if values is None:
        return [""] * n
    if ctx.csv:
        return values
    return [v if type(v) is str else "" if v is None else str(v) for v in values]


def _intern(table: dict[str, int], values: list[str]) -> np.ndarray:
    return np.array([table.setdefault(v, len(table)) for v in values], dtype=np.int32)


def _lookup(
    ctx: _Context, values: list[str], lines: np.ndarray, name: str, table: dict[str, int], resolve
) -> np.ndarray:
    """Map the distinct spellings of a small-vocabulary field (kind, copy_kind) through ``resolve``."""
    ids = _intern(table, values)
    codes = np.empty(len(table), dtype=np.int64)
    for spelling, i in table.items():
        code = resolve(spelling)
        if code is None:
            where = int(lines[int(np.flatnonzero(ids == i)[0])]) if (ids == i).any() else 0
            raise ctx.fail(where, f"{name} {spelling!r} is not one of {resolve.__doc__}")
        codes[i] = code
    return codes[ids]


def _kind_code(spelling: str) -> int | None:
    """kernel, memcpy, memset, runtime, annotation, gpu_annotation, cpu_op, python, sync, other"""
    kind = KINDS.get(spelling.strip().lower())
    return None if kind is None else int(kind)


def _copy_kind_code(spelling: str) -> int | None:
    """HtoD, DtoH, DtoD, PtoP, HtoH (or their kat_gui.events.CopyKind numbers)"""
    s = spelling.strip().lower()
    if not s:
        return int(CopyKind.NONE)
    if s.isdigit():
        return int(s) if int(s) in CopyKind._value2member_map_ else None
    return COPY_KINDS.get(s)


def _convert_chunk(
    ctx: _Context, values: dict[str, list[Any]], lines: np.ndarray, extra_rows: list[dict[str, Any]] | None
) -> dict[str, np.ndarray]:
    n = len(lines)
    get = values.get
    for name in REQUIRED:
        if name not in values:  # JSON Lines only: a CSV header without it was refused already
            raise ctx.fail(int(lines[0]), f"{name} is missing (required)")
    out: dict[str, np.ndarray] = {"line": lines}
    out["rank"] = _int_column(ctx, get("rank"), lines, "rank", 0, required=True)
    out["start_ns"] = _int_column(ctx, get("start_ns"), lines, "start_ns", 0, required=True)
    end = _int_column(ctx, get("end_ns"), lines, "end_ns", MISSING)
    dur = _int_column(ctx, get("dur_ns"), lines, "dur_ns", MISSING)
    out["end_ns"] = _resolve_end(ctx, out["start_ns"], end, dur, lines)
    for name, default in (("device", -1), ("stream", 0), ("pid", -1), ("tid", 0)):
        out[name] = _int_column(ctx, get(name), lines, name, default)
    for name in ("correlation", "bytes", "seq", "msg_nelems", "group_size"):
        out[name] = _int_column(ctx, get(name), lines, name, NO_ID)

    kind_text = _text_values(ctx, get("kind"), n)
    if "" in kind_text:
        raise ctx.fail(int(lines[kind_text.index("")]), "kind is missing (required)")
    out["kind"] = _lookup(ctx, kind_text, lines, "kind", ctx.kinds, _kind_code)
    names = _text_values(ctx, get("name"), n)
    if "" in names:
        raise ctx.fail(int(lines[names.index("")]), "name is missing (required)")
    out["name"] = _intern(ctx.strings, names)
    copy_text = _text_values(ctx, get("copy_kind"), n)
    out["copy_kind"] = _lookup(ctx, copy_text, lines, "copy_kind", ctx.copy_kinds, _copy_kind_code)
    for name, col in (("collective", "coll"), ("pg", "pg")):
        text = _text_values(ctx, get(name), n)
        table = ctx.strings
        out[col] = np.array([table.setdefault(v, len(table)) if v else NO_ID for v in text], dtype=np.int32)

    gpu_only = np.isin(out["kind"], list(GPU_ONLY_KINDS))
    bad = np.flatnonzero(gpu_only & (out["device"] < 0))
    if len(bad):
        i = int(bad[0])
        kind = kind_text[i].strip().lower()
        raise ctx.fail(int(lines[i]), f"kind {kind} needs a device (GPU index >= 0)")
    # Host-side kinds always sit on their thread; a device they name is kept in args.
    host_with_device = np.isin(out["kind"], list(HOST_ONLY_KINDS)) & (out["device"] >= 0)
    out["args"] = _args_column(ctx, n, extra_rows, host_with_device, out["device"])

    keep = np.ones(n, dtype=bool)
    for kind, wanted, label in (
        (EventKind.CPU_OP, ctx.options.keep_cpu_ops, "cpu_op"),
        (EventKind.PYTHON, ctx.options.keep_python, "python"),
    ):
        if not wanted:
            drop = out["kind"] == int(kind)
            if drop.any():
                ctx.skipped[label] = ctx.skipped.get(label, 0) + int(drop.sum())
                keep &= ~drop
    if not keep.all():
        out = {k: v[keep] for k, v in out.items()}
    return out


def _resolve_end(
    ctx: _Context, start: np.ndarray, end: np.ndarray, dur: np.ndarray, lines: np.ndarray
) -> np.ndarray:
    has_end, has_dur = end != MISSING, dur != MISSING
    neither = np.flatnonzero(~has_end & ~has_dur)
    if len(neither):
        raise ctx.fail(int(lines[neither[0]]), "needs end_ns or dur_ns")
    neg = np.flatnonzero(has_dur & (dur < 0))
    if len(neg):
        raise ctx.fail(int(lines[neg[0]]), f"dur_ns {int(dur[neg[0]])} is negative")
    from_dur = start + np.where(has_dur, dur, 0)
    clash = np.flatnonzero(has_end & has_dur & (end != from_dur))
    if len(clash):
        i = int(clash[0])
        raise ctx.fail(
            int(lines[i]), f"end_ns {int(end[i])} disagrees with start_ns + dur_ns {int(from_dur[i])}"
        )
    out = np.where(has_end, end, from_dur)
    before = np.flatnonzero(out < start)
    if len(before):
        i = int(before[0])
        raise ctx.fail(int(lines[i]), f"end_ns before start_ns ({int(out[i])} < {int(start[i])})")
    return out


def _args_column(
    ctx: _Context,
    n: int,
    extra_rows: list[dict[str, Any]] | None,
    host_with_device: np.ndarray,
    device: np.ndarray,
) -> np.ndarray:
    out = np.full(n, NO_ID, dtype=np.int32)
    rows = np.flatnonzero(host_with_device).tolist()
    if extra_rows is not None:
        rows = range(n)
    for i in rows:
        obj: dict[str, Any] = {"device": int(device[i])} if host_with_device[i] else {}
        if extra_rows is not None:
            obj.update(extra_rows[i])
        if obj:
            text = json.dumps(obj, separators=(",", ":"), ensure_ascii=False, default=str)
            out[i] = ctx.args.setdefault(text, len(ctx.args))
    return out


# ---------------------------------------------------------------------------------------------- output


def _rank_trace(parsed: _Parsed, sel: np.ndarray | slice, rank: int) -> RankTrace:
    c = {k: v[sel] for k, v in parsed.cols.items()}
    n = len(c["rank"])
    kind = c["kind"]
    on_gpu = np.isin(kind, list(GPU_ONLY_KINDS)) | (
        ~np.isin(kind, list(HOST_ONLY_KINDS)) & (c["device"] >= 0)
    )
    # Track key: (track kind, a, b) = (GPU, device, stream) or (host, pid, tid).
    keys = [
        np.where(on_gpu, int(TrackKind.GPU_STREAM), int(TrackKind.HOST_THREAD)),
        np.where(on_gpu, c["device"], c["pid"]),
        np.where(on_gpu, c["stream"], c["tid"]),
    ]
    first, inverse = _group_rows(keys)
    tracks = []
    for j in first.tolist():
        tk, a, b = (int(k[j]) for k in keys)
        if tk == int(TrackKind.GPU_STREAM):
            tracks.append(TrackInfo(TrackKind.GPU_STREAM, a, b, int(c["pid"][j]), b))
        else:
            tracks.append(TrackInfo(TrackKind.HOST_THREAD, -1, -1, a, b))
    events = empty_columns(n)
    for name, dt in EVENT_COLUMNS.items():
        if name in c:
            events[name] = c[name].astype(dt, copy=False)
    events["track"] = inverse.astype(np.int32)
    meta: dict[str, Any] = {
        "source_format": f"KAT function trace ({parsed.flavour})",
        "flavour": parsed.flavour,
        "time_base": "absolute_ns",  # int64 ns exactly as the tracer wrote them
        "file_rank": int(c["rank"][0]) if n else None,
    }
    if parsed.extra_fields:
        meta["extra_fields"] = parsed.extra_fields
    if parsed.skipped:
        meta["skipped"] = dict(parsed.skipped)
    return RankTrace(
        rank=rank,
        source=parsed.path,
        format=FORMAT,
        tracks=tracks,
        events=events,
        strings=list(parsed.strings),
        args=list(parsed.args),
        meta=meta,
    )
