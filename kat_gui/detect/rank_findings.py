"""Rank findings: one rank persistently slower than its peers, attributed to gpu, hbm, pcie or cpu.

Input: the [rank, step] peer signals of :meth:`RunAnalysis.kernel_signals` (``compute``, ``memory``, ``copy``,
``launch``: log ratios to the same work on the peers; ``late``: share of the step the rank made its peers
wait). A cell is abnormal when it clears ``Params.z_cell`` noise units *and* the minimum effect
(``min_slowdown``, ``min_launch_slowdown``: relative; ``min_late_share``: share of a step). A weak sustained
change is found by a window search over each rank's deviation series (``history.joint_windows``). Abnormal
steps of a rank form a fault when they persist (``min_steps``, merged across ``merge_gap``); the component
follows from which signals are abnormal (docs/detection.md, "What a fault looks like"; :func:`rank_component`), and the fault's effect must
clear the bar against the rank's own level outside the window. Late arrival alone is never a rank finding
(see ``straggler_findings``). Method: docs/detection.md §3 and §5.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from kat_gui.detect.analysis import RunAnalysis
from kat_gui.detect.anomalies import SYMPTOM, AnomalyPart, RowQuery, symptom_rows
from kat_gui.detect.classify import COMPUTE, COPY_HOST, MEMORY
from kat_gui.detect.history import joint_windows
from kat_gui.detect.params import Params, timing_confidence
from kat_gui.detect.placement import component_id, finding_nodes
from kat_gui.detect.signals import CellSignal
from kat_gui.detect.stats import runs

# The signal that carries a component's evidence (its effect is measured there).
SIGNAL_OF_COMPONENT = {"gpu": "compute", "hbm": "memory", "pcie": "copy", "cpu": "launch"}


@dataclass(frozen=True)
class RankFault:
    """A persistent deviation of one rank over a window of steps, attributed to a component."""

    rank_idx: int  # index into RunFrame.ranks
    first_step_idx: int  # the window, inclusive, as indices into RunAnalysis.step_values
    last_step_idx: int
    n_flagged: int  # abnormal steps in the window
    component: str  # gpu | hbm | pcie | cpu (rank_component)
    reason: str
    median_dev: dict[str, float]  # per signal: median deviation from peers over the window (signal's unit)


def rank_findings(
    run: RunAnalysis, sig: dict[str, CellSignal], findings: list[dict], parts: list[AnomalyPart]
) -> None:
    """Append the rank findings of the run to ``findings`` (and their anomaly rows to ``parts``)."""
    p = run.params
    if run.n_ranks < 2 or not sig:
        return
    log_min = math.log1p(p.min_slowdown)
    flags = {
        "compute": sig["compute"].flags(p.z_cell, log_min),
        "memory": sig["memory"].flags(p.z_cell, log_min),
        "copy": sig["copy"].flags(p.z_cell, log_min),
    }
    if "launch" in sig:
        flags["launch"] = sig["launch"].flags(p.z_cell, math.log1p(p.min_launch_slowdown))
    if "late" in sig:
        flags["late"] = sig["late"].flags(p.z_cell, p.min_late_share)
    if run.n_steps < p.min_steps:
        # Too few steps to see persistence: the run has no history and its noise scale rests on a handful of
        # cells, so a weak single-step deviation (a few % of launch pacing) is not a finding on its own.
        # Cells must then clear z_link and short_run_factor x the minimum effect.
        for key, f in flags.items():
            eff = {"launch": math.log1p(p.min_launch_slowdown), "late": p.min_late_share}.get(key, log_min)
            flags[key] = f & sig[key].flags(p.z_link, p.short_run_factor * eff)
    # A weak but sustained change (a few % over many steps) is below the per-cell bar in every step yet
    # certain over the window: each rank's deviation series is searched for its best shift window against
    # its own level outside it (history.joint_windows; noise from successive differences), and the window's
    # cells count as abnormal when the shift clears z_link and the minimum effect.
    if run.n_steps >= 2 * p.min_steps + 1:
        for key in ("compute", "memory", "copy", "launch"):
            if key not in sig:
                continue
            need = math.log1p(p.min_launch_slowdown if key == "launch" else p.min_slowdown)
            for ri in range(run.n_ranks):
                d = sig[key].dev[ri]
                steps = np.flatnonzero(np.isfinite(d))
                steps = steps[steps >= p.warmup_steps]
                if len(steps) < 2 * p.min_steps + 1:
                    continue
                # Short windows are the per-cell runs' business; this search is for weak effects that only
                # add up over many steps, so its windows are at least 3 x min_steps long (a transient of a
                # few noisy steps cannot pass as "sustained").
                bw = joint_windows(
                    [(steps, d[steps], np.zeros((len(steps), 0)))],
                    run.n_steps,
                    3 * p.min_steps,
                    p.sigma_floor,
                )
                if bw is None or bw[2] < need:
                    continue
                # Or a clear change (z_cell) to a level persistently above the peers over the window (the
                # peer comparison then carries the evidence, steps averaged).
                w = d[bw[0] : bw[1] + 1]
                w = w[np.isfinite(w)]
                t_peer = float(np.mean(w)) / sig[key].sigma * math.sqrt(len(w)) if len(w) else 0.0
                if bw[3] >= p.z_link or (bw[3] >= p.z_cell and t_peer >= p.z_link):
                    flags[key][ri, bw[0] : bw[1] + 1] |= np.isfinite(d[bw[0] : bw[1] + 1])
    any_flag = np.zeros((run.n_ranks, run.n_steps), dtype=bool)
    for f in flags.values():
        any_flag |= f
    for ri in range(run.n_ranks):
        for s0, s1, nflag in _flag_runs(any_flag[ri], p, run.n_steps):
            win = slice(s0, s1 + 1)
            ev = {}
            frac = {}
            for k, s in sig.items():
                d = s.dev[ri, win]
                d = d[np.isfinite(d)]
                ev[k] = float(np.median(d)) if len(d) else 0.0
                frac[k] = float(flags[k][ri, win].mean()) if k in flags else 0.0
            comp, why = rank_component(ev, frac, p)
            if comp is None:
                continue
            # A persistent healthy offset (silicon spread, a slower host) is there outside the window too;
            # the fault is what the window adds to the rank's own level elsewhere, and must reach the bar.
            key = SIGNAL_OF_COMPONENT[comp]
            d_all = sig[key].dev[ri]
            # The rank's own level before the onset (after the window when it starts the run).
            outside = np.zeros(run.n_steps, dtype=bool)
            outside[:s0] = True
            if np.count_nonzero(outside & np.isfinite(d_all)) < p.min_steps:
                outside[s1 + 1 :] = True
            d_out = d_all[outside & np.isfinite(d_all)]
            base = max(float(np.median(d_out)), 0.0) if len(d_out) >= p.min_steps else 0.0
            need = math.log1p(p.min_launch_slowdown if key == "launch" else p.min_slowdown)
            if ev.get(key, 0.0) - base < need:
                continue
            fault = RankFault(ri, s0, s1, nflag, comp, why, ev)
            _emit_rank_finding(run, sig, fault, findings, parts)


def _flag_runs(flags: np.ndarray, p: Params, n_steps: int) -> list[tuple[int, int, int]]:
    """Runs of abnormal steps (first, last inclusive, count) merged across ``merge_gap`` and long enough."""
    need = min(p.min_steps, n_steps)
    return [r for r in runs(flags, p.merge_gap) if r[2] >= need]


def rank_component(ev: dict[str, float], frac: dict[str, float], p: Params) -> tuple[str | None, str]:
    """Hardware evidence on the rank beats its late arrival, which is only the consequence.

    ``ev``: per signal, the median deviation over the window; ``frac``: per signal, the share of the window's
    steps flagged. Returns (component, reason): one of pcie, hbm, gpu, cpu, or (None, "") when only late
    arrival (or nothing) is abnormal."""
    half = 0.5
    cmp_ok = frac.get("compute", 0) >= half
    mem_ok = frac.get("memory", 0) >= half
    if frac.get("copy", 0) >= half and not (cmp_ok or mem_ok):
        return "pcie", "host<->device copies slower than on peers"
    if cmp_ok or mem_ok:
        c, m = ev.get("compute", 0.0), ev.get("memory", 0.0)
        if mem_ok and m > p.hbm_ratio * max(c, 0.0):
            return "hbm", "memory-bound kernels slowed more than compute-bound ones"
        return "gpu", "compute-bound kernels slower than the same kernels on peers"
    if frac.get("launch", 0) >= half:
        # A slower host is a finding when its launch pacing is persistently slower than every step's peers;
        # whether it also arrives late depends on how launch-bound the rank is (pipeline stages that wait
        # for their input absorb it), so lateness is reported as evidence, not required.
        return "cpu", "host launches slower than on peers"
    # Late arrival alone is not a finding: healthy tensor-parallel decode already shows ms of host-paced
    # arrival skew (docs/detection.md), and software skew is not a hardware fault without hardware evidence.
    return None, ""


def _emit_rank_finding(
    run: RunAnalysis,
    sig: dict[str, CellSignal],
    fault: RankFault,
    findings: list[dict],
    parts: list[AnomalyPart],
) -> None:
    """Append the finding of one rank fault, its roots (the rank's work the fault slowed) and its symptoms
    (peers' collective kernels that waited for the rank) to ``findings`` and ``parts``."""
    fr = run.frame
    ri, s0, s1 = fault.rank_idx, fault.first_step_idx, fault.last_step_idx
    comp, ev = fault.component, fault.median_dev
    rank = int(fr.ranks[ri])
    fid = len(findings)
    key = SIGNAL_OF_COMPONENT[comp]
    s = sig[key]
    zs = s.z[ri, s0 : s1 + 1]
    z_med = float(np.nanmedian(zs)) if np.isfinite(zs).any() else 0.0
    # Root rows: a hardware fault multiplies the duration of *every* instance of the work it affects on the
    # rank (clock throttling: compute- and memory-bound kernels; HBM: both, memory-bound most; PCIe: host
    # copies), so all of them in the fault's steps are roots, not only those that cleared the noise.
    if comp in ("gpu", "hbm"):
        parts.append(run.scored_part(RowQuery(ri, s0, s1, (COMPUTE, MEMORY)), fid, s.sigma))
    elif comp == "pcie":
        parts.append(run.scored_part(RowQuery(ri, s0, s1, (COPY_HOST,)), fid, s.sigma))
    elif comp == "cpu":
        parts.append(run.launch_wait_part(RowQuery(ri, s0, s1), fid))
    # Symptoms: peers' collective kernels that waited for this rank (it arrived last) in the window.
    co = run.collectives
    wait_share = 0.0
    skew_med_ns = 0.0
    if co.n:
        inst_last = co.last_rank == rank
        inst_win = (run.coll_step_idx >= s0) & (run.coll_step_idx <= s1)
        inst_sel = inst_last & inst_win
        m = inst_sel[co.inst] & (co.rank != rank) & (co.wait_ns > 0)
        late_own_ns = np.zeros(co.n)
        is_me = co.rank == rank
        late_own_ns[co.inst[is_me]] = co.late_ns[is_me]
        m &= co.wait_ns >= 0.5 * late_own_ns[co.inst]
        m &= late_own_ns[co.inst] > 0
        m, added_ns = symptom_rows(run, m, rank, s0, s1, host=comp == "cpu")
        parts.append(
            AnomalyPart(
                co.row[m],
                SYMPTOM,
                fid,
                co.wait_ns[m] / np.maximum(co.end_ns[m] - co.start_ns[m], 1),
                added_ns[m],
            )
        )
        if inst_sel.any():
            skew_med_ns = float(np.median(co.skew_ns[inst_sel]))
            waited_ns = co.wait_ns[inst_sel[co.inst] & (co.rank != rank)]
            dur_ns = (co.end_ns - co.start_ns)[inst_sel[co.inst] & (co.rank != rank)]
            wait_share = float(waited_ns.sum() / max(dur_ns.sum(), 1))
    start_ns, end_ns = run.window_ns(s0, s1, ri)
    slowdown = {k: round(math.expm1(ev.get(k, 0.0)), 4) for k in ("compute", "memory", "copy", "launch")}
    evidence = {
        "slowdown_vs_peers": slowdown[key],
        "compute_bound_slowdown": slowdown["compute"],
        "memory_bound_slowdown": slowdown["memory"],
        "host_copy_slowdown": slowdown["copy"],
        "launch_interval_ratio": round(1 + slowdown["launch"], 4),
        "late_share_of_step": round(ev.get("late", 0.0), 4),
        "arrival_skew_ns": skew_med_ns,
        "wait_share": round(wait_share, 4),
        "z": round(z_med, 2),
        "steps": [int(run.step_values[s0]), int(run.step_values[s1])],
        "abnormal_steps": int(fault.n_flagged),
    }
    names = {
        "gpu": f"GPU {rank}",
        "hbm": f"HBM of GPU {rank}",
        "pcie": f"PCIe link of GPU {rank}",
        "cpu": f"host CPU of rank {rank}",
    }
    what = {
        "gpu": f"compute-bound kernels {slowdown['compute'] * 100:.0f}% slower than peers",
        "hbm": f"memory-bound kernels {slowdown['memory'] * 100:.0f}% slower than peers "
        f"(compute-bound {slowdown['compute'] * 100:.0f}%)",
        "pcie": f"host<->device copies {slowdown['copy'] * 100:.0f}% slower than peers",
        "cpu": f"launches {slowdown['launch'] * 100:.0f}% slower than peers; arrives late, peers wait",
    }[comp]
    findings.append(
        {
            "component": comp,
            "component_id": component_id(fr, comp, [rank]),
            "ranks": [rank],
            "confidence": timing_confidence(z_med, fault.n_flagged, run.params),
            "start_ns": start_ns,
            "end_ns": end_ns,
            "summary": f"{names[comp]}: {what} in steps {evidence['steps'][0]}-{evidence['steps'][1]}",
            "kind": "timing",
            "nodes": finding_nodes(fr, comp, [rank]),
            "evidence": evidence,
            "reason": fault.reason,
        }
    )
