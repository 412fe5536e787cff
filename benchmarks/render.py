"""Timeline paint time on a large store: full view, three zoom levels, and pans.

Builds (once, cached in ``benchmarks/.cache``) a synthetic tensor-parallel store directly with the store writer:
``--ranks`` ranks in lock-step, ``--kernels`` kernels in total, one slow rank, plus a detection table marking
its slow kernels as roots and the peers' collectives as symptoms. Then opens the real GUI timeline offscreen
and measures, per view: the first frame (store query + batching + paint) and repaints while panning
(each pan step moves the view by 10% so a fraction of frames query the store again). The timeline reads the
store on the run's store thread and paints what it has meanwhile; here each frame waits for that read
(``LanesItem.fetch_now``) before it paints, so a frame's time is the whole read + draw, as before. How long
the GUI thread itself is held is ``benchmarks/gui_stalls.py``'s measure.

    QT_QPA_PLATFORM=offscreen .venv/bin/python benchmarks/render.py [--kernels 10000000 --ranks 64]
    QT_QPA_PLATFORM=offscreen .venv/bin/python benchmarks/render.py --window --ranks 1024   # the real window

Writes ``benchmarks/results/render.md``. Bar: pan/zoom repaint <= 50 ms median, first frame < 1 s, RSS < 1 GB.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from kat_gui.events import COMPONENTS, EventKind, TrackKind, empty_columns  # noqa: E402
from kat_gui.ingest.base import RankTrace, TrackInfo  # noqa: E402

KERNEL_NAMES = [
    "ampere_fp16_s16816gemm_fp16_128x128_ldg8_f2f_stages_64x3_tn",
    "void flash_fwd_kernel<Flash_fwd_kernel_traits<128, 64, 128, 4>>",
    "void at::native::vectorized_elementwise_kernel<4, at::native::FillFunctor<float>>",
    "void vllm::rms_norm_kernel<c10::Half, 8>",
    "ncclDevKernel_AllReduce_Sum_f16_RING_LL(ncclDevComm*, unsigned long, ncclWork*)",
    "void vllm::paged_attention_v2_kernel<c10::Half, 128>",
    "void at::native::reduce_kernel<512, 1>",
]
COLL = 4
BASE_DUR_NS = np.array([42_000, 30_000, 4_000, 6_000, 25_000, 18_000, 5_000], np.int64)
GAP_NS = 2_000
SLOW_RANK = 3
CACHE_LAYOUT = "lodsmall-hosts-lockstep"  # /lod_small, hosts of 8 GPUs, ranks in lock-step at the all-reduce


def lockstep_times(
    ranks: int, n_kernels: int, t0_ns: int, rng: np.random.Generator
) -> tuple[np.ndarray, ...]:
    """(name, start_ns [ranks, n], end_ns [ranks, n]) of every rank's kernels: a repeating cycle of kernels,
    each rank's durations jittered by +-5 %, in lock-step at the all-reduce: every rank's all-reduce ends when
    the last rank has arrived plus its own duration, as a real collective does (a rank that arrives early waits
    inside it). The slow rank's compute kernels take 1.6x in the middle third of the run: its peers wait for it
    in the all-reduce that follows."""
    k = len(KERNEL_NAMES)
    name = np.arange(n_kernels, dtype=np.int32) % k
    dur = (BASE_DUR_NS[name][None, :] * rng.uniform(0.95, 1.05, (ranks, n_kernels))).astype(np.int64)
    third = n_kernels // 3
    slow = np.zeros(n_kernels, bool)
    slow[third : 2 * third] = name[third : 2 * third] != COLL
    if SLOW_RANK < ranks:
        dur[SLOW_RANK, slow] = (dur[SLOW_RANK, slow] * 1.6).astype(np.int64)
    start = np.empty((ranks, n_kernels), np.int64)
    end = np.empty((ranks, n_kernels), np.int64)
    t = np.full(ranks, t0_ns, np.int64)
    for i in range(n_kernels):
        start[:, i] = t
        end[:, i] = (t.max() if name[i] == COLL else t) + dur[:, i]
        t = end[:, i] + GAP_NS
    return name, start, end


def synth_rank(rank: int, name: np.ndarray, start: np.ndarray, end: np.ndarray) -> RankTrace:
    """One rank of :func:`lockstep_times`: its kernels on stream 7, the all-reduce on stream 13."""
    cols = empty_columns(len(name))
    cols["start_ns"] = start.astype(np.int64)
    cols["end_ns"] = end.astype(np.int64)
    cols["kind"][:] = EventKind.KERNEL
    cols["name"] = name
    cols["track"] = np.where(name == COLL, 1, 0).astype(np.int32)
    tracks = [
        TrackInfo(TrackKind.GPU_STREAM, rank % 8, 7, rank, 7),
        TrackInfo(TrackKind.GPU_STREAM, rank % 8, 13, rank, 13),
    ]
    return RankTrace(
        rank,
        f"synthetic-rank{rank}",
        "synthetic",
        tracks,
        cols,
        list(KERNEL_NAMES),
        meta={"deviceProperties": [{"name": "NVIDIA H100 80GB HBM3"}]},
    )


def make_store(path: Path, ranks: int, kernels: int, seed: int = 0) -> Path:
    """Write the synthetic store with detection results; returns ``path``."""
    from kat_gui import topology as topo
    from kat_gui.store import TraceStore

    rng = np.random.default_rng(seed)
    per_rank = kernels // ranks
    t0 = 1_700_000_000_000_000_000
    name, start, end = lockstep_times(ranks, per_rank, t0, rng)
    from kat_gui.ui.run_model import ANOMALY_COLUMNS

    anomalies: dict[str, list[np.ndarray]] = {c: [] for c in ANOMALY_COLUMNS}
    track_base = 0
    third = per_rank // 3
    with TraceStore.create(path, f"synthetic-{ranks}x{per_rank}") as w:
        for r in range(ranks):
            rt = synth_rank(r, name, start[r], end[r])
            w.add(rt)
            # Store row index within a track = order by start within that track.
            for local, is_coll in ((0, False), (1, True)):
                sel = np.flatnonzero(rt.events["track"] == local)
                in_mid = (sel >= third) & (sel < 2 * third)
                names = rt.events["name"][sel]
                want = in_mid & (
                    (names == COLL)
                    if (is_coll and r != SLOW_RANK)
                    else ((names != COLL) if (r == SLOW_RANK and not is_coll) else np.zeros_like(in_mid))
                )
                rows = np.flatnonzero(want)[::50]  # a sample: a real detector flags the worst instances
                if not len(rows):
                    continue
                ev = sel[rows]
                n = len(rows)
                anomalies["track"].append(np.full(n, track_base + local, np.int32))
                anomalies["index"].append(rows.astype(np.int64))
                anomalies["rank"].append(np.full(n, r, np.int32))
                anomalies["device"].append(np.full(n, r % 8, np.int32))
                anomalies["stream"].append(np.full(n, 13 if is_coll else 7, np.int64))
                anomalies["name"].append(rt.events["name"][ev].astype(np.int32))
                anomalies["start_ns"].append(rt.events["start_ns"][ev])
                anomalies["end_ns"].append(rt.events["end_ns"][ev])
                anomalies["role"].append(np.full(n, 1 if r == SLOW_RANK else 2, np.uint8))
                anomalies["component"].append(np.full(n, COMPONENTS.index("gpu"), np.uint8))
                anomalies["score"].append(np.full(n, 5.0, np.float32))
                anomalies["finding"].append(np.zeros(n, np.int32))
            track_base += len(rt.tracks)
        cols = {c: np.concatenate(v) for c, v in anomalies.items()}
        w.put_table("detect/anomalies", cols)
        # Hosts of 8 GPUs (ranks host-major), as a typical NVSwitch box: the window groups lanes by host.
        w.put_json("topology", topo.to_json(topo.default_topology(list(range(ranks)), 8)))
        w.put_json(
            "detect/findings",
            {
                "schema": "kat.detect/1",
                "run": "synthetic",
                "findings": [
                    {
                        "id": 0,
                        "component": "gpu",
                        "component_id": f"GPU{SLOW_RANK}",
                        "ranks": [SLOW_RANK],
                        "confidence": 0.9,
                        "start_ns": int(cols["start_ns"].min()),
                        "end_ns": int(cols["end_ns"].max()),
                        "summary": f"rank {SLOW_RANK} compute kernels 1.6x slower than peers",
                        "nodes": [f"GPU{SLOW_RANK}"],
                        "anomaly_count": len(cols["start_ns"]),
                        "evidence": {"slowdown_vs_peers": 1.6},
                        "kind": "timing",
                    }
                ],
            },
        )
    return path


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def frame(view) -> None:
    """One frame of ``view``: the store's answer for the view when it needs a new one (read on the run's store
    thread, waited for here), then the paint."""
    view.lanes_item.fetch_now()
    view.plot.grab()


def bench(store: Path, repeats: int = 15) -> list[dict]:
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from PySide6 import QtWidgets

    from kat_gui.ui.run_model import RunModel
    from kat_gui.ui.timeline import TimelineView

    app = QtWidgets.QApplication.instance() or QtWidgets.QApplication([])
    t = time.perf_counter()
    model = RunModel(store)
    view = TimelineView(model)
    view.resize(1600, 1000)
    view.show()
    app.processEvents()
    frame(view)
    first_full = time.perf_counter() - t
    span = view._span_s()
    rows = [
        {
            "view": "open + first frame (full run)",
            "first_ms": first_full * 1e3,
            "median_ms": float("nan"),
            "p90_ms": float("nan"),
            "rects": view.lanes_item.rect_count(),
            "raster": view.lanes_item.uses_raster(),
        }
    ]
    for label, width in (
        ("full run", span),
        ("1/100 of run", span / 100),
        ("1/10,000 of run", span / 1e4),
        ("1/1,000,000 of run", span / 1e6),
    ):
        x0 = span / 2 - width / 2
        view.set_x_range(x0, x0 + width)
        t = time.perf_counter()
        frame(view)
        first = time.perf_counter() - t
        times = []
        for i in range(repeats):
            d = width * 0.1 * (1 if (i // 5) % 2 == 0 else -1)
            x0 += d
            view.set_x_range(x0, x0 + width)
            t = time.perf_counter()
            frame(view)
            times.append(time.perf_counter() - t)
        zoom, sharp = [], []
        for f in (0.8, 1.25) * 3:
            view.zoom(f)
            t = time.perf_counter()
            frame(view)
            zoom.append(time.perf_counter() - t)
            # The crisp frame the timer draws once the wheel rests (re-rasterised at the new pixel size).
            t = time.perf_counter()
            view.settle()
            view.plot.grab()
            sharp.append(time.perf_counter() - t)
        rows.append(
            {
                "view": label,
                "first_ms": first * 1e3,
                "median_ms": statistics.median(times) * 1e3,
                "p90_ms": sorted(times)[int(0.9 * len(times))] * 1e3,
                "zoom_median_ms": statistics.median(zoom) * 1e3,
                "settled_median_ms": statistics.median(sharp) * 1e3,
                "rects": view.lanes_item.rect_count(),
                "raster": view.lanes_item.uses_raster(),
            }
        )
    model.close()
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kernels", type=int, default=10_000_000)
    ap.add_argument("--ranks", type=int, default=64)
    ap.add_argument("--out", type=Path, default=None, help="default: benchmarks/results/render[_window].md")
    ap.add_argument(
        "--window", action="store_true", help="the real window on the detected store (render_window)"
    )
    a = ap.parse_args()
    if a.out is None:
        a.out = ROOT / "benchmarks" / "results" / ("render_window.md" if a.window else "render.md")
    cache = ROOT / "benchmarks" / ".cache"
    cache.mkdir(exist_ok=True)
    # The name changes with the store layout, so that a cached store of an older layout is not reused.
    store = cache / f"render-{a.ranks}x{a.kernels}-{CACHE_LAYOUT}.kat.h5"
    if not store.exists():
        t = time.perf_counter()
        make_store(store, a.ranks, a.kernels)
        print(f"built {store.name} in {time.perf_counter() - t:.1f} s", file=sys.stderr)
    load0 = os.getloadavg()[0]
    if a.window:
        import render_window

        detected = render_window.detected_store(store)
        load0 = os.getloadavg()[0]
        r = render_window.bench_window(detected, frame)
        lines = render_window.table(r, a.ranks, a.kernels, detected, _rss_mb(), (load0, os.getloadavg()[0]))
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text("\n".join(lines))
        print("\n".join(lines))
        return 0
    rows = bench(store)
    rss = _rss_mb()
    load = os.getloadavg()[0]
    lines = [
        "# Timeline render benchmark",
        "",
        f"Store: {a.kernels:,} kernels, {a.ranks} ranks ({2 * a.ranks} GPU lanes' tracks drawn as {a.ranks} rank "
        f"rows), {store.stat().st_size / 1e6:.0f} MB. Window 1600x1000 offscreen (QT_QPA_PLATFORM=offscreen), "
        "`widget.grab()` per frame (store query when needed + batching + paint).",
        "Each view: the first frame after jumping there, then 15 pans of 10% (median/p90) and 6 wheel-like "
        "zooms (x0.8/x1.25). A zoom frame shows the previous raster scaled; the *settled* frame is the one "
        "drawn ~90 ms after the wheel rests (re-rasterised at the new pixel size). Rectangles fetched = the "
        "store's answer for the view plus one width each side (what a pan reuses).",
        "",
        "| view | first frame ms | pan median ms | pan p90 ms | zoom median ms | settled zoom frame ms | "
        "rectangles fetched | drawn as |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        zm = r.get("zoom_median_ms", float("nan"))
        sm = r.get("settled_median_ms", float("nan"))
        how = "raster" if r["raster"] else "rectangles"
        lines.append(
            f"| {r['view']} | {r['first_ms']:.1f} | {r['median_ms']:.1f} | {r['p90_ms']:.1f} | "
            f"{zm:.1f} | {sm:.1f} | {r['rects']:,} | {how} |"
        )
    lines += [
        "",
        f"Peak RSS of the process (store open, window, all views): {rss:.0f} MB.",
        f"Machine: {platform.machine()}, {os.cpu_count()} CPU cores shared with other jobs; load average "
        f"{load0:.1f} at the start and {load:.1f} at the end of the run (timings scale with it: compare runs at "
        f"similar load). Run on {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}.",
        "",
        "Bar: pan/zoom repaint <= 50 ms median; first frame < 1 s; memory < 1 GB.",
        "",
    ]
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
