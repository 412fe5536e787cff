"""Write one rank's events as a PyTorch-profiler (Kineto) JSON trace, byte for byte deterministic.

Layout follows what Kineto's ``output_json.cpp`` writes: top-level metadata keys, then ``traceEvents`` with one
event per line, ``ts``/``dur`` in µs with exactly 3 decimals (integer arithmetic on ns: no float rounding).
Events are built from pre-rendered per-op fragments and ``str.join`` (no per-event dicts).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from kat_gui.simulate.model import K_COLL, K_DTOH, K_HTOD, K_RECV, K_SEND, LAUNCH_DIMS, MODEL_DIMS
from kat_gui.simulate.timeline import HOST_NAMES, SimContext
from kat_gui.simulate.vocab import DTOH_NAME, HTOD_NAME

NUM_SMS = 132
_CBID = {"cudaLaunchKernel": 211, "cudaMemcpyAsync": 41, "cudaStreamSynchronize": 131, "cudaGraphLaunch": 311,
         "cuLaunchKernelEx": 652}  # fmt: skip
_PY_FUNC = {
    "vllm": "vllm/v1/worker/gpu_model_runner.py(1370): execute_model",
    "sglang": "sglang/srt/managers/scheduler.py(1654): run_batch",
    "trtllm": "tensorrt_llm/_torch/pyexecutor/py_executor.py(1021): _forward_step",
}
H100 = {
    "name": "NVIDIA H100 80GB HBM3", "totalGlobalMem": 84929347584, "computeMajor": 9, "computeMinor": 0,
    "maxThreadsPerBlock": 1024, "maxThreadsPerMultiprocessor": 2048, "regsPerBlock": 65536, "warpSize": 32,
    "sharedMemPerBlock": 49152, "numSms": NUM_SMS, "regsPerMultiprocessor": 65536,
    "sharedMemPerBlockOptin": 232448, "sharedMemPerMultiprocessor": 233472,
}  # fmt: skip


def fmt_us(ns: int) -> str:
    """Non-negative integer ns as Kineto µs text with exactly 3 decimals."""
    return f"{ns // 1000}.{ns % 1000:03d}"


@dataclass
class ProcessGroup:
    name: str
    desc: str
    ranks: list[int]


def process_groups(ctx: SimContext) -> list[ProcessGroup]:
    """default_pg, one TP group per stage, one PP group per TP column (when pp > 1)."""
    tp, pp = ctx.spec.tp, ctx.spec.pp
    pgs = [ProcessGroup("0", "default_pg", list(range(tp * pp)))]
    for s in range(pp):
        pgs.append(ProcessGroup(str(1 + s), "tp", list(range(s * tp, (s + 1) * tp))))
    if pp > 1:
        for j in range(tp):
            pgs.append(ProcessGroup(str(1 + pp + j), "pp", list(range(j, tp * pp, tp))))
    return pgs


def op_names(ctx: SimContext) -> list[list[list[str]]]:
    """[step][stage][op] -> the kernel / memcpy name written to the trace."""
    out = []
    cache: dict[tuple, str] = {}
    for n, shape in enumerate(ctx.shapes):
        row = []
        for s in range(ctx.spec.pp):
            prog = ctx.programs[ctx.prog_of[n, s]]
            names = []
            for k, op in enumerate(prog):
                if op.kind == K_HTOD:
                    names.append(HTOD_NAME)
                    continue
                if op.kind == K_DTOH:
                    names.append(DTOH_NAME)
                    continue
                if op.kind == K_COLL:
                    cross = ctx.topo.tp_cross_node(s)
                elif op.kind in (K_SEND, K_RECV):
                    cross = True
                else:
                    cross = False
                nb = float(ctx.nbytes[n][s][k])
                key = (op.key, shape.kind, cross, nb if op.kind == K_COLL else 0.0)
                name = cache.get(key)
                if name is None:
                    name = ctx.vocab.kernel(op.key, shape.kind == "decode", ctx.spec.tp, nb, cross)
                    cache[key] = name
                names.append(name)
            row.append(names)
        out.append(row)
    return out


@functools.cache
def _kernel_static_args(key: str) -> str:
    grid, block, regs, smem = LAUNCH_DIMS[key]
    blocks = grid[0] * grid[1] * grid[2]
    threads = block[0] * block[1] * block[2]
    bps = blocks / NUM_SMS
    wps = blocks * threads / 32 / NUM_SMS
    occ = min(100, int(round(wps / 64 * 100)))
    return (
        f',"registers per thread":{regs},"shared memory":{smem},"blocks per SM":{bps:.6f},'
        f'"warps per SM":{wps:.6f},"grid":[{grid[0]},{grid[1]},{grid[2]}],"block":[{block[0]},{block[1]},{block[2]}],'
        f'"est. achieved occupancy %":{occ}'
    )


@dataclass
class RankEvents:
    """What the writer needs for one rank, already in written (clock-offset, integer) ns."""

    rank: int
    host_pid: int
    device: int
    # GPU ops (kept, in program order)
    g_start: np.ndarray
    g_end: np.ndarray
    g_step: np.ndarray
    g_prog: np.ndarray
    g_op: np.ndarray
    g_corr: np.ndarray
    g_ext: np.ndarray
    g_stream: np.ndarray
    g_graph: np.ndarray  # graph id, -1 for eager ops
    g_seq: np.ndarray  # collective sequence number within its process group, -1 otherwise
    # host calls (kept)
    h_name: np.ndarray
    h_start: np.ndarray
    h_end: np.ndarray
    h_corr: np.ndarray
    h_ext: np.ndarray
    # step annotations
    a_step: np.ndarray
    a_start: np.ndarray
    a_end: np.ndarray


def render_trace(ctx: SimContext, ev: RankEvents, names: list[list[list[str]]], time_base: str, base_ns: int,
                 trace_id: str) -> bytes:  # fmt: skip
    """The whole JSON document of one rank as bytes."""
    spec, topo = ctx.spec, ctx.topo
    dev, pid, rank = ev.device, ev.host_pid, ev.rank
    tp = spec.tp
    stage = rank // tp
    dims = MODEL_DIMS[spec.model]
    pgs = process_groups(ctx)
    my_pgs = [p for p in pgs if rank in p.ranks]
    tp_pg = next(p for p in my_pgs if p.desc == "tp")
    pp_pg = next((p for p in my_pgs if p.desc == "pp"), None)
    off = base_ns if time_base == "base_ns" else 0

    def ts(a: np.ndarray) -> list[str]:
        rel = (a - off).tolist()
        return [f"{v // 1000}.{v % 1000:03d}" for v in rel]

    lines: list[str] = []
    # metadata rows, as Kineto writes them
    mts = fmt_us(int(min(ev.h_start.min(), ev.a_start.min())) - off)
    lines.append(
        f'{{"name":"process_name","ph":"M","ts":{mts},"pid":{pid},"tid":0,"args":{{"name":"python3"}}}}'
    )
    lines.append(
        f'{{"name":"process_labels","ph":"M","ts":{mts},"pid":{pid},"tid":0,"args":{{"labels":"CPU"}}}}'
    )
    lines.append(
        f'{{"name":"process_name","ph":"M","ts":{mts},"pid":{dev},"tid":0,"args":{{"name":"python3"}}}}'
    )
    lines.append(
        f'{{"name":"process_labels","ph":"M","ts":{mts},"pid":{dev},"tid":0,"args":{{"labels":"GPU {dev}"}}}}'
    )
    for st in sorted(set(ev.g_stream.tolist())):
        lines.append(
            f'{{"name":"thread_name","ph":"M","ts":{mts},"pid":{dev},"tid":{st},"args":{{"name":"stream {st} "}}}}'
        )
    lines.append(
        f'{{"name":"thread_name","ph":"M","ts":{mts},"pid":{pid},"tid":{pid},"args":{{"name":"thread {pid} (python3)"}}}}'
    )

    # host: step annotations, one python_function per step, runtime calls; in start order
    host_rows: list[tuple[int, int, str]] = []
    a_ts, a_dur = ts(ev.a_start), (ev.a_end - ev.a_start).tolist()
    pyf = orjson.dumps(_PY_FUNC[spec.vocabulary]).decode()
    for i, (step, t0) in enumerate(zip(ev.a_step.tolist(), ev.a_start.tolist(), strict=True)):
        d = a_dur[i]
        host_rows.append((t0, 0, f'{{"ph":"X","cat":"user_annotation","name":"ProfilerStep#{step}","pid":{pid},"tid":{pid},'
                                 f'"ts":{a_ts[i]},"dur":{fmt_us(d)},"args":{{"External id":{2 * step + 1},"Record function id":0}}}}'))  # fmt: skip
        if d > 4000:
            host_rows.append((t0 + 2000, 1, f'{{"ph":"X","cat":"python_function","name":{pyf},"pid":{pid},"tid":{pid},'
                                             f'"ts":{fmt_us(t0 + 2000 - off)},"dur":{fmt_us(d - 4000)},"args":{{"Python id":{2 * step + 7},"Python parent id":1}}}}'))  # fmt: skip
    h_ts = ts(ev.h_start)
    h_dur = [f"{v // 1000}.{v % 1000:03d}" for v in (ev.h_end - ev.h_start).tolist()]
    for i, (hn, t0, corr, ext) in enumerate(
        zip(ev.h_name.tolist(), ev.h_start.tolist(), ev.h_corr.tolist(), ev.h_ext.tolist(), strict=True)
    ):
        name = HOST_NAMES[hn]
        cat = "cuda_driver" if name.startswith("cu") and not name.startswith("cuda") else "cuda_runtime"
        host_rows.append((t0, 2, f'{{"ph":"X","cat":"{cat}","name":"{name}","pid":{pid},"tid":{pid},"ts":{h_ts[i]},'
                                 f'"dur":{h_dur[i]},"args":{{"External id":{ext},"cbid":{_CBID[name]},"correlation":{corr}}}}}'))  # fmt: skip
    host_rows.sort(key=lambda r: (r[0], r[1]))
    lines.extend(r[2] for r in host_rows)

    # GPU ops
    g_ts = ts(ev.g_start)
    g_dur = (ev.g_end - ev.g_start).tolist()
    g_dur_s = [f"{v // 1000}.{v % 1000:03d}" for v in g_dur]
    heads: dict[tuple[str, int, int], str] = {}
    seq_list = ev.g_seq.tolist()
    coll_args = ctx.vocab.collective_args
    for i, (step, prog, k, corr, ext, stream, graph) in enumerate(
        zip(
            ev.g_step.tolist(),
            ev.g_prog.tolist(),
            ev.g_op.tolist(),
            ev.g_corr.tolist(),
            ev.g_ext.tolist(),
            ev.g_stream.tolist(),
            ev.g_graph.tolist(),
            strict=True,
        )  # fmt: skip
    ):
        op = ctx.programs[prog][k]
        name = names[step][stage][k]
        if op.kind in (K_HTOD, K_DTOH):
            shape_bytes = int(ctx.nbytes[step][stage][k])
            bw = shape_bytes / max(g_dur[i], 1)  # bytes per ns = GB/s
            lines.append(
                f'{{"ph":"X","cat":"gpu_memcpy","name":"{name}","pid":{dev},"tid":{stream},"ts":{g_ts[i]},'
                f'"dur":{g_dur_s[i]},"args":{{"External id":{ext},"device":{dev},"context":1,"stream":{stream},'
                f'"correlation":{corr},"bytes":{shape_bytes},"memory bandwidth (GB/s)":{bw:.6f}}}}}'
            )
            continue
        hkey = (name, stream, graph)
        head = heads.get(hkey)
        if head is None:
            head = f'{{"ph":"X","cat":"kernel","name":{orjson.dumps(name).decode()},"pid":{dev},"tid":{stream},"ts":'
            heads[hkey] = head
        args = _kernel_static_args(op.key)
        if graph >= 0:
            args += f',"graph id":{graph}'
        if coll_args and op.kind in (K_COLL, K_SEND, K_RECV):
            args += _collective_args(
                ctx, step, stage, k, op.key, op.kind, dims.hidden, tp_pg, pp_pg, seq_list[i]
            )
        lines.append(
            f'{head}{g_ts[i]},"dur":{g_dur_s[i]},"args":{{"External id":{ext},"queued":0,"device":{dev},'
            f'"context":1,"stream":{stream},"correlation":{corr}{args}}}}}'
        )
    # the profiler's own span
    t_first = int(min(ev.a_start.min(), ev.h_start.min()))
    t_last = int(max(ev.a_end.max(), ev.g_end.max() if len(ev.g_end) else 0))
    lines.append(
        f'{{"ph":"X","cat":"Trace","ts":{fmt_us(t_first - off)},"dur":{fmt_us(t_last - t_first)},"pid":"Spans",'
        f'"tid":"PyTorch Profiler","name":"PyTorch Profiler (0)","args":{{"Op count":0}}}}'
    )

    header: dict[str, Any] = {"schemaVersion": 1}
    visible = 1 if spec.visible_devices == "own" else topo.gpus_per_node
    header["deviceProperties"] = [{"id": i, **H100} for i in range(visible)]
    if time_base == "base_ns":
        header.update({"cupti_version": 24, "cuda_runtime_version": 12080, "cuda_driver_version": 12080})
        header["distributedInfo"] = {
            "backend": "nccl", "rank": rank, "world_size": spec.world_size, "pg_count": len(my_pgs),
            "pg_config": [{"pg_name": p.name, "pg_desc": p.desc if p.desc == "default_pg" else "undefined",
                           "backend_config": "cuda:nccl", "pg_size": len(p.ranks), "ranks": p.ranks} for p in my_pgs],
            "nccl_version": "2.26.5",
        }  # fmt: skip
    else:  # older Kineto: no process-group config, no time base
        header["distributedInfo"] = {"backend": "nccl", "rank": rank, "world_size": spec.world_size}
    header.update({"record_shapes": 0, "with_stack": 0, "trace_id": trace_id, "displayTimeUnit": "ms"})
    if spec.write_hostnames:  # what prof.add_metadata_json("hostname", ...) writes
        header["hostname"] = f"host{int(topo.node_of[rank])}"
    if time_base == "base_ns":
        header["baseTimeNanoseconds"] = base_ns
    head_lines = ["{"]
    for key, value in header.items():
        head_lines.append(f'  "{key}": {orjson.dumps(value).decode()},')
    head_lines.append('  "traceEvents": [')
    body = ",\n    ".join(lines)
    tail = f'\n  ],\n  "traceName": "rank-{rank}.pt.trace.json"\n}}\n'
    return ("\n".join(head_lines) + "\n    " + body + tail).encode()


def _collective_args(ctx: SimContext, step: int, stage: int, k: int, key: str, kind: int, hidden: int,
                     tp_pg: ProcessGroup, pp_pg: ProcessGroup | None, seq: int) -> str:  # fmt: skip
    """The c10d record-function args Kineto attaches to NCCL kernels (SGLang's torch.distributed path)."""
    shape = ctx.shapes[step]
    if kind == K_COLL:
        pg = tp_pg
        if key == "allgather":
            coll = "_allgather_base"
            n_in = int(ctx.nbytes[step][stage][k] // 4)
            n_out = n_in * len(pg.ranks)
        else:
            coll = "allreduce"
            n_in = n_out = shape.tokens * hidden
    else:
        pg = pp_pg if pp_pg is not None else tp_pg
        coll = "send" if kind == K_SEND else "recv"
        n_in = n_out = 2 * shape.tokens * hidden
    dtype = "Float" if key == "allgather" else "BFloat16"
    ranks = "[" + ", ".join(str(r) for r in pg.ranks) + "]"
    return (
        f',"Collective name":"{coll}","In msg nelems":{n_in},"Out msg nelems":{n_out},"Group size":{len(pg.ranks)},'
        f'"dtype":"{dtype}","In split size":"[]","Out split size":"[]","Process Group Name":"{pg.name}",'
        f'"Process Group Description":"undefined","Process Group Ranks":"{ranks}","Seq":{seq}'
    )
