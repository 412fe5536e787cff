"""PyTorch profiler / Kineto JSON (``*.json``, ``*.json.gz``; one file = one rank) -> :class:`RankTrace`.

The reader entry (``FORMAT``, ``sniff``, ``read``) and the choice between two paths that give the same RankTrace
(every column, string, args and track table, meta):

- the compiled scanner (:mod:`kat_gui.ingest.kineto_scan`, over ``_kscan.c``), when it is built and not switched
  off with ``KAT_KINETO_SCANNER=0``;
- the msgspec path (:mod:`kat_gui.ingest.kineto_python`): the reference, and the fallback for whatever the
  scanner does not take (and any bad input, so that errors read the same).

Both start from the document and its header (:mod:`kat_gui.ingest.kineto_header`) and fill the same tables
(:mod:`kat_gui.ingest.kineto_tables`). Times: Kineto's ``ts``/``dur`` are µs as decimal text, read exactly
into int64 ns (:mod:`kat_gui.ingest.timeparse`), absolute when the file has ``baseTimeNanoseconds``.
"""

from __future__ import annotations

import mmap
import os
from pathlib import Path

import msgspec

from kat_gui.errors import Cancelled, KatInputError
from kat_gui.ingest.base import IngestOptions, Progress, RankTrace
from kat_gui.ingest.kineto_header import load_bytes
from kat_gui.ingest.kineto_python import read_python
from kat_gui.ingest.kineto_scan import kscan, read_scanned
from kat_gui.ingest.kineto_tables import FORMAT

__all__ = ["FORMAT", "read", "scanner_enabled", "sniff"]


def sniff(path: str | os.PathLike, head: bytes) -> bool:
    """True when ``head`` (the first 64 KiB, gunzipped) looks like a Kineto / Chrome trace JSON object."""
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n")
    if not text.startswith(b"{"):
        return False
    return any(key in text for key in (b'"traceEvents"', b'"schemaVersion"', b'"deviceProperties"'))


def read(
    path: str | os.PathLike, options: IngestOptions | None = None, progress: Progress | None = None
) -> RankTrace:
    """Read one Kineto JSON file (plain or gzip) into a :class:`RankTrace`; raises KatInputError on bad input.

    Uses the compiled scanner when it is built and ``KAT_KINETO_SCANNER`` is not ``"0"``; whatever the scanner
    does not take (and any bad input, so that errors read the same) goes through the msgspec path.
    """
    options = options or IngestOptions()
    path = Path(path)
    if scanner_enabled():
        data = load_bytes(path, mapped=True)
        try:
            trace = read_scanned(path, data, options, progress)
        except Cancelled:
            raise
        except (
            kscan.Unsupported,
            KatInputError,
            ValueError,
            OverflowError,
            TypeError,
            msgspec.MsgspecError,
        ):
            trace = None  # the msgspec path below gives the answer, or the error, of record
        if trace is not None:
            return trace
        if isinstance(data, mmap.mmap):
            data = load_bytes(path)
    else:
        data = load_bytes(path)
    return read_python(path, data, options, progress)


def scanner_enabled() -> bool:
    """True when the compiled scanner is importable and not switched off with ``KAT_KINETO_SCANNER=0``."""
    return kscan is not None and os.environ.get("KAT_KINETO_SCANNER", "1") != "0"
