"""What an Nsight Systems export says about the capture itself, beside its events: the time base, the host it
was captured on, the exporter, and the GPUs (``TARGET_INFO_*``, ``EXPORT_META_DATA`` / ``META_DATA_EXPORT``).

Assumptions: any Nsight Systems SQLite export (schema 2.x-3.x); missing tables leave their keys out. Units: ns
for times, bytes and Hz as the export gives them.
"""

from __future__ import annotations

import sqlite3
from typing import Any

from kat_gui.ingest import nsys_ranks

GPU_INFO_COLUMNS = {  # meta key -> candidate columns in TARGET_INFO_GPU / TARGET_INFO_CUDA_GPU, newest first
    "name": ("name",),
    "bus_location": ("busLocation", "pciBusId"),
    "total_memory_bytes": ("totalMemory", "globalMemorySize"),
    "sm_count": ("smCount", "numMultiprocessors"),
    "memory_bandwidth_bytes_per_s": ("memoryBandwidth", "globalMemoryBandwidth"),
    "clock_rate_hz": ("clockRate",),
    "compute_major": ("computeMajor", "computeCapabilityMajor"),
    "compute_minor": ("computeMinor", "computeCapabilityMinor"),
    "uuid": ("uuid",),
}


def text(value: Any) -> str:
    """A value SQLite returned as text (bytes decoded leniently: exports hold non-UTF-8 user names)."""
    if value is None:
        return ""
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return str(value)


def columns(conn: sqlite3.Connection, table: str) -> list[str]:
    return [text(r[1]) for r in conn.execute(f'PRAGMA table_info("{table}")').fetchall()]


def report_meta(conn: sqlite3.Connection, tables: set[str]) -> dict[str, Any]:
    """The report's metadata: time base, capture host, exporter, GPUs (CUDA devices apart from others)."""
    meta: dict[str, Any] = {"source_format": "Nsight Systems SQLite export"}
    if "TARGET_INFO_SESSION_START_TIME" in tables:
        row = conn.execute("SELECT utcEpochNs FROM TARGET_INFO_SESSION_START_TIME LIMIT 1").fetchone()
        if row and row[0] is not None:
            meta["session_start_utc_ns"] = int(row[0])
    # Same codes as the Kineto reader: "relative+base" = relative ns + an absolute base, "relative" = no base.
    if "session_start_utc_ns" in meta:
        meta["time_base"] = "relative+base"
        meta["time_base_note"] = (
            "absolute ns = TARGET_INFO_SESSION_START_TIME.utcEpochNs + session-relative ns"
        )
    else:
        meta["time_base"] = "relative"
        meta["time_base_note"] = (
            "ns since the profiling session started (export has no TARGET_INFO_SESSION_START_TIME): "
            "not comparable with other reports' absolute times"
        )

    host = nsys_ranks.target_host(conn, tables)
    if host:
        meta["hostname"] = host  # where the report was captured (TARGET_INFO_SYSTEM_ENV)
    # EXPORT_META_DATA is META_DATA_EXPORT in newer exports (schema 3.x)
    export_table = next((t for t in ("EXPORT_META_DATA", "META_DATA_EXPORT") if t in tables), None)
    if export_table is not None:
        export = {text(k): text(v) for k, v in conn.execute(f'SELECT name, value FROM "{export_table}"')}
        meta["nsys_export"] = export
        if "EXPORT_PRODUCT_VERSION" in export:
            meta["exporter_version"] = export["EXPORT_PRODUCT_VERSION"]
        if "EXPORT_HOST" in export:
            meta["host"] = export["EXPORT_HOST"]

    gpus = _gpus(conn, tables)
    # Nsight also lists display adapters that are no CUDA devices (no SMs); keep them apart from the GPUs.
    meta["gpus"] = [g for g in gpus if g.get("sm_count", 1)]
    others = [g for g in gpus if not g.get("sm_count", 1)]
    if others:
        meta["non_cuda_gpus"] = others
    return meta


def _gpus(conn: sqlite3.Connection, tables: set[str]) -> list[dict[str, Any]]:
    """GPU list from TARGET_INFO_GPU (id column ``id``, older ``deviceId``), details from TARGET_INFO_CUDA_GPU."""
    devices: dict[int, dict[str, Any]] = {}
    for table in ("TARGET_INFO_GPU", "TARGET_INFO_CUDA_GPU"):
        if table not in tables:
            continue
        cols = columns(conn, table)
        id_col = "id" if "id" in cols else "deviceId" if "deviceId" in cols else None
        if id_col is None:
            continue
        wanted = {key: next((c for c in cands if c in cols), None) for key, cands in GPU_INFO_COLUMNS.items()}
        wanted = {k: c for k, c in wanted.items() if c is not None}
        sql = f'SELECT "{id_col}", ' + ", ".join(f'"{c}"' for c in wanted.values()) + f' FROM "{table}"'
        for row in conn.execute(sql):
            dev = devices.setdefault(int(row[0]), {"id": int(row[0])})
            for key, value in zip(wanted, row[1:], strict=True):
                if value is None or key in dev:
                    continue
                dev[key] = text(value) if isinstance(value, bytes) else value
    return [devices[k] for k in sorted(devices)]
