"""setuptools ``build_py`` hook: ship ``resources/`` and ``models/manifest.json`` inside the wheel.

The top-level ``resources/`` folder and ``models/manifest.json`` stay the single source of truth (the repository
layout is fixed); ``package-data`` cannot reach outside ``kat_gui/``, so every non-editable build copies them into
``<build_lib>/kat_gui/_resources/`` (the manifest as ``_resources/models/manifest.json``). Nothing is written into
the source tree. Editable installs skip the copy: ``kat_gui.resource_files`` then finds the source tree's folders.

pyproject.toml names this class in ``[tool.setuptools.cmdclass]``; setuptools loads it by file path, so the
folder name ``packaging`` never shadows the ``packaging`` distribution.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parents[1]
PACKAGED = ("kat_gui", "_resources")
# Editor and OS droppings never belong in a wheel.
IGNORE = shutil.ignore_patterns("__pycache__", "*.pyc", ".DS_Store", "*~")


class BuildPy(build_py):
    def run(self) -> None:
        super().run()
        if getattr(self, "editable_mode", False):
            return
        dest = Path(self.build_lib).joinpath(*PACKAGED)
        if dest.exists():
            shutil.rmtree(dest)  # a stale copy from an earlier build must not linger
        shutil.copytree(ROOT / "resources", dest, ignore=IGNORE)
        (dest / "models").mkdir(exist_ok=True)
        shutil.copy2(ROOT / "models" / "manifest.json", dest / "models" / "manifest.json")
        # KAT's own explainer adapter and its model card live beside the manifest (the base model does not).
        for extra in sorted((ROOT / "models").glob("*.gguf")) + sorted((ROOT / "models").glob("kat-*.md")):
            shutil.copy2(extra, dest / "models" / extra.name)
