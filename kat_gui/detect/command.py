"""``kat detect RUN.kat.h5 [--json OUT.json]``: detect, store the results, print a one-screen summary."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from kat_gui.detect import detect_store, to_contract_json
from kat_gui.errors import KatInputError
from kat_gui.progress import TerminalProgress
from kat_gui.store import TraceStore

TOP = 5


def _fmt_ns(ns: float) -> str:
    for unit, scale in (("s", 1e9), ("ms", 1e6), ("µs", 1e3)):
        if abs(ns) >= scale:
            return f"{ns / scale:.2f} {unit}"
    return f"{ns:.0f} ns"


def summary_lines(result, top: int = TOP) -> list[str]:
    """The text summary: run, steps and collectives analysed, then the top findings with their numbers."""
    meta = result.meta
    st = meta.get("steps", {})
    co = meta.get("collectives", {})
    lines = [
        f"run {result.run}: {len(meta.get('ranks', []))} ranks, {meta.get('gpu_events', 0):,} GPU events, "
        f"{st.get('count', 0)} steps ({st.get('method', '?')}), {co.get('instances', 0):,} collective instances"
    ]
    clock = meta.get("clock", {})
    offs = clock.get("offsets_ns", {})
    if offs and any(offs.values()):
        worst = max(offs.values(), key=abs)
        lines.append(
            f"clock offsets across {clock.get('domains')}: up to {_fmt_ns(worst)}, residual "
            f"{_fmt_ns(clock.get('residual_ns', 0))}"
        )
    if not result.findings:
        lines.append("no anomaly found")
        return lines
    lines.append(f"{len(result.findings)} finding(s), most confident first:")
    for f in result.findings[:top]:
        ranks = ",".join(str(r) for r in f["ranks"])
        lines.append(f"  [{f['confidence']:.2f}] {f['component']:<7} rank(s) {ranks:<8} {f['summary']}")
        ev = f.get("evidence", {})
        nums = []
        for key in (
            "slowdown_vs_peers",
            "compute_bound_slowdown",
            "memory_bound_slowdown",
            "transfer_ratio",
            "wait_share",
        ):
            if key in ev and ev[key]:
                nums.append(f"{key}={ev[key]}")
        if ev.get("arrival_skew_ns"):
            nums.append(f"arrival_skew={_fmt_ns(ev['arrival_skew_ns'])}")
        nums.append(f"anomalous instances={f.get('anomaly_count', 0)}")
        lines.append("         " + ", ".join(nums))
    if len(result.findings) > top:
        lines.append(f"  ... and {len(result.findings) - top} more (kat detect --json for all)")
    return lines


def run(args: argparse.Namespace) -> int:
    path = Path(args.store)
    if not path.exists():
        raise KatInputError(path, "no such file")
    with TerminalProgress("detect") as bar:
        result = detect_store(path, progress=bar)
    if getattr(args, "json", None):
        out = Path(args.json)
        if not out.resolve().parent.is_dir():
            raise KatInputError(out, f"cannot write: folder {out.resolve().parent} does not exist")
        with TraceStore.open(path) as st:
            doc = to_contract_json(result, st)
        out.write_text(json.dumps(doc, indent=1), encoding="utf-8")
    for line in summary_lines(result):
        print(line)
    if getattr(args, "json", None):
        print(f"wrote {args.json}", file=sys.stderr)
    return 0
