"""A static timeline overview drawn without Qt: one lane per rank, GPU busy shading from the store's coarse
level-of-detail summaries, anomalies as red ticks, finding windows and annotations as bands. Hand-written SVG,
every text escaped, no external reference (no fonts, no links)."""

from __future__ import annotations

from collections.abc import Callable
from html import escape

import numpy as np

from kat_gui.events import TrackKind

WIDTH_PX = 960
LABEL_PX = 70
LANE_PX = 22
TOP_PX = 26


def _columns(start: np.ndarray, end: np.ndarray, t0: int, ns_per_px: float, n_px: int) -> np.ndarray:
    """Busy fraction per pixel column of intervals (overlaps summed, clipped to 1)."""
    cover = np.zeros(n_px + 1)
    if not len(start):
        return cover[:n_px]
    a = np.clip((start - t0) / ns_per_px, 0, n_px)
    b = np.clip((end - t0) / ns_per_px, 0, n_px)
    ia, ib = np.floor(a).astype(np.int64), np.floor(b).astype(np.int64)
    same = ia == ib
    # Intervals inside one column add their length; longer ones fill whole columns between their ends.
    np.add.at(cover, ia[same], (b - a)[same])
    lo, hi = ~same, ~same
    np.add.at(cover, ia[lo], (ia[lo] + 1 - a[lo]))
    np.add.at(cover, ib[hi], (b[hi] - ib[hi]))
    diff = np.zeros(n_px + 2)
    np.add.at(diff, ia[lo] + 1, 1.0)
    np.add.at(diff, ib[hi], -1.0)
    cover[: n_px + 1] += np.cumsum(diff)[: n_px + 1]
    return np.clip(cover[:n_px], 0.0, 1.0)


def _runs(px: np.ndarray) -> list[tuple[int, int]]:
    """Consecutive pixel columns merged into (first, last) runs."""
    if not len(px):
        return []
    brk = np.flatnonzero(np.diff(px) > 1)
    starts = np.r_[px[0], px[brk + 1]]
    ends = np.r_[px[brk], px[-1]]
    return list(zip(starts.tolist(), ends.tolist(), strict=True))


def timeline_svg(
    store,
    anomalies: dict[str, np.ndarray] | None,
    findings: list[dict],
    notes: list,
    text: Callable[[object], str] = str,
    standalone: bool = True,
) -> str:
    """SVG text of the overview. ``text`` maps every label before escaping (the report's scrubber).

    Assumes the store's GPU-stream tracks carry the ranks; host threads are not drawn (the overview answers
    "which GPU was busy or anomalous when"). ``standalone`` adds the SVG namespace declaration a separate
    ``.svg`` file needs (a namespace name, never fetched); inline HTML SVG does without it.
    """
    t0, t1 = store.time_span()
    span = max(int(t1) - int(t0), 1)
    plot_px = WIDTH_PX - LABEL_PX - 10
    ns_per_px = span / plot_px
    ranks = sorted({t.rank for t in store.tracks if t.kind == TrackKind.GPU_STREAM})
    height = TOP_PX + LANE_PX * max(len(ranks), 1) + 30
    ns = ' xmlns="http://www.w3.org/2000/svg"' if standalone else ""
    out = [
        f'<svg{ns} width="{WIDTH_PX if standalone else "100%"}" viewBox="0 0 {WIDTH_PX} {height}" '
        f'font-family="sans-serif" font-size="11" role="img">',
        "<title>Timeline overview: GPU busy time per rank, anomalies in red</title>",
        f'<rect x="0" y="0" width="{WIDTH_PX}" height="{height}" fill="#ffffff"/>',
    ]

    def x_of(t: float) -> float:
        return LABEL_PX + (float(t) - t0) / ns_per_px

    # Finding windows: pale bands behind the lanes.
    for f in findings[:8]:
        s, e = f.get("start_ns") or 0, f.get("end_ns") or 0
        if e > s:
            xa, xb = x_of(max(s, t0)), x_of(min(e, t1))
            out.append(
                f'<rect x="{xa:.1f}" y="{TOP_PX - 4}" width="{max(xb - xa, 1):.1f}" '
                f'height="{LANE_PX * len(ranks) + 4}" fill="#fde2e2" opacity="0.6">'
                f"<title>{escape(text(f.get('summary', '')))}</title></rect>"
            )
    by_rank: dict[int, list[int]] = {}
    for t in store.tracks:
        if t.kind == TrackKind.GPU_STREAM:
            by_rank.setdefault(t.rank, []).append(t.id)
    for lane, rank in enumerate(ranks):
        y = TOP_PX + lane * LANE_PX
        out.append(f'<text x="4" y="{y + 15}" fill="#333">{escape(text(f"rank {rank}"))}</text>')
        out.append(
            f'<rect x="{LABEL_PX}" y="{y + 2}" width="{plot_px}" height="{LANE_PX - 4}" fill="#f2f2f2"/>'
        )
        wins = store.window(by_rank[rank], t0, t1 + 1, int(ns_per_px))
        # Busy when any stream of the GPU is busy (compute and NCCL streams overlap by design).
        frac = np.zeros(plot_px)
        for w in wins.values():
            frac = np.maximum(frac, _columns(w.start_ns, w.end_ns, t0, ns_per_px, plot_px))
        level = np.ceil(frac * 4).astype(np.int64)  # 0 (idle) .. 4 (busy): few rects, readable shades
        shades = ("", "#c6dbef", "#9ecae1", "#4292c6", "#08519c")
        brk = np.flatnonzero(np.r_[True, level[1:] != level[:-1]])
        ends = np.r_[brk[1:], plot_px]
        for a, b in zip(brk.tolist(), ends.tolist(), strict=True):
            lv = int(level[a])
            if lv:
                out.append(
                    f'<rect x="{LABEL_PX + a}" y="{y + 3}" width="{b - a}" height="{LANE_PX - 6}" '
                    f'fill="{shades[lv]}"/>'
                )
        if anomalies is not None and len(anomalies.get("rank", [])):
            # Roots (the instance itself is abnormal) in red across the lane; symptoms (waited on a root
            # elsewhere) as a thin orange strip, so a late rank's victims do not drown the culprit.
            sel = anomalies["rank"] == rank
            role = anomalies["role"][sel] if "role" in anomalies else np.ones(int(sel.sum()), np.uint8)
            xs = np.clip(((anomalies["start_ns"][sel] - t0) / ns_per_px).astype(np.int64), 0, plot_px - 1)
            for is_root, colour, y0, hgt in (
                (False, "#ff9f40", y + 1, 4),
                (True, "#d62728", y + 1, LANE_PX - 2),
            ):
                px = np.unique(xs[(role == 1) == is_root])
                for a, b in _runs(px):
                    out.append(
                        f'<rect x="{LABEL_PX + a}" y="{y0}" width="{b - a + 1}" height="{hgt}" fill="{colour}"/>'
                    )
    # Annotations: numbered markers along the top (the report lists the notes by number).
    for i, a in enumerate(notes, 1):
        if a.start_ns is None:
            continue
        xa = x_of(min(max(a.start_ns, t0), t1))
        xb = x_of(min(max(a.end_ns if a.end_ns is not None else a.start_ns, t0), t1))
        out.append(
            f'<rect x="{xa:.1f}" y="{TOP_PX - 14}" width="{max(xb - xa, 2):.1f}" height="8" fill="#f0b400">'
            f"<title>{escape(text(a.text))}</title></rect>"
        )
        out.append(f'<text x="{xa + 2:.1f}" y="{TOP_PX - 16}" fill="#7a5a00">{i}</text>')
    # Time axis: run-relative milliseconds (absolute epochs are unreadable).
    ya = TOP_PX + LANE_PX * len(ranks) + 14
    for k in range(6):
        tx = LABEL_PX + plot_px * k / 5
        ms = span * k / 5 / 1e6
        anchor = "start" if k == 0 else ("end" if k == 5 else "middle")
        out.append(f'<text x="{tx:.1f}" y="{ya}" fill="#555" text-anchor="{anchor}">{ms:.1f} ms</text>')
    out.append("</svg>")
    return "\n".join(out)
