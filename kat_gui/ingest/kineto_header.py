"""A Kineto JSON file as a document: its bytes, its top level, and the header around ``traceEvents``.

Both reading paths (:mod:`kat_gui.ingest.kineto_python`, :mod:`kat_gui.ingest.kineto_scan`) start here:

- :func:`load_bytes`: the file's bytes, gunzipped (gzip told by its magic bytes, not its name), or a read-only
  mapping of a large plain file for the compiled scanner. :func:`gunzip` inflates with ISA-L (``isal``) or
  zlib-ng when one is installed (2-3x faster than the stdlib on large traces), else with the stdlib; anything
  the fast path does not finish cleanly (a truncated or corrupt stream, several gzip members) is inflated again
  by the stdlib, so results and error messages never depend on which library is present.
- :func:`decode_top`: the top-level object as ``{key: raw JSON text}``, validating the whole document without
  building any event.
- :func:`header`: every top-level key but ``traceEvents``, decoded, as the trace's ``meta``, and the time base.
  Kineto writes ``ts`` in µs; a file with ``baseTimeNanoseconds`` (an integer, ns since the epoch) holds times
  relative to it (``meta["time_base"] == "relative+base"``), else the µs are since the epoch (``"epoch_us"``).
- :func:`with_host_and_rank`: the host and rank the header names, once the events are read.
"""

from __future__ import annotations

import gzip
import mmap
import os
import re
import zlib
from pathlib import Path
from typing import Any

import msgspec

from kat_gui.errors import KatInputError
from kat_gui.ingest.base import RankTrace

try:  # ISA-L's zlib-compatible inflate (requirements/runtime.txt pins it); zlib-ng next; the stdlib otherwise
    from isal import isal_zlib as _fast_zlib

    GZIP_BACKEND = "isal"
except ImportError:  # pragma: no cover - depends on the installed packages
    try:
        from zlib_ng import zlib_ng as _fast_zlib

        GZIP_BACKEND = "zlib-ng"
    except ImportError:
        _fast_zlib = None
        GZIP_BACKEND = "zlib"

_TOP = msgspec.json.Decoder(dict[str, msgspec.Raw])
_HOST_KEYS = ("hostname", "host_name", "host")
_HOST_PID_RE = re.compile(r"^(.+):(\d+)$")


def load_bytes(path: Path, mapped: bool = False) -> bytes | mmap.mmap:
    """The file's bytes, gunzipped. With ``mapped``, a plain file of at least 64 KiB whose size is not a
    multiple of the page size comes back as a read-only mmap instead (no copy: reading 150 MB into a bytes
    object costs more than scanning it); the zeros after its end in the last page are the NUL that the
    compiled scanner relies on."""
    try:
        with open(path, "rb") as fh:
            if mapped:
                size = os.fstat(fh.fileno()).st_size
                if size >= 65536 and size % mmap.PAGESIZE and fh.read(2) != b"\x1f\x8b":
                    if not hasattr(mmap, "MAP_PRIVATE"):  # Windows
                        return mmap.mmap(fh.fileno(), size, access=mmap.ACCESS_READ)
                    flags = mmap.MAP_PRIVATE | getattr(mmap, "MAP_POPULATE", 0)
                    return mmap.mmap(fh.fileno(), size, flags=flags, prot=mmap.PROT_READ)
                fh.seek(0)
            data = fh.read()
    except OSError as exc:
        raise KatInputError(path, f"cannot read the file ({exc.strerror or exc})") from None
    if not data or (len(data) < 65536 and not data.strip()):
        raise KatInputError(path, "the file is empty")
    if data[:2] == b"\x1f\x8b":
        try:
            data = gunzip(data)
        except (EOFError, OSError, zlib.error) as exc:
            raise KatInputError(path, f"truncated or corrupt gzip data ({exc})") from None
        if not data or (len(data) < 65536 and not data.strip()):
            raise KatInputError(path, "the file is empty (gzip of nothing)")
    return data


def gunzip(data: bytes) -> bytes:
    """The gzip stream ``data`` inflated: by the fast library when one is installed and ``KAT_GZIP`` is not
    ``"stdlib"``, else by :func:`gzip.decompress`. The fast path only answers when it inflated exactly one
    complete member (CRC and length checked) and nothing follows; otherwise the stdlib inflates the data again
    and gives the answer or the exception of record (several members, trailing bytes, truncation, corruption).
    """
    if _fast_zlib is not None and os.environ.get("KAT_GZIP", "") != "stdlib":
        try:
            inflater = _fast_zlib.decompressobj(31)  # wbits 31: gzip header and trailer
            out = inflater.decompress(data)
        except Exception:  # noqa: BLE001 - the stdlib below names the problem
            out = None
        else:
            if inflater.eof and not inflater.unused_data:
                return out
        del out
    return gzip.decompress(data)


def decode_top(path: Path, data: bytes) -> dict[str, msgspec.Raw]:
    """The top-level object, each value left as its raw JSON text (the ``traceEvents`` array included, as a
    zero-copy view); raises KatInputError when the document is not valid JSON or not an object."""
    try:
        return _TOP.decode(data)
    except RecursionError:
        raise KatInputError(path, "not a trace: JSON nested deeper than any trace nests") from None
    except msgspec.DecodeError as exc:
        raise KatInputError(path, f"not valid JSON ({json_problem(exc)})") from None
    except msgspec.ValidationError:
        raise KatInputError(
            path, "JSON is not a trace (the top level is not an object with traceEvents)"
        ) from None


def header(path: Path, top: dict[str, msgspec.Raw]) -> tuple[dict[str, Any], int]:
    """(meta, base ns) of the top-level keys other than ``traceEvents``: ``meta`` holds each key decoded plus
    ``time_base``; the base is ``baseTimeNanoseconds`` (0 when absent), to add to the events' times."""
    meta = _top_meta(path, top)
    base_ns = meta.get("baseTimeNanoseconds")
    if base_ns is not None and not isinstance(base_ns, int):
        raise KatInputError(path, f"baseTimeNanoseconds is not an integer: {base_ns!r}")
    meta["time_base"] = "relative+base" if base_ns is not None else "epoch_us"
    return meta, base_ns or 0


def with_host_and_rank(trace: RankTrace, meta: dict[str, Any]) -> RankTrace:
    """``trace`` with ``meta["hostname"]`` (when the header names one) and its rank from
    ``distributedInfo.rank`` (None when the file does not say)."""
    host = hostname_from_meta(meta)
    if host is not None:
        meta["hostname"] = host
    rank = (
        meta.get("distributedInfo", {}).get("rank") if isinstance(meta.get("distributedInfo"), dict) else None
    )
    trace.rank = rank if isinstance(rank, int) else None
    return trace


def json_problem(exc: Exception) -> str:
    """A msgspec decode error as the short text of KAT's one-line messages ("... near byte N")."""
    msg = str(exc)
    if "truncated" in msg:
        return "the JSON text ends too early: the file is truncated"
    m = re.search(r"\(byte (\d+)\)", msg)
    where = f" near byte {m.group(1)}" if m else ""
    return msg.split(" (byte")[0].removeprefix("JSON is malformed: ") + where


def _top_meta(path: Path, top: dict[str, msgspec.Raw]) -> dict[str, Any]:
    meta: dict[str, Any] = {}
    for key, raw in top.items():
        try:
            meta[key] = msgspec.json.decode(raw)
        except msgspec.DecodeError:  # already validated as JSON by the top-level decode
            raise KatInputError(path, f"cannot decode the top-level key {key!r}") from None
    return meta


def hostname_from_meta(meta: dict[str, Any]) -> str | None:
    """The host the trace was taken on, when the file says: a ``hostname``/``host_name``/``host`` key at the
    top level or in a nested object of the header (``distributedInfo``, ``metadata.system.env.HOSTNAME``),
    searched level by level, else a process name ``"<host>:<pid>"`` whose pid is that process's own."""
    level = [meta]
    for _ in range(4):
        below = []
        for obj in level:
            for key, value in obj.items():
                if key in ("process_names", "thread_names"):
                    continue
                if key.lower() in _HOST_KEYS and isinstance(value, str) and value.strip():
                    return value.strip()
                if isinstance(value, dict):
                    below.append(value)
        level = below
    for pid, name in meta.get("process_names", {}).items():
        m = _HOST_PID_RE.match(name) if isinstance(name, str) else None
        if m and m.group(2) == pid:
            return m.group(1)
    return None
