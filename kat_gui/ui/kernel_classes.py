"""Kernel colour classes for the timeline: compute, memory, collective, copy, other (plus host work).

Uses the detector's classifier when ``kat_gui.detect`` provides one, so the colours agree with what the
detector reasons about; otherwise a small name-pattern fallback. Classification is done once per string
table (vectorised lookups per drawn rectangle), never per event.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

from kat_gui.events import EventKind

COMPUTE, MEMORY, COLLECTIVE, COPY, OTHER, HOST = range(6)
CLASS_NAMES = ("compute", "memory", "collective", "copy", "other", "host")
# Colour-blind-safe-ish, distinct from the anomaly colours (red outline, amber hatching).
CLASS_COLORS = ("#4C78A8", "#54A24B", "#9467BD", "#8C564B", "#A0A0A0", "#C7C7C7")

_COLLECTIVE = re.compile(
    r"nccl|rccl|allreduce|all_reduce|allgather|all_gather|reducescatter|reduce_scatter|alltoall|all_to_all"
    r"|sendrecv|broadcast|cross_device_reduce|custom_all_reduce|dispatch|combine|nvshmem|msccl",
    re.I,
)
_COMPUTE = re.compile(
    r"gemm|xmma|cutlass|sgemm|hgemm|matmul|conv|wgrad|dgrad|fprop|flash|fmha|attn_fwd|sm\d+_|cublas|mma|"
    r"implicit_convolve|winograd|triton_.*mm|bmm|prefill",
    re.I,
)
_MEMORY = re.compile(
    r"norm|elementwise|vectorized|reduce|softmax|copy|cat|index|gather|scatter|embedding|rotary|rope|"
    r"activation|silu|gelu|relu|add|mul|fill|decode|paged|kv|cache|sampling|topk|argmax|transpose|pool",
    re.I,
)


def classify_name(name: str) -> int:
    """Colour class of one kernel name by pattern (collective before compute before memory)."""
    if _COLLECTIVE.search(name):
        return COLLECTIVE
    if _COMPUTE.search(name):
        return COMPUTE
    if _MEMORY.search(name):
        return MEMORY
    return OTHER


def classify_strings(strings: Sequence[str]) -> np.ndarray:
    """uint8 colour class of every string in a store's string table (index = string id)."""
    try:
        from kat_gui.detect import classify as det
    except Exception:  # detector not installed/built: name patterns of this module
        det = None
    if det is not None and hasattr(det, "classify_strings"):
        try:
            codes = det.classify_strings(strings)
            # detector codes: other, compute, memory, collective, copy_host, copy_peer
            lut = np.array([OTHER, COMPUTE, MEMORY, COLLECTIVE, COPY, COPY], dtype=np.uint8)
            return lut[np.clip(codes, 0, len(lut) - 1)]
        except Exception:
            pass
    return np.array([classify_name(s) for s in strings], dtype=np.uint8)


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
