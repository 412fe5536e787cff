"""End-to-end jobs that tie the stages together. The CLI and the GUI's worker threads call these same functions.

Each job validates everything it can before writing anything, reports progress, and leaves no partial output
behind on error or cancel (the store writer is atomic).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from kat_gui.errors import Cancelled, KatInputError
from kat_gui.ingest import IngestOptions, plan, read_traces
from kat_gui.progress import Progress, scaled
from kat_gui.store import TraceStore


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
) -> Path:
    """Read trace files (or directories of them) into one new ``.kat.h5`` store at ``out``.

    Formats are sniffed from content. The topology file, when given, is parsed before any trace is read;
    without one a plausible default (ranks × GPUs) is stored and marked as inferred.
    """
    from kat_gui import topology as topo

    options = options or IngestOptions()
    out = Path(out)
    _check_output(out)
    files = plan(paths)  # raises on unknown formats / empty directories before anything is written
    graph = topo.load_topology(topology) if topology is not None else None
    run_name = name or _default_name(paths)

    ranks: list[int] = []
    gpu_names: dict[int, str] = {}
    with TraceStore.create(out, run_name) as writer:
        for rank_trace in read_traces([p for p, _fmt in files], options, scaled(progress, 0.0, 0.97)):
            writer.add(rank_trace)
            if rank_trace.rank is not None:
                ranks.append(rank_trace.rank)
                gpu = _first_gpu_name(rank_trace.meta)
                if gpu:
                    gpu_names[rank_trace.rank] = gpu
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
