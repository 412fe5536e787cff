"""What comparison reads from one run: GPU work per kernel with its step, its rank and the part of its
duration that was its own work (collective kernels lose the time they spent waiting for the last rank).

Assumptions, stated because the diff is only as good as them:

- Steps come from detection's alignment (``ProfilerStep#N`` annotations by launch time, else a once-per-step
  marker kernel); when neither exists, the k-th collective on each rank opens segment k ("collective order"):
  ranks of one SPMD job run the same collectives in the same order.
- A collective kernel's *own* time is its duration minus its wait (the last member's start minus its own
  start, clipped to the duration). The wait is a symptom of someone else's lateness, so the diff reports it
  apart (``rank_wait``) instead of letting a waiting all-reduce look like a slow one.
- Kernel names are compared as strings, so two stores with different string tables line up.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from kat_gui.detect.align import assign_steps, launch_times, match_collectives
from kat_gui.detect.classify import COLLECTIVE
from kat_gui.detect.frame import load_frame
from kat_gui.detect.stats import count_before_by_rank
from kat_gui.errors import KatInputError
from kat_gui.events import CopyKind, EventKind
from kat_gui.progress import Progress


@dataclass
class RunData:
    """One run, reduced to what the diff needs (columnar; one row per GPU kernel/memcpy/memset).

    ``gpu``: ``name`` (index into ``names``), ``cls`` (kernel class code, ``detect.classify.CLASS_NAMES``),
    ``rank``, ``step`` (-1 outside every step), ``dur_ns`` (own duration), ``wait_ns`` (collective wait, 0
    otherwise), ``start_ns`` (the store's clock, as the timeline shows it), ``track``, ``index`` (the event in
    the store),
    ``size`` (the instance's recorded message size, -1 when unknown: bytes of a host-to-device copy, ``In msg
    nelems`` of a collective; what the workload model of :mod:`kat_gui.compare.workload` regresses on).
    ``meta["clock_offsets_ns"]``: rank -> offset of its host clock (subtract it to compare times across
    hosts; from detection's collective alignment). ``step_rank``: per (rank, step) ``rank``, ``step``, ``start_ns``,
    ``end_ns`` (GPU span of the step on that rank), ``busy_ns`` (sum of own durations), ``wait_ns``.
    """

    name: str
    path: str
    names: list[str]
    gpu: dict[str, np.ndarray]
    step_rank: dict[str, np.ndarray]
    ranks: np.ndarray
    step_method: str
    span_ns: tuple[int, int]
    n_gpus: int
    meta: dict = field(default_factory=dict)

    @property
    def steps(self) -> np.ndarray:
        """Step numbers present (sorted)."""
        return np.unique(self.step_rank["step"])

    def offset_of(self, rank: np.ndarray) -> np.ndarray:
        """Clock offset (ns) of each rank's host; subtract it to put times of different hosts on one clock."""
        offs = self.meta.get("clock_offsets_ns") or {}
        if not offs or not len(rank):
            return np.zeros(len(rank), dtype=np.int64)
        lut = np.zeros(int(max(int(np.max(rank)), max(offs))) + 1, dtype=np.int64)
        for r, off in offs.items():
            lut[int(r)] = off
        return lut[rank]

    def step_at(self, t_ns: int) -> int:
        """The step whose GPU span (earliest start over ranks) is the last one starting at or before ``t_ns``."""
        sr = self.step_rank
        if not len(sr["step"]):
            return 0
        steps = self.steps
        first = np.full(len(steps), np.iinfo(np.int64).max)
        np.minimum.at(first, np.searchsorted(steps, sr["step"]), sr["start_ns"])
        i = int(np.searchsorted(first, t_ns, side="right")) - 1
        return int(steps[max(i, 0)])


def load_run(path_or_store: str | os.PathLike | object, progress: Progress | None = None) -> RunData:
    """Read a ``.kat.h5`` store (a path, or an open TraceStore) into :class:`RunData`.

    Raises KatInputError for a missing file, a trace file instead of a store, or a store without GPU work.
    """
    from kat_gui.store import TraceStore

    own = not hasattr(path_or_store, "events")
    if own:
        p = Path(path_or_store)
        if not p.exists():
            raise KatInputError(p, "no such file")
        if not p.name.endswith(".h5") and p.suffix.lower() in (".json", ".gz", ".sqlite", ".csv", ".jsonl"):
            raise KatInputError(
                p, "a trace file, not a store; run `kat ingest` first and compare the .kat.h5"
            )
        if p.is_dir():
            raise KatInputError(
                p, "a folder, not a store; run `kat ingest` on it first and compare the .kat.h5"
            )
    store = TraceStore.open(path_or_store) if own else path_or_store
    try:
        if progress:
            progress(0.0, f"reading {store.name}")
        fr = load_frame(store)
        if not fr.n_gpu:
            raise KatInputError(store.path, "no GPU kernels in this store: nothing to compare")
        if progress:
            progress(0.5, "aligning steps")
        g = fr.gpu
        steps = assign_steps(fr, launch_times(fr))
        step = steps.step
        method = steps.method
        is_coll = (g["cls"] == COLLECTIVE) & (g["kind"] == EventKind.KERNEL)
        if method == "none" and is_coll.any():
            step = count_before_by_rank(g["rank"], g["start_ns"], is_coll)
            method = "collective_order"
        dur = (g["end_ns"] - g["start_ns"]).astype(np.int64)
        wait = np.zeros(fr.n_gpu, dtype=np.int64)
        start_ns = g["start_ns"]
        end_ns = g["end_ns"]
        offsets: dict[int, int] = {}  # rank -> ns to subtract to reach the lowest rank's clock
        if is_coll.any():
            co = match_collectives(fr, steps)
            w = np.clip(co.wait_ns, 0, None)
            # Point-to-point kernels: the members of one matched instance can be several send/recv pairs
            # (no process group recorded), and their start clocks can be on different hosts, so the last
            # start is no partner's arrival. Both ends of a pair finish together, so the later starter's
            # duration is the transfer: own time = the instance's shortest duration (clock-free).
            p2p_name = np.array(["sendrecv" in s.lower() for s in fr.strings], dtype=bool)
            p2p_coll = np.array([s.lower() in ("send", "recv") for s in fr.strings], dtype=bool)
            nm_c, cl_c = g["name"][co.row], g["coll"][co.row]
            p2p = p2p_name[nm_c] | ((cl_c >= 0) & p2p_coll[np.maximum(cl_c, 0)])
            w = np.where(p2p, dur[co.row] - co.transfer_ns[co.inst], w)
            wait[co.row] = np.clip(np.minimum(w, dur[co.row]), 0, None)
            # Hosts' clocks differ (detection estimates the offsets from collective ends); step spans across
            # ranks and last-activity times must be on one clock.
            shift = g["start_ns"][co.row] - co.start_ns
            for r in np.unique(co.rank).tolist():
                off = int(np.median(shift[co.rank == r]))
                if off:
                    offsets[int(r)] = off
        own_dur = dur - wait
        # The recorded size of what an instance moved: input copies grow with the step's tokens, collective
        # messages with tokens x hidden. Only sizes the trace records; durations never stand in for them.
        size = np.full(fr.n_gpu, -1, dtype=np.int64)
        htod = (g["kind"] == EventKind.MEMCPY) & (g["copy_kind"] == CopyKind.HTOD) & (g["bytes"] > 0)
        size[htod] = g["bytes"][htod]
        msg = is_coll & (g["msg_nelems"] > 0)
        size[msg] = g["msg_nelems"][msg]
        gpu = {
            "name": g["name"].astype(np.int32),
            "cls": g["cls"].astype(np.uint8),
            "rank": g["rank"].astype(np.int32),
            "step": step.astype(np.int64),
            "dur_ns": own_dur,
            "wait_ns": wait,
            "start_ns": start_ns,
            "track": g["track"],
            "index": g["index"],
            "size": size,
        }
        step_rank = _step_rank_table(gpu, end_ns)
        n_gpus = len(
            np.unique((g["rank"].astype(np.int64) << 32) | (g["device"].astype(np.int64) & 0xFFFFFFFF))
        )
        meta = {"step_count": steps.count, "marker": steps.marker, "clock_offsets_ns": offsets}
        return RunData(
            name=store.name,
            path=str(store.path),
            names=fr.strings,
            gpu=gpu,
            step_rank=step_rank,
            ranks=fr.ranks.astype(np.int32),
            step_method=method,
            span_ns=tuple(int(x) for x in store.time_span()),
            n_gpus=int(n_gpus),
            meta=meta,
        )
    finally:
        if own:
            store.close()


def _step_rank_table(gpu: dict[str, np.ndarray], end_ns: np.ndarray) -> dict[str, np.ndarray]:
    ok = gpu["step"] >= 0
    rank, step = gpu["rank"][ok].astype(np.int64), gpu["step"][ok]
    key = (rank << 40) | (step & ((1 << 40) - 1))
    uniq, inv = np.unique(key, return_inverse=True)
    k = len(uniq)
    start = np.full(k, np.iinfo(np.int64).max)
    end = np.full(k, np.iinfo(np.int64).min)
    np.minimum.at(start, inv, gpu["start_ns"][ok])
    np.maximum.at(end, inv, end_ns[ok])
    busy = np.bincount(inv, weights=gpu["dur_ns"][ok], minlength=k)
    wait = np.bincount(inv, weights=gpu["wait_ns"][ok], minlength=k)
    return {
        "rank": (uniq >> 40).astype(np.int32),
        "step": (uniq & ((1 << 40) - 1)).astype(np.int64),
        "start_ns": start,
        "end_ns": end,
        "busy_ns": busy,
        "wait_ns": wait,
    }
