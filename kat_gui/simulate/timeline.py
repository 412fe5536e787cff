"""The timing engine: host launch pacing, GPU stream order and collective semantics, with or without faults.

Everything random is drawn once per (spec, seed) into :class:`SimContext`; :func:`run_timeline` is then a
deterministic function of the set of active faults. Running it with and without a fault on the *same* draws
gives the counterfactual the labels are computed from (see labels.py).

Model, per step (all times float ns of true time, relative to the first step):
- the scheduler (on the output rank: last stage, first TP rank) broadcasts the step; each rank's host starts it
  when the broadcast arrives (plus a small per-rank receive delay) and no earlier than its previous step ended;
  synchronized host pauses (GC) stall every rank at the start of chosen steps;
- the host launches ops one by one: a Python gap, then the runtime call; an op can start on the GPU at the
  launch time plus a launch latency, and no earlier than the previous op on that rank ended (one in-order
  queue per rank); with CUDA graphs the captured ops run back to back after one cudaGraphLaunch;
- a collective kernel starts when its rank arrives; the transfer starts when the last rank of the group
  arrives; every rank ends at last arrival + transfer + a small per-rank jitter;
- send/recv between pipeline stages are the same with a group of two (rank j of stage s and of stage s+1);
- the last stage copies the sampled tokens to the host and the host synchronizes on that copy.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from kat_gui.simulate.model import (
    C_COMPUTE,
    C_COPY,
    C_MEMORY,
    K_COLL,
    K_DTOH,
    K_HTOD,
    K_KERNEL,
    K_RECV,
    K_SEND,
    Op,
    StepShape,
    op_cost_us,
    stage_program,
    step_shapes,
)
from kat_gui.simulate.spec import FaultSpec, ScenarioSpec
from kat_gui.simulate.vocab import VOCABS, Vocabulary

US = 1000.0  # ns per µs

# Host-side costs (µs): Python/dispatch gap before an op, and the runtime call itself, by op kind.
PY_GAP_US = {K_KERNEL: 8.0, K_HTOD: 9.0, K_DTOH: 6.0, K_COLL: 12.0, K_SEND: 14.0, K_RECV: 14.0}
CALL_US = {K_KERNEL: 3.0, K_HTOD: 5.0, K_DTOH: 4.5, K_COLL: 4.0, K_SEND: 5.0, K_RECV: 5.0}
LAUNCH_LATENCY_US = 2.5  # from the start of the launch call to the earliest GPU start
GRAPH_PY_GAP_US = 25.0
GRAPH_LAUNCH_US = 14.0
GRAPH_NODE_GAP_US = 0.7
SYNC_LATENCY_US = 1.8
SCHED_US_EAGER = 220.0
SCHED_US_GRAPH = 180.0
RECV_DELAY_US = 12.0

# A GPU throttle slows the other kernel class too, much less (and HBM degradation likewise).
SECONDARY_FRACTION = 0.25

# host record names
H_LAUNCH, H_MEMCPY, H_SYNC, H_GRAPH, H_DRIVER_LAUNCH = range(5)
HOST_NAMES = (
    "cudaLaunchKernel",
    "cudaMemcpyAsync",
    "cudaStreamSynchronize",
    "cudaGraphLaunch",
    "cuLaunchKernelEx",
)


@dataclass
class Topology:
    tp: int
    pp: int
    nodes: int
    gpus_per_node: int
    node_of: np.ndarray  # rank -> node
    device_of: np.ndarray  # rank -> local GPU index

    @classmethod
    def of(cls, spec: ScenarioSpec) -> Topology:
        w = spec.world_size
        gpn = spec.gpus_per_node
        ranks = np.arange(w)
        return cls(spec.tp, spec.pp, spec.nodes, gpn, ranks // gpn, ranks % gpn)

    def stage_ranks(self, s: int) -> np.ndarray:
        return np.arange(s * self.tp, (s + 1) * self.tp)

    def tp_cross_node(self, s: int) -> bool:
        return len(set(self.node_of[self.stage_ranks(s)].tolist())) > 1

    def pair_cross_node(self, s: int) -> np.ndarray:
        """Per TP column j: does the stage s -> s+1 pair (rank j of each) cross nodes?"""
        return self.node_of[self.stage_ranks(s)] != self.node_of[self.stage_ranks(s + 1)]


@dataclass
class SimContext:
    """Everything fixed by (spec, seed): topology, shapes, programs, costs and all random draws."""

    spec: ScenarioSpec
    vocab: Vocabulary
    topo: Topology
    shapes: list[StepShape]
    programs: list[list[Op]]  # distinct programs
    infos: list[ProgramInfo]  # per program
    prog_of: np.ndarray  # [n_steps, pp] -> index into programs
    graphed: np.ndarray  # [n_steps] bool
    base_us: list[list[np.ndarray]]  # [n][s] -> per-op base duration (non-comm) µs
    nvl_us: list[list[np.ndarray]]  # [n][s] -> per-op NVLink transfer µs (per TP column for send/recv)
    nic_us: list[list[np.ndarray]]
    nbytes: list[list[np.ndarray]]
    speed: np.ndarray  # [world]
    warm: np.ndarray  # [n_steps]
    kernel_noise: np.ndarray  # [n, K, world]
    xfer_noise: np.ndarray
    py_noise: np.ndarray
    call_noise: np.ndarray
    lat_noise: np.ndarray
    node_gap: np.ndarray
    hiccup_u: np.ndarray
    hiccup_ns: np.ndarray
    jitter_ns: np.ndarray
    sched_ns: np.ndarray  # [n]
    recv_delay_ns: np.ndarray  # [n, world]
    pause_ns: np.ndarray  # [n, world]
    pause_steps: list[int]
    hang_op: int  # op index (within the onset step's program) at which a hang strikes; -1 if no hang


def build_context(spec: ScenarioSpec, seed: int) -> SimContext:
    """Draw everything random for (spec, seed). Faults never change a draw."""
    ss = np.random.SeedSequence([int(seed), 0x4B4154])
    r_shape, r_noise, r_host, r_fault = (np.random.default_rng(s) for s in ss.spawn(4))
    vocab = VOCABS[spec.vocabulary]
    topo = Topology.of(spec)
    n, w, pp = spec.n_steps, spec.world_size, spec.pp
    shapes = step_shapes(spec, r_shape)
    graphed = np.array([spec.cuda_graphs and sh.kind == "decode" for sh in shapes])

    programs: list[list[Op]] = []
    index: dict[tuple[int, bool, bool], int] = {}
    prog_of = np.zeros((n, pp), dtype=np.int64)
    base_us, nvl_us, nic_us, nbytes = [], [], [], []
    for i, sh in enumerate(shapes):
        rows_b, rows_v, rows_i, rows_n = [], [], [], []
        for s in range(pp):
            key = (s, sh.kind == "decode", bool(graphed[i]))
            if key not in index:
                index[key] = len(programs)
                programs.append(stage_program(spec, vocab, s, key[1], key[2]))
            prog_of[i, s] = index[key]
            prog = programs[index[key]]
            k = len(prog)
            b = np.zeros(k)
            v = np.zeros((k, spec.tp))
            c = np.zeros((k, spec.tp))
            nb = np.zeros(k)
            for j, op in enumerate(prog):
                if op.kind == K_COLL:
                    cross = np.full(spec.tp, topo.tp_cross_node(s))
                elif op.kind == K_SEND:
                    cross = topo.pair_cross_node(s)
                elif op.kind == K_RECV:
                    cross = topo.pair_cross_node(s - 1)
                else:
                    cross = np.zeros(spec.tp, dtype=bool)
                for cross_val in (False, True):
                    cols = cross == cross_val
                    if not cols.any():
                        continue
                    bu, vu, cu, byt = op_cost_us(op, sh, spec, cross_val)
                    b[j], nb[j] = bu, byt
                    v[j, cols], c[j, cols] = vu, cu
            rows_b.append(b)
            rows_v.append(v)
            rows_i.append(c)
            rows_n.append(nb)
        base_us.append(rows_b)
        nvl_us.append(rows_v)
        nic_us.append(rows_i)
        nbytes.append(rows_n)

    kmax = max(len(p) for p in programs)
    nz = spec.noise
    shape3 = (n, kmax, w)
    speed = r_noise.lognormal(0.0, nz.gpu_spread, w)
    kernel_noise = r_noise.lognormal(0.0, nz.kernel_sigma, shape3)
    xfer_noise = r_noise.lognormal(0.0, nz.kernel_sigma / 2, shape3)
    jitter_ns = r_noise.uniform(0.0, 2 * nz.coll_jitter_us * US, shape3)  # bounded: ends agree within ~1 µs
    py_noise = r_host.lognormal(0.0, nz.host_sigma, shape3)
    call_noise = r_host.lognormal(0.0, 0.15, shape3)
    lat_noise = r_host.lognormal(0.0, 0.2, shape3)
    node_gap = r_host.lognormal(0.0, 0.3, shape3)
    hiccup_u = r_host.random(shape3)
    hiccup_ns = r_host.exponential(nz.hiccup_us * US, shape3)
    sched_base = SCHED_US_GRAPH if spec.cuda_graphs else SCHED_US_EAGER
    sched_ns = sched_base * US * r_host.lognormal(0.0, 0.25, n)
    recv_delay_ns = RECV_DELAY_US * US * r_host.lognormal(0.0, 0.5, (n, w))

    cf = spec.confounders
    warm = np.ones(n)
    for i in range(min(cf.warmup_steps, n)):
        warm[i] = 1.0 + cf.warmup_slowdown * 0.5**i
    pause_ns = np.zeros((n, w))
    candidates = np.arange(min(cf.warmup_steps, n - 1), n)
    n_pause = min(cf.sync_pauses, len(candidates))
    pause_steps = sorted(int(x) for x in r_host.choice(candidates, n_pause, replace=False)) if n_pause else []
    for st in pause_steps:
        common = cf.pause_us * US * r_host.uniform(0.6, 1.4)
        pause_ns[st] = common * (1.0 + 0.01 * r_host.standard_normal(w))

    hang_op = -1
    for f in spec.faults:
        if f.kind == "hang":
            r = f.ranks[0]
            prog = programs[prog_of[f.onset_step, r // spec.tp]]
            hang_op = int(r_fault.integers(2, len(prog)))
    infos = [program_info(p, vocab) for p in programs]
    return SimContext(
        spec, vocab, topo, shapes, programs, infos, prog_of, graphed, base_us, nvl_us, nic_us, nbytes, speed, warm,
        kernel_noise, xfer_noise, py_noise, call_noise, lat_noise, node_gap, hiccup_u, hiccup_ns, jitter_ns,
        sched_ns, recv_delay_ns, pause_ns, pause_steps, hang_op,
    )  # fmt: skip


@dataclass
class ProgramInfo:
    """Per-op arrays of one step program, precomputed once."""

    kind: np.ndarray  # K_*
    klass: np.ndarray  # C_*
    graph_first: int  # index of the first captured op (-1: eager step)
    has_host: np.ndarray  # bool: the op has its own host runtime call (eager ops and the graph launch)
    host_of: np.ndarray  # index (within the step's host records) of the call that launched each op
    host_name: np.ndarray  # H_* of each host record of the step (without the final sync)
    py_us: np.ndarray  # Python gap before each host call (0 for captured ops)
    call_us: np.ndarray  # runtime call duration
    lat_mult: np.ndarray  # launch latency multiplier (a graph launch takes longer to reach the GPU)
    pre_us: np.ndarray  # GPU gap before a captured op (graph node overhead); 0 for eager ops
    coll: np.ndarray  # bool: collective/send/recv


def program_info(prog: list[Op], vocab: Vocabulary) -> ProgramInfo:
    k = len(prog)
    kind = np.array([op.kind for op in prog], dtype=np.int64)
    klass = np.array([op.klass for op in prog], dtype=np.int64)
    in_graph = np.array([op.in_graph for op in prog], dtype=bool)
    graph_first = int(np.argmax(in_graph)) if in_graph.any() else -1
    has_host = ~in_graph
    if graph_first >= 0:
        has_host[graph_first] = True
    host_of = np.cumsum(has_host) - 1
    names, py, call, lat, pre = [], np.zeros(k), np.zeros(k), np.ones(k), np.zeros(k)
    comm_launch = H_DRIVER_LAUNCH if vocab.nccl_driver_launch else H_LAUNCH
    for j, op in enumerate(prog):
        if j == graph_first:
            names.append(H_GRAPH)
            py[j], call[j], lat[j] = GRAPH_PY_GAP_US, GRAPH_LAUNCH_US, 3.0
        elif op.in_graph:
            pre[j] = GRAPH_NODE_GAP_US
        else:
            py[j], call[j] = PY_GAP_US[op.kind], CALL_US[op.kind]
            if op.kind in (K_HTOD, K_DTOH):
                names.append(H_MEMCPY)
            elif op.kind in (K_COLL, K_SEND, K_RECV):
                names.append(comm_launch)
            else:
                names.append(H_LAUNCH)
    coll = np.isin(kind, (K_COLL, K_SEND, K_RECV))
    return ProgramInfo(kind, klass, graph_first, has_host, host_of, np.array(names, dtype=np.int64), py, call, lat,
                       pre, coll)  # fmt: skip


@dataclass
class Block:
    """What one pipeline stage did in one step; arrays are [ops, TP ranks of the stage] (host: [calls, ranks])."""

    step: int
    stage: int
    prog: int  # index into ctx.programs
    start: np.ndarray
    end: np.ndarray
    last: np.ndarray  # collectives: last arrival of the group (NaN otherwise)
    factor: np.ndarray  # fault multiplier of the op's own work (kernels/copies) or of its transfer
    rootf: np.ndarray  # fault id behind that factor, -1 if none
    h_name: np.ndarray  # [calls]
    h_start: np.ndarray
    h_end: np.ndarray


@dataclass
class Timeline:
    blocks: list[list[Block]]  # [stage] -> blocks in step order
    step_begin: np.ndarray  # [n_steps, world] host start of each step (ProfilerStep begin)
    host_end: np.ndarray  # [world] host time after the last step
    hang_rank: int = -1
    hang_ns: float = np.inf  # true time the hung rank stopped
    stop_ns: float = np.inf  # true time every rank's profiler stopped (hang scenarios)


@dataclass
class _FaultMats:
    mult: np.ndarray  # [K, tp] multiplier of each op's own duration (kernels, copies)
    rootf: np.ndarray  # [K, tp] fault id with the largest single factor on the op, -1 if none
    xnvl: np.ndarray  # [K, tp] multiplier of the NVLink part of a transfer
    xnic: np.ndarray  # [K, tp] multiplier of the NIC part of a transfer
    host: np.ndarray  # [tp] multiplier of host-side costs
    hiccup: np.ndarray  # [tp] multiplier of the host hiccup probability
    best: np.ndarray  # [K, tp] largest single-fault factor (decides which fault a root belongs to)


def _active(f: FaultSpec, n: int) -> bool:
    return f.onset_step <= n < (f.end_step if f.end_step is not None else 1 << 62)


def _fault_mats(ctx: SimContext, faults: list[tuple[int, FaultSpec]], n: int, s: int) -> _FaultMats:
    """How the faults active at step ``n`` change the ops of stage ``s``."""
    spec, topo = ctx.spec, ctx.topo
    info = ctx.infos[ctx.prog_of[n, s]]
    k, tp = len(info.kind), spec.tp
    one = np.ones((k, tp))
    m = _FaultMats(
        one.copy(), np.full((k, tp), -1), one.copy(), one.copy(), np.ones(tp), np.ones(tp), one.copy()
    )
    ranks = topo.stage_ranks(s)
    klass, kind = info.klass, info.kind
    for fid, f in faults:
        if f.kind != "slowdown" or not _active(f, n):
            continue
        sev = f.severity
        in_f = np.isin(ranks, f.ranks)
        if f.component in ("gpu", "hbm"):
            primary, secondary = (C_COMPUTE, C_MEMORY) if f.component == "gpu" else (C_MEMORY, C_COMPUTE)
            per_op = np.where(
                klass == primary, 1 + sev, np.where(klass == secondary, 1 + SECONDARY_FRACTION * sev, 1.0)
            )
            fac = np.where(in_f[None, :], per_op[:, None], 1.0)
            m.mult *= fac
        elif f.component == "pcie":
            fac = np.where(in_f[None, :] & (klass == C_COPY)[:, None], 1 + sev, 1.0)
            m.mult *= fac
        elif f.component == "cpu":
            m.host = np.where(in_f, m.host * (1 + sev), m.host)
            m.hiccup = np.where(in_f, m.hiccup * (1 + 10 * sev), m.hiccup)
            continue  # cpu roots are decided from the launch gaps (labels.py), not from a multiplier
        else:  # nvlink / nic: the transfer time of collectives whose path uses the degraded link
            nvl, nic = ctx.nvl_us[n][s], ctx.nic_us[n][s]
            hit = np.zeros((k, tp), dtype=bool)
            fnodes = np.unique(topo.node_of[f.ranks])
            for j in np.flatnonzero(info.coll):
                if kind[j] == K_COLL:
                    if f.component == "nvlink":
                        hit[j] = in_f.any()
                    else:
                        hit[j] = topo.tp_cross_node(s) and bool(np.isin(topo.node_of[ranks], fnodes).any())
                else:
                    other = topo.stage_ranks(s + 1 if kind[j] == K_SEND else s - 1)
                    if f.component == "nvlink":
                        hit[j] = in_f | np.isin(other, f.ranks)
                    else:
                        hit[j] = np.isin(topo.node_of[ranks], fnodes) | np.isin(topo.node_of[other], fnodes)
            on_nvl = hit & (nvl > 0) if f.component == "nvlink" else np.zeros_like(hit)
            on_nic = hit & (nic > 0) if f.component == "nic" else np.zeros_like(hit)
            m.xnvl = np.where(on_nvl, m.xnvl * (1 + sev), m.xnvl)
            m.xnic = np.where(on_nic, m.xnic * (1 + sev), m.xnic)
            tot = nvl + nic
            slowed = nvl * np.where(on_nvl, 1 + sev, 1.0) + nic * np.where(on_nic, 1 + sev, 1.0)
            fac = np.where((tot > 0) & (on_nvl | on_nic), slowed / np.where(tot > 0, tot, 1.0), 1.0)
        m.rootf = np.where(fac > m.best, fid, m.rootf)
        np.maximum(m.best, fac, out=m.best)
    return m


def _chain(e_prev: np.ndarray, ready: np.ndarray, pre: np.ndarray, dur: np.ndarray) -> np.ndarray:
    """End times of ops run in order on one queue: start_k = max(ready_k, end_{k-1} + pre_k), end = start + dur.

    Arrays are [ops, ranks]; solved without a Python loop: end_k = c_k + max(e_prev, max_{j<=k}(ready_j + dur_j
    - c_j)) with c the running sum of pre + dur.
    """
    c = np.cumsum(pre + dur, axis=0)
    cand = ready + dur - c
    cand[0] = np.maximum(cand[0], e_prev)
    return c + np.maximum.accumulate(cand, axis=0)


def run_timeline(ctx: SimContext, faults: list[tuple[int, FaultSpec]]) -> Timeline:
    """Simulate the run with ``faults`` (pairs of fault id and spec) active. Deterministic given ctx."""
    spec = ctx.spec
    n_steps, tp, pp, w = spec.n_steps, spec.tp, spec.pp, spec.world_size
    gfree = np.zeros(w)
    h_end = np.zeros(w)
    step_begin = np.zeros((n_steps, w))
    out_rank = (pp - 1) * tp
    blocks: list[list[Block]] = [[] for _ in range(pp)]
    hang = next(((fid, f) for fid, f in faults if f.kind == "hang"), None)
    hang_rank = hang[1].ranks[0] if hang else -1
    hang_step = hang[1].onset_step if hang else -1
    hang_ns = np.inf
    pending: tuple[Block, int, np.ndarray] | None = None  # the send waiting for its receiver
    hic_prob = spec.noise.hiccup_prob

    for n in range(n_steps):
        warm = ctx.warm[n]
        out_mats = _fault_mats(ctx, faults, n, pp - 1)
        # the output rank's host finished step n-1 (its sync); the scheduler then broadcasts step n
        bcast = h_end[out_rank] + ctx.sched_ns[n] * out_mats.host[0] * warm
        for s in range(pp):
            R = slice(s * tp, (s + 1) * tp)
            pi = int(ctx.prog_of[n, s])
            info = ctx.infos[pi]
            k = len(info.kind)
            fm = out_mats if s == pp - 1 else _fault_mats(ctx, faults, n, s)
            hm = fm.host * warm
            h0 = np.maximum(h_end[R], bcast + ctx.recv_delay_ns[n, R] * hm) + ctx.pause_ns[n, R]
            step_begin[n, R] = h0

            # host: Python gap + runtime call per host op, one cumulative sum per step
            py = info.py_us[:, None] * US * ctx.py_noise[n, :k, R] * hm
            py = py + np.where(ctx.hiccup_u[n, :k, R] < hic_prob * fm.hiccup, ctx.hiccup_ns[n, :k, R], 0.0)
            py = np.where(info.has_host[:, None], py, 0.0)
            call = info.call_us[:, None] * US * ctx.call_noise[n, :k, R] * hm
            after = h0 + np.cumsum(py + call, axis=0)
            cs = after - call
            ready = np.where(
                info.has_host[:, None],
                cs + LAUNCH_LATENCY_US * US * info.lat_mult[:, None] * ctx.lat_noise[n, :k, R],
                -np.inf,
            )
            pre = info.pre_us[:, None] * US * ctx.node_gap[n, :k, R] * warm
            base, nvl, nic = ctx.base_us[n][s], ctx.nvl_us[n][s], ctx.nic_us[n][s]
            dur = base[:, None] * US * ctx.kernel_noise[n, :k, R] * ctx.speed[R] * warm * fm.mult
            xfer = (nvl * fm.xnvl + nic * fm.xnic) * US * warm
            xfer *= np.where(
                (info.kind == K_COLL)[:, None],
                ctx.xfer_noise[n, :k, s * tp][:, None],
                ctx.xfer_noise[n, :k, R],
            )
            if n == hang_step and s == hang_rank // tp:
                ready = ready.copy()
                ready[ctx.hang_op, hang_rank - s * tp] = np.inf

            start = np.empty((k, tp))
            end = np.empty((k, tp))
            last = np.full((k, tp), np.nan)
            e_prev = gfree[R]
            a = 0
            coll_idx = np.flatnonzero(info.coll)
            for c in [*coll_idx.tolist(), k]:
                if c > a:  # run of ordinary ops before the next collective
                    end[a:c] = _chain(e_prev, ready[a:c], pre[a:c], dur[a:c])
                    start[a:c] = end[a:c] - dur[a:c]
                    e_prev = end[c - 1]
                if c == k:
                    break
                arr = np.maximum(ready[c], e_prev + pre[c])
                start[c] = arr
                kind = info.kind[c]
                if kind == K_COLL:
                    last[c] = arr.max()
                    end[c] = last[c] + xfer[c] + ctx.jitter_ns[n, c, R]
                elif kind == K_SEND:
                    end[c] = np.nan  # known once the receiving stage arrives
                else:  # K_RECV: pairs with the previous stage's send of this step
                    assert pending is not None
                    sblock, sk, sarr = pending
                    lst = np.maximum(arr, sarr)
                    last[c] = lst
                    end[c] = lst + xfer[c] + ctx.jitter_ns[n, c, R]
                    sblock.last[sk] = lst
                    sblock.end[sk] = lst + xfer[c] + ctx.jitter_ns[n, sk, s * tp - tp : s * tp]
                    gfree[s * tp - tp : s * tp] = sblock.end[sk]
                    pending = None
                e_prev = end[c]
                a = c + 1
            if n == hang_step and s == hang_rank // tp:
                # the hung op would have started here; it never does (its ready time was set to infinity)
                col, j = hang_rank - s * tp, ctx.hang_op
                orig_ready = (
                    cs[j, col] + LAUNCH_LATENCY_US * US * info.lat_mult[j] * ctx.lat_noise[n, j, s * tp + col]
                )
                hang_ns = float(
                    max(end[j - 1, col] + pre[j, col], orig_ready if info.has_host[j] else -np.inf)
                )

            h_name = info.host_name
            h_start = cs[info.has_host]
            h_stop = after[info.has_host]
            h = after[-1]
            if info.kind[-1] == K_DTOH:
                sync_s = h + 1.5 * US * ctx.py_noise[n, k - 1, R] * hm
                h = np.maximum(sync_s + 1.0 * US, end[-1] + SYNC_LATENCY_US * US)
                h_name = np.append(h_name, H_SYNC)
                h_start = np.vstack([h_start, sync_s])
                h_stop = np.vstack([h_stop, h])
            tot = nvl + nic
            factor = np.where(
                info.coll[:, None], (nvl * fm.xnvl + nic * fm.xnic) / np.where(tot > 0, tot, 1.0), fm.mult
            )
            blk = Block(n, s, pi, start, end, last, factor, fm.rootf, h_name, h_start, h_stop)
            blocks[s].append(blk)
            if info.kind[-1] == K_SEND:
                pending = (blk, k - 1, start[k - 1])
            else:
                gfree[R] = end[-1]
            h_end[R] = h
    stop_ns = hang_ns + spec.hang_tail_us * US if hang else np.inf
    return Timeline(blocks, step_begin, h_end.copy(), hang_rank, hang_ns, stop_ns)
