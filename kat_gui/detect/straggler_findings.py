"""Straggler findings: a rank that arrives last at most collectives and makes its peers wait a large share of
the run.

Late arrival alone is noisy (healthy decode skew moves from rank to rank), so a straggler needs consistency
*and* magnitude over the whole run (``Params.straggler_*``): last (skew above the transfer time) at more than
``straggler_majority`` of its collective instances, at a count with binomial probability at most
``straggler_p`` for a rank drawn at random (1 / group size), peers' wait (each peer's wait averaged over the
peers, summed over the instances) at least ``straggler_wait_share`` of the run's step time, and a median
lateness ``z_cell`` noise units above the other ranks' medians. Ranks with an earlier finding are skipped:
that finding already explains why they arrive late. Component: ``cpu`` when the host issued the late
collectives late (launch delay >= half the lateness: the GPU waited for the host), else ``unknown``.
Times in ns; the host's clock is assumed close to the GPU's (as in Kineto). Whole-run statistics: a straggler
confined to a short window of a long run is diluted (docs/detection.md §5 and Known limits).
"""

from __future__ import annotations

import math

import numpy as np

from kat_gui.detect.analysis import RunAnalysis
from kat_gui.detect.anomalies import ROOT, SYMPTOM, AnomalyPart, RowQuery, symptom_rows
from kat_gui.detect.placement import component_id, finding_nodes
from kat_gui.detect.signals import CellSignal


def binom_tail(k: int, n: int, q: float) -> float:
    """P(X >= k) for X ~ Binomial(n, q), 0 < q < 1, summed in log space: exact binomial coefficients overflow a
    float beyond ~1,000 trials (a 2,000-step capture has thousands of collective instances)."""
    if k <= 0:
        return 1.0
    if k > n:
        return 0.0
    i = np.arange(k, n + 1, dtype=np.float64)
    log_choose = math.lgamma(n + 1) - np.array(
        [math.lgamma(j + 1) + math.lgamma(n - j + 1) for j in range(k, n + 1)]
    )
    log_terms = log_choose + i * math.log(q) + (n - i) * math.log1p(-q)
    top = float(log_terms.max())
    return min(1.0, math.exp(top) * float(np.exp(log_terms - top).sum()))


def straggler_findings(
    run: RunAnalysis, sig: dict[str, CellSignal], findings: list[dict], parts: list[AnomalyPart]
) -> None:
    """Append the straggler findings of the run to ``findings`` (and their anomaly rows to ``parts``)."""
    p = run.params
    co = run.collectives
    if run.n_ranks < 2 or co.n < p.min_steps:
        return
    named = {r for f in findings for r in f["ranks"]}
    meaningful = co.skew_ns > co.transfer_ns
    # Lateness against the instance's median start: robust per rank over its instances.
    late_ns_by_rank = {
        int(r): np.median(co.late_ns[co.rank == r]) for r in run.frame.ranks if (co.rank == r).any()
    }
    total_ns = float(np.sum(run.step_len_ns))
    for ri, r in enumerate(int(x) for x in run.frame.ranks):
        if r in named or r not in late_ns_by_rank:
            continue
        mine = co.rank == r
        n_mem = int(mine.sum())
        last = meaningful & (co.last_rank == r)
        n_last = int(last.sum())
        if n_last < p.min_steps or n_last <= p.straggler_majority * n_mem:
            continue
        q = 1.0 / max(float(np.median(co.size[co.inst[mine]])), 2.0)
        p_val = binom_tail(n_last, n_mem, q)
        if p_val > p.straggler_p:
            continue
        peers_at = last[co.inst] & ~mine
        # Each peer's wait, averaged over the peers of each instance, summed over the instances.
        waited_ns = np.zeros(co.n)
        cnt = np.zeros(co.n)
        np.add.at(waited_ns, co.inst[peers_at], co.wait_ns[peers_at].astype(np.float64))
        np.add.at(cnt, co.inst[peers_at], 1.0)
        caused_ns = float(np.sum(waited_ns[last] / np.maximum(cnt[last], 1.0)))
        share = caused_ns / max(total_ns, 1.0)
        if share < p.straggler_wait_share:
            continue
        others = np.array([v for k, v in late_ns_by_rank.items() if k != r], dtype=np.float64)
        spread_ns = 1.4826 * float(np.median(np.abs(others - np.median(others)))) if len(others) else 0.0
        transfer_ns = float(np.median(co.transfer_ns[last]))
        z = (late_ns_by_rank[r] - float(np.median(others))) / max(spread_ns, transfer_ns, 1_000.0)
        if z < p.z_cell:
            continue
        # Did the host issue the late collectives late? Launch delay against the instance's median launch.
        rows_me = co.row[mine & last[co.inst]]
        late_me_ns = co.late_ns[mine & last[co.inst]].astype(np.float64)
        launch_delay_ns = np.full(len(rows_me), np.nan)
        if run.any_launch:
            member_launch_ns = run.collective_launch_ns()
            launch_ns = member_launch_ns.astype(np.float64)
            launch_ns[member_launch_ns < 0] = np.nan
            for j, i in enumerate(co.inst[mine & last[co.inst]]):
                others_l = launch_ns[(co.inst == i) & ~mine]
                own = launch_ns[(co.inst == i) & mine]
                if np.isfinite(others_l).any() and np.isfinite(own).all():
                    launch_delay_ns[j] = float(own[0] - np.nanmedian(others_l))
        ok = np.isfinite(launch_delay_ns) & (late_me_ns > 0)
        host_frac = float(np.median(launch_delay_ns[ok] / late_me_ns[ok])) if ok.any() else 0.0
        comp = "cpu" if host_frac >= 0.5 else "unknown"
        ev = {}  # per kernel signal: the rank's median slowdown against peers over the run (relative)
        for k in ("compute", "memory", "copy", "launch"):
            d = sig[k].dev[ri] if k in sig else np.zeros(0)
            d = d[np.isfinite(d)]
            ev[k] = round(math.expm1(float(np.median(d))), 4) if len(d) else 0.0
        fid = len(findings)
        s_last = run.coll_step_idx[last]
        s0 = int(s_last[s_last >= 0].min()) if (s_last >= 0).any() else 0
        s1 = int(s_last[s_last >= 0].max()) if (s_last >= 0).any() else run.n_steps - 1
        if comp == "cpu":
            parts.append(run.launch_wait_part(RowQuery(ri, s0, s1), fid, extra_rows=rows_me))
        else:
            parts.append(
                AnomalyPart(
                    rows_me, ROOT, fid, late_me_ns / np.maximum(co.skew_ns[co.inst[mine & last[co.inst]]], 1)
                )
            )
        sym, added_ns = symptom_rows(run, peers_at & (co.wait_ns > 0), r, s0, s1, host=comp == "cpu")
        parts.append(
            AnomalyPart(
                co.row[sym],
                SYMPTOM,
                fid,
                co.wait_ns[sym] / np.maximum(co.end_ns[sym] - co.start_ns[sym], 1),
                added_ns[sym],
            )
        )
        coll_ns = (co.end_ns - co.start_ns)[peers_at].astype(np.float64)
        wait_share = float(co.wait_ns[peers_at].sum() / max(coll_ns.sum(), 1.0))
        frac_last = n_last / n_mem
        conf = 0.5 + 0.2 * min(share / 0.4, 1.0) + 0.2 * min((frac_last - 0.5) / 0.4, 1.0)
        conf = round(min(conf, 0.9) * (1.0 if comp == "cpu" else 0.8), 3)
        skews_ns = np.sort(co.skew_ns[last])[::-1]
        steps = [int(run.step_values[s0]), int(run.step_values[s1])]
        kern_txt = (
            f"its kernels are not slower than its peers' (compute-bound {ev['compute'] * 100:+.0f}%, "
            f"memory-bound {ev['memory'] * 100:+.0f}%)"
        )
        if comp == "cpu":
            cause = (
                f"the host issued those collectives late ({host_frac * 100:.0f}% of its lateness is launch "
                f"delay), so the cause is before the GPU, on the host side (input/data loading, Python, "
                f"launch path)"
            )
            why = "straggler: last at most collectives; the host launched them late"
        else:
            cause = (
                "its launches were not late either: the cause is not visible in the trace (software skew?)"
            )
            why = "straggler: last at most collectives, no slower kernels or launches"
        findings.append(
            {
                "component": comp,
                "component_id": component_id(run.frame, comp, [r]),
                "ranks": [r],
                "confidence": conf,
                "start_ns": int(co.first_start_ns[last].min()),
                "end_ns": int(co.end_inst_ns[last].max()),
                "summary": f"rank {r} is the straggler: last at {n_last} of {n_mem} collectives; its peers "
                f"waited {caused_ns / 1e6:.1f} ms each ({share * 100:.0f}% of the step time) for it; "
                f"{kern_txt}; {cause}",
                "kind": "timing",
                "nodes": finding_nodes(run.frame, comp, [r]),
                "evidence": {
                    "slowdown_vs_peers": 0.0,
                    "compute_bound_slowdown": ev["compute"],
                    "memory_bound_slowdown": ev["memory"],
                    "host_copy_slowdown": ev["copy"],
                    "launch_interval_ratio": round(1 + ev["launch"], 4),
                    "last_at": n_last,
                    "collectives": n_mem,
                    "last_at_p_value": round(p_val, 6),
                    "peer_wait_ns": caused_ns,
                    "wait_share_of_step": round(share, 4),
                    "wait_share": round(wait_share, 4),
                    "arrival_skew_ns": float(np.median(skews_ns)),
                    "largest_skews_ns": [float(x) for x in skews_ns[:3]],
                    "launch_delay_share": round(host_frac, 3),
                    "z": round(float(z), 2),
                    "steps": steps,
                    "abnormal_steps": int(len(np.unique(s_last[s_last >= 0]))),
                },
                "reason": why,
            }
        )
