"""Assemble docs/BENCHMARKS.md from the tables each benchmark writes into benchmarks/results/.

Each benchmark script records its own run (date, machine, command, load) at the top of its result file; this script
only puts them in one document, in a fixed order, with a header describing the machine it is run on.
"""

from __future__ import annotations

import datetime as dt
import os
import platform
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
ORDER = [
    ("ingest.md", "Ingest: KAT vs Meta HTA", "benchmarks/ingest.py"),
    ("store_window.md", "Store window queries", "benchmarks/store_window.py"),
    ("detection.md", "Detection quality on the simulator suite", "benchmarks/detection.py"),
    ("detect_speed.md", "Detection speed", "benchmarks/detect_speed.py"),
    ("explain.md", "Explanations", "benchmarks/explain.py"),
    ("explain_adapter.md", "Domain-adapted explainer (held-out)", "benchmarks/explain.py --heldout"),
    ("render.md", "GUI rendering", "benchmarks/render.py"),
    ("compare.md", "Run comparison", "benchmarks/compare.py"),
    ("scaleout.md", "Scale-out: parallel ingest, bounded-memory detection", "benchmarks/scaleout.py"),
]


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def main() -> int:
    parts = [
        "# Benchmarks",
        "",
        f"Assembled {dt.date.today().isoformat()} by `python benchmarks/collect.py` from `benchmarks/results/`. "
        f"Machine of the assembly: {os.cpu_count()} cores, {cpu_model()}, Python {platform.python_version()}. "
        "Each section names the command and conditions of its own run; these machines are shared and noisy, so "
        "read medians and ratios measured in the same run, not absolute times across sections.",
        "",
    ]
    for fname, title, script in ORDER:
        path = RESULTS / fname
        if path.is_file():
            lines = path.read_text(encoding="utf-8").strip().splitlines()
            # The result file's own title becomes the section heading; its headings move one level down.
            if lines and lines[0].startswith("# "):
                lines = lines[1:]
            parts += [f"## {title}", ""]
            parts += [("#" + ln) if ln.startswith("#") else ln for ln in lines]
        else:
            parts += [f"## {title}", "", f"_Not measured yet: run `python {script}`._"]
        parts.append("")
    out = ROOT / "docs" / "BENCHMARKS.md"
    out.write_text("\n".join(parts), encoding="utf-8")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
