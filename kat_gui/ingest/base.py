"""What every ingest module produces: one :class:`~kat_gui.events.RankTrace` per source file (one rank's trace).

A reader module (``kineto.py``, ``nsys.py``, ``functrace.py``) exposes:

- ``FORMAT``: a short name (``"kineto"``, ``"nsys"``, ``"functrace-csv"``...);
- ``sniff(path, head: bytes) -> bool``: True when the content (the first 64 KiB, already gunzipped when the file
  is gzip) looks like this format; the extension is only a hint;
- ``read(path, options: IngestOptions, progress: Progress | None) -> RankTrace``.

Readers raise :class:`kat_gui.errors.KatInputError` for any bad input, never a bare exception.
"""

from __future__ import annotations

from dataclasses import dataclass

from kat_gui.events import RankTrace, TrackInfo  # noqa: F401  (the reader output type, re-exported for readers)
from kat_gui.progress import Progress  # noqa: F401  (re-exported for readers)


@dataclass
class IngestOptions:
    keep_cpu_ops: bool = False  # keep cpu_op events (skipped by default)
    keep_python: bool = False  # keep python_function events (skipped by default)
    rank: int | None = None  # force the rank of a single file (overrides file content and name)
    # Chrome traces: where ranks come from (``pid``, ``tid``, ``process``, ``thread``, each optionally
    # ``:REGEX``; kat_gui.ingest.chrome.RankFrom); None = one process per rank
    rank_from: str | None = None
