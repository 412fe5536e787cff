"""The fixed scenario suite of the detection benchmark, built from :class:`kat_gui.simulate.ScenarioSpec`.

38 scenarios: 13 healthy runs with confounders (34 %: batch churn, synchronized host pauses, prefill/decode mix,
warm-up, CUDA graphs, two nodes, pipeline parallelism) and 25 faulty runs covering every fault class (gpu, hbm,
nvlink, pcie, nic, cpu, hang, two simultaneous faults) at three or more severities (5/10/20/50 % slowdown; PCIe
also at the x16 -> x8 100 %), on TP 2/4/8, PP 2, one and two nodes, the vllm/sglang/trtllm vocabularies, eager
and CUDA graphs, decode/prefill/mixed, both Kineto time bases.

Two seed sets use the same scenario list: the development set (seed = DEV_SEED_BASE + case index) and the
held-out set (seed = HELDOUT_SEED_BASE + case index). The held-out set is scored and reported separately; a
detector must not be tuned on it.

The suite is fixed: changing a case changes every number in benchmarks/results/detection.md, so add cases at
the end and say so in the commit.
"""

from __future__ import annotations

from pathlib import Path
from types import ModuleType
from typing import Any

DEV_SEED_BASE = 1000
HELDOUT_SEED_BASE = 50_000

# the few cases --quick runs (one healthy per confounder family, one fault per common class)
QUICK = ("healthy_tp4_churn", "healthy_tp8_pauses", "gpu_tp4_20", "cpu_tp4_20", "nvlink_tp8_20", "hang_tp4")


def _case(
    name: str, fault_class: str, description: str, severity_label: str = "–", **spec: Any
) -> dict[str, Any]:
    return {
        "name": name,
        "fault_class": fault_class,
        "description": description,
        "severity_label": severity_label,
        "spec_args": spec,
    }


def _definitions() -> list[dict[str, Any]]:
    """Case definitions as plain data (ScenarioSpec field values; faults as FaultSpec kwargs)."""
    H = "healthy"

    def fault(component: str, ranks: list[int], severity: float = 0.2, **kw: Any) -> dict[str, Any]:
        return {"component": component, "ranks": ranks, "severity": severity, **kw}

    cases = [
        # ---- healthy with confounders (13)
        _case("healthy_tp2_decode", H, "TP2 decode, eager, default confounders", tp=2),
        _case(
            "healthy_tp4_churn", H, "TP4 decode, strong batch churn", tp=4, confounders={"batch_churn": 0.35}
        ),
        _case(
            "healthy_tp8_pauses",
            H,
            "TP8, 5 synchronized host pauses of 5 ms",
            tp=8,
            confounders={"sync_pauses": 5, "pause_us": 5000.0},
        ),
        _case(
            "healthy_tp4_mixed",
            H,
            "TP4 prefill/decode mix (40 % prefill steps)",
            tp=4,
            mode="mixed",
            confounders={"prefill_fraction": 0.4},
        ),
        _case(
            "healthy_tp2_warmup",
            H,
            "TP2, long slow warm-up (6 steps, +100 %)",
            tp=2,
            confounders={"warmup_steps": 6, "warmup_slowdown": 1.0},
        ),
        _case("healthy_tp8_graphs", H, "TP8 decode with CUDA graphs", tp=8, cuda_graphs=True),
        _case(
            "healthy_tp4_graphs_mixed_sglang",
            H,
            "TP4 mixed, CUDA graphs, SGLang names",
            tp=4,
            mode="mixed",
            cuda_graphs=True,
            vocabulary="sglang",
        ),
        _case("healthy_tp4_trtllm", H, "TP4 decode, TensorRT-LLM names", tp=4, vocabulary="trtllm"),
        _case(
            "healthy_tp8_2nodes",
            H,
            "TP8 over two nodes (clock offset), churn",
            tp=8,
            nodes=2,
            confounders={"batch_churn": 0.25},
        ),
        _case("healthy_tp4_pp2", H, "TP4 x PP2 on one node", tp=4, pp=2),
        _case(
            "healthy_tp4_pp2_2nodes",
            H,
            "TP4 x PP2 over two nodes, epoch-µs time base",
            tp=4,
            pp=2,
            nodes=2,
            time_base="epoch_us",
        ),
        _case(
            "healthy_tp8_noisy",
            H,
            "TP8, noisy host (frequent hiccups) and all confounders",
            tp=8,
            mode="mixed",
            noise={"hiccup_prob": 0.01, "host_sigma": 0.5},
            confounders={"sync_pauses": 4, "batch_churn": 0.3, "warmup_steps": 4},
        ),
        _case(
            "healthy_tp2_prefill_70b",
            H,
            "TP2 prefill, llama-70b shapes",
            tp=2,
            mode="prefill",
            model="llama-70b",
        ),
        # ---- gpu compute (4 severities)
        _case(
            "gpu_tp4_5",
            "gpu",
            "rank 2 SM clocks throttled, +5 %",
            "5%",
            tp=4,
            faults=[fault("gpu", [2], 0.05)],
        ),
        _case("gpu_tp4_10", "gpu", "rank 1 throttled, +10 %", "10%", tp=4, faults=[fault("gpu", [1], 0.10)]),
        _case("gpu_tp4_20", "gpu", "rank 3 throttled, +20 %", "20%", tp=4, faults=[fault("gpu", [3], 0.20)]),
        _case(
            "gpu_tp8_50_graphs",
            "gpu",
            "TP8 CUDA graphs, rank 5 throttled +50 %",
            "50%",
            tp=8,
            cuda_graphs=True,
            faults=[fault("gpu", [5], 0.50)],
        ),
        # ---- hbm (3)
        _case("hbm_tp2_10", "hbm", "TP2, rank 0 HBM +10 %", "10%", tp=2, faults=[fault("hbm", [0], 0.10)]),
        _case(
            "hbm_tp4_20_sglang",
            "hbm",
            "TP4 SGLang, rank 2 HBM +20 %",
            "20%",
            tp=4,
            vocabulary="sglang",
            faults=[fault("hbm", [2], 0.20)],
        ),
        _case(
            "hbm_tp8_50_mixed",
            "hbm",
            "TP8 mixed, rank 6 HBM +50 %",
            "50%",
            tp=8,
            mode="mixed",
            faults=[fault("hbm", [6], 0.50)],
        ),
        # ---- nvlink (3)
        _case(
            "nvlink_tp4_10",
            "nvlink",
            "TP4, link 0-1 +10 %",
            "10%",
            tp=4,
            faults=[fault("nvlink", [0, 1], 0.10)],
        ),
        _case(
            "nvlink_tp8_20",
            "nvlink",
            "TP8, node fabric +20 %",
            "20%",
            tp=8,
            faults=[fault("nvlink", list(range(8)), 0.20)],
        ),
        _case(
            "nvlink_tp8_50_trtllm",
            "nvlink",
            "TP8 TensorRT-LLM, link 2-3 +50 %",
            "50%",
            tp=8,
            vocabulary="trtllm",
            faults=[fault("nvlink", [2, 3], 0.50)],
        ),
        # ---- pcie (3)
        _case(
            "pcie_tp4_20", "pcie", "TP4, rank 1 PCIe +20 %", "20%", tp=4, faults=[fault("pcie", [1], 0.20)]
        ),
        _case(
            "pcie_tp2_50_mixed",
            "pcie",
            "TP2 mixed, rank 1 PCIe +50 %",
            "50%",
            tp=2,
            mode="mixed",
            faults=[fault("pcie", [1], 0.50)],
        ),
        _case(
            "pcie_tp8_100",
            "pcie",
            "TP8, rank 4 PCIe x16 -> x8 (+100 %)",
            "100%",
            tp=8,
            faults=[fault("pcie", [4], 1.0)],
        ),
        # ---- nic (3), two nodes
        _case(
            "nic_tp8_2nodes_10",
            "nic",
            "TP8 over 2 nodes, node 1 NIC +10 %",
            "10%",
            tp=8,
            nodes=2,
            faults=[fault("nic", [4], 0.10)],
        ),
        _case(
            "nic_pp2_2nodes_20",
            "nic",
            "TP4 x PP2 over 2 nodes, node 0 NIC +20 %",
            "20%",
            tp=4,
            pp=2,
            nodes=2,
            faults=[fault("nic", [0], 0.20)],
        ),
        _case(
            "nic_tp8_2nodes_50",
            "nic",
            "TP8 over 2 nodes, node 0 NIC +50 %",
            "50%",
            tp=8,
            nodes=2,
            faults=[fault("nic", [1], 0.50)],
        ),
        # ---- host cpu (3)
        _case(
            "cpu_tp4_10",
            "cpu",
            "TP4, rank 3 host launch gaps +10 %",
            "10%",
            tp=4,
            faults=[fault("cpu", [3], 0.10)],
        ),
        _case("cpu_tp4_20", "cpu", "TP4, rank 0 host +20 %", "20%", tp=4, faults=[fault("cpu", [0], 0.20)]),
        _case(
            "cpu_tp8_50_pp2",
            "cpu",
            "TP4 x PP2, rank 6 host +50 %",
            "50%",
            tp=4,
            pp=2,
            faults=[fault("cpu", [6], 0.50)],
        ),
        # ---- hang (3 variants; severity does not apply)
        _case(
            "hang_tp4",
            "hang",
            "TP4, rank 2 stops at step 20 (HBM Xid-like)",
            "hang",
            tp=4,
            faults=[fault("hbm", [2], kind="hang", onset_step=20)],
        ),
        _case(
            "hang_tp8_2nodes",
            "hang",
            "TP8 over 2 nodes, rank 6 GPU stops at step 30",
            "hang",
            tp=8,
            nodes=2,
            faults=[fault("gpu", [6], kind="hang", onset_step=30)],
        ),
        _case(
            "hang_tp2_graphs",
            "hang",
            "TP2 CUDA graphs, rank 1 stops at step 12",
            "hang",
            tp=2,
            cuda_graphs=True,
            faults=[fault("gpu", [1], kind="hang", onset_step=12)],
        ),
        # ---- two simultaneous faults (3)
        _case(
            "two_gpu_cpu_tp8_20",
            "two",
            "TP8: rank 1 gpu +20 % and rank 6 host +20 %",
            "20%",
            tp=8,
            faults=[fault("gpu", [1], 0.20), fault("cpu", [6], 0.20)],
        ),
        _case(
            "two_hbm_pcie_tp4_50",
            "two",
            "TP4: rank 0 HBM +50 % and rank 3 PCIe +50 %",
            "50%",
            tp=4,
            faults=[fault("hbm", [0], 0.50), fault("pcie", [3], 0.50)],
        ),
        _case(
            "two_gpu_nvlink_tp8_10",
            "two",
            "TP8: rank 2 gpu +10 % from step 5, link 6-7 +10 % from step 25",
            "10%",
            tp=8,
            faults=[fault("gpu", [2], 0.10, onset_step=5), fault("nvlink", [6, 7], 0.10, onset_step=25)],
        ),
    ]
    return cases


def cases() -> list[dict[str, Any]]:
    """The suite: dicts with name, fault_class, description, severity_label, spec_args, index."""
    out = _definitions()
    for i, c in enumerate(out):
        c["index"] = i
    return out


def quick_cases() -> list[dict[str, Any]]:
    return [c for c in cases() if c["name"] in QUICK]


def case_by_name(name: str) -> dict[str, Any]:
    for c in cases():
        if c["name"] == name:
            return c
    raise KeyError(name)


def seed_for(case: dict[str, Any], seed_set: str) -> int:
    """The seed of a case in a seed set ("dev" or "heldout")."""
    base = {"dev": DEV_SEED_BASE, "heldout": HELDOUT_SEED_BASE}[seed_set]
    return base + int(case["index"])


def build_spec(simulate: ModuleType, case: dict[str, Any]) -> Any:
    """The ScenarioSpec of a case (``simulate`` is the kat_gui.simulate module)."""
    from kat_gui.simulate.spec import ConfounderSpec, FaultSpec, NoiseSpec, ScenarioSpec

    args = dict(case["spec_args"])
    noise = NoiseSpec(**args.pop("noise", {}))
    conf = ConfounderSpec(**args.pop("confounders", {}))
    faults = [FaultSpec(**f) for f in args.pop("faults", [])]
    spec = ScenarioSpec(
        name=case["name"],
        description=case["description"],
        noise=noise,
        confounders=conf,
        faults=faults,
        **args,
    )
    spec.validate()
    return spec


def generate_case(simulate: ModuleType, case: dict[str, Any], outdir: Path, seed: int) -> Path:
    """Write one case's per-rank traces and truth.json into ``outdir``; returns the folder holding them."""
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    res = simulate.simulate(outdir, build_spec(simulate, case), seed=seed)
    run_dir = Path(res) if res is not None else outdir
    if run_dir.is_file():
        run_dir = run_dir.parent
    return run_dir


def e2e_case() -> dict[str, Any]:
    """A small faulty case for the end-to-end test (TP2, few steps, a large slowdown)."""
    c = _case(
        "e2e_gpu_tp2_50",
        "gpu",
        "TP2 rank 1 gpu +50 %",
        "50%",
        tp=2,
        n_steps=16,
        n_layers=4,
        faults=[{"component": "gpu", "ranks": [1], "severity": 0.5, "onset_step": 4}],
    )
    c["index"] = 0
    return c
