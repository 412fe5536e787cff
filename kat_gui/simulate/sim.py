"""``simulate()``: run the timelines, label every instance, write per-rank Kineto traces and truth.json."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from kat_gui.errors import KatInputError
from kat_gui.simulate.kineto import RankEvents, op_names, process_groups, render_trace
from kat_gui.simulate.labels import (
    CPU_ROOT_MIN_NS,
    ROOT,
    SYMPTOM,
    SYMPTOM_MIN_NS,
    RankOps,
    collective_ids,
    flatten,
    keep_masks,
    label_rank,
    typical_waits,
)
from kat_gui.simulate.model import CLASS_NAMES, K_COLL, K_DTOH, K_HTOD, K_RECV, K_SEND, KIND_NAMES
from kat_gui.simulate.spec import FaultSpec, ScenarioSpec
from kat_gui.simulate.timeline import SECONDARY_FRACTION, SimContext, Timeline, build_context, run_timeline

TRUTH_SCHEMA = "kat.truth/1"
COMPUTE_STREAM = 7
GRAPH_BUCKETS = (1, 2, 4, 8, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512)
# 2026-01-01T00:00:00Z; each seed shifts the run by whole seconds within a day
EPOCH0_NS = 1_767_225_600_000_000_000


def resolve_scenario(scenario: str | ScenarioSpec) -> ScenarioSpec:
    if isinstance(scenario, ScenarioSpec):
        return scenario
    from kat_gui.simulate.scenarios import SCENARIOS

    if scenario not in SCENARIOS:
        raise KatInputError(
            None,
            f"unknown scenario {scenario!r}; `kat simulate --list` shows the {len(SCENARIOS)} known ones",
        )
    return SCENARIOS[scenario]


def simulate(outdir: str | os.PathLike, scenario: str | ScenarioSpec, seed: int = 0) -> Path:
    """Write ``rank-<r>.pt.trace.json`` for every rank and ``truth.json`` into ``outdir``; return ``outdir``.

    Same (scenario, seed) -> byte-identical files. Raises KatInputError for an unknown scenario name or an
    inconsistent spec, or when ``outdir`` exists and is not a directory.
    """
    spec = resolve_scenario(scenario)
    spec.validate()
    out = Path(outdir)
    if out.exists() and not out.is_dir():
        raise KatInputError(out, "exists and is not a directory")
    out.mkdir(parents=True, exist_ok=True)

    ctx = build_context(spec, seed)
    faults = list(enumerate(spec.faults))
    coll_ids = collective_ids(ctx)
    tl = run_timeline(ctx, faults)
    ranks_all = flatten(ctx, tl, coll_ids)
    if faults:
        ranks_none = flatten(ctx, run_timeline(ctx, []), coll_ids)
        if len(faults) == 1:
            minus = [ranks_none]
        else:
            minus = [
                flatten(ctx, run_timeline(ctx, [f for f in faults if f[0] != k]), coll_ids)
                for k in range(len(faults))
            ]
        typical = typical_waits(ctx, ranks_none)
    else:
        ranks_none, minus, typical = ranks_all, [], {}

    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0x5452]))
    epoch0 = EPOCH0_NS + int(rng.integers(0, 86_400)) * 1_000_000_000 + int(rng.integers(0, 1_000_000_000))
    offsets_ns = _clock_offsets(spec, rng)
    trace_id = rng.bytes(16).hex().upper()
    names = op_names(ctx)

    w = spec.world_size
    labels_out: dict[str, dict[str, list]] = {}
    step_starts: dict[str, list[int]] = {}
    limits_written: list[int | None] = []
    fault_counts = np.zeros((len(faults), 2), dtype=np.int64)
    fault_steps: list[set[int]] = [set() for _ in faults]
    for r in range(w):
        node = int(ctx.topo.node_of[r])
        shift = epoch0 + offsets_ns[node]
        ops = ranks_all[r]
        gk, hk, limit = keep_masks(tl, r, ops)
        label, fault = label_rank(ctx, r, spec.faults, ops, ranks_none[r], [m[r] for m in minus], typical)

        def written(a: np.ndarray, lim: float = limit, sh: int = shift) -> np.ndarray:
            return np.rint(np.minimum(a, lim)).astype(np.int64) + sh

        g_start, g_end = written(ops.start[gk]), written(ops.end[gk])
        ev = _rank_events(ctx, r, ops, gk, hk, g_start, g_end, written, tl, limit)
        base_ns = (min(int(ev.a_start.min()), int(ev.h_start.min())) // 1_000_000_000 - 1) * 1_000_000_000
        data = render_trace(ctx, ev, names, spec.time_base, base_ns, trace_id)
        (out / f"rank-{r}.pt.trace.json").write_bytes(data)

        lab, flt = label[gk], fault[gk]
        for fid in range(len(faults)):
            sel = flt == fid
            fault_counts[fid, 0] += int((sel & (lab == ROOT)).sum())
            fault_counts[fid, 1] += int((sel & (lab == SYMPTOM)).sum())
            fault_steps[fid].update(ops.step[gk][sel & (lab != 0)].tolist())
        kinds = np.array(
            [ctx.programs[p][o].kind for p, o in zip(ops.prog[gk].tolist(), ops.op[gk].tolist(), strict=True)]
        )
        labels_out[str(r)] = {
            "stream": ev.g_stream.tolist(),
            "start_ns": g_start.tolist(),
            "end_ns": g_end.tolist(),
            "label": lab.tolist(),
            "fault": flt.tolist(),
            "factor": np.round(ops.factor[gk], 4).tolist(),
            "excess_ns": _excess_ns(g_start, g_end, ranks_none[r], gk).tolist(),
            "step": ops.step[gk].tolist(),
            "op": _op_table_index(ctx, ops.prog[gk], ops.op[gk]).tolist(),
            "coll": ops.coll[gk].tolist(),
            "kind": np.isin(kinds, (K_HTOD, K_DTOH)).astype(np.int8).tolist(),
        }
        sb = tl.step_begin[:, r]
        step_starts[str(r)] = [int(v) for v in written(sb[sb < limit])]
        limits_written.append(None if not np.isfinite(limit) else int(written(np.array([limit]))[0]))

    truth = _truth(ctx, spec, seed, tl, offsets_ns, epoch0, faults, fault_counts, fault_steps, labels_out,
                   step_starts, limits_written)  # fmt: skip
    (out / "truth.json").write_bytes(orjson.dumps(truth))
    return out


def _excess_ns(g_start: np.ndarray, g_end: np.ndarray, none_ops: RankOps, gk: np.ndarray) -> np.ndarray:
    """How much longer each written instance lasts than the same instance in the fault-free run (ns, rounded;
    0 throughout a healthy run): for a collective, the extra wait (and transfer) the faults caused."""
    with np.errstate(invalid="ignore"):
        ref = none_ops.end[gk] - none_ops.start[gk]
    ref = np.where(np.isfinite(ref), ref, 0.0)
    return (g_end - g_start) - np.rint(ref).astype(np.int64)


def _clock_offsets(spec: ScenarioSpec, rng: np.random.Generator) -> list[int]:
    """Per-host clock offset in ns (host0 = 0): ranks on one host share a clock."""
    drawn = [0] + [int(rng.choice([-1, 1]) * rng.uniform(300, 5000) * 1000) for _ in range(spec.nodes - 1)]
    if spec.clock_offsets_us is not None:
        return [int(round(v * 1000)) for v in spec.clock_offsets_us]
    return drawn


def _rank_events(ctx: SimContext, r: int, ops: RankOps, gk: np.ndarray, hk: np.ndarray, g_start: np.ndarray,
                 g_end: np.ndarray, written, tl: Timeline, limit: float) -> RankEvents:  # fmt: skip
    spec = ctx.spec
    prog, opi = ops.prog[gk], ops.op[gk]
    kinds = np.array(
        [ctx.programs[p][o].kind for p, o in zip(prog.tolist(), opi.tolist(), strict=True)], dtype=np.int64
    )
    in_graph = np.array(
        [ctx.programs[p][o].in_graph for p, o in zip(prog.tolist(), opi.tolist(), strict=True)], dtype=bool
    )
    comm = np.isin(kinds, (K_COLL, K_SEND, K_RECV))
    stream = np.where(comm, ctx.vocab.comm_stream, COMPUTE_STREAM)
    n_host = len(ops.h_name)
    corr_all = 1000 + np.arange(n_host)
    ext_all = 40 + 2 * np.arange(n_host)
    steps = ops.step[gk]
    bucket = np.searchsorted(GRAPH_BUCKETS, [ctx.shapes[s].decode_seqs for s in range(spec.n_steps)])
    graph = np.where(in_graph, bucket[steps] + 1, -1)
    # c10d sequence numbers: per process group, counted over this rank's instances in order
    tp_c = kinds == K_COLL
    pp_c = np.isin(kinds, (K_SEND, K_RECV))
    seq_all = np.where(tp_c, np.cumsum(tp_c) - 1, np.where(pp_c, np.cumsum(pp_c) - 1, -1))
    a_step = np.arange(spec.n_steps)
    sb = tl.step_begin[:, r]
    sb_next = np.append(sb[1:], tl.host_end[r] + 5000.0)
    a_keep = sb < limit
    return RankEvents(
        rank=r,
        host_pid=41_000 + 97 * r,
        # one CUDA_VISIBLE_DEVICES per process: the process numbers its only GPU 0
        device=0 if spec.visible_devices == "own" else int(ctx.topo.device_of[r]),
        g_start=g_start,
        g_end=g_end,
        g_step=steps,
        g_prog=prog,
        g_op=opi,
        g_corr=corr_all[ops.host_idx[gk]],
        g_ext=ext_all[ops.host_idx[gk]],
        g_stream=stream,
        g_graph=graph,
        g_seq=seq_all,
        h_name=ops.h_name[hk],
        h_start=written(ops.h_start[hk]),
        h_end=written(ops.h_end[hk]),
        h_corr=corr_all[hk],
        h_ext=ext_all[hk],
        a_step=a_step[a_keep],
        a_start=written(sb[a_keep]),
        a_end=written(sb_next[a_keep]),
    )


def op_table(ctx: SimContext) -> list[tuple[str, str, str]]:
    """Distinct (op key, class, kind) triples, in first-seen order: the ``op`` label column indexes this."""
    seen: dict[tuple[str, str, str], int] = {}
    for prog in ctx.programs:
        for op in prog:
            seen.setdefault((op.key, CLASS_NAMES[op.klass], KIND_NAMES[op.kind]), len(seen))
    return list(seen)


def _op_table_index(ctx: SimContext, prog: np.ndarray, opi: np.ndarray) -> np.ndarray:
    table = {t: i for i, t in enumerate(op_table(ctx))}
    per_prog = [
        np.array([table[(op.key, CLASS_NAMES[op.klass], KIND_NAMES[op.kind])] for op in p], dtype=np.int64)
        for p in ctx.programs
    ]
    out = np.empty(len(prog), dtype=np.int64)
    for p, idx in enumerate(per_prog):
        sel = prog == p
        out[sel] = idx[opi[sel]]
    return out


def component_id(ctx: SimContext, f: FaultSpec) -> str:
    """Human id of the faulty component, e.g. ``GPU3``, ``NVLink GPU2-GPU3``, ``NIC node1``, ``CPU host0``."""
    if f.component_id:
        return f.component_id
    topo = ctx.topo
    multi = topo.nodes > 1

    def gpu(r: int) -> str:
        return (f"node{topo.node_of[r]} " if multi else "") + f"GPU{topo.device_of[r]}"

    ranks = sorted(f.ranks)
    nodes = sorted({int(topo.node_of[r]) for r in ranks})
    if f.component == "gpu":
        return ", ".join(gpu(r) for r in ranks)
    if f.component in ("hbm", "pcie"):
        prefix = "HBM" if f.component == "hbm" else "PCIe"
        return ", ".join(f"{prefix} {gpu(r)}" for r in ranks)
    if f.component == "cpu":
        return ", ".join(f"CPU host{n}" for n in nodes)
    if f.component == "nic":
        return ", ".join(f"NIC node{n}" for n in nodes)
    # nvlink
    node_ranks = [int(r) for r in np.flatnonzero(topo.node_of == nodes[0])]
    if len(ranks) > 2 and ranks == node_ranks:
        return f"NVLink node{nodes[0]}"
    return "NVLink " + "-".join(gpu(r) for r in ranks)


def _truth(ctx: SimContext, spec: ScenarioSpec, seed: int, tl: Timeline, offsets_ns: list[int], epoch0: int,
           faults: list[tuple[int, FaultSpec]], counts: np.ndarray, fault_steps: list[set[int]],
           labels: dict[str, dict[str, list]], step_starts: dict[str, list[int]],
           limits: list[int | None]) -> dict[str, Any]:  # fmt: skip
    topo = ctx.topo
    w, n = spec.world_size, spec.n_steps
    unhealthy = set()
    fault_rows = []
    for fid, f in faults:
        end_step = n if f.end_step is None or f.kind == "hang" else min(f.end_step, n)
        unhealthy.update(range(f.onset_step, end_step))
        if f.kind == "hang":
            r = f.ranks[0]
            start = limits[r]
            end = int(np.rint(tl.stop_ns)) + epoch0 + offsets_ns[int(topo.node_of[r])]
        else:
            starts, ends = [], []
            for r in f.ranks:
                ss = step_starts[str(r)]
                if f.onset_step < len(ss):
                    starts.append(ss[f.onset_step])
                sh = epoch0 + offsets_ns[int(topo.node_of[r])]
                stop = (
                    ss[end_step] if end_step < len(ss) else int(np.rint(min(tl.host_end[r], tl.stop_ns))) + sh
                )
                ends.append(stop)
            start, end = (min(starts), max(ends)) if starts else (0, 0)
        fault_rows.append({
            "id": fid, "kind": f.kind, "component": f.component, "component_id": component_id(ctx, f),
            "ranks": sorted(f.ranks), "severity": f.severity if f.kind == "slowdown" else None,
            "start_ns": start, "end_ns": end, "onset_step": f.onset_step, "end_step": end_step,
            "steps": sorted(fault_steps[fid]), "n_root": int(counts[fid, 0]), "n_symptom": int(counts[fid, 1]),
            "culprit_knowable": f.component not in ("nvlink", "nic"),
        })  # fmt: skip
    pgs = process_groups(ctx)
    links = [
        {
            "id": f"NVLink node{h}",
            "kind": "nvlink",
            "ranks": [int(r) for r in np.flatnonzero(topo.node_of == h)],
        }
        for h in range(topo.nodes)
    ]
    if topo.nodes > 1:
        links += [
            {"id": f"NIC node{h}", "kind": "nic", "device": "mlx5_0",
             "ranks": [int(r) for r in np.flatnonzero(topo.node_of == h)]}
            for h in range(topo.nodes)
        ]  # fmt: skip
    return {
        "schema": TRUTH_SCHEMA,
        "scenario": spec.name,
        "description": spec.description,
        "seed": int(seed),
        "spec": spec.to_dict(),
        "world_size": w,
        "ranks": list(range(w)),
        "n_steps": n,
        "healthy_steps": n - len(unhealthy),
        "time_base": "baseTimeNanoseconds" if spec.time_base == "base_ns" else "epoch_us",
        "hosts": [f"host{h}" for h in range(topo.nodes)],
        "clock_offsets_ns": {f"host{h}": offsets_ns[h] for h in range(topo.nodes)},
        "topology": {
            "nodes": topo.nodes,
            "gpus_per_node": topo.gpus_per_node,
            "tp": spec.tp,
            "pp": spec.pp,
            "rank_host": [int(x) for x in topo.node_of],
            "rank_device": [int(x) for x in topo.device_of],
            "tp_groups": [p.ranks for p in pgs if p.desc == "tp"],
            "pp_groups": [p.ranks for p in pgs if p.desc == "pp"],
            "links": links,
        },
        "confounders": {
            "warmup_steps": min(spec.confounders.warmup_steps, n),
            "sync_pause_steps": ctx.pause_steps,
            "prefill_steps": [i for i, s in enumerate(ctx.shapes) if s.kind == "prefill"],
            "graph_steps": [i for i in range(n) if ctx.graphed[i]],
        },
        "label_rules": {
            "cpu_root_min_gap_growth_ns": CPU_ROOT_MIN_NS,
            "symptom_min_excess_ns": SYMPTOM_MIN_NS,
            "secondary_class_fraction": SECONDARY_FRACTION,
        },
        "faults": fault_rows,
        "ops": [{"key": k, "class": c, "kind": kd} for k, c, kd in op_table(ctx)],
        "step_start_ns": step_starts,
        "recording_end_ns": {str(r): v for r, v in enumerate(limits) if v is not None},
        "labels": labels,
    }
