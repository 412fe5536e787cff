"""Alignment across ranks: which step each GPU event belongs to, which collective kernels are one instance,
and the clock offsets between hosts.

Assumptions (stated because detection is only as good as them):

- Steps. ``ProfilerStep#N`` host annotations (else step-like NVTX / annotation ranges, ``frame.py``) name the
  same step on every rank. A GPU event belongs to the
  step whose annotation contains its *launch* (the runtime call with the same correlation id), because GPU
  work runs behind the host and can end after the step's host range has closed. Without a launch, its own
  start decides. Without annotations, a *marker kernel* cuts steps: the kernel name that every rank runs the
  same number of times (at least 3), with the smallest such count (a once-per-step kernel such as the
  embedding or the sampler). Without either, the run is one step.
- Collectives. The k-th collective kernel of a process group on each rank is one instance (``seq`` when the
  trace records it, else the order of starts). Without a process-group column the k-th kernel of the same
  collective name is used, which assumes every rank runs the same collectives (SPMD tensor parallelism).
- Clocks. Ranks on one host share a clock. Members of a collective instance end together by construction,
  so the offset of a clock domain is the median, over the instances that span more than one domain, of its
  end minus the instance's median end (an instance inside one host says nothing about that host's clock).
  Domains are hosts when they are known, each rank otherwise (a per-rank offset is harmless on one host:
  it comes out near zero). Without known hosts, ranks whose clocks differ by more than a gap are taken to be
  on different hosts (:func:`_hosts_from_clocks`); the offsets are then estimated again per host.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from kat_gui.detect.classify import COLLECTIVE
from kat_gui.detect.frame import RunFrame
from kat_gui.detect.stats import count_before_by_rank, segments
from kat_gui.events import EventKind

_REL_BITS = 44  # relative ns fit in 44 bits (~4.9 h of trace); rank goes above them
_CORR_BITS = 40


def _rank_time_key(rank: np.ndarray, t_rel: np.ndarray) -> np.ndarray:
    return (rank.astype(np.int64) << _REL_BITS) | t_rel


def launch_times(fr: RunFrame) -> np.ndarray:
    """Host launch time of each GPU event (runtime call with the same rank and correlation); -1 if none."""
    row = launch_rows(fr)
    out = np.full(len(row), -1, dtype=np.int64)
    hit = row >= 0
    out[hit] = fr.launch["start_ns"][row[hit]]
    return out


def launch_rows(fr: RunFrame) -> np.ndarray:
    """Per GPU event, the row of ``fr.launch`` that launched it (same rank and correlation; the first such row
    when several match); -1 if none."""
    g = fr.gpu
    out = np.full(fr.n_gpu, -1, dtype=np.int64)
    la = fr.launch
    if not len(la["correlation"]) or not fr.n_gpu:
        return out
    lkey = (la["rank"].astype(np.int64) << _CORR_BITS) | (la["correlation"] & ((1 << _CORR_BITS) - 1))
    # Runtime calls are stored per (thread, start): correlations usually already ascend per rank.
    order = np.arange(len(lkey)) if not (np.diff(lkey) < 0).any() else np.argsort(lkey, kind="stable")
    lkey_s = lkey[order]
    has = g["correlation"] >= 0
    gkey = (g["rank"][has].astype(np.int64) << _CORR_BITS) | (g["correlation"][has] & ((1 << _CORR_BITS) - 1))
    pos = np.searchsorted(lkey_s, gkey)
    pos_c = np.minimum(pos, len(lkey_s) - 1)
    hit = lkey_s[pos_c] == gkey
    vals = np.full(len(gkey), -1, dtype=np.int64)
    vals[hit] = order[pos_c[hit]]
    out[has] = vals
    return out


@dataclass
class Steps:
    """Step number per GPU event (-1 outside every step) and how steps were found."""

    step: np.ndarray
    method: str  # "profiler_step" | "marker_kernel" | "none"
    marker: str | None
    count: int


def assign_steps(fr: RunFrame, launch_ns: np.ndarray) -> Steps:
    g = fr.gpu
    n = fr.n_gpu
    st = fr.steps
    if len(st["num"]) and n:
        t = np.where(launch_ns >= 0, launch_ns, g["start_ns"])
        t0 = min(int(t.min()), int(st["start_ns"].min()))
        span = max(int(t.max()), int(st["end_ns"].max())) - t0
        if span < (1 << _REL_BITS):
            skey = _rank_time_key(st["rank"], st["start_ns"] - t0)  # sorted: steps are (rank, start) ordered
            ekey = _rank_time_key(g["rank"], t - t0)
            idx = np.searchsorted(skey, ekey, side="right") - 1
            idx_c = np.maximum(idx, 0)
            inside = (idx >= 0) & (st["rank"][idx_c] == g["rank"]) & (t < st["end_ns"][idx_c])
            step = np.where(inside, st["num"][idx_c], -1).astype(np.int64)
            return Steps(step, fr.step_source, fr.step_name, int(len(np.unique(st["num"]))))
    marker = _marker_name(fr)
    if marker is not None:
        is_m = (g["name"] == marker) & (g["kind"] == EventKind.KERNEL)
        # gpu rows are per track, so the count runs in (rank, start) order
        step = count_before_by_rank(g["rank"], g["start_ns"], is_m)
        return Steps(step, "marker_kernel", fr.strings[marker], int(step.max() + 1) if n else 0)
    return Steps(np.zeros(n, dtype=np.int64), "none", None, 1 if n else 0)


def _marker_name(fr: RunFrame) -> int | None:
    g = fr.gpu
    ranks = fr.ranks
    k = (g["kind"] == EventKind.KERNEL) & (g["cls"] != COLLECTIVE)
    if not k.any() or len(ranks) == 0:
        return None
    pair = (g["name"][k].astype(np.int64) << 20) | np.searchsorted(ranks, g["rank"][k])
    u, c = np.unique(pair, return_counts=True)
    return marker_from_counts(u, c, len(ranks))


def marker_from_counts(pair: np.ndarray, count: np.ndarray, n_ranks: int) -> int | None:
    """The marker kernel from the sorted distinct ``(name << 20) | rank index`` pairs of the run's
    non-collective kernels and their counts: run equally often (>= 3 times) on every rank, the rarest such
    name (ties: the lowest string id)."""
    names = pair >> 20
    nu, first_idx, n_ranks_of = np.unique(names, return_index=True, return_counts=True)
    cmin = np.minimum.reduceat(count, first_idx)
    cmax = np.maximum.reduceat(count, first_idx)
    ok = (n_ranks_of == n_ranks) & (cmin == cmax) & (cmin >= 3)
    if not ok.any():
        return None
    cand = np.flatnonzero(ok)
    best = cand[np.argmin(cmin[cand])]
    return int(nu[best])


@dataclass
class Collectives:
    """Collective instances matched across ranks.

    Member arrays (one row per collective kernel that belongs to an instance of >= 2 ranks), ordered by
    (instance, corrected start): ``row`` (into ``RunFrame.gpu``), ``inst``, ``rank``, ``start_ns`` / ``end_ns``
    (clock-corrected), ``wait_ns`` (last arrival - own start), ``late_ns`` (own start - lower-median start),
    ``is_last``. Instance arrays: ``skew_ns`` (last - first start), ``transfer_ns`` (min duration),
    ``size`` (members), ``last_rank``, ``first_start_ns``, ``last_start_ns``, ``end_ns`` (max end),
    ``step`` (step of the earliest member), ``group`` (process-group or name id), ``spans_hosts``.
    """

    row: np.ndarray
    inst: np.ndarray
    rank: np.ndarray
    start_ns: np.ndarray
    end_ns: np.ndarray
    wait_ns: np.ndarray
    late_ns: np.ndarray
    is_last: np.ndarray
    skew_ns: np.ndarray
    transfer_ns: np.ndarray
    size: np.ndarray
    last_rank: np.ndarray
    first_start_ns: np.ndarray
    last_start_ns: np.ndarray
    end_inst_ns: np.ndarray
    step: np.ndarray
    group: np.ndarray
    spans_hosts: np.ndarray
    grouping: str
    offsets_ns: dict[str, int]
    offset_residual_ns: float
    clock_domains: str = "ranks"  # "hosts" when offsets are per host, else "ranks"

    @property
    def n(self) -> int:
        return len(self.skew_ns)


def match_collectives(fr: RunFrame, steps: Steps) -> Collectives:
    g = fr.gpu
    rows = np.flatnonzero((g["cls"] == COLLECTIVE) & (g["kind"] == EventKind.KERNEL))
    rank = g["rank"][rows]
    start = g["start_ns"][rows]
    has_pg = g["pg"][rows] >= 0
    grouping = "process_group" if has_pg.any() else "collective_name"
    # Group id: the process group when known; else the collective (or kernel) name.
    coll = g["coll"][rows]
    name_key = np.where(coll >= 0, coll, g["name"][rows])
    group = np.where(has_pg, g["pg"][rows].astype(np.int64), -2 - name_key.astype(np.int64))
    if not has_pg.all() and len(rows):
        group = _split_groups_by_end(rank, start, g["end_ns"][rows], group, ~has_pg)
    seq = g["seq"][rows]
    order = np.lexsort((start, group, rank))
    rows, rank, start, group, seq, has_pg = (a[order] for a in (rows, rank, start, group, seq, has_pg))
    rg = (rank.astype(np.int64) << 32) ^ (group & 0xFFFFFFFF)
    first, length = segments(rg)
    ordinal = np.arange(len(rows), dtype=np.int64) - np.repeat(first, length)
    # Use recorded sequence numbers only where the whole (rank, group) has them.
    seq_ok = np.repeat(np.minimum.reduceat(seq, first) >= 0, length) if len(first) else np.zeros(0, bool)
    ordinal = np.where(seq_ok & has_pg, seq, ordinal)
    ikey = (group << 32) ^ (ordinal & 0xFFFFFFFF)
    uniq, inst = np.unique(ikey, return_inverse=True)
    size = np.bincount(inst, minlength=len(uniq))
    keep = size[inst] >= 2
    rows, rank, inst, group = rows[keep], rank[keep], inst[keep], group[keep]
    _, inst = np.unique(inst, return_inverse=True)
    n_inst = int(inst.max() + 1) if len(inst) else 0
    # Number instances in order of their first start, so instance 0 is the run's first collective.
    if n_inst:
        first_start = np.full(n_inst, np.iinfo(np.int64).max)
        np.minimum.at(first_start, inst, g["start_ns"][rows])
        rank_of = np.empty(n_inst, dtype=np.int64)
        rank_of[np.argsort(first_start, kind="stable")] = np.arange(n_inst)
        inst = rank_of[inst]

    start = g["start_ns"][rows]
    end = g["end_ns"][rows]
    offsets, residual, off_rank = _clock_offsets(fr, rank, inst, end, n_inst)
    if not fr.hosts_known and _hosts_from_clocks(fr, _pairwise_rank_offsets(fr, rank, inst, end), residual):
        offsets, residual, off_rank = _clock_offsets(fr, rank, inst, end, n_inst)
    start = start - off_rank
    end = end - off_rank

    order = np.lexsort((start, inst))
    rows, rank, inst, group, start, end = (a[order] for a in (rows, rank, inst, group, start, end))
    first, length = segments(inst)
    last_idx = first + length - 1
    first_start = start[first]
    last_start = start[last_idx]
    lower_med = start[first + (length - 1) // 2]
    dur = end - start
    transfer = np.minimum.reduceat(dur, first) if len(first) else np.zeros(0, np.int64)
    end_inst = np.maximum.reduceat(end, first) if len(first) else np.zeros(0, np.int64)
    wait = np.repeat(last_start, length) - start
    late = start - np.repeat(lower_med, length)
    is_last = np.zeros(len(rows), dtype=bool)
    is_last[last_idx] = True
    step_inst = steps.step[rows[first]] if len(first) else np.zeros(0, np.int64)
    host_codes = _host_codes(fr, rank)
    hmin = np.minimum.reduceat(host_codes, first) if len(first) else np.zeros(0, np.int64)
    hmax = np.maximum.reduceat(host_codes, first) if len(first) else np.zeros(0, np.int64)
    return Collectives(
        row=rows,
        inst=inst,
        rank=rank,
        start_ns=start,
        end_ns=end,
        wait_ns=wait,
        late_ns=late,
        is_last=is_last,
        skew_ns=last_start - first_start,
        transfer_ns=transfer,
        size=length,
        last_rank=rank[last_idx],
        first_start_ns=first_start,
        last_start_ns=last_start,
        end_inst_ns=end_inst,
        step=step_inst,
        group=group[first] if len(first) else np.zeros(0, np.int64),
        spans_hosts=hmin != hmax,
        grouping=grouping,
        offsets_ns=offsets,
        offset_residual_ns=residual,
        clock_domains="hosts" if fr.hosts_known else "ranks",
    )


SAME_GROUP_END_MAD_NS = 10_000
SAME_GROUP_INSTANCES = 256


def _split_groups_by_end(
    rank: np.ndarray, start: np.ndarray, end: np.ndarray, group: np.ndarray, todo: np.ndarray
) -> np.ndarray:
    """Without process groups, split each collective name's ranks into the groups that run it together.

    Members of one instance end together (up to jitter), so for two ranks of one group the difference of
    their k-th ends is constant over k (a clock offset is a constant too); for ranks of different groups
    (pipeline stages, independent replicas) it wanders. Ranks whose end difference has a MAD over the
    instances below ``SAME_GROUP_END_MAD_NS`` are joined (connected components). Rows of the result keep their group
    id, with the partition index folded in.
    """
    out = group.copy()
    for grp in np.unique(group[todo]):
        sel = np.flatnonzero(group == grp)
        ranks_g = np.unique(rank[sel])
        if len(ranks_g) < 3:
            continue
        order = sel[np.lexsort((start[sel], rank[sel]))]
        r_o = rank[order]
        counts = np.array([np.count_nonzero(r_o == r) for r in ranks_g])
        k = int(counts.min())
        if k < 3:
            continue
        # The MAD is read from at most SAME_GROUP_INSTANCES instances spread over the run: its cost is
        # R^2 x instances (at 1,024 ranks x 1,400 instances, a minute).
        pick = np.unique(np.linspace(0, k - 1, min(k, SAME_GROUP_INSTANCES)).round().astype(np.int64))
        ends = np.stack([end[order][r_o == r][pick] for r in ranks_g]).astype(np.float64)  # [ranks, k]
        adj = _end_mad(ends) <= SAME_GROUP_END_MAD_NS
        roots = np.arange(len(ranks_g))
        for _ in range(len(ranks_g)):  # connected components by min-label propagation (few ranks)
            new = np.where(adj, roots[None, :], len(ranks_g)).min(axis=1)
            if np.array_equal(new, roots):
                break
            roots = new
        if len(np.unique(roots)) == 1:
            continue
        part = roots[np.searchsorted(ranks_g, rank[sel])]
        out[sel] = grp * 1024 - part  # stays negative and distinct from process-group ids
    return out


PAIR_BLOCK_CELLS = 1 << 22  # differences held at once by _end_mad (8 bytes each: 32 MB)


def _end_mad(ends: np.ndarray) -> np.ndarray:
    """[ranks, ranks] MAD over the instances of the difference of two ranks' k-th ends (``ends``: [ranks, k]).
    Computed for a block of rows at a time: the whole [ranks, ranks, k] difference would hold 8 x R^2 x k
    bytes (11 GB at 1,024 ranks x 1,400 instances); each pair's value is the same as computed at once."""
    n, k = ends.shape
    mad = np.empty((n, n), dtype=np.float64)
    rows = max(1, PAIR_BLOCK_CELLS // max(n * k, 1))
    for a in range(0, n, rows):
        diff = ends[a : a + rows, None, :] - ends[None, :, :]
        med = np.median(diff, axis=2, keepdims=True)
        mad[a : a + rows] = np.median(np.abs(diff - med), axis=2)
    return mad


CLOCK_CLUSTER_MIN_NS = 20_000


def _hosts_from_clocks(fr: RunFrame, offsets: dict[int, float], residual_ns: float) -> bool:
    """Without host names, ranks that share a clock share a host: cluster the per-rank clock offsets (a gap
    wider than max(20 µs, 20 x the residual) separates hosts). Clocks synchronised across hosts (PTP) leave
    one cluster, and the run is then treated as one host. On two clusters or more, sets ``fr.host_of_rank``,
    ``fr.hosts_known`` and ``fr.hosts_from = "clock_offsets"`` and returns True."""
    if len(offsets) < 2:
        return False
    ranks = np.array(list(offsets), dtype=np.int64)
    vals = np.array(list(offsets.values()), dtype=np.float64)
    order = np.argsort(vals, kind="stable")
    gap = max(CLOCK_CLUSTER_MIN_NS, 20.0 * residual_ns)
    cluster = np.zeros(len(vals), dtype=np.int64)
    cluster[order] = np.cumsum(np.r_[0, np.diff(vals[order]) > gap])
    if cluster.max() == 0:
        return False
    # Number the clusters by their lowest rank, so that host0 holds rank 0 whatever the sign of the offsets.
    first_rank = {int(c): int(ranks[cluster == c].min()) for c in np.unique(cluster)}
    number = {c: i for i, c in enumerate(sorted(first_rank, key=first_rank.get))}
    fr.host_of_rank = {int(r): f"clock{number[int(c)]}" for r, c in zip(ranks, cluster, strict=True)}
    fr.hosts_known = True
    fr.hosts_from = "clock_offsets"
    return True


def _pairwise_rank_offsets(
    fr: RunFrame, rank: np.ndarray, inst: np.ndarray, end: np.ndarray
) -> dict[int, float]:
    """Clock offset of each rank from the ranks it meets in collectives, for host inference.

    Per instance, each member's end minus the end of the instance's lowest rank; per pair of ranks, the
    median of that over their shared instances; offsets then follow the pairs along a spanning forest that
    prefers the pairs with the most shared instances (the lowest rank of each forest component is 0). Unlike a
    per-rank median against all instances, this finds a host's offset when most of its ranks' collectives
    stay inside the host (tensor parallel per node, pipeline stages across nodes)."""
    ranks = [int(r) for r in fr.ranks]
    if len(rank) < 2 or len(ranks) < 2:
        return dict.fromkeys(ranks, 0.0)
    order = np.lexsort((end, rank, inst))
    r_o, i_o, e_o = rank[order].astype(np.int64), inst[order], end[order]
    first, length = segments(i_o)
    ref_rank = np.repeat(r_o[first], length)
    ref_end = np.repeat(e_o[first], length)
    other = r_o != ref_rank
    a, b, d = ref_rank[other], r_o[other], (e_o - ref_end)[other]
    if not len(a):
        return dict.fromkeys(ranks, 0.0)
    key = (a << 32) | b
    ko = np.lexsort((d, key))
    key, d = key[ko], d[ko]
    pf, pl = segments(key)
    med = d[pf + (pl - 1) // 2].astype(np.float64)
    pa, pb = (key[pf] >> 32).tolist(), (key[pf] & 0xFFFFFFFF).tolist()
    # Spanning forest, pairs with the most shared instances first (Kruskal with union-find).
    parent = {r: r for r in ranks}

    def root(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    adj: dict[int, list[tuple[int, float]]] = {r: [] for r in ranks}
    for j in np.lexsort((np.arange(len(pl)), -pl)).tolist():
        x, y = root(pa[j]), root(pb[j])
        if x == y:
            continue
        parent[max(x, y)] = min(x, y)
        adj[pa[j]].append((pb[j], float(med[j])))
        adj[pb[j]].append((pa[j], -float(med[j])))
    off: dict[int, float] = {}
    for r0 in ranks:  # ascending: each component starts from its lowest rank
        if r0 in off:
            continue
        off[r0] = 0.0
        todo = [r0]
        while todo:
            x = todo.pop()
            for y, m in adj[x]:
                if y not in off:
                    off[y] = off[x] + m
                    todo.append(y)
    return off


def _host_codes(fr: RunFrame, rank: np.ndarray) -> np.ndarray:
    labels = sorted({fr.host_of_rank.get(int(r), "") for r in fr.ranks})
    code = {h: i for i, h in enumerate(labels)}
    lut = np.array([code[fr.host_of_rank.get(int(r), "")] for r in fr.ranks], dtype=np.int64)
    return lut[np.searchsorted(fr.ranks, rank)] if len(rank) else np.zeros(0, np.int64)


def _clock_offsets(
    fr: RunFrame, rank: np.ndarray, inst: np.ndarray, end: np.ndarray, n_inst: int
) -> tuple[dict[str, int], float, np.ndarray]:
    """Per clock domain: median over instances of (member end - instance median end); the domain of the
    lowest rank is the reference (offset 0). Returns offsets by domain label, the median absolute residual
    after correction, and the offset of each member."""
    if fr.hosts_known:
        domain_of_rank = {int(r): fr.host_of_rank[int(r)] for r in fr.ranks}
    else:
        domain_of_rank = {int(r): f"rank{int(r)}" for r in fr.ranks}
    labels = sorted(
        set(domain_of_rank.values()), key=lambda s: min(r for r, d in domain_of_rank.items() if d == s)
    )
    code = {d: i for i, d in enumerate(labels)}
    lut = np.array([code[domain_of_rank[int(r)]] for r in fr.ranks], dtype=np.int64)
    if not len(rank) or len(labels) < 2:
        return {d: 0 for d in labels}, 0.0, np.zeros(len(rank), dtype=np.int64)
    dom = lut[np.searchsorted(fr.ranks, rank)]
    order = np.lexsort((end, inst))
    e_s = end[order]
    first, length = segments(inst[order])
    med_end = e_s[first + (length - 1) // 2]
    at = np.searchsorted(inst[order][first], inst)
    resid = end - med_end[at]
    # Only instances that span two domains or more tell one domain's clock from another's.
    d_s = dom[order]
    spans = (np.minimum.reduceat(d_s, first) != np.maximum.reduceat(d_s, first))[at]
    off = np.zeros(len(labels), dtype=np.int64)
    for i in range(len(labels)):
        sel = (dom == i) & spans
        if sel.any():
            off[i] = int(np.median(resid[sel]))
    off -= off[0]
    member_off = off[dom]
    after = resid - member_off
    after -= int(np.median(after))
    return {labels[i]: int(off[i]) for i in range(len(labels))}, float(np.median(np.abs(after))), member_off


ROLE_NONE, ROLE_LATE, ROLE_WAITED = 0, 1, 2


def instance_roles(co: Collectives) -> np.ndarray:
    """Per member row of ``co``: ROLE_LATE for the last arriver of an instance whose arrival skew exceeds its
    transfer time (the others waited longer than the data took to move), ROLE_WAITED for members whose
    wait exceeds the transfer time (their kernel is long only because they waited), ROLE_NONE otherwise.

    The early ranks of a skewed instance are symptoms, never roots: their long kernels blame the wrong rank.
    """
    role = np.zeros(len(co.rank), dtype=np.uint8)
    if not co.n:
        return role
    transfer = co.transfer_ns[co.inst]
    skewed = co.skew_ns[co.inst] > transfer
    role[co.is_last & skewed] = ROLE_LATE
    role[~co.is_last & skewed & (co.wait_ns > transfer)] = ROLE_WAITED
    return role
