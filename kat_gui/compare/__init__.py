"""Run-vs-run comparison: align a healthy and a degraded run by step and rank the differences, with a
significance test so that noise shows as insignificant (docs/compare.md).

Public API:

- ``compare_stores(healthy, degraded, anchor=None, progress=None, params=None) -> Comparison``: paths or open
  TraceStores;
- ``load_run(path_or_store) -> RunData`` and ``compare_runs(h, d, anchor, params) -> Comparison``: load once,
  re-compare cheaply with another anchor (what a comparison view does when the user moves the anchor);
- ``Anchor(healthy_step, degraded_step, healthy_ns, degraded_ns)``: which steps line up;
- ``Comparison``: ``differences`` (ranked :class:`Difference` rows; ``significant`` is the grey/colour switch),
  ``step_time_healthy_ns`` / ``step_time_degraded_ns``, ``ranks``, ``alignment``, ``to_json()``
  (schema ``kat.compare/1``).
"""

from kat_gui.compare.engine import compare_runs, compare_stores
from kat_gui.compare.result import SCHEMA, Anchor, Comparison, Difference, Params, RunSummary
from kat_gui.compare.run import RunData, load_run

__all__ = [
    "SCHEMA",
    "Anchor",
    "Comparison",
    "Difference",
    "Params",
    "RunData",
    "RunSummary",
    "compare_runs",
    "compare_stores",
    "load_run",
]
