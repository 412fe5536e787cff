"""Several KAT processes on one run at once (issue 14): readers never fail because another process has the store
open, writers wait for each other through the sidecar lock and never break open readers, and the GUI offers to
reload what another process wrote. Real processes throughout; every wait is bounded."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

from kat_gui.annotations import AnnotationModel
from kat_gui.errors import KatInputError
from kat_gui.store import TraceStore
from kat_gui.store.lock import StoreBusy, lock_path, write_lock

ROOT = Path(__file__).resolve().parents[1]
TIMEOUT = 180


@pytest.fixture(scope="module")
def base_store(tmp_path_factory, dlrm_dir) -> Path:
    from kat_gui import pipeline

    return pipeline.ingest(sorted(dlrm_dir.glob("*.json.gz")), tmp_path_factory.mktemp("cc") / "run.kat.h5")


@pytest.fixture
def store(base_store, tmp_path) -> Path:
    p = tmp_path / "run.kat.h5"
    shutil.copy(base_store, p)
    return p


def _env(**extra: str) -> dict[str, str]:
    # faulthandler: a crash of a child (a window quitting with a worker still reading) shows where it was.
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen", PYTHONPATH=str(ROOT), PYTHONFAULTHANDLER="1")
    env.update(extra)
    return env


def kat(*args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "kat_gui", *args],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        env=_env(**env),
    )


def assert_clean(res: subprocess.CompletedProcess, what: str) -> None:
    out = res.stdout + res.stderr
    assert res.returncode == 0, f"{what}: exit {res.returncode}\n{out[-3000:]}"
    assert "Errno" not in out and "Traceback" not in out and "unable to lock" not in out, (
        f"{what}:\n{out[-3000:]}"
    )


@contextmanager
def holding(code: str, ready: str = "ready") -> Iterator[subprocess.Popen]:
    """A Python process running ``code``, which prints ``ready`` once it holds what it holds, then sleeps;
    killed at the end."""
    proc = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(),
    )
    try:
        line = proc.stdout.readline()  # the holder prints within seconds or dies (then "")
        assert line.strip() == ready, (
            f"holder did not start: {line!r} {proc.stderr.read() if proc.poll() else ''}"
        )
        yield proc
        assert proc.poll() is None, f"the holder died: {proc.stderr.read()[-2000:]}"
    finally:
        proc.kill()
        proc.wait(timeout=30)
        proc.stdout.close()
        proc.stderr.close()


def lock_holder(store: Path) -> str:
    """Code for ``holding``: a process that keeps ``store``'s write lock."""
    return f"""
        import time
        from kat_gui.store.lock import write_lock
        with write_lock({str(store)!r}, 0):
            print("ready", flush=True)
            time.sleep(600)
    """


def gui_model_holder(path: Path) -> str:
    """A process that opens the run the way the GUI does (RunModel: store held, notes model on it), reads a
    window, and keeps it open."""
    return f"""
        import time
        from kat_gui.ui.run_model import RunModel
        m = RunModel({str(path)!r})
        assert m.notes is not None and m.store.mode == "r+"
        lane = m.lanes()[0]
        m.window(lane.tracks, m.t0_ns, m.t1_ns, 1000)
        print("ready", flush=True)
        time.sleep(600)
    """


def test_commands_succeed_while_another_process_holds_the_run(store, tmp_path):
    with holding(gui_model_holder(store)):
        assert_clean(kat("info", str(store)), "kat info")
        res = kat("detect", str(store), "--json", str(tmp_path / "d.json"))
        assert_clean(res, "kat detect")
        assert "finding" in res.stdout
        assert_clean(kat("report", str(store), "-o", str(tmp_path / "report")), "kat report")
        assert (tmp_path / "report" / "report.html").is_file()
        assert_clean(kat("explain", str(store), "--no-llm"), "kat explain")
        # A second reader in another process, and one in this process.
        with holding(gui_model_holder(store)):
            with TraceStore.open(store) as st:
                assert st.get_json("detect/findings")["findings"]
            assert_clean(kat("info", str(store), "--json"), "kat info (two holders)")
    # The hidden lock file is the only thing added beside the store.
    assert lock_path(store).name == ".run.kat.h5.lock"


def test_detect_waits_for_a_writer_then_names_it(store, monkeypatch):
    monkeypatch.setenv("KAT_LOCK_WAIT", "1")  # for the reads and writes of this process
    with holding(lock_holder(store)) as proc:
        t = time.monotonic()
        res = kat("detect", str(store), KAT_LOCK_WAIT="1")
        waited = time.monotonic() - t
        assert res.returncode == 2, res.stdout + res.stderr
        lines = res.stderr.strip().splitlines()
        assert lines == [
            f"kat: error: {store} is being written by KAT pid {proc.pid} (python -c); try again when it finishes"
        ], res.stderr
        assert waited >= 1.0
        # Readers are not refused meanwhile (they wait for the lock as long, then read without it).
        assert_clean(kat("info", str(store), KAT_LOCK_WAIT="0.2"), "kat info during a write")
        with pytest.raises(StoreBusy, match=f"pid {proc.pid}"), TraceStore.open(store, "r+") as st:
            with write_lock(store, 0.1):
                pass
            st.put_json("x", 1)
    with TraceStore.open(store) as st:
        assert st.get_json("detect/findings") is None  # the refused detection wrote nothing
    res = kat("detect", str(store), KAT_LOCK_WAIT="1")
    assert_clean(res, "kat detect after the writer left")


def test_gui_window_open_while_commands_run(store, tmp_path):
    assert_clean(kat("detect", str(store)), "kat detect (before the GUI)")
    gui = subprocess.Popen(
        [sys.executable, "-m", "kat_gui", "gui", str(store)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(KAT_CONFIG_DIR=str(tmp_path / "config"), KAT_CACHE_DIR=str(tmp_path / "cache")),
    )
    try:
        # The window holds the store open once the run is shown (seen in /proc: no output to wait for).
        deadline = time.monotonic() + 120
        while not _has_open(gui.pid, store):
            assert gui.poll() is None, gui.stderr.read()[-3000:]
            assert time.monotonic() < deadline, "the GUI did not open the store"
            time.sleep(0.2)
        assert_clean(kat("info", str(store)), "kat info beside the GUI")
        assert_clean(kat("detect", str(store)), "kat detect beside the GUI")
        assert_clean(kat("report", str(store), "-o", str(tmp_path / "rep")), "kat report beside the GUI")
        shot = tmp_path / "shot.png"
        res = kat(
            "gui",
            str(store),
            "--screenshot",
            str(shot),
            "--quit",
            KAT_CONFIG_DIR=str(tmp_path / "config2"),
            KAT_CACHE_DIR=str(tmp_path / "cache2"),
        )
        assert_clean(res, "a second window")
        assert shot.stat().st_size > 10_000
        assert gui.poll() is None, "the first window died"
    finally:
        gui.kill()
        _, err = gui.communicate(timeout=30)
    assert "Traceback" not in err and "Errno" not in err, err[-3000:]


def _has_open(pid: int, path: Path) -> bool:
    fd_dir = Path(f"/proc/{pid}/fd")
    if not fd_dir.is_dir():
        pytest.skip("needs /proc to see when the GUI has the store open")
    target = str(path.resolve())
    for fd in fd_dir.iterdir():
        try:
            if os.readlink(fd) == target:
                return True
        except OSError:
            continue
    return False


def test_reader_sees_results_written_by_another_process(store):
    with TraceStore.open(store) as st:
        assert st.get_json("detect/findings") is None and not st.changed()
        track = next(t.id for t in st.tracks if t.row_count)
        before = st.window([track], *st.time_span(), 1000)[track]
        proc = subprocess.Popen(
            [sys.executable, "-m", "kat_gui", "detect", str(store)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env=_env(),
        )
        reads = 0
        while proc.poll() is None:  # read results and events all the time the other process runs
            st.get_json("detect/findings")
            st.get_table("detect/anomalies")
            st.result_keys()
            assert len(st.window([track], *st.time_span(), 1000)[track]) == len(before)
            reads += 1
        assert proc.returncode == 0, proc.stderr.read()
        proc.stderr.close()
        assert reads > 0
        assert st.changed() and not st.replaced()
        found = st.get_json("detect/findings")  # fresh without reopening
        assert found["findings"]
        st.reopen()
        assert not st.changed()
        assert st.get_json("detect/findings") == found
        assert st.get_table("detect/anomalies")["rank"].size > 0


def test_results_reads_stay_consistent_during_many_writes(store):
    """A writer process replaces a table and a document 200 times (sizes vary, so space freed in a write is
    reused in it); reads in between see one whole version each time, never a mix and never an error."""
    writer = f"""
        import time
        import numpy as np
        from kat_gui.store import TraceStore
        print("ready", flush=True)
        with TraceStore.open({str(store)!r}, "r+") as st:
            for i in range(200):
                time.sleep(0.002)
                n = 100 + (i * 7919) % 5000
                with st.writing():
                    st.put_table("test/table", {{"x": np.arange(n), "n": np.full(n, n)}})
                    st.put_json("test/json", {{"i": i, "pad": "x" * n}})
        print("done", flush=True)
    """
    with TraceStore.open(store) as st:
        proc = subprocess.Popen(
            [sys.executable, "-c", textwrap.dedent(writer)], stdout=subprocess.PIPE, text=True, env=_env()
        )
        assert proc.stdout.readline().strip() == "ready"
        seen = set()
        while proc.poll() is None:
            t = st.get_table("test/table")
            if t is not None:
                n = int(t["n"][0])
                assert len(t["x"]) == n and (t["n"] == n).all() and (t["x"] == np.arange(n)).all()
                seen.add(n)
            j = st.get_json("test/json")
            if j is not None:
                assert len(j["pad"]) == 100 + (j["i"] * 7919) % 5000
        assert proc.returncode == 0
        proc.stdout.close()
        assert st.get_json("test/json")["i"] == 199
    assert len(seen) > 5, "reads did not interleave with the writes"


def test_notes_saved_beside_other_processes_are_merged_and_intact(store):
    mine = AnnotationModel(store)
    events = []
    mine.connect(lambda ev: events.append(ev.kind))
    first = mine.add("mine before", start_ns=10)
    other = f"""
        from kat_gui.annotations import AnnotationModel
        m = AnnotationModel({str(store)!r})
        m.add("from the other window", start_ns=20)
        m.add("and another", "rank", rank=3)
        print("ready", flush=True)
    """
    with holding(gui_model_holder(store)):
        res = subprocess.run(
            [sys.executable, "-c", textwrap.dedent(other)],
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
            env=_env(),
        )
        assert res.returncode == 0, res.stderr
        second = mine.add("mine after", start_ns=30)  # its id was taken by the other process meanwhile
        assert events[-1] == "reset"
        texts = sorted(a.text for a in mine)
        assert texts == sorted(["mine before", "from the other window", "and another", "mine after"])
        mine.edit(first.id, text="mine before, edited")
        assert mine.undo() and mine.undo()  # undo the edit, then the add with its new id
        assert "mine after" not in [a.text for a in AnnotationModel(store)]
        assert mine.redo()
    again = AnnotationModel(store)
    assert sorted(a.text for a in again) == texts
    ids = [a.id for a in again]
    assert len(set(ids)) == len(ids) and second.id in {a.id for a in again if a.text == "mine after"} | {
        second.id
    }


def test_reingest_replaces_the_file_under_an_open_reader(store, dlrm_dir, tmp_path):
    from kat_gui import pipeline

    with TraceStore.open(store, "r+") as st:
        st.put_json("detect/findings", {"findings": ["old"]})
        n = st.n_events
        pipeline.ingest(sorted(dlrm_dir.glob("*.json.gz"))[:2], store)  # a different run renamed over it
        assert st.changed() and st.replaced()
        assert st.n_events == n and st.get_json("detect/findings") == {
            "findings": ["old"]
        }  # still the old run
        track = next(t.id for t in st.tracks if t.row_count)
        assert len(st.window([track], *st.time_span(), 0)[track]) == st.tracks[track].row_count
        with pytest.raises(KatInputError, match="replaced by a new `kat ingest`"):
            st.put_json("detect/findings", {"findings": ["stale"]})
        st.reopen()
        assert st.n_events < n and st.get_json("detect/findings") is None and not st.changed()


@pytest.fixture
def window(qtbot, tmp_path, monkeypatch):
    """The real window, with private config and cache folders."""
    monkeypatch.setenv("KAT_CONFIG_DIR", str(tmp_path / "config"))
    monkeypatch.setenv("KAT_CACHE_DIR", str(tmp_path / "cache"))
    # The explanation panel would analyse the un-analysed run itself (a write of this process, offered too).
    monkeypatch.setattr("kat_gui.ui.explain_panel.explainer", lambda: None)
    from kat_gui.ui.main_window import MainWindow

    win = MainWindow(interactive=False, use_llm=False)
    qtbot.addWidget(win)
    yield win
    win.close()


def test_gui_offers_to_reload_what_another_process_wrote(qtbot, store, window):
    win = window
    view = win.open_store(store)
    assert view is not None and not view.model.has_detection
    view.timeline.set_x_range(0.001, 0.002)
    bar = win.reload_bar
    assert not bar.check() and bar.isHidden()
    view.model.notes.add("my own note", start_ns=view.model.t0_ns)  # one's own write is not news
    assert not bar.check()
    assert_clean(kat("detect", str(store)), "kat detect from a terminal")
    assert bar.check() and not bar.isHidden()
    assert "written by another KAT process" in bar.label.text()
    job = bar.reload()  # loaded again on a worker, as File > Open does
    assert bar.isHidden()
    qtbot.waitUntil(lambda: job.state == "done" and not win.busy(), timeout=TIMEOUT * 1000)
    new = win.current_view()
    assert new is not view and bar.isHidden() and win.tabs.count() == 1
    assert new.model.has_detection and new.model.findings
    assert [a.text for a in new.model.notes] == ["my own note"]
    assert new.timeline.x_range() == pytest.approx((0.001, 0.002))
    assert win.tabs.tabText(0).startswith("⚠ ")
    # Dismiss: not offered again until the next write.
    res = subprocess.run(
        [
            sys.executable,
            "-c",
            f"from kat_gui.annotations import AnnotationModel; AnnotationModel({str(store)!r}).add('x', start_ns=1)",
        ],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        env=_env(),
    )
    assert res.returncode == 0, res.stderr
    assert bar.check()
    bar.dismiss()
    assert not bar.check() and bar.isHidden()


def test_a_tab_closed_while_its_run_reloads_stays_closed(qtbot, store, window):
    win = window
    view = win.open_store(store)
    assert_clean(kat("detect", str(store)), "kat detect from a terminal")
    assert win.reload_bar.check()
    job = win.reload_bar.reload()
    win.close_tab(win.tabs.indexOf(view))  # before the worker is done
    qtbot.waitUntil(lambda: job.state == "done" and not win.busy(), timeout=TIMEOUT * 1000)
    assert win.tabs.count() == 0 and not win.errors and win.reload_bar.isHidden()


def test_the_notes_panel_says_a_busy_store_kept_the_note_for_later(store, window, monkeypatch):
    monkeypatch.setenv("KAT_LOCK_WAIT", "0.3")
    view = window.open_store(store)
    with holding(lock_holder(store)) as proc:
        assert view.notes.add_note("time", text="while busy") is None  # no exception out of the panel
        assert "Not saved yet" in view.notes.status.text() and str(proc.pid) in view.notes.status.text()
        assert [a.text for a in view.model.notes] == ["while busy"]
    assert view.notes.add_note("time", text="after") is not None
    assert [a.text for a in AnnotationModel(store)] == ["while busy", "after"]


def test_a_note_refused_by_a_busy_store_is_kept_and_saved_with_the_next(store, monkeypatch):
    monkeypatch.setenv("KAT_LOCK_WAIT", "0.3")
    m = AnnotationModel(store)
    heard = []
    m.connect(lambda ev: heard.append(ev.kind))
    with holding(lock_holder(store)) as proc:
        with pytest.raises(StoreBusy, match=f"is being written by KAT pid {proc.pid}"):
            m.add("while busy", start_ns=5)
        assert [a.text for a in m] == ["while busy"] and heard == ["added"] and m.can_undo
        assert len(AnnotationModel(store)) == 0
    m.add("after", start_ns=6)
    assert [a.text for a in AnnotationModel(store)] == ["while busy", "after"]
