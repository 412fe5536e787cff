"""The store reader: :class:`TraceStore` opens a committed ``.kat.h5`` file and answers every later read.

Opening checks the marker and the schema version and reads only the small tables (``/tracks``,
``/lod/levels``, ``/index``, ``/ranks``); ``/strings`` is loaded at the first use of :attr:`TraceStore.strings`.
Reads: metadata (ranks, tracks, counts, time span), window queries for drawing (delegated to
:class:`~kat_gui.store.window.WindowReader`), bulk column reads for detection, one event with decoded strings
for a details panel, and results (:class:`~kat_gui.store.results.Results`; writable with ``mode="r+"``).
Several processes may have a store open at once: see :class:`TraceStore` and "Concurrent use" in
``docs/store-format.md``.

Assumptions: the file was written by :class:`~kat_gui.store.writer.StoreWriter` at schema version 1 (stores
written before ``/lod_small`` existed are read too). Units: ns for every time, rows for offsets and counts,
int32 string ids (-1: none).
"""

from __future__ import annotations

import functools
import json
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from kat_gui.errors import KatInputError
from kat_gui.events import EVENT_COLUMNS, SCHEMA_VERSION, EventKind, TrackKind
from kat_gui.store import heapcheck
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
from kat_gui.store.lock import Signature, read_lock, signature, write_lock
from kat_gui.store.lod import LOD_COLUMNS
from kat_gui.store.results import Results
from kat_gui.store.window import WindowReader, levels_by_track
from kat_gui.store.writer import StoreWriter

# Raw chunk cache per dataset (decompressed chunks): 32 int64 chunks. Panning re-reads the same chunks.
CHUNK_CACHE_BYTES = 16 * 1024 * 1024
CHUNK_CACHE_SLOTS = 10_007
# Tries of an open or a results read that fails while another process may be writing (50, 100 ms apart).
OPEN_TRIES = 3
HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"


def _is_hdf5(path: Path) -> bool:
    """The HDF5 signature at offset 0, 512, 1024, 2048... (h5py.is_hdf5 would take HDF5's file lock)."""
    try:
        with open(path, "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            off = 0
            while off + 8 <= size:
                fh.seek(off)
                if fh.read(8) == HDF5_SIGNATURE:
                    return True
                off = 512 if off == 0 else off * 2
    except OSError:
        pass
    return False


def _damage_is_input_error(method: Callable) -> Callable:
    """A read (or a results write) that HDF5 fails on (a damaged B-tree or heap, a chunk that does not
    decompress, text that is not UTF-8) is a damaged store: one line naming the file, like any other bad input,
    never a traceback."""

    @functools.wraps(method)
    def read(self: TraceStore, *args: Any, **kwargs: Any) -> Any:
        try:
            return method(self, *args, **kwargs)
        except (OSError, RuntimeError, KeyError, UnicodeDecodeError, ValueError) as exc:
            if isinstance(exc, ValueError) and not _raised_in_h5py(exc):
                raise  # KAT's own ValueErrors are programming errors (an unknown column, a closed store)
            problem = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
            raise KatInputError(
                self.path, f"damaged KAT store ({problem}); ingest the traces again"
            ) from None

    return read


def _raised_in_h5py(exc: BaseException) -> bool:
    """Whether the innermost frame of the exception is h5py's (HDF5 reports some damage as ValueError)."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    return tb is not None and "h5py" in Path(tb.tb_frame.f_code.co_filename).parts  # h5py/h5l.pyx too


def _check_tables(
    path: Path,
    t: dict,
    kind_counts: np.ndarray,
    n_tracks: int,
    n_events: int,
    lv: dict,
    lod: dict,
    chunk: int,
) -> None:
    """The small tables must agree with each other and with the datasets they index before anything trusts
    them: a damaged row count would otherwise ask numpy for petabytes, or a read for rows that do not exist."""

    def bad(what: str) -> KatInputError:
        return KatInputError(path, f"damaged KAT store ({what}); ingest the traces again")

    if any(len(v) != n_tracks for v in t.values()) or kind_counts.shape != (n_tracks, N_EVENT_KINDS):
        raise bad("the track table's columns differ in length")
    if n_tracks and not np.array_equal(t["id"], np.arange(n_tracks)):
        raise bad("track ids out of order")
    off, cnt = t["row_offset"].astype(np.int64), t["row_count"].astype(np.int64)
    if (off < 0).any() or (cnt < 0).any() or (off > n_events - cnt).any() or int(cnt.sum()) > n_events:
        raise bad("track rows outside the events")
    if (kind_counts < 0).any() or not np.array_equal(kind_counts.sum(axis=1), cnt):
        raise bad("event counts disagree with the track rows")
    n_lod = lod["start_ns"].shape[0]
    lo, lc = lv["row_offset"].astype(np.int64), lv["row_count"].astype(np.int64)
    if (lo < 0).any() or (lc < 0).any() or (lo > n_lod - lc).any():
        raise bad("summary levels outside the summaries")
    if len(lv["track"]) and ((lv["track"] < 0).any() or (lv["track"] >= n_tracks).any()):
        raise bad("summary levels of tracks that do not exist")
    if chunk <= 0:
        raise bad("chunk size not positive")


def _close_handle(f: h5py.File, fo: Any) -> None:
    """Close a second handle on the store (results reads, a write session) and the Python file under it."""
    try:
        heapcheck.forget(f)
        f.close()
    finally:
        fo.close()


def _fd_signature(fd: int) -> Signature:
    st = os.fstat(fd)
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


class TraceStore(Results):
    """A committed store, opened for reading (``mode="r"``) or for reading and adding results (``mode="r+"``).

    Either way the file is held read-only (HDF5 file locking off), so any number of processes may have it
    open. Events come from that handle: they are written once at ingest and never modified. Results are read
    through a second handle on the same inode, reopened whenever the file changed, so they are never read
    from stale HDF5 metadata. ``mode="r+"`` only allows :meth:`writing`: each write opens the file for writing
    for its own duration, under the store's write lock (``lock.py``). One thread at a time per object.
    """

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
        self._f: h5py.File | None = None
        self._rf: h5py.File | None = None  # results, read (on a duplicate of _f's descriptor)
        self._rf_sig: Signature = None
        self._wf: h5py.File | None = None  # results, written (only inside writing())
        self._writing = False
        # Results reads and writes of this object, from any thread, one at a time (a write session holds it
        # throughout). Event reads do not take it.
        self._results_lock = threading.RLock()
        self._open()

    def _open(self) -> None:
        path = self.path
        if not path.exists():
            raise KatInputError(path, "no such file")
        if path.is_dir():
            raise KatInputError(path, "is a folder, expected a .kat.h5 store")
        # Under the shared lock no results write is half done. Without it (no lock file yet, or a writer that
        # kept the lock past the wait) an open that fails is retried: a write takes milliseconds.
        for attempt in range(OPEN_TRIES):
            last = attempt + 1 == OPEN_TRIES
            with read_lock(path):
                if self._try_open(last):
                    return
            time.sleep(0.05 * (attempt + 1))

    def _try_open(self, last: bool) -> bool:
        """One try at opening and loading; False to try again, KatInputError on the last try."""
        path = self.path
        try:
            f = h5py.File(
                path, "r", locking=False, rdcc_nbytes=CHUNK_CACHE_BYTES, rdcc_nslots=CHUNK_CACHE_SLOTS
            )
        except OSError as e:
            if not os.access(path, os.R_OK):
                raise KatInputError(path, "cannot read the file (permission denied)") from None
            if not _is_hdf5(path):
                raise KatInputError(
                    path, "not a KAT store (not an HDF5 file); create one with `kat ingest`"
                ) from None
            if not last:
                return False
            raise KatInputError(path, f"cannot open the store: {e}") from None
        self._f = f
        try:
            heapcheck.register(f)
            self._load()
        except KatInputError:
            self.close()
            raise
        except (KeyError, OSError, ValueError, RuntimeError, TypeError, UnicodeDecodeError) as e:
            # HDF5 reports a damaged object header as RuntimeError, a damaged datatype as numpy's TypeError
            self.close()
            if not last:
                return False
            raise KatInputError(path, f"damaged KAT store ({str(e).splitlines()[0][:200]})") from None
        self._fd = f.id.get_vfd_handle()
        st = os.fstat(self._fd)
        self._inode = (st.st_dev, st.st_ino)
        self._base_sig = signature(path)
        return True

    def _load(self) -> None:
        f = self._f
        heapcheck.check_attrs(f, self.path)  # a damaged heap must not hang HDF5 (heapcheck.py)
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
        # Every dataset read later is bound now: after open, nothing is looked up through the root group,
        # whose metadata a results write in another process may change.
        self._strings_ds = f["strings"]
        self._args_ds = f["args"]
        lod = {c: f["lod/" + c] for c in LOD_COLUMNS}
        long = {c: f["long/" + c] for c in LONG_COLUMNS}
        self._t = {c: f["tracks/" + c][:] for c in TRACK_COLUMNS}
        self._kind_counts = f["tracks/kind_counts"][:]
        heapcheck.check(f["tracks/label"], self.path)
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
        heapcheck.check(f["ranks"], self.path)
        self._ranks = json.loads(f["ranks"].asstr()[()])
        self._strings: list[str] | None = None
        t = self._t
        _check_tables(
            self.path, t, self._kind_counts, len(labels), self._ev["start_ns"].shape[0], lv, lod, chunk
        )
        c = {k: t[k].tolist() for k in TRACK_COLUMNS}  # Python ints, column by column (not cell by cell)
        self._tracks = [
            TrackRow(
                id=c["id"][i],
                rank=c["rank"][i],
                kind=TrackKind(c["kind"][i]),
                device=c["device"][i],
                stream=c["stream"][i],
                pid=c["pid"][i],
                tid=c["tid"][i],
                label=str(labels[i]),
                row_offset=c["row_offset"][i],
                row_count=c["row_count"][i],
                first_start_ns=c["first_start_ns"][i],
                last_end_ns=c["last_end_ns"][i],
                max_dur_ns=c["max_dur_ns"][i],
            )
            for i in range(len(labels))
        ]
        levels = levels_by_track(lv, len(self._tracks))
        self._windows = WindowReader(
            self._ev, lod, lod_small, long, t, levels, ev_index, lod_index, chunk_rows=chunk
        )

    # -- lifetime
    def _close_results(self) -> None:
        f, self._rf = self._rf, None
        if f is not None:
            _close_handle(f, self._rf_file)

    def close(self) -> None:
        with self._results_lock:
            self._close_results()
            if self._f is not None:
                heapcheck.forget(self._f)
                self._f.close()
                self._f = None

    def __enter__(self) -> TraceStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def reopen(self) -> None:
        """Close and open the path again: the new file after a re-ingest replaced it (a new run: tracks and
        events may differ), else the same one. Results need no reopen: they are always read fresh."""
        with self._results_lock:
            self.close()
            self._open()

    # -- changes by other processes
    def changed(self) -> bool:
        """Whether the file at ``path`` was written (results, notes) or replaced (a re-ingest) since this
        object opened it, last wrote it itself, or :meth:`mark_seen`. One ``stat``: cheap enough to poll."""
        return signature(self.path) != self._base_sig

    def replaced(self) -> bool:
        """Whether ``path`` now names another file (a re-ingest renamed a new store over it) or none."""
        sig = signature(self.path)
        return sig is None or (sig[0], sig[1]) != self._inode

    def mark_seen(self) -> None:
        """Take the file as it is now as seen: :meth:`changed` is False until the next write."""
        self._base_sig = signature(self.path)

    # -- results: fresh reads, short writes under the lock
    @_damage_is_input_error
    def _results_read(self, fn: Callable[[h5py.File], Any]) -> Any:
        """``fn(file)`` on a handle that shows the results as they are now.

        Inside :meth:`writing`, after a write, that is the write handle. Otherwise a read-only handle on the
        same inode as the events (a duplicate descriptor, so results and events always belong to one run),
        reopened when the inode's size or mtime changed; the read runs under the shared lock, and one that
        fails (a write without the lock, metadata gone stale) is retried on a fresh handle.
        """
        with self._results_lock:
            return self._results_read_locked(fn)

    def _results_read_locked(self, fn: Callable[[h5py.File], Any]) -> Any:
        if self._wf is not None:
            return fn(self._wf)
        if self._f is None:
            raise ValueError(f"{self.path}: store is closed")
        for attempt in range(OPEN_TRIES):
            with read_lock(self.path):
                try:
                    sig = _fd_signature(self._fd)
                    if self._rf is None or sig != self._rf_sig:
                        self._close_results()
                        fo = os.fdopen(os.dup(self._fd), "rb")
                        try:
                            self._rf = h5py.File(fo, "r", locking=False)
                        except BaseException:
                            fo.close()
                            raise
                        self._rf_file, self._rf_sig = fo, sig
                        heapcheck.register(self._rf, fo.fileno())
                    return fn(self._rf)
                except (KeyError, OSError, ValueError, RuntimeError):
                    self._close_results()
                    if attempt + 1 == OPEN_TRIES:
                        raise
            time.sleep(0.05 * (attempt + 1))
        raise AssertionError("unreachable")

    @contextmanager
    def writing(self) -> Iterator[TraceStore]:
        """Group result writes (``put_json``, ``put_table``, ``delete``) into one write: the store's write lock
        is held for the block (waiting up to ``$KAT_LOCK_WAIT`` s for another writer, then
        :class:`~kat_gui.store.lock.StoreBusy`), the file is opened for writing at the first write and closed
        at the end. Reads inside the block see the results as they are (nobody else can write meanwhile),
        then the block's own writes. Nested blocks join the outer one."""
        self._check_writable()
        with self._results_lock:
            if self._writing:
                yield self
                return
            with self._session():
                yield self

    @contextmanager
    def _session(self) -> Iterator[None]:
        with write_lock(self.path):
            self._writing = True
            pre = signature(self.path)
            try:
                yield
            finally:
                self._writing = False
                wrote = self._wf is not None
                self._close_write()
                if wrote:
                    self._after_write(pre)

    def _check_writable(self) -> None:
        if self.mode != "r+":
            raise ValueError(f"{self.path}: store opened read-only; open it with mode='r+' to store results")

    def _writable(self) -> h5py.File:
        self._check_writable()
        if not self._writing:
            raise RuntimeError("results are written inside `with store.writing():` (put_* do it themselves)")
        if self._wf is None:
            self._close_results()
            path = self.path
            try:
                fo = open(path, "r+b")  # noqa: SIM115 - closed with the HDF5 handle in _close_write
            except FileNotFoundError:
                raise KatInputError(path, "no such file (moved or deleted since it was opened)") from None
            except PermissionError:
                raise KatInputError(
                    path, "the file is read-only: results (detection, notes) cannot be stored in it"
                ) from None
            except OSError as e:
                raise KatInputError(path, f"cannot open the store for writing ({e.strerror})") from None
            st = os.fstat(fo.fileno())
            if (st.st_dev, st.st_ino) != self._inode:
                fo.close()
                raise KatInputError(
                    path,
                    "was replaced by a new `kat ingest` since this process opened it; open it again to "
                    "store results in the new run",
                )
            try:
                self._wf = h5py.File(fo, "r+", locking=False)
            except OSError as e:
                fo.close()
                raise KatInputError(path, f"cannot write the store ({e})") from None
            heapcheck.register(self._wf, fo.fileno(), keep=False)
            self._wf_file = fo
        return self._wf

    def _close_write(self) -> None:
        f, self._wf = self._wf, None
        if f is not None:
            _close_handle(f, self._wf_file)

    def _after_write(self, pre: Signature) -> None:
        """After a write: make sure the signature changed (same size and an mtime in the same clock tick as
        the previous write would hide it from :meth:`changed`), and take one's own write as seen unless the
        file had already changed before it (another process's write is still news)."""
        post = signature(self.path)
        if post is not None and pre is not None and post[2:] == pre[2:]:
            try:
                st = os.stat(self.path)
                os.utime(self.path, ns=(st.st_atime_ns, pre[3] + 1))
            except OSError:
                pass
            post = signature(self.path)
        if pre == self._base_sig:
            self._base_sig = post

    @_damage_is_input_error
    def put_json(self, key: str, obj: Any) -> None:
        with self.writing():
            super().put_json(key, obj)

    @_damage_is_input_error
    def put_table(self, key: str, cols: dict[str, np.ndarray]) -> None:
        with self.writing():
            super().put_table(key, cols)

    @_damage_is_input_error
    def delete(self, key: str) -> bool:
        with self.writing():
            return super().delete(key)

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
    @_damage_is_input_error
    def strings(self) -> list[str]:
        """The run's string table (loaded on first use, then cached)."""
        if self._strings is None:
            heapcheck.check(self._strings_ds, self.path)
            self._strings = list(self._strings_ds.asstr()[:])
        return self._strings

    @_damage_is_input_error
    def string(self, string_id: int) -> str:
        """The string with this id; ``""`` for -1 (no string)."""
        if string_id < 0:
            return ""
        if self._strings is not None:
            return self._strings[string_id]
        heapcheck.check(self._strings_ds, self.path, int(string_id))
        return self._strings_ds.asstr()[int(string_id)]

    @_damage_is_input_error
    def args(self, args_id: int) -> dict:
        """The args of an event as a dict (``{}`` for -1); text that is not a JSON object comes as ``{"raw": text}``."""
        if args_id < 0:
            return {}
        heapcheck.check(self._args_ds, self.path, int(args_id))
        text = self._args_ds.asstr()[int(args_id)]
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
    @_damage_is_input_error
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

    @_damage_is_input_error
    def lod_levels(self, track: int) -> list[tuple[int, int, int]]:
        """Stored summary levels of a track: (level, width_ns, rectangles)."""
        self._track(track)
        return [(lv.level, lv.width_ns, lv.row_count) for lv in self._windows.levels[track]]

    # -- bulk reads (detection)
    @_damage_is_input_error
    def track_events(self, track: int, columns: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        """Every event of one track, sorted by start, as columns (all of EVENT_COLUMNS by default)."""
        row = self._track(track)
        a, b = row.row_offset, row.row_offset + row.row_count
        return {
            c: self._ev[c][a:b] if b > a else np.zeros(0, EVENT_COLUMNS[c]) for c in self._columns(columns)
        }

    @_damage_is_input_error
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

    @_damage_is_input_error
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
