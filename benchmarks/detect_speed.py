"""Detection speed: GPU events analysed per second by ``kat detect`` on a large store.

Builds a store from ``benchmarks/synth_kineto.py`` traces (8 ranks, ProfilerStep annotations, launches with
correlations, NCCL kernels) unless ``--store`` names an existing one, then times the two phases separately:
reading the columns detection needs (``load_frame``, I/O and decompression) and detection itself
(``detect_frame``: alignment, peer matching, signals, attribution; one core, numpy). Writes a Markdown table
to ``benchmarks/results/detect_speed.md``.

Usage: ``python benchmarks/detect_speed.py [--kernels-per-rank 320000] [--ranks 8] [--store RUN.kat.h5]``
"""

from __future__ import annotations

import argparse
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks import synth_kineto  # noqa: E402
from kat_gui import pipeline  # noqa: E402
from kat_gui.detect import detect_frame, load_frame  # noqa: E402
from kat_gui.store import TraceStore  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ranks", type=int, default=8)
    ap.add_argument("--kernels-per-rank", type=int, default=320_000)
    ap.add_argument("--store", type=Path, help="an existing store to time instead of a synthetic one")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "detect_speed.md")
    args = ap.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="kat-detect-speed-") as tmp:
        store_path = args.store
        build_s = None
        if store_path is None:
            t = time.perf_counter()
            synth_kineto.main(
                [
                    tmp + "/traces",
                    "--ranks",
                    str(args.ranks),
                    "--kernels-per-rank",
                    str(args.kernels_per_rank),
                ]
            )
            store_path = pipeline.ingest([tmp + "/traces"], Path(tmp) / "big.kat.h5")
            build_s = time.perf_counter() - t
        with TraceStore.open(store_path) as st:
            n_events = st.n_events
            load_s = []
            det_s = []
            for _ in range(args.repeat):
                t = time.perf_counter()
                fr = load_frame(st)
                load_s.append(time.perf_counter() - t)
                t = time.perf_counter()
                res = detect_frame(fr)
                det_s.append(time.perf_counter() - t)
        n_gpu = fr.n_gpu
        best_load, best_det = min(load_s), min(det_s)
        rows = [
            ("store events (all kinds)", f"{n_events:,}"),
            ("GPU events analysed (kernels, memcpy, memset)", f"{n_gpu:,}"),
            ("collective instances", f"{res.meta['collectives']['instances']:,}"),
            ("steps", f"{res.meta['steps']['count']:,} ({res.meta['steps']['method']})"),
            ("findings", f"{len(res.findings)}"),
            (f"read columns (load_frame), best of {args.repeat}", f"{best_load:.2f} s"),
            (f"detect (detect_frame), best of {args.repeat}", f"{best_det:.2f} s"),
            ("detect throughput", f"{n_gpu / best_det / 1e6:.2f} M GPU events/s"),
            ("end to end (read + detect)", f"{n_gpu / (best_load + best_det) / 1e6:.2f} M GPU events/s"),
        ]
        if build_s is not None:
            rows.append(("building the store (synth + ingest, not timed for detect)", f"{build_s:.1f} s"))
    text = [
        "# Detection speed",
        "",
        f"`python benchmarks/detect_speed.py --ranks {args.ranks} --kernels-per-rank {args.kernels_per_rank}`"
        if args.store is None
        else f"store `{args.store.name}`",
        f"on {platform.machine()} / Python {platform.python_version()} (one core; the machine was shared with "
        "other work, so treat numbers as lower bounds).",
        "",
        "| measure | value |",
        "|---|---|",
        *[f"| {a} | {b} |" for a, b in rows],
        "",
    ]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(text), encoding="utf-8")
    print("\n".join(text))


if __name__ == "__main__":
    main()
