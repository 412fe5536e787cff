"""Write a large synthetic multi-rank Kineto trace for the ingest benchmark.

Layout follows real PyTorch profiler output (libkineto ``output_json.cpp``): a top-level object with
``schemaVersion``, ``deviceProperties``, ``distributedInfo``, then ``traceEvents`` of ``X`` events with the
same keys and arg names as real files: ``ProfilerStep#N`` user annotations, ``python_function`` frames,
``cudaLaunchKernel`` runtime calls with ``correlation``, kernels on ``pid`` = device / ``tid`` = stream with
grid/block args, a few NCCL kernels with collective args, ``ac2g`` flow pairs, and ``M`` metadata events.
Timestamps are absolute epoch µs with 3 decimals (no ``baseTimeNanoseconds``), as older Kineto writes them.

Usage: ``python benchmarks/synth_kineto.py OUTDIR [--ranks 8] [--kernels-per-rank 640000]``
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

KERNELS = [
    ("void cutlass::Kernel2<cutlass_80_tensorop_bf16_s16816gemm_relu_bf16_64x64_32x6_tn_align8>(Params)", 56, 40),
    ("void at::native::vectorized_elementwise_kernel<4, at::native::FillFunctor<float>, at::detail::Array<char*, 1> >(int, at::native::FillFunctor<float>, at::detail::Array<char*, 1>)", 8, 3),
    ("void flash_fwd_kernel<Flash_fwd_kernel_traits<128, 64, 64, 4, false, false, cutlass::bfloat16_t> >(Flash_fwd_params)", 120, 60),
    ("void at::native::(anonymous namespace)::layer_norm_kernel<c10::BFloat16, float>(long, float, c10::BFloat16 const*, c10::BFloat16*)", 12, 6),
    ("ampere_bf16_s16816gemm_bf16_128x128_ldg8_f2f_stages_32x5_tn", 90, 50),
]  # fmt: skip
NCCL = "ncclDevKernel_AllReduce_Sum_bf16_RING_LL(ncclDevKernelArgsStorage<4096ul>)"
PY_FRAMES = ["nn.Module: Linear_0", "torch/nn/modules/linear.py(124): forward", "<built-in method linear>"]


def _us(ns: int) -> str:
    return f"{ns // 1000}.{ns % 1000:03d}"


def write_rank(path: Path, rank: int, world: int, kernels: int, seed: int) -> int:
    """Write one rank's trace; returns the number of kernel events written."""
    rnd = random.Random(seed * 1000 + rank)
    pid, tid, dev, stream = 4000 + rank, 4000 + rank, rank, 7
    t_ns = 1_700_000_000_000_000_000 + rank * 1_337  # epoch ns, sub-µs offsets per rank
    head = {
        "schemaVersion": 1,
        "deviceProperties": [{"id": rank, "name": "NVIDIA H100 80GB HBM3", "totalGlobalMem": 85028896768,
                              "computeMajor": 9, "computeMinor": 0, "numSms": 132}],
        "distributedInfo": {"backend": "nccl", "rank": rank, "world_size": world},
    }  # fmt: skip
    per_step = 1000
    corr = 1
    written = 0
    with open(path, "w", buffering=1 << 22) as out:
        out.write("{\n" + json.dumps(head)[1:-1] + ',\n  "traceEvents": [\n')
        parts: list[str] = []
        step = 0
        while written < kernels:
            n = min(per_step, kernels - written)
            step_start = t_ns
            gpu_t = t_ns + 20_000
            for i in range(n):
                name, mean_us, sd_us = KERNELS[i % len(KERNELS)] if i % 250 else (NCCL, 400, 100)
                launch = t_ns + rnd.randrange(1_000, 4_000)
                ldur = rnd.randrange(2_000, 6_000)
                kdur = max(1_000, int(rnd.gauss(mean_us, sd_us / 4) * 1000) + rnd.randrange(1000))
                kstart = max(gpu_t, launch + ldur + 1_500)
                if i % 4 == 0:
                    parts.append(
                        f'  {{"ph": "X", "cat": "python_function", "name": "{PY_FRAMES[i % 3]}", "pid": {pid}, '
                        f'"tid": {tid}, "ts": {_us(t_ns)}, "dur": {_us(ldur + 3_000)}, "args": {{"Python id": {corr}, '
                        f'"Python parent id": {max(corr - 1, 0)}}}}},\n'
                    )
                parts.append(
                    f'  {{"ph": "X", "cat": "cuda_runtime", "name": "cudaLaunchKernel", "pid": {pid}, "tid": {tid}, '
                    f'"ts": {_us(launch)}, "dur": {_us(ldur)}, "args": {{"External id": {corr}, "cbid": 211, '
                    f'"correlation": {corr}}}}},\n'
                )
                extra = ""
                if name == NCCL:
                    extra = (
                        f', "Collective name": "allreduce", "In msg nelems": 4194304, "Out msg nelems": 4194304, '
                        f'"Group size": {world}, "dtype": "BFloat16", "Process Group Name": "0", '
                        f'"Process Group Description": "default_pg", "Seq": {step * 4 + i // 250}'
                    )
                grid = 132 * (1 + i % 3)
                parts.append(
                    f'  {{"ph": "X", "cat": "kernel", "name": "{name}", "pid": {dev}, "tid": {stream}, '
                    f'"ts": {_us(kstart)}, "dur": {_us(kdur)}, "args": {{"External id": {corr}, "queued": 0, '
                    f'"device": {dev}, "context": 1, "stream": {stream}, "correlation": {corr}, '
                    f'"registers per thread": 128, "shared memory": 49152, "blocks per SM": {grid / 132:.6f}, '
                    f'"warps per SM": {grid / 33:.6f}, "grid": [{grid}, 1, 1], "block": [128, 1, 1], '
                    f'"est. achieved occupancy %": 12{extra}}}}},\n'
                )
                if i % 10 == 0:
                    parts.append(
                        f'  {{"ph": "s", "id": {corr}, "pid": {pid}, "tid": {tid}, "ts": {_us(launch)}, '
                        f'"cat": "ac2g", "name": "ac2g"}},\n'
                        f'  {{"ph": "f", "id": {corr}, "pid": {dev}, "tid": {stream}, "ts": {_us(kstart)}, '
                        f'"cat": "ac2g", "name": "ac2g", "bp": "e"}},\n'
                    )
                corr += 1
                t_ns = launch + ldur + rnd.randrange(500, 2_000)
                gpu_t = kstart + kdur + rnd.randrange(500, 3_000)
            t_ns = max(t_ns, gpu_t) + 10_000
            parts.append(
                f'  {{"ph": "X", "cat": "user_annotation", "name": "ProfilerStep#{step}", "pid": {pid}, '
                f'"tid": {tid}, "ts": {_us(step_start)}, "dur": {_us(t_ns - step_start)}, '
                f'"args": {{"External id": {corr}, "Record function id": 0}}}},\n'
            )
            written += n
            step += 1
            out.write("".join(parts))
            parts.clear()
        out.write(
            f'  {{"name": "process_name", "ph": "M", "ts": {_us(t_ns)}, "pid": {pid}, "tid": 0, '
            f'"args": {{"name": "python3"}}}},\n'
            f'  {{"name": "thread_name", "ph": "M", "ts": {_us(t_ns)}, "pid": {pid}, "tid": {tid}, '
            f'"args": {{"name": "thread {tid} (python3)"}}}}\n'
        )
        out.write('  ],\n  "traceName": "synthetic"\n}\n')
    return written


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("outdir", type=Path)
    ap.add_argument("--ranks", type=int, default=8)
    ap.add_argument("--kernels-per-rank", type=int, default=640_000)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    args.outdir.mkdir(parents=True, exist_ok=True)
    total = 0
    for r in range(args.ranks):
        total += write_rank(
            args.outdir / f"rank-{r}.pt.trace.json", r, args.ranks, args.kernels_per_rank, args.seed
        )
    print(f"wrote {total} kernel events over {args.ranks} ranks to {args.outdir}")


if __name__ == "__main__":
    main()
