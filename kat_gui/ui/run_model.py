"""The headless model of one opened run: its store, lanes, detection results and topology. No Qt here.

Views (timeline, tables, topology) read from this object; tests and scripts can drive it exactly as the
GUI does. Everything per-event stays columnar: lanes hold arrays of track ids, anomalies are numpy columns.
"""

from __future__ import annotations

import html
import os
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from kat_gui.annotations import Annotation, AnnotationModel, load_annotations
from kat_gui.errors import KatInputError
from kat_gui.events import COMPONENTS, EventKind, TrackKind
from kat_gui.ui.kernel_classes import classify_strings

ROLE_ROOT = 1
ROLE_SYMPTOM = 2
HIGHLIGHT_MAX = 8  # ranks of the top finding the window highlights (RunModel.culprit_ranks)

ANOMALY_COLUMNS = (
    "track",
    "index",
    "rank",
    "device",
    "stream",
    "name",
    "start_ns",
    "end_ns",
    "role",
    "component",
    "score",
    "finding",
)


@dataclass
class Lane:
    """One row of the timeline: a whole rank (all its GPU streams drawn together), one stream, or host work."""

    label: str
    rank: int
    tracks: np.ndarray  # int32 store track ids drawn in this row
    kind: str  # "rank" | "stream" | "host"
    tooltip: str = ""


def _present(values: np.ndarray) -> list[int]:
    """The distinct non-negative values, ascending: a count per value, no sort (np.unique of a 1,024-rank
    run's 480,000 anomalies took ~10 ms)."""
    v = np.asarray(values).astype(np.int64)
    v = v[v >= 0]
    return np.flatnonzero(np.bincount(v)).tolist() if len(v) else []


@dataclass
class RankInfo:
    rank: int
    gpu_name: str = ""
    gpu_tracks: list[int] = field(default_factory=list)
    host_tracks: list[int] = field(default_factory=list)


def _attr(obj: Any, *names: str, default: Any = None) -> Any:
    for n in names:
        if isinstance(obj, dict) and n in obj:
            return obj[n]
        if hasattr(obj, n):
            return getattr(obj, n)
    return default


def gpu_name_of(meta: dict) -> str:
    """The GPU model a rank ran on, from the store's per-rank metadata (Kineto ``deviceProperties``...)."""
    if not isinstance(meta, dict):
        return ""
    for key in ("gpu_name", "gpu", "device_name"):
        if isinstance(meta.get(key), str) and meta[key]:
            return meta[key]
    inner = meta.get("meta") if isinstance(meta.get("meta"), dict) else meta
    for key in ("deviceProperties", "gpus"):
        devs = inner.get(key)
        if isinstance(devs, list) and devs and isinstance(devs[0], dict) and devs[0].get("name"):
            return str(devs[0]["name"])
    return ""


def short_gpu_name(name: str) -> str:
    """``NVIDIA H100 80GB HBM3`` -> ``H100 80GB HBM3``; ``Tesla V100-SXM2-32GB`` -> ``V100-SXM2-32GB``."""
    for prefix in ("NVIDIA ", "Tesla ", "AMD Instinct ", "AMD "):
        name = name.removeprefix(prefix)
    return name


def fmt_ns(ns: float) -> str:
    """A duration with a readable unit (ns, µs, ms, s)."""
    a = abs(ns)
    if a >= 1e9:
        return f"{ns / 1e9:.3f} s"
    if a >= 1e6:
        return f"{ns / 1e6:.3f} ms"
    if a >= 1e3:
        return f"{ns / 1e3:.2f} µs"
    return f"{ns:.0f} ns"


def esc(text: Any) -> str:
    """Trace strings are untrusted: escape anything that ends up in rich text."""
    return html.escape(str(text), quote=True)


class RunModel:
    """One opened run. ``path`` is a ``.kat.h5`` store with (optionally) detection results inside."""

    def __init__(self, path: str | Path):
        from kat_gui.store import TraceStore

        self.path = Path(path)
        self._reads: ThreadPoolExecutor | None = None  # this run's store thread (``submit``)
        self._closed = False
        # Values computed from the loaded results (``cached``), most on the loader's worker (``preload``,
        # ``scale.prepare_overview``); emptied whenever the detection results are (re)loaded.
        self.derived: dict[str, Any] = {}
        self._ro_notes: list[Annotation] | None = None
        # Held read-only either way, so other KAT processes (a terminal's `kat detect`, a second window) can
        # use the run meanwhile. "r+" when the file is writable: each note is then saved in a short write
        # under the store's write lock; a read-only file shows its notes only.
        self.store = TraceStore.open(self.path, "r+" if os.access(self.path, os.W_OK) else "r")
        self.name: str = str(self.store.name)
        self.t0_ns, self.t1_ns = (int(x) for x in self.store.time_span())
        self.tracks = list(self.store.tracks)
        self._strings = None
        self._name_class: np.ndarray | None = None
        self.ranks: dict[int, RankInfo] = {}
        metas = {
            int(_attr(m, "rank", default=-1)): m
            for m in (self.store.ranks or [])
            if _attr(m, "rank") is not None
        }
        for tid, tr in enumerate(self.tracks):
            track_id = int(_attr(tr, "id", "track", default=tid))
            rank = int(_attr(tr, "rank", default=0))
            info = self.ranks.setdefault(rank, RankInfo(rank, gpu_name_of(metas.get(rank, {}))))
            if int(_attr(tr, "kind", default=0)) == TrackKind.GPU_STREAM:
                info.gpu_tracks.append(track_id)
            else:
                info.host_tracks.append(track_id)
        self.track_by_id = {int(_attr(tr, "id", "track", default=i)): tr for i, tr in enumerate(self.tracks)}
        self.findings: list[dict] = []
        self.detect_meta: dict = {}
        self.anomalies: dict[str, np.ndarray] = {c: np.zeros(0, np.int64) for c in ANOMALY_COLUMNS}
        self.has_detection = False
        self._collectives: dict | None = None
        self._rank_step: Any = None  # detect/rank_step + detect/steps, read once (False: none stored)
        self._load_detection()
        self.graph = self._load_topology()
        self.notes: AnnotationModel | None = None
        self.notes_error = ""
        try:
            if getattr(self.store, "mode", "r") == "r+":
                self.notes = AnnotationModel(self.store)
            else:
                self.notes_error = "the store is read-only: notes cannot be saved"
        except (KatInputError, ValueError) as exc:
            self.notes_error = str(exc)

    @property
    def read_only_notes(self) -> list[Annotation]:
        """Notes to show when ``notes`` is None (a read-only store)."""
        if self.notes is not None:
            return self.notes.items()
        if self._ro_notes is None:  # read once: this process cannot change a read-only store's notes
            try:
                self._ro_notes = load_annotations(self.store)
            except (KeyError, OSError, ValueError, TypeError):
                self._ro_notes = []
        return self._ro_notes

    # ------------------------------------------------------------------ loading

    def cached(self, key: str, compute: Callable[[], Any]) -> Any:
        """``compute()`` once per loaded results (kept in ``derived``)."""
        if key not in self.derived:
            self.derived[key] = compute()
        return self.derived[key]

    def _load_detection(self) -> None:
        self.derived = {}
        try:
            found = self.store.get_json("detect/findings")
        except (KeyError, OSError, ValueError):
            found = None
        if isinstance(found, dict):
            self.has_detection = True
            self.findings = [f for f in found.get("findings", []) if isinstance(f, dict)]
        try:
            self.detect_meta = self.store.get_json("detect/meta") or {}
        except (KeyError, OSError, ValueError):
            self.detect_meta = {}
        try:
            table = self.store.get_table("detect/anomalies")
        except (KeyError, OSError, ValueError):
            table = None
        if table:
            n = len(next(iter(table.values())))
            cols = {}
            for c in ANOMALY_COLUMNS:
                cols[c] = np.asarray(table[c]) if c in table else np.full(n, -1, np.int64)
            self.anomalies = cols

    def rank_step(self):
        """The heatmap's stored [rank, step] signals (``kat_gui.detect.result.RankStep``: slowdown and wait
        share per rank and step, the steps' spans), read once; None for a store analysed before they were
        stored, never analysed, or damaged there."""
        if self._rank_step is None:
            from kat_gui.detect.result import load_rank_step

            try:
                self._rank_step = load_rank_step(self.store) or False
            except (KeyError, OSError, ValueError):
                self._rank_step = False
        return self._rank_step or None

    def _load_topology(self):
        try:
            obj = self.store.get_json("topology")
        except (KeyError, OSError, ValueError):
            obj = None
        if not obj:
            return None
        try:
            from kat_gui import topology

            return topology.from_json(obj)
        except Exception:
            return None

    def preload(self) -> RunModel:
        """Read now what the views would otherwise read from the file on first use — the string table and
        the kernel colour classes, the collective instances, the rank x step signals, the anomaly table's
        default order, a read-only store's notes — so that a model
        built on a worker thread leaves the GUI thread nothing to read. Returns the model."""
        _ = self.name_class
        self.collective_instance(0, 0)
        self.rank_step()
        self.anomalies_by_score()
        self.anomaly_seconds()
        self.anomalies_by_track()
        self.anomaly_presence()
        self.anomaly_start_bins()
        _ = self.read_only_notes
        return self

    def anomaly_seconds(self) -> tuple[np.ndarray, np.ndarray]:
        """(start, duration) of every anomaly in seconds since the run's start (float64)."""

        def compute():
            a = self.anomalies
            return (a["start_ns"] - self.t0_ns) / 1e9, (a["end_ns"] - a["start_ns"]) / 1e9

        return self.cached("anomaly_seconds", compute)

    def anomalies_by_track(self) -> tuple[np.ndarray, np.ndarray]:
        """(rows, bounds): the anomaly table's rows grouped by track (table order within one), track t's are
        ``rows[bounds[t]:bounds[t + 1]]`` (rows naming no track of the run left out), so a lane set gathers
        its marks without a pass over the table."""

        def compute():
            n_tracks = len(self.tracks)
            track = np.asarray(self.anomalies["track"]).astype(np.int64)
            rows = np.flatnonzero((track >= 0) & (track < n_tracks))
            # 16-bit keys when they fit: numpy's stable sort of them is a radix sort
            key = track[rows].astype(np.int16 if n_tracks < np.iinfo(np.int16).max else np.int64)
            rows = rows[np.argsort(key, kind="stable")]
            return rows, np.searchsorted(track[rows], np.arange(n_tracks + 1))

        return self.cached("anomalies_by_track", compute)

    START_BINS = 8192  # anomaly_start_bins: several bins per pixel of any whole-run strip

    def anomaly_start_bins(self) -> dict[int, np.ndarray]:
        """role -> whether any anomaly of that role starts in each of ``START_BINS`` equal bins over the run
        (bool): the whole-run strip's ticks without a pass over the table at paint."""

        def compute():
            x = self.anomaly_seconds()[0]
            span = max((self.t1_ns - self.t0_ns) / 1e9, 1e-9)  # as timeline_paint.span_s
            b = np.clip((x / span * self.START_BINS).astype(np.int64), 0, self.START_BINS - 1)
            role = self.anomalies["role"]
            return {
                int(r): np.bincount(b[role == r], minlength=self.START_BINS) > 0
                for r in (ROLE_ROOT, ROLE_SYMPTOM)
            }

        return self.cached("anomaly_start_bins", compute)

    def anomaly_presence(self) -> tuple[list[int], list[int]]:
        """(ranks, components) that have anomalies, ascending: a count per value, no sort."""
        return self.cached(
            "anomaly_presence", lambda: tuple(_present(self.anomalies[c]) for c in ("rank", "component"))
        )

    def anomalies_by_score(self) -> np.ndarray:
        """Rows of the anomaly table, highest score first (ties in table order): the tables' default order
        (an argsort of every row: 80 ms for a 1,024-rank run's 480,000)."""

        def order() -> np.ndarray:
            rows = np.argsort(-self.anomalies["score"].astype(float), kind="stable")
            rows.flags.writeable = False  # shared: the tables take it as their rows
            return rows

        return self.cached("anomalies_by_score", order)

    def submit(self, fn: Callable[..., Any], *args: Any) -> Future:
        """Run ``fn(*args)`` on this run's store thread and return its Future. One thread per run: reads of
        the store (its window caches are not thread-safe) never overlap, and the GUI thread never waits on
        the file. Raises RuntimeError once the model is closed."""
        if self._closed:
            raise RuntimeError(f"{self.path}: the run is closed")
        if self._reads is None:
            self._reads = ThreadPoolExecutor(1, thread_name_prefix=f"kat-store-{self.path.name}")
        return self._reads.submit(fn, *args)

    def close(self) -> None:
        """Close the store after its thread has finished the read it is doing (queued reads are dropped)."""
        self._closed = True
        reads, self._reads = self._reads, None
        if reads is not None:
            reads.shutdown(wait=True, cancel_futures=True)
        try:
            self.store.close()
        except Exception:
            pass

    # ------------------------------------------------------------------ changes by other processes

    def changed(self) -> bool:
        """Whether another process wrote the run (results, notes) or replaced it (a new ingest) since this
        model read it. A ``stat``: cheap enough for the GUI thread to poll."""
        try:
            return self.store.changed()
        except Exception:
            return False

    def replaced(self) -> bool:
        """Whether the path now holds another store (a re-ingest) or none."""
        try:
            return self.store.replaced()
        except Exception:
            return False

    def mark_seen(self) -> None:
        """Stop reporting the current change (the user dismissed the offer to reload)."""
        try:
            self.store.mark_seen()
        except Exception:
            pass

    # ------------------------------------------------------------------ strings and classes

    def string(self, sid: int) -> str:
        if sid is None or sid < 0:
            return ""
        try:
            return str(self.store.string(int(sid)))
        except Exception:
            return f"#{sid}"

    @property
    def name_class(self) -> np.ndarray:
        """uint8 colour class per string id (computed once per run)."""
        if self._name_class is None:
            self._name_class = classify_strings(list(self.store.strings))
        return self._name_class

    # ------------------------------------------------------------------ lanes

    def rank_label(self, rank: int) -> str:
        info = self.ranks.get(rank)
        gpu = f" · {short_gpu_name(info.gpu_name)}" if info and info.gpu_name else ""
        return f"rank {rank}{gpu}"

    def lanes(
        self, expanded: set[int] | None = None, rank_filter: set[int] | None = None, host_lanes: bool = True
    ) -> list[Lane]:
        """The timeline rows: per rank one row of all its GPU streams (or one row per stream when the rank is
        in ``expanded``), followed by one host row of launches when the rank has host threads."""
        expanded = expanded or set()
        out: list[Lane] = []
        for rank in sorted(self.ranks):
            if rank_filter is not None and rank not in rank_filter:
                continue
            info = self.ranks[rank]
            gpu = sorted(info.gpu_tracks)
            if rank in expanded and len(gpu) > 1:
                for t in gpu:
                    tr = self.track_by_id[t]
                    stream = int(_attr(tr, "stream", default=-1))
                    device = int(_attr(tr, "device", default=-1))
                    out.append(
                        Lane(
                            f"  r{rank} GPU{device} s{stream}",
                            rank,
                            np.array([t], np.int32),
                            "stream",
                            f"rank {rank} · GPU {device} · stream {stream}",
                        )
                    )
            elif gpu:
                out.append(
                    Lane(
                        self.rank_label(rank),
                        rank,
                        np.array(gpu, np.int32),
                        "rank",
                        f"{self.rank_label(rank)} · {len(gpu)} stream(s)",
                    )
                )
            if host_lanes and info.host_tracks and (rank in expanded or not gpu):
                out.append(
                    Lane(
                        f"  r{rank} host",
                        rank,
                        np.array(sorted(info.host_tracks), np.int32),
                        "host",
                        f"rank {rank} host threads (launches, annotations)",
                    )
                )
        return out

    # ------------------------------------------------------------------ queries

    def window(self, tracks: np.ndarray, t0_ns: int, t1_ns: int, resolution_ns: int) -> dict:
        return self.store.window([int(t) for t in tracks], int(t0_ns), int(t1_ns), max(1, int(resolution_ns)))

    def event(self, track: int, index: int) -> dict:
        ev = self.store.event(int(track), int(index))
        if not isinstance(ev, dict):
            ev = {k: getattr(ev, k) for k in dir(ev) if not k.startswith("_")}
        return ev

    def event_name(self, ev: dict) -> str:
        name = ev.get("name")
        if isinstance(name, (int, np.integer)):
            return self.string(int(name))
        return str(name or "")

    def track_text(self, track: int) -> str:
        tr = self.track_by_id.get(int(track))
        if tr is None:
            return f"track {track}"
        rank = int(_attr(tr, "rank", default=-1))
        if int(_attr(tr, "kind", default=0)) == TrackKind.GPU_STREAM:
            return (
                f"rank {rank} · GPU {int(_attr(tr, 'device', default=-1))} · "
                f"stream {int(_attr(tr, 'stream', default=-1))}"
            )
        return f"rank {rank} · host thread {int(_attr(tr, 'tid', default=-1))}"

    def rank_of_track(self, track: int) -> int:
        tr = self.track_by_id.get(int(track))
        return int(_attr(tr, "rank", default=-1)) if tr is not None else -1

    def collective_instance(self, start_ns: int, end_ns: int) -> tuple[int, int] | None:
        """(first_start_ns, end_ns) of the detector's collective instance holding this kernel, if any.

        Uses ``detect/collectives`` (one row per instance: first arrival, common end). A kernel belongs to an
        instance when it starts inside it and ends within 1% (or 20 µs) of the instance's end.
        """
        if self._collectives is None:
            try:
                t = self.store.get_table("detect/collectives")
            except (KeyError, OSError, ValueError):
                t = None
            self._collectives = t if t and "first_start_ns" in t and "end_ns" in t else {}
        c = self._collectives
        if not c:
            return None
        fs, en = c["first_start_ns"], c["end_ns"]
        tol = np.maximum(20_000, (en - fs) // 100)
        hit = np.flatnonzero((fs <= start_ns) & (start_ns <= en) & (np.abs(en - end_ns) <= tol))
        if not len(hit):
            return None
        i = int(hit[np.argmin(np.abs(en[hit] - end_ns))])
        return int(fs[i]), int(en[i])

    def same_kernel_on_peers(self, track: int, index: int, window_ns: int | None = None) -> list[dict]:
        """The same kernel on every other rank, side by side with this one.

        Collectives are matched through the detector's collective instances (ranks enter at different times
        but end together, so the instance window holds every rank's kernel); other kernels by the same name
        with the nearest start, assuming the ranks run in lock-step (tensor/pipeline parallel).
        Each row: rank, track, index, start_ns, dur_ns, delta_ns (vs this one), self, matched.
        """
        ev = self.event(track, index)
        name_id = ev.get("name_id", ev.get("name"))
        start = int(ev["start_ns"])
        end = int(ev["end_ns"])
        dur = end - start
        inst = self.collective_instance(start, end)
        if inst is not None:
            q0, q1, how = inst[0] - 1, inst[1] + 1, "collective instance"
        else:
            span = window_ns or max(2_000_000, 20 * dur)
            q0, q1, how = start - span, start + span, "nearest start"
        rank0 = self.rank_of_track(track)
        rows = [
            {
                "rank": rank0,
                "track": int(track),
                "index": int(index),
                "start_ns": start,
                "dur_ns": dur,
                "delta_ns": 0,
                "self": True,
                "matched": how,
            }
        ]
        if not isinstance(name_id, (int, np.integer)):
            return rows
        for rank in sorted(self.ranks):
            if rank == rank0 or not self.ranks[rank].gpu_tracks:
                continue
            win = self.window(np.array(self.ranks[rank].gpu_tracks), q0, q1, 1)
            best = None
            for tid, w in win.items():
                sel = np.flatnonzero((np.asarray(w.name) == name_id) & (np.asarray(w.index) >= 0))
                if len(sel) == 0:
                    continue
                starts = np.asarray(w.start_ns)[sel]
                ends = np.asarray(w.end_ns)[sel]
                dist = np.abs(ends - inst[1]) if inst is not None else np.abs(starts - start)
                j = int(np.argmin(dist))
                cand = (
                    int(dist[j]),
                    int(tid),
                    int(np.asarray(w.index)[sel[j]]),
                    int(starts[j]),
                    int(ends[j]),
                )
                if best is None or cand[0] < best[0]:
                    best = cand
            if best is not None:
                _, tid, i, s, e = best
                rows.append(
                    {
                        "rank": rank,
                        "track": tid,
                        "index": i,
                        "start_ns": s,
                        "dur_ns": e - s,
                        "delta_ns": (e - s) - dur,
                        "self": False,
                        "matched": how,
                    }
                )
        return rows

    # ------------------------------------------------------------------ detection helpers

    def anomaly_count(self) -> int:
        return len(self.anomalies["start_ns"])

    def component_name(self, comp: int) -> str:
        return COMPONENTS[comp] if 0 <= comp < len(COMPONENTS) else "unknown"

    def anomalies_of(self, track: int, index: int) -> np.ndarray:
        a = self.anomalies
        return np.flatnonzero((a["track"] == track) & (a["index"] == index))

    def culprit_ranks(self) -> list[int]:
        """Ranks named by the top finding (what the window highlights first): at most ``HIGHLIGHT_MAX``, in
        the finding's order (a fabric-wide finding can name every rank; highlighting them all shows nothing)."""
        if not self.findings:
            return []
        return [int(r) for r in self.findings[0].get("ranks", [])[:HIGHLIGHT_MAX]]

    def finding_title(self, f: dict) -> str:
        comp = f.get("component", "?")
        cid = f.get("component_id", "")
        ranks = ", ".join(str(r) for r in f.get("ranks", []))
        conf = float(f.get("confidence", 0.0))
        return f"{cid or comp} ({comp}) · rank {ranks} · confidence {conf:.2f}"

    def summary_line(self) -> str:
        span = fmt_ns(self.t1_ns - self.t0_ns)
        ev = int(getattr(self.store, "n_events", 0))
        det = (
            f"{len(self.findings)} finding(s), {self.anomaly_count():,} anomalous kernels"
            if self.has_detection
            else "not analysed"
        )
        return f"{self.name} · {len(self.ranks)} ranks · {ev:,} events · span {span} · {det}"

    def is_kernel_kind(self, kind: int) -> bool:
        return kind in (EventKind.KERNEL, EventKind.MEMCPY, EventKind.MEMSET)
