"""Kernel colour classes for the timeline: compute, memory, collective, copy, other (plus host work).

A kernel's class comes from the detector's classifier (``kat_gui.detect.classify``, patterns in
``resources/kernel_classes.toml``), so the colours agree with what the detector reasons about; its codes are
mapped onto the colour classes here (both copy directions are one colour). Copies, memsets and host work are
classed by their EventKind instead of their name. Classification is done once per string table (vectorised
lookups per drawn rectangle), never per event.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from kat_gui.detect import classify as detect_classify
from kat_gui.events import EventKind

COMPUTE, MEMORY, COLLECTIVE, COPY, OTHER, HOST = range(6)
CLASS_NAMES = ("compute", "memory", "collective", "copy", "other", "host")
# Colour-blind-safe-ish, distinct from the anomaly colours (red outline, amber hatching).
CLASS_COLORS = ("#4C78A8", "#54A24B", "#9467BD", "#8C564B", "#A0A0A0", "#C7C7C7")

# Colour class of each detector class code (detect_classify.OTHER, COMPUTE, MEMORY, COLLECTIVE, COPY_HOST,
# COPY_PEER, in that order).
_COLOR_CLASS_OF_CODE = np.array([OTHER, COMPUTE, MEMORY, COLLECTIVE, COPY, COPY], dtype=np.uint8)


def classify_strings(strings: Sequence[str]) -> np.ndarray:
    """uint8 colour class of every string in a store's string table (index = string id)."""
    return _COLOR_CLASS_OF_CODE[detect_classify.classify_strings(strings)]


def rect_classes(name_ids: np.ndarray, kinds: np.ndarray, name_class: np.ndarray) -> np.ndarray:
    """Colour class of each rectangle from its name id and EventKind (copies and host work by kind)."""
    cls = np.full(len(name_ids), OTHER, dtype=np.uint8)
    ok = (name_ids >= 0) & (name_ids < len(name_class))
    cls[ok] = name_class[name_ids[ok]]
    cls[(kinds == EventKind.MEMCPY) | (kinds == EventKind.MEMSET)] = COPY
    host = (kinds == EventKind.RUNTIME) | (kinds == EventKind.ANNOTATION) | (kinds == EventKind.CPU_OP)
    host |= (kinds == EventKind.PYTHON) | (kinds == EventKind.SYNC)
    cls[host] = HOST
    return cls
