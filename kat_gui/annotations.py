"""Annotations: notes an expert pins to a time range, a kernel, a rank or a topology component, kept beside
the trace in the run's store (``/results/annotations``), never inside the trace itself.

:class:`AnnotationModel` is headless (no Qt): the GUI's annotation panel and timeline overlay subscribe with
:meth:`AnnotationModel.connect` and receive an :class:`AnnotationEvent` after every change, the same way a
test or a script drives the model. Every change (add, edit, delete, undo, redo) is saved at once through the
store's ``put_json``, which writes the new value under a temporary name and renames it into place, so a
killed application loses at most the change it was making.

Several processes may keep notes on one run (two windows, a script beside the GUI). A save happens in one
short write under the store's write lock: it reads the notes stored now, and when another process saved
since this model last read or wrote them, replays this model's unsaved changes onto those notes (a note
added here whose id was taken there gets a new id) instead of overwriting them, then emits ``reset``.

Note text is user input and is exported into HTML/Markdown reports: exporters must escape it (the model
stores it verbatim so that the user sees what they typed).
"""

from __future__ import annotations

import copy
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

from kat_gui.errors import KatInputError

RESULT_KEY = "annotations"
SCHEMA = "kat.annotations/1"
TARGETS = ("time", "kernel", "rank", "component")
MAX_TEXT = 20_000  # characters; a note is a note, not a document


@dataclass
class Annotation:
    """One note. ``target`` says what it is pinned to:

    - ``time``: ``start_ns`` .. ``end_ns`` (store clock), optionally on ``rank``;
    - ``kernel``: ``track`` and ``index`` (row of the event within its track), with its ``start_ns``/``end_ns``
      copied in so the note can be drawn without reading the event;
    - ``rank``: ``rank``;
    - ``component``: ``component`` (a topology node or edge id, e.g. ``GPU3`` or ``NVLink node0``).
    """

    id: int
    text: str
    target: str = "time"
    start_ns: int | None = None
    end_ns: int | None = None
    track: int | None = None
    index: int | None = None
    rank: int | None = None
    component: str | None = None
    color: str = ""
    created_ns: int = 0
    modified_ns: int = 0

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Annotation:
        """The note saved as ``d``; ValueError when ``d`` is not a note (a field of the wrong type, an
        integer beyond 64 bits): a store's notes are input like any other."""
        if not isinstance(d, dict):
            raise ValueError(f"a note is not an object: {str(d)[:40]!r}")
        known = {f.name for f in fields(cls)}
        a = cls(**{k: v for k, v in d.items() if k in known})
        for name, kinds in _FIELD_TYPES.items():
            v = getattr(a, name)
            if v is None and name in _OPTIONAL or (isinstance(v, kinds) and not isinstance(v, bool)):
                if isinstance(v, int) and not -(1 << 63) <= v < (1 << 63):
                    raise ValueError(f"note field {name} is beyond 64 bits")
                continue
            raise ValueError(f"note field {name} holds {type(v).__name__}, not {kinds[0].__name__}")
        return a

    def overlaps(self, t0_ns: int, t1_ns: int) -> bool:
        """Whether the note's time range (if any) overlaps ``[t0_ns, t1_ns)``."""
        if self.start_ns is None:
            return False
        end = self.end_ns if self.end_ns is not None else self.start_ns
        return self.start_ns < t1_ns and end >= t0_ns


_FIELD_TYPES = {
    "id": (int,), "text": (str,), "target": (str,), "start_ns": (int,), "end_ns": (int,), "track": (int,),
    "index": (int,), "rank": (int,), "component": (str,), "color": (str,), "created_ns": (int,),
    "modified_ns": (int,),
}  # fmt: skip
_OPTIONAL = {"start_ns", "end_ns", "track", "index", "rank", "component"}


def parse_document(doc: Any, path: Any) -> tuple[dict[int, Annotation], int]:
    """(notes by id, next id) of a stored notes document (None or empty: no notes yet); KatInputError naming
    ``path`` when the document is not one KAT wrote."""
    if not doc:
        return {}, 1
    if not isinstance(doc, dict) or doc.get("schema") != SCHEMA:
        raise KatInputError(path, f"annotations saved in an unknown format (expected {SCHEMA})")
    items = doc.get("items", [])
    next_id = doc.get("next_id", 1)
    if not isinstance(items, list) or not isinstance(next_id, int) or isinstance(next_id, bool):
        raise KatInputError(path, "damaged annotations: items is not a list or next_id not an integer")
    out: dict[int, Annotation] = {}
    try:
        for d in items:
            a = Annotation.from_json(d)
            out[a.id] = a
    except (TypeError, ValueError) as exc:
        raise KatInputError(path, f"damaged annotations ({exc})") from None
    return out, max([next_id, *(i + 1 for i in out)])


@dataclass
class AnnotationEvent:
    """What changed: ``kind`` is ``added``, ``changed``, ``removed`` or ``reset`` (everything re-read from the
    store; redraw all). Undo emits the inverse change (undoing an add emits ``removed``). ``annotation`` is the
    note after the change (as it was, for ``removed``); ``source`` is ``user``, ``undo`` or ``redo``."""

    kind: str
    annotation: Annotation | None
    source: str = "user"


Listener = Callable[[AnnotationEvent], None]


def _validate(a: Annotation) -> None:
    if a.target not in TARGETS:
        raise ValueError(f"annotation target must be one of {', '.join(TARGETS)}, not {a.target!r}")
    if not isinstance(a.text, str):
        raise ValueError("annotation text must be a string")
    if len(a.text) > MAX_TEXT:
        raise ValueError(f"annotation text longer than {MAX_TEXT} characters")
    if a.target == "time":
        if a.start_ns is None:
            raise ValueError("a time annotation needs start_ns")
        if a.end_ns is not None and a.end_ns < a.start_ns:
            raise ValueError("annotation end_ns before start_ns")
    elif a.target == "kernel":
        if a.track is None or a.index is None:
            raise ValueError("a kernel annotation needs track and index")
    elif a.target == "rank":
        if a.rank is None:
            raise ValueError("a rank annotation needs rank")
    elif a.target == "component" and not a.component:
        raise ValueError("a component annotation needs component")


@dataclass
class _Op:
    """An undoable change: the note before and after (None = absent)."""

    before: Annotation | None
    after: Annotation | None


class AnnotationModel:
    """The annotations of one run, saved into its store on every change.

    ``target`` is a store path (opened for each load and save) or an open TraceStore in mode ``"r+"`` (the
    GUI's handle; the model never closes it). ``autosave`` False keeps changes in memory until :meth:`save`
    (for previews). A save merges with notes another process saved meanwhile (see the module docstring).
    """

    def __init__(self, target: str | os.PathLike | Any, autosave: bool = True, undo_limit: int = 200):
        self._store = None if isinstance(target, str | os.PathLike) else target
        self._path = Path(target) if self._store is None else Path(getattr(target, "path", ""))
        if self._store is not None and getattr(self._store, "mode", "r+") != "r+":
            raise ValueError("the annotation model needs the store opened with mode='r+' to save notes")
        self.autosave = autosave
        self.undo_limit = undo_limit
        self._items: dict[int, Annotation] = {}
        self._next_id = 1
        self._undo: list[_Op] = []
        self._redo: list[_Op] = []
        self._pending: list[_Op] = []  # applied here, not saved yet
        self._base: Any = None  # the stored document as last read or written by this model
        self._listeners: list[Listener] = []
        self._load()

    # -- persistence
    def _with_store(self, mode: str, fn: Callable[[Any], Any]) -> Any:
        if self._store is not None:
            return fn(self._store)
        from kat_gui.store import TraceStore

        if not self._path.exists():
            raise KatInputError(self._path, "no such file")
        with TraceStore.open(self._path, mode) as st:
            return fn(st)

    def _load(self) -> None:
        self._set_doc(self._with_store("r", lambda st: st.get_json(RESULT_KEY)))
        self._pending.clear()

    def _parse(self, doc: Any) -> tuple[dict[int, Annotation], int]:
        """(notes by id, next id) of a stored document (None: no notes yet)."""
        return parse_document(doc, self._path)

    def _set_doc(self, doc: Any) -> None:
        self._items, self._next_id = self._parse(doc)
        self._base = doc

    def to_json(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA,
            "next_id": self._next_id,
            "items": [a.to_json() for a in self.items()],
        }

    def _merge(self, stored: Any) -> None:
        """Replay the unsaved changes onto ``stored`` (notes another process saved) and make that the model's
        state. A note added here whose id the other process used for another note gets a new id."""
        theirs, next_id = self._parse(stored)
        next_id = max(next_id, self._next_id)
        for op in self._pending:
            if op.after is None:
                assert op.before is not None
                theirs.pop(op.before.id, None)
                continue
            a = op.after
            if op.before is None and a.id in theirs and theirs[a.id] != a:
                a = op.after = replace(a, id=next_id)  # the op goes on the undo stack: undo removes this id
            theirs[a.id] = copy.copy(a)
            next_id = max(next_id, a.id + 1)
        self._items = theirs
        self._next_id = next_id

    def save(self) -> bool:
        """Write every note into the store now (atomically replaces the previous value), merged with notes
        another process saved since this model last read or wrote them. True when such a merge happened."""
        merged = False

        def write(st: Any) -> None:
            nonlocal merged
            with st.writing():
                stored = st.get_json(RESULT_KEY)
                if stored != self._base:
                    self._merge(stored)
                    merged = True
                doc = self.to_json()
                st.put_json(RESULT_KEY, doc)
            self._base = doc
            self._pending.clear()

        self._with_store("r+", write)
        return merged

    def reload(self) -> None:
        """Re-read the notes from the store (drops the undo history) and emit ``reset``."""
        self._load()
        self._undo.clear()
        self._redo.clear()
        self._emit(AnnotationEvent("reset", None, "user"))

    # -- change notification
    def connect(self, listener: Listener) -> None:
        """Call ``listener(event)`` after every change."""
        self._listeners.append(listener)

    def disconnect(self, listener: Listener) -> None:
        self._listeners.remove(listener)

    def _emit(self, ev: AnnotationEvent) -> None:
        for fn in list(self._listeners):
            fn(ev)

    # -- queries
    def items(self) -> list[Annotation]:
        """Every note, ordered by time (notes without a time last), then id."""
        big = 1 << 62
        return sorted(
            self._items.values(), key=lambda a: (a.start_ns if a.start_ns is not None else big, a.id)
        )

    def __len__(self) -> int:
        return len(self._items)

    def __iter__(self):
        return iter(self.items())

    def get(self, ann_id: int) -> Annotation:
        try:
            return copy.copy(self._items[ann_id])
        except KeyError:
            raise KeyError(f"no annotation with id {ann_id}") from None

    def in_range(self, t0_ns: int, t1_ns: int) -> list[Annotation]:
        """Notes whose time range overlaps ``[t0_ns, t1_ns)`` (time and kernel notes)."""
        return [a for a in self.items() if a.overlaps(t0_ns, t1_ns)]

    def for_rank(self, rank: int) -> list[Annotation]:
        return [a for a in self.items() if a.rank == rank]

    def for_component(self, component: str) -> list[Annotation]:
        return [a for a in self.items() if a.component == component]

    # -- changes
    def _apply(self, op: _Op, source: str) -> None:
        if op.after is None:
            assert op.before is not None
            del self._items[op.before.id]
            ev = AnnotationEvent("removed", copy.copy(op.before), source)
        else:
            kind = "added" if op.before is None else "changed"
            self._items[op.after.id] = copy.copy(op.after)
            ev = AnnotationEvent(kind, copy.copy(op.after), source)
        self._pending.append(op)
        failed = None
        try:
            if self.autosave and self.save():
                ev = AnnotationEvent("reset", None, source)  # notes of another process came in too
        except KatInputError as exc:  # e.g. another process kept the store's write lock: saved with the next
            failed = exc  # change (or save()); the change stands here, so listeners hear of it all the same
        self._emit(ev)
        if failed is not None:
            raise failed

    def _do(self, op: _Op) -> None:
        self._undo.append(op)  # before the save, which may raise (the change stands, undoable)
        del self._undo[: max(0, len(self._undo) - self.undo_limit)]
        self._redo.clear()
        self._apply(op, "user")

    def add(
        self,
        text: str,
        target: str = "time",
        *,
        start_ns: int | None = None,
        end_ns: int | None = None,
        track: int | None = None,
        index: int | None = None,
        rank: int | None = None,
        component: str | None = None,
        color: str = "",
    ) -> Annotation:
        """Pin a new note; returns it (with its id). Raises ValueError for a note missing what its target
        needs (a time note without ``start_ns``, a kernel note without ``track``/``index``...)."""
        now = time.time_ns()
        a = Annotation(
            id=self._next_id,
            text=text,
            target=target,
            start_ns=None if start_ns is None else int(start_ns),
            end_ns=None if end_ns is None else int(end_ns),
            track=None if track is None else int(track),
            index=None if index is None else int(index),
            rank=None if rank is None else int(rank),
            component=component,
            color=color,
            created_ns=now,
            modified_ns=now,
        )
        _validate(a)
        self._next_id += 1
        self._do(_Op(None, a))
        return copy.copy(a)

    def edit(self, ann_id: int, **changes: Any) -> Annotation:
        """Change fields of a note (``text``, ``start_ns``, ``end_ns``, ``color``...); ``id`` is fixed."""
        before = self.get(ann_id)
        if "id" in changes and changes["id"] != ann_id:
            raise ValueError("an annotation's id cannot change")
        known = {f.name for f in fields(Annotation)}
        bad = set(changes) - known
        if bad:
            raise ValueError(f"unknown annotation field(s): {', '.join(sorted(bad))}")
        after = Annotation(**{**asdict(before), **changes, "modified_ns": time.time_ns()})
        _validate(after)
        self._do(_Op(before, after))
        return copy.copy(after)

    def delete(self, ann_id: int) -> Annotation:
        before = self.get(ann_id)
        self._do(_Op(before, None))
        return before

    @property
    def can_undo(self) -> bool:
        return bool(self._undo)

    @property
    def can_redo(self) -> bool:
        return bool(self._redo)

    def undo(self) -> bool:
        """Revert the last change (saved like any change); False when there is nothing to undo."""
        if not self._undo:
            return False
        op = self._undo.pop()
        self._redo.append(op)
        self._apply(_Op(op.after, op.before), "undo")
        return True

    def redo(self) -> bool:
        if not self._redo:
            return False
        op = self._redo.pop()
        self._undo.append(op)
        self._apply(op, "redo")
        return True


def load_annotations(store: Any) -> list[Annotation]:
    """The notes saved in an open store (read-only use: reports, explain); empty when there are none."""
    items, _ = parse_document(store.get_json(RESULT_KEY), store.path)
    items = list(items.values())
    big = 1 << 62
    return sorted(items, key=lambda a: (a.start_ns if a.start_ns is not None else big, a.id))


__all__ = [
    "RESULT_KEY",
    "SCHEMA",
    "TARGETS",
    "Annotation",
    "AnnotationEvent",
    "AnnotationModel",
    "load_annotations",
]
