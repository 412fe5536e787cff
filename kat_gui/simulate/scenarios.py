"""Named scenarios for ``kat simulate --scenario NAME`` (the benchmark builds more from ScenarioSpec)."""

from __future__ import annotations

from kat_gui.simulate.spec import ConfounderSpec, FaultSpec, NoiseSpec, ScenarioSpec


def _s(name: str, description: str, **kw) -> ScenarioSpec:
    return ScenarioSpec(name=name, description=description, **kw)


_LIST = [
    # healthy runs, each with confounders (warm-up, synchronized pauses, batch churn, prefill/decode mix)
    _s(
        "healthy_tp4_decode",
        "healthy vLLM TP=4 eager decode, batch churn, warm-up and 2 synchronized host pauses",
    ),
    _s(
        "healthy_tp8_decode_graphs",
        "healthy vLLM TP=8 decode with CUDA graphs (one cudaGraphLaunch per step)",
        tp=8,
        cuda_graphs=True,
    ),
    _s(
        "healthy_tp4_mixed_sglang",
        "healthy SGLang TP=4, chunked prefill mixed with decode, collective args, 3 synchronized pauses",
        vocabulary="sglang",
        mode="mixed",
        confounders=ConfounderSpec(sync_pauses=3, prefill_fraction=0.35),
    ),
    _s(
        "healthy_tp8_2node_trtllm",
        "healthy TensorRT-LLM TP=8 over 2 nodes (inter-node all-reduce), epoch-µs "
        "timestamps, per-host clock offset",
        tp=8,
        nodes=2,
        vocabulary="trtllm",
        time_base="epoch_us",
    ),
    _s(
        "healthy_tp4_pp2_2node_prefill",
        "healthy vLLM TP=4 x PP=2 over 2 nodes, prefill-heavy, send/recv between stages over the NIC",
        tp=4,
        pp=2,
        nodes=2,
        mode="prefill",
        n_steps=32,
    ),
    _s(
        "healthy_tp8_70b_mixed_graphs",
        "healthy vLLM TP=8 70B model (GPU-bound), decode in CUDA graphs with eager chunked-prefill steps",
        tp=8,
        model="llama-70b",
        mode="mixed",
        cuda_graphs=True,
    ),
    _s(
        "healthy_tp2_noisy_host",
        "healthy vLLM TP=2 decode of a 1B model (launch-bound) with noisy host pacing (frequent hiccups, "
        "5 synchronized pauses, strong batch churn)",
        tp=2,
        model="llama-1b",
        noise=NoiseSpec(host_sigma=0.5, hiccup_prob=0.02, hiccup_us=150.0),
        confounders=ConfounderSpec(sync_pauses=5, batch_churn=0.3),
    ),
    # single faults
    _s(
        "gpu_throttle_tp4",
        "TP=4 decode; GPU 2 SM clocks throttled (+20% on compute-bound kernels) steps 16-39",
        faults=[FaultSpec("gpu", [2], 0.2, 16, 40)],
    ),
    _s(
        "gpu_throttle_tp8_graphs_5pct",
        "TP=8 decode with CUDA graphs; GPU 5 throttled by 5% from step 12",
        tp=8,
        cuda_graphs=True,
        faults=[FaultSpec("gpu", [5], 0.05, 12)],
    ),
    _s(
        "hbm_degraded_tp4_sglang",
        "SGLang TP=4 mixed; GPU 1 HBM degraded (+20% on memory-bound kernels) from step 10",
        vocabulary="sglang",
        mode="mixed",
        faults=[FaultSpec("hbm", [1], 0.2, 10)],
    ),
    _s(
        "nvlink_degraded_tp8",
        "TP=8 decode; NVLink of GPU 2-GPU 3 degraded: all-reduce transfer +50% on all ranks from step 20",
        tp=8,
        faults=[FaultSpec("nvlink", [2, 3], 0.5, 20)],
    ),
    _s(
        "pcie_downgrade_tp4_prefill",
        "TP=4 prefill; GPU 3 PCIe link x16 -> x8 (host copies 2x slower) from step 8",
        mode="prefill",
        n_steps=32,
        faults=[FaultSpec("pcie", [3], 1.0, 8)],
    ),
    _s(
        "nic_degraded_tp8_2node",
        "TensorRT-LLM TP=8 over 2 nodes; node 1 NIC degraded (+50% inter-node transfer) steps 15-34",
        tp=8,
        nodes=2,
        vocabulary="trtllm",
        faults=[FaultSpec("nic", [4], 0.5, 15, 35)],
    ),
    _s(
        "nic_degraded_pp2_2node",
        "TP=4 x PP=2 over 2 nodes; node 1 NIC degraded (+50% on pipeline send/recv) from step 12",
        tp=4,
        pp=2,
        nodes=2,
        n_steps=40,
        faults=[FaultSpec("nic", [5], 0.5, 12)],
    ),
    _s(
        "cpu_contention_tp4",
        "TP=4 eager decode; host CPU contention on rank 1 (+50% launch overhead, more hiccups) steps 12-35",
        faults=[FaultSpec("cpu", [1], 0.5, 12, 36)],
    ),
    _s(
        "hang_tp4",
        "TP=4 decode; rank 2 hangs in step 30 (its trace stops; peers block in the next all-reduce)",
        faults=[FaultSpec("hbm", [2], 1.0, 30, kind="hang")],
    ),
    _s(
        "gpu_throttle_pp2",
        "TP=2 x PP=2 decode; GPU 3 (stage 1) throttled by 50% from step 10",
        tp=2,
        pp=2,
        faults=[FaultSpec("gpu", [3], 0.5, 10)],
    ),
    _s(
        "two_faults_tp8",
        "TP=8 decode; GPU 1 throttled 20% (steps 10-) and host CPU contention on rank 6 "
        "(50%, steps 20-39) at the same time",
        tp=8,
        faults=[FaultSpec("gpu", [1], 0.2, 10), FaultSpec("cpu", [6], 0.5, 20, 40)],
    ),
]

SCENARIOS: dict[str, ScenarioSpec] = {s.name: s for s in _LIST}


def list_scenarios() -> list[tuple[str, str]]:
    """(name, one-line description) of every named scenario, in a stable order."""
    return [(s.name, s.description) for s in _LIST]
