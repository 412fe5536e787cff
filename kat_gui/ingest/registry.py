"""Find trace files, tell their format from their content, and read them one rank at a time.

Reader modules are imported lazily from :data:`READER_MODULES`; a module that is missing (not written yet,
or an optional dependency absent) is skipped. Each reader follows the interface in :mod:`kat_gui.ingest.base`.
"""

from __future__ import annotations

import importlib
import os
import re
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from types import ModuleType

from kat_gui.errors import KatInputError
from kat_gui.ingest.base import IngestOptions, NodePlacement, Progress, RankTrace
from kat_gui.ingest.placement import place_nodes

# Sniffed in this order. Kineto before Chrome: a Kineto file is a Chrome trace too, and kineto.plain_chrome_head
# is the one rule that tells them apart (both modules use it).
READER_MODULES = (
    "kat_gui.ingest.kineto",
    "kat_gui.ingest.nsys",
    "kat_gui.ingest.functrace",
    "kat_gui.ingest.chrome",
)
HEAD_BYTES = 64 * 1024
# Suffixes a directory walk picks up; a file named explicitly is sniffed whatever its name.
CANDIDATE_SUFFIXES = (".json", ".json.gz", ".sqlite", ".sqlite3", ".csv", ".jsonl", ".jsonl.gz", ".csv.gz")
NOT_A_TRACE = (
    "not a trace format KAT reads (expected Kineto JSON, Nsight Systems SQLite export, "
    "KAT function-trace CSV/JSONL, or Chrome Trace Event Format JSON)"
)
# rep_N / rep-N: Nsight Systems reports named per rank (``nsys profile -o rep_%q{RANK}``, docs/formats.md); "rep" must
# not be the end of a longer word (``prep_3``), and ``.nsys-rep`` carries no digits.
_RANK_RE = re.compile(r"(?:rank|worker|(?<![a-z])rep)[-_]?(\d+)", re.IGNORECASE)


def readers() -> list[ModuleType]:
    """The reader modules that import, in :data:`READER_MODULES` order."""
    found = []
    for name in READER_MODULES:
        try:
            found.append(importlib.import_module(name))
        except ModuleNotFoundError as exc:
            if exc.name != name:  # the module exists but one of its imports is missing: a real bug
                raise
    return found


def read_head(path: str | os.PathLike, size: int = HEAD_BYTES) -> bytes:
    """The first ``size`` bytes of the file's content, gunzipped when the file is gzip (by magic bytes)."""
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            head = fh.read(size)
            if head[:2] != b"\x1f\x8b":
                return head
            fh.seek(0)
            dec = zlib.decompressobj(wbits=31)
            out = b""
            while len(out) < size:
                block = fh.read(65536)
                if not block:
                    break
                out += dec.decompress(block, size - len(out))
                while dec.unconsumed_tail and len(out) < size:
                    out += dec.decompress(dec.unconsumed_tail, size - len(out))
                if dec.eof:
                    break
            return out
    except zlib.error as exc:
        raise KatInputError(path, f"corrupt gzip data ({exc})") from None
    except IsADirectoryError:
        raise KatInputError(path, "is a directory, expected a trace file") from None
    except FileNotFoundError:
        raise KatInputError(path, "no such file") from None
    except OSError as exc:
        raise KatInputError(path, f"cannot read the file ({exc.strerror or exc})") from None


class NotATraceError(KatInputError):
    """A readable file whose content is not any trace format (a directory walk skips these)."""


def sniff_format(path: str | os.PathLike) -> str:
    """The FORMAT of the first reader whose ``sniff`` accepts the file's content; KatInputError otherwise."""
    path = Path(path)
    head = read_head(path)
    if not head.strip():
        raise KatInputError(path, "the file is empty")
    for mod in readers():
        if mod.sniff(path, head):
            return mod.FORMAT
    raise NotATraceError(path, NOT_A_TRACE)


def reader_for(fmt: str) -> ModuleType:
    for mod in readers():
        if mod.FORMAT == fmt:
            return mod
    raise KeyError(fmt)


def _is_candidate(p: Path) -> bool:
    name = p.name.lower()
    return p.is_file() and not name.startswith(".") and name.endswith(CANDIDATE_SUFFIXES)


def expand_paths(paths: Iterable[str | os.PathLike]) -> list[Path]:
    """Files as given, directories walked (recursively) for candidate trace files, each list sorted.

    Raises KatInputError for a missing path or a directory holding no candidate file.
    """
    out: list[Path] = []
    for raw in paths:
        p = Path(raw)
        if p.is_dir():
            found = sorted(q for q in p.rglob("*") if _is_candidate(q))
            if not found:
                raise KatInputError(
                    p, "no trace files in this directory (looked for " + ", ".join(CANDIDATE_SUFFIXES) + ")"
                )
            out.extend(found)
        elif p.exists():
            out.append(p)
        else:
            raise KatInputError(p, "no such file or directory")
    seen: set[Path] = set()
    unique = []
    for p in out:
        key = p.resolve()
        if key not in seen:
            seen.add(key)
            unique.append(p)
    return unique


def rank_from_filename(path: str | os.PathLike) -> int | None:
    """The rank named in a file name (``rank-3``, ``rank_3``, ``rank3``, ``worker3``, ``worker_3``, Nsight's
    ``rep_3`` / ``rep-3``), else None.

    When several match (``worker0_rank3``), the last one wins: the most specific part is usually last.
    """
    matches = _RANK_RE.findall(Path(path).name)
    return int(matches[-1]) if matches else None


def plan(paths: Iterable[str | os.PathLike]) -> list[tuple[Path, str]]:
    """[(file, format)] for every input, sniffed from content; raises KatInputError on the first bad one.

    A file named on the command line must be a trace. Inside a directory, files whose content is no trace
    format at all (a ``truth.json`` beside simulated traces, a config dump) are skipped; damaged traces are not.
    """
    out: list[tuple[Path, str]] = []
    seen: set[Path] = set()
    for raw in paths:
        walked = Path(raw).is_dir()
        accepted = 0
        for p in expand_paths([raw]):
            try:
                fmt = sniff_format(p)
            except NotATraceError:
                if walked:
                    continue
                raise
            accepted += 1
            key = p.resolve()
            if key not in seen:
                seen.add(key)
                out.append((p, fmt))
        if walked and not accepted:
            raise KatInputError(raw, "no trace files in this directory (the candidate files are not traces)")
    return out


def read_traces(
    paths: Iterable[str | os.PathLike],
    options: IngestOptions | None = None,
    progress: Progress | None = None,
) -> Iterator[RankTrace]:
    """Read every file, one at a time (yielded so the caller can store it and drop it), with its rank resolved.

    Rank: ``options.rank`` (a single file only) > the file's content > the file name > KatInputError.
    A reader module with ``read_many(path, options, progress) -> Iterable[RankTrace]`` may return several
    ranks from one file; each is yielded. Files whose reader has ``survey`` (captures of a whole node) are
    surveyed first when several are read, or with ``--ranks-per-node`` / ``--rank-map``, and each gets its
    place in the run (``options.node``, :func:`kat_gui.ingest.placement.place_nodes`). Two traces of the same
    rank raise KatInputError naming both files.
    """
    options = options or IngestOptions()
    reads = plan_reads(paths, options)
    total = float(sum(r.size for r in reads)) or 1.0
    done = 0.0
    owners = RankOwners(options)
    for fr in reads:
        sub: Progress | None = None
        if progress is not None:
            base = done

            def sub(frac: float, message: str, base: float = base, size: int = fr.size) -> None:
                progress((base + frac * size) / total, message)

            progress(done / total, f"reading {fr.path.name}")
        traces = read_file(fr, sub)
        done += fr.size
        for trace in traces:
            owners.claim(fr.path, trace)
            if progress is not None:
                progress(done / total, f"read {fr.path.name}")
            yield trace


@dataclass(frozen=True)
class FileRead:
    """One file to read: its format, the options its reader gets (with its node placement) and its size in
    bytes (at least 1, for progress). A plain value, so that a dask worker can read the file
    (:func:`read_file`) while the caller resolves ranks in file order (:class:`RankOwners`)."""

    path: Path
    fmt: str
    options: IngestOptions
    size: int


def plan_reads(paths: Iterable[str | os.PathLike], options: IngestOptions) -> list[FileRead]:
    """Every file :func:`read_traces` reads, in its order, sniffed and placed; raises KatInputError first."""
    files = plan(paths)
    if options.rank is not None and len(files) != 1:
        raise KatInputError(None, f"--rank applies to a single file, but {len(files)} files were given")
    placements = _placements(files, options)
    return [
        FileRead(
            path,
            fmt,
            replace(options, node=placements[path]) if path in placements else options,
            max(_size(path), 1),
        )
        for path, fmt in files
    ]


def read_file(fr: FileRead, progress: Progress | None = None) -> Iterable[RankTrace]:
    """The traces of one file, ranks not yet resolved (a reader with read_many may yield several)."""
    mod = reader_for(fr.fmt)
    read_many = getattr(mod, "read_many", None)
    # A reader with read_many takes files that hold several ranks (one RankTrace each, rank from content).
    return (
        read_many(fr.path, fr.options, progress)
        if read_many is not None
        else [mod.read(fr.path, fr.options, progress)]
    )


class RankOwners:
    """Resolves each trace's rank, in file order, and refuses a rank seen before (naming both files)."""

    def __init__(self, options: IngestOptions):
        self.options = options
        self.owner: dict[int, Path] = {}

    def claim(self, path: Path, trace: RankTrace) -> None:
        """Set ``trace.rank`` and ``trace.meta["rank_source"]``; KatInputError for a rank already claimed."""
        rank, source = _resolve_rank(path, trace, self.options)
        if rank in self.owner:
            raise KatInputError(path, f"rank {rank} appears twice: in {self.owner[rank]} and in {path}")
        self.owner[rank] = path
        trace.rank = rank
        if source != "content" or "rank_source" not in trace.meta:  # a reader may say more than "content"
            trace.meta["rank_source"] = source


def _placements(files: list[tuple[Path, str]], options: IngestOptions) -> dict[Path, NodePlacement]:
    """Node placements of the files whose reader can survey them (several such files, or a rank option)."""
    surveyable = [(p, reader_for(fmt)) for p, fmt in files if hasattr(reader_for(fmt), "survey")]
    if not surveyable:
        return {}
    if len(surveyable) == 1 and options.ranks_per_node is None and not options.rank_map:
        return {}  # one capture on its own: its reader places it
    return place_nodes([(p, mod.survey(p, options)) for p, mod in surveyable], options)


def _size(p: Path) -> int:
    try:
        return p.stat().st_size
    except OSError:
        return 0


def _resolve_rank(path: Path, trace: RankTrace, options: IngestOptions) -> tuple[int, str]:
    if options.rank is not None:
        return options.rank, "option"
    if trace.rank is not None:
        return trace.rank, "content"
    from_name = rank_from_filename(path)
    if from_name is not None:
        return from_name, "file name"
    hint = ""
    if trace.format == "chrome":  # one process: its threads may be the ranks
        hint = " (or --rank-from thread:REGEX when its threads are the ranks)"
    raise KatInputError(path, f"cannot tell which rank {path.name} is: name it rank-N or pass --rank N{hint}")
