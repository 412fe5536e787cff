"""The store reader: :class:`TraceStore` opens a committed ``.kat.h5`` file and answers every later read.

Opening checks the marker and the schema version and reads only the small tables (``/tracks``,
``/lod/levels``, ``/index``, ``/ranks``); ``/strings`` is loaded at the first use of :attr:`TraceStore.strings`.
Reads: metadata (ranks, tracks, counts, time span), window queries for drawing (delegated to
:class:`~kat_gui.store.window.WindowReader`), bulk column reads for detection, one event with decoded strings
for a details panel, and results (:class:`~kat_gui.store.results.Results`; writable with ``mode="r+"``).

Assumptions: the file was written by :class:`~kat_gui.store.writer.StoreWriter` at schema version 1 (stores
written before ``/lod_small`` existed are read too). Units: ns for every time, rows for offsets and counts,
int32 string ids (-1: none).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from kat_gui.errors import KatInputError
from kat_gui.events import EVENT_COLUMNS, SCHEMA_VERSION, EventKind, TrackKind
from kat_gui.store.layout import (
    LEVEL_COLUMNS,
    LONG_COLUMNS,
    N_EVENT_KINDS,
    STORE_MARKER,
    SUMMARY_COLUMNS,
    TRACK_COLUMNS,
    TrackRow,
    Window,
)
from kat_gui.store.lod import LOD_COLUMNS
from kat_gui.store.results import Results
from kat_gui.store.window import WindowReader, levels_by_track
from kat_gui.store.writer import StoreWriter

# Raw chunk cache per dataset (decompressed chunks): 32 int64 chunks. Panning re-reads the same chunks.
CHUNK_CACHE_BYTES = 16 * 1024 * 1024
CHUNK_CACHE_SLOTS = 10_007


class TraceStore(Results):
    """A committed store, opened for reading (``mode="r"``) or for adding results (``mode="r+"``)."""

    @staticmethod
    def create(path: str | os.PathLike, name: str) -> StoreWriter:
        """A writer for a new store at ``path`` (replaced atomically on commit)."""
        return StoreWriter(path, name)

    @classmethod
    def open(cls, path: str | os.PathLike, mode: str = "r") -> TraceStore:
        return cls(path, mode)

    def __init__(self, path: str | os.PathLike, mode: str = "r"):
        if mode not in ("r", "r+"):
            raise ValueError(f"mode must be 'r' or 'r+', not {mode!r}")
        self.path = Path(path)
        self.mode = mode
        if not self.path.exists():
            raise KatInputError(path, "no such file")
        if self.path.is_dir():
            raise KatInputError(path, "is a folder, expected a .kat.h5 store")
        try:
            f = h5py.File(self.path, mode, rdcc_nbytes=CHUNK_CACHE_BYTES, rdcc_nslots=CHUNK_CACHE_SLOTS)
        except OSError as e:
            if not h5py.is_hdf5(self.path):
                raise KatInputError(
                    path, "not a KAT store (not an HDF5 file); create one with `kat ingest`"
                ) from None
            raise KatInputError(path, f"cannot open the store: {e}") from None
        self._f = f
        try:
            self._load()
        except KatInputError:
            f.close()
            raise
        except (KeyError, OSError, ValueError) as e:
            f.close()
            raise KatInputError(path, f"damaged KAT store ({e})") from None

    def _load(self) -> None:
        f = self._f
        if f.attrs.get("kat_store") != STORE_MARKER:
            raise KatInputError(self.path, "an HDF5 file but not a KAT store; create one with `kat ingest`")
        version = int(f.attrs.get("schema_version", -1))
        if version > SCHEMA_VERSION:
            raise KatInputError(
                self.path,
                f"store schema {version} is newer than this KAT supports ({SCHEMA_VERSION}); upgrade KAT",
            )
        if version < 1:
            raise KatInputError(self.path, f"bad store schema version {version}")
        self.schema_version = version
        self.name = str(f.attrs.get("name", self.path.stem))
        self._ev = {c: f["events/" + c] for c in EVENT_COLUMNS}
        lod = {c: f["lod/" + c] for c in LOD_COLUMNS}
        long = {c: f["long/" + c] for c in LONG_COLUMNS}
        self._t = {c: f["tracks/" + c][:] for c in TRACK_COLUMNS}
        self._kind_counts = f["tracks/kind_counts"][:]
        labels = f["tracks/label"].asstr()[:]
        lv_group = f["lod/levels"]
        lv = {c: lv_group[c][:] for c in LEVEL_COLUMNS if c in lv_group}
        if "small_offset" not in lv or "lod_small" not in f:  # written before /lod_small existed
            lv["small_offset"] = np.full(len(lv["track"]), -1, np.int64)
            lod_small = None
        else:
            lod_small = {c: f["lod_small/" + c] for c in SUMMARY_COLUMNS}
        ev_index = f["index/events_start_ns"][:]
        lod_index = f["index/lod_start_ns"][:]
        chunk = int(f["index"].attrs["chunk_rows"])
        self._ranks = json.loads(f["ranks"].asstr()[()])
        self._strings: list[str] | None = None
        t = self._t
        self._tracks = [
            TrackRow(
                id=int(t["id"][i]),
                rank=int(t["rank"][i]),
                kind=TrackKind(int(t["kind"][i])),
                device=int(t["device"][i]),
                stream=int(t["stream"][i]),
                pid=int(t["pid"][i]),
                tid=int(t["tid"][i]),
                label=str(labels[i]),
                row_offset=int(t["row_offset"][i]),
                row_count=int(t["row_count"][i]),
                first_start_ns=int(t["first_start_ns"][i]),
                last_end_ns=int(t["last_end_ns"][i]),
                max_dur_ns=int(t["max_dur_ns"][i]),
            )
            for i in range(len(labels))
        ]
        levels = levels_by_track(lv, len(self._tracks))
        self._windows = WindowReader(
            self._ev, lod, lod_small, long, t, levels, ev_index, lod_index, chunk_rows=chunk
        )

    # -- lifetime
    def close(self) -> None:
        if self._f is not None:
            self._f.close()
            self._f = None

    def __enter__(self) -> TraceStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _writable(self) -> h5py.File:
        if self.mode != "r+":
            raise ValueError(f"{self.path}: store opened read-only; open it with mode='r+' to store results")
        return self._f

    # -- metadata
    @property
    def tracks(self) -> list[TrackRow]:
        return self._tracks

    @property
    def ranks(self) -> list[dict]:
        """Per rank: ``rank``, ``source``, ``format``, ``n_events``, ``tracks`` (ids), ``meta`` (reader's)."""
        return self._ranks

    @property
    def n_events(self) -> int:
        return int(self._t["row_count"].sum())

    @property
    def strings(self) -> list[str]:
        """The run's string table (loaded on first use, then cached)."""
        if self._strings is None:
            self._strings = list(self._f["strings"].asstr()[:])
        return self._strings

    def string(self, string_id: int) -> str:
        """The string with this id; ``""`` for -1 (no string)."""
        if string_id < 0:
            return ""
        if self._strings is not None:
            return self._strings[string_id]
        return self._f["strings"].asstr()[int(string_id)]

    def args(self, args_id: int) -> dict:
        """The args of an event as a dict (``{}`` for -1); text that is not a JSON object comes as ``{"raw": text}``."""
        if args_id < 0:
            return {}
        text = self._f["args"].asstr()[int(args_id)]
        try:
            obj = json.loads(text)
        except ValueError:
            return {"raw": text}
        return obj if isinstance(obj, dict) else {"raw": obj}

    def time_span(self) -> tuple[int, int]:
        """(first start, last end) over all events, ns; (0, 0) for an empty store."""
        has = self._t["row_count"] > 0
        if not has.any():
            return (0, 0)
        return (int(self._t["first_start_ns"][has].min()), int(self._t["last_end_ns"][has].max()))

    def counts_by_kind(self) -> dict[str, int]:
        """Events per EventKind, keyed by the lower-case kind name (every kind, zeros included)."""
        total = self._kind_counts.sum(axis=0) if len(self._kind_counts) else np.zeros(N_EVENT_KINDS, np.int64)
        return {k.name.lower(): int(total[k]) for k in EventKind}

    def counts_by_rank(self) -> dict[int, int]:
        out: dict[int, int] = {}
        for r, c in zip(self._t["rank"], self._t["row_count"], strict=True):
            out[int(r)] = out.get(int(r), 0) + int(c)
        return dict(sorted(out.items()))

    def _track(self, track: int) -> TrackRow:
        if not 0 <= track < len(self._tracks):
            raise ValueError(f"no track {track} (store has {len(self._tracks)})")
        return self._tracks[track]

    # -- window queries (drawing)
    def window(
        self, tracks: Iterable[int], t0_ns: int, t1_ns: int, resolution_ns: int = 0
    ) -> dict[int, Window]:
        """Per track, what overlaps ``[t0_ns, t1_ns)``.

        An event overlaps when ``start < t1`` and (``end > t0`` or ``start >= t0``), so zero-length events at
        ``t0`` count. With ``resolution_ns > 0`` (ns per pixel) and more events *starting* in the window than
        ``(t1 - t0) / resolution_ns``, the answer is the coarsest LOD level whose width is <= resolution_ns:
        summary rectangles overlapping ``[t0, t1]`` (a rectangle ending exactly at t0 is included) -- unless
        that level has more than half as many rectangles as the track has events (then raw events).
        """
        t0, t1 = int(t0_ns), int(t1_ns)
        win = self._windows
        return {
            int(tr): win.track_window(int(tr), self._track(int(tr)), t0, t1, int(resolution_ns))
            for tr in tracks
        }

    def lod_levels(self, track: int) -> list[tuple[int, int, int]]:
        """Stored summary levels of a track: (level, width_ns, rectangles)."""
        self._track(track)
        return [(lv.level, lv.width_ns, lv.row_count) for lv in self._windows.levels[track]]

    # -- bulk reads (detection)
    def track_events(self, track: int, columns: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        """Every event of one track, sorted by start, as columns (all of EVENT_COLUMNS by default)."""
        row = self._track(track)
        a, b = row.row_offset, row.row_offset + row.row_count
        return {
            c: self._ev[c][a:b] if b > a else np.zeros(0, EVENT_COLUMNS[c]) for c in self._columns(columns)
        }

    def events(
        self, columns: Sequence[str] | None = None, kinds: Iterable[int] | None = None
    ) -> dict[str, np.ndarray]:
        """All events of the run, sorted by (track, start), with a ``track`` column (int32 track id).

        ``kinds`` keeps only those EventKinds. Reads whole columns: meant for detection, not for drawing.
        """
        cols = self._columns(columns)
        n = self.n_events
        counts = self._t["row_count"]
        track = np.repeat(self._t["id"].astype(np.int32), counts)
        mask = None
        if kinds is not None:
            wanted = np.array(sorted({int(k) for k in kinds}), dtype=np.uint8)
            mask = np.isin(self._ev["kind"][:n] if n else np.zeros(0, np.uint8), wanted)
        out = {}
        for c in cols:
            v = self._ev[c][:n] if n else np.zeros(0, EVENT_COLUMNS[c])
            out[c] = v if mask is None else v[mask]
        out["track"] = track if mask is None else track[mask]
        return out

    @staticmethod
    def _columns(columns: Sequence[str] | None) -> list[str]:
        if columns is None:
            return list(EVENT_COLUMNS)
        bad = [c for c in columns if c not in EVENT_COLUMNS]
        if bad:
            raise ValueError(f"unknown event columns {bad}; known: {list(EVENT_COLUMNS)}")
        return list(columns)

    def event(self, track: int, index: int) -> dict[str, Any]:
        """One event (row ``index`` of ``track``) with decoded strings and args, for a details panel.

        Keys: every event column (``name``, ``coll``, ``pg`` as strings, ``""`` when absent; ``args`` as a
        dict), plus ``track``, ``index``, ``rank``, ``name_id``, ``args_id``, ``kind_name``, ``duration_ns``.
        """
        row = self._track(track)
        if not 0 <= index < row.row_count:
            raise IndexError(f"track {track} has {row.row_count} events, no index {index}")
        r = row.row_offset + int(index)
        raw = {c: self._ev[c][r].item() for c in EVENT_COLUMNS}
        out: dict[str, Any] = dict(raw)
        out["name"] = self.string(raw["name"])
        out["coll"] = self.string(raw["coll"])
        out["pg"] = self.string(raw["pg"])
        out["args"] = self.args(raw["args"])
        kind = raw["kind"]
        out.update(
            track=track,
            index=int(index),
            rank=row.rank,
            name_id=raw["name"],
            args_id=raw["args"],
            kind_name=EventKind(kind).name.lower() if kind < N_EVENT_KINDS else str(kind),
            duration_ns=raw["end_ns"] - raw["start_ns"],
        )
        return out
