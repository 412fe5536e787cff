"""Write a synthetic multi-rank decode job as Kineto JSON, with one slow GPU, for the scale-out benchmarks.

Per step and rank: a host->device copy of the step's inputs, then ``--layers`` x (a GEMM, an RMS norm, an
all-reduce over every rank), each launched from the host (``cudaLaunchKernel`` with a correlation id) inside a
``ProfilerStep#N`` annotation. Kernel times jitter per rank; every all-reduce instance ends together (the last
arrival plus the transfer), so early ranks wait inside it. From step ``steps // 3`` on, rank ``--culprit``'s
GEMMs and norms are ``--slowdown`` slower (a throttled GPU): detection should name that GPU.

GPU events per rank = steps x (3 x layers + 1). ``--ranks 64 --steps 220 --layers 8`` gives 0.35 M.

Usage: ``python benchmarks/synth_run.py OUTDIR [--ranks 64] [--steps 220] [--layers 8] [--culprit 37]``
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

BASE_NS = 1_700_000_000_000_000_000
GEMM = "ampere_bf16_s16816gemm_bf16_128x128_ldg8_f2f_stages_32x5_tn"
NORM = "void vllm::rms_norm_kernel<c10::BFloat16>(c10::BFloat16*, c10::BFloat16 const*, float, int, int)"
NCCL = "ncclDevKernel_AllReduce_Sum_bf16_RING_LL(ncclDevKernelArgsStorage<4096ul>)"
COPY = "Memcpy HtoD (Pageable -> Device)"


def _us(ns: int) -> str:
    return f"{ns // 1000}.{ns % 1000:03d}"


def generate(out: Path, ranks: int, steps: int, layers: int, culprit: int, slowdown: float, seed: int) -> int:
    """Write one file per rank into ``out``; returns the number of GPU events."""
    rng = np.random.default_rng(seed)
    onset = steps // 3
    out.mkdir(parents=True, exist_ok=True)
    files = [open(out / f"rank-{r}.pt.trace.json", "w", buffering=1 << 22) for r in range(ranks)]
    for r, f in enumerate(files):
        head = {
            "schemaVersion": 1,
            "baseTimeNanoseconds": BASE_NS,
            "deviceProperties": [{"id": r % 8, "name": "NVIDIA H100 80GB HBM3"}],
            "distributedInfo": {"backend": "nccl", "rank": r, "world_size": ranks},
        }
        f.write("{\n" + json.dumps(head)[1:-1] + ',\n"traceEvents": [\n')
    gpu_t = np.zeros(ranks, np.int64) + 50_000  # ns since base, per rank: when its GPU is free
    corr = np.ones(ranks, np.int64)
    n_events = 0
    for s in range(steps):
        slow = np.ones(ranks)
        if s >= onset:
            slow[culprit] = 1.0 + slowdown
        step0 = gpu_t.copy() - 30_000
        parts: list[list[str]] = [[] for _ in range(ranks)]

        def launch(
            r: int, t_gpu: int, name: str, cat: str, dur: int, args: str = "", parts: list = parts
        ) -> None:
            c = int(corr[r])
            lt = t_gpu - 20_000 - int(rng.integers(0, 2_000))
            parts[r].append(
                f'{{"ph":"X","cat":"cuda_runtime","name":"cudaLaunchKernel","pid":{100 + r},"tid":{100 + r},'
                f'"ts":{_us(lt)},"dur":4.000,"args":{{"correlation":{c}}}}},\n'
            )
            parts[r].append(
                f'{{"ph":"X","cat":"{cat}","name":"{name}","pid":{r % 8},"tid":7,"ts":{_us(t_gpu)},'
                f'"dur":{_us(dur)},"args":{{"correlation":{c},"device":{r % 8},"stream":7{args}}}}},\n'
            )
            corr[r] += 1

        for r in range(ranks):
            d = int(20_000 + rng.integers(0, 400))
            launch(r, int(gpu_t[r]), COPY, "gpu_memcpy", d, ',"bytes":1048576')
            gpu_t[r] += d + 1_000
        for layer in range(layers):
            arrive = np.zeros(ranks, np.int64)
            for r in range(ranks):
                g = int(40_000 * slow[r] + rng.normal(0, 300))
                launch(r, int(gpu_t[r]), GEMM, "kernel", g)
                gpu_t[r] += g + 800
                nm = int(8_000 * slow[r] + rng.normal(0, 80))
                launch(r, int(gpu_t[r]), NORM, "kernel", nm)
                gpu_t[r] += nm + 800
                arrive[r] = gpu_t[r]
            end = int(arrive.max()) + 10_000
            seq = s * layers + layer
            for r in range(ranks):
                launch(
                    r,
                    int(arrive[r]),
                    NCCL,
                    "kernel",
                    end - int(arrive[r]),
                    f',"Collective name":"allreduce","In msg nelems":4194304,"Group size":{ranks},'
                    f'"Process Group Name":"0","Seq":{seq}',
                )
                gpu_t[r] = end + 1_000 + int(rng.integers(0, 500))
        for r in range(ranks):
            parts[r].append(
                f'{{"ph":"X","cat":"user_annotation","name":"ProfilerStep#{s}","pid":{100 + r},"tid":{100 + r},'
                f'"ts":{_us(int(step0[r]))},"dur":{_us(int(gpu_t[r] - 25_000 - step0[r]))}}},\n'
            )
            files[r].write("".join(parts[r]))
        n_events += ranks * (3 * layers + 1)
        gpu_t += 5_000
    for r, f in enumerate(files):
        f.write(
            f'{{"ph":"M","name":"process_name","pid":{100 + r},"tid":0,"args":{{"name":"python3"}}}}\n]}}\n'
        )
        f.close()
    return n_events


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("outdir", type=Path)
    ap.add_argument("--ranks", type=int, default=64)
    ap.add_argument("--steps", type=int, default=220)
    ap.add_argument("--layers", type=int, default=8)
    ap.add_argument("--culprit", type=int, default=37)
    ap.add_argument("--slowdown", type=float, default=0.2)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    n = generate(a.outdir, a.ranks, a.steps, a.layers, a.culprit, a.slowdown, a.seed)
    print(f"wrote {n:,} GPU events over {a.ranks} ranks x {a.steps} steps to {a.outdir}")


if __name__ == "__main__":
    main()
