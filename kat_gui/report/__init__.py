"""Postmortem report: a self-contained folder (``report.html`` with inline CSS and SVG, ``report.md``,
``timeline.svg``, copied screenshots) for a run, optionally compared with a healthy run (docs/report.md).

Public API:

- ``write_report(store_path, out_dir, compare_with=None, scrub=True, screenshots=None, progress=None) -> Path``
  (the HTML file);
- ``Scrubber``: the host/user-name scrubber the report applies to every string;
- ``timeline_svg(store, anomalies, findings, notes)``: the static overview drawn without Qt.
"""

from kat_gui.report.build import md_escape, write_report
from kat_gui.report.scrub import Scrubber
from kat_gui.report.timeline_svg import timeline_svg

__all__ = ["Scrubber", "md_escape", "timeline_svg", "write_report"]
