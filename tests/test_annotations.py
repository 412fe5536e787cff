"""Annotations: pinned notes saved in the store on every change, undo/redo, change callbacks, survival of a
reopen and of a process killed right after an edit."""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from kat_gui.annotations import AnnotationModel, load_annotations
from kat_gui.store import TraceStore

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def base_store(tmp_path_factory, dlrm_dir) -> Path:
    from kat_gui import pipeline

    files = sorted(dlrm_dir.glob("*.json*"))[:2]
    return pipeline.ingest(files, tmp_path_factory.mktemp("ann") / "run.kat.h5")


@pytest.fixture
def store(base_store, tmp_path) -> Path:
    p = tmp_path / "run.kat.h5"
    shutil.copy(base_store, p)
    return p


def test_add_edit_delete_saved_and_reopened(store):
    m = AnnotationModel(store)
    a = m.add("NVLink looks slow here", start_ns=100, end_ns=200, rank=1)
    k = m.add("this GEMM", "kernel", track=1, index=5, start_ns=150, end_ns=160)
    m.add("GPU3 runs hot", "component", component="GPU3")
    m.edit(a.id, text="NVLink slow from step 20")
    m.delete(k.id)
    again = AnnotationModel(store)
    assert [x.text for x in again] == ["NVLink slow from step 20", "GPU3 runs hot"]
    assert again.get(a.id).rank == 1
    assert [x.id for x in again.in_range(0, 120)] == [a.id]
    assert again.for_component("GPU3")[0].target == "component"
    nid = again.add("next", start_ns=5)
    assert nid.id > k.id, "ids are never reused, even after a delete"
    with TraceStore.open(store) as st:
        assert [x.text for x in load_annotations(st)] == ["next", "NVLink slow from step 20", "GPU3 runs hot"]


def test_undo_redo_and_callbacks(store):
    m = AnnotationModel(store)
    seen = []
    m.connect(lambda ev: seen.append((ev.kind, ev.source, ev.annotation.text if ev.annotation else None)))
    a = m.add("first", start_ns=1)
    m.edit(a.id, text="second")
    m.delete(a.id)
    assert len(m) == 0
    assert m.undo()  # delete undone
    assert m.get(a.id).text == "second"
    assert m.undo()  # edit undone
    assert m.get(a.id).text == "first"
    assert m.redo()
    assert m.get(a.id).text == "second"
    assert AnnotationModel(store).get(a.id).text == "second", "undo/redo are saved like any change"
    assert m.undo() and m.undo()  # edit, then add undone
    assert len(m) == 0 and not m.can_undo and not m.undo()
    assert seen == [
        ("added", "user", "first"),
        ("changed", "user", "second"),
        ("removed", "user", "second"),
        ("added", "undo", "second"),
        ("changed", "undo", "first"),
        ("changed", "redo", "second"),
        ("changed", "undo", "first"),
        ("removed", "undo", "first"),
    ]
    m.add("new change clears redo", start_ns=3)
    assert not m.can_redo


def test_bad_notes_refused(store):
    m = AnnotationModel(store)
    with pytest.raises(ValueError):
        m.add("no time", "time")
    with pytest.raises(ValueError):
        m.add("no kernel", "kernel", track=1)
    with pytest.raises(ValueError):
        m.add("reversed", start_ns=10, end_ns=5)
    with pytest.raises(ValueError):
        m.add("where", "somewhere", start_ns=1)
    a = m.add("ok", start_ns=1)
    with pytest.raises(ValueError):
        m.edit(a.id, colour="red")
    assert len(AnnotationModel(store)) == 1


def test_open_store_handle_needs_write_mode(store):
    with TraceStore.open(store) as st, pytest.raises(ValueError, match="r\\+"):
        AnnotationModel(st)
    with TraceStore.open(store, "r+") as st:
        m = AnnotationModel(st)
        m.add("through the GUI's handle", start_ns=7)
    assert [a.text for a in AnnotationModel(store)] == ["through the GUI's handle"]


def test_survives_kill_after_edit(store):
    """A child process edits and dies at once (os._exit: no cleanup, no close); the note is there."""
    code = textwrap.dedent(
        f"""
        import os, sys
        sys.path.insert(0, {str(ROOT)!r})
        from kat_gui.store import TraceStore
        from kat_gui.annotations import AnnotationModel
        st = TraceStore.open({str(store)!r}, "r+")
        m = AnnotationModel(st)
        a = m.add("before the crash", start_ns=42)
        m.edit(a.id, text="edited, then killed")
        os._exit(9)
        """
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 9, r.stderr
    m = AnnotationModel(store)
    assert [a.text for a in m] == ["edited, then killed"]
