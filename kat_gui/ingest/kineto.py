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
import re
from pathlib import Path

import msgspec

from kat_gui.errors import Cancelled, KatInputError
from kat_gui.ingest.base import IngestOptions, Progress, RankTrace
from kat_gui.ingest.kineto_header import load_bytes
from kat_gui.ingest.kineto_python import read_python
from kat_gui.ingest.kineto_scan import kscan, read_scanned
from kat_gui.ingest.kineto_tables import FORMAT

__all__ = ["FORMAT", "plain_chrome_head", "read", "scanner_enabled", "sniff"]


# Kineto's marks in the first 64 KiB: a header key only Kineto writes, or an event of one of its categories.
KINETO_KEYS = (b'"schemaVersion"', b'"deviceProperties"', b'"distributedInfo"', b'"baseTimeNanoseconds"')
_KINETO_CAT_RE = re.compile(
    rb'"cat"\s*:\s*"(?:kernel|Kernel|gpu_memcpy|gpu_memset|cuda_runtime|cuda_driver|cpu_op|user_annotation|'
    rb'gpu_user_annotation|cuda_sync|python_function|ac2g|fwdbwd)"'
)


def sniff(path: str | os.PathLike, head: bytes) -> bool:
    """True when ``head`` (the first 64 KiB, gunzipped) is a JSON object with ``traceEvents``,
    ``schemaVersion`` or ``deviceProperties``, unless it is a plain Chrome trace (:func:`plain_chrome_head`),
    which :mod:`kat_gui.ingest.chrome` reads."""
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n")
    if not text.startswith(b"{"):
        return False
    if not any(key in text for key in (b'"traceEvents"', b'"schemaVersion"', b'"deviceProperties"')):
        return False
    return not plain_chrome_head(text)


def plain_chrome_head(text: bytes) -> bool:
    """True when the head of a JSON object is a Chrome trace that is not Kineto's: it has ``traceEvents`` and
    at least one event (a ``"ph"`` key), but no Kineto header key (:data:`KINETO_KEYS`) and no event of a
    Kineto category (``kernel``, ``cpu_op``, ``cuda_runtime``...). A head without any event (an empty or
    malformed list) stays Kineto's, whose reader names the problem."""
    return (
        b'"traceEvents"' in text
        and b'"ph"' in text
        and not any(key in text for key in KINETO_KEYS)
        and _KINETO_CAT_RE.search(text) is None
    )


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
