"""The layering of docs/architecture.md, checked on the source (ast), not by convention.

The unit of layering is a package of ``kat_gui/`` (``detect/``, ``store/``...) or a top-level module
(``events.py``, ``pipeline.py``...; ``__init__.py`` is the unit ``kat_gui``). The import graph between units is
built from every ``import`` statement, function-level ones included, plus string constants that name a
``kat_gui`` module (``importlib.import_module`` targets: the CLI's command table, the ingest reader registry).
A unit may *reach*, through any chain of imports, only the units that the table below lets it reach through
the same chain of allowed imports. ``LAYERS`` is the table of docs/architecture.md as data; a test keeps the
two the same.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from collections import deque
from itertools import pairwise
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "kat_gui"
ARCH_DOC = PKG.parent / "docs" / "architecture.md"

QT_MODULES = ("PySide6", "shiboken6", "pyqtgraph", "qtpy", "PyQt5", "PyQt6")

# The foundation: the event schema (numpy only) and stdlib-only helpers every layer may use.
FOUNDATION = frozenset({"events", "errors", "progress", "resource_files", "kat_gui"})
EVERYTHING = "*"

# unit -> units it may import (directly or through them). Same content as the table of docs/architecture.md.
LAYERS: dict[str, frozenset[str]] = {
    "events": frozenset(),
    "errors": frozenset(),
    "progress": frozenset(),
    "resource_files": frozenset(),
    "kat_gui": frozenset(),
    "parallel": FOUNDATION,
    "ingest": FOUNDATION,
    "store": FOUNDATION,
    "topology": FOUNDATION,
    "simulate": FOUNDATION,
    "detect": FOUNDATION | {"store", "topology", "parallel"},
    "reasoning": FOUNDATION | {"topology"},
    "explain": FOUNDATION | {"reasoning", "detect", "store"},
    "compare": FOUNDATION | {"store", "detect"},
    "annotations": FOUNDATION | {"store"},
    "report": FOUNDATION | {"annotations", "compare", "explain"},
    "pipeline": FOUNDATION | {"ingest", "store", "topology", "parallel"},
    "demo": FOUNDATION | {"simulate", "pipeline", "detect"},
    "ui": frozenset({EVERYTHING, "-cli", "-__main__"}),
    "cli": frozenset({EVERYTHING, "-__main__"}),
    "__main__": frozenset({"cli"}),
}

Graph = dict[str, dict[str, list[str]]]  # unit -> {imported unit: ["file:line", ...]}


# ---------------------------------------------------------------------------------------------- the checker


def unit_of(path: Path) -> str:
    """The layering unit of a file under kat_gui/."""
    rel = path.relative_to(PKG).parts
    return "kat_gui" if rel == ("__init__.py",) else rel[0].removesuffix(".py")


def _module_unit(mod: str) -> str | None:
    parts = mod.split(".")
    if parts[0] != "kat_gui":
        return None
    return parts[1] if len(parts) > 1 else "kat_gui"


def _is_module(mod: str) -> bool:
    p = PKG.parent.joinpath(*mod.split("."))
    return p.with_suffix(".py").is_file() or (p / "__init__.py").is_file()


def imported_modules(path: Path, text: str | None = None) -> list[tuple[str, int]]:
    """(absolute module name, line) for every import in a file (its ``text`` when given), relative imports
    resolved; ``from m import x`` yields ``m.x`` when that is a module, else ``m``; a string constant naming a
    kat_gui module counts too."""
    if text is None:
        text = path.read_text(encoding="utf-8")
    tree = ast.parse(text, filename=str(path))
    pkg_parts = path.relative_to(PKG.parent).with_suffix("").parts[:-1]
    found: list[tuple[str, int]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend((a.name, node.lineno) for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = pkg_parts[: len(pkg_parts) - node.level + 1]
                mod = ".".join([*base, node.module] if node.module else base)
            else:
                mod = node.module or ""
            for a in node.names:
                sub = f"{mod}.{a.name}"
                found.append((sub if _is_module(sub) else mod, node.lineno))
        elif (
            isinstance(node, ast.Constant)
            and isinstance(node.value, str)
            and re.fullmatch(r"kat_gui(\.\w+)+", node.value)
            and _is_module(node.value)
        ):
            found.append((node.value, node.lineno))
    return found


def import_graph(root: Path = PKG) -> Graph:
    """The unit-level import graph of the package, with where each edge comes from."""
    graph: Graph = {}
    for f in sorted(root.rglob("*.py")):
        src = unit_of(f)
        edges = graph.setdefault(src, {})
        for mod, line in imported_modules(f):
            dst = _module_unit(mod)
            if dst is not None and dst != src:
                edges.setdefault(dst, []).append(f"{f.relative_to(PKG.parent)}:{line}")
    return graph


def expand(layers: dict[str, frozenset[str]]) -> dict[str, set[str]]:
    """The table with ``*`` (everything, less the ``-name`` entries) written out."""
    units = set(layers)
    out = {}
    for u, allowed in layers.items():
        if EVERYTHING in allowed:
            out[u] = units - {u} - {a[1:] for a in allowed if a.startswith("-")}
        else:
            out[u] = set(allowed)
    return out


def reach(graph: dict[str, set[str]] | Graph, start: str) -> dict[str, list[str]]:
    """Every unit reachable from ``start``, with one shortest path to it (start excluded)."""
    paths: dict[str, list[str]] = {start: [start]}
    todo = deque([start])
    while todo:
        u = todo.popleft()
        for v in sorted(graph.get(u, ())):
            if v not in paths:
                paths[v] = [*paths[u], v]
                todo.append(v)
    del paths[start]
    return paths


def violations(graph: Graph, layers: dict[str, frozenset[str]]) -> list[str]:
    """One line per unit that reaches a unit the table does not let it reach, or that the table lacks."""
    allowed = expand(layers)
    out = [f"{u}: not in the layering table" for u in sorted(graph) if u not in allowed]
    for u in sorted(graph):
        if u not in allowed:
            continue
        may = set(reach(allowed, u))
        for v, path in sorted(reach(graph, u).items()):
            if v not in may:
                hops = ", ".join(f"{a} -> {b} ({graph[a][b][0]})" for a, b in pairwise(path))
                out.append(f"{u} reaches {v}: {hops}")
    return out


def cycles(layers: dict[str, frozenset[str]]) -> list[str]:
    """Units the table lets reach themselves (the allowed graph must flow one way)."""
    allowed = expand(layers)
    return [u for u in sorted(allowed) if any(v == u or u in reach(allowed, v) for v in allowed[u])]


# ---------------------------------------------------------------------------------------------- the rules


def test_every_unit_reaches_only_what_the_table_allows():
    graph = import_graph()
    assert {"detect", "store", "ingest", "ui", "events", "cli"} <= set(graph)  # the walk found the package
    assert violations(graph, LAYERS) == []


def test_the_table_flows_one_way():
    assert cycles(LAYERS) == []


def test_detection_never_sees_ground_truth():
    """detect/, reasoning/ and explain/ never reach simulate/, not even through another unit."""
    graph = import_graph()
    for stage in ("detect", "reasoning", "explain"):
        assert stage in graph
        assert "simulate" not in reach(graph, stage), reach(graph, stage)["simulate"]


def test_checker_catches_direct_and_transitive_violations():
    layers = {
        "events": frozenset(),
        "store": frozenset({"events"}),
        "detect": frozenset({"store", "events"}),
        "simulate": frozenset({"events"}),
        "cli": frozenset({EVERYTHING}),
    }
    ok: Graph = {
        "events": {},
        "store": {"events": ["store.py:1"]},
        "detect": {"store": ["detect.py:1"]},  # reaches events through store: allowed
        "simulate": {"events": ["sim.py:1"]},
        "cli": {"detect": ["cli.py:1"], "simulate": ["cli.py:2"]},
    }
    assert violations(ok, layers) == []
    # store now imports simulate: store breaks the table directly, detect through store.
    bad = {**ok, "store": {"events": ["store.py:1"], "simulate": ["store.py:9"]}}
    assert violations(bad, layers) == [
        "detect reaches simulate: detect -> store (detect.py:1), store -> simulate (store.py:9)",
        "store reaches simulate: store -> simulate (store.py:9)",
    ]
    # A unit the table does not know is reported, and so is a table that lets a unit reach itself.
    assert violations({**ok, "newpkg": {}}, layers) == ["newpkg: not in the layering table"]
    assert cycles({**layers, "events": frozenset({"detect"})}) == ["detect", "events", "store"]


def test_checker_reads_function_level_relative_and_string_imports():
    src = (
        "import os\n"
        "from . import frame\n"
        "from ..store import TraceStore\n"
        "def f():\n"
        "    from kat_gui import simulate\n"
        "    return importlib.import_module('kat_gui.report.command')\n"
    )
    # Read as if it were detect/__init__.py: relative imports resolve against kat_gui.detect.
    found = imported_modules(PKG / "detect" / "__init__.py", text=src)
    assert found == [
        ("os", 1),
        ("kat_gui.detect.frame", 2),  # a module of the package
        ("kat_gui.store", 3),
        ("kat_gui.simulate", 5),
        ("kat_gui.report.command", 6),
    ]


def _doc_table() -> dict[str, frozenset[str]]:
    """The 'may import' column of the package table of docs/architecture.md, parsed back into LAYERS' form."""
    text = ARCH_DOC.read_text(encoding="utf-8")
    section = text.split("## Packages", 1)[1].split("\n## ", 1)[0]
    table: dict[str, frozenset[str]] = {}

    def unit(tok: str) -> str:
        tok = tok.strip("`").removesuffix("/").removesuffix(".py")
        return "kat_gui" if tok == "__init__" else tok

    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 3 or not cells[0].startswith("`"):
            continue
        names = [unit(t) for t in re.findall(r"`[^`]+`", cells[0])]
        may = cells[2]
        listed = {unit(t) for t in re.findall(r"`[^`]+`", may)}
        if may.startswith("everything"):
            allowed = frozenset({EVERYTHING} | {f"-{u}" for u in listed})
        else:
            allowed = frozenset(listed | (FOUNDATION if "foundation" in may else set()))
        for n in names:
            table[n] = allowed
    return table


def test_docs_table_says_the_same():
    assert _doc_table() == LAYERS


# ---------------------------------------------------------------------------------------------- libraries


def _offenders(files, pred) -> list[str]:
    out = []
    for f in files:
        bad = sorted({m for m, _ in imported_modules(f) if pred(m)})
        if bad:
            out.append(f"{f.relative_to(PKG.parent)}: {', '.join(bad)}")
    return out


def _files(sub: str = "") -> list[Path]:
    return sorted((PKG / sub).rglob("*.py"))


def test_qt_only_under_ui():
    files = [f for f in _files() if unit_of(f) != "ui"]
    assert _offenders(files, lambda m: m.split(".")[0] in QT_MODULES) == []


def test_only_store_touches_h5py():
    files = [f for f in _files() if unit_of(f) != "store"]
    assert _offenders(files, lambda m: m.split(".")[0] == "h5py") == []


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
