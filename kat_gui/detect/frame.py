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
# Step ranges other tools write (NVTX, record_function, a tracer's annotation), used when no rank has
# ProfilerStep#N: "step 12", "train_step#12", "decode_step_12", "iteration 3", or a bare "step" / "train_step"
# (then numbered by its order on each rank).
ANNOTATION_STEP_RX = re.compile(
    r"^(?:(?:train(?:ing)?|decode|prefill|inference|serving|engine|model|global)[_ .-]?)?"
    r"(?:step|iteration|iter)(?:[\s#:=_-]*(\d+))?$",
    re.IGNORECASE,
)
MIN_ANNOTATION_STEPS = 2  # per rank

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
    it came from the trace/topology rather than a guess; ``hosts_from`` names the source (:data:`HOSTS_FROM`).
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
    hosts_from: str = "none"
    step_source: str = "profiler_step"  # where ``steps`` came from: "profiler_step" | "annotation"
    step_name: str | None = None  # the annotation that marks steps, for "annotation"

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


def _annotation_steps(
    strings: list[str],
    ranks: np.ndarray,
    rank: np.ndarray,
    name: np.ndarray,
    start: np.ndarray,
    end: np.ndarray,
) -> tuple[dict[str, np.ndarray], str] | None:
    """Steps from step-like annotations (:data:`ANNOTATION_STEP_RX`) when there is no ``ProfilerStep#N``:
    the name family (the name without its number) that every GPU rank has at least twice, the one with the
    most ranges. Numbered names keep their numbers; a bare name is numbered by its order on each rank."""
    family: dict[int, str] = {}
    number: dict[int, int] = {}
    for i, s in enumerate(strings):
        if len(s) > 40 or not s[:1].isalpha():
            continue
        m = ANNOTATION_STEP_RX.match(s)
        if m:
            family[i] = (s[: m.start(1)] if m.group(1) else s).rstrip(" #:=_-").lower()
            if m.group(1):
                number[i] = int(m.group(1))
    if not family or not len(name) or not len(ranks):
        return None
    ids = np.fromiter(family, dtype=np.int64)
    rows = np.flatnonzero(np.isin(name, ids))
    best: tuple[int, str] | None = None
    for fam in sorted(set(family.values())):
        sel = rows[np.isin(name[rows], [i for i, f in family.items() if f == fam])]
        counts = np.array([np.count_nonzero(rank[sel] == r) for r in ranks])
        if counts.min() >= MIN_ANNOTATION_STEPS and (best is None or len(sel) > best[0]):
            best = (len(sel), fam)
    if best is None:
        return None
    ids_f = [i for i, f in family.items() if f == best[1]]
    sel = rows[np.isin(name[rows], ids_f)]
    sel = sel[np.lexsort((start[sel], rank[sel]))]
    if all(i in number for i in ids_f):
        num = np.array([number[int(i)] for i in name[sel].tolist()], dtype=np.int64)
    else:  # ordinal per rank
        r_s = rank[sel]
        first = np.r_[True, r_s[1:] != r_s[:-1]]
        idx = np.arange(len(sel))
        num = idx - np.maximum.accumulate(np.where(first, idx, 0))
    label = strings[ids_f[0]] if len(ids_f) == 1 else best[1]
    table = {
        "rank": rank[sel].astype(np.int32),
        "num": num.astype(np.int64),
        "start_ns": start[sel],
        "end_ns": end[sel],
    }
    return table, label


# Where the host of each rank came from, strongest first (docs/detection.md §1, "Hosts"): what the capture
# says (host names; one Nsight report per node; a launcher's distributedInfo; node-local process groups), a
# topology file, then inferences (repeated device indices; clock-offset clusters, set later by align.py), or
# nothing (every rank taken as one host).
HOSTS_FROM = (
    "host_name",
    "capture_report",
    "distributed_info",
    "topology",
    "device_index",
    "clock_offsets",
    "none",
)
# pg_config groups whose description names a node-local group (``intra_node``, ``node_local``, ``local_node``).
_NODE_GROUP_RX = re.compile(r"intra[-_ ]?node|node[-_ ]?local|local[-_ ]?node", re.IGNORECASE)


def _hosts(
    store, ranks: np.ndarray, topology: dict | None, rank_device: dict[int, int]
) -> tuple[dict[int, str], bool, str]:
    """Host of each rank, whether it is known (not a guess) and where it came from (:data:`HOSTS_FROM`).

    In order: what the capture says (:func:`_hosts_from_capture`), the topology's hosts (trusted only when the
    topology came from a file, not a default guess), repeated device indices (:func:`_hosts_from_devices`).
    Otherwise unknown (clock offsets may still separate hosts later, in align.py)."""
    rank_meta: dict[int, dict] = {}
    for m in store.ranks:
        if m.get("rank") is not None:
            rank_meta[int(m["rank"])] = m.get("meta") or {}
    rs = [int(r) for r in ranks]
    found = _hosts_from_capture(rs, rank_meta)
    if found is not None:
        return found[0], True, found[1]
    out: dict[int, str] = {}
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
                return out, True, "topology"
        except Exception:  # a topology we cannot read does not stop detection
            pass
    by_device = _hosts_from_devices(ranks, rank_device)
    if by_device:
        return by_device, True, "device_index"
    return {int(r): out.get(int(r), "") for r in ranks}, False, "none"


def _hosts_from_capture(ranks: list[int], rank_meta: dict[int, dict]) -> tuple[dict[int, str], str] | None:
    """Hosts the trace files themselves name, for every rank, or None.

    - ``host_name``: a host name in every rank's metadata (Kineto ``hostname``, Nsight's
      ``TARGET_INFO_SYSTEM_ENV`` host name); a reader that saw several ranks in one capture of one node (an
      Nsight report per node) also sets ``node_label``, unique per report, which wins (two nodes of one run
      may report the same container host name);
    - ``capture_report``: ``node_label`` only (the report named no host);
    - ``distributed_info``: ``distributedInfo`` with a node index (``node_rank`` / ``group_rank``, as torchrun
      calls it) or ``local_world_size`` (launchers number ranks node by node) on every rank, or ``pg_config``
      process groups described as node-local that cover every rank.
    The export machine's name (Nsight ``EXPORT_HOST``, ``meta["host"]``) is not used: reports are often
    exported elsewhere.
    """
    if not ranks or any(r not in rank_meta for r in ranks):
        return None
    labels = {r: rank_meta[r].get("node_label") for r in ranks}
    names = {r: rank_meta[r].get("hostname") or rank_meta[r].get("host_name") for r in ranks}
    if all(isinstance(v, str) and v for v in labels.values()):
        src = "host_name" if all(isinstance(v, str) and v for v in names.values()) else "capture_report"
        return {r: str(labels[r]) for r in ranks}, src
    if all(isinstance(v, str) and v.strip() for v in names.values()):
        return {r: str(names[r]).strip() for r in ranks}, "host_name"
    dist = {r: rank_meta[r].get("distributedInfo") for r in ranks}
    if not all(isinstance(d, dict) for d in dist.values()):
        return None
    for key in ("node_rank", "group_rank"):
        vals = {r: d.get(key) for r, d in dist.items()}
        if all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in vals.values()):
            return {r: f"node{vals[r]}" for r in ranks}, "distributed_info"
    lws = {r: d.get("local_world_size") for r, d in dist.items()}
    if all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in lws.values()):
        return {r: f"node{r // lws[r]}" for r in ranks}, "distributed_info"
    host: dict[int, str] = {}
    for r, d in dist.items():
        for pg in d.get("pg_config") or []:
            if not isinstance(pg, dict) or not _NODE_GROUP_RX.search(str(pg.get("pg_desc", ""))):
                continue
            members = pg.get("ranks")
            if isinstance(members, list) and r in members and all(isinstance(m, int) for m in members):
                host[r] = f"node@{min(members)}"
                break
    if len(host) == len(ranks):
        return host, "distributed_info"
    return None


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
    step_source, step_name = "profiler_step", None
    if not len(steps["num"]):
        found = _annotation_steps(
            strings,
            ranks,
            t_rank[track[is_ann]],
            ev["name"][is_ann],
            ev["start_ns"][is_ann],
            ev["end_ns"][is_ann],
        )
        if found is not None:
            steps, step_name = found
            step_source = "annotation"
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
    host_of_rank, hosts_known, hosts_from = _hosts(store, ranks, topology, rank_device)
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
        hosts_from=hosts_from,
        step_source=step_source,
        step_name=step_name,
    )
