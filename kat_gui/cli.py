"""The ``kat`` command line: argument parsing only; every command delegates to the library.

Exit codes: 0 success, 2 bad input (one line on stderr naming the file and the problem), 130 interrupted.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from kat_gui import __version__
from kat_gui.errors import Cancelled, KatInputError

EXIT_OK = 0
EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130


def _fail(message: str) -> int:
    print(f"kat: error: {message}", file=sys.stderr)
    return EXIT_BAD_INPUT


# --------------------------------------------------------------------------------------------- commands


def cmd_ingest(args: argparse.Namespace) -> int:
    from kat_gui import pipeline
    from kat_gui.ingest import IngestOptions
    from kat_gui.progress import TerminalProgress

    opts = IngestOptions(keep_cpu_ops=args.keep_cpu_ops, keep_python=args.keep_python, rank=args.rank)
    if args.rank_from:
        from kat_gui.ingest.chrome import RankFrom

        RankFrom.parse(args.rank_from)  # a bad spec is a one-line error before anything is read
        opts.rank_from = args.rank_from
    if args.rank is not None and len(args.paths) != 1:
        return _fail("--rank applies to a single trace file; name the ranks in the file names instead")
    if args.rank_map or args.ranks_per_node is not None:
        from kat_gui.ingest.placement import parse_rank_map

        # a bad entry is a one-line error before anything is read
        opts.rank_map = parse_rank_map(args.rank_map)
        if args.ranks_per_node is not None and args.ranks_per_node < 1:
            return _fail("--ranks-per-node must be at least 1")
        opts.ranks_per_node = args.ranks_per_node
    with TerminalProgress("ingest") as bar:
        out = pipeline.ingest(
            args.paths,
            args.output,
            name=args.name,
            topology=args.topology,
            options=opts,
            progress=bar,
            scale=_scale(args),
        )
    print(f"wrote {out}")
    return _print_info(out, as_json=False)


def cmd_info(args: argparse.Namespace) -> int:
    return _print_info(Path(args.store), as_json=args.json)


def store_info(path: Path) -> dict:
    """The summary `kat info` prints: ranks, devices, streams, event counts per kind, time span, and GPU time
    per kernel class (run and per rank)."""
    from kat_gui.store import TraceStore

    with TraceStore.open(path) as st:
        t0, t1 = st.time_span()
        ranks: dict[int, dict] = {}
        for tr in st.tracks:
            r = ranks.setdefault(
                tr.rank, {"rank": tr.rank, "devices": set(), "streams": 0, "host_threads": 0, "events": 0}
            )
            if tr.kind == 0:
                r["devices"].add(tr.device)
                r["streams"] += 1
            else:
                r["host_threads"] += 1
            r["events"] += tr.row_count
        kinds_by_rank, time_by_rank = _rank_kinds_and_class_time(st)
        rank_meta = {m.get("rank"): m for m in st.ranks}
        rank_rows = []
        for rk in sorted(ranks):
            r = ranks[rk]
            meta = rank_meta.get(rk, {})
            rank_rows.append(
                {
                    "rank": rk,
                    "devices": sorted(r["devices"]),
                    "streams": r["streams"],
                    "host_threads": r["host_threads"],
                    "events": r["events"],
                    "source": Path(meta.get("source", "")).name,
                    "format": meta.get("format", ""),
                    "counts": kinds_by_rank[rk],
                    "kernel_time_by_class": time_by_rank[rk],
                }
            )
        run_time = {c: sum(r["kernel_time_by_class"][c] for r in rank_rows) for c in _class_names()}
        return {
            "schema": "kat.info/1",
            "run": st.name,
            "path": str(path),
            "ranks": rank_rows,
            "counts": st.counts_by_kind(),
            "start_ns": int(t0),
            "end_ns": int(t1),
            "duration_ns": int(t1 - t0),
            "tracks": len(st.tracks),
            "kernel_time_by_class": run_time,
        }


def _class_names() -> tuple[str, ...]:
    from kat_gui.detect.classify import CLASS_NAMES

    return CLASS_NAMES


def _rank_kinds_and_class_time(st) -> tuple[dict[int, dict[str, int]], dict[int, dict[str, int]]]:
    """Per rank: events per kind (every kind, zeros included) and the summed duration (ns) of its GPU events
    (kernels, copies, memsets on GPU streams) per detector class (every class of CLASS_NAMES, zeros
    included), classified exactly as detection does (:func:`kat_gui.detect.classify.event_classes`)."""
    import numpy as np

    from kat_gui.detect.classify import classify_strings, copy_class_strings, event_classes
    from kat_gui.events import EventKind, TrackKind

    names = _class_names()
    n_kinds = max(int(k) for k in EventKind) + 1
    gpu_kinds = [EventKind.KERNEL, EventKind.MEMCPY, EventKind.MEMSET]
    kinds_of: dict[int, np.ndarray] = {}
    ns_of: dict[int, np.ndarray] = {}
    lut = None  # the string table's classes, made once, only when a GPU track has events
    # one track at a time: memory stays that of the largest track, not of the run
    for tr in st.tracks:
        kinds_of.setdefault(tr.rank, np.zeros(n_kinds, np.int64))
        ns_of.setdefault(tr.rank, np.zeros(len(names)))
        if not tr.row_count:
            continue
        on_gpu = tr.kind == TrackKind.GPU_STREAM
        cols = ["kind", "name", "start_ns", "end_ns", "coll", "copy_kind"] if on_gpu else ["kind"]
        ev = st.track_events(tr.id, cols)
        kinds_of[tr.rank] += np.bincount(ev["kind"], minlength=n_kinds)
        if not on_gpu:
            continue
        gpu = np.isin(ev["kind"], gpu_kinds)
        if not gpu.any():
            continue
        if lut is None:
            lut = (classify_strings(st.strings), copy_class_strings(st.strings))
        cls = event_classes(ev["kind"][gpu], ev["name"][gpu], ev["coll"][gpu], ev["copy_kind"][gpu], *lut)
        dur = (ev["end_ns"][gpu] - ev["start_ns"][gpu]).astype(np.int64)
        ns_of[tr.rank] += np.bincount(cls, weights=dur, minlength=len(names))
    kinds = list(EventKind)
    kind_counts = {r: {k.name.lower(): int(c[k]) for k in kinds} for r, c in sorted(kinds_of.items())}
    class_time = {r: {c: int(v[i]) for i, c in enumerate(names)} for r, v in sorted(ns_of.items())}
    return kind_counts, class_time


def _fmt_ns(ns: int) -> str:
    for unit, scale in (("s", 1e9), ("ms", 1e6), ("µs", 1e3)):
        if abs(ns) >= scale:
            return f"{ns / scale:.3f} {unit}"
    return f"{ns} ns"


def _class_time_text(times: dict[str, int]) -> str:
    total = sum(times.values())
    if not total:
        return "-"
    return ", ".join(f"{c} {_fmt_ns(v)} ({100 * v / total:.0f}%)" for c, v in times.items() if v)


def _print_info(path: Path, as_json: bool) -> int:
    info = store_info(path)
    if as_json:
        print(json.dumps(info, indent=2))
        return EXIT_OK
    print(
        f"run {info['run']}: {len(info['ranks'])} ranks, {info['tracks']} tracks, "
        f"span {_fmt_ns(info['duration_ns'])} from {info['start_ns']} ns"
    )
    counts = ", ".join(f"{k} {v:,}" for k, v in info["counts"].items() if v)
    print(f"events: {counts}")
    print(f"GPU time by kernel class: {_class_time_text(info['kernel_time_by_class'])}")
    print(f"{'rank':>4}  {'devices':<10} {'streams':>7} {'host thr':>8} {'events':>10}  source")
    for r in info["ranks"]:
        devs = ",".join(str(d) for d in r["devices"]) or "-"
        print(
            f"{r['rank']:>4}  {devs:<10} {r['streams']:>7} {r['host_threads']:>8} {r['events']:>10,}  {r['source']}"
        )
    print("rank  events by kind | GPU time by kernel class")
    for r in info["ranks"]:
        kinds = ", ".join(f"{k} {v:,}" for k, v in r["counts"].items() if v) or "-"
        print(f"{r['rank']:>4}  {kinds} | {_class_time_text(r['kernel_time_by_class'])}")
    return EXIT_OK


def cmd_simulate(args: argparse.Namespace) -> int:
    from kat_gui import simulate

    if args.list:
        for name, desc in simulate.list_scenarios():
            print(f"{name:<28} {desc}")
        return EXIT_OK
    if not args.outdir or not args.scenario:
        return _fail("kat simulate needs OUTDIR and --scenario NAME (see kat simulate --list)")
    if args.scenario not in simulate.SCENARIOS:
        return _fail(f"unknown scenario {args.scenario!r}; known: {', '.join(sorted(simulate.SCENARIOS))}")
    out = simulate.simulate(Path(args.outdir), args.scenario, seed=args.seed)
    print(f"wrote scenario {args.scenario} (seed {args.seed}) to {out}")
    return EXIT_OK


def _not_yet(name: str):
    def _cmd(args: argparse.Namespace) -> int:
        print(f"kat {name}: not available in this version yet", file=sys.stderr)
        return 1

    return _cmd


def _delegate(module: str, func: str, name: str):
    """Command implemented in ``module.func(args) -> int``; reports clearly when that stage is not built yet."""

    def _cmd(args: argparse.Namespace) -> int:
        import importlib

        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name and exc.name.startswith("kat_gui"):
                return _not_yet(name)(args)
            raise
        fn = getattr(mod, func, None)
        if fn is None:
            return _not_yet(name)(args)
        return fn(args)

    return _cmd


# --------------------------------------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="kat",
        description="KAT: kernel-level anomaly troubleshooter for distributed "
        "large-model inference (offline).",
    )
    p.add_argument("--version", action="version", version=f"kat {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    s = sub.add_parser("ingest", help="read trace files into a .kat.h5 store")
    s.add_argument(
        "paths", nargs="+", metavar="PATH", help="trace files or directories (formats are sniffed)"
    )
    s.add_argument("-o", "--output", required=True, metavar="RUN.kat.h5")
    s.add_argument("--name", help="run name (default: from the first path)")
    s.add_argument("--topology", metavar="FILE", help="NCCL topology XML or `nvidia-smi topo -m` output")
    s.add_argument("--rank", type=int, help="rank of a single trace file that does not say it")
    s.add_argument(
        "--rank-from",
        metavar="SOURCE[:REGEX]",
        help="Chrome traces: read ranks from pid, tid, process or thread (names), optionally with a regex whose "
        "capture groups form the rank key, e.g. 'thread:PP rank (\\d+), TP rank (\\d+)' (default: one process "
        "per rank)",
    )
    s.add_argument(
        "--rank-map",
        action="append",
        metavar="PID=RANK,...",
        help="Nsight reports holding several ranks' processes: the rank of each GPU process (default: by CUDA "
        "device, then pid); qualify a pid as HOST:PID=RANK or FILE:PID=RANK when pids repeat across nodes",
    )
    s.add_argument(
        "--ranks-per-node",
        type=int,
        metavar="N",
        help="Nsight reports of whole nodes: global rank = node index x N + local rank (default: the ranks of "
        "the nodes before it; nodes ordered by host name, else file order)",
    )
    s.add_argument("--keep-cpu-ops", action="store_true", help="keep cpu_op events (skipped by default)")
    s.add_argument(
        "--keep-python", action="store_true", help="keep python_function events (skipped by default)"
    )
    add_scale_arguments(s)
    s.set_defaults(func=cmd_ingest)

    s = sub.add_parser("info", help="summarise a store")
    s.add_argument("store", metavar="RUN.kat.h5")
    s.add_argument("--json", action="store_true", help="machine-readable output")
    s.set_defaults(func=cmd_info)

    s = sub.add_parser("detect", help="find kernel-level anomalies and the components behind them")
    s.add_argument("store", metavar="RUN.kat.h5")
    s.add_argument("--json", metavar="OUT.json", help="also write the kat.detect/1 JSON")
    add_scale_arguments(s)
    s.set_defaults(func=_scaled(_delegate("kat_gui.detect.command", "run", "detect")))

    s = sub.add_parser("explain", help="explain the diagnosis in plain language")
    s.add_argument("store", metavar="RUN.kat.h5")
    s.add_argument("--json", action="store_true", help="JSON with hypotheses, evidence, narrative, grounding")
    s.add_argument("--no-llm", action="store_true", help="deterministic narrative only")
    s.add_argument("--model", metavar="PATH", help="a GGUF model file to use instead of the bundled one")
    s.add_argument(
        "--no-adapter", action="store_true", help="the bundled model without KAT's explainer adapter"
    )
    s.set_defaults(func=_delegate("kat_gui.explain.command", "run", "explain"))

    s = sub.add_parser("compare", help="compare a healthy and a degraded run")
    s.add_argument("healthy", metavar="HEALTHY.kat.h5")
    s.add_argument("degraded", metavar="DEGRADED.kat.h5")
    s.add_argument("--json", metavar="OUT.json")
    s.set_defaults(func=_delegate("kat_gui.compare.command", "run", "compare"))

    s = sub.add_parser("report", help="write a postmortem report folder")
    s.add_argument("store", metavar="RUN.kat.h5")
    s.add_argument("--compare", metavar="OTHER.kat.h5")
    s.add_argument("-o", "--output", required=True, metavar="DIR")
    s.add_argument("--no-scrub", action="store_true", help="keep host and user names in the report")
    s.set_defaults(func=_delegate("kat_gui.report.command", "run", "report"))

    s = sub.add_parser("simulate", help="write a simulated multi-GPU inference trace with ground truth")
    s.add_argument("outdir", nargs="?", metavar="OUTDIR")
    s.add_argument("--scenario", metavar="NAME")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--list", action="store_true", help="list the scenarios")
    s.set_defaults(func=cmd_simulate)

    s = sub.add_parser("gui", help="open the desktop window")
    add_gui_arguments(s)
    s.set_defaults(func=_delegate("kat_gui.ui.app", "run", "gui"))
    return p


def add_scale_arguments(s: argparse.ArgumentParser) -> None:
    """``--workers`` and ``--scheduler`` (docs/scale-out.md)."""
    s.add_argument(
        "--workers",
        type=int,
        metavar="N",
        help="parallel worker processes on this machine (a dask LocalCluster on 127.0.0.1); 0 = in this "
        "process; default: one per core when the input is large enough to pay for starting them",
    )
    s.add_argument(
        "--scheduler",
        metavar="ADDRESS",
        help="run on an existing dask cluster (e.g. tcp://head:8786; default $DASK_SCHEDULER_ADDRESS); its "
        "workers must see the inputs and the output at the same paths",
    )


def _scale(args: argparse.Namespace):
    from kat_gui.parallel import Scale

    return Scale(workers=args.workers, scheduler=args.scheduler)


def _scaled(cmd):
    """A command run with the scale its ``--workers`` / ``--scheduler`` ask for (kat_gui.parallel.requested)."""

    def _cmd(args: argparse.Namespace) -> int:
        from kat_gui import parallel

        with parallel.requested(_scale(args)):
            return cmd(args)

    return _cmd


def add_gui_arguments(s: argparse.ArgumentParser) -> None:
    s.add_argument("paths", nargs="*", metavar="PATH", help="stores or trace files to open")
    s.add_argument("--compare", metavar="PATH", help="open a second run for comparison")
    s.add_argument("--demo", action="store_true", help="open the bundled demo runs")
    s.add_argument("--screenshot", metavar="FILE.png", help="render the window to a PNG")
    s.add_argument("--quit", action="store_true", help="quit after loading (and the screenshot)")


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_BAD_INPUT
    try:
        return int(args.func(args) or 0)
    except KatInputError as exc:
        return _fail(str(exc))
    except (KeyboardInterrupt, Cancelled):
        print("kat: interrupted; nothing was written", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        return EXIT_OK


def gui_main() -> int:
    """Entry point of the ``kat-gui`` launcher: the same as ``kat gui``."""
    return main(["gui", *sys.argv[1:]])


if __name__ == "__main__":
    raise SystemExit(main())
