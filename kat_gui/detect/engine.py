"""The detector's orchestration: alignment -> peer and history signals -> findings -> anomaly rows -> meta.

Read ``docs/detection.md`` for the method; the thresholds are the fields of :class:`Params`. Each analysis
lives in its own module and appends to one list of findings, in this order: rank faults
(``rank_findings``), stragglers (``straggler_findings``, which skips ranks already named), link shifts
(``link_findings``), hangs (``hang_findings``), topology anomalies (``topology_findings``). Findings are then
sorted by confidence (stable) and numbered, and the anomaly table (``anomalies``) is built.
"""

from __future__ import annotations

from dataclasses import asdict

import numpy as np

from kat_gui.detect.analysis import RunAnalysis
from kat_gui.detect.anomalies import AnomalyPart, anomaly_table
from kat_gui.detect.frame import RunFrame
from kat_gui.detect.hang_findings import hang_findings
from kat_gui.detect.link_findings import link_findings
from kat_gui.detect.params import Params
from kat_gui.detect.rank_findings import rank_findings
from kat_gui.detect.rank_step import rank_step_signals
from kat_gui.detect.result import DetectResult
from kat_gui.detect.straggler_findings import straggler_findings
from kat_gui.detect.topology_findings import topology_findings
from kat_gui.progress import Progress, scaled

# Written with every result; a store analysed by another version is analysed again when the window opens it
# (read-write). Raised when results change: 3 = large cells beyond the winsorising bounds take exact medians.
DETECTOR_VERSION = "kat-sync/3"


def detect_frame(
    fr: RunFrame, params: Params | None = None, progress: Progress | None = None
) -> DetectResult:
    """Run detection on a loaded frame (no store access); see :func:`kat_gui.detect.detect_store`."""
    p = params or Params()
    # Progress between every stage and inside the long ones (about every 0.1-0.3 s on a 4M-kernel run on
    # one core): the GUI's callback raises Cancelled there, so a cancel takes effect within ~0.5 s.
    if progress:
        progress(0.05, "aligning ranks")
    run = RunAnalysis(fr, p, scaled(progress, 0.05, 0.35))
    return detect_run(run, progress)


def detect_run(run: RunAnalysis, progress: Progress | None = None) -> DetectResult:
    """Signals, findings, anomaly table and meta of an aligned run: a whole-run :class:`RunAnalysis`, or a
    streamed one (``kat_gui.detect.streamed``, which answers the same questions window by window)."""
    fr = run.frame
    p = run.params
    if progress:
        progress(0.35, "comparing ranks with their peers")
    sig = run.kernel_signals(scaled(progress, 0.35, 0.65)) if fr.n_gpu else {}
    if progress:
        progress(0.65, "attributing components: rank faults")
    findings: list[dict] = []
    anomaly_parts: list[AnomalyPart] = []
    rank_findings(run, sig, findings, anomaly_parts)
    if progress:
        progress(0.72, "attributing components: stragglers")
    straggler_findings(run, sig, findings, anomaly_parts)
    if progress:
        progress(0.78, "attributing components: links")
    link_findings(run, findings, anomaly_parts)
    if progress:
        progress(0.85, "attributing components: hangs")
    hang_findings(run, findings, anomaly_parts)
    if progress:
        progress(0.88, "attributing components: topology")
    topology_findings(fr, findings)
    if progress:
        progress(0.9, "anomaly table")

    order = sorted(range(len(findings)), key=lambda i: -findings[i]["confidence"])
    remap = {old: new for new, old in enumerate(order)}
    findings = [findings[i] for i in order]
    for i, f in enumerate(findings):
        f["id"] = i
    anomalies = anomaly_table(run, findings, anomaly_parts, remap)
    for f in findings:
        f["anomaly_count"] = int(np.count_nonzero(anomalies["finding"] == f["id"]))
    co = run.collectives
    meta = {
        "detector": DETECTOR_VERSION,
        "params": asdict(p),
        "steps": {
            "method": run.steps.method,
            "count": int(len(run.step_values)) if run.has_steps else 0,
            "marker": run.steps.marker,
        },
        "collectives": {
            "instances": int(co.n),
            "grouping": co.grouping,
            "median_arrival_skew_ns": float(np.median(co.skew_ns)) if co.n else 0.0,
        },
        "clock": {
            "offsets_ns": co.offsets_ns,
            "residual_ns": co.offset_residual_ns,
            "domains": co.clock_domains,
        },
        "hosts_from": fr.hosts_from,
        "hosts": _host_groups(fr),
        "noise": {k: round(float(s.sigma), 6) for k, s in sig.items()},
        "ranks": [int(r) for r in fr.ranks],
        "gpu_events": int(fr.n_gpu),
    }
    if progress:
        progress(1.0, "done")
    rank_step = rank_step_signals(run) if fr.n_gpu and run.n_ranks else None
    return DetectResult(fr.name, findings, anomalies, meta, co, sig, run.step_values, rank_step)


def _host_groups(fr: RunFrame) -> list[list[int]]:
    """The ranks of each host as detection saw them (host names are left out: they are scrubbed from
    reports), hosts ordered by their lowest rank; one group when hosts are unknown."""
    groups: dict[str, list[int]] = {}
    for r in fr.ranks:
        groups.setdefault(fr.host_of_rank.get(int(r), "") if fr.hosts_known else "", []).append(int(r))
    return sorted(groups.values(), key=lambda g: g[0])
