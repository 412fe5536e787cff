"""The layering rules of docs/architecture.md, checked on the source (ast), not by convention."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "kat_gui"

QT_MODULES = ("PySide6", "shiboken6", "pyqtgraph", "qtpy", "PyQt5", "PyQt6")


def _imports(path: Path) -> set[str]:
    """Absolute module names imported by a file (relative imports resolved against the package)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    pkg_parts = path.relative_to(PKG.parent).with_suffix("").parts[:-1]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = pkg_parts[: len(pkg_parts) - node.level + 1]
                mod = ".".join([*base, node.module] if node.module else base)
            else:
                mod = node.module or ""
            found.add(mod)
            found.update(f"{mod}.{a.name}" for a in node.names)
    return found


def _files(sub: str = "") -> list[Path]:
    return sorted((PKG / sub).rglob("*.py"))


def _offenders(files, pred) -> list[str]:
    out = []
    for f in files:
        bad = sorted(m for m in _imports(f) if pred(m))
        if bad:
            out.append(f"{f.relative_to(PKG.parent)}: {', '.join(bad)}")
    return out


def test_qt_only_under_ui():
    files = [f for f in _files() if "ui" not in f.relative_to(PKG).parts[:1]]
    assert _offenders(files, lambda m: m.split(".")[0] in QT_MODULES) == []


def test_only_store_touches_h5py():
    files = [f for f in _files() if f.relative_to(PKG).parts[0] != "store"]
    assert _offenders(files, lambda m: m.split(".")[0] == "h5py") == []


@pytest.mark.parametrize("stage", ["detect", "reasoning", "explain"])
def test_detection_never_sees_ground_truth(stage):
    if not (PKG / stage).is_dir():
        pytest.skip(f"kat_gui/{stage} not present")
    assert _offenders(_files(stage), lambda m: m.startswith("kat_gui.simulate")) == []


def test_simulator_only_uses_the_event_schema():
    if not (PKG / "simulate").is_dir():
        pytest.skip("kat_gui/simulate not present")
    allowed = ("kat_gui.simulate", "kat_gui.events", "kat_gui.errors", "kat_gui.progress")
    bad = _offenders(_files("simulate"), lambda m: m.startswith("kat_gui") and not m.startswith(allowed)
                     and m != "kat_gui")
    assert bad == []


def test_core_imports_headless():
    """Importing every non-UI module must not load Qt (a fresh interpreter checks sys.modules)."""
    mods = []
    for f in _files():
        rel = f.relative_to(PKG.parent).with_suffix("")
        if rel.parts[1:2] == ("ui",) or rel.name == "__main__":
            continue
        mods.append(".".join(rel.parts).removesuffix(".__init__"))
    code = (
        "import importlib, sys\n"
        f"for m in {mods!r}:\n"
        "    importlib.import_module(m)\n"
        f"leak = [m for m in sys.modules if m.split('.')[0] in {QT_MODULES!r}]\n"
        "print(','.join(leak))\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == ""
