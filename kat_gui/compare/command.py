"""``kat compare HEALTHY.kat.h5 DEGRADED.kat.h5 [--json OUT.json]``: the ranked diff on one screen."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from kat_gui.compare.engine import compare_stores
from kat_gui.compare.result import Comparison, Difference
from kat_gui.errors import KatInputError
from kat_gui.progress import TerminalProgress

TOP = 15


def fmt_ns(ns: float | None) -> str:
    """A duration with a unit a reader takes in at a glance (``1.23 ms``); ``-`` for None or NaN. The report
    (:mod:`kat_gui.report.build`) writes durations with it too."""
    if ns is None or ns != ns:  # NaN
        return "-"
    for unit, scale in (("s", 1e9), ("ms", 1e6), ("µs", 1e3)):
        if abs(ns) >= scale:
            return f"{ns / scale:.2f} {unit}"
    return f"{ns:.0f} ns"


def fmt_effect(d: Difference) -> str:
    if d.kind in ("only_healthy", "only_degraded", "ranks_changed"):
        return "new" if d.kind == "only_degraded" else ("gone" if d.kind == "only_healthy" else "")
    e = d.effect
    if e != e or abs(e) == float("inf"):
        return "new"
    return f"{e * 100:+.1f}%"


def row_subject(d: Difference, width: int = 70) -> str:
    """What a row is about: the kernel name (shortened) or the metric, with its rank."""
    subject = d.name or d.label
    if d.kind in ("class", "class_rank"):
        subject = d.label
    if len(subject) > width:
        subject = subject[: width - 1] + "…"
    where = f"rank {d.rank}" if d.rank is not None else "all ranks"
    return f"{subject}  [{where}]"


def window_suffix(d: Difference) -> str:
    """``  steps 16-39`` for a row whose change is located in a window of steps (its columns compare those
    steps only); empty for a row over the whole run."""
    if d.window is None:
        return ""
    a, b = d.window["steps"]
    return f"  steps {a}-{b}"


def window_text(c: Comparison, w: dict) -> str:
    """A window in words: each run's steps and their time from the run's start."""
    parts = []
    for who, run, key_steps, key_ns in (
        ("degraded", c.degraded, "steps", "degraded_ns"),
        ("healthy", c.healthy, "healthy_steps", "healthy_ns"),
    ):
        (a, b), (t0, t1) = w[key_steps], w[key_ns]
        parts.append(
            f"{who} steps {a}-{b} ({fmt_ns(t0 - run.start_ns)} to {fmt_ns(t1 - run.start_ns)} into the run)"
        )
    return ", ".join(parts)


def window_line(c: Comparison, located: list[Difference]) -> str:
    """The line that says which rows are located in time and where the first one's window lies."""
    return (
        f"{len(located)} row(s) changed in part of the run only ('steps a-b'): their columns compare those "
        f"steps of both runs; the first: {window_text(c, located[0].window)}"
    )


def summary_lines(c: Comparison, top: int = TOP, color: bool = False) -> list[str]:
    """The text the command prints: runs, alignment, then the top rows (insignificant ones marked grey)."""
    grey, red, green, reset = ("\x1b[90m", "\x1b[31m", "\x1b[32m", "\x1b[0m") if color else ("",) * 4
    h, d, al = c.healthy, c.degraded, c.alignment
    lines = [
        f"healthy  {h.name}: {len(h.ranks)} ranks, {h.steps} steps ({h.step_method}), {h.kernels:,} GPU events",
        f"degraded {d.name}: {len(d.ranks)} ranks, {d.steps} steps ({d.step_method}), {d.kernels:,} GPU events",
        f"aligned healthy step {al['anchor_healthy_step']} with degraded step {al['anchor_degraded_step']}; "
        f"{al['steps_compared']} steps compared",
    ]
    sh, sd = c.step_time_healthy_ns, c.step_time_degraded_ns
    if len(sh) and len(sd):
        import numpy as np

        lines.append(
            f"step time p50 {fmt_ns(float(np.median(sh)))} -> {fmt_ns(float(np.median(sd)))}, "
            f"p99 {fmt_ns(float(np.percentile(sh, 99)))} -> {fmt_ns(float(np.percentile(sd, 99)))}"
        )
    sig = c.significant()
    lines.append(
        f"{len(sig)} significant difference(s) of {len(c.differences)} tested "
        f"(FDR {c.params.alpha:g}, effect >= {c.params.min_effect * 100:g}%)"
        + ("" if sig else ": no significant difference")
    )
    shown = c.differences[:top]
    located = [row for row in shown if row.window is not None]
    if located:
        lines.append(window_line(c, located))
    lines.append(
        f"  {'':1} {'change':>8} {'p50 healthy':>11} {'p50 degraded':>12} {'mean healthy':>12} {'mean degraded':>13} {'q':>6}  what"
    )
    for row in shown:
        mark = "*" if row.significant else " "
        tint = grey if not row.significant else (red if row.effect > 0 else green)
        q = f"{row.q_value:.0e}" if row.q_value > 0 else "0"
        sym = " (symptom)" if row.symptom and row.significant else ""
        lines.append(
            f"{tint}  {mark} {fmt_effect(row):>8} {fmt_ns(row.p50_healthy_ns):>11} {fmt_ns(row.p50_degraded_ns):>12}"
            f" {fmt_ns(row.mean_healthy_ns):>12} {fmt_ns(row.mean_degraded_ns):>13} {q:>6}  {row_subject(row, 60)}{window_suffix(row)}{sym}{reset}"
        )
    slower = [r["rank"] for r in c.ranks if r.get("slower")]
    if slower:
        lines.append(f"slower ranks (GPU busy time per step): {', '.join(str(r) for r in slower)}")
    lines.append("* = significant; unmarked rows are within noise")
    return lines


def run(args: argparse.Namespace) -> int:
    for p in (args.healthy, args.degraded):
        if not Path(p).exists():
            raise KatInputError(p, "no such file")
    with TerminalProgress("compare") as bar:
        c = compare_stores(args.healthy, args.degraded, progress=bar)
    out = getattr(args, "json", None)
    if out:
        folder = Path(out).resolve().parent
        if not folder.is_dir():
            raise KatInputError(out, f"cannot write: folder {folder} does not exist")
        tmp = Path(str(out) + ".tmp")
        tmp.write_text(json.dumps(c.to_json(), indent=1), encoding="utf-8")
        os.replace(tmp, out)
    color = sys.stdout.isatty() and not os.environ.get("NO_COLOR")
    for line in summary_lines(c, color=color):
        print(line)
    if out:
        print(f"wrote {out}", file=sys.stderr)
    return 0
