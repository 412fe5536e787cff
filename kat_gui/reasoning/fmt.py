"""Number formatting shared by the reasoning texts, the prompt facts and the grounding verifier: every number
a user reads is produced here from a finding's value, so the verifier can recompute what is allowed."""

from __future__ import annotations

import math


def pct(fraction: float) -> str:
    """0.3812 -> '38%'; 0.053 -> '5.3%'. Magnitude only: the caller words the sign (slower/faster)."""
    v = abs(float(fraction)) * 100.0
    if not math.isfinite(v):
        return "n/a"
    return f"{v:.0f}%" if v >= 10 or v == 0 else f"{v:.1f}%"


def ratio(x: float) -> str:
    """1.4512 -> '1.45x'."""
    return f"{float(x):.2f}x"


def duration(ns: float) -> str:
    """Nanoseconds -> '850 ns', '12.3 µs', '1.24 ms', '2.50 s'."""
    v = float(ns)
    a = abs(v)
    if a < 1e3:
        return f"{v:.0f} ns"
    if a < 1e6:
        return f"{v / 1e3:.1f} µs"
    if a < 1e9:
        return f"{v / 1e6:.2f} ms"
    return f"{v / 1e9:.2f} s"


def ranks_text(ranks: list[int]) -> str:
    """[0,1,2,4,5] -> '0-2,4-5'; [3] -> '3'."""
    rs = sorted({int(r) for r in ranks})
    parts: list[str] = []
    i = 0
    while i < len(rs):
        j = i
        while j + 1 < len(rs) and rs[j + 1] == rs[j] + 1:
            j += 1
        parts.append(f"{rs[i]}-{rs[j]}" if j > i else str(rs[i]))
        i = j + 1
    return ",".join(parts)


def expand_ranks(text: str) -> list[int]:
    """Inverse of ranks_text: '0-2,4' -> [0, 1, 2, 4]."""
    out: list[int] = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        if "-" in part:
            a, b = part.split("-", 1)
            out.extend(range(int(a), int(b) + 1))
        else:
            out.append(int(part))
    return out
