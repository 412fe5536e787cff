"""The per-(rank, step) overview signals detection stores for the heatmap (``detect/rank_step``, ``detect/steps``;
kat_gui/detect/rank_step.py): a throttled GPU's slowdown vs its peers in the steps of the fault and ~0 elsewhere,
the peers' wait share rising while it is slow, the same arrays from whole-run and streamed detection, and stores
analysed without them."""

from __future__ import annotations

import re
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from kat_gui import parallel, pipeline
from kat_gui import simulate as sim
from kat_gui.detect import detect_store
from kat_gui.detect.rank_step import RANK_STEP_KEY, STEPS_KEY, RankStep
from kat_gui.detect.result import load_rank_step, save_result
from kat_gui.store import TraceStore

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
from benchmarks import synth_run  # noqa: E402

pytestmark = pytest.mark.usefixtures("private_kat_dirs")
FIELDS = ("ranks", "steps", "slowdown", "wait_share", "step_start_ns", "step_end_ns", "step_len_ns")


def _stored(path: Path) -> RankStep:
    with TraceStore.open(path) as st:
        rs = load_rank_step(st)
    assert rs is not None
    return rs


@pytest.fixture(scope="module")
def throttled(tmp_path_factory) -> Path:
    """The simulator's TP=4 decode with GPU 2's SM clocks throttled in steps 16-39 (22,080 GPU events), ingested
    and not yet analysed."""
    d = tmp_path_factory.mktemp("throttle")
    sim.simulate(d / "traces", "gpu_throttle_tp4", seed=0)
    files = [p for p in (d / "traces").rglob("*.json*") if p.name != "truth.json"]
    return pipeline.ingest(files, d / "run.kat.h5")


def _detect(store: Path, tmp: Path, name: str, monkeypatch, window_rows: int | None = None) -> Path:
    """Detect on a copy of ``store`` in this process; returns the copy. With ``window_rows``, streamed by
    windows of about that many GPU events (asserted: the progress names several windows)."""
    copy = tmp / f"{name}.kat.h5"
    shutil.copy(store, copy)
    if window_rows is None:
        monkeypatch.delenv("KAT_DETECT_WINDOW_ROWS", raising=False)
    else:
        monkeypatch.setenv("KAT_DETECT_WINDOW_ROWS", str(window_rows))
    said: list[str] = []
    with parallel.requested(parallel.Scale(workers=0)):
        detect_store(copy, progress=lambda _f, msg: said.append(msg))
    windows = [int(m.split()[0]) for m in said if re.fullmatch(r"\d+ windows of steps", m)]
    if window_rows is not None:
        assert windows and windows[0] >= 4, windows  # really streamed, in several windows
    else:
        assert not windows
    return copy


def test_throttled_gpu_is_slower_than_its_peers_only_in_the_fault_steps(throttled, tmp_path, monkeypatch):
    rs = _stored(_detect(throttled, tmp_path, "whole", monkeypatch))
    assert rs.ranks.tolist() == [0, 1, 2, 3] and rs.steps.tolist() == list(range(48))
    assert rs.slowdown.shape == rs.wait_share.shape == (4, 48)
    assert rs.slowdown.dtype == rs.wait_share.dtype == np.float32
    fault = (rs.steps >= 16) & (rs.steps < 40)
    peers = np.array([0, 1, 3])
    culprit = rs.slowdown[2]
    # compute kernels +20 %, memory-bound ones less: its busy time is ~10-13 % above the peers' in every fault step
    assert np.all(culprit[fault] > 0.08), culprit[fault]
    assert culprit[fault].min() > np.abs(rs.slowdown[peers][:, fault]).max() + 0.05
    assert np.all(np.abs(culprit[~fault]) < 0.04), culprit[~fault]
    assert np.all(np.abs(rs.slowdown[peers]) < 0.04)
    # the slow rank catches up on its slack: it waits far less in collectives while slow, its peers do not
    assert np.nanmean(rs.wait_share[2, fault]) < 0.6 * np.nanmean(rs.wait_share[2, ~fault])
    assert np.nanmean(rs.wait_share[peers][:, fault]) > np.nanmean(rs.wait_share[2, fault]) + 0.05
    assert np.all((rs.wait_share >= 0) & (rs.wait_share <= 1))
    # the steps' spans: in order, each a real interval, their typical length inside it
    assert np.all(rs.step_end_ns > rs.step_start_ns) and np.all(np.diff(rs.step_start_ns) > 0)
    assert np.all((rs.step_len_ns > 0) & (rs.step_len_ns <= rs.step_end_ns - rs.step_start_ns))


def test_peers_wait_share_rises_while_one_gpu_is_slow(tmp_path, monkeypatch):
    """A compute-bound job (benchmarks/synth_run: every all-reduce ends with its last arrival): from step 10 on,
    rank 5 is 25 % slower and the seven others wait for it."""
    synth_run.generate(tmp_path / "traces", ranks=8, steps=30, layers=3, culprit=5, slowdown=0.25, seed=2)
    store = pipeline.ingest([tmp_path / "traces"], tmp_path / "run.kat.h5")
    rs = _stored(_detect(store, tmp_path, "whole", monkeypatch))
    slow = rs.steps >= 10
    peers = np.flatnonzero(rs.ranks != 5)
    before = rs.wait_share[peers][:, ~slow]
    during = rs.wait_share[peers][:, slow]
    assert np.median(during) > 0.08 and np.median(during) > 5 * np.median(before), (before, during)
    assert np.all(rs.wait_share[rs.ranks == 5][:, slow] < during.min())
    assert np.all(rs.slowdown[rs.ranks == 5][:, slow] > 0.15) and np.all(np.abs(rs.slowdown[peers]) < 0.03)


def test_streamed_detection_stores_the_same_arrays(throttled, tmp_path, monkeypatch):
    whole = _stored(_detect(throttled, tmp_path, "whole", monkeypatch))
    streamed = _stored(_detect(throttled, tmp_path, "streamed", monkeypatch, window_rows=3000))
    for f in FIELDS:
        a, b = getattr(whole, f), getattr(streamed, f)
        assert a.dtype == b.dtype and a.shape == b.shape, f
        assert np.array_equal(a, b, equal_nan=a.dtype.kind == "f"), f  # bit for bit, NaN where NaN


def test_a_store_analysed_before_has_none_and_a_new_result_without_them_drops_old_ones(
    throttled, tmp_path, monkeypatch
):
    path = _detect(throttled, tmp_path, "whole", monkeypatch)
    with TraceStore.open(path, "r+") as st:
        assert {RANK_STEP_KEY, STEPS_KEY} <= set(st.result_keys())
        from kat_gui.detect import load_result

        old = load_result(st)  # what a result loaded from a store holds: no rank_step
        assert old is not None and old.rank_step is None
        with st.writing():
            save_result(st, old)
        assert RANK_STEP_KEY not in st.result_keys() and STEPS_KEY not in st.result_keys()
        assert load_rank_step(st) is None


def test_a_damaged_matrix_is_one_error(throttled, tmp_path, monkeypatch):
    path = _detect(throttled, tmp_path, "whole", monkeypatch)
    with TraceStore.open(path, "r+") as st:
        st.put_table(
            RANK_STEP_KEY,
            {"rank": np.arange(4), "slowdown": np.zeros((4, 3)), "wait_share": np.zeros((4, 3))},
        )
        with pytest.raises(ValueError, match="not \\[4 ranks x 48 steps\\]"):
            load_rank_step(st)
        with pytest.raises(ValueError, match="must be 1-D"):
            st.put_table("test/cube", {"x": np.zeros((2, 2, 2))})
