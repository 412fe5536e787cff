"""The lanes of a large run grouped by host (like Perfetto's process track groups), and the pinned lanes above.

Pure list arithmetic on ``RunModel.lanes`` (no Qt, no store read): from the per-rank lanes, the host of each
rank (``scale.hosts_of``), the pinned ranks and the collapsed hosts it builds the timeline's rows, top down:

1. **pinned**: the lanes of the implicated (highlighted) ranks and a few reference peers (``scale.focus_ranks``),
   in that order, each label naming its host;
2. per host that has shown ranks left, hosts holding an implicated rank first, then in host order: a **host
   lane** (``HostLane``) followed, when the host is expanded, by its ranks' lanes. An expanded host's lane is a
   header (its name, how many of its ranks are shown, a mark when implicated; no tracks). A collapsed host's
   lane is its **summary**: the GPU tracks of all its shown, unpinned ranks drawn in one row, so each pixel
   column shows the union of their activity (the raster mixes and saturates their coverage,
   ``timeline_lanes.rasterize``) and their anomalies land on it (``timeline_anomalies``).

Grouping applies only when the unpinned shown ranks span at least two hosts (one host needs no header), so a
one-host filter (``host3``) and the focus set (all pinned) stay plain rank lanes. A rank is drawn once: a
pinned rank is not repeated in its host's group, whose lane says how many of its ranks are shown.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace

import numpy as np

from kat_gui.ui.run_model import Lane

HEADER, SUMMARY = "header", "summary"  # Lane.kind of an expanded host's header, of a collapsed host's row


@dataclass
class HostLane(Lane):
    """A host's row: its header (expanded; no tracks) or its summary (collapsed; its ranks' GPU tracks)."""

    host: str = ""
    ranks: tuple[int, ...] = ()  # the host's ranks in this group (shown below it, or summarised in it)
    total: int = 0  # the host's ranks in the run
    collapsed: bool = False
    implicated: bool = False


def pinned_order(focus: list[int], highlight: Iterable[int], known: Iterable[int]) -> list[int]:
    """The pinned ranks, top down: highlighted ranks in focus order, other highlighted ranks (e.g. a rank
    clicked in the overview), then the focus set's reference peers. Only ranks of the run."""
    known = set(known)
    hl = {int(r) for r in highlight} & known
    out = [r for r in focus if r in hl]
    out += sorted(hl - set(out))
    out += [r for r in focus if r not in out and r in known]
    return out


def host_label(host: str, n: int, total: int, collapsed: bool) -> str:
    count = f"{n} rank{'s' if n != 1 else ''}" if n == total else f"{n} of {total} ranks"
    return f"{'▸' if collapsed else '▾'} {host} · {count}"


def group_by_host(
    lanes: list[Lane],
    host_of: dict[int, str],
    host_order: list[str],
    pinned: list[int],
    is_collapsed: Callable[[str], bool],
    implicated: set[int],
) -> list[Lane]:
    """The timeline rows (see the module docstring). ``lanes``: ``RunModel.lanes`` (a rank's lanes adjacent);
    ``is_collapsed(host)``: whether that host shows as its summary lane."""
    by_rank: dict[int, list[Lane]] = {}
    for ln in lanes:
        by_rank.setdefault(ln.rank, []).append(ln)
    out: list[Lane] = []
    for r in pinned:
        for ln in by_rank.pop(r, []):
            host = host_of.get(r)
            if host and ln.kind == "rank":  # "rank 509 · host63 · H100 ...": the host before the GPU name
                head = f"rank {r}"
                rest = ln.label[len(head) :] if ln.label.startswith(head) else f" · {ln.label}"
                ln = replace(ln, label=f"{head} · {host}{rest}")
            out.append(ln)
    groups: dict[str, list[int]] = {}
    for r in by_rank:
        groups.setdefault(host_of.get(r, "?"), []).append(r)
    if len(groups) < 2:
        return out + [ln for r in by_rank for ln in by_rank[r]]
    hot = {host_of.get(r) for r in implicated}
    order = [h for h in host_order if h in groups]
    order += sorted(set(groups) - set(order))
    order = [h for h in order if h in hot] + [h for h in order if h not in hot]
    total: dict[str, int] = {}
    for h in host_of.values():
        total[h] = total.get(h, 0) + 1
    for h in order:
        ranks = groups[h]
        collapsed = is_collapsed(h)
        mine = [ln for r in ranks for ln in by_rank[r]]
        gpu = [ln.tracks for ln in mine if ln.kind != "host"] or [ln.tracks for ln in mine]
        tracks = np.unique(np.concatenate(gpu)).astype(np.int32) if collapsed else np.zeros(0, np.int32)
        n, tot = len(ranks), total.get(h, len(ranks))
        pinned_here = [r for r in pinned if host_of.get(r) == h]
        tip = f"{h}: {n} of its {tot} ranks" + (f" (pinned above: {pinned_here})" if pinned_here else "")
        tip += " — click the name to expand" if collapsed else " — click the name to collapse into one lane"
        out.append(
            HostLane(
                host_label(h, n, tot, collapsed),
                -1,
                tracks,
                SUMMARY if collapsed else HEADER,
                tip,
                host=h,
                ranks=tuple(ranks),
                total=tot,
                collapsed=collapsed,
                implicated=h in hot,
            )
        )
        if not collapsed:
            out += mine
    return out


def lane_hosts(lanes: list[Lane], host_of: dict[int, str]) -> list[str | None]:
    """Each row's host (a host lane's own, a rank's host; None when unknown)."""
    return [ln.host if isinstance(ln, HostLane) else host_of.get(ln.rank) for ln in lanes]


def host_blocks(hosts: list[str | None]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rows grouped into blocks of consecutive rows of one host (a row of unknown host is a block of its own).
    Returns (block of each row, first row of each block, rows in each block)."""
    n = len(hosts)
    if not n:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.int64)
    new = np.ones(n, bool)
    for i in range(1, n):
        new[i] = hosts[i] is None or hosts[i] != hosts[i - 1]
    block = np.cumsum(new) - 1
    first = np.flatnonzero(new)
    size = np.diff(np.append(first, n))
    return block, first, size
