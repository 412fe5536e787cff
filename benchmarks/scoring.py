"""Score a detector's ``kat.detect/1`` output against a simulator's ``kat.truth/1`` ground truth.

Pure functions over parsed JSON dicts (no files, no store), so tests and the benchmark call the same code.

Ground truth (``kat.truth/1``, written by ``kat_gui.simulate``; see docs/simulator.md) supplies
- ``faults``: fault events, each with ``id``, ``component``, ``component_id``, ``ranks`` (culprit ranks),
  ``severity`` (fractional slowdown, e.g. 0.2 = 20 % slower) and a time window ``[start_ns, end_ns]``;
- ``labels``: per rank, columnar arrays over every kernel/memcpy instance: ``stream``, ``start_ns``, ``end_ns``,
  ``label`` (0 normal, 1 root, 2 symptom) and ``fault`` (fault id, -1 for normal instances);
- the number of steps of the run (used as the denominator of false alarms on healthy runs).

Matching an anomaly to a truth instance
    The store keeps Kineto times exactly (``baseTimeNanoseconds + round(ts * 1000)``), so an anomaly's
    ``(rank, start_ns)`` equals its truth instance's. We match on ``rank`` + ``start_ns`` within ``tol_ns``
    (default 0: exact) and, when several instances of one rank start at the same ns, prefer the one on the same
    ``stream`` and then the closest ``end_ns``. Stream caveat: the detector reports the stream id it read from
    the trace and the simulator labels the stream it wrote, which agree for Kineto input; a detector that
    renumbers streams still matches because the stream is only a tie-breaker. ``device`` is not used (a rank's
    device index may differ from its rank). Anomalies that match no instance count as false positives.

Kernel metrics (roots; micro-averaged over instances)
    Predictions are the anomalies with ``role == "root"``; each truth instance counts at most once.
    - lenient: TP = root-labelled instances called root; FP = normal (or unmatched) instances called root;
      symptoms called root are "don't care" (neither TP nor FP); FN = root instances not called root.
    - strict: as lenient, but a symptom called root is a FP.

Event metrics (per fault)
    A finding's window is ``[start_ns, end_ns]``; a finding with ``end_ns <= start_ns`` (window not given) is
    taken to cover the whole run. A fault is **found** when at least one finding's window overlaps the fault's
    window (closed intervals) AND (the finding's ranks share a rank with the fault's culprit ranks OR the
    finding's component equals the fault's component).
    For a run with ``n`` faults the "top" findings are the first ``n`` (findings are sorted by confidence):
    - culprit-rank top-1: the union of ranks of the top ``n`` findings contains a culprit rank of the fault.
      Only scored for faults whose culprit is knowable from timing: not ``nvlink``/``nic`` (a symmetric link
      slowdown shows on every rank sharing it), and not when truth says ``culprit_knowable: false``.
    - component top-1 / top-3: the fault's component is among the components of the first ``n`` / ``n + 2``
      findings. A run with no findings misses every fault.
    Recall by severity groups faults by their severity (rounded to whole percent); hangs (``kind: "hang"``)
    form their own group, severity does not apply to them.

False alarms (healthy runs: truth has no faults)
    Finding precision (faulty runs) = findings that match at least one fault / all findings on faulty runs.
    Every finding on a healthy run is a false alarm; reported per 1,000 healthy steps, summed over the suite
    (total findings / total steps * 1000). Anomalies flagged on healthy runs are reported too (count, per 1,000
    steps, and as a fraction of healthy kernel instances).

Expert precision (every mark, as an expert reads it; "old" precision above stays for comparison)
    Counts every anomaly, root or symptom, once per truth instance:
    - a symptom mark is right when the collective's extra time caused by the faults (truth column
      ``excess_ns``: its duration minus the fault-free run's) is at least ``EXPERT_MIN_WAIT_NS`` (2 µs), false
      below (truth without ``excess_ns``: right when labelled symptom); a symptom mark on a root instance is
      "don't care" (lenient) or false (strict);
    - a root mark is right on a root instance, false on a normal (or unmatched) one; on a host-CPU fault's rank
      the truth root is exactly "the GPU waited for that launch" (docs/simulator.md), so a root on a kernel the
      GPU started on time is false; a root mark on a symptom instance is "don't care" (lenient) or false (strict);
    - kernels a fault changed without being its target (truth root of a ``gpu``/``hbm`` fault whose ``factor``
      is below ``1 + severity``: memory kernels under an SM throttle, compute kernels under an HBM fault) count
      neither way, whatever the mark.
    Precision = right / (right + false). ``anomalies per faulty run`` = all anomalies on faulty runs / runs.

No point-adjustment anywhere: one hit inside a fault window does not credit the window's other instances.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

LABEL_NORMAL = 0
LABEL_ROOT = 1
LABEL_SYMPTOM = 2

# Components whose culprit rank cannot be told from timing alone: a slow link is slow for every rank on it.
SYMMETRIC_COMPONENTS = frozenset({"nvlink", "nic"})

EXPERT_MIN_WAIT_NS = 2_000  # a symptom whose fault-caused extra wait is below this is not one to an expert

DETECT_SCHEMA = "kat.detect/1"
TRUTH_SCHEMA = "kat.truth/1"


# --------------------------------------------------------------------------------------------- truth access


def truth_faults(truth: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The fault events of a truth dict, each normalised to have id, component, ranks, severity, start_ns, end_ns.

    Assumes the ``kat.truth/1`` layout; a fault window may be given as ``window: [start, end]`` or as
    ``start_ns``/``end_ns`` fields.
    """
    out = []
    for i, f in enumerate(truth.get("faults") or []):
        if "window" in f and f["window"] is not None:
            w = f["window"]
            if isinstance(w, Mapping):
                start, end = int(w["start_ns"]), int(w["end_ns"])
            else:
                start, end = int(w[0]), int(w[1])
        else:
            start, end = int(f.get("start_ns", 0)), int(f.get("end_ns", 0))
        out.append(
            {
                **f,
                "id": int(f.get("id", i)),
                "component": str(f.get("component", "unknown")),
                "ranks": [int(r) for r in f.get("ranks", [])],
                "severity": float(f.get("severity", 0.0) or 0.0),
                "start_ns": start,
                "end_ns": end,
            }
        )
    return out


def truth_steps(truth: Mapping[str, Any]) -> int:
    """Number of steps (iterations) of the simulated run, from ``steps`` / ``n_steps`` / ``workload.steps``."""
    for key in ("steps", "n_steps", "num_steps"):
        v = truth.get(key)
        if isinstance(v, int | float):
            return int(v)
        if isinstance(v, Sequence) and not isinstance(v, str):
            return len(v)
    for sub in ("workload", "scenario", "spec"):
        s = truth.get(sub)
        if isinstance(s, Mapping):
            for key in ("steps", "n_steps", "num_steps"):
                if isinstance(s.get(key), int | float):
                    return int(s[key])
    return 0


@dataclass
class _RankLabels:
    start_ns: np.ndarray  # sorted
    end_ns: np.ndarray
    stream: np.ndarray
    label: np.ndarray
    fault: np.ndarray
    factor: np.ndarray
    excess_ns: np.ndarray | None  # None when the truth predates the column


def _rank_labels(truth: Mapping[str, Any]) -> dict[int, _RankLabels]:
    """Per-rank columnar labels, sorted by start time.

    Accepts ``labels`` as {rank: {column: list}} or as a list of {"rank": r, column: list}.
    """
    raw = truth.get("labels") or {}
    items: Iterable[tuple[Any, Mapping[str, Any]]]
    if isinstance(raw, Mapping):
        items = raw.items()
    else:
        items = ((d.get("rank"), d) for d in raw)
    out: dict[int, _RankLabels] = {}
    for rank, cols in items:
        start = np.asarray(cols["start_ns"], dtype=np.int64)
        n = len(start)
        end = np.asarray(cols.get("end_ns", start), dtype=np.int64)
        stream = np.asarray(cols.get("stream", np.full(n, -1)), dtype=np.int64)
        label = np.asarray(cols["label"], dtype=np.int8)
        fault = np.asarray(cols.get("fault", np.full(n, -1)), dtype=np.int32)
        factor = np.asarray(cols.get("factor", np.ones(n)), dtype=np.float64)
        excess = np.asarray(cols["excess_ns"], dtype=np.int64) if "excess_ns" in cols else None
        order = np.argsort(start, kind="stable")
        out[int(rank)] = _RankLabels(
            start[order],
            end[order],
            stream[order],
            label[order],
            fault[order],
            factor[order],
            None if excess is None else excess[order],
        )
    return out


# --------------------------------------------------------------------------------------------- matching


def match_anomalies(
    truth: Mapping[str, Any], detection: Mapping[str, Any], tol_ns: int = 0
) -> tuple[list[tuple[int, int] | None], dict[int, _RankLabels]]:
    """For each anomaly of ``detection``, the matched truth instance as (rank, index into the sorted labels) or None.

    See the module docstring for the rule. Assumes both dicts use the same absolute-ns clock.
    """
    labels = _rank_labels(truth)
    matches: list[tuple[int, int] | None] = []
    for a in detection.get("anomalies") or []:
        rank = int(a.get("rank", -1))
        lab = labels.get(rank)
        if lab is None or len(lab.start_ns) == 0:
            matches.append(None)
            continue
        s = int(a["start_ns"])
        lo = int(np.searchsorted(lab.start_ns, s - tol_ns, side="left"))
        hi = int(np.searchsorted(lab.start_ns, s + tol_ns, side="right"))
        if hi <= lo:
            matches.append(None)
            continue
        cand = np.arange(lo, hi)
        if hi - lo > 1:
            stream = a.get("stream")
            if stream is not None:
                same = cand[lab.stream[cand] == int(stream)]
                if len(same):
                    cand = same
            e = int(a.get("end_ns", s))
            cost = np.abs(lab.start_ns[cand] - s) * 4 + np.abs(lab.end_ns[cand] - e)
            cand = cand[np.argsort(cost, kind="stable")]
        matches.append((rank, int(cand[0])))
    return matches, labels


# --------------------------------------------------------------------------------------------- per-run score


@dataclass
class RunScore:
    """Counts for one (truth, detection) pair; summed across a suite by :func:`aggregate`."""

    name: str = ""
    healthy: bool = False
    steps: int = 0
    n_instances: int = 0
    # kernel-level (roots)
    tp: int = 0
    fp_lenient: int = 0
    fp_strict: int = 0
    fn: int = 0
    unmatched: int = 0  # anomalies (any role) matching no truth instance
    n_anomalies: int = 0
    n_findings: int = 0
    # event-level, one entry per fault
    faults: list[dict[str, Any]] = field(default_factory=list)
    spurious_findings: int = 0  # findings on a faulty run that overlap/match no fault
    # expert precision over every mark (module docstring)
    ex_right: int = 0
    ex_false_lenient: int = 0
    ex_false_strict: int = 0
    n_symptoms: int = 0
    sym_right: int = 0


def _overlaps(f_start: int, f_end: int, g: Mapping[str, Any]) -> bool:
    gs, ge = int(g.get("start_ns", 0) or 0), int(g.get("end_ns", 0) or 0)
    if ge <= gs:  # window not given: the whole run
        return True
    return gs <= f_end and f_start <= ge


def finding_matches_fault(finding: Mapping[str, Any], fault: Mapping[str, Any]) -> bool:
    """Event-match rule: window overlap AND (shared culprit rank OR same component)."""
    if not _overlaps(int(fault["start_ns"]), int(fault["end_ns"]), finding):
        return False
    ranks = {int(r) for r in finding.get("ranks") or []}
    return bool(ranks & set(fault["ranks"])) or finding.get("component") == fault["component"]


def culprit_knowable(fault: Mapping[str, Any]) -> bool:
    """Whether the culprit rank of a fault can be told from timing (not a symmetric link fault)."""
    if "culprit_knowable" in fault:
        return bool(fault["culprit_knowable"])
    return fault["component"] not in SYMMETRIC_COMPONENTS and bool(fault["ranks"])


def score_run(
    truth: Mapping[str, Any], detection: Mapping[str, Any], *, name: str = "", tol_ns: int = 0
) -> RunScore:
    """Score one detector output against one truth. Both are parsed JSON dicts."""
    faults = truth_faults(truth)
    findings = list(detection.get("findings") or [])
    anomalies = list(detection.get("anomalies") or [])
    matches, labels = match_anomalies(truth, detection, tol_ns=tol_ns)

    rs = RunScore(name=name or str(truth.get("scenario", "")), healthy=not faults, steps=truth_steps(truth))
    rs.n_instances = int(sum(len(lab.label) for lab in labels.values()))
    rs.n_anomalies = len(anomalies)
    rs.n_findings = len(findings)

    called_root: set[tuple[int, int]] = set()
    for a, m in zip(anomalies, matches, strict=True):
        if m is None:
            rs.unmatched += 1
            if a.get("role") == "root":
                rs.fp_lenient += 1
                rs.fp_strict += 1
            continue
        if a.get("role") == "root":
            called_root.add(m)
    for rank, idx in called_root:
        lab = int(labels[rank].label[idx])
        if lab == LABEL_ROOT:
            rs.tp += 1
        elif lab == LABEL_SYMPTOM:
            rs.fp_strict += 1
        else:
            rs.fp_lenient += 1
            rs.fp_strict += 1
    n_roots = int(sum(int(np.count_nonzero(lab.label == LABEL_ROOT)) for lab in labels.values()))
    rs.fn = n_roots - rs.tp

    _expert_counts(rs, faults, anomalies, matches, labels)

    # per-fault kernel recall (for recall by severity at kernel level)
    root_by_fault: dict[int, int] = {}
    hit_by_fault: dict[int, int] = {}
    for lab in labels.values():
        for fid in lab.fault[lab.label == LABEL_ROOT]:
            root_by_fault[int(fid)] = root_by_fault.get(int(fid), 0) + 1
    for rank, idx in called_root:
        lab = labels[rank]
        if lab.label[idx] == LABEL_ROOT:
            fid = int(lab.fault[idx])
            hit_by_fault[fid] = hit_by_fault.get(fid, 0) + 1

    n = len(faults)
    top_n = findings[:n]
    top_n3 = findings[: n + 2]
    top_ranks = {int(r) for g in top_n for r in g.get("ranks") or []}
    matched_findings: set[int] = set()
    for f in faults:
        hits = [i for i, g in enumerate(findings) if finding_matches_fault(g, f)]
        matched_findings.update(hits)
        knowable = culprit_knowable(f)
        rs.faults.append(
            {
                "id": f["id"],
                "component": f["component"],
                "severity": f["severity"],
                "kind": str(f.get("kind", "slowdown")),
                "found": bool(hits),
                "culprit_knowable": knowable,
                "rank_top1": bool(top_ranks & set(f["ranks"])) if knowable else None,
                "comp_top1": any(g.get("component") == f["component"] for g in top_n),
                "comp_top3": any(g.get("component") == f["component"] for g in top_n3),
                "roots": root_by_fault.get(f["id"], 0),
                "roots_hit": hit_by_fault.get(f["id"], 0),
            }
        )
    if faults:
        rs.spurious_findings = len(findings) - len(matched_findings)
    return rs


def _expert_counts(rs: RunScore, faults, anomalies, matches, labels: dict[int, _RankLabels]) -> None:
    """Fill the expert-precision counts of ``rs`` (module docstring, "Expert precision")."""
    target = {f["id"]: 1.0 + f["severity"] for f in faults if f["component"] in ("gpu", "hbm")}
    seen: dict[tuple[int, int], str] = {}
    unmatched_false = 0
    for a, m in zip(anomalies, matches, strict=True):
        role = "root" if a.get("role") == "root" else "symptom"
        rs.n_symptoms += role == "symptom"
        if m is None:
            unmatched_false += 1
            continue
        if seen.get(m) != "root":  # one mark per instance; a root mark wins
            seen[m] = role
    rs.ex_false_lenient += unmatched_false
    rs.ex_false_strict += unmatched_false
    for (rank, idx), role in seen.items():
        lab = labels[rank]
        label = int(lab.label[idx])
        fid = int(lab.fault[idx])
        if label == LABEL_ROOT and fid in target and lab.factor[idx] < target[fid] - 1e-3:
            continue  # changed by the fault without being its target: neither way
        if role == "root":
            if label == LABEL_ROOT:
                rs.ex_right += 1
            elif label == LABEL_SYMPTOM:
                rs.ex_false_strict += 1
            else:
                rs.ex_false_lenient += 1
                rs.ex_false_strict += 1
            continue
        if label == LABEL_ROOT:
            rs.ex_false_strict += 1
            continue
        waited = (
            lab.excess_ns[idx] >= EXPERT_MIN_WAIT_NS if lab.excess_ns is not None else label == LABEL_SYMPTOM
        )
        if waited:
            rs.ex_right += 1
            rs.sym_right += 1
        else:
            rs.ex_false_lenient += 1
            rs.ex_false_strict += 1


# --------------------------------------------------------------------------------------------- aggregate


def _ratio(num: float, den: float) -> float | None:
    return num / den if den else None


def _f1(p: float | None, r: float | None) -> float | None:
    if p is None or r is None:
        return None
    return 2 * p * r / (p + r) if (p + r) else 0.0


def severity_key(sev: float) -> str:
    """Bucket label of a severity: '5%', '10%', ... (rounded to whole percent)."""
    return f"{round(sev * 100):d}%"


def aggregate(scores: Sequence[RunScore]) -> dict[str, Any]:
    """Suite-level metrics from per-run counts (micro-averaged; ``None`` where the denominator is empty)."""
    tp = sum(s.tp for s in scores)
    fp_l = sum(s.fp_lenient for s in scores)
    fp_s = sum(s.fp_strict for s in scores)
    fn = sum(s.fn for s in scores)
    p_l, p_s = _ratio(tp, tp + fp_l), _ratio(tp, tp + fp_s)
    rec = _ratio(tp, tp + fn)

    healthy = [s for s in scores if s.healthy]
    faulty = [s for s in scores if not s.healthy]
    ex_r = sum(s.ex_right for s in scores)
    ex_l = sum(s.ex_false_lenient for s in scores)
    ex_s = sum(s.ex_false_strict for s in scores)
    n_sym = sum(s.n_symptoms for s in scores)
    h_steps = sum(s.steps for s in healthy)
    h_find = sum(s.n_findings for s in healthy)
    h_anom = sum(s.n_anomalies for s in healthy)
    h_inst = sum(s.n_instances for s in healthy)

    faults = [f for s in scores for f in s.faults]
    knowable = [f for f in faults if f["culprit_knowable"]]

    by_sev: dict[str, dict[str, Any]] = {}
    for f in sorted(faults, key=lambda f: (f["kind"] == "hang", f["severity"])):
        key = "hang" if f["kind"] == "hang" else severity_key(f["severity"])
        b = by_sev.setdefault(key, {"faults": 0, "found": 0, "roots": 0, "roots_hit": 0})
        b["faults"] += 1
        b["found"] += int(f["found"])
        b["roots"] += f["roots"]
        b["roots_hit"] += f["roots_hit"]
    for b in by_sev.values():
        b["event_recall"] = _ratio(b["found"], b["faults"])
        b["kernel_recall"] = _ratio(b["roots_hit"], b["roots"])

    by_comp: dict[str, dict[str, Any]] = {}
    for f in faults:
        b = by_comp.setdefault(f["component"], {"faults": 0, "found": 0, "comp_top1": 0})
        b["faults"] += 1
        b["found"] += int(f["found"])
        b["comp_top1"] += int(f["comp_top1"])
    for b in by_comp.values():
        b["event_recall"] = _ratio(b["found"], b["faults"])

    return {
        "runs": len(scores),
        "healthy_runs": len(healthy),
        "faults": len(faults),
        "kernel": {
            "tp": tp,
            "fp_lenient": fp_l,
            "fp_strict": fp_s,
            "fn": fn,
            "precision_lenient": p_l,
            "precision_strict": p_s,
            "recall": rec,
            "f1_lenient": _f1(p_l, rec),
            "f1_strict": _f1(p_s, rec),
            "unmatched_anomalies": sum(s.unmatched for s in scores),
        },
        "expert": {
            "right": ex_r,
            "false_lenient": ex_l,
            "false_strict": ex_s,
            "precision_lenient": _ratio(ex_r, ex_r + ex_l),
            "precision_strict": _ratio(ex_r, ex_r + ex_s),
            "symptoms": n_sym,
            "symptom_precision": _ratio(sum(s.sym_right for s in scores), n_sym),
            "anomalies_per_faulty_run": _ratio(sum(s.n_anomalies for s in faulty), len(faulty)),
        },
        "event_recall": _ratio(sum(f["found"] for f in faults), len(faults)),
        "culprit_rank_top1": _ratio(sum(bool(f["rank_top1"]) for f in knowable), len(knowable)),
        "culprit_knowable_faults": len(knowable),
        "component_top1": _ratio(sum(f["comp_top1"] for f in faults), len(faults)),
        "component_top3": _ratio(sum(f["comp_top3"] for f in faults), len(faults)),
        "healthy": {
            "steps": h_steps,
            "findings": h_find,
            "false_alarms_per_1k_steps": _ratio(h_find * 1000.0, h_steps),
            "anomalies": h_anom,
            "anomalies_per_1k_steps": _ratio(h_anom * 1000.0, h_steps),
            "anomalous_instance_fraction": _ratio(h_anom, h_inst),
            "runs_with_findings": sum(1 for s in healthy if s.n_findings),
        },
        "spurious_findings_on_faulty_runs": sum(s.spurious_findings for s in scores if not s.healthy),
        "finding_precision": _ratio(
            sum(s.n_findings - s.spurious_findings for s in scores if not s.healthy),
            sum(s.n_findings for s in scores if not s.healthy),
        ),
        "by_severity": by_sev,
        "by_component": by_comp,
    }


def score_suite(
    pairs: Iterable[tuple[str, Mapping[str, Any], Mapping[str, Any]]], tol_ns: int = 0
) -> dict[str, Any]:
    """Score (name, truth, detection) triples and aggregate them."""
    return aggregate([score_run(t, d, name=n, tol_ns=tol_ns) for n, t, d in pairs])


def check_detection(detection: Mapping[str, Any]) -> None:
    """Raise ValueError when a dict does not follow the ``kat.detect/1`` contract closely enough to score."""
    if detection.get("schema") != DETECT_SCHEMA:
        raise ValueError(f"schema is {detection.get('schema')!r}, expected {DETECT_SCHEMA!r}")
    for key in ("anomalies", "findings"):
        if not isinstance(detection.get(key), list):
            raise ValueError(f"'{key}' must be a list")
    for a in detection["anomalies"]:
        for k in ("rank", "start_ns", "end_ns", "role"):
            if k not in a:
                raise ValueError(f"an anomaly lacks '{k}'")
    for g in detection["findings"]:
        for k in ("component", "ranks", "confidence"):
            if k not in g:
                raise ValueError(f"a finding lacks '{k}'")
