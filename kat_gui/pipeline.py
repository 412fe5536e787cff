"""End-to-end jobs that tie the stages together. The CLI and the GUI's worker threads call these same functions.

Each job validates everything it can before writing anything, reports progress, and leaves no partial output
behind on error or cancel (the store writer is atomic).

Ingest runs on a :mod:`kat_gui.parallel` executor: one task per trace file reads and prepares its ranks
(``store.prepared``: sorted, summarised, in local string ids), the writer places each rank in file order
(run-wide string ids, rows), a second task per rank encodes it at its place (whole chunks deflated), and the
writer writes the encoded ranks in that order. In-process (the default for small inputs) the tasks run one
after the other; on a cluster at most ``2 x workers + 1`` files are in flight, so memory holds a bounded
window of ranks, never the run. Either way the store is the same (docs/store-format.md, "Writing").
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import replace
from pathlib import Path

from kat_gui import parallel
from kat_gui.errors import Cancelled, KatInputError
from kat_gui.ingest import IngestOptions, plan
from kat_gui.ingest.registry import FileRead, RankOwners, plan_reads, read_file
from kat_gui.progress import Progress, scaled
from kat_gui.store import TraceStore, open_files
from kat_gui.store.prepared import EncodedRank, Layout, Placement, PreparedRank, encode_rank, prepare_rank

# Least input (bytes) for which ingest starts a local cluster by itself (``workers=None``): below it, starting
# the workers costs more than it saves (docs/scale-out.md, "When it pays").
INGEST_MIN_BYTES = 512 * 1024 * 1024


def _check_output(out: Path) -> None:
    parent = out.resolve().parent
    if not parent.is_dir():
        raise KatInputError(out, f"cannot write the store: folder {parent} does not exist")
    if out.exists() and out.is_dir():
        raise KatInputError(out, "cannot write the store: a folder has that name")
    if not os.access(parent, os.W_OK):
        raise KatInputError(out, f"cannot write the store: folder {parent} is not writable")


def ingest(
    paths: Sequence[str | os.PathLike],
    out: str | os.PathLike,
    *,
    name: str | None = None,
    topology: str | os.PathLike | None = None,
    options: IngestOptions | None = None,
    progress: Progress | None = None,
    scale: parallel.Scale | None = None,
) -> Path:
    """Read trace files (or directories of them) into one new ``.kat.h5`` store at ``out``.

    Formats are sniffed from content. The topology file, when given, is parsed before any trace is read;
    without one a plausible default (ranks × GPUs) is stored and marked as inferred. ``scale`` says where
    the files are read (:class:`kat_gui.parallel.Scale`; default: in this process unless the input is large).
    """
    from kat_gui import topology as topo

    options = options or IngestOptions()
    out = Path(out)
    _check_output(out)
    files = plan(paths)  # raises on unknown formats / empty directories before anything is written
    graph = topo.load_topology(topology) if topology is not None else None
    run_name = name or _default_name(paths)

    reads = plan_reads([p for p, _fmt in files], options)
    ranks: list[int] = []
    gpu_names: dict[int, str] = {}
    with (
        parallel.executor(
            scale,
            n_tasks=len(reads),
            n_bytes=sum(r.size for r in reads),
            min_bytes=INGEST_MIN_BYTES,
            paths=[r.path for r in reads],
            fork_safe=open_files() == 0,
        ) as ex,
        TraceStore.create(out, run_name) as writer,
    ):
        for meta in _write_ranks(ex, reads, writer, options, scaled(progress, 0.0, 0.97)):
            ranks.append(meta["rank"])
            gpu = _first_gpu_name(meta["meta"])
            if gpu:
                gpu_names[meta["rank"]] = gpu
        if progress:
            progress(0.98, "topology")
        if graph is None:
            graph = topo.default_topology(sorted(ranks), None, gpu_names)
        writer.put_json("topology", topo.to_json(graph))
        if progress:
            progress(0.99, "writing summaries")
    if progress:
        progress(1.0, "done")
    return out


def _write_ranks(ex: parallel.Executor, reads: list[FileRead], writer, options: IngestOptions, progress):
    """Read, place, encode and write every rank in file order (see the module docstring); yields each rank's
    ``/ranks`` entry once written."""
    layout = writer.layout()
    remote = isinstance(ex, parallel.OnDask) and ex.description.startswith("dask scheduler")
    total = float(sum(r.size for r in reads)) or 1.0
    done = 0.0
    owners = RankOwners(options)
    fetch = parallel.Prefetch(ex)
    queue: deque[tuple[object, FileRead]] = deque()  # encode tasks not yet written, in placement order
    where = "" if ex.workers == 0 else f" ({ex.description})"

    def poll(fr: FileRead):
        return (
            None if progress is None else (lambda: progress(done / total, f"reading {fr.path.name}{where}"))
        )

    def write(block: bool) -> Iterator[dict]:
        # Write what is here, in order; wait only when too many placed ranks are not written yet.
        while queue and (block or len(queue) > 2 * ex.workers or fetch.ready(queue[0][0])):
            task, fr = queue.popleft()
            enc = fetch.result(task, poll(fr))
            writer.add_encoded(enc)
            yield enc.rank_meta

    def submit(ex: parallel.Executor, fr: FileRead):
        # Each file's headers are computed right after it is read, where it was read, and fetched as soon as
        # they are ready: the writer places files in order without a round trip per file.
        prepared = ex.submit(
            _prepare_file, _for_workers(fr) if remote else fr, str(fr.path), layout, spread=True
        )
        return prepared, fetch.add(ex.submit(_headers, prepared, priority=2))

    for fr, (prepared, headers_task) in parallel.in_order(ex, reads, submit, window=4 * ex.workers + 1):
        if progress is not None:
            progress(done / total, f"reading {fr.path.name}{where}")
        headers = fetch.result(headers_task, poll(fr))
        for i, header in enumerate(headers):
            owners.claim(fr.path, header)
            # Encoding runs before the files read ahead: the writer waits for it, in order.
            place = writer.place(header, header.rank, header.meta)
            queue.append((fetch.add(ex.submit(_encode, prepared, i, place, priority=1)), fr))
        del prepared  # kept on its worker until its ranks are encoded
        done += fr.size
        yield from write(block=False)
        if progress is not None:
            progress(done / total, f"read {fr.path.name}{where}")
    yield from write(block=True)


def _for_workers(fr: FileRead) -> FileRead:
    """The read as a worker of a remote cluster gets it: an absolute path (its working folder is not ours)."""
    return replace(fr, path=fr.path.resolve())


def _prepare_file(fr: FileRead, shown: str, layout: Layout) -> list[PreparedRank]:
    """Task: read one file and prepare each of its ranks (the raw trace is dropped as soon as it is sorted).
    ``shown`` is the path as the user gave it: the stored ``source`` of each rank, as in a serial ingest."""
    out = []
    for trace in read_file(fr):
        if trace.source == str(fr.path) and shown != str(fr.path):
            trace.source = shown
        out.append(prepare_rank(trace, layout))
        del trace
    return out


def _headers(prepared: list[PreparedRank]) -> list:
    """Task: the small part of each prepared rank that the writer needs to place it."""
    return [p.header for p in prepared]


def _encode(prepared: list[PreparedRank], i: int, placement: Placement) -> EncodedRank:
    """Task: rank ``i`` of a prepared file at its place in the run."""
    return encode_rank(prepared[i], placement)


def _default_name(paths: Sequence[str | os.PathLike]) -> str:
    first = Path(paths[0])
    stem = first.name
    for suffix in (".gz", ".json", ".sqlite", ".csv", ".jsonl", ".pt.trace"):
        stem = stem.removesuffix(suffix)
    return stem or "run"


def _first_gpu_name(meta: dict) -> str | None:
    for key in ("deviceProperties", "gpus"):
        devs = meta.get(key)
        if isinstance(devs, list) and devs and isinstance(devs[0], dict) and devs[0].get("name"):
            return str(devs[0]["name"])
    return None


__all__ = ["ingest", "Cancelled"]
