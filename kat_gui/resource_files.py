"""Where KAT's data files are: the icon, the knowledge base, the kernel-class patterns, the model manifest.

The source of truth is the repository's top-level ``resources/`` folder and ``models/manifest.json``. A built wheel
(and the frozen app) carries a copy inside the package, ``kat_gui/_resources/`` with the manifest at
``_resources/models/manifest.json`` (made by ``packaging/build_hook.py``); a source checkout or an editable install
has no such copy and reads the top-level folders. The packaged copy wins when it exists.
"""

from __future__ import annotations

from pathlib import Path

_PKG = Path(__file__).resolve().parent
PACKAGED_DIR = _PKG / "_resources"
SOURCE_ROOT = _PKG.parent


def resources_dir() -> Path:
    """The folder holding ``icons/``, ``knowledge/`` and ``kernel_classes.toml`` (packaged copy first)."""
    return PACKAGED_DIR if PACKAGED_DIR.is_dir() else SOURCE_ROOT / "resources"


def resource_path(*parts: str) -> Path:
    """A path under :func:`resources_dir`; existence is the caller's to check (it names the file in errors)."""
    return resources_dir().joinpath(*parts)


def manifest_path() -> Path:
    """The bundled-model manifest: ``_resources/models/manifest.json`` when packaged, else ``models/manifest.json``."""
    packaged = PACKAGED_DIR / "models" / "manifest.json"
    return packaged if packaged.is_file() else SOURCE_ROOT / "models" / "manifest.json"
