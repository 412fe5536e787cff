"""Scrubbing: take host and user names out of everything a report prints.

Reports leave the machine (postmortem documents, tickets), so by default they carry no host name (trace
metadata, topology) and no user name (home folders in source paths, the current login). Names are replaced by
stable pseudonyms (``host-1``, ``user``) so a reader can still tell two hosts apart.
"""

from __future__ import annotations

import getpass
import os
import re
from collections.abc import Iterable

_HOME_RX = re.compile(r"(?:/home/|/Users/|/export/home/|[A-Za-z]:\\Users\\)([^/\\\s\"']+)")
_HOST_KEYS = ("hostname", "host", "host_name", "node", "nodename")


class Scrubber:
    """Replaces each known secret token by its pseudonym in any text; the identity when disabled."""

    def __init__(self, enabled: bool = True):
        self.enabled = enabled
        self._map: dict[str, str] = {}
        self._rx: re.Pattern[str] | None = None
        self._hosts = 0

    def add_host(self, name: str) -> None:
        name = str(name).strip()
        if not name or name in self._map or len(name) < 2:
            return
        self._hosts += 1
        self._map[name] = f"host-{self._hosts}"
        short = name.split(".", 1)[0]
        if short != name and len(short) >= 2 and short not in self._map:
            self._map[short] = f"host-{self._hosts}"
        self._rx = None

    def add_user(self, name: str) -> None:
        name = str(name).strip()
        if len(name) < 2 or name in self._map or name in ("root", "user", "shared", "public"):
            return
        self._map[name] = "user"
        self._rx = None

    def learn_paths(self, texts: Iterable[str]) -> None:
        """Collect user names from home-folder paths (``/home/alice/...``) found in ``texts``."""
        for t in texts:
            for m in _HOME_RX.finditer(str(t)):
                self.add_user(m.group(1))

    def learn_environment(self) -> None:
        """The current login and host: a report written here must not name them either."""
        for name in {os.environ.get("USER", ""), os.environ.get("USERNAME", ""), _safe_user()}:
            if name:
                self.add_user(name)
        try:
            host = os.uname().nodename
        except AttributeError:  # pragma: no cover - Windows
            host = os.environ.get("COMPUTERNAME", "")
        if host and host not in ("localhost",):
            self.add_host(host)

    def learn_rank_meta(self, ranks: list[dict]) -> None:
        """Host names and source paths from the store's per-rank metadata."""
        for r in ranks:
            self.learn_paths([r.get("source", "")])
            meta = r.get("meta") or {}
            for key in _HOST_KEYS:
                if isinstance(meta.get(key), str):
                    self.add_host(meta[key])

    def __call__(self, text: object) -> str:
        s = "" if text is None else str(text)
        if not self.enabled or not self._map:
            return s
        if self._rx is None:
            keys = sorted(self._map, key=len, reverse=True)
            self._rx = re.compile(r"(?<![\w.-])(?:" + "|".join(re.escape(k) for k in keys) + r")(?![\w-])")
        return self._rx.sub(lambda m: self._map[m.group(0)], s)


def _safe_user() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no login name in some containers
        return ""
