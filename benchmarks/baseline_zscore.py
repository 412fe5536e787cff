"""The naive baseline detector: a cross-rank z-score of kernel durations. It is the "what naive gets" row.

Method (deliberately simple; nothing here is tuned on the benchmark):
- read every kernel and memcpy instance of every rank straight from the per-rank Kineto JSON files;
- match instances across ranks by (name, ordinal of that name within its rank), i.e. the k-th ``gemm_x`` of
  rank 0 is compared with the k-th ``gemm_x`` of every other rank;
- residual = duration - mean duration of the matched group; z = residual / sigma, where sigma is the pooled
  within-group standard deviation of that kernel name (sum of squared residuals / sum of (group size - 1)).
  Why pooled: the plain std over the n ranks of one group bounds |z| by (n - 1) / sqrt(n) (2.47 for 8 ranks), so
  a per-group z-score can never exceed 3 at TP <= 8. sigma is floored at 1 % of the name's median duration so
  that noise-free kernels do not produce infinite scores;
- |z| > 3 -> an anomaly with role "root" and component "unknown" (the baseline cannot attribute);
- one finding per rank that has any anomaly, component "unknown", confidence = its anomaly count / the largest
  rank's count, window = first to last anomaly of that rank; sorted by confidence.

Writes the ``kat.detect/1`` JSON contract, so benchmarks/scoring.py scores it exactly like ``kat detect --json``.
Times follow the Kineto reader's rule (docs/architecture.md, "Exact times"): ``baseTimeNanoseconds + round(ts * 1000)``, or ``round(ts *
1000)`` when the trace has no base (ts in epoch µs).

Usage: python benchmarks/baseline_zscore.py RUN_DIR [--json OUT.json]
"""

from __future__ import annotations

import argparse
import gzip
import json
import re
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any

import numpy as np
import orjson

Z_THRESHOLD = 3.0
SIGMA_FLOOR_FRACTION = 0.01
_GPU_CATS = {"kernel", "Kernel", "gpu_memcpy", "Memcpy"}


def _load_json(path: Path, exact: bool = False) -> dict[str, Any]:
    """Parse a (gzipped) JSON file; ``exact`` keeps decimal numbers as Decimal (for epoch-µs times)."""
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    if exact:
        return json.loads(raw, parse_float=Decimal)
    return orjson.loads(raw)


def _us_to_ns(v: Any) -> int:
    """µs -> ns rounding half up, as kat ingest does (exact when ``v`` is a Decimal)."""
    if isinstance(v, Decimal):
        return int((v * 1000).to_integral_value(rounding=ROUND_HALF_UP))
    return int(np.floor(float(v) * 1000 + 0.5))


def trace_files(run_dir: Path) -> list[Path]:
    """The per-rank Kineto JSON files of a simulated run folder (everything *.json[.gz] but truth.json)."""
    files = [
        p
        for p in sorted(run_dir.iterdir())
        if p.is_file()
        and (p.name.endswith(".json") or p.name.endswith(".json.gz"))
        and not p.name.startswith("truth")
    ]
    return files


def _int(v: Any, default: int = -1) -> int:
    try:
        return int(v)
    except (TypeError, ValueError):
        return default


def read_rank(path: Path, fallback_rank: int) -> dict[str, Any]:
    """Kernel/memcpy instances of one Kineto file as columns; the rank comes from ``distributedInfo.rank``."""
    doc = _load_json(path)
    base = doc.get("baseTimeNanoseconds")
    if base is None:  # absolute epoch µs: 19 significant digits, more than a float holds
        doc = _load_json(path, exact=True)
    rank = (doc.get("distributedInfo") or {}).get("rank")
    if rank is None:
        m = re.search(r"rank[_-]?(\d+)", path.name)
        rank = int(m.group(1)) if m else fallback_rank
    base_ns = int(base) if base is not None else 0
    names, starts, ends, streams, devices = [], [], [], [], []
    for ev in doc.get("traceEvents") or []:
        if ev.get("ph") != "X" or ev.get("cat") not in _GPU_CATS:
            continue
        s = base_ns + _us_to_ns(ev["ts"])
        e = s + _us_to_ns(ev.get("dur", 0))
        args = ev.get("args") or {}
        names.append(ev.get("name", ""))
        starts.append(s)
        ends.append(e)
        streams.append(_int(args.get("stream", ev.get("tid"))))
        devices.append(_int(args.get("device", ev.get("pid"))))
    start = np.asarray(starts, dtype=np.int64)
    order = np.argsort(start, kind="stable")
    return {
        "rank": int(rank),
        "name": np.asarray(names, dtype=object)[order],
        "start_ns": start[order],
        "end_ns": np.asarray(ends, dtype=np.int64)[order],
        "stream": np.asarray(streams, dtype=np.int64)[order],
        "device": np.asarray(devices, dtype=np.int64)[order],
    }


def _ordinals(names: np.ndarray) -> np.ndarray:
    """The occurrence index of each name within the sequence (0 for the first ``gemm``, 1 for the second...)."""
    _, inv = np.unique(names, return_inverse=True)
    order = np.argsort(inv, kind="stable")
    sorted_inv = inv[order]
    first = np.r_[0, np.flatnonzero(np.diff(sorted_inv)) + 1]
    counts = np.diff(np.r_[first, len(sorted_inv)])
    ords_sorted = np.arange(len(sorted_inv)) - np.repeat(first, counts)
    out = np.empty(len(names), dtype=np.int64)
    out[order] = ords_sorted
    return out


def detect_ranks(ranks: list[dict[str, Any]], run: str = "") -> dict[str, Any]:
    """The z-score baseline over already-read per-rank columns (see :func:`read_rank`)."""
    if not ranks or sum(len(r["start_ns"]) for r in ranks) == 0:
        return {"schema": "kat.detect/1", "run": run, "anomalies": [], "findings": []}
    name = np.concatenate([r["name"] for r in ranks])
    start = np.concatenate([r["start_ns"] for r in ranks])
    end = np.concatenate([r["end_ns"] for r in ranks])
    stream = np.concatenate([r["stream"] for r in ranks])
    device = np.concatenate([r["device"] for r in ranks])
    rank = np.concatenate([np.full(len(r["start_ns"]), r["rank"], dtype=np.int64) for r in ranks])
    ordinal = np.concatenate([_ordinals(r["name"]) for r in ranks])
    dur = (end - start).astype(np.float64)

    name_vals, name_id = np.unique(name, return_inverse=True)
    key = name_id.astype(np.int64) * (int(ordinal.max()) + 1) + ordinal
    _, group = np.unique(key, return_inverse=True)
    g_n = np.bincount(group)
    g_mean = np.bincount(group, weights=dur) / g_n
    resid = dur - g_mean[group]
    in_group = g_n[group] >= 2

    n_names = len(name_vals)
    ss = np.bincount(name_id[in_group], weights=resid[in_group] ** 2, minlength=n_names)
    # degrees of freedom per name: sum over its groups of (n_g - 1) = members - groups
    members = np.bincount(name_id[in_group], minlength=n_names)
    first_of_group = np.zeros(len(group), dtype=bool)
    first_of_group[np.unique(group, return_index=True)[1]] = True
    groups_per_name = np.bincount(name_id[in_group & first_of_group], minlength=n_names)
    dof = members - groups_per_name
    sigma = np.sqrt(np.divide(ss, dof, out=np.zeros(n_names), where=dof > 0))
    med = np.array([np.median(dur[name_id == i]) for i in range(n_names)])
    sigma = np.maximum(sigma, np.maximum(SIGMA_FLOOR_FRACTION * med, 1.0))
    z = np.where(in_group, resid / sigma[name_id], 0.0)

    hit = np.flatnonzero(np.abs(z) > Z_THRESHOLD)
    anomalies = [
        {
            "rank": int(rank[i]),
            "device": int(device[i]),
            "stream": int(stream[i]),
            "name": str(name[i]),
            "start_ns": int(start[i]),
            "end_ns": int(end[i]),
            "role": "root",
            "component": "unknown",
            "score": float(abs(z[i])),
        }
        for i in hit
    ]
    findings = []
    if len(hit):
        flagged_ranks, counts = np.unique(rank[hit], return_counts=True)
        top = counts.max()
        for r, c in zip(flagged_ranks, counts, strict=True):
            sel = hit[rank[hit] == r]
            findings.append(
                {
                    "component": "unknown",
                    "component_id": f"rank{int(r)}",
                    "ranks": [int(r)],
                    "confidence": float(c / top),
                    "start_ns": int(start[sel].min()),
                    "end_ns": int(end[sel].max()),
                    "summary": f"rank {int(r)}: {int(c)} kernels with |z| > {Z_THRESHOLD:g} vs peers",
                    "anomaly_count": int(c),
                    "kind": "timing",
                }
            )
        findings.sort(key=lambda g: (-g["confidence"], g["ranks"][0]))
    return {"schema": "kat.detect/1", "run": run, "anomalies": anomalies, "findings": findings}


def detect_dir(run_dir: str | Path) -> dict[str, Any]:
    """Run the baseline on a folder of per-rank Kineto JSON files; returns the ``kat.detect/1`` dict."""
    run_dir = Path(run_dir)
    ranks = [read_rank(p, i) for i, p in enumerate(trace_files(run_dir))]
    return detect_ranks(ranks, run=run_dir.name)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dir")
    ap.add_argument("--json", metavar="OUT.json")
    args = ap.parse_args(argv)
    det = detect_dir(args.run_dir)
    text = json.dumps(det)
    if args.json:
        Path(args.json).write_text(text)
    else:
        print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
