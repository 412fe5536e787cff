"""Large jobs (64 to 1,024 ranks) on one screen, headless: hosts of ranks, the focus set (implicated ranks and
a few reference peers), the rank filter's text syntax, and the rank x step matrix of the overview heatmap with
its colour scales (slowdown vs peers, wait share; the anomaly table for stores analysed before those were
stored).

Everything here reads only what the run model already holds (findings, the anomaly table, ``detect/meta``,
``detect/collectives``, ``detect/rank_step``, the topology graph; read on the loader's worker by
``RunModel.preload``): nothing touches the file, so it is safe on the GUI thread.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np

from kat_gui.ui.run_model import RunModel

# Above this many ranks a run is "large": the overview heatmap is shown and the lanes start on the focus set.
LARGE_RUN_RANKS = 48
ROOT, SYMPTOM = 1, 2


def hosts_of(model: RunModel) -> dict[str, list[int]]:
    """host name -> its ranks (sorted), in host order: from the topology graph's GPUs, else ``detect/meta``'s
    ``hosts`` (lists of ranks), else one host per 8 ranks is *not* guessed: every rank on host "?". Computed
    once per model (do not modify the result)."""
    return model.cached("hosts", lambda: _hosts_of(model))


def _hosts_of(model: RunModel) -> dict[str, list[int]]:
    ranks = sorted(model.ranks)
    out: dict[str, list[int]] = {}
    g = model.graph
    if g is not None:
        order = list(g.graph.get("hosts") or [])
        by: dict[str, list[int]] = {}
        for _n, d in g.nodes(data=True):
            if d.get("kind") == "gpu" and d.get("rank") is not None and d.get("host") is not None:
                by.setdefault(str(d["host"]), []).append(int(d["rank"]))
        for h in order + sorted(set(by) - set(order), key=_natural):
            if h in by:
                out[h] = sorted(by[h])
    if not out:
        meta_hosts = model.detect_meta.get("hosts") if isinstance(model.detect_meta, dict) else None
        if isinstance(meta_hosts, list):
            for i, rs in enumerate(meta_hosts):
                if isinstance(rs, list) and rs:
                    out[f"host{i}"] = sorted(int(r) for r in rs)
    placed = {r for rs in out.values() for r in rs}
    rest = [r for r in ranks if r not in placed]
    if rest:
        out.setdefault("?", []).extend(rest)
    return out


def _natural(s: str) -> tuple:
    return tuple(int(t) if t.isdigit() else t for t in re.split(r"(\d+)", s))


def host_of_rank(model: RunModel) -> dict[int, str]:
    return model.cached("host_of_rank", lambda: {r: h for h, rs in hosts_of(model).items() for r in rs})


def implicated_ranks(model: RunModel) -> list[int]:
    """Ranks named by any finding, most confident finding first."""
    out: list[int] = []
    for f in model.findings:
        for r in f.get("ranks", []) or []:
            if int(r) not in out:
                out.append(int(r))
    return out


def waiting_ranks(model: RunModel) -> list[int]:
    """Ranks with symptom anomalies (kernels that waited for a root elsewhere)."""
    a = model.anomalies
    if not len(a["rank"]):
        return []
    return sorted(int(r) for r in np.unique(a["rank"][a["role"] == SYMPTOM]))


# At most this many implicated ranks get a lane of their own in the focus set (and pinned at the top): a finding
# can name hundreds of ranks (a fabric-wide NIC problem); the overview shows all of them, the lanes a readable few.
FOCUS_MAX_IMPLICATED = 8


def focus_ranks(model: RunModel, peers: int = 4) -> list[int]:
    """Implicated ranks first (the first ``FOCUS_MAX_IMPLICATED``, most confident finding first), then ``peers``
    reference ranks: one from each implicated rank's own host (if any), the rest spread evenly over the other
    ranks. Empty when nothing is implicated."""

    def compute() -> list[int]:
        culprits = implicated_ranks(model)[:FOCUS_MAX_IMPLICATED]
        return with_peers(model, culprits, peers) if culprits else []

    # keyed on the findings list too: a model whose findings are replaced gets a new focus set
    return list(model.cached(f"focus{peers}:{id(model.findings)}", compute))


def with_peers(model: RunModel, ranks: list[int], peers: int = 4) -> list[int]:
    """``ranks``, then ``peers`` reference ranks: one from each of their hosts (if any), the rest spread evenly
    over the other ranks."""
    host = host_of_rank(model)
    chosen: list[int] = list(ranks)
    for c in ranks:
        mates = [r for r in sorted(model.ranks) if host.get(r) == host.get(c) and r not in chosen]
        if mates and len(chosen) - len(ranks) < peers:
            chosen.append(mates[0])
    others = [r for r in sorted(model.ranks) if r not in chosen]
    need = max(0, peers - (len(chosen) - len(ranks)))
    if others and need:
        idx = np.unique(np.linspace(0, len(others) - 1, need).round().astype(int))
        chosen += [others[i] for i in idx]
    return chosen[: len(ranks) + peers]


def cell_ranks(model: RunModel, rank: int) -> list[int]:
    """The lanes for a click on ``rank``'s heatmap cell: the rank, and for reference the focus set (the
    implicated ranks and their peers), or, when nothing is implicated, a few peers of the rank itself."""
    focus = focus_ranks(model)
    return [rank, *(r for r in focus if r != rank)] if focus else with_peers(model, [rank])


def parse_rank_filter(text: str, model: RunModel) -> set[int] | None:
    """The rank filter's syntax: comma/space separated numbers (``509``), ranges (``500-511``), host names
    (``host63``), ``implicated``, ``waiting``, ``focus``; empty or ``all`` = no filter (None).
    Raises ValueError naming the first term it does not understand."""
    text = text.strip()
    if not text or text.lower() == "all":
        return None
    hosts = hosts_of(model)
    known = set(model.ranks)
    out: set[int] = set()
    for term in re.split(r"[,\s]+", text):
        if not term:
            continue
        low = term.lower()
        if re.fullmatch(r"\d+", term):
            out.add(int(term))
        elif m := re.fullmatch(r"(\d+)\s*[-:]\s*(\d+)", term):
            a, b = sorted((int(m.group(1)), int(m.group(2))))
            out |= set(range(a, b + 1))
        elif low == "implicated":
            out |= set(implicated_ranks(model))
        elif low == "waiting":
            out |= set(waiting_ranks(model))
        elif low == "focus":
            out |= set(focus_ranks(model))
        elif term in hosts:
            out |= set(hosts[term])
        elif re.fullmatch(r"h\d+", low) and f"host{low[1:]}" in hosts:
            out |= set(hosts[f"host{low[1:]}"])
        else:
            raise ValueError(f"not a rank, range, host, 'implicated' or 'waiting': {term!r}")
    out &= known
    if not out:
        raise ValueError(f"no rank of this run matches {text!r}")
    return out


# ---------------------------------------------------------------------------------------------- heatmap


@dataclass
class RankStepMatrix:
    """One row per rank (grouped by host), one column per step. ``root``: the largest root-anomaly score in
    the cell (noise units, 0 = none); ``symptom``: number of symptom kernels in the cell. ``edges_ns``: the
    column boundaries (len = columns + 1), ``by_steps`` whether columns are the detector's steps (else equal
    time bins). ``slowdown`` and ``wait_share`` (float32, NaN = unknown) are the stored per-(rank, step)
    signals (``detect/rank_step``; None for a store analysed before they were stored) and ``spans_ns`` each
    step's first start and last end ([columns, 2], with them)."""

    ranks: np.ndarray  # row -> rank
    hosts: list[tuple[str, int, int]]  # (host, first row, end row)
    edges_ns: np.ndarray
    step_numbers: np.ndarray  # column -> step number (or bin index)
    by_steps: bool
    root: np.ndarray  # float32 [rows, cols]
    symptom: np.ndarray  # int32 [rows, cols]
    slowdown: np.ndarray | None = None  # float32 [rows, cols]: busy time / peers' - 1
    wait_share: np.ndarray | None = None  # float32 [rows, cols]: share of the step waited in collectives
    spans_ns: np.ndarray | None = None  # int64 [cols, 2]
    cache: dict = field(default_factory=dict, repr=False, compare=False)  # heat_scale's per mode; row_of's

    def row_of(self, rank: int) -> int | None:
        if "rows" not in self.cache:  # rank -> row, built once (asked per implicated rank and per paint)
            self.cache["rows"] = {int(r): i for i, r in reversed(list(enumerate(self.ranks.tolist())))}
        return self.cache["rows"].get(int(rank))

    def window(self, col: int) -> tuple[int, int]:
        """(start, end) ns of column ``col``: the step's first start and last end when stored, else its
        column boundaries."""
        if self.spans_ns is not None and self.spans_ns[col, 1] > self.spans_ns[col, 0]:
            return int(self.spans_ns[col, 0]), int(self.spans_ns[col, 1])
        return int(self.edges_ns[col]), int(self.edges_ns[col + 1])

    def modes(self) -> list[str]:
        """The colourings this matrix has data for, the default first (:data:`HEAT_MODES`)."""
        return ["slowdown", "wait"] if self.slowdown is not None else ["anomalies"]


def _column_edges(model: RunModel, bins: int = 100) -> tuple[np.ndarray, np.ndarray, bool]:
    """Column boundaries: one column per detector step (a step ends where its last collective ends), from
    ``detect/collectives``; else ``bins`` equal time bins."""
    model.collective_instance(0, 0)  # loads detect/collectives once (preloaded on the loader's worker)
    c = getattr(model, "_collectives", None) or {}
    t0, t1 = int(model.t0_ns), int(model.t1_ns)
    if c and "step" in c and len(c["step"]):
        step = np.asarray(c["step"], np.int64)
        end = np.asarray(c["end_ns"], np.int64)
        uniq = np.unique(step)
        ends = np.array([end[step == s].max() for s in uniq], np.int64)
        order = np.argsort(ends)
        uniq, ends = uniq[order], ends[order]
        if len(uniq) >= 2:
            edges = np.concatenate([[t0], ends[:-1], [max(t1, int(ends[-1]))]]).astype(np.int64)
            return edges, uniq, True
    edges = np.linspace(t0, max(t1, t0 + 1), bins + 1).round().astype(np.int64)
    return edges, np.arange(bins), False


def _stored_columns(model: RunModel, ranks: np.ndarray):
    """(edges, step numbers, slowdown, wait share, spans) from the stored ``detect/rank_step``, rows in the
    order of ``ranks`` (NaN for a rank it lacks); None when the store has none. The edges (for the anomaly
    table's cells) are the steps' first starts, made non-decreasing, then the run's end."""
    rs = model.rank_step()
    if rs is None or not len(rs.steps) or not len(ranks):
        return None
    t0, t1 = int(model.t0_ns), int(model.t1_ns)
    starts = np.maximum.accumulate(np.where(rs.step_end_ns > rs.step_start_ns, rs.step_start_ns, t0))
    edges = np.concatenate([[min(t0, int(starts[0]))], starts[1:], [max(t1, int(rs.step_end_ns.max()) + 1)]])
    pos = np.searchsorted(rs.ranks, ranks)
    hit = (pos < len(rs.ranks)) & (rs.ranks[np.minimum(pos, len(rs.ranks) - 1)] == ranks)
    mats = []
    for a in (rs.slowdown, rs.wait_share):
        out = np.full((len(ranks), len(rs.steps)), np.nan, np.float32)
        out[hit] = a[pos[hit]]
        mats.append(out)
    spans = np.stack([rs.step_start_ns, rs.step_end_ns], axis=1).astype(np.int64)
    return edges.astype(np.int64), rs.steps, mats[0], mats[1], spans


def rank_step_matrix(model: RunModel) -> RankStepMatrix:
    """The overview heatmap's data from the stored results: the ``detect/rank_step`` signals and the anomaly
    table (O(anomalies + cells), no file read: the model holds them)."""
    hosts = hosts_of(model)
    rows: list[int] = []
    spans: list[tuple[str, int, int]] = []
    for h, rs in hosts.items():
        spans.append((h, len(rows), len(rows) + len(rs)))
        rows += rs
    ranks = np.asarray(rows, np.int64)
    stored = _stored_columns(model, ranks)
    slowdown = wait = step_spans = None
    if stored is not None:
        edges, numbers, slowdown, wait, step_spans = stored
        by_steps = True
    else:
        edges, numbers, by_steps = _column_edges(model)
    ncol = len(edges) - 1
    root = np.zeros((len(ranks), ncol), np.float32)
    symptom = np.zeros((len(ranks), ncol), np.int32)
    a = model.anomalies
    if len(a["rank"]) and len(ranks):
        lut = np.full(int(max(ranks.max(), a["rank"].max())) + 1, -1, np.int64)
        lut[ranks] = np.arange(len(ranks))
        ar = np.asarray(a["rank"], np.int64)
        row = np.where((ar >= 0) & (ar < len(lut)), lut[np.clip(ar, 0, len(lut) - 1)], -1)
        col = np.clip(
            np.searchsorted(edges, np.asarray(a["start_ns"], np.int64), side="right") - 1, 0, ncol - 1
        )
        ok = row >= 0
        role = np.asarray(a["role"])
        score = np.nan_to_num(np.abs(np.asarray(a["score"], np.float32)))
        r_ok = ok & (role == ROOT)
        np.maximum.at(root, (row[r_ok], col[r_ok]), np.maximum(score[r_ok], 1e-3))
        s_ok = ok & (role == SYMPTOM)
        np.add.at(symptom, (row[s_ok], col[s_ok]), 1)
    return RankStepMatrix(ranks, spans, edges, numbers, by_steps, root, symptom, slowdown, wait, step_spans)


# ---------------------------------------------------------------------------------------------- colours

HEAT_MODES = {
    "slowdown": "slowdown vs peers",
    "wait": "wait share",
    "anomalies": "anomalies",
}
NO_DATA_RGB = (224, 224, 224)  # a cell without a value (the rank did not run in that step, or no peer)
# Colour stops (position in [0, 1] along the lookup table, RGB).
_DIVERGING = ((0.0, (69, 117, 180)), (0.25, (171, 217, 233)), (0.5, (255, 255, 255)),
              (0.75, (253, 174, 97)), (1.0, (178, 24, 43)))  # fmt: skip
_SEQUENTIAL = ((0.0, (255, 255, 255)), (0.5, (158, 154, 200)), (1.0, (63, 0, 125)))
_NICE = (0.05, 0.1, 0.2, 0.25, 0.5, 1.0, 2.0, 5.0)


@dataclass
class HeatScale:
    """How a mode maps values to colours: values ``lo`` .. ``hi`` spread over ``lut`` (uint8 [256, 3]),
    clipped at both ends; NaN is :data:`NO_DATA_RGB`."""

    mode: str
    lo: float
    hi: float
    lut: np.ndarray


def _lut(stops) -> np.ndarray:
    x = np.linspace(0.0, 1.0, 256)
    pos = [p for p, _c in stops]
    return (
        np.stack([np.interp(x, pos, [c[k] for _p, c in stops]) for k in range(3)], 1).round().astype(np.uint8)
    )


def _nice_ceil(x: float) -> float:
    return next((v for v in _NICE if v >= x - 1e-9), _NICE[-1])


def _high_value(v: np.ndarray, floor: float) -> float:
    """A round upper end of the colour scale: the 99.9th percentile of the finite ``v`` (so that a culprit's
    few cells saturate rather than set the scale), at least ``floor``."""
    f = v[np.isfinite(v)]
    if not len(f):
        return floor
    k = min(len(f) - 1, int(0.999 * len(f)))
    return _nice_ceil(max(float(np.partition(f, k)[k]), floor))


def heat_scale(m: RankStepMatrix, mode: str) -> HeatScale | None:
    """The colour scale of ``mode`` on this matrix ("slowdown": diverging, blue = less busy than the peers,
    red = more, symmetric around 0, at least +-10 %; "wait": white to purple from 0 to at least 5 %); None for
    "anomalies" (fixed colours) or a mode the matrix has no data for. Computed once per matrix and mode (a
    percentile of every cell: 15-30 ms at 1,024 x 1,400, and the legend repaints it)."""
    if mode not in m.cache:
        m.cache[mode] = _heat_scale(m, mode)
    return m.cache[mode]


def _heat_scale(m: RankStepMatrix, mode: str) -> HeatScale | None:
    if mode == "slowdown" and m.slowdown is not None:
        top = _high_value(np.abs(m.slowdown.ravel()), 0.1)
        return HeatScale(mode, -top, top, _lut(_DIVERGING))
    if mode == "wait" and m.wait_share is not None:
        return HeatScale(mode, 0.0, min(_high_value(m.wait_share.ravel(), 0.05), 1.0), _lut(_SEQUENTIAL))
    return None


def heat_rgba(m: RankStepMatrix, mode: str | None = None) -> np.ndarray:
    """uint8 [rows, cols, 4] of the overview in ``mode`` (default: the matrix's first :meth:`modes`):
    "slowdown" and "wait" through :func:`heat_scale`'s lookup table (one gather, no per-cell Python);
    "anomalies": white = nothing; light amber = symptoms only (waited); white -> red with the root score
    (saturating at the 95th percentile of the root cells)."""
    mode = mode or m.modes()[0]
    sc = heat_scale(m, mode)
    rows, cols = m.root.shape
    img = np.full((rows, cols, 4), 255, np.uint8)
    if sc is not None:
        v = m.slowdown if mode == "slowdown" else m.wait_share
        finite = np.isfinite(v)
        idx = np.clip((np.nan_to_num(v) - sc.lo) * (255.0 / (sc.hi - sc.lo)) + 0.5, 0, 255).astype(np.uint8)
        img[..., :3] = sc.lut[idx]
        img[~finite, :3] = NO_DATA_RGB
        return img
    sym = (m.symptom > 0) & (m.root <= 0)
    img[sym, :3] = (252, 240, 214)  # light amber: waited on a root elsewhere
    hot = m.root > 0
    if hot.any():
        top = float(np.percentile(m.root[hot], 95)) or 1.0
        t = np.clip(m.root[hot] / top, 0.0, 1.0)
        t = 0.35 + 0.65 * t  # even a weak root is clearly red-ish, never as light as a symptom
        base = np.array([255.0, 255.0, 255.0])
        red = np.array([183.0, 28.0, 28.0])
        img[hot, :3] = (base + (red - base) * t[:, None]).round().astype(np.uint8)
    return img


def prepare_overview(model: RunModel) -> RunModel:
    """Compute, on the worker thread that loads a large run, the hosts, the focus set, the overview's matrix and
    its first image, which its window builds first (``RunModel.derived["heat_matrix"]``, ``["heat_rgba"]``: 40 + 24 ms at 1,024
    ranks x 1,400 steps, stalls on the GUI thread). Returns the model."""
    if len(model.ranks) > LARGE_RUN_RANKS:
        focus_ranks(model)  # and the hosts it reads
        m = rank_step_matrix(model)
        model.derived["heat_matrix"] = m
        mode = m.modes()[0]
        model.derived["heat_rgba"] = (m, mode, np.ascontiguousarray(heat_rgba(m, mode)))
    return model
