"""Shared fixtures. Real trace files live in ../shared/data relative to the repository root."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = (ROOT.parent / "shared" / "data").resolve()

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.fail(
            f"real trace data not found at {SHARED_DATA} (expected ../shared/data beside the repository)"
        )
    return SHARED_DATA


@pytest.fixture(scope="session")
def dlrm_dir(shared_data: Path) -> Path:
    return shared_data / "kineto" / "param_dlrm_8rank"


@pytest.fixture
def private_kat_dirs(tmp_path, monkeypatch):
    """Settings and caches of the code under test go to this test's own folder, never the user's."""
    monkeypatch.setenv("KAT_CONFIG_DIR", str(tmp_path / "config"))
    monkeypatch.setenv("KAT_CACHE_DIR", str(tmp_path / "cache"))


@pytest.fixture
def window(qtbot):
    """The real main window, shown offscreen at 1400x900. The deterministic narrative keeps the GUI tests fast;
    the model path is exercised by the explain tests."""
    from kat_gui.ui.main_window import MainWindow

    win = MainWindow(interactive=False, use_llm=False)
    qtbot.addWidget(win)
    win.resize(1400, 900)
    win.show()
    qtbot.waitExposed(win)
    return win
