"""The GUI's loader re-analyses a store whose results came from another detector version."""

from __future__ import annotations

from kat_gui import pipeline
from kat_gui.detect import DETECTOR_VERSION, detect_store
from kat_gui.store import TraceStore
from kat_gui.ui import loader


def test_stale_detection_is_redone(tmp_path, dlrm_dir):
    store = pipeline.ingest([dlrm_dir], tmp_path / "d.kat.h5")
    assert loader.detection_version(store) is None
    assert loader.analyse(store) == "detection finished"
    assert loader.detection_version(store) == DETECTOR_VERSION
    assert loader.analyse(store) == "detection results loaded from the store"

    with TraceStore.open(store, "r+") as st:
        meta = st.get_json("detect/meta")
        meta["detector"] = "kat-sync/0"
        st.put_json("detect/meta", meta)
    note = loader.analyse(store)
    assert "re-analysed" in note and "kat-sync/0" in note
    assert loader.detection_version(store) == DETECTOR_VERSION


def test_read_only_store_keeps_old_results(tmp_path, dlrm_dir):
    store = pipeline.ingest([dlrm_dir], tmp_path / "d.kat.h5")
    detect_store(store)
    with TraceStore.open(store, "r+") as st:
        meta = st.get_json("detect/meta")
        meta["detector"] = "kat-sync/0"
        st.put_json("detect/meta", meta)
    store.chmod(0o444)
    try:
        note = loader.analyse(store)
    finally:
        store.chmod(0o644)
    if "read-only" in note:  # root may write anyway; then it re-analyses
        assert "kat-sync/0" in note
    else:
        assert "re-analysed" in note
