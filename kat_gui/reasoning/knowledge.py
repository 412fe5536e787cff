"""The troubleshooting knowledge base: one Markdown playbook per component or common cause.

Format (``resources/knowledge/README.md``): a ``# Title`` line, ``key: value`` header lines (``id``,
``components``, ``causes``), then ``## Section`` blocks of ``- `` bullets (continuation lines indented).
The ``## Checks`` bullets start with one or more commands in backticks followed by `` — what to look for``.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field
from pathlib import Path

from kat_gui.errors import KatInputError
from kat_gui.events import COMPONENTS
from kat_gui.resource_files import resource_path

KNOWLEDGE_DIR = resource_path("knowledge")
SECTIONS = ("Symptoms in traces", "Rules it in", "Rules it out", "Checks")
_HEADER = re.compile(r"^([a-z_]+):\s*(.*)$")
_PLACEHOLDER = re.compile(r"<([a-z][a-z _-]*)>")


@dataclass(frozen=True)
class Check:
    commands: tuple[str, ...]  # the backticked commands, placeholders such as <gpu> still in them
    look_for: str  # what the output shows when the cause is present
    text: str  # the whole bullet as written


@dataclass(frozen=True)
class Playbook:
    id: str
    title: str
    components: tuple[str, ...]
    causes: str
    sections: dict[str, tuple[str, ...]] = field(hash=False, compare=False)
    checks: tuple[Check, ...] = ()
    path: str = ""

    def section(self, name: str) -> tuple[str, ...]:
        return self.sections.get(name, ())


def parse_playbook(text: str, path: str | Path = "<text>") -> Playbook:
    """Parse one playbook; raises KatInputError naming the file when a required part is missing."""
    title = ""
    header: dict[str, str] = {}
    sections: dict[str, list[str]] = {}
    current: list[str] | None = None
    for raw in text.splitlines():
        line = raw.rstrip()
        if line.startswith("# ") and not title:
            title = line[2:].strip()
        elif line.startswith("## "):
            current = sections.setdefault(line[3:].strip(), [])
        elif current is None and (m := _HEADER.match(line.strip())):
            header[m.group(1)] = m.group(2).strip()
        elif current is not None and line.lstrip().startswith("- ") and not raw.startswith("  "):
            current.append(line.lstrip()[2:].strip())
        elif current is not None and line.strip() and current:
            current[-1] += " " + line.strip()  # a wrapped bullet
    if not title or "id" not in header or "components" not in header:
        raise KatInputError(path, "playbook needs a '# Title' line and 'id:' and 'components:' header lines")
    comps = tuple(c.strip() for c in header["components"].split(",") if c.strip())
    bad = [c for c in comps if c not in COMPONENTS]
    if bad:
        raise KatInputError(path, f"unknown component(s) {', '.join(bad)}; use {', '.join(COMPONENTS)}")
    checks = tuple(_parse_check(b) for b in sections.get("Checks", []))
    return Playbook(
        id=header["id"],
        title=title,
        components=comps,
        causes=header.get("causes", ""),
        sections={k: tuple(v) for k, v in sections.items()},
        checks=checks,
        path=str(path),
    )


def _parse_check(bullet: str) -> Check:
    commands = tuple(re.findall(r"`([^`]+)`", bullet))
    look = re.split(r"\s+—\s+|\s+--\s+", bullet, maxsplit=1)
    return Check(commands=commands, look_for=look[1].strip() if len(look) > 1 else "", text=bullet)


@functools.lru_cache(maxsize=4)
def _load(directory: str) -> tuple[Playbook, ...]:
    d = Path(directory)
    if not d.is_dir():
        raise KatInputError(d, "knowledge base folder not found")
    books = [
        parse_playbook(p.read_text(encoding="utf-8"), p)
        for p in sorted(d.glob("*.md"))
        if p.name != "README.md"
    ]
    return tuple(books)


def load_knowledge(directory: str | Path | None = None) -> list[Playbook]:
    """All playbooks of the knowledge base (cached per folder), sorted by file name."""
    return list(_load(str(directory or KNOWLEDGE_DIR)))


def playbook(pid: str, directory: str | Path | None = None) -> Playbook | None:
    return next((b for b in load_knowledge(directory) if b.id == pid), None)


def playbooks_for(component: str, directory: str | Path | None = None) -> list[Playbook]:
    """Playbooks that name ``component``, most specific first: a playbook about this component alone ranks
    before one shared with others, and among shared ones the component listed first ranks higher."""
    hits = [b for b in load_knowledge(directory) if component in b.components]
    return sorted(hits, key=lambda b: (len(b.components), b.components.index(component), b.id))


def fill_placeholders(command: str, values: dict[str, str]) -> str:
    """Replace ``<gpu>``-style placeholders that ``values`` knows; leave the others for the user."""

    def sub(m: re.Match) -> str:
        return values.get(m.group(1), m.group(0))

    return _PLACEHOLDER.sub(sub, command)
