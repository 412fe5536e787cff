"""Detection quality benchmark: simulate the suite, run `kat ingest` + `kat detect --json` and the naive baseline,
score both against ground truth (benchmarks/scoring.py), print a table and write benchmarks/results/detection.md.

The development and held-out seed sets use the same scenario list with different seeds; they are scored and
reported separately. Only the development set may inform detector changes.

Usage:
    python benchmarks/detection.py [--detector kat|baseline|both] [--quick] [--jobs N] [--sets dev,heldout]
                                   [--out bench-out/detection] [--no-write]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script: make `benchmarks` and `kat_gui` importable
    sys.path.insert(0, str(ROOT))

from benchmarks import baseline_zscore, scoring, suite  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "detection.md"


# --------------------------------------------------------------------------------------------- jobs (picklable)


def _generate(args: tuple[str, str, int]) -> tuple[str, float, str]:
    """Simulate one case; returns (run dir, seconds, error)."""
    case_name, outdir, seed = args
    import kat_gui.simulate as simulate

    case = suite.case_by_name(case_name)
    t = time.perf_counter()
    try:
        run_dir = suite.generate_case(simulate, case, Path(outdir), seed=seed)
    except Exception as exc:  # reported per case; one broken scenario must not hide the others
        return outdir, time.perf_counter() - t, f"{type(exc).__name__}: {exc}"
    return str(run_dir), time.perf_counter() - t, ""


def _run_kat(run_dir: str) -> dict[str, Any]:
    """`kat ingest` then `kat detect --json` through the CLI (the contract being scored)."""
    rd = Path(run_dir)
    store = rd.parent / f"{rd.name}.kat.h5"
    out = rd.parent / f"{rd.name}.kat-detect.json"
    for p in (store, out):
        p.unlink(missing_ok=True)
    py = sys.executable
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    t = time.perf_counter()
    ing = subprocess.run(
        [
            py,
            "-m",
            "kat_gui",
            "ingest",
            *map(str, baseline_zscore.trace_files(rd)),
            "-o",
            str(store),
            "--name",
            rd.name,
        ],
        capture_output=True,
        text=True,
        env=env,
    )
    t_ingest = time.perf_counter() - t
    if ing.returncode != 0:
        return {"error": f"ingest exit {ing.returncode}: {ing.stderr.strip()[-300:]}"}
    t = time.perf_counter()
    det = subprocess.run(
        [py, "-m", "kat_gui", "detect", str(store), "--json", str(out)],
        capture_output=True,
        text=True,
        env=env,
    )
    t_detect = time.perf_counter() - t
    if det.returncode != 0 or not out.exists():
        return {"error": f"detect exit {det.returncode}: {det.stderr.strip()[-300:]}"}
    return {"path": str(out), "ingest_s": t_ingest, "detect_s": t_detect}


def _run_baseline(run_dir: str) -> dict[str, Any]:
    rd = Path(run_dir)
    out = rd.parent / f"{rd.name}.baseline-detect.json"
    t = time.perf_counter()
    det = baseline_zscore.detect_dir(rd)
    secs = time.perf_counter() - t
    out.write_text(json.dumps(det))
    return {"path": str(out), "detect_s": secs}


def kat_detect_available() -> str:
    """Empty string when `kat detect` is implemented, else the reason it is not."""
    import importlib.util

    try:
        spec = importlib.util.find_spec("kat_gui.detect.command")
    except ModuleNotFoundError:
        spec = None
    if spec is None:
        return "kat_gui.detect.command is not present (kat detect not built yet)"
    return ""


# --------------------------------------------------------------------------------------------- reporting


def _fmt(v: Any, pct: bool = False, nd: int = 2) -> str:
    if v is None:
        return "–"
    if pct:
        return f"{100 * v:.0f}%"
    if isinstance(v, float):
        return f"{v:.{nd}f}"
    return str(v)


MAIN_COLUMNS = [
    ("kernel P lenient", lambda m: _fmt(m["kernel"]["precision_lenient"])),
    ("kernel P strict", lambda m: _fmt(m["kernel"]["precision_strict"])),
    ("expert P lenient", lambda m: _fmt(m["expert"]["precision_lenient"])),
    ("expert P strict", lambda m: _fmt(m["expert"]["precision_strict"])),
    ("symptom P", lambda m: _fmt(m["expert"]["symptom_precision"])),
    ("anomalies / faulty run", lambda m: _fmt(m["expert"]["anomalies_per_faulty_run"], nd=0)),
    ("kernel R", lambda m: _fmt(m["kernel"]["recall"])),
    ("F1 lenient", lambda m: _fmt(m["kernel"]["f1_lenient"])),
    ("F1 strict", lambda m: _fmt(m["kernel"]["f1_strict"])),
    ("event recall", lambda m: _fmt(m["event_recall"])),
    ("false alarms /1k healthy steps", lambda m: _fmt(m["healthy"]["false_alarms_per_1k_steps"], nd=1)),
    ("healthy runs w/ findings", lambda m: f"{m['healthy']['runs_with_findings']}/{m['healthy_runs']}"),
    ("anomalies /1k healthy steps", lambda m: _fmt(m["healthy"]["anomalies_per_1k_steps"], nd=1)),
    ("culprit rank top-1", lambda m: _fmt(m["culprit_rank_top1"])),
    ("component top-1", lambda m: _fmt(m["component_top1"])),
    ("component top-3", lambda m: _fmt(m["component_top3"])),
    ("finding precision (faulty runs)", lambda m: _fmt(m["finding_precision"])),
]


def _sev_order(key: str) -> float:
    return float("inf") if key == "hang" else float(key.rstrip("%"))


def md_table(header: list[str], rows: list[list[str]]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(out)


def text_table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True))]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    return "\n".join(lines)


def machine() -> str:
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{os.cpu_count()} logical CPUs ({cpu or 'unknown CPU'}), Python {platform.python_version()}, " + (
        f"{platform.system()} {platform.release()}"
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--detector", choices=("kat", "baseline", "both"), default="both")
    ap.add_argument("--quick", action="store_true", help="a handful of scenarios, development seeds only")
    ap.add_argument("--jobs", type=int, default=max(1, min(4, os.cpu_count() or 1)))
    ap.add_argument("--sets", default="dev,heldout", help="comma list of seed sets: dev, heldout")
    ap.add_argument("--out", default=str(ROOT / "bench-out" / "detection"))
    ap.add_argument("--no-write", action="store_true", help="do not write benchmarks/results/detection.md")
    ap.add_argument("--reuse", action="store_true", help="reuse generated scenarios already in --out")
    args = ap.parse_args(argv)

    import kat_gui.simulate as simulate

    if not hasattr(simulate, "simulate"):
        print("detection benchmark: kat_gui.simulate is not built yet", file=sys.stderr)
        return 2

    cases = suite.quick_cases() if args.quick else suite.cases()
    sets = ["dev"] if args.quick else [s.strip() for s in args.sets.split(",") if s.strip()]
    out_root = Path(args.out)
    if not args.reuse and out_root.exists():
        shutil.rmtree(out_root)
    out_root.mkdir(parents=True, exist_ok=True)

    detectors = ["kat", "baseline"] if args.detector == "both" else [args.detector]
    notes: list[str] = []
    if "kat" in detectors:
        why = kat_detect_available()
        if why:
            detectors.remove("kat")
            notes.append(f"`kat detect` was not scored: {why}.")
            print(f"skipping kat: {why}", file=sys.stderr)

    # ---- generate
    gen_times: dict[str, float] = {}
    runs: dict[str, list[tuple[str, str]]] = {}  # set -> [(case name, run dir)]
    failed: list[str] = []
    with ProcessPoolExecutor(max_workers=args.jobs) as pool:
        for sname in sets:
            jobs = [(c["name"], str(out_root / sname / c["name"]), suite.seed_for(c, sname)) for c in cases]
            t = time.perf_counter()
            res = list(pool.map(_generate, jobs))
            gen_times[sname] = time.perf_counter() - t
            runs[sname] = []
            for (cname, _, _), (rd, _secs, err) in zip(jobs, res, strict=True):
                if err:
                    failed.append(f"{sname}/{cname}: {err}")
                else:
                    runs[sname].append((cname, rd))
            print(
                f"generated {len(runs[sname])}/{len(jobs)} {sname} scenarios in {gen_times[sname]:.1f} s "
                f"({args.jobs} jobs)"
            )
    for f in failed:
        print(f"  generation failed: {f}", file=sys.stderr)

    # ---- detect + score
    results: dict[tuple[str, str], dict[str, Any]] = {}
    per_run: dict[tuple[str, str], list[dict[str, Any]]] = {}
    det_times: dict[tuple[str, str], float] = {}
    with ProcessPoolExecutor(max_workers=args.jobs) as pool:
        for det in detectors:
            fn = _run_kat if det == "kat" else _run_baseline
            for sname in sets:
                t = time.perf_counter()
                outs = list(pool.map(fn, [rd for _, rd in runs[sname]]))
                det_times[(det, sname)] = time.perf_counter() - t
                scores = []
                rows = []
                for (cname, rd), o in zip(runs[sname], outs, strict=True):
                    truth = json.loads((Path(rd) / "truth.json").read_text())
                    if "error" in o:
                        failed.append(f"{det} {sname}/{cname}: {o['error']}")
                        detection = {"schema": "kat.detect/1", "anomalies": [], "findings": []}
                    else:
                        detection = json.loads(Path(o["path"]).read_text())
                    rs = scoring.score_run(truth, detection, name=cname)
                    if (
                        "error" not in o
                    ):  # a crashed run is listed as a failure, not scored as "found nothing"
                        scores.append(rs)
                    rows.append(
                        {
                            "case": cname,
                            "score": rs,
                            "error": o.get("error", ""),
                            "detect_s": o.get("detect_s"),
                        }
                    )
                results[(det, sname)] = {**scoring.aggregate(scores), "attempted": len(outs)}
                per_run[(det, sname)] = rows
                print(f"{det} on {sname}: {len(scores)} runs scored in {det_times[(det, sname)]:.1f} s")

    header = ["detector", "seed set", "runs scored", *[c for c, _ in MAIN_COLUMNS]]
    rows = [
        [det, sname, f"{m['runs']}/{m['attempted']}", *[f(m) for _, f in MAIN_COLUMNS]]
        for (det, sname), m in results.items()
    ]
    print()
    print(text_table(header, rows))
    for f in failed:
        print(f"failure: {f}", file=sys.stderr)

    if not args.no_write:
        md = render_markdown(
            cases, sets, gen_times, results, per_run, det_times, rows, header, notes, failed, args
        )
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(md, encoding="utf-8")
        print(f"\nwrote {RESULTS.relative_to(ROOT)}")
    return 0


def render_markdown(
    cases, sets, gen_times, results, per_run, det_times, rows, header, notes, failed, args
) -> str:
    n_healthy = sum(1 for c in cases if c["fault_class"] == "healthy")
    lines = [
        "# Detection quality benchmark",
        "",
        f"Generated by `python benchmarks/detection.py{' --quick' if args.quick else ''}` on "
        f"{dt.date.today().isoformat()}; machine: {machine()}; {args.jobs} parallel jobs.",
        "",
        "Metrics are defined in `benchmarks/scoring.py` (module docstring): micro-averaged "
        "over kernel instances / fault events, no point-adjustment. `–` = undefined (empty denominator).",
        "The held-out seed set is the same scenario list with different seeds; no detector parameter may be chosen "
        "by looking at it.",
        "",
        "## Results",
        "",
        md_table(header, rows),
        "",
    ]
    for n in notes:
        lines += [f"Note: {n}", ""]
    lines += [
        "How to read it: event recall credits any finding that shares a rank or the component with a fault inside "
        "its window, so a detector that raises a finding on every rank (the baseline does) scores high on it by "
        "construction; read it beside finding precision, the healthy false-alarm rate and component top-1. "
        "Culprit-rank top-1 excludes nvlink/nic faults (symmetric: the culprit is not knowable from timing). "
        "Kernel metrics count individual kernel/memcpy instances (roots only), matched by rank and exact start ns. "
        'Expert P counts every mark, roots and symptoms, as an expert reads it (scoring.py, "Expert precision"): '
        "a symptom is false when the fault added under 2 µs to its wait; a root the fault changed without "
        "targeting counts neither way.",
        "",
    ]
    lines += ["## Recall by severity", ""]
    sev_keys = sorted({k for m in results.values() for k in m["by_severity"]}, key=_sev_order)
    sev_rows = []
    for (det, sname), m in results.items():
        cells = []
        for k in sev_keys:
            b = m["by_severity"].get(k)
            cells.append(
                "–"
                if b is None
                else f"{_fmt(b['event_recall'])} / {_fmt(b['kernel_recall'])} (n={b['faults']})"
            )
        sev_rows.append([det, sname, *cells])
    lines += [
        "Cells: event recall / kernel root recall (n = fault events).",
        "",
        md_table(["detector", "seed set", *sev_keys], sev_rows),
        "",
        "## Event recall and component top-1 by fault component",
        "",
    ]
    comps = sorted({k for m in results.values() for k in m["by_component"]})
    comp_rows = []
    for (det, sname), m in results.items():
        cells = []
        for k in comps:
            b = m["by_component"].get(k)
            cells.append("–" if b is None else f"{_fmt(b['event_recall'])} / {b['comp_top1']}/{b['faults']}")
        comp_rows.append([det, sname, *cells])
    lines += [
        "Cells: event recall / component top-1 hits / faults.",
        "",
        md_table(["detector", "seed set", *comps], comp_rows),
        "",
    ]

    lines += [
        "## Suite",
        "",
        f"{len(cases)} scenarios ({n_healthy} healthy with confounders = {100 * n_healthy / len(cases):.0f}%), "
        f"seed sets: development (seed {suite.DEV_SEED_BASE} + case index), held-out (seed "
        f"{suite.HELDOUT_SEED_BASE} + case index).",
        "",
        "Generation time (wall, all scenarios of one seed set, "
        f"{args.jobs} jobs): "
        + ", ".join(f"{s} {gen_times[s]:.1f} s" for s in sets)
        + f" — bar: >= 30 scenarios in < 120 s ({'met' if all(v < 120 for v in gen_times.values()) else 'NOT met'}).",
        "",
        "Detector wall time per seed set (ingest + detect for kat, via the CLI): "
        + ", ".join(f"{d} {s} {t:.1f} s" for (d, s), t in det_times.items()),
        "",
        md_table(
            ["scenario", "class", "severity", "description"],
            [[c["name"], c["fault_class"], c.get("severity_label", "–"), c["description"]] for c in cases],
        ),
        "",
        "## Per scenario (development set)",
        "",
    ]
    for (det, sname), rws in per_run.items():
        if sname != sets[0]:
            continue
        tab = []
        for r in rws:
            s = r["score"]
            found = (
                ", ".join(f"{f['component']}:{'found' if f['found'] else 'missed'}" for f in s.faults)
                or "healthy"
            )
            tab.append(
                [
                    r["case"],
                    found,
                    str(s.n_findings),
                    str(s.n_anomalies),
                    str(s.tp),
                    str(s.fn),
                    str(s.fp_strict),
                    r["error"][:80] or "",
                ]
            )
        lines += [
            f"### {det}",
            "",
            md_table(["scenario", "faults", "findings", "anomalies", "TP", "FN", "FP strict", "error"], tab),
            "",
        ]
    if failed:
        lines += ["## Failures", ""] + [f"- {f}" for f in failed] + [""]
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
