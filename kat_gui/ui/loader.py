"""Turn what the user opened (stores, trace files, folders) into analysed stores. Headless; runs on a worker.

A ``.kat.h5`` store opens as it is. Trace files and folders are ingested together as one run into the cache
folder (keyed by their paths, sizes and modification times, so opening the same traces twice reuses the
store). A store without detection results is analysed with the same function ``kat detect`` calls, before
the GUI opens it (HDF5 does not let one process hold a file open read-only and read-write at once).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from kat_gui.errors import KatInputError
from kat_gui.progress import Progress, scaled

STORE_SUFFIX = ".kat.h5"
HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"


def is_store(path: Path) -> bool:
    """True for a file that is an HDF5 file (a KAT store or something the store will reject clearly)."""
    if not path.is_file():
        return False
    if path.name.endswith(STORE_SUFFIX) or path.suffix == ".h5":
        return True
    try:
        with open(path, "rb") as f:
            return f.read(8) == HDF5_MAGIC
    except OSError:
        return False


def split_paths(paths: Sequence[str | os.PathLike]) -> tuple[list[Path], list[Path]]:
    """(stores, trace inputs). Raises KatInputError for a path that does not exist."""
    stores, traces = [], []
    for p in paths:
        path = Path(p).expanduser()
        if not path.exists():
            raise KatInputError(path, "no such file or folder")
        (stores if is_store(path) else traces).append(path)
    return stores, traces


def cached_store_path(traces: Sequence[Path], cache: Path) -> Path:
    """Where the store of these trace inputs lives in the cache (a stable key of paths, sizes, mtimes)."""
    h = hashlib.sha256()
    for p in sorted(Path(t).resolve() for t in traces):
        files = sorted(x for x in p.rglob("*") if x.is_file()) if p.is_dir() else [p]
        for f in files:
            st = f.stat()
            h.update(f"{f}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    name = Path(traces[0]).name.split(".")[0] or "run"
    return cache / "stores" / f"{name}-{h.hexdigest()[:12]}{STORE_SUFFIX}"


def ingest_traces(traces: Sequence[Path], cache: Path, progress: Progress | None = None) -> Path:
    """Ingest trace files/folders into one cached store (reused when already there)."""
    from kat_gui import pipeline

    out = cached_store_path(traces, cache)
    if out.exists():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    name = Path(traces[0]).name
    for suffix in (".gz", ".json", ".pt.trace"):
        name = name.removesuffix(suffix)
    return pipeline.ingest([str(t) for t in traces], out, name=name, progress=progress)


def has_detection(store: Path) -> bool:
    from kat_gui.store import TraceStore

    with TraceStore.open(store) as st:
        return st.get_json("detect/findings") is not None


def detection_version(store: Path) -> str | None:
    """The detector version that wrote the store's results (None when it has none)."""
    from kat_gui.store import TraceStore

    with TraceStore.open(store) as st:
        if st.get_json("detect/findings") is None:
            return None
        return str((st.get_json("detect/meta") or {}).get("detector", "unknown"))


def detector() -> Callable | None:
    """``kat_gui.detect.detect_store`` when the detector is installed, else None."""
    try:
        from kat_gui.detect import detect_store  # type: ignore[attr-defined]
    except ImportError:
        return None
    return detect_store


def analyse(store: Path, progress: Progress | None = None) -> str:
    """Run detection on ``store`` unless it already holds results of the current detector. Returns a short note
    for the status bar. Results written by another detector version are kept when the file is read-only."""
    stored = detection_version(store)
    fn = detector()
    current = None
    if fn is not None:
        from kat_gui.detect import DETECTOR_VERSION as current
    if stored is not None and (fn is None or stored == current):
        return "detection results loaded from the store"
    if fn is None:
        return "detector not available in this build: timelines only"
    if not os.access(store, os.W_OK):
        if stored is not None:
            return f"detection results of {stored} loaded ({store.name} is read-only, not re-analysed)"
        return f"{store.name} is read-only: detection results cannot be stored, timelines only"
    fn(store, progress=progress)
    return "detection finished" if stored is None else f"re-analysed with {current} (the store held {stored})"


def load_models(
    stores: Sequence[str | os.PathLike], progress: Progress | None = None
) -> list[tuple[Path, Any]]:
    """Each store's :class:`RunModel`, built and preloaded (``RunModel.preload``, ``scale.prepare_overview``)
    here — on the worker that opened the run, so the GUI thread reads nothing from the file — or, for a store
    that cannot be read, the one-line reason. Returns ``[(path, model or message)]`` in the order given; on cancel, closes what it
    loaded and re-raises."""
    from kat_gui.ui.run_model import RunModel
    from kat_gui.ui.scale import prepare_overview

    out: list[tuple[Path, Any]] = []
    try:
        for i, s in enumerate(stores):
            path = Path(s)
            if progress:
                progress(i / max(len(stores), 1), f"loading {path.name}")
            try:
                out.append((path, prepare_overview(RunModel(path).preload())))
            except Exception as exc:  # a store the detector wrote but we cannot read: say which and why
                out.append((path, str(exc) if str(path) in str(exc) else f"{path}: {exc}"))
        warm_imports()
        if progress:
            progress(1.0, "ready")
    except BaseException:
        for _p, m in out:
            if not isinstance(m, str):
                m.close()
        raise
    return out


def warm_imports() -> None:
    """Import here (a worker) what the run's tab imports on first use, so building the tab on the GUI thread
    does not stop for imports: the explain stage (the explanation panel looks it up; ~25 ms) and numpy.ma
    (loaded lazily by numpy; ~20 ms)."""
    import importlib

    for name in ("numpy.ma", "kat_gui.explain"):
        try:
            importlib.import_module(name)
        except Exception:  # an optional stage that is not installed: the panel says so itself
            pass


def prepare(paths: Sequence[str | os.PathLike], cache: Path, progress: Progress | None = None) -> list[Path]:
    """Stores ready to open for ``paths``: each store as is, all trace inputs together as one new run;
    every store analysed. Raises KatInputError for anything unreadable."""
    stores, traces = split_paths(paths)
    if traces:
        stores.append(ingest_traces(traces, cache, scaled(progress, 0.0, 0.6)))
    n = len(stores)
    for i, s in enumerate(stores):
        lo = 0.6 if traces else 0.0
        analyse(s, scaled(progress, lo + (1 - lo) * i / n, lo + (1 - lo) * (i + 1) / n))
    if progress:
        progress(1.0, "ready")
    return stores
