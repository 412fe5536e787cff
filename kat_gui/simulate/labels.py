"""Per-rank flattening of a timeline and the ground-truth labels (root / symptom / normal) of every instance.

Labels come from counterfactuals: the run is simulated with all faults, with none, and (when there are several)
with all but one, on the same random draws. Rules (docs/simulator.md has the full text):

- root (1): the fault changed the instance's own work: a kernel or copy whose duration the fault multiplied
  (gpu, hbm, pcie), or a collective/send/recv whose *transfer* the fault slowed (nvlink, nic; on every rank of
  the group). CPU contention: an instance on a faulty rank, inside the fault window, whose idle gap before it
  on the GPU (waiting for its launch) grew by at least ``CPU_ROOT_MIN_NS`` because of the fault.
- symptom (2): a collective/send/recv that is not a root and is longer than in the fault-free run by more than
  ``max(SYMPTOM_MIN_NS, typical wait)`` — it waited for a late rank elsewhere. ``typical wait`` is the median
  fault-free wait (last arrival - own arrival) of that collective op over all ranks and steps, so a symptom
  waits about twice the normal skew or more. Collectives still running when the profiler stopped (hangs)
  are symptoms.
- normal (0): everything else, including every instance of a healthy run and every effect of a confounder.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from kat_gui.simulate.model import K_RECV, K_SEND
from kat_gui.simulate.spec import FaultSpec
from kat_gui.simulate.timeline import SimContext, Timeline

CPU_ROOT_MIN_NS = 1000.0
SYMPTOM_MIN_NS = 5000.0

NORMAL, ROOT, SYMPTOM = 0, 1, 2


@dataclass
class RankOps:
    """One rank's GPU ops (in program order) and host calls, true-time float ns."""

    start: np.ndarray
    end: np.ndarray
    last: np.ndarray  # collectives: last arrival of the group
    factor: np.ndarray
    rootf: np.ndarray
    step: np.ndarray
    prog: np.ndarray
    op: np.ndarray  # op index within its program
    coll: np.ndarray  # collective instance id (same on every rank of the instance), -1 otherwise
    host_idx: np.ndarray  # index into this rank's host calls of the call that launched the op
    h_name: np.ndarray
    h_step: np.ndarray
    h_start: np.ndarray
    h_end: np.ndarray


def collective_ids(ctx: SimContext) -> list[list[np.ndarray]]:
    """[step][stage] -> [ops, TP ranks] collective instance ids (-1 for non-collectives).

    A TP collective is one instance across its group (same id in every column); a pipeline send/recv is one
    instance per pair (rank j of stage s with rank j of stage s+1), and the recv shares its send's id.
    """
    tp = ctx.spec.tp
    out: list[list[np.ndarray]] = []
    nxt = 0
    for n in range(ctx.spec.n_steps):
        row: list[np.ndarray] = []
        for s in range(ctx.spec.pp):
            info = ctx.infos[ctx.prog_of[n, s]]
            ids = np.full((len(info.kind), tp), -1, dtype=np.int64)
            for j in np.flatnonzero(info.coll):
                if info.kind[j] == K_RECV:
                    ids[j] = row[s - 1][-1]
                elif info.kind[j] == K_SEND:
                    ids[j] = nxt + np.arange(tp)
                    nxt += tp
                else:
                    ids[j] = nxt
                    nxt += 1
            row.append(ids)
        out.append(row)
    return out


def flatten(ctx: SimContext, tl: Timeline, coll_ids: list[list[np.ndarray]]) -> list[RankOps]:
    """Per-rank arrays of a timeline, ops in program order (which is also start order on the rank)."""
    tp = ctx.spec.tp
    out = []
    for s, blocks in enumerate(tl.blocks):
        starts = np.concatenate([b.start for b in blocks])
        ends = np.concatenate([b.end for b in blocks])
        lasts = np.concatenate([b.last for b in blocks])
        factors = np.concatenate([b.factor for b in blocks])
        rootfs = np.concatenate([b.rootf for b in blocks])
        steps = np.concatenate([np.full(len(b.start), b.step) for b in blocks])
        progs = np.concatenate([np.full(len(b.start), b.prog) for b in blocks])
        ops = np.concatenate([np.arange(len(b.start)) for b in blocks])
        colls = np.concatenate([coll_ids[b.step][s] for b in blocks])  # [ops, tp]
        h_counts = np.array([len(b.h_name) for b in blocks])
        h_off = np.concatenate([[0], np.cumsum(h_counts)[:-1]])
        host_idx = np.concatenate(
            [off + ctx.infos[b.prog].host_of for b, off in zip(blocks, h_off, strict=True)]
        )
        h_name = np.concatenate([b.h_name for b in blocks])
        h_step = np.repeat([b.step for b in blocks], h_counts)
        h_start = np.concatenate([b.h_start for b in blocks])
        h_end = np.concatenate([b.h_end for b in blocks])
        for c in range(tp):
            out.append(
                RankOps(
                    starts[:, c],
                    ends[:, c],
                    lasts[:, c],
                    factors[:, c],
                    rootfs[:, c],
                    steps,
                    progs,
                    ops,
                    colls[:, c],
                    host_idx,
                    h_name,
                    h_step,
                    h_start[:, c],
                    h_end[:, c],
                )  # fmt: skip
            )
    return out


def keep_masks(tl: Timeline, rank: int, ops: RankOps) -> tuple[np.ndarray, np.ndarray, float]:
    """Which GPU ops and host calls the rank's trace contains, and the time its recording stopped.

    Without a hang: everything. With a hang: the hung rank records nothing from the hang on; every rank stops
    recording at the profiler stop (hang + tail); an op running at that moment is written truncated.
    """
    limit = tl.hang_ns if rank == tl.hang_rank else tl.stop_ns
    g = ops.start < limit
    h = ops.h_start < limit
    return g, h, limit


def label_rank(
    ctx: SimContext,
    rank: int,
    faults: list[FaultSpec],
    all_ops: RankOps,
    none_ops: RankOps,
    minus_ops: list[RankOps],
    typical_wait: dict[tuple[str, int], float],
) -> tuple[np.ndarray, np.ndarray]:
    """(label, fault id) per GPU op of ``rank`` in program order; see the module docstring for the rules."""
    n = len(all_ops.start)
    label = np.zeros(n, dtype=np.int8)
    fault = np.full(n, -1, dtype=np.int32)
    if not faults:
        return label, fault
    root = (all_ops.factor > 1.0 + 1e-12) & (all_ops.rootf >= 0)
    label[root] = ROOT
    fault[root] = all_ops.rootf[root]

    for fid, f in enumerate(faults):
        if f.component != "cpu" or f.kind != "slowdown" or rank not in f.ranks:
            continue
        end_step = f.end_step if f.end_step is not None else 1 << 62
        in_win = (all_ops.step >= f.onset_step) & (all_ops.step < end_step)
        gap_all = _gaps(all_ops)
        gap_ref = _gaps(minus_ops[fid])
        with np.errstate(invalid="ignore"):
            grown = np.isfinite(gap_all) & np.isfinite(gap_ref) & (gap_all - gap_ref >= CPU_ROOT_MIN_NS)
        hit = grown & in_win & (label == NORMAL)
        label[hit] = ROOT
        fault[hit] = fid

    is_coll = np.concatenate([[False], *(info.coll for info in ctx.infos)])[_flat_index(ctx, all_ops)]
    with np.errstate(invalid="ignore"):
        dur_all = all_ops.end - all_ops.start
        excess = np.where(np.isnan(dur_all), -np.inf, dur_all) - (none_ops.end - none_ops.start)
    per_op_thr = [
        np.array(
            [max(SYMPTOM_MIN_NS, typical_wait.get(_op_key(ctx, p, j), 0.0)) for j in range(len(info.kind))]
        )
        for p, info in enumerate(ctx.infos)
    ]
    thr = np.concatenate([[0.0], *per_op_thr])[_flat_index(ctx, all_ops)]
    sym = is_coll & (label == NORMAL) & np.isfinite(all_ops.start) & (excess > thr)
    if sym.any():
        idx = np.flatnonzero(sym)
        if len(faults) == 1:
            fault[idx] = 0
        else:
            with np.errstate(invalid="ignore"):
                gains = np.stack([dur_all[idx] - (m.end[idx] - m.start[idx]) for m in minus_ops])
            gains = np.where(np.isnan(gains), -np.inf, gains)
            fault[idx] = np.argmax(gains, axis=0)
        label[idx] = SYMPTOM
    return label, fault


def _flat_index(ctx: SimContext, ops: RankOps) -> np.ndarray:
    """Index of each op into the concatenation of all programs' ops (after one leading pad slot)."""
    offsets = np.cumsum([1] + [len(info.kind) for info in ctx.infos])[:-1]
    return offsets[ops.prog] + ops.op


def _gaps(ops: RankOps) -> np.ndarray:
    """GPU idle time before each op (since the previous op on the rank ended); 0 for the first op."""
    g = np.zeros(len(ops.start))
    with np.errstate(invalid="ignore"):
        g[1:] = ops.start[1:] - ops.end[:-1]
    return g


def _op_key(ctx: SimContext, prog: int, op: int) -> tuple[str, int]:
    """Collectives are compared with the same kind of collective: allreduce vs allgather vs send vs recv."""
    o = ctx.programs[prog][op]
    return (o.key, o.kind)


def typical_waits(ctx: SimContext, none_ranks: list[RankOps]) -> dict[tuple[str, int], float]:
    """Median fault-free wait (last arrival - own arrival) per collective op kind, over all ranks and steps."""
    waits: dict[tuple[str, int], list[np.ndarray]] = {}
    for ops in none_ranks:
        for p, info in enumerate(ctx.infos):
            for j in np.flatnonzero(info.coll):
                sel = (ops.prog == p) & (ops.op == j)
                if sel.any():
                    waits.setdefault(_op_key(ctx, p, j), []).append(ops.last[sel] - ops.start[sel])
    out = {}
    for key, parts in waits.items():
        w = np.concatenate(parts)
        w = w[np.isfinite(w)]
        out[key] = float(np.median(w)) if len(w) else 0.0
    return out
