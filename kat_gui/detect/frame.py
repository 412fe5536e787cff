"""What detection reads from a store: GPU events (columnar, one row per kernel/memcpy/memset), host step
annotations and kernel launches, and which host each rank runs on.

Everything here is plain numpy arrays; nothing per event is a Python object. Reading a 5M-event store costs
one pass over the columns it needs.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np

from kat_gui.detect.classify import classify_strings, copy_class_strings, event_classes
from kat_gui.events import EventKind, TrackKind

STEP_RX = re.compile(r"^ProfilerStep#(\d+)$")

GPU_COLUMNS = (
    "start_ns",
    "end_ns",
    "kind",
    "name",
    "correlation",
    "coll",
    "pg",
    "seq",
    "msg_nelems",
    "bytes",
    "copy_kind",
)


@dataclass
class RunFrame:
    """GPU events of a run plus the host-side facts detection needs.

    ``gpu`` columns (equal length): ``track``, ``index`` (row in its track), ``rank``, ``device``, ``stream``,
    the event columns of :data:`GPU_COLUMNS`, and ``cls`` (kat_gui.detect.classify codes). Sorted by
    (track, start_ns). ``steps`` has per-rank ``ProfilerStep#N`` intervals (``rank``, ``num``, ``start_ns``,
    ``end_ns``); ``launch`` has host runtime calls that carry a correlation (``rank``, ``correlation``,
    ``start_ns``). ``host_of_rank`` maps rank -> host label ("" when unknown); ``hosts_known`` says whether
    it came from the trace/topology rather than a guess.
    """

    name: str
    strings: list[str]
    gpu: dict[str, np.ndarray]
    steps: dict[str, np.ndarray]
    launch: dict[str, np.ndarray]
    ranks: np.ndarray
    host_of_rank: dict[int, str] = field(default_factory=dict)
    hosts_known: bool = False
    topology: dict | None = None

    @property
    def n_gpu(self) -> int:
        return len(self.gpu["start_ns"])


def _step_table(strings: list[str], rank: np.ndarray, name: np.ndarray, start: np.ndarray, end: np.ndarray):
    step_num = np.full(len(strings), -1, dtype=np.int64)
    for i, s in enumerate(strings):
        if s.startswith("ProfilerStep#"):
            m = STEP_RX.match(s)
            if m:
                step_num[i] = int(m.group(1))
    num = step_num[name] if len(name) else np.zeros(0, np.int64)
    keep = num >= 0
    order = np.lexsort((start[keep], rank[keep]))
    return {
        "rank": rank[keep][order].astype(np.int32),
        "num": num[keep][order],
        "start_ns": start[keep][order],
        "end_ns": end[keep][order],
    }


def _hosts(
    store, ranks: np.ndarray, topology: dict | None, rank_device: dict[int, int]
) -> tuple[dict[int, str], bool]:
    """Host of each rank: the trace's own host name when the reader kept one, else the topology's host
    (trusted only when the topology came from a file, not a default guess), else repeated device indices
    (:func:`_hosts_from_devices`). Otherwise unknown (clock offsets may still separate hosts later)."""
    out: dict[int, str] = {}
    for m in store.ranks:
        meta = m.get("meta") or {}
        host = meta.get("hostname") or meta.get("host") or meta.get("host_name")
        if host is not None and m.get("rank") is not None:
            out[int(m["rank"])] = str(host)
    if len(out) == len(ranks) and len(ranks):
        return out, True
    if topology:
        try:
            from kat_gui import topology as topo

            g = topo.from_json(topology)
            from kat_gui.topology.model import ancestor, gpu_of_rank

            guessed = not bool(g.graph.get("ranks_known", False)) or g.graph.get("inferred", False)
            for r in ranks:
                node = gpu_of_rank(g, int(r))
                h = ancestor(g, node, "host") if node else None
                out[int(r)] = str(h or "")
            if all(out.get(int(r)) for r in ranks) and not guessed:
                return out, True
        except Exception:  # a topology we cannot read does not stop detection
            pass
    by_device = _hosts_from_devices(ranks, rank_device)
    if by_device:
        return by_device, True
    return {int(r): out.get(int(r), "") for r in ranks}, False


def _hosts_from_devices(ranks: np.ndarray, rank_device: dict[int, int]) -> dict[int, str]:
    """Hosts from device indices: launchers number ranks host by host, and a device index seen again means
    a new host (rank 8 on device 0 after ranks 0-7 on devices 0-7). Only trusted when every inferred host
    holds at least two ranks on distinct devices and there are at least two hosts: processes that each see
    only their own GPU (device 0 everywhere) give one rank per "host" and say nothing."""
    if len(ranks) < 4 or len(rank_device) < len(ranks):
        return {}
    host = 0
    seen: set[int] = set()
    out: dict[int, str] = {}
    for r in sorted(int(x) for x in ranks):
        d = rank_device[r]
        if d in seen:
            host += 1
            seen = set()
        seen.add(d)
        out[r] = f"host{host}"
    sizes = np.bincount([int(h.removeprefix("host")) for h in out.values()])
    if host == 0 or sizes.min() < 2:
        return {}
    return out


def load_frame(store) -> RunFrame:
    """Read what detection needs from an open :class:`kat_gui.store.TraceStore`."""
    strings = store.strings
    tracks = store.tracks
    n_tracks = len(tracks)
    t_rank = np.array([t.rank for t in tracks], dtype=np.int32) if n_tracks else np.zeros(0, np.int32)
    t_dev = np.array([t.device for t in tracks], dtype=np.int32) if n_tracks else np.zeros(0, np.int32)
    t_stream = np.array([t.stream for t in tracks], dtype=np.int64) if n_tracks else np.zeros(0, np.int64)
    t_off = np.array([t.row_offset for t in tracks], dtype=np.int64) if n_tracks else np.zeros(0, np.int64)
    t_gpu = (
        np.array([t.kind == TrackKind.GPU_STREAM for t in tracks], dtype=bool)
        if n_tracks
        else np.zeros(0, bool)
    )

    ev = store.events(list(GPU_COLUMNS))
    n = len(ev["start_ns"])
    row = np.arange(n, dtype=np.int64)
    track = ev["track"]
    kind = ev["kind"]
    gpu_kinds = np.array([EventKind.KERNEL, EventKind.MEMCPY, EventKind.MEMSET], dtype=np.uint8)
    is_gpu = np.isin(kind, gpu_kinds) & t_gpu[track] if n else np.zeros(0, bool)

    gpu = {c: ev[c][is_gpu] for c in GPU_COLUMNS}
    gtrack = track[is_gpu]
    gpu["track"] = gtrack
    gpu["index"] = row[is_gpu] - t_off[gtrack]
    gpu["rank"] = t_rank[gtrack]
    gpu["device"] = t_dev[gtrack]
    gpu["stream"] = t_stream[gtrack]
    name_class = classify_strings(strings)
    gpu["cls"] = event_classes(
        gpu["kind"], gpu["name"], gpu["coll"], gpu["copy_kind"], name_class, copy_class_strings(strings)
    )

    is_ann = kind == EventKind.ANNOTATION
    steps = _step_table(
        strings, t_rank[track[is_ann]], ev["name"][is_ann], ev["start_ns"][is_ann], ev["end_ns"][is_ann]
    )
    is_rt = (kind == EventKind.RUNTIME) & (ev["correlation"] >= 0)
    launch = {
        "rank": t_rank[track[is_rt]],
        "correlation": ev["correlation"][is_rt],
        "start_ns": ev["start_ns"][is_rt],
    }
    ranks = np.unique(gpu["rank"])
    topology = None
    try:
        topology = store.get_json("topology")
    except Exception:
        topology = None
    rank_device: dict[int, int] = {}
    if len(gpu["rank"]):
        pair = np.unique((gpu["rank"].astype(np.int64) << 20) | gpu["device"].astype(np.int64))
        for r, d in zip((pair >> 20).tolist(), (pair & 0xFFFFF).tolist(), strict=True):
            rank_device.setdefault(int(r), int(d))
    host_of_rank, hosts_known = _hosts(store, ranks, topology, rank_device)
    return RunFrame(
        name=store.name,
        strings=strings,
        gpu=gpu,
        steps=steps,
        launch=launch,
        ranks=ranks,
        host_of_rank=host_of_rank,
        hosts_known=hosts_known,
        topology=topology,
    )
