"""Link findings: an NVLink or network (NIC) slowdown of a collective group, seen against its own history.

A degraded link slows every member of a collective equally, so peers cannot see it; the group's per-step
transfer time (min duration across members, ns) is compared with its own past instead, with the step's
workload regressed out (message size, host copy bytes, the step's common-mode kernel speed: ``history.py``).
A shift counts when it is at least ``Params.min_slowdown`` (relative) and ``z_link`` noise units, over at
least ``min_steps`` steps, and not confined to the warm-up steps. Needs ``2 x min_steps + 1`` steps. The
component is ``nic`` when the group's instances span hosts, else ``nvlink``; the finding says where the hosts
came from (``evidence.hosts_from``, and a caveat in the summary when they are inferred). Method:
docs/detection.md §4.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from kat_gui.detect.analysis import RunAnalysis
from kat_gui.detect.anomalies import ROOT, AnomalyPart
from kat_gui.detect.history import LinkShift, link_shifts
from kat_gui.detect.params import timing_confidence
from kat_gui.detect.placement import component_id, finding_nodes
from kat_gui.detect.stats import segments

# Appended to a link finding's summary when its hosts (nic vs nvlink) rest on an inference, not on the capture
# (kat_gui.detect.frame.HOSTS_FROM).
HOSTS_CAVEAT = {
    "device_index": "; hosts inferred from repeated device indices",
    "clock_offsets": "; hosts inferred from clock offsets",
    "none": "; the trace names no hosts: all ranks taken as one host",
}


class _Emitted(NamedTuple):
    """A link finding already emitted: its ranks, step-index window (inclusive) and finding index."""

    ranks: frozenset
    first_step_idx: int
    last_step_idx: int
    finding: int


def collective_shifts(run: RunAnalysis) -> list[LinkShift]:
    """Per collective (group, name): the best sustained transfer-time shift (``history.link_shifts``)."""
    co = run.collectives
    p = run.params
    first, _ = segments(co.inst)
    rows0 = co.row[first]
    name = run.gpu_values("name", rows0).astype(np.int64)
    pair = np.stack([co.group, name], axis=1)
    keys, kid = np.unique(pair, axis=0, return_inverse=True)
    nel = run.gpu_values("msg_nelems", rows0).astype(np.float64)
    log_msg = np.where(nel > 0, np.log(np.maximum(nel, 1.0)), np.nan)
    cov = run.step_covariates()
    return link_shifts(
        keys[:, 0],
        keys[:, 1],
        kid.ravel(),
        run.coll_step_idx,
        np.log(np.maximum(co.transfer_ns.astype(np.float64), 1.0)),
        log_msg,
        cov,
        run.n_steps,
        p.min_steps,
        p.sigma_floor,
        p.warmup_steps,
    )


def ranks_text(ranks: list[int]) -> str:
    """Ranks for a summary: ``0-7`` for a run of three or more consecutive ranks, else ``0,4``."""
    if len(ranks) > 2 and ranks == list(range(ranks[0], ranks[-1] + 1)):
        return f"{ranks[0]}-{ranks[-1]}"
    return ",".join(str(r) for r in ranks)


def link_findings(run: RunAnalysis, findings: list[dict], parts: list[AnomalyPart]) -> None:
    """Sustained transfer-time shifts of a collective group that the step's workload does not explain
    (``history.py``): nvlink inside a host, nic when the group spans hosts."""
    p = run.params
    co = run.collectives
    if not co.n or run.n_steps < 2 * p.min_steps + 1:
        return
    shifts = collective_shifts(run)
    log_min = math.log1p(p.min_slowdown)
    flagged = [
        sh
        for sh in shifts
        if sh.delta >= log_min and sh.z >= p.z_link and not (sh.s0 == 0 and sh.s1 < p.warmup_steps)
    ]
    group_ranks: dict[int, frozenset] = {}
    for g_ in np.unique(co.group):
        group_ranks[int(g_)] = frozenset(int(r) for r in np.unique(co.rank[(co.group == g_)[co.inst]]))
    emitted: list[_Emitted] = []
    for grp in sorted(
        {sh.group for sh in flagged}, key=lambda g_: -max(sh.z for sh in flagged if sh.group == g_)
    ):
        mine = sorted((sh for sh in flagged if sh.group == grp), key=lambda sh: -sh.z)
        best = mine[0]
        s0, s1 = best.s0, best.s1
        for sh in mine[1:]:  # other collectives of the group shifted over an overlapping window
            if sh.s0 <= s1 and s0 <= sh.s1:
                s0, s1 = min(s0, sh.s0), max(s1, sh.s1)
        inst_sel = (co.group == grp) & (run.coll_step_idx >= s0) & (run.coll_step_idx <= s1)
        if not inst_sel.any():
            continue
        ranks = sorted(int(r) for r in np.unique(co.rank[inst_sel[co.inst]]))
        # Every collective among the same ranks crosses the same links (groups split by collective name
        # when process groups are not recorded): all of them in the window are slowed.
        same = [int(g_) for g_, rs in group_ranks.items() if rs == frozenset(ranks)]
        inst_sel = np.isin(co.group, same) & (run.coll_step_idx >= s0) & (run.coll_step_idx <= s1)
        spans = bool(co.spans_hosts[inst_sel].any())
        comp = "nic" if spans else "nvlink"
        m = inst_sel[co.inst]
        dup = next(
            (
                e
                for e in emitted
                if e.ranks == frozenset(ranks) and e.first_step_idx <= s1 and s0 <= e.last_step_idx
            ),
            None,
        )
        if dup is not None:  # another collective of the same ranks (a name-split group): one finding
            parts.append(AnomalyPart(co.row[m], ROOT, dup.finding, np.full(int(m.sum()), best.z)))
            continue
        eff = best.delta  # log ratio of the transfer time to the group's own history
        skew_ns = float(np.median(co.skew_ns[inst_sel]))
        transfer_ns = float(np.median(co.transfer_ns[inst_sel]))
        fid = len(findings)
        emitted.append(_Emitted(frozenset(ranks), s0, s1, fid))
        parts.append(AnomalyPart(co.row[m], ROOT, fid, np.full(int(m.sum()), best.z)))
        start_ns = int(co.first_start_ns[inst_sel].min())
        end_ns = int(co.end_inst_ns[inst_sel].max())
        steps = [int(run.step_values[s0]), int(run.step_values[s1])]
        label = "inter-node network (NIC)" if spans else "NVLink"
        findings.append(
            {
                "component": comp,
                "component_id": component_id(run.frame, comp, ranks),
                "ranks": ranks,
                "confidence": timing_confidence(best.z, best.n_steps, p),
                "start_ns": start_ns,
                "end_ns": end_ns,
                "summary": f"{label}: collectives of ranks {ranks_text(ranks)} take "
                f"{math.expm1(eff) * 100:.0f}% longer than the same collectives of the same size earlier, on "
                f"every rank and without arrival skew, in steps {steps[0]}-{steps[1]}"
                + HOSTS_CAVEAT.get(run.frame.hosts_from, ""),
                "kind": "timing",
                "nodes": finding_nodes(run.frame, comp, ranks),
                "evidence": {
                    "transfer_ratio": round(math.exp(eff), 4),
                    "transfer_ns": transfer_ns,
                    "arrival_skew_ns": skew_ns,
                    "z": round(best.z, 2),
                    "steps": steps,
                    "abnormal_steps": int(best.n_steps),
                    "spans_hosts": spans,
                    "hosts_from": run.frame.hosts_from,
                },
                "reason": "transfer time (min duration across ranks) shifted up against the group's own "
                "history, with message size and the step's kernel speed regressed out",
            }
        )
