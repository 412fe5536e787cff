"""The order in which a reader meets the rows of a run-vs-run diff, and the per-rank summary table.

Order: stopped ranks first (a hang or crash explains everything after it), then significant causes
(kernels, classes, rank busy/idle), then significant symptoms (collective wait grows because another rank is
late; the step time is the sum of every cause), then significant structural changes, each block by the size
of its effect (a class row discounted by :data:`CLASS_ROW_DISCOUNT`, so the concrete kernel leads when both
moved about as much), then the rest by q-value.

Symptoms need a cause: with the common-mode analysis on and no significant cause on any rank,
:func:`demote_causeless_symptoms` turns significant symptoms grey (a slower step that every rank shares is
a workload difference, and who waits for whom is the lottery of which GPU is slowest).

Units: effects are relative changes (an infinite one, "new", sorts as 1e9); times in ns.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from kat_gui.compare.result import RANK_METRIC_KINDS, Difference

CLASS_ROW_DISCOUNT = 0.9


def demote_causeless_symptoms(rows: list[Difference], structural: list[Difference]) -> None:
    """Symptom rows lose their significance (in place) when no row, tested or structural, is a
    significant cause."""
    if not any(d.significant and not d.symptom for d in rows + structural):
        # Symptoms need a cause: with none found on any rank, a slower step is the same work done by all
        # ranks alike (a workload difference: batch, prompt mix), and who waits for whom is the lottery of
        # which healthy GPU is slowest.
        for d in rows:
            if d.symptom and d.significant:
                d.significant = False
                d.note = (
                    "symptom without a cause on any rank: workload difference (or the GPUs' speed lottery)"
                )


def rank_differences(rows: list[Difference], structural: list[Difference]) -> list[Difference]:
    """Tested ``rows`` and ``structural`` rows in reading order (see the module docstring)."""

    def mag(d: Difference) -> float:
        e = abs(d.effect)
        e = e if np.isfinite(e) else 1e9
        # A class row aggregates kernel rows: it leads only when clearly larger than the kernels it holds, so the
        # reader meets the concrete kernel first when both moved about as much.
        return e * CLASS_ROW_DISCOUNT if d.kind in ("class", "class_rank") else e

    stopped = [d for d in structural if d.kind == "rank_stopped"]
    structural = [d for d in structural if d.kind != "rank_stopped"]
    causes = [d for d in rows if d.significant and not d.symptom]
    symptoms = [d for d in rows if d.significant and d.symptom]
    struct_sig = [d for d in structural if d.significant]
    rest = [d for d in rows if not d.significant] + [d for d in structural if not d.significant]
    out: list[Difference] = list(stopped)
    for block in (causes, symptoms, struct_sig):
        out += sorted(block, key=lambda d: (-mag(d), -abs(d.delta_total_ns)))
    out += sorted(rest, key=lambda d: (d.q_value, -mag(d)))
    return out


def rank_table(rows: list[Difference], d_ranks: list[int]) -> list[dict[str, Any]]:
    """Per degraded rank: its busy/idle/wait changes (None where untested; with the row's ``window`` when its
    change is located in time) and whether it is ``slower`` (significantly more GPU busy time per step)."""
    by = {(d.kind, d.rank): d for d in rows if d.kind in RANK_METRIC_KINDS}
    out = []
    for r in d_ranks:
        entry: dict[str, Any] = {"rank": r}
        for kind in RANK_METRIC_KINDS:
            d = by.get((kind, r))
            key = kind.split("_", 1)[1]
            if d is None:
                entry[key] = None
                continue
            entry[key] = {
                "healthy_p50_ns": d.p50_healthy_ns,
                "degraded_p50_ns": d.p50_degraded_ns,
                "effect": d.effect,
                "q_value": d.q_value,
                "significant": d.significant,
            }
            if d.window is not None:  # numbers over a window of steps (absent: the whole run)
                entry[key]["window"] = d.window
        busy = entry.get("busy") or {}
        entry["slower"] = bool(busy.get("significant") and busy.get("effect", 0) > 0)
        out.append(entry)
    return out
