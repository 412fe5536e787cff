"""The args texts of one piece of kept Kineto events, read without decoding them: dedup keys and correlations.

Kineto writes each event's ``args`` as a flat JSON object whose keys come in one layout per file, e.g.
``{"External id": 5, "device": 0, "stream": 7, "correlation": 1234, "grid": [132, 1, 1], ...}``. Most of it
repeats from event to event; the per-instance ids (``correlation``, ``External id``, ``Seq``, ``Ev Idx``)
change on every event. :func:`scan_args` finds those ids with numpy over the joined texts of a piece:

- the text minus the ``"key": <int>,`` spans of the instance ids is the event's dedup key: equal keys mean
  equal args minus instance ids, so one decode per distinct key gives the interned args text of all of them;
- ``correlation`` is read from its digits (int64, at most 12 digits here; longer ones take the typed decode);
- an event whose args are not in that shape (nested objects, a non-integer id, a key twice, a space before a
  colon, a collective's fields) is marked for the typed msgspec decode, which gives the exact values.

Assumes the texts are valid JSON (the document was validated first) and never hold a NUL byte (JSON text
cannot), which joins them.
"""

from __future__ import annotations

import msgspec
import numpy as np

from kat_gui.events import NO_ID
from kat_gui.ingest.kineto_tables import INSTANCE_ARGS

# A value window holds ': ' + sign + up to 12 digits + the terminator.
_WIN = 16
_WIN_COLS = np.arange(_WIN)
_POW10 = np.array([10**k for k in range(18)], dtype=np.int64)
_CORR_KEY = b'"correlation"'
# device and stream are per-instance args too, but constant along a track: left in the dedup key they cost
# a few extra keys, while cutting them out would cost a scan per event.
_STRIP_KEYS = tuple(b'"' + k.encode() + b'"' for k in INSTANCE_ARGS if k not in ("device", "stream"))
# Events whose args hold these keys are decoded with ColumnArgs (collective columns).
_TYPED_KEYS = (b'"Collective name"', b'"Seq"')


def _key_signatures(keys: tuple[bytes, ...]) -> list[tuple[int, int]]:
    """(mask, value) over the 8 bytes before a colon that say ``"<key>"`` ends there (little endian)."""
    out = []
    for key in keys:
        tail = key[-8:]
        pad = 8 - len(tail)
        mask = int.from_bytes(bytes(pad) + b"\xff" * len(tail), "little")
        out.append((mask, int.from_bytes(bytes(pad) + tail, "little")))
    return out


_STRIP_SIGS = _key_signatures(_STRIP_KEYS)
_TYPED_SIGS = _key_signatures(_TYPED_KEYS)


def _key_positions(
    buf: np.ndarray, tails: np.ndarray, colons: np.ndarray, key: bytes, sig: tuple[int, int]
) -> np.ndarray:
    """Offsets of ``"<key>"`` immediately followed by a colon, given the 8 bytes before every colon."""
    mask, value = sig
    cand = colons[(tails & np.uint64(mask)) == np.uint64(value)] - len(key)
    if len(key) > 8 and len(cand):
        whole = np.frombuffer(key, dtype=np.uint8)
        cand = cand[(buf[cand[:, None] + np.arange(len(key))] == whole).all(axis=1)]
    return cand


def _int_after_keys(
    buf: np.ndarray, wins: np.ndarray, pos: np.ndarray, key_len: int, want_value: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """(ok, delete_end, value) for each key occurrence at ``pos``: ``"key": <int>`` then ``,`` or ``}``.

    ``ok`` is False for anything else (a float, a string, a space before the colon, a quote that is escaped,
    more than 12 digits): those are left to the typed decode. ``delete_end`` is the offset just past the
    number and its comma; ``buf`` is padded with ``_WIN`` NULs so that every window (``wins[i]`` is
    ``buf[i:i + _WIN]``) is in range.
    """
    m = len(pos)
    rows = np.arange(m)
    win = wins[pos + key_len]  # rows of a sliding-window view: no index matrix
    first = 1 + (win[:, 1] == 32)
    neg = win[rows, first] == 45
    first = first + neg
    after = _WIN_COLS >= first[:, None]
    end = (((win - np.uint8(48)) > 9) & after).argmax(axis=1)
    term = win[rows, end]
    ok = (win[:, 0] == 58) & (end > first) & ((term == 44) | (term == 125)) & (buf[pos - 1] != 92)
    delete_end = pos + key_len + end + (term == 44)
    value = None
    if want_value:
        digits = np.where(after & (_WIN_COLS < end[:, None]), win.astype(np.int64) - 48, 0)
        value = (digits * _POW10[np.clip(end[:, None] - 1 - _WIN_COLS, 0, 17)]).sum(axis=1)
        value[neg] = -value[neg]
    return ok, delete_end, value


def scan_args(raws: list[msgspec.Raw]) -> tuple[list[bytes], np.ndarray, np.ndarray]:
    """(dedup keys, correlation, needs typed decode) for the args texts of one piece, without decoding them.

    The args are joined with NUL (never inside JSON text) and searched for the per-instance keys. Where an
    object is flat (its only ``{`` is the first byte), an instance key followed by a plain integer is a
    top-level key: its ``"key": 123,`` span is cut out of the dedup key and, for ``correlation``, the
    integer is the column value. Equal keys then mean equal args minus instance ids, so the interned text
    (built from the decoded args of the first event with that key) is right for all of them. Anything not
    in that shape (nested objects, non-integer ids, duplicate keys) keeps its text in the key and is marked
    for the typed decode, which gives the exact values.
    """
    n = len(raws)
    joined = b"\x00".join(raws)
    size = len(joined)
    padded = joined + bytes(_WIN)
    buf = np.frombuffer(padded, dtype=np.uint8)
    body = buf[:size]
    starts = np.zeros(n, dtype=np.int64)
    starts[1:] = np.flatnonzero(body == 0) + 1
    braces = np.searchsorted(starts, np.flatnonzero(body == 123), "right") - 1
    flat = (np.bincount(braces, minlength=n) == 1) & (buf[starts] == 123)
    typed = ~flat
    wins = np.lib.stride_tricks.sliding_window_view(buf, _WIN)
    corr = np.full(n, NO_ID, dtype=np.int64)
    cut_start: list[np.ndarray] = []
    cut_end: list[np.ndarray] = []
    colons = np.flatnonzero(body == 58)
    colons = colons[colons >= 8]  # '{"k":' is 5 bytes: a colon this early ends no key we look for
    # '"key" :' (a space before the colon) is not Kineto's style: such events take the typed decode.
    spaced = colons[body[colons - 1] <= 32]
    if len(spaced):
        typed[np.searchsorted(starts, spaced, "right") - 1] = True
    # The 8 bytes before each colon, read as one little-endian integer through an unaligned view.
    tails = np.ndarray(shape=(len(padded) - 7,), dtype="<u8", buffer=padded, strides=(1,))[colons - 8]
    for key, sig in zip(_STRIP_KEYS, _STRIP_SIGS, strict=True):
        pos = _key_positions(buf, tails, colons, key, sig)
        if not len(pos):
            continue
        ev = np.searchsorted(starts, pos, "right") - 1
        ok, end, value = _int_after_keys(buf, wins, pos, len(key), key == _CORR_KEY)
        ok &= flat[ev]
        same = ev[1:] == ev[:-1]  # a key twice in one object
        if same.any():
            ok[1:] &= ~same
            ok[:-1] &= ~same
        if value is not None:
            corr[ev[ok]] = value[ok]
            typed[ev[~ok]] = True
        cut_start.append(pos[ok])
        cut_end.append(end[ok])
    for key, sig in zip(_TYPED_KEYS, _TYPED_SIGS, strict=True):
        pos = _key_positions(buf, tails, colons, key, sig)
        if len(pos):
            typed[np.searchsorted(starts, pos, "right") - 1] = True
    if cut_start:
        s = np.concatenate(cut_start)
        lens = np.concatenate(cut_end) - s
        total = int(lens.sum())
        keep = np.ones(size, dtype=bool)
        keep[np.repeat(s - (np.cumsum(lens) - lens), lens) + np.arange(total)] = False
        joined = body[keep].tobytes()
    return joined.split(b"\x00"), corr, typed
