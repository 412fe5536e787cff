"""Comparison benchmark: speed on two ~1M-kernel runs, and ranking quality over the simulator suite.

Quality: for every faulty case of ``benchmarks/suite.py`` the degraded run is compared with its healthy twin
(the same spec without the fault, same seed: the same workload and noise draws). A case passes when the first
row of the ranked diff is significant and points at the fault: a kernel (or kernel class) that the ground
truth labels root, on a culprit rank when the row is per rank; or a rank metric (busy/idle time) of a
culprit rank. Healthy runs are compared seed against seed + 1 twice: with the suite's batch churn (the two
runs then carry different batch sizes per step: healthy, the same service, so nothing may come out
significant; instances of shapes one run never ran are listed grey as a different workload) and with churn
off (the runs differ only by noise: nothing may come out significant).

Speed: two synthetic 8-rank stores of ~1M kernels each (plus their launches and step annotations) written
straight through the store API, one with a slowed rank; ``compare_stores`` timed end to end (both reads
included).

Usage: ``python benchmarks/compare.py [--quick] [--skip-speed] [--out benchmarks/results/compare.md]``
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from kat_gui import pipeline  # noqa: E402
from kat_gui.compare import Params, compare_stores  # noqa: E402
from kat_gui.detect.classify import CLASS_NAMES, classify_name  # noqa: E402
from kat_gui.events import EventKind, RankTrace, TrackInfo, TrackKind, empty_columns  # noqa: E402
from kat_gui.store import TraceStore  # noqa: E402

# ------------------------------------------------------------------------------------------- speed

NAMES = [f"sm90_gemm_bf16_tile{i}x128_kernel" for i in range(6)] + [
    "void vllm::rms_norm_kernel<c10::BFloat16>(...)",
    "void vllm::act_and_mul_kernel<c10::BFloat16>(...)",
    "void vllm::paged_attention_v2_kernel<bf16>(...)",
    "void vllm::rotary_embedding_kernel<bf16>(...)",
]
COLL = "ncclDevKernel_AllReduce_Sum_bf16_RING_LL(ncclDevComm*, unsigned long, ncclWork*)"


def synth_store(
    path: Path, ranks: int, steps: int, segs: int, per_seg: int, seed: int, slow_rank: int | None
) -> int:
    """An SPMD run: per step, ``segs`` segments of ``per_seg`` kernels then an all-reduce whose members end
    together. Returns the number of GPU kernels written."""
    # The workload (mean duration of each kernel position) is the same in both runs; only the noise differs.
    base = np.random.default_rng(12345).lognormal(np.log(8_000), 0.6, per_seg)  # ns
    rng = np.random.default_rng(seed)
    name_of = np.arange(per_seg) % len(NAMES)
    n_seg = steps * segs
    dur = (base[None, None, :] * rng.lognormal(0, 0.03, (n_seg, ranks, per_seg))).astype(np.int64)
    if slow_rank is not None:
        gemm = name_of < 6
        dur[n_seg // 2 :, slow_rank, gemm] = (dur[n_seg // 2 :, slow_rank, gemm] * 1.2).astype(np.int64)
    gap = 600
    seg_len = dur.sum(axis=2) + gap * per_seg  # (n_seg, ranks)
    transfer = rng.lognormal(np.log(12_000), 0.05, n_seg).astype(np.int64)
    seg_span = seg_len.max(axis=1) + transfer + 2_000
    seg_start = 1_750_000_000_000_000_000 + np.r_[0, np.cumsum(seg_span)[:-1]]
    strings = (
        NAMES + [COLL, "allreduce", "0", "cudaLaunchKernel"] + [f"ProfilerStep#{s}" for s in range(steps)]
    )
    sid = {s: i for i, s in enumerate(strings)}
    with TraceStore.create(path, path.stem) as w:
        for r in range(ranks):
            d = dur[:, r, :]
            starts = seg_start[:, None] + np.cumsum(d + gap, axis=1) - d
            ends = starts + d
            arrive = seg_start + seg_len[:, r]
            cend = seg_start + seg_len.max(axis=1) + transfer
            nk = n_seg * per_seg
            n = nk + n_seg
            g = empty_columns(n)
            g["start_ns"][:nk], g["end_ns"][:nk] = starts.ravel(), ends.ravel()
            g["start_ns"][nk:], g["end_ns"][nk:] = arrive, cend
            g["kind"][:] = EventKind.KERNEL
            g["name"][:nk] = np.tile(name_of, n_seg)
            g["name"][nk:] = sid[COLL]
            g["coll"][nk:], g["pg"][nk:] = sid["allreduce"], sid["0"]
            g["seq"][nk:] = np.arange(n_seg)
            g["correlation"][:] = np.arange(n)
            g["track"] = np.zeros(n, np.int32)
            # launches: a runtime call 5 µs before each GPU event; one ProfilerStep per step
            lch = empty_columns(n)
            lch["start_ns"] = g["start_ns"] - 5_000
            lch["end_ns"] = lch["start_ns"] + 2_000
            lch["kind"][:] = EventKind.RUNTIME
            lch["name"][:] = sid["cudaLaunchKernel"]
            lch["correlation"] = g["correlation"]
            lch["track"] = np.ones(n, np.int32)
            st = empty_columns(steps)
            first = seg_start[::segs] - 10_000
            st["start_ns"], st["end_ns"] = first, np.r_[first[1:], seg_start[-1] + seg_span[-1]] - 1
            st["kind"][:] = EventKind.ANNOTATION
            st["name"] = np.array([sid[f"ProfilerStep#{s}"] for s in range(steps)], np.int32)
            st["track"] = np.ones(steps, np.int32)
            ev = {k: np.concatenate([g[k], lch[k], st[k]]) for k in g}
            tracks = [
                TrackInfo(TrackKind.GPU_STREAM, r, 7, r, 7),
                TrackInfo(TrackKind.HOST_THREAD, -1, -1, 1000 + r, 1000 + r),
            ]
            w.add(
                RankTrace(
                    rank=r,
                    source=f"synthetic-rank{r}",
                    format="synthetic",
                    tracks=tracks,
                    events=ev,
                    strings=strings,
                )
            )
    return ranks * n_seg * (per_seg + 1)


def bench_speed(tmp: Path, ranks: int = 8, steps: int = 250, segs: int = 25, per_seg: int = 19) -> dict:
    t = time.perf_counter()
    n_h = synth_store(tmp / "speed_h.kat.h5", ranks, steps, segs, per_seg, 1, None)
    n_d = synth_store(tmp / "speed_d.kat.h5", ranks, steps, segs, per_seg, 2, 3)
    build_s = time.perf_counter() - t
    times, cpu = [], []
    load = os.getloadavg()[0]
    for _ in range(3):
        t, c0 = time.perf_counter(), time.process_time()
        c = compare_stores(tmp / "speed_h.kat.h5", tmp / "speed_d.kat.h5")
        times.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c0)
    top = c.differences[0]
    win = f" steps {top.window['steps'][0]}-{top.window['steps'][1]}" if top.window else ""
    return {
        "kernels_healthy": n_h,
        "kernels_degraded": n_d,
        "build_s": build_s,
        "compare_s": times,
        "compare_cpu_s": cpu,
        "load_avg": load,
        "rows": len(c.differences),
        "significant": len(c.significant()),
        "top": f"{top.kind} rank {top.rank} {top.name[:40]} {top.effect * 100:+.1f}%{win}",
        "top_ok": bool(top.rank == 3 and top.name.startswith("sm90_gemm")),
        "located": len(c.located()),
        "steps": steps,
    }


# ------------------------------------------------------------------------------------------- quality


def _ingest(folder: Path, out: Path, name: str) -> Path:
    files = sorted(p for p in folder.glob("*.json") if p.name != "truth.json")
    return pipeline.ingest(files, out, name=name)


def _root_truth(truth: dict, store_path: Path) -> tuple[set[str], set[int], set[str]]:
    """Names, ranks and classes of the kernels the ground truth labels root (looked up in the store by
    rank and start time, so the names are the store's)."""
    names: set[str] = set()
    ranks: set[int] = set()
    with TraceStore.open(store_path) as st:
        tr_rank = np.array([t.rank for t in st.tracks])
        ev = st.events(["start_ns", "name"], kinds=[EventKind.KERNEL, EventKind.MEMCPY, EventKind.MEMSET])
        ev_rank = tr_rank[ev["track"]]
        for r, lab in truth["labels"].items():
            lab_a = np.asarray(lab["label"])
            roots = np.asarray(lab["start_ns"], dtype=np.int64)[lab_a == 1]
            if not len(roots):
                continue
            ranks.add(int(r))
            sel = ev_rank == int(r)
            hit = np.isin(ev["start_ns"][sel], roots)
            for sid in np.unique(ev["name"][sel][hit]).tolist():
                names.add(st.string(int(sid)))
    for f in truth.get("faults", []):
        ranks.update(int(x) for x in f.get("ranks", []))
    classes = {CLASS_NAMES[classify_name(n)] for n in names}
    return names, ranks, classes


WINDOW_SLACK = 2  # a located window matches a fault when both ends lie within this many steps of the fault's


def _fault_steps(truth: dict) -> list[tuple[int, int, list[int]]]:
    """First and last step, and the ranks, of every slowdown of the ground truth (hangs have no steps)."""
    return [
        (int(f["onset_step"]), int(f["end_step"]) - 1, [int(r) for r in f.get("ranks", [])])
        for f in truth.get("faults", [])
        if f.get("kind") == "slowdown"
    ]


def _window_verdict(d, faults: list[tuple[int, int, list[int]]], n_steps: int, min_n: int) -> str:
    """'yes' when the row's window matches the steps of a fault, 'whole run' when the row has none and its
    fault (the one on its rank, else any) leaves no room for a window (``min_n`` steps outside it), 'no'
    otherwise, '-' without a slowdown."""
    if not faults or d is None:
        return "-"
    if d.window is None:
        mine = [f for f in faults if d.rank in f[2]] or faults
        room = any(a >= min_n or (n_steps - 1 - b) >= min_n for a, b, _ in mine)
        return "no" if room else "whole run"
    wa, wb = d.window["steps"]
    hit = any(abs(wa - a) <= WINDOW_SLACK and abs(wb - b) <= WINDOW_SLACK for a, b, _ in faults)
    return "yes" if hit else "no"


def _points_at_fault(d, names: set[str], ranks: set[int], classes: set[str]) -> bool:
    if not d.significant or d.symptom:
        return False
    if d.rank is not None and ranks and d.rank not in ranks:
        return False
    if d.kind in ("kernel", "kernel_rank", "only_degraded", "only_healthy"):
        return d.name in names
    if d.kind == "collective_renamed":
        return any(n in d.name for n in names)
    if d.kind in ("class", "class_rank"):
        return d.kernel_class in classes
    if d.kind in ("rank_busy", "rank_idle", "rank_stopped"):
        return d.rank in ranks
    return False


def bench_quality(tmp: Path, quick: bool) -> dict:
    import suite

    from kat_gui import simulate

    cases = suite.quick_cases() if quick else suite.cases()
    faulty, healthy = [], []
    for case in cases:
        spec = suite.build_spec(simulate, case)
        seed = suite.seed_for(case, "dev")
        t = time.perf_counter()
        if spec.faults:
            deg_dir = simulate.simulate(tmp / f"{case['name']}_d", spec, seed=seed)
            twin_dir = simulate.simulate(tmp / f"{case['name']}_h", spec.with_(faults=[]), seed=seed)
            deg = _ingest(Path(deg_dir), tmp / f"{case['name']}_d.kat.h5", case["name"])
            twin = _ingest(Path(twin_dir), tmp / f"{case['name']}_h.kat.h5", case["name"] + "_twin")
            truth = json.loads((Path(deg_dir) / "truth.json").read_text())
            names, ranks, classes = _root_truth(truth, deg)
            t1 = time.perf_counter()
            c = compare_stores(twin, deg)
            dt = time.perf_counter() - t1
            top = c.differences[0] if c.differences else None
            ok = top is not None and _points_at_fault(top, names, ranks, classes)
            first_hit = next(
                (
                    i + 1
                    for i, d in enumerate(c.differences[:50])
                    if _points_at_fault(d, names, ranks, classes)
                ),
                None,
            )
            fault_steps = _fault_steps(truth)
            faulty.append(
                {
                    "case": case["name"],
                    "fault": case["fault_class"],
                    "severity": case["severity_label"],
                    "ok": ok,
                    "first_hit": first_hit,
                    "significant": len(c.significant()),
                    "located": len(c.located()),
                    "top": _describe(top),
                    "fault_steps": fault_steps,
                    "window": _window_verdict(top, fault_steps, c.alignment["steps_compared"], P.min_n),
                    "compare_s": dt,
                }
            )
            print(
                f"{case['name']:<28} {'ok ' if ok else 'MISS'} first={first_hit} top={_describe(top)} "
                f"window={faulty[-1]['window']} "
                f"({time.perf_counter() - t:.1f}s)",
                flush=True,
            )
        else:
            res = {"case": case["name"]}
            for label, sp in (
                ("churn", spec),
                ("flat", spec.with_(confounders=dataclasses.replace(spec.confounders, batch_churn=0.0))),
            ):
                a = _ingest(
                    Path(simulate.simulate(tmp / f"{case['name']}_{label}_a", sp, seed=seed)),
                    tmp / f"{case['name']}_{label}_a.kat.h5",
                    case["name"] + "_a",
                )
                b = _ingest(
                    Path(simulate.simulate(tmp / f"{case['name']}_{label}_b", sp, seed=seed + 1)),
                    tmp / f"{case['name']}_{label}_b.kat.h5",
                    case["name"] + "_b",
                )
                c = compare_stores(a, b)
                sig = c.significant()
                res[label] = len(sig)
                res[label + "_top"] = _describe(sig[0]) if sig else "-"
                res[label + "_located"] = len(c.located())
            healthy.append(res)
            print(
                f"{case['name']:<28} healthy seeds: flat {res['flat']} significant, churn {res['churn']} "
                f"(located: {res['flat_located']}, {res['churn_located']}) ({time.perf_counter() - t:.1f}s)",
                flush=True,
            )
    return {"faulty": faulty, "healthy": healthy}


def _describe(d) -> str:
    if d is None:
        return "-"
    what = d.name[:48] if d.name else d.label
    if d.kind in ("class", "class_rank"):
        what = d.label
    rank = "all" if d.rank is None else d.rank
    eff = "new" if not np.isfinite(d.effect) else f"{d.effect * 100:+.1f}%"
    win = f" steps {d.window['steps'][0]}-{d.window['steps'][1]}" if d.window else ""
    return f"{d.kind} [{rank}] {what} {eff}{win}" + ("" if d.significant else " (n.s.)")


# ------------------------------------------------------------------------------------------- report


P = Params()


def _machine() -> str:
    """CPU model and core count, the date, and the load average when this was written."""
    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (
        f"{os.cpu_count()} CPU cores ({model}) shared with other jobs, no GPU; written "
        f"{time.strftime('%Y-%m-%d %H:%M %Z')} at load average {os.getloadavg()[0]:.1f}"
    )


def write_md(out: Path, speed: dict | None, quality: dict | None, quick: bool) -> None:
    lines = ["# Comparison benchmark (`python benchmarks/compare.py`)", ""]
    lines += [
        f"Machine: {_machine()} (hence CPU time next to wall time). Method and "
        f"thresholds: docs/compare.md (Mann-Whitney U, Benjamini-Hochberg FDR {P.alpha:g}, effect >= "
        f"{P.min_effect * 100:g} %, >= {P.min_abs_ns:g} ns; per-rank rows >= {P.min_step_share * 100:g} % of "
        f"a step, waits >= {P.min_wait_share * 100:g} %).",
        "",
    ]
    if speed:
        ts = speed["compare_s"]
        lines += [
            "## Speed",
            "",
            f"Two synthetic 8-rank stores, {speed['kernels_healthy']:,} and {speed['kernels_degraded']:,} GPU "
            "kernels (plus as many launch events and the step annotations), one rank's GEMMs 20 % slower in the "
            "second half.",
            "",
            "| what | value |",
            "|---|---|",
            f"| `compare_stores` end to end (both stores read), CPU time, best of 3 | "
            f"{min(speed['compare_cpu_s']):.2f} s |",
            f"| wall time of the three runs (load average {speed['load_avg']:.1f} on 2 cores) | "
            f"{', '.join(f'{t:.2f} s' for t in ts)} |",
            f"| rows tested / significant / located in time | {speed['rows']} / {speed['significant']} / "
            f"{speed['located']} |",
            f"| top row | {speed['top']} ({'the slowed rank and kernels' if speed['top_ok'] else 'WRONG'}) |",
            "",
        ]
    if quality:
        f = quality["faulty"]
        n_ok = sum(r["ok"] for r in f)
        timed = [r for r in f if r["window"] in ("yes", "no")]
        n_win = sum(r["window"] == "yes" for r in timed)
        lines += [
            "## Ranking quality over the simulator suite" + (" (--quick subset)" if quick else ""),
            "",
            f"Faulty cases: the first ranked row points at the injected fault in **{n_ok} of {len(f)}** "
            f"({100 * n_ok / max(len(f), 1):.0f} %).",
            "",
            "Changes located in time: the suite's slowdowns start at step 10 of 48 (default onset) and run "
            "to the end, so the first row should carry the window of the fault's steps. It does (both ends "
            f"within {WINDOW_SLACK} steps of a fault's) in **{n_win} of {len(timed)}** cases with a slowdown "
            f"that leaves at least {P.min_n} steps (`Params.min_n`) outside it; a fault that leaves fewer "
            "keeps the whole-run row (*whole run*); hangs are ranked by the stopped rank (-).",
            "",
            "| case | fault | severity | first row points at the fault | first hit (rank) | significant rows "
            "| located rows | fault steps | first row's window | first row |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        for r in f:
            fs = ", ".join(f"{a}-{b}" for a, b, _ in r["fault_steps"]) or "-"
            lines.append(
                f"| {r['case']} | {r['fault']} | {r['severity']} | {'yes' if r['ok'] else 'no'} | "
                f"{r['first_hit'] or '-'} | {r['significant']} | {r['located']} | {fs} | {r['window']} | "
                f"{r['top'].replace('|', '/')} |"
            )
        h = quality["healthy"]
        import suite

        mode = {c["name"]: c["spec_args"].get("mode", "decode") for c in suite.cases()}
        decode = [r for r in h if mode.get(r["case"], "decode") == "decode"]
        flat_clean = sum(r["flat"] == 0 for r in h)
        churn_clean = sum(r["churn"] == 0 for r in h)
        located = sum(r["flat_located"] + r["churn_located"] for r in h)
        lines += [
            "",
            "Healthy runs, seed against seed + 1. *flat*: batch churn off; decode-only runs then differ only "
            "by noise, while mixed and prefill runs still draw their prompt lengths and prefill steps from "
            "the seed. *churn*: the suite's own batch churn, so the two runs carry different batch sizes "
            "that drift apart over the run; the same healthy service, so nothing may be significant "
            "(collectives are compared against healthy steps of the same shape, docs/compare.md).",
            "",
            f"No significant row: flat **{sum(r['flat'] == 0 for r in decode)} of {len(decode)} decode-only "
            f"cases** ({flat_clean} of {len(h)} with mixed/prefill), churn {churn_clean} of {len(h)}. Rows "
            f"located in time (a window of steps): {located}.",
            "",
            "| case | mode | significant (flat) | significant (churn) | first significant row (churn) |",
            "|---|---|---|---|---|",
        ]
        for r in h:
            lines.append(
                f"| {r['case']} | {mode.get(r['case'], '?')} | {r['flat']} | {r['churn']} | "
                f"{r['churn_top'].replace('|', '/')} |"
            )
        lines.append("")
    out.write_text("\n".join(lines), encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="only the suite's quick cases")
    ap.add_argument("--skip-speed", action="store_true")
    ap.add_argument("--skip-quality", action="store_true")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "compare.md"))
    ap.add_argument("--json", help="also write the raw numbers")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="kat-compare-") as td:
        tmp = Path(td)
        speed = None if args.skip_speed else bench_speed(tmp)
        if speed:
            print("speed:", json.dumps(speed), flush=True)
        quality = None if args.skip_quality else bench_quality(tmp, args.quick)
    write_md(Path(args.out), speed, quality, args.quick)
    if args.json:
        Path(args.json).write_text(json.dumps({"speed": speed, "quality": quality}, indent=1))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
