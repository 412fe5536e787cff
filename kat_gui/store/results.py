"""Results stored beside the events: ``/results/<key>`` holds JSON documents and column tables.

Detection, topology, annotations and the like live here (see "Results" in ``docs/store-format.md``). Two kinds
of value:

- JSON: one scalar UTF-8 string dataset, written compact (``separators=(",", ":")``, ``ensure_ascii=False``);
  numpy scalars and arrays, sets, tuples and paths are converted on the way (:func:`json_default`).
- Table: a group of datasets with the same number of rows, one per column, with the column order in the
  group's ``columns`` attribute (JSON list); string columns are stored as UTF-8 strings and read back as object
  arrays of ``str``. Values keep their dtype (times in ns stay int64) and their shape: a numeric column may be
  2-D, one row per table row (``detect/rank_step``'s [rank, step] matrices).

Keys are ``/``-separated names (``detect/findings``); a replacement is crash-safe through ``<key>~new`` and
``<key>~old`` siblings (:func:`put_result`). The mixins give :class:`StoreWriter` (``put_*`` before commit)
and :class:`TraceStore` (everything, ``put_*`` only when opened ``"r+"``) one implementation; how a
``TraceStore`` reads and writes them beside other processes is in ``reader.py`` and ``lock.py``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import Any

import h5py
import numpy as np

from kat_gui.store import heapcheck
from kat_gui.store.layout import STR_DTYPE

# write(group, name): creates the value as ``group[name]``.
ResultWrite = Callable[[h5py.Group, str], None]


def json_default(obj: Any) -> Any:
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, (set, tuple)):
        return list(obj)
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def dumps(obj: Any) -> str:
    """Compact JSON as stored in the file (results, ``/ranks``, table column lists). Text that is not valid
    Unicode (a lone surrogate from a damaged trace) is written as JSON escapes, which UTF-8 can store."""
    text = json.dumps(obj, default=json_default, ensure_ascii=False, separators=(",", ":"))
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = json.dumps(obj, default=json_default, ensure_ascii=True, separators=(",", ":"))
    return text


def result_path(key: str) -> str:
    parts = key.split("/")
    if not key or any(p in ("", ".", "..") or p.startswith(".") or "~" in p for p in parts):
        raise ValueError(f"bad result key {key!r}: use names like 'detect/findings'")
    return "results/" + key


def _stored_paths(key: str) -> tuple[str, str, str]:
    """Where ``key``'s value may be, in the order readers look: in place, then the interrupted replacements."""
    path = result_path(key)
    return (path, path + "~old", path + "~new")


def put_result(f: h5py.File, key: str, write: ResultWrite) -> None:
    """Replace ``/results/<key>`` by what ``write(group, name)`` creates, via a temporary name.

    Order: write ``<key>~new``; rename the old value to ``<key>~old``; rename the new one into place; delete
    the old one. A crash at any point leaves the old or the new value readable (readers fall back to
    ``~old``, then ``~new`` when ``<key>`` is missing).
    """
    path = result_path(key)
    parent, name = path.rsplit("/", 1)
    grp = f.require_group(parent)
    new, old = name + "~new", name + "~old"
    if name not in grp:  # an earlier replacement was interrupted: restore what readers were seeing
        if old in grp:
            grp.move(old, name)
        elif new in grp:
            grp.move(new, name)
    for stale in (new, old):
        if stale in grp:
            del grp[stale]
    write(grp, new)
    if name in grp:
        grp.move(name, old)
    grp.move(new, name)
    if old in grp:
        del grp[old]
    f.flush()


def get_result(f: h5py.File, key: str) -> h5py.Group | h5py.Dataset | None:
    for candidate in _stored_paths(key):
        if candidate in f:
            return f[candidate]
    return None


def write_json(grp: h5py.Group, name: str, obj: Any) -> None:
    grp.create_dataset(name, data=dumps(obj), dtype=STR_DTYPE)


def write_table(cols: dict[str, np.ndarray]) -> ResultWrite:
    def write(grp: h5py.Group, name: str) -> None:
        g = grp.create_group(name)
        n = None
        for col, values in cols.items():
            arr = np.asarray(values)
            if not 1 <= arr.ndim <= 2 or (arr.ndim == 2 and arr.dtype.kind in "UO"):
                raise ValueError(
                    f"table column {col!r} must be 1-D (or a 2-D numeric array), not {arr.shape}"
                )
            if n is None:
                n = len(arr)
            elif len(arr) != n:
                raise ValueError(f"table column {col!r} has length {len(arr)}, expected {n}")
            if arr.dtype.kind in "UO":
                g.create_dataset(col, data=np.array([str(v) for v in arr], dtype=object), dtype=STR_DTYPE)
            else:
                g.create_dataset(col, data=arr)
        g.attrs["columns"] = dumps(list(cols))

    return write


def read_table(node: h5py.Group) -> dict[str, np.ndarray]:
    heapcheck.check_attrs(node)  # damaged heaps raise heapcheck.HeapDamage (an OSError), never hang HDF5
    order = json.loads(node.attrs["columns"]) if "columns" in node.attrs else list(node)
    out = {}
    for col in order:
        ds = node[col]
        heapcheck.check(ds)
        out[col] = ds.asstr()[:] if h5py.check_string_dtype(ds.dtype) else ds[:]
    return out


def read_json_node(node: h5py.Dataset) -> Any:
    heapcheck.check(node)
    text = node.asstr()[()]
    try:
        return json.loads(text)
    except ValueError as e:  # damaged text: an OSError, as HDF5's own read errors (the store is damaged)
        raise OSError(f"{node.name} is not JSON ({e})") from None


class ResultWriting:
    """``put_json`` / ``put_table`` for a class whose ``_writable()`` returns the open file (or raises)."""

    def _writable(self) -> h5py.File:
        raise NotImplementedError

    def put_json(self, key: str, obj: Any) -> None:
        """Store ``obj`` (JSON-serialisable) under ``/results/<key>`` (e.g. ``topology``), replacing any
        previous value safely."""
        put_result(self._writable(), key, lambda g, name: write_json(g, name, obj))

    def put_table(self, key: str, cols: dict[str, np.ndarray]) -> None:
        """Store columns with the same number of rows (first dimension; numeric ones may be 2-D) under
        ``/results/<key>``; string columns become UTF-8 strings."""
        put_result(self._writable(), key, write_table(cols))


class Results(ResultWriting):
    """Reading, deleting and listing results too, for a class whose ``_results_read(fn)`` calls ``fn`` with an
    open file that shows the current results (see :meth:`TraceStore._results_read`)."""

    def _results_read(self, fn: Callable[[h5py.File], Any]) -> Any:
        raise NotImplementedError

    def get_json(self, key: str, default: Any = None) -> Any:
        def read(f: h5py.File) -> Any:
            node = get_result(f, key)
            if node is None or not isinstance(node, h5py.Dataset):
                return default
            return read_json_node(node)

        return self._results_read(read)

    def get_table(self, key: str) -> dict[str, np.ndarray] | None:
        """The columns stored by put_table (string columns as object arrays of str), or None."""

        def read(f: h5py.File) -> dict[str, np.ndarray] | None:
            node = get_result(f, key)
            if node is None or not isinstance(node, h5py.Group):
                return None
            return read_table(node)

        return self._results_read(read)

    def delete(self, key: str) -> bool:
        """Remove ``/results/<key>``; False when there was nothing to remove."""
        f = self._writable()
        found = False
        for candidate in _stored_paths(key):
            if candidate in f:
                del f[candidate]
                found = True
        f.flush()
        return found

    def result_keys(self) -> list[str]:
        """Keys stored under ``/results`` (e.g. ``["detect/anomalies", "topology"]``)."""
        return self._results_read(_result_keys)


def _result_keys(f: h5py.File) -> list[str]:
    if "results" not in f:
        return []
    keys: set[str] = set()

    def walk(grp: h5py.Group, prefix: str) -> None:
        for name, node in grp.items():
            key = prefix + name.split("~", 1)[0]
            if isinstance(node, h5py.Dataset) or "columns" in node.attrs or "~" in name:
                keys.add(key)
            else:
                walk(node, key + "/")

    walk(f["results"], "")
    return sorted(keys)
