"""Ingest speed and peak memory: KAT's Kineto reader and full ingest vs Meta HTA's trace parser.

Each measurement runs in its own subprocess so that ``ru_maxrss`` is that tool's peak alone. Reports the
median wall time of ``--runs`` runs, events/s over all events in the files (every ``traceEvents`` entry) and
kernel events/s, and writes a Markdown table to ``benchmarks/results/ingest.md``.

- ``kat-parse``: :func:`kat_gui.ingest.read_traces` (reader only, columns in memory);
- ``kat-ingest``: the same plus writing a ``.kat.h5`` with :class:`kat_gui.store.TraceStore`;
- ``hta-parse``: ``hta.common.trace.parse_trace_file`` on each file in one process (HTA's own per-rank parse,
  default JSON backend, no multiprocessing so that both tools use one core).

Usage: ``python benchmarks/ingest.py [--runs 3] [--synth DIR ...] [--hta-timeout 600] [--hta-synth-max-mb 200]``

``--gzip FILE ...`` compares inflating ``.json.gz`` with the stdlib (``KAT_GZIP=stdlib``) and with the fast library
KAT uses when it is installed (``isal``, else ``zlib-ng``): ``kat-parse`` and ``kat-ingest`` medians of ``--runs``,
alternating, each in its own process, plus a check that both give the same store (``kat info --json`` and every event
column), and writes the section "Gzip inflate: stdlib vs fast library" of ``benchmarks/results/ingest.md``.

``--reader FILE ...`` instead compares the Kineto reader's two paths on each file (the compiled scanner and the
msgspec path, ``KAT_KINETO_SCANNER=0``): file bytes -> RankTrace in a worker pinned to one core, median of
``--runs``, plus the wall time of a full ``kat ingest`` with each path, and writes that table as the section
"Kineto reader: compiled scanner vs msgspec path" of ``benchmarks/results/ingest.md`` (the rest is kept).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import msgspec

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data" / "kineto"
RESULTS = ROOT / "benchmarks" / "results" / "ingest.md"


class _CountEv(msgspec.Struct):
    cat: str = ""
    ph: str = ""


class _CountDoc(msgspec.Struct):
    traceEvents: list[_CountEv]


def _peak_rss_mb() -> float:
    # VmHWM belongs to this process image; ru_maxrss survives exec and would count the parent's peak too.
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _worker(tool: str, paths: list[str]) -> dict:
    # Imports happen before the clock starts (both tools' import cost is excluded alike).
    from kat_gui.ingest import expand_paths, read_traces
    from kat_gui.store import TraceStore

    if tool == "hta-parse":
        import logging

        logging.disable(logging.WARNING)
        from hta.common.trace import parse_trace_file
    import_rss = _peak_rss_mb()
    t0 = time.perf_counter()
    if tool == "kat-gunzip":  # the file's bytes, inflated (kineto_header.load_bytes), nothing else
        from kat_gui.ingest.kineto_header import load_bytes

        kept = sum(len(load_bytes(p)) for p in expand_paths(paths))
    elif tool == "kat-parse":
        kept = sum(len(t) for t in read_traces(paths))
    elif tool == "kat-ingest":
        kept = 0
        with (
            tempfile.TemporaryDirectory() as tmp,
            TraceStore.create(Path(tmp) / "run.kat.h5", "bench") as writer,
        ):
            for t in read_traces(paths):
                kept += len(t)
                writer.add(t)
                del t
    elif tool == "hta-parse":
        kept = 0
        for p in expand_paths(paths):
            _meta, df, _symbols = parse_trace_file(str(p))
            kept += len(df)
            del df
    else:
        raise SystemExit(f"unknown tool {tool}")
    seconds = time.perf_counter() - t0
    return {"seconds": seconds, "rows": kept, "maxrss_mb": _peak_rss_mb(), "import_rss_mb": import_rss}


def _reader_worker(mode: str, path: str, runs: int) -> dict:
    """Time kineto.read on one core: ``mode`` is "scanner" or "python" (the env switch is read per call)."""
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
    os.environ["KAT_KINETO_SCANNER"] = "1" if mode == "scanner" else "0"
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    from kat_gui.ingest import kineto

    if mode == "scanner" and not kineto.scanner_enabled():
        raise SystemExit("the compiled scanner is not built")
    kineto.read(path)  # warm-up: first-call costs (lazy imports, page cache) stay out of the runs
    walls, cpus, rows = [], [], 0
    for _ in range(runs):
        t0, c0 = time.perf_counter(), time.process_time()
        trace = kineto.read(path)
        walls.append(time.perf_counter() - t0)
        cpus.append(time.process_time() - c0)
        rows = len(trace)
        del trace
    return {"wall": statistics.median(walls), "cpu": statistics.median(cpus), "rows": rows}


READER_HEADING = "## Kineto reader: compiled scanner vs msgspec path"


def reader_main(files: list[str], runs: int) -> str:
    load0 = os.getloadavg() if hasattr(os, "getloadavg") else ("?",)
    cpu = sorted(os.sched_getaffinity(0))[0] if hasattr(os, "sched_getaffinity") else None
    out = [
        READER_HEADING,
        "",
        "| input | events (kernels) | path | reader wall s | reader CPU s | events/s | kernel events/s | `kat ingest` wall s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for path in files:
        total, kernels = _count_events([path])
        size_mb = Path(path).stat().st_size / 1e6
        for mode in ("python", "scanner"):
            cmd = [sys.executable, __file__, "--reader-worker", mode, "--runs", str(runs), path]
            proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, check=True)
            r = json.loads(proc.stdout.strip().splitlines()[-1])
            env = dict(os.environ, KAT_KINETO_SCANNER="1" if mode == "scanner" else "0")
            ingest = []
            for _ in range(runs):
                with tempfile.TemporaryDirectory() as tmp:
                    t0 = time.perf_counter()
                    subprocess.run([str(Path(sys.executable).with_name("kat")), "ingest", "-o",
                                    str(Path(tmp) / "run.kat.h5"), path],
                                   env=env, capture_output=True, check=True)  # fmt: skip
                    ingest.append(time.perf_counter() - t0)
            s = r["wall"]
            row = (
                f"| {Path(path).name}, {size_mb:.0f} MB | {total:,} ({kernels:,}) | {mode} | {s:.3f} | {r['cpu']:.3f} "
                f"| {total / s / 1e6:.2f} M | {kernels / s / 1e6:.2f} M | {statistics.median(ingest):.2f} |"
            )
            print(row, flush=True)
            out.append(row)
    load = os.getloadavg() if hasattr(os, "getloadavg") else ("?",)
    out += [
        "",
        f"Reader: `kineto.read` (file path -> RankTrace) in a worker pinned to one core (CPU {cpu}), median of "
        f"{runs} runs after one warm-up read; `kat ingest`: the whole CLI run (imports, reader, store write), "
        f"median of {runs}. Run on {time.strftime('%Y-%m-%d %H:%M')}, Python {sys.version.split()[0]}, load "
        f"average {load0[0]:.1f} at the start and {load[0]:.1f} at the end on {os.cpu_count()} shared cores.",
        "",
    ]
    return _replace_section(READER_HEADING, "\n".join(out))


def _count_events(paths: list[str]) -> tuple[int, int]:
    """(all traceEvents entries, kernel events) over the files, counted independently of both tools."""
    import gzip

    from kat_gui.ingest import expand_paths

    total = kernels = 0
    for p in expand_paths(paths):
        data = p.read_bytes()
        if data[:2] == b"\x1f\x8b":
            data = gzip.decompress(data)
        evs = msgspec.json.decode(data, type=_CountDoc).traceEvents
        total += len(evs)
        kernels += sum(1 for e in evs if e.ph == "X" and e.cat in ("kernel", "Kernel"))
    return total, kernels


def measure(tool: str, paths: list[str], runs: int, timeout_s: float, env: dict | None = None) -> dict:
    results = []
    for _ in range(runs):
        cmd = [sys.executable, __file__, "--worker", tool, *paths]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, cwd=ROOT, env=env)
        except subprocess.TimeoutExpired:
            return {"error": f"timed out after {timeout_s:.0f} s"}
        if proc.returncode != 0:
            tail = (proc.stderr.strip().splitlines() or ["?"])[-1]
            return {"error": f"failed (exit {proc.returncode}): {tail[:120]}"}
        results.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    return {
        "seconds": statistics.median(r["seconds"] for r in results),
        "maxrss_mb": statistics.median(r["maxrss_mb"] for r in results),
        "import_rss_mb": statistics.median(r["import_rss_mb"] for r in results),
        "rows": results[0]["rows"],
        "runs": len(results),
    }


GZIP_HEADING = "## Gzip inflate: stdlib vs fast library"


def _same_store(path: str, tmp: Path) -> bool:
    """True when `kat ingest` of ``path`` gives the same store with both inflaters (info and every column)."""
    from kat_gui.cli import store_info
    from kat_gui.store import TraceStore

    got = []
    for backend in ("stdlib", "fast"):
        out = tmp / f"{backend}.kat.h5"
        env = dict(os.environ, KAT_GZIP=backend)
        subprocess.run([str(Path(sys.executable).with_name("kat")), "ingest", "-o", str(out), path],
                       env=env, capture_output=True, check=True)  # fmt: skip
        info = store_info(out)
        info.pop("path")
        with TraceStore.open(out) as st:
            cols = st.events()
            got.append(
                (json.dumps(info, sort_keys=True), {c: v.tobytes() for c, v in cols.items()}, st.strings)
            )
    return got[0] == got[1]


def _replace_section(heading: str, section: str) -> str:
    """Put ``section`` (starting with ``heading``) at the end of the results file, replacing an earlier one."""
    old = RESULTS.read_text() if RESULTS.exists() else ""
    if heading in old:
        head, _, rest = old.partition(heading)
        tail = rest.split("\n## ", 1)
        old = head + ("## " + tail[1] if len(tail) > 1 else "")
    RESULTS.write_text(old.rstrip("\n") + "\n\n" + section)
    return section


def gzip_main(files: list[str], runs: int) -> str:
    from kat_gui.ingest.kineto_header import GZIP_BACKEND

    if GZIP_BACKEND == "zlib":
        raise SystemExit("no fast inflate library is installed (pip install isal)")
    load0 = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    out = [
        GZIP_HEADING,
        "",
        "| input | tool | stdlib s | " + GZIP_BACKEND + " s | speed-up | same store |",
        "|---|---|---|---|---|---|",
    ]
    for path in files:
        size_mb = Path(path).stat().st_size / 1e6
        with tempfile.TemporaryDirectory() as tmp:
            same = _same_store(path, Path(tmp))
        for tool in ("kat-gunzip", "kat-parse", "kat-ingest"):
            times: dict[str, list[float]] = {"stdlib": [], "fast": []}
            for _ in range(runs):  # alternate, so that a change of machine load hits both alike
                for backend in times:
                    r = measure(tool, [path], 1, 3600, env=dict(os.environ, KAT_GZIP=backend))
                    if "error" in r:
                        raise SystemExit(f"{tool} ({backend}): {r['error']}")
                    times[backend].append(r["seconds"])
            std, fast = statistics.median(times["stdlib"]), statistics.median(times["fast"])
            row = (
                f"| {Path(path).name}, {size_mb:.1f} MB | {tool} | {std:.3f} | {fast:.3f} | {std / fast:.2f}x "
                f"| {'yes' if same else 'NO'} |"
            )
            print(row, flush=True)
            out.append(row)
    load1 = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    cpu = "?"
    try:
        cpu = next(
            ln.split(":", 1)[1].strip()
            for ln in Path("/proc/cpuinfo").read_text().splitlines()
            if ln.startswith("model name")
        )
    except (OSError, StopIteration):
        pass
    out += [
        "",
        f"Median of {runs} runs per cell, stdlib and {GZIP_BACKEND} alternating, each run in its own process; "
        "`kat-gunzip` = the file's bytes inflated (`kineto_header.load_bytes`), `kat-parse` = file -> RankTrace "
        "(`read_traces`: sniff, inflate, read), `kat-ingest` = the same plus writing the `.kat.h5` store (which the "
        f"inflater does not change: it dilutes the ratio); imports excluded. Same store = `kat info --json` and every event column identical. Run on "
        f"{time.strftime('%Y-%m-%d %H:%M')} on {cpu} ({os.cpu_count()} shared cores), Python "
        f"{sys.version.split()[0]}, load average {load0:.1f} at the start and {load1:.1f} at the end.",
        "",
    ]
    return _replace_section(GZIP_HEADING, "\n".join(out))


def main(argv: list[str] | None = None) -> str:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--reader-worker", help=argparse.SUPPRESS)
    ap.add_argument("--reader", action="store_true", help="compare the Kineto reader's two paths on PATHS")
    ap.add_argument("--gzip", action="store_true", help="compare stdlib and fast gzip inflate on PATHS")
    ap.add_argument("paths", nargs="*", help="with --reader: the files to read")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument(
        "--synth",
        type=Path,
        action="append",
        default=[],
        help="a folder written by benchmarks/synth_kineto.py",
    )
    ap.add_argument("--synth-runs", type=int, default=1)
    ap.add_argument("--hta-timeout", type=float, default=600)
    ap.add_argument("--skip-hta-synth", action="store_true")
    ap.add_argument(
        "--hta-synth-max-mb",
        type=float,
        default=float("inf"),
        help="run HTA only on synthetic sets this small",
    )
    args = ap.parse_args(argv)
    if args.worker:
        print(json.dumps(_worker(args.worker, args.paths)))
        return ""
    if args.reader_worker:
        print(json.dumps(_reader_worker(args.reader_worker, args.paths[0], args.runs)))
        return ""
    if args.reader:
        return reader_main(args.paths, args.runs)
    if args.gzip:
        return gzip_main(
            args.paths or [str(SHARED / "hta" / "df_index_resolver__df_index_resolver.json.gz")], args.runs
        )

    datasets = [
        ("largest real file (HTA df_index_resolver, 1 rank)",
         [str(SHARED / "hta" / "df_index_resolver__df_index_resolver.json.gz")], args.runs),
        ("DLRM, 8 ranks", [str(SHARED / "param_dlrm_8rank")], args.runs),
    ]  # fmt: skip
    synth_paths = {str(s) for s in args.synth}
    for synth in args.synth:
        datasets.append(
            (f"synthetic, {len(list(synth.glob('*.json*')))} ranks", [str(synth)], args.synth_runs)
        )
    rows = []
    for label, paths, runs in datasets:
        total, kernels = _count_events(paths)
        size_mb = sum(Path(p).stat().st_size for p in _files(paths)) / 1e6
        print(f"{label}: {total:,} events, {kernels:,} kernels, {size_mb:.0f} MB on disk", flush=True)
        for tool in ("kat-parse", "kat-ingest", "hta-parse"):
            if (
                tool == "hta-parse"
                and paths[0] in synth_paths
                and (args.skip_hta_synth or size_mb > args.hta_synth_max_mb)
            ):
                rows.append(
                    (label, total, kernels, size_mb, tool, {"error": "not run (too large for HTA here)"})
                )
                continue
            timeout = args.hta_timeout if tool == "hta-parse" else 3600
            r = measure(tool, paths, runs, timeout)
            rows.append((label, total, kernels, size_mb, tool, r))
            print(f"  {tool:10s} {_fmt(r, total, kernels)}", flush=True)
    table = _markdown(rows)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    # The reader sections that `--reader` appends stay below this table.
    old = RESULTS.read_text() if RESULTS.exists() else ""
    cut = old.find("\n## Kineto reader")
    RESULTS.write_text(table.rstrip("\n") + "\n" + (old[cut:] if cut >= 0 else ""))
    print(table)
    return table


def _files(paths: list[str]) -> list[Path]:
    from kat_gui.ingest import expand_paths

    return expand_paths(paths)


def _fmt(r: dict, total: int, kernels: int) -> str:
    if "error" in r:
        return r["error"]
    s = r["seconds"]
    return f"{s:8.2f} s  {total / s / 1e6:6.2f} M ev/s  {kernels / s / 1e6:6.2f} M kernels/s  peak {r['maxrss_mb']:7.0f} MB (after imports {r['import_rss_mb']:.0f})"


def _markdown(rows: list) -> str:
    out = [
        "| input | events (kernels) | tool | median s (runs) | events/s | kernel events/s | peak RSS MB (after imports) |",
        "|---|---|---|---|---|---|---|",
    ]
    for label, total, kernels, size_mb, tool, r in rows:
        head = f"| {label}, {size_mb:.0f} MB | {total:,} ({kernels:,}) | {tool} "
        if "error" in r:
            out.append(head + f"| {r['error']} | | | |")
        else:
            s = r["seconds"]
            out.append(
                head
                + f"| {s:.2f} ({r['runs']}) | {total / s / 1e6:.2f} M | {kernels / s / 1e6:.2f} M | {r['maxrss_mb']:.0f} ({r['import_rss_mb']:.0f}) |"
            )
    cpu = os.cpu_count()
    out.append("")
    out.append(
        f"One process per measurement, one core each (machine: {cpu} shared cores), Python {sys.version.split()[0]}. "
        "events = every traceEvents entry in the files; peak RSS = VmHWM of the measuring process; timings exclude imports."
    )
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    main()
