"""Nsight Systems reports that hold several ranks: which processes are ranks, their global ranks, and the
split of one report into one :class:`RankTrace` per rank.

``nsys profile torchrun --nproc-per-node N ...`` writes one report per node holding every process of the node
tree: one per rank beside ``torchrun``, ``nsys`` and shells. Assumptions:

- A rank is a process that owns GPU work (rows in the kernel, memcpy or memset table, by ``globalPid``);
  processes without any (launchers, the profiler, data-loader workers that only call the runtime) are not
  ranks, and their host events are dropped (counted in ``meta["dropped_other_process_events"]``).
- Local rank order: the process's lowest CUDA device, then its pid. In a whole-node report device ids are the
  node's (a process of ``CUDA_VISIBLE_DEVICES=3`` still reports device 3 there), and launchers give local rank
  k device k, so this is the launcher's order.
- Global rank: ``--rank-map PID=RANK`` when it names the report's processes; else the node's first rank
  (:class:`NodePlacement`, set by the registry when several reports are read) plus the local rank.
- A synchronisation row's ``deviceId`` is not trustworthy (the nsys-ai exports give device 0 for every
  process); its ``contextId`` is: each (process, context) belongs to the one device its kernels and copies ran
  on (:attr:`Survey.context_device`).
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from kat_gui.errors import KatInputError
from kat_gui.events import EventKind
from kat_gui.ingest.base import FileSurvey, IngestOptions, NodePlacement, RankTrace

GPU_WORK_TABLES = ("CUPTI_ACTIVITY_KIND_KERNEL", "CUPTI_ACTIVITY_KIND_MEMCPY", "CUPTI_ACTIVITY_KIND_MEMSET")
# Event kind -> the table it came from (meta["event_counts"] of each rank)
_TABLE_OF_KIND = {
    int(EventKind.KERNEL): "CUPTI_ACTIVITY_KIND_KERNEL",
    int(EventKind.MEMCPY): "CUPTI_ACTIVITY_KIND_MEMCPY",
    int(EventKind.MEMSET): "CUPTI_ACTIVITY_KIND_MEMSET",
    int(EventKind.RUNTIME): "CUPTI_ACTIVITY_KIND_RUNTIME",
    int(EventKind.SYNC): "CUPTI_ACTIVITY_KIND_SYNCHRONIZATION",
    int(EventKind.ANNOTATION): "NVTX_EVENTS",
}
BY_PROCESS_ORDER = "process order (device, pid)"


class DamagedError(Exception):
    """A value of the wrong type where an id belongs; the reader turns it into a KatInputError."""


@dataclass
class Survey:
    """The GPU-owning processes of one report, in local rank order, and where each CUDA context lives."""

    host: str | None
    processes: list[dict] = field(default_factory=list)  # {"pid", "devices", "name", "gpu_events"}
    context_device: dict[tuple[int, int], int] = field(default_factory=dict)  # (pid, contextId) -> deviceId

    def file_survey(self) -> FileSurvey:
        return FileSurvey(self.host, [dict(p) for p in self.processes])

    def describe(self) -> str:
        """``pid 144 (python3) on device 0, pid 145 (python3) on device 1``."""
        parts = []
        for p in self.processes:
            devs = ",".join(str(d) for d in p["devices"])
            name = f" ({p['name']})" if p["name"] else ""
            parts.append(f"pid {p['pid']}{name} on device {devs}")
        return ", ".join(parts)


def survey(conn: sqlite3.Connection, tables: set[str], host: str | None) -> Survey:
    """One grouped scan of each GPU-work table: (process, device, context) and row counts."""
    counts: dict[int, dict[int, int]] = {}
    ctx_dev: dict[tuple[int, int], int] = {}
    for table in GPU_WORK_TABLES:
        if table not in tables:
            continue
        cols = {_text(r[1]) for r in conn.execute(f'PRAGMA table_info("{table}")').fetchall()}
        if not {"globalPid", "deviceId"} <= cols:
            continue
        ctx = "contextId" if "contextId" in cols else "NULL"
        rows = conn.execute(
            f'SELECT globalPid, deviceId, {ctx}, COUNT(*) FROM "{table}" GROUP BY 1, 2, 3'
        ).fetchall()
        for gpid, dev, context, n in rows:
            if gpid is None or dev is None:
                continue
            if not all(isinstance(v, int) for v in (gpid, dev, n)) or not isinstance(
                context, (int, type(None))
            ):
                raise DamagedError(
                    f"table {table} holds a value that is not an integer in globalPid/deviceId"
                )
            pid = (gpid >> 24) & 0xFFFFFF
            per_dev = counts.setdefault(pid, {})
            per_dev[dev] = per_dev.get(dev, 0) + n
            if context is not None:
                ctx_dev.setdefault((pid, context), dev)
    names = _process_names(conn, tables)
    procs = [
        {
            "pid": pid,
            "devices": sorted(devs),
            "name": names.get(pid, ""),
            "gpu_events": int(sum(devs.values())),
        }
        for pid, devs in counts.items()
    ]
    procs.sort(key=lambda p: (p["devices"][0], p["pid"]))
    return Survey(host, procs, ctx_dev)


def _process_names(conn: sqlite3.Connection, tables: set[str]) -> dict[int, str]:
    if "PROCESSES" not in tables:
        return {}
    out = {}
    for pid, name in conn.execute("SELECT pid, name FROM PROCESSES").fetchall():
        if isinstance(pid, int):
            out[pid] = _text(name)
    return out


def _text(value) -> str:
    if value is None:
        return ""
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return str(value)


def splits(path: str | os.PathLike, sv: Survey, options: IngestOptions) -> bool:
    """Whether the report is read as one rank per process: it holds several GPU processes, or it is one node
    of several (``options.node``, ``--ranks-per-node``), or ``--rank-map`` names its process. Else it is one
    rank, the whole file, whose rank comes from ``--rank`` or the file name."""
    if len(sv.processes) > 1:
        return True
    if not sv.processes:
        return False
    return options.node is not None or options.ranks_per_node is not None or bool(_mapped(path, sv, options))


def _mapped(path: str | os.PathLike, sv: Survey, options: IngestOptions) -> dict[int, int]:
    """The ``--rank-map`` entries that name this report's GPU processes: pid -> rank."""
    p = Path(path)
    pids = {int(x["pid"]) for x in sv.processes}
    where = {p.name, p.stem, *([sv.host] if sv.host else [])}
    return {
        e.pid: e.rank for e in options.rank_map if e.pid in pids and (e.where is None or e.where in where)
    }


def process_ranks(path: str | os.PathLike, sv: Survey, options: IngestOptions) -> tuple[dict[int, int], str]:
    """Global rank of each GPU process of the report and where it came from (the rank map, or the node's
    first rank + the local rank). Raises KatInputError for a forced ``--rank`` on a report of several
    processes, an incomplete rank map, or a node holding more ranks than ``--ranks-per-node``."""
    pids = [int(x["pid"]) for x in sv.processes]
    mapped = _mapped(path, sv, options)
    if mapped:
        missing = [pid for pid in pids if pid not in mapped]
        if missing:
            raise KatInputError(
                path,
                f"--rank-map names {len(mapped)} of the {len(pids)} GPU processes of this report; add "
                + ", ".join(f"{pid}=RANK" for pid in missing)
                + f" (processes: {sv.describe()})",
            )
        return mapped, "rank map"
    if options.rank is not None:
        if len(pids) > 1:
            raise KatInputError(
                path,
                f"holds {len(pids)} ranks' GPU processes ({sv.describe()}); --rank names the rank of a "
                "one-rank file: leave it out (ranks follow the devices) or give --rank-map "
                + ",".join(f"{pid}=RANK" for pid in pids),
            )
        return {pids[0]: options.rank}, "option"
    node = options.node or single_node(sv)
    per_node = options.ranks_per_node
    if per_node is not None and len(pids) > per_node:
        raise KatInputError(
            path, f"holds {len(pids)} GPU processes ({sv.describe()}), more than --ranks-per-node {per_node}"
        )
    return {pid: node.rank_base + i for i, pid in enumerate(pids)}, BY_PROCESS_ORDER


def single_node(sv: Survey) -> NodePlacement:
    """The placement of a report read on its own: node 0, first rank 0."""
    return NodePlacement(0, sv.host or "node0", sv.host, 0, "single capture", 1)


def split(trace: RankTrace, sv: Survey, options: IngestOptions) -> Iterator[RankTrace]:
    """One RankTrace per GPU process of ``trace`` (a whole report read with per-process GPU tracks), in local
    rank order, with the process's own tracks, events, strings, args and metadata."""
    ranks, source = process_ranks(trace.source, sv, options)
    node = options.node or single_node(sv)
    ev = trace.events
    track_pid = np.array([t.pid for t in trace.tracks], dtype=np.int64)
    ev_pid = track_pid[ev["track"]] if len(trace.tracks) else np.zeros(0, np.int64)
    pids = [int(p["pid"]) for p in sv.processes]
    kept = np.isin(ev_pid, pids)
    dropped = int((~kept).sum())
    clamped = trace.meta.pop("_clamped", None)
    names = trace.meta.get("process_names", {})
    threads = trace.meta.get("thread_names", {})
    for local, proc in enumerate(sv.processes):
        pid = int(proc["pid"])
        t_sel = np.flatnonzero(track_pid == pid)
        remap = np.full(len(trace.tracks), -1, dtype=np.int32)
        remap[t_sel] = np.arange(len(t_sel), dtype=np.int32)
        rows = np.flatnonzero(ev_pid == pid)
        cols = {k: v[rows] for k, v in ev.items()}
        cols["track"] = remap[cols["track"]]
        strings, args = _compact(cols, trace.strings, trace.args)
        meta = {
            k: v for k, v in trace.meta.items() if k not in ("process_names", "thread_names", "event_counts")
        }
        kinds, counts = np.unique(cols["kind"], return_counts=True)
        meta["event_counts"] = {
            _TABLE_OF_KIND.get(int(k), f"kind {int(k)}"): int(c) for k, c in zip(kinds, counts, strict=True)
        }
        if clamped is not None:
            n_clamped = int(clamped[rows].sum())
            meta.pop("clamped_unfinished", None)
            if n_clamped:
                meta["clamped_unfinished"] = n_clamped
        meta["process_names"] = {k: v for k, v in names.items() if k == str(pid)}
        meta["thread_names"] = {k: v for k, v in threads.items() if k.split("/", 1)[0] == str(pid)}
        if isinstance(meta.get("gpus"), list) and any(g.get("id") in proc["devices"] for g in meta["gpus"]):
            meta["gpus"] = [g for g in meta["gpus"] if g.get("id") in proc["devices"]]
        meta["nsys_process"] = {"pid": pid, "name": proc["name"], "devices": list(proc["devices"])}
        meta["nsys_node"] = {
            "index": node.index,
            "nodes": node.nodes,
            "order_from": node.order_from,
            "rank_base": node.rank_base,
            "local_rank": local,
            "local_ranks": len(pids),
        }
        meta["node_label"] = node.label
        if node.host:
            meta["hostname"] = node.host
        meta["rank_source"] = source
        if dropped:
            meta["dropped_other_process_events"] = dropped
        yield RankTrace(
            rank=ranks[pid],
            source=trace.source,
            format=trace.format,
            tracks=[trace.tracks[i] for i in t_sel.tolist()],
            events=cols,
            strings=strings,
            args=args,
            meta=meta,
        )


def _compact(cols: dict[str, np.ndarray], strings: list[str], args: list[str]) -> tuple[list[str], list[str]]:
    """Keep only the strings and args the rows use, renumbering the id columns in place."""
    used = [cols[c][cols[c] >= 0] for c in ("name", "coll", "pg") if c in cols]
    keep = np.unique(np.concatenate(used)) if used else np.zeros(0, np.int64)
    for c in ("name", "coll", "pg"):
        if c in cols:
            cols[c] = _renumber(cols[c], keep, len(strings))
    a = cols["args"]
    akeep = np.unique(a[a >= 0])
    cols["args"] = _renumber(a, akeep, len(args))
    return [strings[i] for i in keep.tolist()], [args[i] for i in akeep.tolist()]


def _renumber(ids: np.ndarray, keep: np.ndarray, size: int) -> np.ndarray:
    """``ids`` (-1 = none) as positions in the sorted ``keep``."""
    lut = np.full(max(size, 1), -1, dtype=np.int64)
    lut[keep] = np.arange(len(keep))
    return np.where(ids >= 0, lut[np.maximum(ids, 0)], ids).astype(ids.dtype)


def context_devices(
    pid: np.ndarray, context: np.ndarray, device: np.ndarray, context_device: dict[tuple[int, int], int]
) -> np.ndarray:
    """The device of each sync row: that of its (process, CUDA context) when the GPU-work tables saw the
    context, else the row's own ``deviceId`` (0 for every process in some whole-node exports)."""
    if not context_device or not len(device):
        return device
    key = (pid.astype(np.int64) << 32) | (context.astype(np.int64) & 0xFFFFFFFF)
    uniq, inverse = np.unique(key, return_inverse=True)
    found = np.array([context_device.get((k >> 32, k & 0xFFFFFFFF), -1) for k in uniq.tolist()], np.int64)
    mapped = found[inverse.reshape(-1)]
    return np.where(mapped >= 0, mapped, device)


def target_host(conn: sqlite3.Connection, tables: set[str]) -> str | None:
    """The host the report was captured on: ``TARGET_INFO_SYSTEM_ENV`` row ``Hostname`` (not the export
    machine of ``EXPORT_HOST``); None when the report does not say."""
    if "TARGET_INFO_SYSTEM_ENV" not in tables:
        return None
    cols = {_text(r[1]) for r in conn.execute('PRAGMA table_info("TARGET_INFO_SYSTEM_ENV")').fetchall()}
    if not {"name", "value"} <= cols:
        return None
    for (value,) in conn.execute("SELECT value FROM TARGET_INFO_SYSTEM_ENV WHERE name = 'Hostname'"):
        text = _text(value).strip()
        if text:
            return text
    return None
