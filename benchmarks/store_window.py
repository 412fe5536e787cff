"""Micro-benchmark of the TraceStore: write, size, open and window-query latency on a synthetic run.

Usage: ``python benchmarks/store_window.py [--events 5000000] [--ranks 8] [--out DIR]``. Prints one line per
measurement. The run is synthetic (per rank: 4 GPU streams, 2 host threads with nested annotations).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from kat_gui.events import EVENT_COLUMNS, EventKind, RankTrace, TrackInfo, TrackKind, empty_columns
from kat_gui.store import TraceStore

T_BASE_NS = 1_700_000_000_000_000_000


def synthetic_rank(rank: int, n_events: int, n_names: int = 200, seed: int = 0) -> RankTrace:
    """One rank: 4 GPU streams of back-to-back kernels/copies and 2 host threads (runtime calls inside
    long ProfilerStep annotations). ``n_events`` in total, in shuffled order (the store sorts)."""
    rng = np.random.default_rng(seed * 1000 + rank)
    tracks = [TrackInfo(TrackKind.GPU_STREAM, rank, s, 100 + rank, s) for s in (7, 13, 17, 21)]
    tracks += [TrackInfo(TrackKind.HOST_THREAD, -1, -1, 100 + rank, 5000 + t) for t in range(2)]
    share = np.array([0.45, 0.15, 0.1, 0.05, 0.2, 0.05])
    sizes = np.floor(share * n_events).astype(np.int64)
    sizes[0] += n_events - sizes.sum()
    parts = []
    for ti, m in enumerate(sizes):
        m = int(m)
        cols = empty_columns(m)
        dur = rng.lognormal(9.0, 1.0, m).astype(np.int64) + 500  # ~8 µs median kernels
        gap = rng.exponential(3000, m).astype(np.int64)
        if ti >= 4:
            # Host thread: every 500th event is a long annotation covering the next 500 calls.
            start = T_BASE_NS + np.cumsum(dur + gap) - dur
            step = np.arange(m) % 500 == 0
            end = start + dur
            idx = np.flatnonzero(step)
            nxt = np.minimum(idx + 499, m - 1)
            end[idx] = end[nxt] + 1000
            cols["kind"][:] = EventKind.RUNTIME
            cols["kind"][idx] = EventKind.ANNOTATION
        else:
            start = T_BASE_NS + np.cumsum(dur + gap) - dur
            end = start + dur
            cols["kind"][:] = EventKind.KERNEL if ti < 3 else EventKind.MEMCPY
        cols["start_ns"][:] = start
        cols["end_ns"][:] = end
        cols["name"][:] = rng.integers(0, n_names, m)
        cols["correlation"][:] = np.arange(m)
        cols["track"] = np.full(m, ti, np.int32)
        parts.append(cols)
    events = {c: np.concatenate([p[c] for p in parts]) for c in [*EVENT_COLUMNS, "track"]}
    perm = rng.permutation(n_events)
    events = {c: v[perm] for c, v in events.items()}
    strings = [f"kernel_{i}_{'x' * (i % 40)}" for i in range(n_names)]
    return RankTrace(
        rank, f"synthetic/rank{rank}.json", "synthetic", tracks, events, strings, [], {"host": "h"}
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=5_000_000)
    ap.add_argument("--ranks", type=int, default=8)
    ap.add_argument("--repeat", type=int, default=30)
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument(
        "--chunk-rows", type=int, default=None, help="experiment: override the store's chunk rows"
    )
    ap.add_argument("--compression", choices=["gzip1", "gzip4", "lzf"], default=None, help="experiment")
    a = ap.parse_args()
    from kat_gui.store import writer

    if a.chunk_rows:
        writer.CHUNK_ROWS = a.chunk_rows
    if a.compression:
        writer.COMPRESSION = {
            "gzip1": {"compression": "gzip", "compression_opts": 1, "shuffle": True},
            "gzip4": {"compression": "gzip", "compression_opts": 4, "shuffle": True},
            "lzf": {"compression": "lzf", "shuffle": True},
        }[a.compression]
    out = a.out or Path(tempfile.mkdtemp())
    path = out / "bench.kat.h5"
    per = a.events // a.ranks
    t_gen = t_write = 0.0
    w0 = time.perf_counter()
    with TraceStore.create(path, "bench") as w:
        for r in range(a.ranks):
            g = time.perf_counter()
            rt = synthetic_rank(r, per)
            t_gen += time.perf_counter() - g
            s = time.perf_counter()
            w.add(rt)
            t_write += time.perf_counter() - s
            del rt
    total_write = time.perf_counter() - w0 - t_gen
    print(
        f"write: {total_write:.2f} s for {per * a.ranks} events ({a.ranks} ranks), file {path.stat().st_size / 1e6:.1f} MB"
    )
    opens = []
    for _ in range(5):
        o = time.perf_counter()
        st = TraceStore.open(path)
        opens.append(time.perf_counter() - o)
        st.close()
    print(f"open: median {statistics.median(opens) * 1e3:.1f} ms")
    st = TraceStore.open(path)
    t0, t1 = st.time_span()
    ids = [t.id for t in st.tracks]
    rng = np.random.default_rng(1)
    px = 2000
    for label, span in (("full view", t1 - t0), ("1 ms", 1_000_000), ("10 µs", 10_000)):
        lat = []
        nrect = []
        for i in range(a.repeat):
            a0 = t0 if span >= t1 - t0 else int(rng.integers(t0, t1 - span))
            q = time.perf_counter()
            res = st.window(ids, a0, a0 + span, max(1, span // px))
            lat.append(time.perf_counter() - q)
            nrect.append(sum(len(v) for v in res.values()))
            if i == 0:
                summary = sum(v.summary for v in res.values())
        print(
            f"window {label} ({len(ids)} tracks, {px} px): median {statistics.median(lat) * 1e3:.1f} ms, "
            f"max {max(lat) * 1e3:.1f} ms, ~{int(statistics.median(nrect))} items, {summary} tracks summarised"
        )
    o = time.perf_counter()
    _ = st.strings
    print(f"string table load: {(time.perf_counter() - o) * 1e3:.1f} ms ({len(st.strings)} strings)")
    st.close()


if __name__ == "__main__":
    main()
