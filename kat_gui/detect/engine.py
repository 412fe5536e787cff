"""The detector: alignment -> peer and history signals -> persistent faults -> component -> anomaly rows.

Read ``docs/detection.md`` for the method; the thresholds are the fields of :class:`Params`.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np

from kat_gui.detect import classify as C
from kat_gui.detect.align import Collectives, Steps, assign_steps, launch_times, match_collectives
from kat_gui.detect.frame import RunFrame
from kat_gui.detect.history import joint_windows, link_shifts, step_covariates
from kat_gui.detect.signals import CellSignal, cell_signal, peer_match
from kat_gui.detect.stats import runs, segments, small_unique
from kat_gui.events import COMPONENTS
from kat_gui.progress import Progress

DETECTOR_VERSION = "kat-sync/2"


@dataclass(frozen=True)
class Params:
    """Detector thresholds. None is tuned to a scenario; each has a reason.

    - ``z_cell``: a (rank, step) cell is abnormal when it sits this many robust standard deviations (1.4826
      MAD of all cells) above the per-step peer median. 4 keeps a Gaussian cell's false-flag chance ~3e-5.
    - ``min_slowdown``: and at least this relative slowdown (3 %): below it, run-to-run GPU variation and
      silicon spread dominate, and nobody acts on it.
    - ``min_launch_slowdown``: host launch intervals must be this much (10 %) longer than peers': host
      timing (Python, frequency scaling) varies far more than kernel timing between healthy hosts.
    - ``min_late_share``: a rank must make its peers wait at least this share of a step (2 %) to count as late.
    - ``min_steps``: a fault must persist over this many abnormal steps (merged across ``merge_gap`` normal
      ones): a one-step blip is noise or a transient the user cannot act on. Runs with fewer steps than this
      need every step abnormal.
    - ``sigma_floor``: lower bound of the noise scale of log ratios (0.5 %), for exact synthetic inputs.
    - ``hbm_ratio``: memory-bound kernels must slow this many times more than compute-bound ones to call
      HBM rather than SM compute (clock throttling slows both, GEMMs more).
    - ``warmup_steps``: history-based findings confined to the first steps are warm-up, not faults.
    - ``short_run_factor``: runs with fewer than ``min_steps`` steps have no history; a cell there must be
      this many times the minimum effect (and ``z_link``) to count.
    - ``straggler_majority`` / ``straggler_p`` / ``straggler_wait_share``: a rank that arrives last (skew
      above the transfer time) at more than this share of its collective instances, at a count this
      unlikely for a rank drawn at random (binomial, 1 / group size), and whose lateness costs its peers at
      least this share of the run's step time (each peer's wait, averaged over peers) is a straggler.
      Healthy decode skew moves from rank to rank; a straggler is the same rank, costly, most of the time.
    """

    z_cell: float = 4.0
    min_slowdown: float = 0.03
    min_launch_slowdown: float = 0.03
    min_late_share: float = 0.02
    min_steps: int = 3
    merge_gap: int = 2
    sigma_floor: float = 0.005
    hbm_ratio: float = 1.5
    warmup_steps: int = 3
    z_link: float = 7.0
    short_run_factor: float = 3.0
    straggler_majority: float = 0.5
    straggler_p: float = 0.005
    straggler_wait_share: float = 0.15


@dataclass
class DetectResult:
    """What detection found. ``findings`` follow /tmp results contract (names decoded in ``to_contract_json``);
    ``anomalies`` are store-column arrays; ``meta`` is stored as ``detect/meta``."""

    run: str
    findings: list[dict]
    anomalies: dict[str, np.ndarray]
    meta: dict
    collectives: Collectives | None = None
    signals: dict[str, CellSignal] = field(default_factory=dict)
    steps: np.ndarray | None = None  # the step numbers of the signal columns


ANOMALY_COLUMNS = {
    "track": np.int32,
    "index": np.int64,
    "rank": np.int32,
    "device": np.int32,
    "stream": np.int64,
    "name": np.int32,
    "start_ns": np.int64,
    "end_ns": np.int64,
    "role": np.uint8,
    "component": np.uint8,
    "score": np.float32,
    "finding": np.int32,
}
ROOT, SYMPTOM = 1, 2


def _comp(name: str) -> int:
    return COMPONENTS.index(name)


class _Analysis:
    """Holds the intermediate arrays of one detection pass."""

    def __init__(self, fr: RunFrame, params: Params):
        self.fr = fr
        self.p = params
        g = fr.gpu
        self.launch_ns = launch_times(fr)
        self.steps: Steps = assign_steps(fr, self.launch_ns)
        self.step_values = small_unique(self.steps.step[self.steps.step >= 0])
        self.S = max(len(self.step_values), 1)
        if not len(self.step_values):
            self.step_values = np.zeros(1, np.int64)
        st = self.steps.step
        self.step_idx = np.where(st >= 0, np.searchsorted(self.step_values, st), -1)
        self.R = len(fr.ranks)
        self.rank_idx = np.searchsorted(fr.ranks, g["rank"])
        self.coll: Collectives = match_collectives(fr, self.steps)
        self.coll_step_idx = np.where(
            self.coll.step >= 0, np.searchsorted(self.step_values, self.coll.step), -1
        )
        self.step_len_ns = self._step_lengths()

    def _step_lengths(self) -> np.ndarray:
        """Median across ranks of each step's GPU span (first start to last end)."""
        g = self.fr.gpu
        ok = self.step_idx >= 0
        cell = self.rank_idx[ok].astype(np.int64) * self.S + self.step_idx[ok]
        n = self.R * self.S
        lo = np.full(n, np.iinfo(np.int64).max)
        hi = np.full(n, np.iinfo(np.int64).min)
        order = np.argsort(cell, kind="stable")
        c_s = cell[order]
        first, _ = segments(c_s)
        if len(first):
            lo[c_s[first]] = np.minimum.reduceat(g["start_ns"][ok][order], first)
            hi[c_s[first]] = np.maximum.reduceat(g["end_ns"][ok][order], first)
        span = np.where(hi > lo, hi - lo, np.nan).astype(np.float64).reshape(self.R, self.S)
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            med = np.nanmedian(span, axis=0)
        return np.where(np.isfinite(med) & (med > 0), med, 1.0)

    # ------------------------------------------------------------------ signals
    def kernel_signals(self) -> dict[str, CellSignal]:
        g = self.fr.gpu
        p = self.p
        out: dict[str, CellSignal] = {}
        dur = (g["end_ns"] - g["start_ns"]).astype(np.float64)
        self.peer: dict[str, object] = {}
        for label, classes in (("compute", (C.COMPUTE,)), ("memory", (C.MEMORY,)), ("copy", (C.COPY_HOST,))):
            rows = np.flatnonzero((g["cls"] == classes[0]) & (self.step_idx >= 0))
            pm = peer_match(
                rows, self.step_idx[rows], g["name"][rows], self.rank_idx[rows], dur[rows], self.R
            )
            self.peer[label] = pm
            out[label] = cell_signal(
                label, self.rank_idx[rows], self.step_idx[rows], pm.log_ratio, self.R, self.S, p.sigma_floor
            )
        # Host launch pacing: interval between a rank's consecutive launches, matched like kernels.
        has = self.launch_ns >= 0
        rows = np.flatnonzero(has & (self.step_idx >= 0))
        if len(rows) and self.R >= 2:
            ri_, lt_ = self.rank_idx[rows], self.launch_ns[rows]
            in_order = (
                not (np.diff(ri_) < 0).any() and not ((np.diff(lt_) < 0) & (np.diff(ri_) == 0)).any()
            )  # one stream per rank: rows are already in launch order, no sort
            order = np.arange(len(rows)) if in_order else np.lexsort((lt_, ri_))
            r_o = rows[order]
            t = self.launch_ns[r_o]
            same = np.r_[False, self.rank_idx[r_o][1:] == self.rank_idx[r_o][:-1]]
            interval = np.where(same, np.r_[0, np.diff(t)], np.nan)
            keep = np.isfinite(interval)
            r_k = r_o[keep]
            iv = interval[keep]
            if in_order:
                r_k_sorted, iv_sorted = r_k, iv
            else:
                r_k_sorted = np.sort(r_k)  # back to (track, start) order for the ordinal in peer_match
                iv_sorted = iv[np.argsort(r_k, kind="stable")]
            pm = peer_match(
                r_k_sorted,
                self.step_idx[r_k_sorted],
                g["name"][r_k_sorted],
                self.rank_idx[r_k_sorted],
                iv_sorted,
                self.R,
            )
            self.peer["launch"] = pm
            self.launch_interval = (r_k_sorted, iv_sorted)
            out["launch"] = cell_signal(
                "launch",
                self.rank_idx[r_k_sorted],
                self.step_idx[r_k_sorted],
                pm.log_ratio,
                self.R,
                self.S,
                p.sigma_floor,
            )
        # Collective arrival: the waiting a rank imposes on the median peer, as a share of the step.
        co = self.coll
        if co.n:
            m_step = self.coll_step_idx[co.inst]
            ok = m_step >= 0
            share = np.clip(co.late_ns, 0, None).astype(np.float64) / self.step_len_ns[np.maximum(m_step, 0)]
            ridx = np.searchsorted(self.fr.ranks, co.rank)
            out["late"] = cell_signal(
                "late",
                ridx[ok],
                m_step[ok],
                share[ok],
                self.R,
                self.S,
                p.sigma_floor * 0.0 + 1e-4,
                reduce="sum",
            )
        return out

    def link_shifts(self) -> list:
        """Per collective (group, name): the best sustained transfer-time shift (``history.py``)."""
        co = self.coll
        g = self.fr.gpu
        first, _ = segments(co.inst)
        rows0 = co.row[first]
        name = g["name"][rows0].astype(np.int64)
        pair = np.stack([co.group, name], axis=1)
        keys, kid = np.unique(pair, axis=0, return_inverse=True)
        nel = g["msg_nelems"][rows0].astype(np.float64)
        log_msg = np.where(nel > 0, np.log(np.maximum(nel, 1.0)), np.nan)
        kern = np.flatnonzero(np.isin(g["cls"], (C.COMPUTE, C.MEMORY)) & (self.step_idx >= 0))
        dur = np.maximum(g["end_ns"][kern] - g["start_ns"][kern], 1).astype(np.float64)
        cp = np.flatnonzero(g["cls"] == C.COPY_HOST)
        cov = step_covariates(
            self.step_idx[kern],
            self.S,
            np.log(dur),
            g["name"][kern],
            g["cls"][kern],
            self.rank_idx[kern],
            self.R,
            self.step_idx[cp],
            self.rank_idx[cp],
            g["bytes"][cp],
        )
        return link_shifts(
            keys[:, 0],
            keys[:, 1],
            kid.ravel(),
            self.coll_step_idx,
            np.log(np.maximum(co.transfer_ns.astype(np.float64), 1.0)),
            log_msg,
            cov,
            self.S,
            self.p.min_steps,
            self.p.sigma_floor,
            self.p.warmup_steps,
        )


def _flag_runs(flags: np.ndarray, p: Params, n_steps: int) -> list[tuple[int, int, int]]:
    need = min(p.min_steps, n_steps)
    return [r for r in runs(flags, p.merge_gap) if r[2] >= need]


def _confidence(z: float, n_flagged: int, p: Params) -> float:
    """Grows with the margin over the threshold and with persistence; 0.5 at the bare minimum."""
    margin = max(z - p.z_cell, 0.0) / p.z_cell
    persist = min(n_flagged / (3.0 * p.min_steps), 1.0)
    return round(min(0.99, 0.5 + 0.25 * (1 - math.exp(-margin)) + 0.24 * persist), 3)


def detect_frame(
    fr: RunFrame, params: Params | None = None, progress: Progress | None = None
) -> DetectResult:
    """Run detection on a loaded frame (no store access); see :func:`kat_gui.detect.detect_store`."""
    p = params or Params()
    if progress:
        progress(0.05, "aligning ranks")
    a = _Analysis(fr, p)
    if progress:
        progress(0.35, "comparing ranks with their peers")
    sig = a.kernel_signals() if fr.n_gpu else {}
    if progress:
        progress(0.65, "attributing components")
    findings: list[dict] = []
    anomaly_parts: list[tuple[np.ndarray, int, int, np.ndarray]] = []  # (gpu rows, role, finding idx, score)
    _rank_findings(a, sig, p, findings, anomaly_parts)
    _straggler_findings(a, sig, p, findings, anomaly_parts)
    _link_findings(a, p, findings, anomaly_parts)
    _hang_findings(a, p, findings, anomaly_parts)
    _topology_findings(fr, findings)

    order = sorted(range(len(findings)), key=lambda i: -findings[i]["confidence"])
    remap = {old: new for new, old in enumerate(order)}
    findings = [findings[i] for i in order]
    for i, f in enumerate(findings):
        f["id"] = i
    anomalies = _anomaly_table(a, findings, anomaly_parts, remap)
    for f in findings:
        f["anomaly_count"] = int(np.count_nonzero(anomalies["finding"] == f["id"]))
    co = a.coll
    meta = {
        "detector": DETECTOR_VERSION,
        "params": asdict(p),
        "steps": {
            "method": a.steps.method,
            "count": int(len(a.step_values)) if (a.steps.step >= 0).any() else 0,
            "marker": a.steps.marker,
        },
        "collectives": {
            "instances": int(co.n),
            "grouping": co.grouping,
            "median_arrival_skew_ns": float(np.median(co.skew_ns)) if co.n else 0.0,
        },
        "clock": {
            "offsets_ns": co.offsets_ns,
            "residual_ns": co.offset_residual_ns,
            "domains": "hosts" if fr.hosts_known else "ranks",
        },
        "noise": {k: round(float(s.sigma), 6) for k, s in sig.items()},
        "ranks": [int(r) for r in fr.ranks],
        "gpu_events": int(fr.n_gpu),
    }
    if progress:
        progress(1.0, "done")
    return DetectResult(fr.name, findings, anomalies, meta, co, sig, a.step_values)


# ---------------------------------------------------------------------- rank-level faults


def _rank_findings(a: _Analysis, sig: dict[str, CellSignal], p: Params, findings: list, parts: list) -> None:
    if a.R < 2 or not sig:
        return
    log_min = math.log1p(p.min_slowdown)
    flags = {
        "compute": sig["compute"].flags(p.z_cell, log_min),
        "memory": sig["memory"].flags(p.z_cell, log_min),
        "copy": sig["copy"].flags(p.z_cell, log_min),
    }
    if "launch" in sig:
        flags["launch"] = sig["launch"].flags(p.z_cell, math.log1p(p.min_launch_slowdown))
    if "late" in sig:
        flags["late"] = sig["late"].flags(p.z_cell, p.min_late_share)
    if a.S < p.min_steps:
        # Too few steps to see persistence: the run has no history and its noise scale rests on a handful of
        # cells, so a weak single-step deviation (a few % of launch pacing) is not a finding on its own.
        # Cells must then clear z_link and short_run_factor x the minimum effect.
        for key, f in flags.items():
            eff = {"launch": math.log1p(p.min_launch_slowdown), "late": p.min_late_share}.get(key, log_min)
            flags[key] = f & sig[key].flags(p.z_link, p.short_run_factor * eff)
    # A weak but sustained change (a few % over many steps) is below the per-cell bar in every step yet
    # certain over the window: each rank's deviation series is searched for its best shift window against
    # its own level outside it (history.joint_windows; noise from successive differences), and the window's
    # cells count as abnormal when the shift clears z_link and the minimum effect.
    if a.S >= 2 * p.min_steps + 1:
        for key in ("compute", "memory", "copy", "launch"):
            if key not in sig:
                continue
            need = math.log1p(p.min_launch_slowdown if key == "launch" else p.min_slowdown)
            for ri in range(a.R):
                d = sig[key].dev[ri]
                steps = np.flatnonzero(np.isfinite(d))
                steps = steps[steps >= p.warmup_steps]
                if len(steps) < 2 * p.min_steps + 1:
                    continue
                # Short windows are the per-cell runs' business; this search is for weak effects that only
                # add up over many steps, so its windows are at least 3 x min_steps long (a transient of a
                # few noisy steps cannot pass as "sustained").
                bw = joint_windows(
                    [(steps, d[steps], np.zeros((len(steps), 0)))], a.S, 3 * p.min_steps, p.sigma_floor
                )
                if bw is None or bw[2] < need:
                    continue
                # Or a clear change (z_cell) to a level persistently above the peers over the window (the
                # peer comparison then carries the evidence, steps averaged).
                w = d[bw[0] : bw[1] + 1]
                w = w[np.isfinite(w)]
                t_peer = float(np.mean(w)) / sig[key].sigma * math.sqrt(len(w)) if len(w) else 0.0
                if bw[3] >= p.z_link or (bw[3] >= p.z_cell and t_peer >= p.z_link):
                    flags[key][ri, bw[0] : bw[1] + 1] |= np.isfinite(d[bw[0] : bw[1] + 1])
    any_flag = np.zeros((a.R, a.S), dtype=bool)
    for f in flags.values():
        any_flag |= f
    for ri in range(a.R):
        for s0, s1, nflag in _flag_runs(any_flag[ri], p, a.S):
            win = slice(s0, s1 + 1)
            ev = {}
            frac = {}
            for k, s in sig.items():
                d = s.dev[ri, win]
                d = d[np.isfinite(d)]
                ev[k] = float(np.median(d)) if len(d) else 0.0
                frac[k] = float(flags[k][ri, win].mean()) if k in flags else 0.0
            comp, why = _rank_component(ev, frac, p)
            if comp is None:
                continue
            # A persistent healthy offset (silicon spread, a slower host) is there outside the window too;
            # the fault is what the window adds to the rank's own level elsewhere, and must reach the bar.
            key = _KEY_OF[comp]
            d_all = sig[key].dev[ri]
            # The rank's own level before the onset (after the window when it starts the run).
            outside = np.zeros(a.S, dtype=bool)
            outside[:s0] = True
            if np.count_nonzero(outside & np.isfinite(d_all)) < p.min_steps:
                outside[s1 + 1 :] = True
            d_out = d_all[outside & np.isfinite(d_all)]
            base = max(float(np.median(d_out)), 0.0) if len(d_out) >= p.min_steps else 0.0
            need = math.log1p(p.min_launch_slowdown if key == "launch" else p.min_slowdown)
            if ev.get(key, 0.0) - base < need:
                continue
            _emit_rank_finding(a, sig, p, ri, s0, s1, nflag, comp, why, ev, frac, findings, parts)


def _rank_component(ev: dict[str, float], frac: dict[str, float], p: Params) -> tuple[str | None, str]:
    """DOMAIN.md §2: hardware evidence on the rank beats its late arrival, which is only the consequence."""
    half = 0.5
    cmp_ok = frac.get("compute", 0) >= half
    mem_ok = frac.get("memory", 0) >= half
    if frac.get("copy", 0) >= half and not (cmp_ok or mem_ok):
        return "pcie", "host<->device copies slower than on peers"
    if cmp_ok or mem_ok:
        c, m = ev.get("compute", 0.0), ev.get("memory", 0.0)
        if mem_ok and m > p.hbm_ratio * max(c, 0.0):
            return "hbm", "memory-bound kernels slowed more than compute-bound ones"
        return "gpu", "compute-bound kernels slower than the same kernels on peers"
    if frac.get("launch", 0) >= half:
        # A slower host is a finding when its launch pacing is persistently slower than every step's peers;
        # whether it also arrives late depends on how launch-bound the rank is (pipeline stages that wait
        # for their input absorb it), so lateness is reported as evidence, not required.
        return "cpu", "host launches slower than on peers"
    # Late arrival alone is not a finding: healthy tensor-parallel decode already shows ms of host-paced
    # arrival skew (DOMAIN.md §1), and software skew is not a hardware fault without hardware evidence.
    return None, ""


_KEY_OF = {"gpu": "compute", "hbm": "memory", "pcie": "copy", "cpu": "launch", "unknown": "late"}


def _emit_rank_finding(a, sig, p, ri, s0, s1, nflag, comp, why, ev, frac, findings, parts) -> None:
    fr = a.fr
    rank = int(fr.ranks[ri])
    fid = len(findings)
    in_win = (a.step_idx >= s0) & (a.step_idx <= s1)
    on_rank = a.rank_idx == ri
    key = {"gpu": "compute", "hbm": "memory", "pcie": "copy", "cpu": "launch", "unknown": "late"}[comp]
    s = sig[key]
    zs = s.z[ri, s0 : s1 + 1]
    z_med = float(np.nanmedian(zs)) if np.isfinite(zs).any() else 0.0
    # Root rows: a hardware fault multiplies the duration of *every* instance of the work it affects on the
    # rank (clock throttling: compute- and memory-bound kernels; HBM: both, memory-bound most; PCIe: host
    # copies), so all of them in the fault's steps are roots, not only those that cleared the noise.
    g = a.fr.gpu
    sel_rows = in_win & on_rank
    if comp in ("gpu", "hbm"):
        parts.append(_scored_rows(a, sel_rows & np.isin(g["cls"], (C.COMPUTE, C.MEMORY)), fid, s.sigma))
    elif comp == "pcie":
        parts.append(_scored_rows(a, sel_rows & (g["cls"] == C.COPY_HOST), fid, s.sigma))
    elif comp == "cpu":
        w_rows, w_score = _launch_wait_rows(a, sel_rows)
        parts.append((w_rows, ROOT, fid, w_score))
    # Symptoms: peers' collective kernels that waited for this rank (it arrived last) in the window.
    co = a.coll
    wait_share = 0.0
    skew_med = 0.0
    if co.n:
        inst_last = co.last_rank == rank
        inst_win = (a.coll_step_idx >= s0) & (a.coll_step_idx <= s1)
        inst_sel = inst_last & inst_win
        m = inst_sel[co.inst] & (co.rank != rank) & (co.wait_ns > 0)
        late_own = np.zeros(co.n)
        is_me = co.rank == rank
        late_own[co.inst[is_me]] = co.late_ns[is_me]
        m &= co.wait_ns >= 0.5 * late_own[co.inst]
        m &= late_own[co.inst] > 0
        parts.append((co.row[m], SYMPTOM, fid, co.wait_ns[m] / np.maximum(co.end_ns[m] - co.start_ns[m], 1)))
        if comp == "unknown":
            mine = is_me & inst_sel[co.inst] & (co.late_ns > 0)
            parts.append(
                (co.row[mine], ROOT, fid, co.late_ns[mine] / np.maximum(co.skew_ns[co.inst[mine]], 1))
            )
        if inst_sel.any():
            skew_med = float(np.median(co.skew_ns[inst_sel]))
            waited = co.wait_ns[inst_sel[co.inst] & (co.rank != rank)]
            dur = (co.end_ns - co.start_ns)[inst_sel[co.inst] & (co.rank != rank)]
            wait_share = float(waited.sum() / max(dur.sum(), 1))
    t0, t1 = _window_ns(a, s0, s1, ri)
    slowdown = {k: round(math.expm1(ev.get(k, 0.0)), 4) for k in ("compute", "memory", "copy", "launch")}
    evidence = {
        "slowdown_vs_peers": slowdown.get(key, 0.0) if key != "late" else 0.0,
        "compute_bound_slowdown": slowdown["compute"],
        "memory_bound_slowdown": slowdown["memory"],
        "host_copy_slowdown": slowdown["copy"],
        "launch_interval_ratio": round(1 + slowdown["launch"], 4),
        "late_share_of_step": round(ev.get("late", 0.0), 4),
        "arrival_skew_ns": skew_med,
        "wait_share": round(wait_share, 4),
        "z": round(z_med, 2),
        "steps": [int(a.step_values[s0]), int(a.step_values[s1])],
        "abnormal_steps": int(nflag),
    }
    names = {
        "gpu": f"GPU {rank}",
        "hbm": f"HBM of GPU {rank}",
        "pcie": f"PCIe link of GPU {rank}",
        "cpu": f"host CPU of rank {rank}",
        "unknown": f"rank {rank}",
    }
    what = {
        "gpu": f"compute-bound kernels {slowdown['compute'] * 100:.0f}% slower than peers",
        "hbm": f"memory-bound kernels {slowdown['memory'] * 100:.0f}% slower than peers "
        f"(compute-bound {slowdown['compute'] * 100:.0f}%)",
        "pcie": f"host<->device copies {slowdown['copy'] * 100:.0f}% slower than peers",
        "cpu": f"launches {slowdown['launch'] * 100:.0f}% slower than peers; arrives late, peers wait",
        "unknown": f"arrives late to collectives ({ev.get('late', 0.0) * 100:.1f}% of a step) with no slower "
        f"kernels or launches (software skew?)",
    }[comp]
    findings.append(
        {
            "component": comp,
            "component_id": _component_id(a.fr, comp, [rank]),
            "ranks": [rank],
            "confidence": _confidence(z_med, nflag, p) * (0.7 if comp == "unknown" else 1.0),
            "start_ns": t0,
            "end_ns": t1,
            "summary": f"{names[comp]}: {what} in steps {evidence['steps'][0]}-{evidence['steps'][1]}",
            "kind": "timing",
            "nodes": _nodes(a.fr, comp, [rank]),
            "evidence": evidence,
            "reason": why,
        }
    )


def _scored_rows(a: _Analysis, mask: np.ndarray, fid: int, sigma: float) -> tuple:
    """Root rows of ``mask`` scored by their log ratio to peers (0 where unmatched)."""
    rows = np.flatnonzero(mask)
    score = np.zeros(len(rows))
    for pm in a.peer.values():
        pos = np.searchsorted(pm.rows, rows)
        pos_c = np.minimum(pos, max(len(pm.rows) - 1, 0))
        if len(pm.rows):
            hit = pm.rows[pos_c] == rows
            score[hit] = np.nan_to_num(pm.log_ratio[pos_c[hit]]) / max(sigma, 1e-9)
    return rows, ROOT, fid, score


LAUNCH_WAIT_NS = 1_000  # a GPU idle gap that grew by at least this waited for a later launch


def _launch_wait_rows(a: _Analysis, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows of ``mask`` whose GPU sat idle before them longer than the same op's on peers (by at least
    ``LAUNCH_WAIT_NS``): with a slow host, the GPU waits for each launch, so these instances are the ones the
    host delayed. Returns (rows, score = grown gap in µs)."""
    gap = getattr(a, "_gap_ns", None)
    if gap is None:
        g = a.fr.gpu
        order = np.lexsort((g["start_ns"], a.rank_idx))
        # Running maximum of ends per rank in one pass: each rank's times are lifted into its own band.
        t0 = int(min(g["start_ns"].min(), g["end_ns"].min()))
        band = int(max(g["end_ns"].max(), g["start_ns"].max())) - t0 + 1
        lift = a.rank_idx[order].astype(np.int64) * band
        end_l = g["end_ns"][order] - t0 + lift
        prev_end = np.maximum.accumulate(np.r_[0, end_l[:-1]])
        same = np.r_[False, a.rank_idx[order][1:] == a.rank_idx[order][:-1]]
        gap = np.zeros(a.fr.n_gpu)
        gap[order] = np.where(same, np.maximum(g["start_ns"][order] - t0 + lift - prev_end, 0), 0)
        rows = np.flatnonzero(a.step_idx >= 0)
        pm = peer_match(rows, a.step_idx[rows], g["name"][rows], a.rank_idx[rows], gap[rows] + 1.0, a.R)
        ref = np.full(a.fr.n_gpu, np.nan)
        ref[rows] = pm.ref_ns - 1.0
        a._gap_ns = gap
        a._gap_ref_ns = ref
    grown = gap - a._gap_ref_ns
    sel = mask & (grown >= LAUNCH_WAIT_NS)
    rows = np.flatnonzero(sel)
    return rows, grown[rows] / 1e3


def _window_ns(a: _Analysis, s0: int, s1: int, ri: int | None) -> tuple[int, int]:
    g = a.fr.gpu
    m = (a.step_idx >= s0) & (a.step_idx <= s1)
    if ri is not None:
        m &= a.rank_idx == ri
    if not m.any():
        return 0, 0
    return int(g["start_ns"][m].min()), int(g["end_ns"][m].max())


# ---------------------------------------------------------------------- stragglers (late arrival)


def _binom_tail(k: int, n: int, q: float) -> float:
    """P(X >= k) for X ~ Binomial(n, q)."""
    return float(sum(math.comb(n, i) * q**i * (1 - q) ** (n - i) for i in range(k, n + 1)))


def _straggler_findings(
    a: _Analysis, sig: dict[str, CellSignal], p: Params, findings: list, parts: list
) -> None:
    """A rank that arrives last at most collectives and makes its peers wait a large share of the run.

    Late arrival alone is noisy (healthy decode skew), so this needs magnitude *and* consistency
    (``Params.straggler_*``) and a lateness far outside the other ranks' (their spread is the noise).
    Ranks with a rank finding are skipped: that finding already explains why they arrive late. Component:
    ``cpu`` when the host issued the late collectives late (launch delay >= half the lateness: the GPU
    waited for the host), else ``unknown``. Whole-run statistics: a straggler confined to a short window
    of a long run is diluted (see docs/detection.md, Known limits).
    """
    co = a.coll
    if a.R < 2 or co.n < p.min_steps:
        return
    named = {r for f in findings for r in f["ranks"]}
    meaningful = co.skew_ns > co.transfer_ns
    # Lateness against the instance's median start: robust per rank over its instances.
    late_by_rank = {int(r): np.median(co.late_ns[co.rank == r]) for r in a.fr.ranks if (co.rank == r).any()}
    total_ns = float(np.sum(a.step_len_ns))
    for ri, r in enumerate(int(x) for x in a.fr.ranks):
        if r in named or r not in late_by_rank:
            continue
        mine = co.rank == r
        n_mem = int(mine.sum())
        last = meaningful & (co.last_rank == r)
        n_last = int(last.sum())
        if n_last < p.min_steps or n_last <= p.straggler_majority * n_mem:
            continue
        q = 1.0 / max(float(np.median(co.size[co.inst[mine]])), 2.0)
        p_val = _binom_tail(n_last, n_mem, q)
        if p_val > p.straggler_p:
            continue
        peers_at = last[co.inst] & ~mine
        # Each peer's wait, averaged over the peers of each instance, summed over the instances.
        waited = np.zeros(co.n)
        cnt = np.zeros(co.n)
        np.add.at(waited, co.inst[peers_at], co.wait_ns[peers_at].astype(np.float64))
        np.add.at(cnt, co.inst[peers_at], 1.0)
        caused_ns = float(np.sum(waited[last] / np.maximum(cnt[last], 1.0)))
        share = caused_ns / max(total_ns, 1.0)
        if share < p.straggler_wait_share:
            continue
        others = np.array([v for k, v in late_by_rank.items() if k != r], dtype=np.float64)
        spread = 1.4826 * float(np.median(np.abs(others - np.median(others)))) if len(others) else 0.0
        transfer = float(np.median(co.transfer_ns[last]))
        z = (late_by_rank[r] - float(np.median(others))) / max(spread, transfer, 1_000.0)
        if z < p.z_cell:
            continue
        # Did the host issue the late collectives late? Launch delay against the instance's median launch.
        rows_me = co.row[mine & last[co.inst]]
        late_me = co.late_ns[mine & last[co.inst]].astype(np.float64)
        launch_delay = np.full(len(rows_me), np.nan)
        if (a.launch_ns >= 0).any():
            lt = a.launch_ns[co.row].astype(np.float64)
            lt[a.launch_ns[co.row] < 0] = np.nan
            for j, i in enumerate(co.inst[mine & last[co.inst]]):
                others_l = lt[(co.inst == i) & ~mine]
                own = lt[(co.inst == i) & mine]
                if np.isfinite(others_l).any() and np.isfinite(own).all():
                    launch_delay[j] = float(own[0] - np.nanmedian(others_l))
        ok = np.isfinite(launch_delay) & (late_me > 0)
        host_frac = float(np.median(launch_delay[ok] / late_me[ok])) if ok.any() else 0.0
        comp = "cpu" if host_frac >= 0.5 else "unknown"
        ev = {}
        for k in ("compute", "memory", "copy", "launch"):
            d = sig[k].dev[ri] if k in sig else np.zeros(0)
            d = d[np.isfinite(d)]
            ev[k] = round(math.expm1(float(np.median(d))), 4) if len(d) else 0.0
        fid = len(findings)
        s_last = a.coll_step_idx[last]
        s0 = int(s_last[s_last >= 0].min()) if (s_last >= 0).any() else 0
        s1 = int(s_last[s_last >= 0].max()) if (s_last >= 0).any() else a.S - 1
        if comp == "cpu":
            on_rank = (a.rank_idx == ri) & (a.step_idx >= s0) & (a.step_idx <= s1)
            w_rows, w_score = _launch_wait_rows(a, on_rank)
            w_rows = np.union1d(w_rows, rows_me)
            parts.append((w_rows, ROOT, fid, np.ones(len(w_rows))))
        else:
            parts.append(
                (rows_me, ROOT, fid, late_me / np.maximum(co.skew_ns[co.inst[mine & last[co.inst]]], 1))
            )
        sym = peers_at & (co.wait_ns > 0)
        parts.append(
            (co.row[sym], SYMPTOM, fid, co.wait_ns[sym] / np.maximum(co.end_ns[sym] - co.start_ns[sym], 1))
        )
        coll_ns = (co.end_ns - co.start_ns)[peers_at].astype(np.float64)
        wait_share = float(co.wait_ns[peers_at].sum() / max(coll_ns.sum(), 1.0))
        frac_last = n_last / n_mem
        conf = 0.5 + 0.2 * min(share / 0.4, 1.0) + 0.2 * min((frac_last - 0.5) / 0.4, 1.0)
        conf = round(min(conf, 0.9) * (1.0 if comp == "cpu" else 0.8), 3)
        skews = np.sort(co.skew_ns[last])[::-1]
        steps = [int(a.step_values[s0]), int(a.step_values[s1])]
        kern_txt = (
            f"its kernels are not slower than its peers' (compute-bound {ev['compute'] * 100:+.0f}%, "
            f"memory-bound {ev['memory'] * 100:+.0f}%)"
        )
        if comp == "cpu":
            cause = (
                f"the host issued those collectives late ({host_frac * 100:.0f}% of its lateness is launch "
                f"delay), so the cause is before the GPU, on the host side (input/data loading, Python, "
                f"launch path)"
            )
            why = "straggler: last at most collectives; the host launched them late"
        else:
            cause = (
                "its launches were not late either: the cause is not visible in the trace (software skew?)"
            )
            why = "straggler: last at most collectives, no slower kernels or launches"
        findings.append(
            {
                "component": comp,
                "component_id": _component_id(a.fr, comp, [r]),
                "ranks": [r],
                "confidence": conf,
                "start_ns": int(co.first_start_ns[last].min()),
                "end_ns": int(co.end_inst_ns[last].max()),
                "summary": f"rank {r} is the straggler: last at {n_last} of {n_mem} collectives; its peers "
                f"waited {caused_ns / 1e6:.1f} ms each ({share * 100:.0f}% of the step time) for it; "
                f"{kern_txt}; {cause}",
                "kind": "timing",
                "nodes": _nodes(a.fr, comp, [r]),
                "evidence": {
                    "slowdown_vs_peers": 0.0,
                    "compute_bound_slowdown": ev["compute"],
                    "memory_bound_slowdown": ev["memory"],
                    "host_copy_slowdown": ev["copy"],
                    "launch_interval_ratio": round(1 + ev["launch"], 4),
                    "last_at": n_last,
                    "collectives": n_mem,
                    "last_at_p_value": round(p_val, 6),
                    "peer_wait_ns": caused_ns,
                    "wait_share_of_step": round(share, 4),
                    "wait_share": round(wait_share, 4),
                    "arrival_skew_ns": float(np.median(skews)),
                    "largest_skews_ns": [float(x) for x in skews[:3]],
                    "launch_delay_share": round(host_frac, 3),
                    "z": round(float(z), 2),
                    "steps": steps,
                    "abnormal_steps": int(len(np.unique(s_last[s_last >= 0]))),
                },
                "reason": why,
            }
        )


# ---------------------------------------------------------------------- link-level faults (history)


def _link_findings(a: _Analysis, p: Params, findings: list, parts: list) -> None:
    """Sustained transfer-time shifts of a collective group that the step's workload does not explain
    (``history.py``): nvlink inside a host, nic when the group spans hosts."""
    co = a.coll
    if not co.n or a.S < 2 * p.min_steps + 1:
        return
    shifts = a.link_shifts()
    a.shifts = shifts
    log_min = math.log1p(p.min_slowdown)
    flagged = [
        sh
        for sh in shifts
        if sh.delta >= log_min and sh.z >= p.z_link and not (sh.s0 == 0 and sh.s1 < p.warmup_steps)
    ]
    group_ranks: dict[int, frozenset] = {}
    for g_ in np.unique(co.group):
        group_ranks[int(g_)] = frozenset(int(r) for r in np.unique(co.rank[(co.group == g_)[co.inst]]))
    emitted: list[tuple[frozenset, int, int, int]] = []  # (ranks, s0, s1, finding index)
    for grp in sorted(
        {sh.group for sh in flagged}, key=lambda g_: -max(sh.z for sh in flagged if sh.group == g_)
    ):
        mine = sorted((sh for sh in flagged if sh.group == grp), key=lambda sh: -sh.z)
        best = mine[0]
        s0, s1 = best.s0, best.s1
        for sh in mine[1:]:  # other collectives of the group shifted over an overlapping window
            if sh.s0 <= s1 and s0 <= sh.s1:
                s0, s1 = min(s0, sh.s0), max(s1, sh.s1)
        inst_sel = (co.group == grp) & (a.coll_step_idx >= s0) & (a.coll_step_idx <= s1)
        if not inst_sel.any():
            continue
        ranks = sorted(int(r) for r in np.unique(co.rank[inst_sel[co.inst]]))
        # Every collective among the same ranks crosses the same links (groups split by collective name
        # when process groups are not recorded): all of them in the window are slowed.
        same = [int(g_) for g_, rs in group_ranks.items() if rs == frozenset(ranks)]
        inst_sel = np.isin(co.group, same) & (a.coll_step_idx >= s0) & (a.coll_step_idx <= s1)
        spans = bool(co.spans_hosts[inst_sel].any())
        comp = "nic" if spans else "nvlink"
        m = inst_sel[co.inst]
        dup = next((e for e in emitted if e[0] == frozenset(ranks) and e[1] <= s1 and s0 <= e[2]), None)
        if dup is not None:  # another collective of the same ranks (a name-split group): one finding
            parts.append((co.row[m], ROOT, dup[3], np.full(int(m.sum()), best.z)))
            continue
        eff = best.delta
        skew = float(np.median(co.skew_ns[inst_sel]))
        tr = float(np.median(co.transfer_ns[inst_sel]))
        fid = len(findings)
        emitted.append((frozenset(ranks), s0, s1, fid))
        parts.append((co.row[m], ROOT, fid, np.full(int(m.sum()), best.z)))
        t0 = int(co.first_start_ns[inst_sel].min())
        t1 = int(co.end_inst_ns[inst_sel].max())
        steps = [int(a.step_values[s0]), int(a.step_values[s1])]
        label = "inter-node network (NIC)" if spans else "NVLink"
        findings.append(
            {
                "component": comp,
                "component_id": _component_id(a.fr, comp, ranks),
                "ranks": ranks,
                "confidence": _confidence(best.z, best.n_steps, p),
                "start_ns": t0,
                "end_ns": t1,
                "summary": f"{label}: collectives of ranks {_ranks_text(ranks)} take "
                f"{math.expm1(eff) * 100:.0f}% longer than the same collectives of the same size earlier, on "
                f"every rank and without arrival skew, in steps {steps[0]}-{steps[1]}",
                "kind": "timing",
                "nodes": _nodes(a.fr, comp, ranks),
                "evidence": {
                    "transfer_ratio": round(math.exp(eff), 4),
                    "transfer_ns": tr,
                    "arrival_skew_ns": skew,
                    "z": round(best.z, 2),
                    "steps": steps,
                    "abnormal_steps": int(best.n_steps),
                    "spans_hosts": spans,
                },
                "reason": "transfer time (min duration across ranks) shifted up against the group's own "
                "history, with message size and the step's kernel speed regressed out",
            }
        )


# ---------------------------------------------------------------------- hangs


def _hang_findings(a: _Analysis, p: Params, findings: list, parts: list) -> None:
    """One rank stops while its peers sit in a collective that never completes (DOMAIN.md §2, HBM/Xid)."""
    fr = a.fr
    g = fr.gpu
    if a.R < 2 or not fr.n_gpu:
        return
    last_end = np.full(a.R, np.iinfo(np.int64).min)
    np.maximum.at(last_end, a.rank_idx, g["end_ns"])
    run_end = int(last_end.max())
    typical_step = float(np.median(a.step_len_ns))
    stopped = np.flatnonzero(run_end - last_end > 5 * typical_step)
    if len(stopped) != 1 or a.R - len(stopped) < 1:
        return
    ri = int(stopped[0])
    rank = int(fr.ranks[ri])
    # Peers' longest collective near the end must dwarf the usual instance.
    is_c = g["cls"] == C.COLLECTIVE
    tail = is_c & (g["end_ns"] > last_end[ri]) & (a.rank_idx != ri)
    if not tail.any():
        return
    dur = g["end_ns"] - g["start_ns"]
    usual = float(np.median(dur[is_c])) if is_c.any() else 0.0
    hung = tail & (dur > 20 * max(usual, 1.0))
    if not hung.any():
        return
    fid = len(findings)
    rows = np.flatnonzero(hung)
    parts.append((rows, SYMPTOM, fid, (dur[rows] / max(usual, 1.0)).astype(np.float64)))
    findings.append(
        {
            "component": "hbm",
            "component_id": _component_id(fr, "hbm", [rank]),
            "ranks": [rank],
            "confidence": 0.6,
            "start_ns": int(last_end[ri]),
            "end_ns": run_end,
            "summary": f"rank {rank} stops issuing GPU work while its peers hang in a collective "
            f"({dur[rows].max() / 1e6:.1f} ms); a fatal GPU memory error (Xid 48/63/94) is the usual cause",
            "kind": "timing",
            "nodes": _nodes(fr, "hbm", [rank]),
            "evidence": {
                "silent_ns": int(run_end - last_end[ri]),
                "hung_collectives": int(len(rows)),
                "usual_collective_ns": usual,
            },
            "reason": "hang: one rank silent, peers blocked",
        }
    )
    # Timing cannot tell a fatal memory error from the GPU itself falling over (Xid 79, a driver or SM
    # fault): the GPU is offered as the second candidate for the same event, ranked below.
    alt = dict(findings[-1])
    alt.update(
        component="gpu",
        component_id=_component_id(fr, "gpu", [rank]),
        confidence=0.55,
        nodes=_nodes(fr, "gpu", [rank]),
        summary=f"rank {rank} stops issuing GPU work while its peers hang in a collective; the GPU itself "
        f"(fallen off the bus, Xid 79, or a driver fault) is the other usual cause",
        reason="hang: alternative cause of the same event",
    )
    findings.append(alt)


# ---------------------------------------------------------------------- topology


TOPOLOGY_CONFIDENCE = 0.7  # an observed configuration fact (fewer links, narrower PCIe), not a timing


def _topology_findings(fr: RunFrame, findings: list) -> None:
    """Anomalies of an observed topology file (never of an inferred default) as findings of kind topology."""
    g = _graph(fr)
    if g is None:
        return
    try:
        from kat_gui.topology import edge_id, topology_anomalies

        found = topology_anomalies(g)
    except Exception:
        return
    for t in found:
        nodes = list(t.get("nodes", [])) + [edge_id(u, v) for u, v in t.get("edges", [])]
        findings.append(
            {
                "component": t.get("component", "unknown"),
                "component_id": t.get("component_id") or (nodes[0] if nodes else ""),
                "ranks": [int(r) for r in t.get("ranks", [])],
                "confidence": TOPOLOGY_CONFIDENCE,
                "start_ns": 0,
                "end_ns": 0,
                "summary": t.get("summary", "topology anomaly"),
                "kind": "topology",
                "nodes": nodes,
                "evidence": dict(t.get("evidence", {})),
            }
        )


# ---------------------------------------------------------------------- helpers


def _ranks_text(ranks: list[int]) -> str:
    if len(ranks) > 2 and ranks == list(range(ranks[0], ranks[-1] + 1)):
        return f"{ranks[0]}-{ranks[-1]}"
    return ",".join(str(r) for r in ranks)


def _graph(fr: RunFrame):
    if fr.topology is None:
        return None
    if not hasattr(fr, "_graph_cache"):
        try:
            from kat_gui.topology import from_json

            fr._graph_cache = from_json(fr.topology)  # type: ignore[attr-defined]
        except Exception:
            fr._graph_cache = None  # type: ignore[attr-defined]
    return fr._graph_cache  # type: ignore[attr-defined]


def _nodes(fr: RunFrame, comp: str, ranks: list[int]) -> list[str]:
    g = _graph(fr)
    if g is None or comp == "unknown":
        return [f"GPU{r}" for r in ranks]
    try:
        from kat_gui.topology import component_node

        return list(component_node(g, comp, ranks=ranks))
    except Exception:
        return [f"GPU{r}" for r in ranks]


def _component_id(fr: RunFrame, comp: str, ranks: list[int]) -> str:
    nodes = _nodes(fr, comp, ranks)
    if comp in ("gpu", "hbm") and len(ranks) == 1:
        return f"GPU{ranks[0]}"
    return nodes[0] if nodes else (f"GPU{ranks[0]}" if ranks else "")


def _anomaly_table(a: _Analysis, findings: list, parts: list, remap: dict[int, int]) -> dict[str, np.ndarray]:
    g = a.fr.gpu
    if parts:
        rows = np.concatenate([p_[0] for p_ in parts]).astype(np.int64)
        role = np.concatenate([np.full(len(p_[0]), p_[1], np.uint8) for p_ in parts])
        fid = np.concatenate([np.full(len(p_[0]), remap[p_[2]], np.int32) for p_ in parts])
        score = np.concatenate([np.asarray(p_[3], np.float64) for p_ in parts])
    else:
        rows = np.zeros(0, np.int64)
        role = np.zeros(0, np.uint8)
        fid = np.zeros(0, np.int32)
        score = np.zeros(0)
    # One row per event: a root beats a symptom, then the more confident finding (lower id).
    order = np.lexsort((fid, role, rows))
    rows, role, fid, score = rows[order], role[order], fid[order], score[order]
    keep = np.r_[True, rows[1:] != rows[:-1]] if len(rows) else np.zeros(0, bool)
    rows, role, fid, score = rows[keep], role[keep], fid[keep], score[keep]
    comp = np.array([_comp(f["component"]) for f in findings], dtype=np.uint8)
    out = {
        "track": g["track"][rows].astype(np.int32),
        "index": g["index"][rows].astype(np.int64),
        "rank": g["rank"][rows].astype(np.int32),
        "device": g["device"][rows].astype(np.int32),
        "stream": g["stream"][rows].astype(np.int64),
        "name": g["name"][rows].astype(np.int32),
        "start_ns": g["start_ns"][rows].astype(np.int64),
        "end_ns": g["end_ns"][rows].astype(np.int64),
        "role": role.astype(np.uint8),
        "component": comp[fid] if len(fid) else np.zeros(0, np.uint8),
        "score": np.nan_to_num(score, nan=0.0).astype(np.float32),
        "finding": fid.astype(np.int32),
    }
    o = np.argsort(out["start_ns"], kind="stable")
    return {k: v[o] for k, v in out.items()}
