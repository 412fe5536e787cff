"""Ground-truth trace simulator: multi-rank inference Kineto traces with labelled faults (docs/simulator.md).

Public API::

    simulate(outdir, scenario, seed=0) -> Path   # rank-<r>.pt.trace.json per rank + truth.json
    SCENARIOS: dict[str, ScenarioSpec]            # named scenarios
    list_scenarios() -> list[tuple[str, str]]     # (name, one-line description)
    ScenarioSpec, FaultSpec, NoiseSpec, ConfounderSpec   # build scenarios programmatically

Detection code must never import this package (it would see the ground truth).
"""

from kat_gui.simulate.scenarios import SCENARIOS, list_scenarios
from kat_gui.simulate.sim import TRUTH_SCHEMA, simulate
from kat_gui.simulate.spec import ConfounderSpec, FaultSpec, NoiseSpec, ScenarioSpec

__all__ = [
    "SCENARIOS",
    "TRUTH_SCHEMA",
    "ConfounderSpec",
    "FaultSpec",
    "NoiseSpec",
    "ScenarioSpec",
    "list_scenarios",
    "simulate",
]
