"""What detection found (:class:`DetectResult`), its keys in the store (``detect/anomalies``,
``detect/findings``, ``detect/meta``, ``detect/collectives``, ``detect/rank_step``, ``detect/steps``) and the
public ``kat.detect/1`` JSON document (which the rank x step signals are not part of).

Times are ns; the anomaly table's columns are :data:`kat_gui.detect.anomalies.ANOMALY_COLUMNS`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from kat_gui.detect.align import Collectives
from kat_gui.detect.anomalies import ANOMALY_COLUMNS
from kat_gui.detect.rank_step import RANK_STEP_KEY, STEPS_KEY, RankStep
from kat_gui.detect.signals import CellSignal
from kat_gui.events import COMPONENTS

SCHEMA = "kat.detect/1"
ROLE_NAMES = {1: "root", 2: "symptom"}
_CONTRACT_FIELDS = ("component", "component_id", "ranks", "confidence", "start_ns", "end_ns", "summary")


@dataclass
class DetectResult:
    """What detection found. ``findings`` follow the ``kat.detect/1`` contract (docs/detection.md, "Output"; names
    decoded in :func:`to_contract_json`); ``anomalies`` are store-column arrays (:data:`ANOMALY_COLUMNS`);
    ``meta`` is stored as ``detect/meta``. ``collectives``, ``signals``, ``steps`` and ``rank_step`` (the
    heatmap's signals, stored as ``detect/rank_step`` and ``detect/steps``: :func:`load_rank_step`) exist only
    for a result just computed (not for one loaded from a store)."""

    run: str
    findings: list[dict]
    anomalies: dict[str, np.ndarray]
    meta: dict
    collectives: Collectives | None = None
    signals: dict[str, CellSignal] = field(default_factory=dict)
    steps: np.ndarray | None = None  # the step numbers of the signal columns
    rank_step: RankStep | None = None


def collective_table(result: DetectResult) -> dict[str, np.ndarray] | None:
    """Per collective instance (chronological): first/last arrival, end, skew, transfer, last rank, size.

    An extension of the results contract (``detect/collectives``) for the GUI's arrival view."""
    co = result.collectives
    if co is None:
        return None
    return {
        "first_start_ns": co.first_start_ns.astype(np.int64),
        "last_start_ns": co.last_start_ns.astype(np.int64),
        "end_ns": co.end_inst_ns.astype(np.int64),
        "skew_ns": co.skew_ns.astype(np.int64),
        "transfer_ns": co.transfer_ns.astype(np.int64),
        "last_rank": co.last_rank.astype(np.int32),
        "size": co.size.astype(np.int32),
        "step": co.step.astype(np.int64),
    }


def save_result(store, result: DetectResult) -> None:
    """Write the result keys into a store opened ``"r+"`` (replacing earlier results)."""
    store.put_table("detect/anomalies", result.anomalies)
    table = collective_table(result)
    if table is not None:
        store.put_table("detect/collectives", table)
    if result.rank_step is not None:
        for key, cols in result.rank_step.tables().items():
            store.put_table(key, cols)
    else:  # never leave an earlier analysis's signals beside these findings
        for key in (RANK_STEP_KEY, STEPS_KEY):
            store.delete(key)
    store.put_json("detect/findings", {"schema": SCHEMA, "run": result.run, "findings": result.findings})
    store.put_json("detect/meta", result.meta)


def load_rank_step(store) -> RankStep | None:
    """The stored rank x step signals (``detect/rank_step`` + ``detect/steps``), or None for a store analysed
    before they existed (or never). Raises OSError/KeyError/ValueError on a damaged store, as ``get_table``."""
    rs = store.get_table(RANK_STEP_KEY)
    st = store.get_table(STEPS_KEY)
    if not rs or not st or not {"rank", "slowdown", "wait_share"} <= set(rs) or "step" not in st:
        return None
    n_r, n_s = len(rs["rank"]), len(st["step"])
    mats = [np.asarray(rs[c], np.float32) for c in ("slowdown", "wait_share")]
    if any(m.shape != (n_r, n_s) for m in mats):
        raise ValueError(f"{RANK_STEP_KEY}: matrices are not [{n_r} ranks x {n_s} steps]")
    cols = {c: np.asarray(st.get(c, np.zeros(n_s)), np.int64) for c in ("start_ns", "end_ns", "len_ns")}
    return RankStep(
        np.asarray(rs["rank"], np.int64),
        np.asarray(st["step"], np.int64),
        mats[0],
        mats[1],
        cols["start_ns"],
        cols["end_ns"],
        cols["len_ns"],
    )


def load_result(store) -> DetectResult | None:
    """The stored result of an earlier ``kat detect`` on this store, or None when it was never analysed."""
    found = store.get_json("detect/findings")
    if not found:
        return None
    table = store.get_table("detect/anomalies")
    if table is None:
        table = {k: np.zeros(0, dt) for k, dt in ANOMALY_COLUMNS.items()}
    meta = store.get_json("detect/meta") or {}
    return DetectResult(str(found.get("run", store.name)), list(found.get("findings", [])), table, meta)


def to_contract_json(result: DetectResult, store) -> dict:
    """The ``kat.detect/1`` document (docs/detection.md, "Output"), names decoded through the store's string table.

    Findings keep the contract fields first, then the extra ones (id, nodes, evidence, kind...)."""
    an = result.anomalies
    strings = store.strings
    anomalies = [
        {
            "rank": int(an["rank"][i]),
            "device": int(an["device"][i]),
            "stream": int(an["stream"][i]),
            "name": strings[int(an["name"][i])] if int(an["name"][i]) >= 0 else "",
            "start_ns": int(an["start_ns"][i]),
            "end_ns": int(an["end_ns"][i]),
            "role": ROLE_NAMES.get(int(an["role"][i]), "root"),
            "component": COMPONENTS[int(an["component"][i])],
            "score": round(float(an["score"][i]), 3),
            "finding": int(an["finding"][i]),
            "wait_ns": int(an["wait_ns"][i]) if "wait_ns" in an else 0,
        }
        for i in range(len(an["rank"]))
    ]
    findings = []
    for f in result.findings:
        d = {k: f.get(k) for k in _CONTRACT_FIELDS}
        d.update({k: v for k, v in f.items() if k not in d})
        findings.append(d)
    return {"schema": SCHEMA, "run": result.run, "anomalies": anomalies, "findings": findings}
