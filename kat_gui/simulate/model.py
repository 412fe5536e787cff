"""The workload: per-step batch shapes, the per-stage kernel program of a step, and base durations.

Durations are a roofline of an H100 SXM (weights and activations streamed from HBM vs tensor-core FLOPs) plus a
fixed per-kernel overhead; collectives get a latency + bytes/bandwidth transfer time split into an NVLink part
and a NIC part. Numbers are plausible orders of magnitude, not a calibrated performance model: what matters for
detection is that the same kernel in the same step takes the same time on every healthy rank, and that shapes
change from step to step for all ranks together.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from kat_gui.simulate.spec import ScenarioSpec
from kat_gui.simulate.vocab import Vocabulary

HBM_BPS = 2.6e12  # effective HBM3 bandwidth (3.35 TB/s peak)
FLOPS = 6.0e14  # effective dense bf16 tensor-core throughput
ATTN_FLOPS = 4.0e14
NVLINK_BPS = 3.0e11  # NCCL bus bandwidth over NVLink/NVSwitch
P2P_BPS = 1.5e11  # one-to-one NVLink copy
NIC_BPS = 4.0e10  # 400 Gb/s InfiniBand per GPU
PCIE_BPS = 2.5e10  # PCIe Gen5 x16 pinned copy, effective
VOCAB_SIZE = 128_256

# op kinds
K_KERNEL, K_HTOD, K_DTOH, K_COLL, K_SEND, K_RECV = range(6)
# op classes: what a fault slows down
C_COMPUTE, C_MEMORY, C_COPY, C_COMM = range(4)
CLASS_NAMES = ("compute", "memory", "copy", "comm")
KIND_NAMES = ("kernel", "htod", "dtoh", "collective", "send", "recv")


@dataclass(frozen=True)
class ModelDims:
    hidden: int
    inter: int
    heads: int
    kv_heads: int
    head_dim: int = 128


MODEL_DIMS = {
    "llama-1b": ModelDims(2048, 8192, 32, 8, 64),
    "llama-8b": ModelDims(4096, 14336, 32, 8),
    "llama-70b": ModelDims(8192, 28672, 64, 8),
}


@dataclass(frozen=True)
class Op:
    """One GPU operation of a step program (one kernel or copy instance per rank per step)."""

    key: str  # model-level name: qkv_gemm, allreduce, htod_input...
    kind: int  # K_*
    klass: int  # C_*
    layer: int = -1
    in_graph: bool = False


@dataclass
class StepShape:
    """The batch of one step (identical on every rank: continuous batching is decided once per step)."""

    kind: str  # "decode" (paged attention) or "prefill" (flash attention over prefill + decode tokens)
    decode_seqs: int
    prefill_tokens: int
    prefill_seqs: int
    context: float  # mean KV length of the decoding sequences

    @property
    def tokens(self) -> int:
        return self.decode_seqs + self.prefill_tokens

    @property
    def seqs(self) -> int:
        return self.decode_seqs + self.prefill_seqs


def step_shapes(spec: ScenarioSpec, rng: np.random.Generator) -> list[StepShape]:
    """The batch of every step: batch size churn, growing contexts, prefill steps (mode-dependent)."""
    n = spec.n_steps
    churn = spec.confounders.batch_churn
    z = rng.standard_normal(n)
    u = rng.random(n)
    pl = rng.lognormal(0.0, 0.5, n)
    ns = rng.integers(1, 5, n)
    shapes = []
    b = float(spec.batch_size)
    ctx = float(spec.context_len)
    for i in range(n):
        if i:
            b = float(np.clip(b * np.exp(churn * z[i]), 1, 4 * spec.batch_size))
            ctx = ctx + 1 + 40 * churn * z[(i + 7) % n]
        bi = max(1, int(round(b)))
        if spec.mode == "prefill":
            seqs = int(ns[i])
            shapes.append(StepShape("prefill", 0, max(16, int(seqs * spec.prompt_len * pl[i])), seqs, 0.0))
        elif spec.mode == "mixed" and i > 0 and u[i] < spec.confounders.prefill_fraction:
            # chunked prefill: one chunk of a new prompt rides with the decoding batch
            chunk = int(np.clip(spec.prompt_len * pl[i], 128, 2048))
            shapes.append(StepShape("prefill", bi, chunk, 1, max(ctx, 16.0)))
        else:
            shapes.append(StepShape("decode", bi, 0, 0, max(ctx, 16.0)))
    return shapes


def stage_program(spec: ScenarioSpec, vocab: Vocabulary, stage: int, decode: bool, graphed: bool) -> list[Op]:
    """The ordered GPU ops of one step on one pipeline stage (the same on every TP rank of the stage)."""
    tp, pp = spec.tp, spec.pp
    per_stage = spec.n_layers // pp
    layers = range(stage * per_stage, (stage + 1) * per_stage)
    last = stage == pp - 1
    g = graphed
    ops: list[Op] = [Op("htod_input", K_HTOD, C_COPY), Op("htod_meta", K_HTOD, C_COPY)]
    if stage == 0:
        ops.append(Op("embed", K_KERNEL, C_MEMORY, in_graph=g))
        if tp > 1:  # vocab-parallel embedding ends in an all-reduce
            ops.append(Op("allreduce", K_COLL, C_COMM, in_graph=g))
    else:
        ops.append(Op("recv", K_RECV, C_COMM))
    fused = vocab.fused_allreduce_norm and tp > 1
    for i, layer in enumerate(layers):
        if i == 0 or not fused:
            ops.append(Op("rmsnorm" if i == 0 else "fused_norm", K_KERNEL, C_MEMORY, layer, g))
        ops.append(Op("qkv_gemm", K_KERNEL, C_COMPUTE, layer, g))
        if vocab.fused_rope_kv:
            ops.append(Op("rope_kv", K_KERNEL, C_MEMORY, layer, g))
        else:
            ops.append(Op("rotary", K_KERNEL, C_MEMORY, layer, g))
            ops.append(Op("kv_cache", K_KERNEL, C_MEMORY, layer, g))
        # decode attention streams the KV cache (memory-bound); prefill attention is FLOP-bound
        ops.append(Op("attn", K_KERNEL, C_MEMORY if decode else C_COMPUTE, layer, g))
        if decode and vocab.split_decode_attention:
            ops.append(Op("attn_reduce", K_KERNEL, C_MEMORY, layer, g))
        ops.append(Op("o_gemm", K_KERNEL, C_COMPUTE, layer, g))
        if tp > 1:
            ops.append(Op("allreduce", K_COLL, C_COMM, layer, g))
        if not fused:
            ops.append(Op("fused_norm", K_KERNEL, C_MEMORY, layer, g))
        ops.append(Op("gate_up_gemm", K_KERNEL, C_COMPUTE, layer, g))
        ops.append(Op("act", K_KERNEL, C_MEMORY, layer, g))
        ops.append(Op("down_gemm", K_KERNEL, C_COMPUTE, layer, g))
        if tp > 1:
            ops.append(Op("allreduce", K_COLL, C_COMM, layer, g))
    if last:
        if not fused:
            ops.append(Op("final_norm", K_KERNEL, C_MEMORY, in_graph=g))
        # logits and sampling run eagerly after the captured forward graph
        ops.append(Op("lm_head", K_KERNEL, C_COMPUTE))
        if tp > 1:
            ops.append(Op("allgather", K_COLL, C_COMM))
        ops.append(Op("to_float", K_KERNEL, C_MEMORY))
        ops.append(Op("softmax", K_KERNEL, C_MEMORY))
        ops.append(Op("sample", K_KERNEL, C_MEMORY))
        ops.append(Op("dtoh_tokens", K_DTOH, C_COPY))
    else:
        ops.append(Op("send", K_SEND, C_COMM))
    return ops


def op_cost_us(
    op: Op, shape: StepShape, spec: ScenarioSpec, cross_node: bool
) -> tuple[float, float, float, float]:
    """(base GPU duration µs, NVLink transfer µs, NIC transfer µs, bytes) of ``op`` in a step of ``shape``.

    For non-collective ops only the first value is used; for collectives the kernel time is the transfer time
    (NVLink part + NIC part) on top of waiting for the last rank.
    """
    d = MODEL_DIMS[spec.model]
    tp = spec.tp
    t = shape.tokens
    b = shape.decode_seqs
    hidden_b = t * d.hidden * 2.0
    key = op.key
    if op.kind in (K_HTOD, K_DTOH):
        if key == "htod_input":
            nbytes = t * 16.0 + 64
        elif key == "htod_meta":
            nbytes = shape.seqs * (8 + 4 * max(1.0, shape.context + shape.prefill_tokens) / 16) + 256
        else:
            nbytes = shape.seqs * 8.0
        return 1.4 + nbytes / PCIE_BPS * 1e6, 0.0, 0.0, nbytes
    if op.kind == K_COLL:
        if key == "allgather":
            nbytes = shape.seqs * VOCAB_SIZE / tp * 4.0
            frac = (tp - 1) / tp
        else:
            nbytes = hidden_b
            frac = 2 * (tp - 1) / tp
        if cross_node:
            return 0.0, 3.0 + nbytes / NVLINK_BPS * 1e6, 14.0 + frac * nbytes / NIC_BPS * 1e6, nbytes
        if nbytes < 512 * 1024:  # one-shot custom / LL all-reduce: latency-bound
            return 0.0, 4.0 + nbytes / P2P_BPS * 1e6, 0.0, nbytes
        return 0.0, 8.0 + frac * nbytes / NVLINK_BPS * 1e6, 0.0, nbytes
    if op.kind in (K_SEND, K_RECV):
        nbytes = 2 * hidden_b  # hidden states + residual
        if cross_node:
            return 0.0, 2.0, 16.0 + nbytes / NIC_BPS * 1e6, nbytes
        return 0.0, 7.0 + nbytes / P2P_BPS * 1e6, 0.0, nbytes

    def gemm(n_in: int, n_out: int, rows: float, shard: int) -> float:
        params = n_in * n_out / shard
        return 2.5 + max(params * 2.0 / HBM_BPS, 2.0 * rows * params / FLOPS) * 1e6

    def mem(nbytes: float, overhead: float = 2.0) -> float:
        return overhead + nbytes / HBM_BPS * 1e6

    q_out = (d.heads + 2 * d.kv_heads) * d.head_dim
    kvh = max(1.0, d.kv_heads / tp)
    if key == "qkv_gemm":
        return gemm(d.hidden, q_out, t, tp), 0, 0, 0
    if key == "o_gemm":
        return gemm(d.heads * d.head_dim, d.hidden, t, tp), 0, 0, 0
    if key == "gate_up_gemm":
        return gemm(d.hidden, 2 * d.inter, t, tp), 0, 0, 0
    if key == "down_gemm":
        return gemm(d.inter, d.hidden, t, tp), 0, 0, 0
    if key == "lm_head":
        return gemm(d.hidden, VOCAB_SIZE, shape.seqs, tp), 0, 0, 0
    if key in ("rmsnorm", "fused_norm", "final_norm"):
        return mem(hidden_b * (2 if key == "rmsnorm" else 4), 2.2), 0, 0, 0
    if key == "embed":
        return mem(hidden_b * 2, 2.5), 0, 0, 0
    if key == "rotary":
        return mem(t * q_out / tp * 2 * 2, 2.0), 0, 0, 0
    if key in ("kv_cache", "rope_kv"):
        extra = t * q_out / tp * 4 if key == "rope_kv" else 0
        return mem(t * 2 * kvh * d.head_dim * 2 * 2 + extra, 2.0), 0, 0, 0
    if key == "attn":
        kv_bytes = b * shape.context * 2 * kvh * d.head_dim * 2
        if shape.kind == "decode":
            return mem(kv_bytes, 4.0), 0, 0, 0
        heads = d.heads / tp
        per_seq = shape.prefill_tokens / max(1, shape.prefill_seqs)
        flops = 2.0 * shape.prefill_tokens * per_seq * heads * d.head_dim * 2  # causal: half of 4*T*S*H*D
        return 5.0 + (flops / ATTN_FLOPS + kv_bytes / HBM_BPS) * 1e6, 0, 0, 0
    if key == "attn_reduce":
        return mem(b * d.heads / tp * d.head_dim * 4 * 4, 2.0), 0, 0, 0
    if key == "act":
        return mem(t * d.inter / tp * 2 * 3, 2.0), 0, 0, 0
    if key == "to_float":
        return mem(shape.seqs * VOCAB_SIZE * 6.0, 2.0), 0, 0, 0
    if key == "softmax":
        return mem(shape.seqs * VOCAB_SIZE * 8.0, 3.0), 0, 0, 0
    if key == "sample":
        return mem(shape.seqs * VOCAB_SIZE * 4.0, 4.0), 0, 0, 0
    raise KeyError(key)


# grid/block written into kernel args: fixed per op (real values vary with shapes; detectors must not rely on them)
LAUNCH_DIMS: dict[str, tuple[tuple[int, int, int], tuple[int, int, int], int, int]] = {
    # key: (grid, block, registers per thread, shared memory)
    "embed": ((4096, 1, 1), (128, 1, 1), 32, 0),
    "rmsnorm": ((32, 1, 1), (1024, 1, 1), 28, 0),
    "fused_norm": ((32, 1, 1), (1024, 1, 1), 30, 0),
    "final_norm": ((32, 1, 1), (1024, 1, 1), 30, 0),
    "qkv_gemm": ((48, 1, 1), (384, 1, 1), 168, 213_248),
    "o_gemm": ((32, 1, 1), (384, 1, 1), 168, 213_248),
    "gate_up_gemm": ((112, 1, 1), (384, 1, 1), 168, 213_248),
    "down_gemm": ((64, 1, 1), (384, 1, 1), 168, 213_248),
    "lm_head": ((132, 1, 1), (384, 1, 1), 168, 213_248),
    "rotary": ((32, 1, 1), (512, 1, 1), 40, 0),
    "kv_cache": ((32, 1, 1), (512, 1, 1), 38, 0),
    "rope_kv": ((32, 8, 1), (256, 1, 1), 64, 0),
    "attn": ((8, 32, 4), (128, 1, 1), 255, 99_328),
    "attn_reduce": ((8, 32, 1), (128, 1, 1), 64, 16_384),
    "act": ((32, 1, 1), (1024, 1, 1), 24, 0),
    "to_float": ((2004, 1, 1), (128, 1, 1), 18, 0),
    "softmax": ((32, 1, 1), (1024, 1, 1), 36, 4_096),
    "sample": ((32, 1, 1), (1024, 1, 1), 48, 8_192),
    "allreduce": ((16, 1, 1), (512, 1, 1), 96, 0),
    "allgather": ((16, 1, 1), (512, 1, 1), 96, 87_568),
    "send": ((2, 1, 1), (512, 1, 1), 96, 87_568),
    "recv": ((2, 1, 1), (512, 1, 1), 96, 87_568),
}
