"""The samples of a run-vs-run diff: one flat table of (row, side, value) over both runs, which the tests of
:mod:`kat_gui.compare.significance` consume with a few sorts whatever the number of rows.

Rows (``group`` ids, numbered by :class:`GroupLayout`), one sample per kernel instance unless said:

- ``kernel`` per kernel name, ``kernel_rank`` per (name, rank), ``class`` per kernel class, ``class_rank``
  per (class, rank): the own duration of every instance in the compared steps;
- ``rank_busy``, ``rank_idle``, ``rank_wait``: per rank, one sample per step: GPU busy time (sum of own
  durations), idle time (the step's GPU span minus busy and wait) and collective wait;
- ``step_time``: one sample per step, the latest end minus the earliest start over ranks (on one clock).

Each sample has two values: ``value_ns``, what the reader sees (raw ns), and ``test_value``, what the tests
compare (kernel durations as workload-adjusted ratios, busy/idle time shifted by the step's common mode; see
:mod:`kat_gui.compare.workload`). Degraded rank r is compared with the healthy rank paired with it
(:class:`kat_gui.compare.alignment.RankPairing`); side 0 is the healthy run, side 1 the degraded one.

Assumptions: kernel names are matched as strings (the two stores have different string tables); a kernel's
class is the class of its name's first instance in a run; steps are the compared ones only (from the
anchors on, see :mod:`kat_gui.compare.alignment`).
"""

from __future__ import annotations

import bisect
import itertools
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

from kat_gui.compare.alignment import RankPairing, StepAlignment, positions
from kat_gui.compare.result import KINDS, RANK_METRIC_KINDS
from kat_gui.compare.run import RunData
from kat_gui.compare.workload import WorkloadModel, common_mode_shift, lower_median_by, program_groups
from kat_gui.detect.classify import CLASS_NAMES
from kat_gui.detect.stats import segments

# ------------------------------------------------------------------------------------------ kernel samples


class KernelSamples(NamedTuple):
    """The kernels of one run in the compared steps (one entry per instance, int64 unless said)."""

    name_id: np.ndarray  # index into KernelVocabulary.names (shared by both runs)
    cls: np.ndarray  # kernel class code (CLASS_NAMES)
    rank: np.ndarray
    dur_ns: np.ndarray  # own duration (collective wait excluded)
    occurrence: np.ndarray  # k: the k-th instance of its name in its step on its rank (see occurrence())
    position: np.ndarray  # aligned step position (0 = the anchor step)
    size: np.ndarray  # recorded size (copy bytes, collective message elements); -1 where unknown


@dataclass
class KernelVocabulary:
    """Kernel names of both runs as one vocabulary (string ids differ between stores), ids in order of first
    sight (healthy run first): ``ids`` name -> id, ``names`` id -> name, ``cls`` id -> class code."""

    ids: dict[str, int] = field(default_factory=dict)
    names: list[str] = field(default_factory=list)
    cls: list[int] = field(default_factory=list)

    def id_of(self, name: str, cls: int) -> int:
        """The id of ``name``, added with class code ``cls`` when new."""
        if name not in self.ids:
            self.ids[name] = len(self.ids)
            self.names.append(name)
            self.cls.append(cls)
        return self.ids[name]


def occurrence(rank: np.ndarray, pos: np.ndarray, name: np.ndarray, start: np.ndarray) -> np.ndarray:
    """k for the k-th instance of its kernel name in its step on its rank: the same op (layer, shape) in
    both runs of an SPMD program, so (name, k) has one mode where a name alone mixes several shapes."""
    if not len(rank):
        return np.zeros(0, np.int64)
    key = (rank << 44) | ((pos & 0xFFFFF) << 24) | (name & 0xFFFFFF)
    order = np.lexsort((start, key))
    first, seg_len = segments(key[order])
    occ = np.empty(len(rank), dtype=np.int64)
    occ[order] = np.arange(len(order)) - np.repeat(first, seg_len)
    return occ


def kernel_samples(
    runs: tuple[RunData, RunData], steps: StepAlignment
) -> tuple[KernelVocabulary, list[KernelSamples]]:
    """The kernels of the compared steps of each run (healthy, degraded), with names in one vocabulary."""
    vocab = KernelVocabulary()
    out: list[KernelSamples] = []
    for side, run in enumerate(runs):
        g = run.gpu
        pos = positions(run, steps.anchor_step(side), g["step"])
        keep = (pos >= 0) & (pos < steps.steps_compared)
        uid, inv = np.unique(g["name"][keep], return_inverse=True)
        cls_of = np.zeros(len(uid), dtype=np.int64)
        cls_of[inv] = g["cls"][keep]
        lut = np.empty(len(uid), dtype=np.int64)
        for i, sid in enumerate(uid.tolist()):
            lut[i] = vocab.id_of(run.names[sid], int(cls_of[i]))
        name_id = lut[inv]
        rank = g["rank"][keep].astype(np.int64)
        out.append(
            KernelSamples(
                name_id=name_id,
                cls=g["cls"][keep].astype(np.int64),
                rank=rank,
                dur_ns=g["dur_ns"][keep],
                occurrence=occurrence(rank, pos[keep], name_id, g["start_ns"][keep]),
                position=pos[keep],
                size=g["size"][keep] if "size" in g else np.full(int(keep.sum()), -1, np.int64),
            )
        )
    return vocab, out


# ------------------------------------------------------------------------------------------ row numbering


class RowKey(NamedTuple):
    """What a row is about: its kind, label, kernel name, class name and degraded rank (None: pooled); the
    fields are named as :class:`~kat_gui.compare.result.Difference` names them."""

    kind: str
    label: str
    name: str
    kernel_class: str
    rank: int | None


RANK_METRIC_LABELS = {  # the per-rank rows, in RANK_METRIC_KINDS order
    "rank_busy": "GPU busy time per step",
    "rank_idle": "GPU idle time per step",
    "rank_wait": "collective wait per step",
}


@dataclass(frozen=True)
class GroupLayout:
    """Row ids: one block per row kind, in :data:`~kat_gui.compare.result.KINDS` order ([kernel | kernel x rank
    | class | class x rank | busy | idle | wait | step_time]); a per-rank block numbers its rows by degraded
    rank slot (``id = block start + (name or class) * n_slots + slot``). ``starts``: the first id of each
    block; ``n_groups``: the number of rows."""

    n_names: int
    n_slots: int
    starts: tuple[int, ...]
    n_groups: int

    @classmethod
    def of(cls, n_names: int, n_slots: int) -> GroupLayout:
        n_cls = len(CLASS_NAMES)
        sizes = (n_names, n_names * n_slots, n_cls, n_cls * n_slots, n_slots, n_slots, n_slots, 1)
        starts = [0, *itertools.accumulate(sizes)]
        return cls(n_names, n_slots, tuple(starts[:-1]), starts[-1])

    def start(self, kind: str) -> int:
        """The first row id of the block of ``kind``."""
        return self.starts[KINDS.index(kind)]

    def row_key(self, gid: int, vocab: KernelVocabulary, degraded_ranks: list[int]) -> RowKey:
        """What row ``gid`` is about."""
        block = bisect.bisect_right(self.starts, gid) - 1  # the last block starting at or before gid
        kind, i = KINDS[block], gid - self.starts[block]
        if kind == "kernel":
            nm = vocab.names[i]
            return RowKey(kind, nm, nm, CLASS_NAMES[vocab.cls[i]], None)
        if kind == "kernel_rank":
            k, r = divmod(i, self.n_slots)
            nm = vocab.names[k]
            return RowKey(kind, nm, nm, CLASS_NAMES[vocab.cls[k]], degraded_ranks[r])
        if kind == "class":
            return RowKey(kind, f"{CLASS_NAMES[i]} kernels", "", CLASS_NAMES[i], None)
        if kind == "class_rank":
            c, r = divmod(i, self.n_slots)
            return RowKey(kind, f"{CLASS_NAMES[c]} kernels", "", CLASS_NAMES[c], degraded_ranks[r])
        if kind in RANK_METRIC_LABELS:
            return RowKey(kind, RANK_METRIC_LABELS[kind], "", "", degraded_ranks[i])
        return RowKey(kind, "step time", "", "", None)


# ------------------------------------------------------------------------------------------ the sample table


class Samples(NamedTuple):
    """One entry per sample: ``group`` (row id, int64), ``side`` (0 healthy, 1 degraded; int8), ``value_ns``
    (what the reader sees, int64), ``test_value`` (what the tests compare, int64), ``excluded`` (bool: its
    workload lies outside the healthy run's range, so it is counted but not compared), ``position`` (the
    aligned step it belongs to, 0 = the anchor step; int32: where in the run a row changed, see
    :mod:`kat_gui.compare.window`)."""

    group: np.ndarray
    side: np.ndarray
    value_ns: np.ndarray
    test_value: np.ndarray
    excluded: np.ndarray
    position: np.ndarray


@dataclass
class SampleColumns:
    """The sample table while it is built: pieces appended per row block and side, joined by :meth:`join`."""

    group: list[np.ndarray] = field(default_factory=list)
    side: list[np.ndarray] = field(default_factory=list)
    value_ns: list[np.ndarray] = field(default_factory=list)
    test_value: list[np.ndarray] = field(default_factory=list)
    excluded: list[np.ndarray] = field(default_factory=list)
    position: list[np.ndarray] = field(default_factory=list)

    def add(
        self,
        group: np.ndarray,
        side: np.ndarray,
        value_ns: np.ndarray,
        test_value: np.ndarray,
        excluded: np.ndarray,
        position: np.ndarray,
    ) -> None:
        self.group.append(group)
        self.side.append(side)
        self.value_ns.append(value_ns)
        self.test_value.append(test_value)
        self.excluded.append(excluded)
        self.position.append(position.astype(np.int32, copy=False))

    def join(self) -> Samples:
        """The pieces as one table (and the pieces dropped: on million-kernel runs they are large)."""
        out = Samples(
            group=np.concatenate(self.group).astype(np.int64),
            side=np.concatenate(self.side),
            value_ns=np.concatenate(self.value_ns).astype(np.int64),
            test_value=np.concatenate(self.test_value).astype(np.int64),
            excluded=np.concatenate(self.excluded),
            position=np.concatenate(self.position),
        )
        for pieces in (self.group, self.side, self.value_ns, self.test_value, self.excluded, self.position):
            pieces.clear()
        return out


def add_kernel_samples(
    cols: SampleColumns,
    layout: GroupLayout,
    pairing: RankPairing,
    kernels: list[KernelSamples],
    model: WorkloadModel,
) -> None:
    """The kernel, kernel x rank, class and class x rank rows of both runs: raw own durations for the
    reader, the workload model's ratios for the tests."""
    n_rk = layout.n_slots
    for side, k in enumerate(kernels):
        nm, cl, dur = k.name_id, k.cls, k.dur_ns
        slot = pairing.slots(side, k.rank)
        ok = slot >= 0
        sd = np.full(len(nm), side, dtype=np.int8)
        rt = model.ratios[side]
        out = model.outside[side]
        ps = k.position
        cols.add(layout.start("kernel") + nm, sd, dur, rt, out, ps)
        cols.add(
            layout.start("kernel_rank") + nm[ok] * n_rk + slot[ok], sd[ok], dur[ok], rt[ok], out[ok], ps[ok]
        )
        cols.add(layout.start("class") + cl, sd, dur, rt, out, ps)
        cols.add(
            layout.start("class_rank") + cl[ok] * n_rk + slot[ok], sd[ok], dur[ok], rt[ok], out[ok], ps[ok]
        )


def add_step_samples(
    cols: SampleColumns,
    layout: GroupLayout,
    pairing: RankPairing,
    runs: tuple[RunData, RunData],
    steps: StepAlignment,
    kernels: list[KernelSamples],
    common_mode: bool,
) -> list[np.ndarray]:
    """The per-rank busy/idle/wait rows (one sample per rank and step) and the step-time row (one sample per
    step) of both runs. With ``common_mode``, busy and idle times are tested as their shift from the step's
    common mode among the ranks of the same program, plus the healthy run's typical common mode of the
    rank's program (the scale of the test space); waits are not (a late rank makes all others wait: a
    common mode itself). Returns the step times (ns) of each run's compared steps."""
    n_rk = layout.n_slots
    step_times = []
    slot_base = [np.zeros(n_rk), np.zeros(n_rk), np.zeros(n_rk)]  # per degraded rank slot and metric
    progs = [program_groups(k.name_id, k.rank) for k in kernels]
    for side, run in enumerate(runs):
        sr = run.step_rank
        pos = positions(run, steps.anchor_step(side), sr["step"])
        keep = (pos >= 0) & (pos < steps.steps_compared)
        rk = sr["rank"][keep].astype(np.int64)
        slot = pairing.slots(side, rk)
        ok = slot >= 0
        span = (sr["end_ns"] - sr["start_ns"])[keep]
        busy = sr["busy_ns"][keep].astype(np.int64)
        wait = sr["wait_ns"][keep].astype(np.int64)
        idle = np.maximum(span - busy - wait, 0)
        for j, (kind, val) in enumerate(zip(RANK_METRIC_KINDS, (busy, idle, wait), strict=True)):
            tv = val
            if common_mode and j < 2:  # waits: a late rank makes all others wait, a common mode itself
                st_k = pos[keep].astype(np.int64)
                pg = np.array([progs[side].get(int(r), -1) for r in rk.tolist()], np.int64) + 1
                cell = st_k * (len(progs[side]) + 1) + pg
                if side == 0:  # the scale of the test space: the healthy run's typical common mode
                    cm0, _ = lower_median_by(cell, val)
                    base_g = {g: float(np.median(cm0[pg == g])) for g in np.unique(pg).tolist()}
                    for sl, g in zip(slot[ok].tolist(), pg[ok].tolist(), strict=True):
                        slot_base[j][sl] = base_g[g]
                base = np.zeros(len(val))
                base[ok] = slot_base[j][slot[ok]]
                tv = common_mode_shift(cell, val, base)
            n_ok = int(ok.sum())
            cols.add(
                layout.start(kind) + slot[ok],
                np.full(n_ok, side, dtype=np.int8),
                val[ok],
                tv[ok],
                np.zeros(n_ok, bool),
                pos[keep][ok],
            )
        stt, stp = _step_times_ns(
            run, pos[keep], rk, sr["start_ns"][keep], sr["end_ns"][keep], steps.steps_compared
        )
        step_times.append(stt)
        n = len(stt)
        cols.add(
            np.full(n, layout.start("step_time"), dtype=np.int64),
            np.full(n, side, dtype=np.int8),
            stt,
            stt,
            np.zeros(n, bool),
            stp,
        )
    return step_times


def _step_times_ns(
    run: RunData, pos: np.ndarray, rank: np.ndarray, start_ns: np.ndarray, end_ns: np.ndarray, n_steps: int
) -> tuple[np.ndarray, np.ndarray]:
    """Step time per aligned step that ran: latest end minus earliest start over ranks (per (rank, step)
    spans, on the lowest rank's clock: spans across hosts need one clock), and the positions of those
    steps."""
    st0 = np.full(n_steps, np.iinfo(np.int64).max)
    st1 = np.full(n_steps, np.iinfo(np.int64).min)
    off = run.offset_of(rank)
    np.minimum.at(st0, pos, start_ns - off)
    np.maximum.at(st1, pos, end_ns - off)
    present = st1 > st0
    return (st1 - st0)[present], np.flatnonzero(present)
