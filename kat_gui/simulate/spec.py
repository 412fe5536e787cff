"""What a simulated run is: topology, workload, noise, confounders and faults, as plain dataclasses.

A :class:`ScenarioSpec` is everything the simulator needs besides the seed; the same (spec, seed) always gives
byte-identical output. Specs are built programmatically (the benchmark varies parameters and seeds) or taken
from :data:`kat_gui.simulate.SCENARIOS`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any

from kat_gui.errors import KatInputError

FAULT_COMPONENTS = ("gpu", "hbm", "nvlink", "pcie", "nic", "cpu")
VOCABULARIES = ("vllm", "sglang", "trtllm")
MODES = ("decode", "prefill", "mixed")
TIME_BASES = ("base_ns", "epoch_us")
MODELS = ("llama-1b", "llama-8b", "llama-70b")
VISIBLE_DEVICES = ("all", "own")


@dataclass
class FaultSpec:
    """One injected fault.

    ``severity`` is a slowdown fraction (0.2 = the affected work takes 20 % longer; PCIe x16 -> x8 is about 1.0).
    The fault is active for steps ``onset_step <= step < end_step`` (``end_step`` None = to the end of the run).
    ``kind`` "slowdown" or "hang" (the ranks stop at ``onset_step``; severity is ignored).
    ``ranks``: the culprit ranks. For ``nvlink`` the GPUs whose link is degraded (two ranks = that pair's link,
    all ranks of a node = the node's NVLink fabric); for ``nic`` any rank of the node whose NIC is degraded.
    """

    component: str
    ranks: list[int]
    severity: float = 0.2
    onset_step: int = 10
    end_step: int | None = None
    kind: str = "slowdown"
    component_id: str | None = None  # derived from the topology when None


@dataclass
class NoiseSpec:
    """Healthy variability. Every value is drawn from the seed, identically with and without faults."""

    kernel_sigma: float = 0.03  # lognormal sigma of each kernel's duration
    gpu_spread: float = 0.008  # lognormal sigma of a GPU's fixed speed (silicon lottery)
    host_sigma: float = 0.3  # lognormal sigma of host gaps between launches
    hiccup_prob: float = 0.006  # per launch, per rank: probability of an independent host hiccup
    hiccup_us: float = 80.0  # mean hiccup length (exponential)
    coll_jitter_us: float = 0.5  # mean per-rank jitter of a collective's end (uniform in [0, 2x])


@dataclass
class ConfounderSpec:
    """Healthy run-wide effects that must not be called faults."""

    warmup_steps: int = 3  # first steps slower on every rank
    warmup_slowdown: float = 0.5  # step 0 takes 1 + this, halving each step
    sync_pauses: int = 2  # steps where every rank's host stalls together (GC, scheduler hiccup)
    pause_us: float = 3000.0
    batch_churn: float = 0.15  # lognormal sigma of the step-to-step batch size change (0 = constant batch)
    prefill_fraction: float = 0.3  # mixed mode: fraction of steps that carry a prefill chunk


@dataclass
class ScenarioSpec:
    """A complete simulated job. See docs/simulator.md for the meaning of every field."""

    name: str = "custom"
    description: str = ""
    tp: int = 4
    pp: int = 1
    nodes: int = 1
    n_steps: int = 48
    n_layers: int = 8  # simulated layers in all (split across pipeline stages)
    model: str = "llama-8b"
    mode: str = "decode"
    cuda_graphs: bool = False
    vocabulary: str = "vllm"
    time_base: str = "base_ns"  # "base_ns": baseTimeNanoseconds + relative ts; "epoch_us": absolute epoch µs
    batch_size: int = 32  # decode sequences per step (mean; churns)
    prompt_len: int = 1024  # mean prompt length (prefill tokens per sequence)
    context_len: int = 1024  # mean KV length of decoding sequences at the start
    clock_offsets_us: list[float] | None = None  # per host; None = host0 0, others drawn from the seed
    # "all": every process sees its node's GPUs (rank r on device r % gpus_per_node); "own": one
    # CUDA_VISIBLE_DEVICES per process, so every rank's GPU is device 0 and deviceProperties lists one GPU
    visible_devices: str = "all"
    write_hostnames: bool = False  # write "hostname": "host<node>" into each trace's top-level metadata
    hang_tail_us: float = 40_000.0  # hang scenarios: how long the profiler keeps recording after the hang
    noise: NoiseSpec = field(default_factory=NoiseSpec)
    confounders: ConfounderSpec = field(default_factory=ConfounderSpec)
    faults: list[FaultSpec] = field(default_factory=list)

    @property
    def world_size(self) -> int:
        return self.tp * self.pp

    @property
    def gpus_per_node(self) -> int:
        return self.world_size // self.nodes

    def to_dict(self) -> dict[str, Any]:
        """The spec as plain data; fields added after the first release are left out at their defaults, so
        that truth.json of every scenario that does not use them stays byte-identical."""
        d = asdict(self)
        for key, default in _LATER_FIELDS.items():
            if d.get(key) == default:
                del d[key]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ScenarioSpec:
        """Inverse of :meth:`to_dict` (as written into truth.json)."""
        d = dict(d)
        d["noise"] = NoiseSpec(**d.get("noise", {}))
        d["confounders"] = ConfounderSpec(**d.get("confounders", {}))
        d["faults"] = [FaultSpec(**f) for f in d.get("faults", [])]
        return cls(**d)

    def with_(self, **changes: Any) -> ScenarioSpec:
        """A copy with some fields changed (for building suites)."""
        return replace(self, **changes)

    def scaled(self, n_steps: int) -> ScenarioSpec:
        """A copy with ``n_steps`` steps and every fault window rescaled to keep its place in the run."""
        ratio = n_steps / self.n_steps
        faults = []
        for f in self.faults:
            onset = min(n_steps - 1, int(round(f.onset_step * ratio)))
            end = None if f.end_step is None else max(onset + 1, int(round(f.end_step * ratio)))
            faults.append(replace(f, ranks=list(f.ranks), onset_step=onset, end_step=end))
        return replace(self, n_steps=n_steps, faults=faults)

    def validate(self) -> None:
        """Raise KatInputError naming the scenario and the first inconsistency."""

        def bad(msg: str) -> KatInputError:
            return KatInputError(None, f"scenario {self.name!r}: {msg}")

        if self.tp not in (1, 2, 4, 8):
            raise bad(f"tp must be 1, 2, 4 or 8, got {self.tp}")
        if self.pp not in (1, 2, 4):
            raise bad(f"pp must be 1, 2 or 4, got {self.pp}")
        if self.nodes < 1 or self.world_size % self.nodes:
            raise bad(f"{self.nodes} nodes do not divide world size {self.world_size}")
        if self.gpus_per_node > 8:
            raise bad(f"{self.gpus_per_node} GPUs per node (at most 8)")
        if self.n_layers < self.pp or self.n_layers % self.pp:
            raise bad(f"n_layers {self.n_layers} must be a multiple of pp {self.pp}")
        if not 2 <= self.n_steps <= 2000:
            raise bad(f"n_steps must be in [2, 2000], got {self.n_steps}")
        for name, value, allowed in (
            ("mode", self.mode, MODES),
            ("vocabulary", self.vocabulary, VOCABULARIES),
            ("time_base", self.time_base, TIME_BASES),
            ("model", self.model, MODELS),
            ("visible_devices", self.visible_devices, VISIBLE_DEVICES),
        ):
            if value not in allowed:
                raise bad(f"{name} must be one of {', '.join(allowed)}, got {value!r}")
        if self.clock_offsets_us is not None and len(self.clock_offsets_us) != self.nodes:
            raise bad(f"clock_offsets_us needs one value per node ({self.nodes})")
        hangs = 0
        for i, f in enumerate(self.faults):
            if f.component not in FAULT_COMPONENTS:
                raise bad(f"fault {i}: component must be one of {', '.join(FAULT_COMPONENTS)}")
            if f.kind not in ("slowdown", "hang"):
                raise bad(f"fault {i}: kind must be slowdown or hang")
            if not f.ranks or any(not 0 <= r < self.world_size for r in f.ranks):
                raise bad(f"fault {i}: ranks {f.ranks} outside 0..{self.world_size - 1}")
            if not 0 <= f.onset_step < self.n_steps:
                raise bad(f"fault {i}: onset_step {f.onset_step} outside the run")
            if f.end_step is not None and f.end_step <= f.onset_step:
                raise bad(f"fault {i}: end_step {f.end_step} not after onset_step {f.onset_step}")
            if f.kind == "slowdown" and not 0 < f.severity <= 10:
                raise bad(f"fault {i}: severity must be in (0, 10], got {f.severity}")
            if f.component == "nic" and self.nodes < 2:
                raise bad(f"fault {i}: a nic fault needs a multi-node job")
            if f.kind == "hang":
                hangs += 1
                if len(f.ranks) != 1:
                    raise bad(f"fault {i}: a hang names exactly one rank")
        if hangs > 1:
            raise bad("at most one hang per scenario")


# Fields added after the first release, with their defaults (left out of to_dict() at these values).
_LATER_FIELDS: dict[str, Any] = {"visible_devices": "all", "write_hostnames": False}
