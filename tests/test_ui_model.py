"""Headless parts of the GUI: settings, path handling, kernel colour classes, the run model (no window)."""

from __future__ import annotations

import numpy as np
import pytest

from kat_gui.errors import KatInputError
from kat_gui.events import EventKind
from kat_gui.ui import kernel_classes as kc
from kat_gui.ui import loader
from kat_gui.ui.settings import MAX_RECENT, Settings


def test_settings_roundtrip_recent_and_corrupt_file(tmp_path, monkeypatch):
    monkeypatch.setenv("KAT_CONFIG_DIR", str(tmp_path))
    s = Settings()
    for i in range(MAX_RECENT + 3):
        s.add_recent(tmp_path / f"run{i}.kat.h5")
    s.add_recent(tmp_path / "run5.kat.h5")  # re-opened: moves to the front, no duplicate
    s.set("geometry", "abc")
    s.save()
    again = Settings()
    assert again.recent[0].endswith("run5.kat.h5")
    assert len(again.recent) == MAX_RECENT and len(set(again.recent)) == MAX_RECENT
    assert again.get("geometry") == "abc"
    (tmp_path / "gui.json").write_text("{not json")
    assert Settings().recent == []  # a corrupt file means defaults, never a crash


def test_split_paths_sorts_stores_from_traces(tmp_path, dlrm_dir):
    store = tmp_path / "a.kat.h5"
    store.write_bytes(loader.HDF5_MAGIC + b"rest")
    renamed = tmp_path / "b.bin"
    renamed.write_bytes(loader.HDF5_MAGIC + b"rest")  # HDF5 by content, whatever the name
    stores, traces = loader.split_paths([store, renamed, dlrm_dir])
    assert stores == [store, renamed] and traces == [dlrm_dir]
    with pytest.raises(KatInputError, match="missing.json"):
        loader.split_paths([tmp_path / "missing.json"])


def test_cached_store_path_changes_when_a_file_changes(tmp_path):
    f = tmp_path / "rank0.json"
    f.write_text("{}")
    a = loader.cached_store_path([f], tmp_path / "cache")
    assert a == loader.cached_store_path([f], tmp_path / "cache")
    f.write_text('{"x": 1}')
    assert loader.cached_store_path([f], tmp_path / "cache") != a


def test_kernel_classes_by_name_and_kind():
    names = [
        "ncclDevKernel_AllReduce_Sum_f16_RING_LL",
        "sm90_xmma_gemm_bf16bf16_bf16f32",
        "rms_norm_kernel",
        "Memcpy HtoD (Pageable -> Device)",
        "cudaLaunchKernel",
    ]
    cls = kc.classify_strings(names)
    assert cls[0] == kc.COLLECTIVE and cls[1] == kc.COMPUTE and cls[2] == kc.MEMORY
    kinds = np.array(
        [EventKind.KERNEL, EventKind.KERNEL, EventKind.KERNEL, EventKind.MEMCPY, EventKind.RUNTIME], np.uint8
    )
    rc = kc.rect_classes(np.arange(5, dtype=np.int32), kinds, cls)
    assert rc[3] == kc.COPY and rc[4] == kc.HOST and rc[0] == kc.COLLECTIVE
    assert (
        kc.rect_classes(np.array([-1], np.int32), np.array([EventKind.KERNEL], np.uint8), cls)[0] == kc.OTHER
    )


def test_run_model_lanes_and_peer_kernels(dlrm_dir, tmp_path):
    from kat_gui.ui.run_model import RunModel

    (store,) = loader.prepare([dlrm_dir], tmp_path)
    m = RunModel(store)
    try:
        lanes = m.lanes()
        assert [ln.rank for ln in lanes if ln.kind == "rank"] == list(range(8))
        assert "V100" in m.rank_label(0)
        expanded = m.lanes(expanded={3})
        rank3 = [ln for ln in expanded if ln.rank == 3]
        assert len(rank3) > 1 and all(len(ln.tracks) == 1 for ln in rank3 if ln.kind == "stream")
        assert {ln.rank for ln in m.lanes(rank_filter={1, 7})} == {1, 7}
        # The first NCCL kernel of rank 7 and its peers: the same-named kernel on every other rank.
        tr = m.ranks[7].gpu_tracks
        ev = {t: m.store.track_events(t, ["name", "start_ns"]) for t in tr}
        nccl = [
            (t, i)
            for t, e in ev.items()
            for i, n in enumerate(e["name"])
            if "nccl" in m.string(int(n)).lower()
        ]
        track, index = min(nccl, key=lambda ti: ev[ti[0]]["start_ns"][ti[1]])
        peers = m.same_kernel_on_peers(track, index)
        assert sorted(p["rank"] for p in peers) == list(range(8))
        name = m.event(track, index)["name"]
        assert all(m.event(p["track"], p["index"])["name"] == name for p in peers)
        # Rank 1 waited ~7.6 ms inside the first collective while rank 7's kernel took ~10 µs (DLRM README).
        by_rank = {p["rank"]: p for p in peers}
        assert by_rank[1]["dur_ns"] > 5_000_000 > by_rank[7]["dur_ns"]
    finally:
        m.close()
