"""A responsive window on big runs (offscreen Qt): the GUI thread reads nothing from HDF5 while a run opens or
is panned and zoomed (the run model loads on a worker, window reads on the run's store thread, paint draws
what is cached), detection stops within 0.5 s of a cancel, closing waits for the workers before closing the
stores, and the comparison table is a model that puts significant rows first and fills 64k rows at once."""

from __future__ import annotations

import shutil
import sys
import threading
import time
import traceback
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("pytestqt")
import h5py  # noqa: E402
from PySide6 import QtCore, QtWidgets  # noqa: E402

from kat_gui.errors import Cancelled  # noqa: E402
from kat_gui.ui import loader  # noqa: E402

pytestmark = [pytest.mark.gui, pytest.mark.usefixtures("private_kat_dirs")]

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def dlrm_store(dlrm_dir, tmp_path_factory) -> Path:
    (store,) = loader.prepare([dlrm_dir], tmp_path_factory.mktemp("resp-cache"))
    return store


@pytest.fixture
def store_copy(dlrm_store, tmp_path) -> Path:
    dst = tmp_path / "run.kat.h5"
    shutil.copy(dlrm_store, dst)
    return dst


class GuiThreadReads:
    """Records every HDF5 dataset read made on the GUI (main) thread, with where it came from."""

    def __init__(self, monkeypatch):
        self.reads: list[str] = []
        self.worker_reads = 0
        orig = h5py.Dataset.__getitem__

        def getitem(ds, *args, **kw):
            if threading.current_thread() is threading.main_thread():
                where = [f"{Path(f.filename).name}:{f.name}" for f in traceback.extract_stack()[-8:-1]]
                self.reads.append(" < ".join(reversed(where)))
            else:
                self.worker_reads += 1
            return orig(ds, *args, **kw)

        monkeypatch.setattr(h5py.Dataset, "__getitem__", getitem)


def _wheel(plot, notches: int) -> None:
    """Wheel notches over the middle of the plot, sent as the benchmark sends them."""
    if str(ROOT) not in sys.path:  # benchmarks/ is a folder of scripts, not an installed package
        sys.path.insert(0, str(ROOT))
    from benchmarks.gui_stalls import _wheel as wheel_at

    wheel_at(plot, plot.viewport().width() / 2, notches)


def test_opening_panning_zooming_read_nothing_on_the_gui_thread(qtbot, window, dlrm_store, monkeypatch):
    guard = GuiThreadReads(monkeypatch)
    window.open_paths([dlrm_store])
    qtbot.waitUntil(lambda: window.current_view() is not None and not window.busy(), timeout=60_000)
    view = window.current_view()
    tl = view.timeline
    qtbot.waitUntil(lambda: tl.lanes_item.rect_count() > 0, timeout=10_000)
    assert guard.worker_reads > 0  # the model and the lanes were read, off the GUI thread
    queries = tl.lanes_item.queries
    for _ in range(12):  # wheel in: each step a frame; the deeper ones need new windows
        _wheel(tl.plot, 1)
        tl.plot.grab()
        qtbot.wait(10)
    for key in (QtCore.Qt.Key.Key_D, QtCore.Qt.Key.Key_D, QtCore.Qt.Key.Key_A, QtCore.Qt.Key.Key_S):
        qtbot.keyClick(tl.plot, key)
        tl.plot.grab()
    qtbot.waitUntil(lambda: tl.lanes_item._pending is None, timeout=10_000)
    assert tl.lanes_item.queries > queries
    assert tl.lanes_item.rect_count() > 0 and not tl.lanes_item.error
    # A click on a kernel: its details and its peers are read on the store thread too.
    tl.set_x_range(*tl.x_range())
    tl.settle()
    guard.reads.clear()
    lane = next(i for i, ld in enumerate(tl.lanes_item.data) if len(ld) and (ld.index >= 0).any())
    ld = tl.lanes_item.data[lane]
    j = int(np.flatnonzero(ld.index >= 0)[0])
    tl.select(int(ld.track[j]), int(ld.index[j]), (int(ld.start_ns[j]), int(ld.end_ns[j])))
    qtbot.waitUntil(lambda: view.details.shown == tl.selected, timeout=10_000)
    assert guard.reads == [], "HDF5 read on the GUI thread:\n" + "\n".join(guard.reads[:5])


def test_paint_draws_what_is_cached_and_repaints_when_the_window_arrives(qtbot, dlrm_store, monkeypatch):
    from kat_gui.ui.run_model import RunModel
    from kat_gui.ui.timeline import TimelineView

    m = RunModel(dlrm_store).preload()
    try:
        tl = TimelineView(m)
        qtbot.addWidget(tl)
        tl.resize(1000, 500)
        tl.show()
        qtbot.waitExposed(tl)
        tl.settle()
        assert tl.lanes_item.rect_count() > 0
        shown = tl.lanes_item.rect_count()
        # Hold the run's store thread, then jump to a window 1000x narrower: the paint must not wait.
        gate = threading.Event()
        m.submit(gate.wait, 10)
        guard = GuiThreadReads(monkeypatch)
        tl.zoom_ns(
            m.t0_ns + (m.t1_ns - m.t0_ns) // 2, m.t0_ns + (m.t1_ns - m.t0_ns) // 2 + 50_000, margin=0.0
        )
        t = time.perf_counter()
        tl.plot.grab()
        paint_s = time.perf_counter() - t
        assert tl.lanes_item._pending is not None  # asked for the new window...
        assert tl.lanes_item.rect_count() == shown  # ...and drew the old answer meanwhile
        assert paint_s < 0.5
        gate.set()
        qtbot.waitUntil(lambda: tl.lanes_item._pending is None, timeout=10_000)
        assert tl.lanes_item.rect_count() != shown  # the new window's rectangles are in
        assert guard.reads == [], guard.reads[:3]
    finally:
        m.close()


@pytest.fixture(scope="module")
def big_frame(tmp_path_factory):
    """A large simulated run for detection: 8 ranks x 250 steps x 25 segments x 20 kernels (1M GPU kernels,
    collectives, launches, ProfilerStep annotations), written straight through the store API."""
    if str(ROOT) not in sys.path:  # benchmarks/ is a folder of scripts, not an installed package
        sys.path.insert(0, str(ROOT))
    from benchmarks.compare import synth_store
    from kat_gui.detect import load_frame
    from kat_gui.store import TraceStore

    path = tmp_path_factory.mktemp("big") / "big.kat.h5"
    synth_store(path, 8, 250, 25, 19, 2, 3)
    with TraceStore.open(path) as st:
        return path, load_frame(st)


def test_detection_reports_progress_often_and_stops_within_half_a_second_of_a_cancel(big_frame):
    from kat_gui.detect import detect_frame

    _path, fr = big_frame
    assert fr.n_gpu >= 1_000_000
    stamps: list[float] = []
    t0 = time.perf_counter()
    res = detect_frame(fr, progress=lambda f, m: stamps.append(time.perf_counter()))
    total = time.perf_counter() - t0
    gaps = np.diff([t0, *stamps, t0 + total])
    assert len(stamps) >= 20 and res.findings
    # Cancel at several moments: the next progress call raises, detection stops there.
    for at in (0.15, 0.4, 0.65, 0.85):
        cancel_at = time.perf_counter() + at * total

        def progress(_f, _m, cancel_at=cancel_at):
            if time.perf_counter() >= cancel_at:
                raise Cancelled()

        try:
            detect_frame(fr, progress=progress)
        except Cancelled:
            pass
        # Stopped (or, the cancel coming after the last step, finished) within 0.5 s of the cancel.
        latency = time.perf_counter() - cancel_at
        assert latency < 0.5, (at, latency, f"longest gap between progress calls {gaps.max():.3f} s")


def test_gui_detection_job_cancelled_mid_way_stops_within_half_a_second(
    qtbot, big_frame, tmp_path, monkeypatch
):
    from kat_gui.detect import detect_store

    # The whole-run path (detect_frame on the loaded run), whose progress this covers; a run above
    # $KAT_DETECT_WINDOW_ROWS GPU events is analysed window by window instead (kat_gui.detect.streamed).
    monkeypatch.setenv("KAT_DETECT_WINDOW_ROWS", str(10**9))
    from kat_gui.ui.workers import Job, submit

    path = tmp_path / "big.kat.h5"
    shutil.copy(big_frame[0], path)
    seen: list[tuple[float, str]] = []
    job = Job("detecting", lambda j: detect_store(path, progress=j.progress))
    job.signals.progress.connect(lambda f, m: seen.append((f, m)))
    submit(job)
    # Mid-way: once detection proper runs (past reading the events).
    qtbot.waitUntil(lambda: any(f >= 0.4 for f, _m in seen), timeout=60_000)
    t = time.perf_counter()
    job.cancel()
    qtbot.waitUntil(lambda: job.state != "running", timeout=10_000)
    assert job.state == "cancelled"
    assert time.perf_counter() - t < 0.5
    from kat_gui.store import TraceStore

    with TraceStore.open(path) as st:  # nothing was written
        assert st.get_json("detect/findings") is None


def test_a_finished_job_is_freed_though_its_slots_close_over_it(qtbot):
    """Slots that close over their job (the window's ``lambda: self._job_finished(job)``) form a cycle through
    Qt's connection list that Python's collector cannot see; the job drops its connections once ``finished``
    has reached every slot, so the job and what its slots hold are freed (a closed run's panels and model)."""
    import gc
    import weakref

    from kat_gui.ui.workers import Job, submit

    class Payload:  # stands for a panel a slot holds
        pass

    got: list = []

    def start() -> tuple[weakref.ref, weakref.ref]:
        held = Payload()
        job = Job("work", lambda j: 42)
        job.signals.done.connect(lambda r: got.append((r, job.state, held is not None)))  # closes over both
        for i in range(20):  # every slot of ``finished`` runs before the job drops its connections
            job.signals.finished.connect(lambda i=i: got.append((i, job.state)))
        submit(job)
        return weakref.ref(job), weakref.ref(held)

    job_ref, held_ref = start()
    qtbot.waitUntil(lambda: len(got) == 21, timeout=10_000)
    QtWidgets.QApplication.processEvents()
    assert got == [(42, "done", True)] + [(i, "done") for i in range(20)]  # done first, then each slot once
    qtbot.waitUntil(lambda: (gc.collect(), job_ref() is None and held_ref() is None)[1], timeout=10_000)


def test_closing_waits_for_the_workers_before_closing_the_stores(qtbot, store_copy):
    from kat_gui.ui.main_window import MainWindow
    from kat_gui.ui.workers import Job

    win = MainWindow(interactive=False, use_llm=False)
    win.show()
    view = win.open_store(store_copy)
    m = view.model
    qtbot.waitUntil(lambda: not win.busy(), timeout=60_000)
    # A slow read on the run's store thread: the store must still be open when it reads.
    read = {}
    started = threading.Event()

    def slow_read():
        started.set()
        time.sleep(0.4)
        read["n"] = m.store.n_events
        read["row"] = m.event(m.ranks[0].gpu_tracks[0], 0)["start_ns"]

    fut = m.submit(slow_read)
    assert started.wait(10)
    # A long job on the pool that only stops when cancelled.
    stopped = {}

    def work(job):
        try:
            for _ in range(400):
                job.progress(0.5, "working")
                time.sleep(0.02)
        finally:
            stopped["at"] = time.perf_counter()

    job = win.start_job(Job("long work", work))
    qtbot.waitUntil(lambda: job.state == "running", timeout=5_000)
    queued = m.submit(time.sleep, 5)  # queued behind the slow read: dropped by the close, never run
    t = time.perf_counter()
    win.close()
    closed_at = time.perf_counter()
    assert fut.done() and fut.exception() is None and read["row"] > 0  # read before the store closed
    assert job.state == "cancelled" and stopped["at"] <= closed_at  # stopped before close returned
    assert queued.cancelled() and closed_at - t < 3.0
    assert m.store._f is None  # and the store is closed now
    with pytest.raises(RuntimeError):
        m.submit(lambda: None)  # a closed run takes no more reads
    win.deleteLater()


def _diffs(n: int, rng) -> list:
    from kat_gui.compare.result import Difference

    out = []
    sig = rng.random(n) < 0.05
    for i in range(n):
        h = float(rng.uniform(1e3, 1e6))
        out.append(
            Difference(
                kind="kernel_rank",
                label=f"kernel_{i % 1000}",
                name=f"kernel_{i % 1000}",
                rank=i // 1000,
                n_healthy=10,
                n_degraded=10,
                p50_healthy_ns=h,
                p50_degraded_ns=h * float(rng.uniform(0.8, 1.3)),
                effect=float(rng.uniform(-0.2, 0.3)),
                q_value=float(rng.uniform(0, 1)),
                significant=bool(sig[i]),
            )
        )
    return out


def test_comparison_table_model_64k_rows_significant_first(qtbot):
    from kat_gui.ui.compare_view import DIFF_HEADERS, DiffTableModel, diff_columns

    rng = np.random.default_rng(7)
    diffs = _diffs(64_000, rng)  # 64 ranks x 1,000 kernels
    cols = diff_columns(diffs)  # made on the worker in the window
    model = DiffTableModel()
    view = QtWidgets.QTableView()
    qtbot.addWidget(view)
    view.setModel(model)
    view.setSortingEnabled(True)
    view.horizontalHeader().setSortIndicator(-1, QtCore.Qt.SortOrder.AscendingOrder)
    view.horizontalHeader().setResizeContentsPrecision(200)
    view.resize(900, 600)
    view.show()
    qtbot.waitExposed(view)
    t = time.perf_counter()
    model.set_diffs(diffs, cols)
    view.resizeColumnsToContents()
    view.grab()
    fill_s = time.perf_counter() - t
    assert model.rowCount() == 64_000
    assert fill_s < 0.5, fill_s
    n_sig = int(cols["significant"].sum())
    rows = model.rows()
    assert all(d.significant for d in rows[:n_sig]) and not any(d.significant for d in rows[n_sig:])
    # Within each part, the comparison's ranking (the list order) is kept.
    pos = {id(d): i for i, d in enumerate(diffs)}
    ranks = [pos[id(d)] for d in rows]
    assert ranks[:n_sig] == sorted(ranks[:n_sig]) and ranks[n_sig:] == sorted(ranks[n_sig:])
    # Sorting by a column (as a header click does): significant rows stay first, each part ordered.
    col = DIFF_HEADERS.index("effect")
    for order in (QtCore.Qt.SortOrder.DescendingOrder, QtCore.Qt.SortOrder.AscendingOrder):
        t = time.perf_counter()
        view.sortByColumn(col, order)
        view.grab()
        assert time.perf_counter() - t < 0.5
        rows = model.rows()
        assert all(d.significant for d in rows[:n_sig])
        eff = [d.effect for d in rows[:n_sig]]
        assert eff == sorted(eff, reverse=order == QtCore.Qt.SortOrder.DescendingOrder)
    # The texts and colours of a row, and "significant only".
    fg = QtCore.Qt.ItemDataRole.ForegroundRole
    assert model.data(model.index(0, 6), fg).name() != "#8a8a8a"
    assert model.data(model.index(n_sig, 6), fg).name() == "#8a8a8a"
    assert model.data(model.index(0, 1)) == rows[0].label
    model.set_only_significant(True)
    assert model.rowCount() == n_sig and all(d.significant for d in model.rows())
