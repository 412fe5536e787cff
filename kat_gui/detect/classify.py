"""Kernel classes from names (configurable patterns) and copy directions.

The detector compares like with like: a GPU whose SM clock dropped slows its *compute-bound* kernels (GEMMs,
prefill attention) more than its *memory-bound* ones (norms, elementwise, decode attention, sampling); a
degraded HBM does the reverse; collectives, host<->device copies and peer copies each point at a link.
The name patterns live in ``resources/kernel_classes.toml`` (override with the ``KAT_KERNEL_CLASSES``
environment variable) so that a new framework's names are taught by editing data, not code.

Classification runs once per distinct string of the store's string table, never per event.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

import numpy as np

from kat_gui.errors import KatInputError
from kat_gui.events import CopyKind, EventKind
from kat_gui.resource_files import resource_path

# Class codes (uint8). Stable: stored nowhere, but tests and the GUI name them.
OTHER, COMPUTE, MEMORY, COLLECTIVE, COPY_HOST, COPY_PEER = range(6)
CLASS_NAMES = ("other", "compute", "memory", "collective", "copy_host", "copy_peer")

RESOURCE = resource_path("kernel_classes.toml")
_KIND_CODE = {"compute": COMPUTE, "memory": MEMORY, "collective": COLLECTIVE}


def patterns_path() -> Path:
    """The pattern file in use: ``$KAT_KERNEL_CLASSES`` when set, else ``resources/kernel_classes.toml``."""
    env = os.environ.get("KAT_KERNEL_CLASSES")
    return Path(env) if env else RESOURCE


@lru_cache(maxsize=4)
def _load(path: str) -> tuple[tuple[int, re.Pattern[str]], ...]:
    p = Path(path)
    try:
        cfg = tomllib.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise KatInputError(p, "kernel class pattern file not found") from None
    except tomllib.TOMLDecodeError as e:
        raise KatInputError(p, f"kernel class pattern file is not valid TOML ({e})") from None
    classes = cfg.get("classes", {})
    order = cfg.get("order") or list(classes)
    out: list[tuple[int, re.Pattern[str]]] = []
    for key in order:
        spec = classes.get(key)
        if spec is None:
            raise KatInputError(p, f"class {key!r} is listed in `order` but has no [classes.{key}] table")
        kind = _KIND_CODE.get(str(spec.get("kind", key)))
        if kind is None:
            raise KatInputError(
                p, f"class {key!r} has kind {spec.get('kind')!r}; use compute, memory or collective"
            )
        pats = [str(x) for x in spec.get("patterns", [])]
        if not pats:
            continue
        try:
            out.append((kind, re.compile("|".join(f"(?:{x})" for x in pats), re.IGNORECASE)))
        except re.error as e:
            raise KatInputError(p, f"class {key!r} has a bad pattern ({e})") from None
    return tuple(out)


def classify_name(name: str, path: Path | None = None) -> int:
    """Class code of a kernel name by the first matching pattern group; OTHER when none matches."""
    for code, rx in _load(str(path or patterns_path())):
        if rx.search(name):
            return code
    return OTHER


def kernel_class(name: str) -> str:
    """Class name of a kernel name (``compute``, ``memory``, ``collective`` or ``other``); used by the GUI."""
    return CLASS_NAMES[classify_name(name)]


def classify_strings(strings: Sequence[str], path: Path | None = None) -> np.ndarray:
    """uint8 class code per string id of a string table (kernel-name view; memcpy rows are classed apart)."""
    rules = _load(str(path or patterns_path()))
    out = np.zeros(len(strings), dtype=np.uint8)
    for i, s in enumerate(strings):
        for code, rx in rules:
            if rx.search(s):
                out[i] = code
                break
    return out


_COPY_HOST_RX = re.compile(r"htod|dtoh|h2d|d2h|host.?to.?device|device.?to.?host", re.IGNORECASE)
_COPY_PEER_RX = re.compile(r"dtod|ptop|d2d|p2p|peer", re.IGNORECASE)


def copy_class_strings(strings: Sequence[str]) -> np.ndarray:
    """Copy class per string id from a memcpy's name, for rows whose copy direction is unknown."""
    out = np.zeros(len(strings), dtype=np.uint8)
    for i, s in enumerate(strings):
        if _COPY_HOST_RX.search(s):
            out[i] = COPY_HOST
        elif _COPY_PEER_RX.search(s):
            out[i] = COPY_PEER
    return out


def event_classes(
    kind: np.ndarray,
    name: np.ndarray,
    coll: np.ndarray,
    copy_kind: np.ndarray,
    name_class: np.ndarray,
    name_copy_class: np.ndarray,
) -> np.ndarray:
    """Class code per GPU event: kernels by name (or by a collective-name column), memcpy by direction.

    Assumes ``name`` indexes ``name_class`` and ``name_copy_class`` (ids from the same string table).
    Memcpy rows without a direction fall back on their name (``Memcpy HtoD ...``). Memsets are memory-bound.
    """
    cls = np.zeros(len(kind), dtype=np.uint8)
    is_k = kind == EventKind.KERNEL
    cls[is_k] = name_class[name[is_k]]
    cls[is_k & (coll >= 0)] = COLLECTIVE
    is_m = kind == EventKind.MEMCPY
    cls[is_m] = name_copy_class[name[is_m]]
    host = (copy_kind == CopyKind.HTOD) | (copy_kind == CopyKind.DTOH)
    peer = (copy_kind == CopyKind.PTOP) | (copy_kind == CopyKind.DTOD)
    cls[is_m & host] = COPY_HOST
    cls[is_m & peer] = COPY_PEER
    cls[kind == EventKind.MEMSET] = MEMORY
    return cls
