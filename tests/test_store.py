"""TraceStore: round trip, sort order, window queries vs brute force, summaries, atomicity, results."""

from __future__ import annotations

import contextlib
import json
import os
import time
from pathlib import Path
from unittest import mock

import h5py
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kat_gui.errors import Cancelled, KatInputError
from kat_gui.events import (
    EVENT_COLUMNS,
    SCHEMA_VERSION,
    EventKind,
    RankTrace,
    TrackInfo,
    TrackKind,
    empty_columns,
)
from kat_gui.store import TraceStore
from kat_gui.store import layout as layout_mod
from kat_gui.store import lod as lod_mod
from kat_gui.store import window as window_mod
from kat_gui.store import writer as writer_mod

T0 = 1_700_000_000_000_000_000
STRING_COLS = ("name", "coll", "pg")


@contextlib.contextmanager
def tiny_layout(chunk_rows: int = 32, long_min: int = 2, long_div: int = 8, lod_min: int = 8):
    """Small chunks / long lists / LOD stop so that small test stores exercise multi-chunk searches."""
    with (
        mock.patch.object(writer_mod, "CHUNK_ROWS", chunk_rows),
        mock.patch.object(writer_mod, "LONG_MIN", long_min),
        mock.patch.object(writer_mod, "LONG_DIVISOR", long_div),
        mock.patch.object(lod_mod, "LOD_MIN_RECTS", lod_min),
    ):
        yield


def make_rank(
    rank: int, seed: int, n_gpu: int = 300, n_host: int = 120, source: str | None = None
) -> RankTrace:
    """Two GPU streams of kernels/copies and one host thread of runtime calls nested in long annotations,
    with local string ids (some names shared across ranks, some not), args, collective fields, shuffled."""
    rng = np.random.default_rng(seed)
    strings = [f"shared_kernel_{i}" for i in range(6)] + [f"rank{rank}_only_{i}" for i in range(4)]
    strings += ["allreduce", "pg0", "ProfilerStep#1", "cudaLaunchKernel", "ünïcødé ✓"]
    parts = []
    for ti, m in enumerate((n_gpu, n_gpu // 2)):
        c = empty_columns(m)
        dur = rng.integers(0, 20_000, m)
        gap = rng.integers(0, 5_000, m)
        c["start_ns"][:] = T0 + np.cumsum(dur + gap) - dur
        c["end_ns"][:] = c["start_ns"] + dur
        c["kind"][:] = rng.choice([EventKind.KERNEL, EventKind.MEMCPY, EventKind.MEMSET], m)
        c["name"][:] = rng.integers(0, 10, m)
        c["bytes"][:] = np.where(c["kind"] == EventKind.MEMCPY, rng.integers(1, 1 << 30, m), -1)
        c["copy_kind"][:] = np.where(c["kind"] == EventKind.MEMCPY, 1, 0)
        c["correlation"][:] = rng.integers(-1, 10**9, m)
        coll = rng.random(m) < 0.2
        c["coll"][:] = np.where(coll, 10, -1)
        c["pg"][:] = np.where(coll, 11, -1)
        c["seq"][:] = np.where(coll, np.arange(m), -1)
        c["msg_nelems"][:] = np.where(coll, rng.integers(1, 10**8, m), -1)
        c["group_size"][:] = np.where(coll, 8, -1)
        c["args"][:] = np.where(rng.random(m) < 0.5, rng.integers(0, 5, m), -1)
        c["track"] = np.full(m, ti, np.int32)
        parts.append(c)
    c = empty_columns(n_host)
    start = T0 + np.sort(rng.integers(0, 3_000_000, n_host))
    dur = rng.integers(100, 3_000, n_host)
    step = np.arange(n_host) % 30 == 0
    dur[step] = 900_000  # ProfilerStep-like annotations overlapping many calls
    c["start_ns"][:] = start
    c["end_ns"][:] = start + dur
    c["kind"][:] = np.where(step, EventKind.ANNOTATION, EventKind.RUNTIME)
    c["name"][:] = np.where(step, 12, 13)
    c["correlation"][:] = np.arange(n_host)
    c["track"] = np.full(n_host, 2, np.int32)
    parts.append(c)
    events = {k: np.concatenate([p[k] for p in parts]) for k in [*EVENT_COLUMNS, "track"]}
    perm = rng.permutation(len(events["start_ns"]))
    events = {k: v[perm] for k, v in events.items()}
    tracks = [
        TrackInfo(TrackKind.GPU_STREAM, rank, 7, 1000 + rank, 7),
        TrackInfo(TrackKind.GPU_STREAM, rank, 13, 1000 + rank, 13),
        TrackInfo(TrackKind.HOST_THREAD, -1, -1, 1000 + rank, 4242),
    ]
    args = [json.dumps({"grid": [i, 1, 1], "rank": rank}) for i in range(4)] + [
        '{"grid": [0, 1, 1], "rank": 0}'
    ]
    return RankTrace(
        rank,
        source or f"/traces/rank{rank}.json",
        "kineto",
        tracks,
        events,
        strings,
        args,
        {"device": {"name": "H100"}, "n": np.int64(3)},
    )


def expected_track(rt: RankTrace, local_track: int) -> dict[str, list]:
    """Reference per-track rows, sorted by (start, longest first, input order) in pure Python, with string
    and args ids decoded to text."""
    ev = rt.events
    rows = [i for i in range(len(rt)) if ev["track"][i] == local_track]
    rows.sort(key=lambda i: (int(ev["start_ns"][i]), -int(ev["end_ns"][i] - ev["start_ns"][i]), i))
    out: dict[str, list] = {}
    for c in EVENT_COLUMNS:
        vals = [int(ev[c][i]) for i in rows]
        if c in STRING_COLS:
            vals = [rt.strings[v] if v >= 0 else "" for v in vals]
        elif c == "args":
            vals = [json.loads(rt.args[v]) if v >= 0 else {} for v in vals]
        out[c] = vals
    return out


def brute_window(cols: dict[str, np.ndarray], t0: int, t1: int) -> np.ndarray:
    s, e = cols["start_ns"], cols["end_ns"]
    return np.flatnonzero((s < t1) & ((e > t0) | (s >= t0)))


@pytest.fixture(scope="module")
def store3(tmp_path_factory) -> tuple[Path, list[RankTrace]]:
    path = tmp_path_factory.mktemp("store") / "run.kat.h5"
    rts = [make_rank(r, seed=10 + r) for r in (2, 0, 1)]
    with tiny_layout(), TraceStore.create(path, "run-a") as w:
        for rt in rts:
            w.add(rt)
        w.put_json("topology", {"gpus": 3})
    return path, rts


def test_round_trip_every_column(store3):
    path, rts = store3
    with TraceStore.open(path) as st:
        assert st.name == "run-a"
        assert st.schema_version == SCHEMA_VERSION
        assert [r["rank"] for r in st.ranks] == [2, 0, 1]
        assert st.ranks[0]["source"] == "/traces/rank2.json" and st.ranks[0]["format"] == "kineto"
        assert st.ranks[0]["meta"] == {"device": {"name": "H100"}, "n": 3}
        assert len(st.tracks) == 9
        for ri, rt in enumerate(rts):
            for lt in range(3):
                tr = st.tracks[ri * 3 + lt]
                assert tr.id == ri * 3 + lt and tr.rank == rt.rank
                assert tr.kind == rt.tracks[lt].kind and tr.tid == rt.tracks[lt].tid
                got = st.track_events(tr.id)
                exp = expected_track(rt, lt)
                for c in EVENT_COLUMNS:
                    assert got[c].dtype == EVENT_COLUMNS[c]
                    if c in STRING_COLS:
                        assert [st.string(int(v)) for v in got[c]] == exp[c], c
                    elif c == "args":
                        assert [st.args(int(v)) for v in got[c]] == exp[c]
                    else:
                        assert got[c].tolist() == exp[c], c
        # Names shared by ranks are interned once.
        assert st.strings.count("shared_kernel_0") == 1
        assert "ünïcødé ✓" in st.strings
        assert st.get_json("topology") == {"gpus": 3}


def test_sort_and_track_table(store3):
    path, rts = store3
    with TraceStore.open(path) as st:
        offset = 0
        for tr in st.tracks:
            assert tr.row_offset == offset
            offset += tr.row_count
            ev = st.track_events(tr.id, ["start_ns", "end_ns"])
            s, e = ev["start_ns"], ev["end_ns"]
            assert (np.diff(s) >= 0).all()
            assert tr.first_start_ns == s[0] and tr.last_end_ns == e.max()
            assert tr.max_dur_ns == (e - s).max()
            assert tr.label.startswith(f"rank {tr.rank}")
        assert offset == st.n_events == sum(len(rt) for rt in rts)
        all_ev = st.events(["start_ns", "kind"])
        assert len(all_ev["track"]) == st.n_events
        kinds = st.counts_by_kind()
        assert set(kinds) == {k.name.lower() for k in EventKind}
        for k in EventKind:
            exp = sum(int((rt.events["kind"] == k).sum()) for rt in rts)
            assert kinds[k.name.lower()] == exp
        assert st.counts_by_rank() == {rt.rank: len(rt) for rt in sorted(rts, key=lambda r: r.rank)}
        only = st.events(["kind"], kinds=[EventKind.ANNOTATION])
        assert (only["kind"] == EventKind.ANNOTATION).all() and len(only["kind"]) == kinds["annotation"]
        lo = min(int(rt.events["start_ns"].min()) for rt in rts)
        hi = max(int(rt.events["end_ns"].max()) for rt in rts)
        assert st.time_span() == (lo, hi)


def test_event_details(store3):
    path, rts = store3
    with TraceStore.open(path) as st:
        tr = st.tracks[0]
        exp = expected_track(rts[0], 0)
        for i in (0, 5, tr.row_count - 1):
            ev = st.event(tr.id, i)
            assert ev["name"] == exp["name"][i] and ev["args"] == exp["args"][i]
            assert ev["start_ns"] == exp["start_ns"][i] and ev["coll"] == exp["coll"][i]
            assert ev["duration_ns"] == exp["end_ns"][i] - exp["start_ns"][i]
            assert ev["rank"] == 2 and ev["index"] == i
        with pytest.raises(IndexError):
            st.event(tr.id, tr.row_count)


def test_window_on_fixture_matches_brute_force(store3):
    path, _ = store3
    rng = np.random.default_rng(0)
    with TraceStore.open(path) as st:
        t_lo, t_hi = st.time_span()
        cache = {tr.id: st.track_events(tr.id, ["start_ns", "end_ns", "name", "kind"]) for tr in st.tracks}
        for _ in range(200):
            a = int(rng.integers(t_lo - 10_000, t_hi + 10_000))
            b = a + int(rng.choice([1, 1_000, 50_000, 2_000_000]))
            res = st.window(range(len(st.tracks)), a, b)
            for tid, w in res.items():
                exp = brute_window(cache[tid], a, b)
                assert not w.summary and w.level == -1
                assert w.index.tolist() == exp.tolist()
                assert w.start_ns.tolist() == cache[tid]["start_ns"][exp].tolist()
                assert w.name.tolist() == cache[tid]["name"][exp].tolist()
                assert (w.count == 1).all()


events_strategy = st.lists(
    st.tuples(
        st.integers(0, 2_000_000),  # start offset
        st.one_of(st.integers(0, 3_000), st.integers(0, 3_000_000)),  # short or very long durations
        st.integers(0, 2),  # track
    ),
    min_size=1,
    max_size=400,
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    evs=events_strategy,
    windows=st.lists(
        st.tuples(st.integers(-100_000, 5_200_000), st.integers(1, 6_000_000)), min_size=1, max_size=8
    ),
    resolution=st.sampled_from([0, 0, 1_000, 20_000, 400_000]),
)
def test_window_property(tmp_path, evs, windows, resolution):
    arr = np.array(evs, dtype=np.int64)
    n = len(arr)
    c = empty_columns(n)
    c["start_ns"][:] = T0 + arr[:, 0]
    c["end_ns"][:] = c["start_ns"] + arr[:, 1]
    c["name"][:] = np.arange(n) % 3
    c["kind"][:] = EventKind.KERNEL
    c["track"] = arr[:, 2].astype(np.int32)
    tracks = [TrackInfo(TrackKind.GPU_STREAM, 0, s, 1, s) for s in range(3)]
    rt = RankTrace(0, "prop.json", "kineto", tracks, c, ["a", "b", "c"])
    path = tmp_path / f"prop-{os.getpid()}-{time.perf_counter_ns()}.kat.h5"
    with tiny_layout(chunk_rows=8, long_min=1, long_div=16, lod_min=4), TraceStore.create(path, "p") as w:
        w.add(rt)
    with TraceStore.open(path) as st:
        full = {t: st.track_events(t, ["start_ns", "end_ns"]) for t in range(3)}
        for off, span in windows:
            a = T0 + off
            b = a + span
            res = st.window([0, 1, 2], a, b, resolution)
            for t, w in res.items():
                exp = brute_window(full[t], a, b)
                if not w.summary:
                    assert w.index.tolist() == exp.tolist()
                    assert w.end_ns.tolist() == full[t]["end_ns"][exp].tolist()
                    continue
                # Summary: only when raw events outnumber pixels; every raw event lies inside a returned rect.
                assert resolution > 0 and w.level >= 0
                assert lod_mod.level_width_ns(w.level) <= resolution
                assert len(w) <= len(exp)
                assert w.count.sum() >= len(exp)
                s, e = full[t]["start_ns"][exp], full[t]["end_ns"][exp]
                k = np.searchsorted(w.start_ns, s, "right") - 1
                assert (k >= 0).all() and (w.end_ns[k] >= e).all()
        path.unlink()


def test_summary_mode_at_coarse_resolution(tmp_path):
    rt = make_rank(0, seed=3, n_gpu=3000, n_host=600)
    path = tmp_path / "lod.kat.h5"
    with tiny_layout(chunk_rows=64, lod_min=50), TraceStore.create(path, "lod") as w:
        w.add(rt)
    with TraceStore.open(path) as st:
        t0, t1 = st.time_span()
        res = st.window(range(3), t0, t1 + 1, (t1 - t0) // 100)
        for tid, w in res.items():
            tr = st.tracks[tid]
            assert w.summary, tid
            assert w.count.sum() == tr.row_count  # full view: every event in exactly one rect
            assert (w.busy_ns <= w.end_ns - w.start_ns).all() and (w.busy_ns > 0).all()
            assert (w.start_ns[1:] > w.end_ns[:-1]).all()  # disjoint, sorted
            assert (w.index == -1).all()
            assert len(w) < tr.row_count
            ev = st.track_events(tid, ["start_ns", "end_ns", "name"])
            # busy time equals the union of event intervals
            s, e = ev["start_ns"], ev["end_ns"]
            run = np.maximum.accumulate(e)
            union = int(np.maximum(0, e - np.maximum(s, np.concatenate(([s[0]], run[:-1])))).sum())
            assert int(w.busy_ns.sum()) == union
            # the rect's name is that of its longest event
            k = np.searchsorted(w.start_ns, s, "right") - 1
            dur = e - s
            for r in range(len(w)):
                members = np.flatnonzero(k == r)
                assert dur[members].max() == dur[members][ev["name"][members] == w.name[r]].max()
        # Fine resolution: raw events again.
        res = st.window([0], t0, t0 + 100_000, 1)
        assert not res[0].summary
        levels = st.lod_levels(0)
        assert levels[0][0] == 0 and levels[-1][2] < 50
        assert all(
            b[2] <= a[2] * lod_mod.LOD_KEEP_FRACTION for a, b in zip(levels[:-2], levels[1:-1], strict=True)
        )


def test_summary_level_tracks_resolution(tmp_path):
    """Evenly spaced events 10 µs apart: rects merge only once the level width exceeds the gap."""
    n = 5000
    c = empty_columns(n)
    c["start_ns"][:] = T0 + np.arange(n) * 10_000
    c["end_ns"][:] = c["start_ns"] + 2_000
    c["name"][:] = 0
    c["track"] = np.zeros(n, np.int32)
    rt = RankTrace(0, "even.json", "kineto", [TrackInfo(TrackKind.GPU_STREAM, 0, 7, 1, 7)], c, ["k"])
    path = tmp_path / "even.kat.h5"
    with TraceStore.create(path, "even") as w:
        w.add(rt)
    with TraceStore.open(path) as st:
        # gap 8 µs: levels 1 µs and 4 µs keep every event; 16 µs merges everything.
        assert [lv[:2] for lv in st.lod_levels(0)] == [(0, 1_000), (2, 16_000)]
        w0 = st.window([0], T0, T0 + n * 10_000, 20_000)[0]
        assert w0.summary and w0.level == 2 and len(w0) == 1 and w0.count[0] == n
        assert w0.busy_ns[0] == n * 2_000
        # 3333 pixels < 5000 events, but the coarsest level within 15 µs (level 0) merges nothing: raw.
        w1 = st.window([0], T0, T0 + n * 10_000, 15_000)[0]
        assert not w1.summary and len(w1) == n and w1.index[-1] == n - 1
        w2 = st.window([0], T0, T0 + n * 10_000, 5_000)[0]  # 10000 pixels: raw events fit
        assert not w2.summary and len(w2) == n


class _CountingReads:
    """Wraps a column dataset: counts the reads (``ds[...]``) a query makes."""

    def __init__(self, ds, counter: list[int]):
        self._ds, self._counter = ds, counter

    def __getitem__(self, key):
        self._counter[0] += 1
        return self._ds[key]

    def __len__(self) -> int:
        return len(self._ds)


def _summary_store(tmp_path) -> Path:
    """Four ranks x three tracks, tiny LOD stop, and a small-level cap that leaves the finer levels out of
    /lod_small, so queries use both the copied levels and /lod."""
    path = tmp_path / "small.kat.h5"
    with (
        tiny_layout(chunk_rows=64, lod_min=20),
        mock.patch.object(writer_mod, "LOD_SMALL_ROWS", 60),
        TraceStore.create(path, "small") as w,
    ):
        for r in range(4):
            w.add(make_rank(r, seed=40 + r, n_gpu=1500, n_host=300))
    return path


def _windows(st: TraceStore, queries) -> list[dict]:
    out = []
    for a, b, res in queries:
        for tid, w in st.window(range(len(st.tracks)), a, b, res).items():
            out.append(
                {
                    "track": tid,
                    "summary": w.summary,
                    "level": w.level,
                    **{c: getattr(w, c).tolist() for c in ("start_ns", "end_ns", "name", "kind", "count")},
                    **{c: getattr(w, c).tolist() for c in ("index", "busy_ns")},
                }
            )
    return out


def test_small_levels_answer_coarse_views_in_one_read_per_column(tmp_path):
    path = _summary_store(tmp_path)
    with TraceStore.open(path) as st:
        t0, t1 = st.time_span()
        span = t1 - t0
        levels = [st.lod_levels(t.id) for t in st.tracks]
        assert any(c > 60 for lv in levels for _l, _w, c in lv)  # some levels only in /lod
        assert all(any(c <= 60 for _l, _w, c in lv) for lv in levels if lv)
        reads = [0]
        st._windows.lod = {c: _CountingReads(ds, reads) for c, ds in st._windows.lod.items()}
        st._windows.lod_small = {c: _CountingReads(ds, reads) for c, ds in st._windows.lod_small.items()}
        # Full view at 200 px: every track's answer comes from its coarsest (copied) level.
        full = st.window(range(len(st.tracks)), t0 - span, t1 + span, 3 * span // 200)
        assert all(w.summary for w in full.values())
        assert reads[0] == len(layout_mod.SUMMARY_COLUMNS)  # one read per column for all 12 tracks
        st.window(range(len(st.tracks)), t0, t0 + span // 3, span // 3000)
        st.window(range(len(st.tracks)), t0 - span, t1 + span, 3 * span // 1000)
        assert reads[0] == len(layout_mod.SUMMARY_COLUMNS)  # and nothing more for other coarse views
        with pytest.raises(ValueError):
            full[0].start_ns[0] = 0  # views of the shared table are read-only


def test_small_levels_give_the_same_windows_as_lod_and_old_stores(tmp_path):
    """/lod_small is a copy: windows are identical with it, with it (and /long) too big to read whole
    (per-level / per-track reads), and on a store written before it existed (no /lod_small, no
    levels/small_offset)."""
    path = _summary_store(tmp_path)
    rng = np.random.default_rng(5)
    with TraceStore.open(path) as st:
        t0, t1 = st.time_span()
    span = t1 - t0
    queries = [(t0 - span, t1 + span, 3 * span // 1000), (t0, t1 + 1, span // 100)]
    for _ in range(30):
        a = int(rng.integers(t0 - span // 10, t1))
        b = a + int(rng.integers(1, span))
        queries.append((a, b, int(rng.choice([1, 1_000, 16_000, 100_000, max(1, (b - a) // 50)]))))
    with TraceStore.open(path) as st:
        with_small = _windows(st, queries)
        assert st._windows._lod_small_all  # read whole
        assert st._windows._long_all  # /long read whole too
    with (
        mock.patch.object(window_mod, "LOD_SMALL_READ_BYTES", 0),
        mock.patch.object(window_mod, "LONG_READ_BYTES", 0),
        TraceStore.open(path) as st,
    ):
        assert _windows(st, queries) == with_small
        assert st._windows._lod_small_all is False and st._windows._long_all is False
    assert any(w["summary"] for w in with_small) and any(not w["summary"] for w in with_small)
    with h5py.File(path, "r+") as f:
        del f["lod_small"]
        del f["lod/levels/small_offset"]
    with TraceStore.open(path) as st:
        assert _windows(st, queries) == with_small


def test_duplicate_and_missing_rank(tmp_path):
    path = tmp_path / "dup.kat.h5"
    with pytest.raises(KatInputError) as ei:
        with TraceStore.create(path, "dup") as w:
            w.add(make_rank(1, seed=1, source="/a/first.json"))
            w.add(make_rank(1, seed=2, source="/b/second.json"))
    assert "/a/first.json" in str(ei.value) and "/b/second.json" in str(ei.value)
    assert not path.exists() and list(tmp_path.iterdir()) == []
    rt = make_rank(0, seed=1)
    rt.rank = None
    with pytest.raises(KatInputError, match="--rank"):
        with TraceStore.create(path, "none") as w:
            w.add(rt)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("exc", [RuntimeError("boom"), KeyboardInterrupt(), Cancelled()])
def test_atomic_create(tmp_path, exc):
    path = tmp_path / "atomic.kat.h5"
    with pytest.raises(type(exc)):
        with TraceStore.create(path, "x") as w:
            w.add(make_rank(0, seed=1))
            raise exc
    assert list(tmp_path.iterdir()) == []
    # An existing store stays intact when a rewrite fails.
    with TraceStore.create(path, "old") as w:
        w.add(make_rank(0, seed=1))
    before = path.read_bytes()
    with pytest.raises(type(exc)):
        with TraceStore.create(path, "new") as w:
            w.add(make_rank(1, seed=2))
            raise exc
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == [path.name]
    with TraceStore.open(path) as st:
        assert st.name == "old"


def test_open_rejects_non_stores(tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    with pytest.raises(KatInputError, match="not a KAT store") as ei:
        TraceStore.open(text)
    assert str(text) in str(ei.value)
    plain = tmp_path / "plain.h5"
    with h5py.File(plain, "w") as f:
        f["x"] = np.arange(3)
    with pytest.raises(KatInputError, match="not a KAT store") as ei:
        TraceStore.open(plain)
    assert str(plain) in str(ei.value)
    with pytest.raises(KatInputError, match="no such file"):
        TraceStore.open(tmp_path / "missing.kat.h5")
    newer = tmp_path / "newer.kat.h5"
    with TraceStore.create(newer, "n") as w:
        w.add(make_rank(0, seed=1))
    with h5py.File(newer, "r+") as f:
        f.attrs["schema_version"] = SCHEMA_VERSION + 1
    with pytest.raises(KatInputError, match="newer") as ei:
        TraceStore.open(newer)
    assert str(newer) in str(ei.value)


def test_results_round_trip(tmp_path):
    path = tmp_path / "res.kat.h5"
    with TraceStore.create(path, "res") as w:
        w.add(make_rank(0, seed=1))
    with TraceStore.open(path) as st:
        with pytest.raises(ValueError, match="r\\+"):
            st.put_json("annotations", [])
    with TraceStore.open(path, "r+") as st:
        assert st.get_json("detect/findings", default="none") == "none"
        assert st.get_table("detect/anomalies") is None
        cols = {"start_ns": np.array([T0, T0 + 5], np.int64), "score": np.array([1.5, 2.0]),
                "name": np.array(["k1", "ünï"]), "root": np.array([True, False])}  # fmt: skip
        st.put_table("detect/anomalies", cols)
        st.put_json("detect/findings", [{"component": "gpu", "confidence": 0.9}])
        st.put_json("annotations", {"a": 1})
        st.put_json("annotations", {"a": 2})  # replace
    with TraceStore.open(path) as st:
        got = st.get_table("detect/anomalies")
        assert list(got) == ["start_ns", "score", "name", "root"]
        assert got["start_ns"].tolist() == cols["start_ns"].tolist() and got["start_ns"].dtype == np.int64
        assert got["score"].tolist() == [1.5, 2.0] and got["root"].tolist() == [True, False]
        assert got["name"].tolist() == ["k1", "ünï"]
        assert st.get_json("detect/findings") == [{"component": "gpu", "confidence": 0.9}]
        assert st.get_json("annotations") == {"a": 2}
        assert st.result_keys() == ["annotations", "detect/anomalies", "detect/findings"]
    with TraceStore.open(path, "r+") as st:
        st.put_table("detect/anomalies", {"x": np.arange(4)})
        assert st.get_table("detect/anomalies")["x"].tolist() == [0, 1, 2, 3]
        assert st.delete("annotations") and not st.delete("annotations")
        assert st.get_json("annotations") is None
        with pytest.raises(ValueError):
            st.put_json("../escape", 1)
    # A replacement interrupted after the old value was moved aside still reads the old value.
    with h5py.File(path, "r+") as f:
        f.move("results/detect/findings", "results/detect/findings~old")
        f["results/detect"].create_dataset("findings~new", data='["half"]', dtype=h5py.string_dtype())
    with TraceStore.open(path, "r+") as st:
        assert st.get_json("detect/findings") == [{"component": "gpu", "confidence": 0.9}]
        st.put_json("detect/findings", [])
        assert st.get_json("detect/findings") == []
        assert st.result_keys() == ["detect/anomalies", "detect/findings"]


def test_plain_h5py_reading(store3):
    """The documented layout is enough to read a store without KAT."""
    path, rts = store3
    with h5py.File(path, "r") as f:
        assert f.attrs["kat_store"] == "KAT TraceStore"
        names = f["strings"].asstr()[:]
        off, cnt = int(f["tracks/row_offset"][0]), int(f["tracks/row_count"][0])
        start = f["events/start_ns"][off : off + cnt]
        name = names[f["events/name"][off : off + cnt]]
        assert (np.diff(start) >= 0).all()
        assert list(name) == expected_track(rts[0], 0)["name"]
        assert json.loads(f["ranks"].asstr()[()])[0]["rank"] == 2


def test_open_is_fast_with_many_names(tmp_path):
    n = 20_000
    c = empty_columns(n)
    c["start_ns"][:] = T0 + np.arange(n) * 1000
    c["end_ns"][:] = c["start_ns"] + 500
    c["name"][:] = np.arange(n)
    c["track"] = np.zeros(n, np.int32)
    strings = [f"void kernel_{i}<float, {i % 7}>(float*, int)" for i in range(100_000)]
    rt = RankTrace(0, "names.json", "kineto", [TrackInfo(TrackKind.GPU_STREAM, 0, 7, 1, 7)], c, strings)
    path = tmp_path / "names.kat.h5"
    with TraceStore.create(path, "names") as w:
        w.add(rt)
    t = time.perf_counter()
    st = TraceStore.open(path)
    open_s = time.perf_counter() - t
    assert st.string(99_999) == strings[99_999]
    t = time.perf_counter()
    assert st.strings == strings
    load_s = time.perf_counter() - t
    st.close()
    print(f"open {open_s * 1e3:.1f} ms, 100k-name table load {load_s * 1e3:.1f} ms")
    assert open_s < 0.2
