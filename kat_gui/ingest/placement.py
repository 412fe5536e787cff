"""Global ranks for captures that hold several ranks each: the ``--rank-map`` syntax, and the placement of one
capture per node (Nsight reports of ``nsys profile torchrun ...`` on each node) in one run-wide rank space.

Rules (docs/formats.md, "Reports of a whole node"):

- Node order: by the captures' host names when every capture names one and they are distinct (``node2``
  before ``node10``: digits compare as numbers), else the order the files were given in (a directory's files
  sorted by name).
- A node's first rank: ``index x --ranks-per-node`` when that is given (a node whose capture lacks a rank keeps
  the others' numbers), else the ranks of the nodes before it.
- ``--rank-map`` entries override the order for the processes they name; each must name a rank-owning process
  of exactly one capture (qualify the pid with the host or file name when pids repeat across nodes).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

from kat_gui.errors import KatInputError
from kat_gui.ingest.base import FileSurvey, IngestOptions, NodePlacement, RankMapEntry

RANK_MAP_SYNTAX = "PID=RANK[,PID=RANK...], a PID optionally qualified as HOST:PID or FILE:PID"
_ENTRY_RX = re.compile(r"^(?:(?P<where>.+):)?(?P<pid>\d+)=(?P<rank>\d+)$")


def parse_rank_map(texts: str | Iterable[str] | None) -> tuple[RankMapEntry, ...]:
    """``--rank-map`` values (each comma- or space-separated ``[WHERE:]PID=RANK``) as entries.

    Raises KatInputError for an entry that does not parse, a process named twice, or a rank given twice.
    """
    if texts is None:
        return ()
    if isinstance(texts, str):
        texts = [texts]
    entries: list[RankMapEntry] = []
    for text in texts:
        for item in re.split(r"[,\s]+", text.strip()):
            if not item:
                continue
            m = _ENTRY_RX.match(item)
            if not m:
                raise KatInputError(None, f"--rank-map entry {item!r} is not {RANK_MAP_SYNTAX}")
            entries.append(RankMapEntry(int(m["pid"]), int(m["rank"]), m["where"] or None))
    seen_pid: dict[tuple[int, str | None], RankMapEntry] = {}
    seen_rank: dict[int, RankMapEntry] = {}
    for e in entries:
        if (e.pid, e.where) in seen_pid:
            raise KatInputError(None, f"--rank-map names process {_who(e)} twice")
        if e.rank in seen_rank:
            raise KatInputError(
                None, f"--rank-map gives rank {e.rank} to both {_who(seen_rank[e.rank])} and {_who(e)}"
            )
        seen_pid[(e.pid, e.where)] = e
        seen_rank[e.rank] = e
    return tuple(entries)


def _who(e: RankMapEntry) -> str:
    return f"{e.where}:{e.pid}" if e.where else str(e.pid)


def natural_key(text: str) -> tuple:
    """Sort key where digit runs compare as numbers (``node2`` < ``node10``)."""
    return tuple(int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", text))


def place_nodes(surveys: list[tuple[Path, FileSurvey]], options: IngestOptions) -> dict[Path, NodePlacement]:
    """Each capture's place in the run when they are captures of whole nodes, and a check of ``--rank-map``.

    Captures are nodes when one of them holds several ranks' processes or ``--ranks-per-node`` is given;
    otherwise (one process each: one report per rank) no placement is made and ranks come from each file.
    """
    _check_rank_map(surveys, options)
    if not surveys:
        return {}
    per_node = options.ranks_per_node
    if per_node is None and not any(len(sv.processes) > 1 for _, sv in surveys):
        return {}
    hosts = [sv.host for _, sv in surveys]
    by_host = all(hosts) and len(set(hosts)) == len(hosts)
    order = list(range(len(surveys)))
    if by_host and len(surveys) > 1:
        order.sort(key=lambda i: natural_key(str(hosts[i])))
    how = "single capture" if len(surveys) == 1 else "host name" if by_host else "file order"
    out: dict[Path, NodePlacement] = {}
    base = 0
    for index, i in enumerate(order):
        path, sv = surveys[i]
        n = len(sv.processes)
        if per_node is not None:
            if n > per_node:
                raise KatInputError(
                    path, f"holds {n} ranks' processes, more than --ranks-per-node {per_node}"
                )
            base = index * per_node
        label = str(sv.host) if by_host or (len(surveys) == 1 and sv.host) else f"node{index}"
        out[path] = NodePlacement(index, label, sv.host, base, how, len(surveys))
        base += n
    return out


def _check_rank_map(surveys: list[tuple[Path, FileSurvey]], options: IngestOptions) -> None:
    """Every entry names a rank-owning process of exactly one of the surveyed captures."""
    for e in options.rank_map:
        hits = []
        for path, sv in surveys:
            where = {path.name, path.stem, *([sv.host] if sv.host else [])}
            if e.where is not None and e.where not in where:
                continue
            if any(int(p["pid"]) == e.pid for p in sv.processes):
                hits.append(path)
        if len(hits) > 1:
            raise KatInputError(
                None,
                f"--rank-map {_who(e)}={e.rank}: process {e.pid} owns GPU work in several captures "
                f"({', '.join(p.name for p in hits)}); write HOST:{e.pid}={e.rank} or FILE:{e.pid}={e.rank}",
            )
        if not hits:
            known = "; ".join(
                f"{path.name}: " + (", ".join(str(p["pid"]) for p in sv.processes) or "none")
                for path, sv in surveys
            )
            raise KatInputError(
                None,
                f"--rank-map {_who(e)}={e.rank}: no capture has a GPU-owning process {e.pid}"
                + (f" on {e.where}" if e.where else "")
                + (f" (GPU processes: {known})" if known else ""),
            )
