"""The demo runs behind ``kat gui --demo``: a small healthy tensor-parallel run and its degraded twin.

Headless (no Qt). Both runs come from the ground-truth simulator (same workload and seed; the degraded one
adds one fault, a GPU throttled on one rank, which draws a clear picture: that rank's compute kernels
stretch and its peers wait for it in every all-reduce). They are ingested and analysed exactly as user
traces are, and cached under the user cache dir keyed by the KAT version, so the second start is instant and
a new KAT version never shows results of an older detector. Nothing is shipped in the repository: the
simulator is deterministic, so generating costs a few seconds once and keeps the repository free of binaries.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from kat_gui import __version__
from kat_gui.errors import KatInputError
from kat_gui.progress import Progress, scaled

DEMO_SEED = 7
# Preferred scenario names, first match wins; a name-pattern fallback keeps the demo working if the
# simulator renames its scenarios.
HEALTHY_NAMES = (
    "healthy_tp4_decode",
    "healthy_tp4",
    "healthy_tp8",
    "healthy",
    "tp4_healthy",
    "healthy_decode",
)
DEGRADED_NAMES = ("gpu_throttle_tp4", "gpu_throttle", "gpu_throttle_tp8", "gpu_clock_throttle", "gpu_slow")
TRACE_SUFFIXES = (".json", ".json.gz", ".sqlite", ".csv", ".jsonl")


def demo_dir(cache_dir: str | os.PathLike | None = None) -> Path:
    if cache_dir is None:
        env = os.environ.get("KAT_CACHE_DIR")
        if env:
            cache_dir = env
        else:
            import platformdirs

            cache_dir = platformdirs.user_cache_dir("kat", appauthor=False)
    return Path(cache_dir) / f"demo-{__version__}"


def pick_scenarios(names: list[str]) -> tuple[str, str]:
    """(healthy, degraded) scenario names among the simulator's."""

    def pick(prefs: tuple[str, ...], *words: str) -> str | None:
        for p in prefs:
            if p in names:
                return p
        for n in sorted(names):
            if all(w in n for w in words):
                return n
        return None

    healthy = pick(HEALTHY_NAMES, "healthy")
    degraded = pick(DEGRADED_NAMES, "gpu", "throttl") or pick((), "gpu")
    if healthy is None or degraded is None:
        raise KatInputError(
            None, f"the simulator has no healthy/GPU-fault scenario to build the demo from ({names})"
        )
    return healthy, degraded


def _trace_files(folder: Path) -> tuple[list[Path], Path | None]:
    """Per-rank trace files the simulator wrote (ground truth excluded) and its topology file, if any."""
    traces, topo = [], None
    for p in sorted(folder.rglob("*")):
        if not p.is_file() or p.name.startswith("truth"):
            continue
        if "topo" in p.name.lower():
            topo = p
        elif p.name.endswith(TRACE_SUFFIXES):
            traces.append(p)
    return traces, topo


def _build(scenario: str, out: Path, work: Path, progress: Progress | None) -> Path:
    from kat_gui import pipeline, simulate
    from kat_gui.detect import detect_store

    folder = work / scenario
    simulate.simulate(folder, scenario, seed=DEMO_SEED)
    if progress:
        progress(0.3, f"simulated {scenario}")
    traces, topo = _trace_files(folder)
    if not traces:
        raise KatInputError(folder, f"the simulator wrote no trace files for scenario {scenario}")
    tmp = out.with_name(out.name + ".part.kat.h5")
    pipeline.ingest(
        [str(t) for t in traces],
        tmp,
        name=f"demo {scenario}",
        topology=topo,
        progress=scaled(progress, 0.3, 0.7),
    )
    detect_store(tmp, progress=scaled(progress, 0.7, 1.0))
    os.replace(tmp, out)
    return out


def ensure_demo(
    cache_dir: str | os.PathLike | None = None, progress: Progress | None = None
) -> tuple[Path, Path]:
    """(healthy_store, degraded_store), generated, ingested and analysed on first use, then cached."""
    from kat_gui import simulate

    d = demo_dir(cache_dir)
    names = list(getattr(simulate, "SCENARIOS", {}))
    healthy_name, degraded_name = pick_scenarios(names)
    healthy = d / f"healthy-{healthy_name}-s{DEMO_SEED}.kat.h5"
    degraded = d / f"degraded-{degraded_name}-s{DEMO_SEED}.kat.h5"
    if healthy.exists() and degraded.exists():
        if progress:
            progress(1.0, "demo ready")
        return healthy, degraded
    d.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="kat-demo-", dir=d))
    try:
        if not degraded.exists():
            _build(degraded_name, degraded, work, scaled(progress, 0.0, 0.5))
        if not healthy.exists():
            _build(healthy_name, healthy, work, scaled(progress, 0.5, 1.0))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if progress:
        progress(1.0, "demo ready")
    return healthy, degraded
