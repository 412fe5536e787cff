"""Exact conversion of decimal microsecond text (Kineto ``ts``/``dur``) to integer nanoseconds, vectorised.

Kineto writes times as microseconds with 3 decimals. An absolute epoch time in µs (``1694128201428473.125``)
has 19 significant digits: a float64 keeps ~16, so parsing through ``float`` loses the nanoseconds. Here the
decimal *text* of every number is converted with numpy, digit by digit, into int64 ns without ever going
through a float. Text that is not a plain ``[0-9]+(.[0-9]*)?`` (a sign, an exponent, a quoted number) takes a
slow exact path through :class:`decimal.Decimal`.
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import ROUND_HALF_UP, Decimal, DecimalException, InvalidOperation

import numpy as np

_INT64_MAX = np.iinfo(np.int64).max
_POW10 = np.array([10**k for k in range(19)], dtype=np.int64)
# 16 integer digits of µs fit int64 ns only below 9.22e15 µs (year 2262): a 16-digit integer part must start
# with 0-8; anything longer goes to the exact slow path.
_MAX_FAST_INT_DIGITS = 16
_MAX_LEN = 40


def decimal_us_to_ns(texts: Sequence[bytes | bytearray | memoryview]) -> np.ndarray:
    """Convert decimal µs numbers (bytes-like JSON number texts) to int64 ns, rounding half up at the ns.

    Assumes each text is one JSON number or a quoted number. Texts are grouped by shape (length, position
    of the decimal point); each group becomes a fixed-width byte matrix whose digit columns are folded
    into an int64 by Horner's rule. Raises ValueError naming the first text that is not a number or does
    not fit an int64 of ns.
    """
    n = len(texts)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    buf = b",".join(texts)
    a = np.frombuffer(buf, dtype=np.uint8)
    sep_pos = np.flatnonzero(a == 44)  # ','
    if len(sep_pos) != n - 1:  # a comma inside a text: not a plain number
        return _slow(texts)
    starts = np.empty(n, dtype=np.int64)
    starts[0] = 0
    starts[1:] = sep_pos + 1
    lens = np.empty(n, dtype=np.int64)
    lens[:-1] = sep_pos - starts[:-1]
    lens[-1] = len(a) - starts[-1]

    dot_pos = np.flatnonzero(a == 46)  # '.'
    dot_tok = np.searchsorted(sep_pos, dot_pos)  # separators before a dot = index of its text
    dot_off = lens.copy()  # no dot: the decimal point sits at the end of the text
    dot_off[dot_tok] = dot_pos - starts[dot_tok]
    bad = (lens == 0) | (lens > _MAX_LEN) | (dot_off > _MAX_FAST_INT_DIGITS) | (dot_off == 0)
    if len(dot_tok) > 1:
        twice = dot_tok[1:][np.diff(dot_tok) == 0]
        bad[twice] = True

    out = np.empty(n, dtype=np.int64)
    shape = (np.minimum(lens, _MAX_LEN) * 32 + np.minimum(dot_off, 31)).astype(np.int16)
    if (shape == shape[0]).all():
        groups = [np.arange(n)]
    else:
        order = np.argsort(shape, kind="stable")  # radix sort on int16
        cuts = np.flatnonzero(np.diff(shape[order])) + 1
        groups = np.split(order, cuts)
    for g in groups:
        i0 = g[0]
        if bad[i0]:
            continue
        width, dot = int(lens[i0]), int(dot_off[i0])
        if len(g) == n:  # one shape: the joined buffer already is an (n, width + 1) matrix
            mat = np.frombuffer(buf + b",", dtype=np.uint8).reshape(n, width + 1)
            cols = [mat[:, j] for j in range(width)]
        else:
            row0 = starts[g]
            cols = [a[row0 + j] for j in range(width)]
        row_bad = np.zeros(len(g), dtype=bool)
        acc = np.zeros(len(g), dtype=np.int64)
        for j in range(dot):
            d = cols[j] - np.uint8(48)  # wraps below '0', so one comparison tests the digit range
            row_bad |= d > 9
            acc = acc * 10 + d
        if dot == _MAX_FAST_INT_DIGITS:
            row_bad |= cols[0] > 56  # 16 integer digits fit int64 ns only below 9.22e15 µs
        frac = width - dot - 1  # digits after the point (-1 when there is no point)
        for k in range(3):
            acc *= 10
            if k < frac:
                d = cols[dot + 1 + k] - np.uint8(48)
                row_bad |= d > 9
                acc += d
        for k in range(3, frac):
            d = cols[dot + 1 + k] - np.uint8(48)
            row_bad |= d > 9
            if k == 3:
                acc += d >= 5  # half up on the 4th decimal; later digits cannot change that
        out[g] = acc
        bad[g[row_bad]] = True

    if bad.any():
        bad_idx = np.flatnonzero(bad)
        out[bad_idx] = _slow([texts[i] for i in bad_idx])
    return out


def _slow(texts: Sequence[bytes | bytearray | memoryview]) -> np.ndarray:
    out = np.empty(len(texts), dtype=np.int64)
    for i, t in enumerate(texts):
        s = bytes(t).strip().strip(b'"').decode("ascii", "replace")
        try:
            v = int((Decimal(s) * 1000).to_integral_value(rounding=ROUND_HALF_UP))
        except (InvalidOperation, ValueError):
            raise ValueError(f"time value {s[:40]!r} is not a number") from None
        except DecimalException:  # decimal.Overflow: an exponent past Decimal's range (1e999999999)
            raise ValueError(f"time value {s[:40]!r} µs is out of range") from None
        if not -_INT64_MAX <= v <= _INT64_MAX:
            raise ValueError(f"time value {s[:40]!r} µs is out of range")
        out[i] = v
    return out
