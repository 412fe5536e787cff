"""Persistent GUI settings: recent files, window geometry, view options. Plain JSON, no Qt.

The file lives in the platformdirs user config dir, or in ``$KAT_CONFIG_DIR`` when set (tests point it at a
temporary folder so they never touch the user's settings). A missing or unreadable file means defaults: a
corrupt settings file must never stop the window from opening.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

MAX_RECENT = 10
SETTINGS_FILE = "gui.json"


def config_dir() -> Path:
    """Where settings live: ``$KAT_CONFIG_DIR`` or the platform's user config dir for ``kat``."""
    env = os.environ.get("KAT_CONFIG_DIR")
    if env:
        return Path(env)
    import platformdirs

    return Path(platformdirs.user_config_dir("kat", appauthor=False))


def cache_dir() -> Path:
    """Where the GUI writes stores it ingests and the demo runs: ``$KAT_CACHE_DIR`` or the user cache dir."""
    env = os.environ.get("KAT_CACHE_DIR")
    if env:
        return Path(env)
    import platformdirs

    return Path(platformdirs.user_cache_dir("kat", appauthor=False))


class Settings:
    """A dict of settings backed by one JSON file; ``save()`` writes it atomically."""

    def __init__(self, path: Path | None = None):
        self.path = path or config_dir() / SETTINGS_FILE
        self.data: dict[str, Any] = {}
        try:
            loaded = json.loads(self.path.read_text(encoding="utf-8"))
            if isinstance(loaded, dict):
                self.data = loaded
        except (OSError, ValueError):
            self.data = {}

    def get(self, key: str, default: Any = None) -> Any:
        return self.data.get(key, default)

    def set(self, key: str, value: Any) -> None:
        self.data[key] = value

    @property
    def recent(self) -> list[str]:
        items = self.data.get("recent", [])
        return [str(x) for x in items if isinstance(x, str)]

    def add_recent(self, path: str | os.PathLike) -> None:
        p = str(Path(path).resolve())
        items = [x for x in self.recent if x != p]
        self.data["recent"] = [p, *items][:MAX_RECENT]

    def save(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_suffix(".tmp")
            tmp.write_text(json.dumps(self.data, indent=1), encoding="utf-8")
            os.replace(tmp, self.path)
        except OSError:
            # Settings are a convenience: a read-only home must not break the application.
            pass
