"""``kat report RUN.kat.h5 [--compare OTHER.kat.h5] -o DIR``: write the postmortem report folder."""

from __future__ import annotations

import argparse
import sys

from kat_gui.progress import TerminalProgress
from kat_gui.report.build import write_report


def run(args: argparse.Namespace) -> int:
    with TerminalProgress("report") as bar:
        html = write_report(
            args.store,
            args.output,
            compare_with=getattr(args, "compare", None),
            scrub=not getattr(args, "no_scrub", False),
            progress=bar,
        )
    print(f"wrote {html} and {html.with_name('report.md')}")
    if getattr(args, "compare", None):
        print(f"compared with {args.compare} (the healthy run)", file=sys.stderr)
    return 0
