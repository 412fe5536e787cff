"""Structural differences between two runs: what a sample test cannot see because one side has no samples
or the runs do not do the same work.

Rows (kinds of :class:`~kat_gui.compare.result.Difference`):

- ``only_healthy`` / ``only_degraded``: a kernel name found in one run only; counted (significant without
  the common-mode analysis) when it runs at least ``min_per_step`` times per compared step;
- ``collective_renamed``: a regular collective kernel gone while another appeared (NCCL chose another
  algorithm or protocol);
- ``ranks_changed``: the runs have different rank sets;
- ``different_workload`` (grey): a kernel name with a share of its degraded instances at a workload the
  healthy run never ran (see :mod:`kat_gui.compare.workload`); those instances were not compared;
- ``rank_stopped``: a degraded rank whose GPU work ends long before the others' (a hang or a crash).

Units: times in ns (last ends on the lowest rank's host clock); ``effect`` is a relative change, -1 for
"gone", +inf for "new", the share of instances outside the healthy range for ``different_workload``.
"""

from __future__ import annotations

import numpy as np

from kat_gui.compare.result import Difference, Params
from kat_gui.compare.run import RunData
from kat_gui.compare.samples import KernelSamples, KernelVocabulary
from kat_gui.compare.workload import WorkloadModel
from kat_gui.detect.classify import CLASS_NAMES, COLLECTIVE


def structural_rows(
    healthy: RunData,
    degraded: RunData,
    kernels: list[KernelSamples],
    vocab: KernelVocabulary,
    n_common: int,
    p: Params,
) -> list[Difference]:
    """The ``only_healthy``, ``only_degraded``, ``collective_renamed`` and ``ranks_changed`` rows."""
    names, name_cls = vocab.names, vocab.cls
    counts = [np.bincount(k.name_id, minlength=len(names)) for k in kernels]
    totals = [np.bincount(k.name_id, weights=k.dur_ns, minlength=len(names)) for k in kernels]
    out: list[Difference] = []
    steps = max(n_common, 1)
    only = {"only_healthy": [], "only_degraded": []}
    for i in np.flatnonzero((counts[0] > 0) != (counts[1] > 0)).tolist():
        side = 0 if counts[0][i] else 1
        kind = "only_healthy" if side == 0 else "only_degraded"
        regular = counts[side][i] / steps >= p.min_per_step
        d = Difference(
            kind=kind,
            label=f"kernel runs only in the {'healthy' if side == 0 else 'degraded'} run",
            name=names[i],
            kernel_class=CLASS_NAMES[name_cls[i]],
            n_healthy=int(counts[0][i]),
            n_degraded=int(counts[1][i]),
            total_healthy_ns=float(totals[0][i]),
            total_degraded_ns=float(totals[1][i]),
            effect=float("inf") if side else -1.0,
            p_value=0.0 if regular else 1.0,
            q_value=0.0 if regular else 1.0,
            significant=bool(regular) and not p.common_mode,
            note=(
                "structure differs (a kernel or shape the workload or configuration selects): not a slowdown"
                if regular
                else "rare (less than once per step): not counted as a change"
            ),
        )
        only[kind].append((i, d))
        out.append(d)
    # A collective kernel that disappears while another appears: NCCL picked another algorithm or protocol.
    regular_of = {id(d): d.p_value == 0.0 for _, d in only["only_healthy"] + only["only_degraded"]}
    gone = [(i, d) for i, d in only["only_healthy"] if name_cls[i] == COLLECTIVE and regular_of[id(d)]]
    new = [(i, d) for i, d in only["only_degraded"] if name_cls[i] == COLLECTIVE and regular_of[id(d)]]
    gone.sort(key=lambda x: -x[1].n_healthy)
    new.sort(key=lambda x: -x[1].n_degraded)
    for (i, dh), (j, dd) in zip(gone, new, strict=False):
        out.append(
            Difference(
                kind="collective_renamed",
                label="collective kernel changed",
                name=f"{names[i]} -> {names[j]}",
                kernel_class="collective",
                n_healthy=dh.n_healthy,
                n_degraded=dd.n_degraded,
                total_healthy_ns=dh.total_healthy_ns,
                total_degraded_ns=dd.total_degraded_ns,
                effect=(dd.total_degraded_ns / dh.total_healthy_ns - 1.0) if dh.total_healthy_ns else 0.0,
                p_value=0.0,
                q_value=0.0,
                significant=True,
                note="NCCL chose another algorithm/protocol (message size, topology or env change)",
            )
        )
    h_r, d_r = set(int(r) for r in healthy.ranks), set(int(r) for r in degraded.ranks)
    if h_r != d_r:
        out.append(
            Difference(
                kind="ranks_changed",
                label=f"ranks: healthy {len(h_r)}, degraded {len(d_r)}",
                n_healthy=len(h_r),
                n_degraded=len(d_r),
                significant=True,
                p_value=0.0,
                q_value=0.0,
                note="per-rank rows pair degraded rank r with healthy rank r (or r mod n)",
            )
        )
    return out


def workload_rows(
    kernels: list[KernelSamples], wm: WorkloadModel, vocab: KernelVocabulary, p: Params
) -> list[Difference]:
    """One grey row per kernel name with a share of its degraded instances at a workload the healthy run
    never ran (outside its covariate range): those instances were not compared, and the reader must know
    that the runs differ in workload there rather than see a slowdown or nothing at all."""
    out_d = wm.outside[1]
    if not out_d.any():
        return []
    names, name_cls = vocab.names, vocab.cls
    nm_d, dur_d = kernels[1].name_id, kernels[1].dur_ns
    n_all = np.bincount(nm_d, minlength=len(names))
    n_out = np.bincount(nm_d[out_d], minlength=len(names))
    t_out = np.bincount(nm_d[out_d], weights=dur_d[out_d], minlength=len(names))
    rows = []
    for i in np.flatnonzero((n_out >= p.min_n) & (n_out >= 0.2 * np.maximum(n_all, 1))).tolist():
        cov = wm.covariate.get(i, "workload")
        rows.append(
            Difference(
                kind="different_workload",
                label="workload outside the healthy run's range",
                name=names[i],
                kernel_class=CLASS_NAMES[name_cls[i]],
                n_healthy=0,
                n_degraded=int(n_out[i]),
                total_degraded_ns=float(t_out[i]),
                effect=float(n_out[i] / max(n_all[i], 1)),
                p_value=0.0,
                q_value=0.0,
                significant=False,
                note=(
                    f"{n_out[i]} of {n_all[i]} degraded instances ran at a {cov} that the healthy run did "
                    f"not run in {p.min_n} steps or more: not compared (a different workload, not a slowdown)"
                ),
            )
        )
    return rows


def last_end_by_rank(run: RunData) -> dict[int, int]:
    """Rank -> end (ns, on the lowest rank's clock) of its last GPU work, collective wait included."""
    g = run.gpu
    end = g["start_ns"] + g["dur_ns"] + g["wait_ns"] - run.offset_of(g["rank"])
    ranks = np.unique(g["rank"])
    last = np.full(len(ranks), np.iinfo(np.int64).min)
    np.maximum.at(last, np.searchsorted(ranks, g["rank"]), end)
    return dict(zip(ranks.tolist(), last.tolist(), strict=True))


def stopped_ranks(healthy: RunData, degraded: RunData, step_ns: float) -> list[Difference]:
    """Ranks of the degraded run whose GPU work ends long before the other ranks' (a hang or a crash: the
    others then sit in a collective that never completes, until the profiler stops). "Long" is more than two
    healthy step times and five times the spread of the healthy run's last ends."""
    last_d = last_end_by_rank(degraded)
    last_h = last_end_by_rank(healthy)
    if len(last_d) < 2:
        return []
    spread_h = max(last_h.values()) - min(last_h.values()) if last_h else 0
    limit = max(2.0 * step_ns, 5.0 * spread_h, 1e5)
    end = max(last_d.values())
    out = []
    for r, t in sorted(last_d.items()):
        if end - t > limit:
            out.append(
                Difference(
                    kind="rank_stopped",
                    label=f"rank stopped issuing GPU work {(end - t) / 1e6:.1f} ms before the others",
                    rank=r,
                    effect=-1.0,
                    p_value=0.0,
                    q_value=0.0,
                    significant=True,
                    note="hang or crash on this rank: the others then wait in a collective it never joins",
                )
            )
    return out
