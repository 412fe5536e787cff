"""Global heap checks: before HDF5 reads variable-length strings, KAT reads the heap objects they refer to itself.

Why: a variable-length string (``/strings``, ``/args``, ``/tracks/label``, the JSON documents of ``/ranks`` and
``/results``, the string attributes) is stored as a 16-byte heap ID (sequence length: uint32; collection
address: 8 bytes; object index: uint32) whose bytes live in a global heap collection ("GCOL"). HDF5 decodes a
whole collection when it reads one object of it, walking the objects from the header on; an object with index
0 (the free space) and size 0 in a damaged collection makes that walk stand still forever (seen with HDF5
2.0, h5py 3.16: ``kat info`` stuck inside ``Dataset.__getitem__``). A hang in C code cannot be interrupted from
Python, so the collections a read would load are checked first, with every bound checked, and damage is an
input error (one line, exit 2) instead.

What is checked (HDF5 file format specification, "Global Heap" and "Disk Format: Level 2A2 - Variable-length
Data"; HDF5's ``H5HGcache.c``, ``H5VLnative_blob.c``):

- a collection: ``GCOL``, version 1, 3 reserved bytes, its size (8-byte lengths) of at least 4096 bytes
  (HDF5's minimum), lying inside the file and not overlapping another collection;
- its objects, walked from offset 16: index (uint16), reference count (uint16), 4 reserved bytes, size
  (8 bytes), then the data padded to a multiple of 8. Each object lies inside the collection; the walk ends at
  the collection's end, at fewer than 16 bytes left (padding), or at the free-space object (index 0), whose
  size covers exactly what is left (HDF5 keeps free space at the end). No index appears twice;
- each heap ID: collection address 0 is an empty (null) value and reads nothing; any other names a good
  collection holding the object index with exactly the sequence length as its size (HDF5 2.0 refuses any
  other size too).

Heap IDs come from the file's bytes: a contiguous dataset's storage (``get_offset``), a chunked one's chunks
(``read_direct_chunk``, then inflate and unshuffle here: any other filter than deflate, shuffle and fletcher32
and the dataset is not checked), an attribute's data from its object header (version 1 and 2 headers,
attributes stored in the header). Compact datasets, files whose offsets or lengths are not 8 bytes and other
drivers than sec2 (unless :func:`register`\\ ed) are not checked: nothing KAT writes. Addresses in heap IDs
and object headers are relative to the base address (the user block's size); ``get_offset`` is absolute.

Cost: each collection is walked once per registered file (its object sizes are then kept); the walk runs over
many collections at once with numpy (a store with 1M strings: ~1200 collections of up to 64 KiB). One
``args`` element reads one chunk and walks one collection at most.
"""

from __future__ import annotations

import os
import struct
import threading
import zlib
from collections.abc import Iterable

import h5py
import numpy as np

from kat_gui.errors import KatInputError

HEAP_ID = np.dtype([("n", "<u4"), ("addr", "<u8"), ("idx", "<u4")])  # one element on disk (8-byte offsets)
COLLECTION_HEADER = 16  # "GCOL", version, 3 reserved, collection size
OBJECT_HEADER = 16  # index, reference count, 4 reserved, object size
MIN_COLLECTION = 4096  # HDF5 refuses smaller collections (H5HG_MINSIZE)
MAX_INDEX = 0xFFFF  # object indices are 16-bit
# The lock-step walk (numpy over collections) runs while at least this many collections are still being
# walked; fewer are finished one by one in Python (a numpy step costs ~30 us, a Python one ~1 us).
LOCKSTEP_MIN = 24
BATCH_BYTES = 32 << 20  # collections read and walked together, at most
OBJECT_HEADER_CHUNKS = 64  # an object header with more continuation blocks is not parsed
_FILTERS = (h5py.h5z.FILTER_DEFLATE, h5py.h5z.FILTER_SHUFFLE, h5py.h5z.FILTER_FLETCHER32)


class HeapDamage(OSError):
    """A damaged global heap (an ``OSError``, as HDF5's own read errors are): ``str()`` says where and what."""


class _Heaps:
    """One open file: the descriptor its bytes are read through, its base address, and the collections
    already walked (object sizes by index, -1 for none) when ``keep`` (a file that is not being written)."""

    def __init__(self, fd: int, base: int, keep: bool):
        self.fd, self.base, self.keep = fd, base, keep
        self.tables: dict[int, np.ndarray] = {}
        self.users = 1
        self.lock = threading.Lock()

    def read(self, offset: int, n: int, what: str) -> bytes:
        data = os.pread(self.fd, n, offset) if n > 0 else b""
        if len(data) != n:
            raise HeapDamage(f"global heap: {what} at {offset} runs past the end of the file")
        return data

    # -- heap IDs
    def check_ids(self, ids: np.ndarray, what: str) -> None:
        """Every non-null heap ID of ``ids`` (``HEAP_ID`` records) names an object of a good collection with
        the ID's sequence length as its size; HeapDamage otherwise."""
        live = ids[ids["addr"] != 0]
        if not len(live):
            return
        addrs, inv = np.unique(live["addr"], return_inverse=True)
        with self.lock:
            tables = self._tables([int(a) for a in addrs])
        lens = np.array([len(t) for t in tables], np.int64)
        starts = np.concatenate([[0], np.cumsum(lens)[:-1]]).astype(np.int64)
        flat = np.concatenate(tables)
        idx = live["idx"].astype(np.int64)
        bad = (idx == 0) | (idx >= lens[inv])
        size = flat[starts[inv] + np.where(bad, 0, idx)]
        bad |= size != live["n"].astype(np.int64)
        if bad.any():
            k = int(np.argmax(bad))
            i, n, addr = int(idx[k]), int(live["n"][k]), int(live["addr"][k])
            have = int(size[k]) if not (i == 0 or i >= lens[inv[k]]) else -1
            found = "no such object" if have < 0 else f"the object has {have} bytes"
            raise HeapDamage(
                f"global heap: {what} refers to object {i} ({n} bytes) of the collection at {addr}: {found}"
            )

    def _tables(self, addrs: list[int]) -> list[np.ndarray]:
        new = sorted({a for a in addrs if a not in self.tables})
        if new:
            walked = self._walk_all(new)
            if not self.keep:
                return [walked[a] if a in walked else self.tables[a] for a in addrs]
            self.tables.update(walked)
        return [self.tables[a] for a in addrs]

    # -- collections
    def _walk_all(self, addrs: list[int]) -> dict[int, np.ndarray]:
        """Headers of the (sorted, distinct) collections ``addrs``, then their objects, in batches."""
        size = os.fstat(self.fd).st_size
        a = np.array(addrs, np.uint64)
        if len(a) > 1 and int(np.diff(a).min()) < MIN_COLLECTION:
            k = int(np.argmin(np.diff(a)))
            raise HeapDamage(f"global heap: collections at {addrs[k]} and {addrs[k + 1]} overlap")
        spans = []
        for addr in addrs:
            at = self.base + addr
            if at + COLLECTION_HEADER > size:
                raise HeapDamage(f"global heap: the collection at {addr} lies past the end of the file")
            head = self.read(at, COLLECTION_HEADER, "collection header")
            sig, version, total = head[:4], head[4], struct.unpack_from("<Q", head, 8)[0]
            if sig != b"GCOL" or version != 1:
                raise HeapDamage(
                    f"global heap: no collection at {addr} (signature {sig!r}, version {version})"
                )
            if total < MIN_COLLECTION or at + total > size:
                raise HeapDamage(f"global heap: the collection at {addr} has a bad size ({total} bytes)")
            if spans and spans[-1][0] + spans[-1][1] > addr:
                raise HeapDamage(f"global heap: collections at {spans[-1][0]} and {addr} overlap")
            spans.append((addr, total))
        out: dict[int, np.ndarray] = {}
        batch: list[tuple[int, int]] = []
        held = 0
        for span in spans:
            batch.append(span)
            held += span[1]
            if held >= BATCH_BYTES:
                out.update(self._walk(batch))
                batch, held = [], 0
        if batch:
            out.update(self._walk(batch))
        return out

    def _walk(self, spans: list[tuple[int, int]]) -> dict[int, np.ndarray]:
        """Walk the objects of the collections ``spans`` ((address, size)); their object tables."""
        padded = [(n + 7) & ~7 for _, n in spans]
        starts = np.concatenate([[0], np.cumsum(padded)[:-1]]).astype(np.int64)
        buf = np.zeros(int(sum(padded)) + 16, np.uint8)
        for (addr, n), s in zip(spans, starts, strict=True):
            got = os.preadv(self.fd, [memoryview(buf[s : s + n])], self.base + addr)
            if got != n:
                raise HeapDamage(f"global heap: the collection at {addr} runs past the end of the file")
        ends = starts + np.array([n for _, n in spans], np.int64)
        recs = _lockstep(buf, starts, ends)
        tables = {}
        for k, (addr, _) in enumerate(spans):
            objs = recs.get(k)
            if objs is None:  # left to the one-by-one walk
                objs = _walk_one(buf, int(starts[k]), int(ends[k]))
            if isinstance(objs, str):
                raise HeapDamage(f"global heap: the collection at {addr}: {objs}")
            idx, size = objs
            table = np.full(int(idx.max(initial=0)) + 1, -1, np.int64)
            table[idx] = size
            if np.count_nonzero(table >= 0) != len(idx):
                raise HeapDamage(f"global heap: the collection at {addr}: an object index appears twice")
            tables[addr] = table
        return tables


def _lockstep(buf: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> dict[int, tuple | str]:
    """Walk many collections at once, one object of each per step, while at least LOCKSTEP_MIN are left; the
    rest go on one by one (:func:`_walk_one`, the same rules). Per collection: (indices, sizes) of its
    objects, or what is wrong. ``buf`` holds the collections at the 8-aligned ``starts``, 16 spare bytes after
    the last."""
    u16, i64 = buf.view("<u2"), buf.view("<i8")  # sizes of 2**63 and more read as negative: too big anyway
    pos = starts + COLLECTION_HEADER
    active = np.arange(len(starts))
    seen: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    out: dict[int, tuple | str] = {}
    done_ok: list[np.ndarray] = []
    steps = 0
    while len(active) >= LOCKSTEP_MIN and steps <= MAX_INDEX:
        steps += 1
        p = pos[active]
        left = ends[active] - p
        idx = u16[p >> 1]
        size = i64[(p >> 3) + 1]
        obj = (left >= OBJECT_HEADER) & (idx != 0)
        free = (left >= OBJECT_HEADER) & (idx == 0)
        need = OBJECT_HEADER + ((size + 7) & ~7)
        bad_obj = obj & ((size < 0) | (size > left - OBJECT_HEADER) | (need > left))
        bad_free = free & (size != left)
        ok = obj & ~bad_obj
        seen.append((active[ok], idx[ok], size[ok]))
        pos[active[ok]] += need[ok]
        if bad_obj.any() or bad_free.any():
            for k in active[bad_free].tolist():
                out[k] = "the free space does not end the collection"
            for k in active[bad_obj].tolist():
                out[k] = "an object runs past the collection's end"
        done_ok.append(active[~obj & ~bad_free])
        active = active[ok]
    if not seen:
        return out
    ks = np.concatenate([s[0] for s in seen])
    order = np.argsort(ks, kind="stable")
    ks = ks[order]
    idxs = np.concatenate([s[1] for s in seen]).astype(np.int64)[order]
    sizes = np.concatenate([s[2] for s in seen])[order]
    cut = np.searchsorted(ks, np.arange(len(starts) + 1))
    for k in np.concatenate(done_ok).tolist():
        out[k] = (idxs[cut[k] : cut[k + 1]], sizes[cut[k] : cut[k + 1]])
    for k in active.tolist():  # go on one by one from where the lock-step walk left them
        rest = _walk_one(buf, int(pos[k]), int(ends[k]), first=False, count=int(cut[k + 1] - cut[k]))
        if isinstance(rest, str):
            out[k] = rest
        else:
            out[k] = (
                np.concatenate([idxs[cut[k] : cut[k + 1]], rest[0]]),
                np.concatenate([sizes[cut[k] : cut[k + 1]], rest[1]]),
            )
    return out


def _walk_one(buf: np.ndarray, start: int, end: int, first: bool = True, count: int = 0) -> tuple | str:
    """The same walk as :func:`_lockstep`, for one collection (``start``: its header, or with ``first``
    false the position to go on from, ``count`` objects already seen)."""
    mv = memoryview(buf)
    p = start + COLLECTION_HEADER if first else start
    idxs: list[int] = []
    sizes: list[int] = []
    while end - p >= OBJECT_HEADER:
        idx, size = struct.unpack_from("<H6xQ", mv, p)
        left = end - p
        if idx == 0:
            if size != left:
                return "the free space does not end the collection"
            break
        need = OBJECT_HEADER + ((size + 7) & ~7)
        if size > left - OBJECT_HEADER or need > left:
            return "an object runs past the collection's end"
        if count + len(idxs) >= MAX_INDEX:
            return "more objects than 16-bit indices allow"
        idxs.append(idx)
        sizes.append(size)
        p += need
    return np.array(idxs, np.int64), np.array(sizes, np.int64)


# ------------------------------------------------------------------------------------------------ open files

_files: dict[tuple, _Heaps] = {}
_files_lock = threading.Lock()


def _key(f: h5py.File) -> tuple:
    try:
        fileno = f.id.fileno
    except (OSError, RuntimeError, ValueError):  # a root object HDF5 cannot read: the handle is the key
        return ("handle", id(f.id))
    return tuple(fileno) if isinstance(fileno, tuple) else (fileno,)


def _layout_ok(f: h5py.File) -> int | None:
    """The base address when heap IDs of this file have KAT's layout (8-byte offsets and lengths), else None."""
    try:
        fcpl = f.id.get_create_plist()
        if tuple(fcpl.get_sizes()) != (8, 8):
            return None
        return int(fcpl.get_userblock())
    except (OSError, RuntimeError, ValueError):
        return None


def register(f: h5py.File, fd: int | None = None, keep: bool = True) -> None:
    """Check heap reads of the open file ``f`` through ``fd`` (default: the sec2 driver's descriptor). With
    ``keep`` the collections walked are remembered until :func:`forget` (a file written meanwhile: False)."""
    base = _layout_ok(f)
    if base is None:
        return
    if fd is None:
        if f.driver != "sec2":
            return
        try:
            fd = f.id.get_vfd_handle()
        except (OSError, RuntimeError, ValueError):
            return
    key = _key(f)
    with _files_lock:
        if key in _files:
            _files[key].users += 1
        else:
            _files[key] = _Heaps(int(fd), base, keep)


def forget(f: h5py.File | None) -> None:
    """Undo one :func:`register` of ``f`` (call before closing it)."""
    if f is None or not f.id.valid:
        return
    key = _key(f)
    with _files_lock:
        h = _files.get(key)
        if h is not None:
            h.users -= 1
            if h.users <= 0:
                del _files[key]


def _heaps(f: h5py.File) -> _Heaps | None:
    with _files_lock:
        h = _files.get(_key(f))
    if h is not None:
        return h
    base = _layout_ok(f)
    if base is None or f.driver != "sec2":
        return None
    return _Heaps(int(f.id.get_vfd_handle()), base, keep=False)


# ------------------------------------------------------------------------------------------------ checks


def _fail(err: HeapDamage, path: str | os.PathLike | None) -> None:
    if path is None:
        raise err
    raise KatInputError(path, f"damaged KAT store ({err}); ingest the traces again") from None


def check(ds: h5py.Dataset, path: str | os.PathLike | None = None, index: int | None = None) -> None:
    """Check the heap objects that reading ``ds`` (or only its element ``index``, flat) would load.

    Damage raises :class:`~kat_gui.errors.KatInputError` naming ``path``, or :class:`HeapDamage` (an
    ``OSError``) without one. Datasets that are not variable-length strings pass unchecked.
    """
    t = ds.id.get_type()
    if not (isinstance(t, h5py.h5t.TypeStringID) and t.is_variable_str()):
        return
    h = _heaps(ds.file)
    if h is None:
        return
    try:
        ids = _dataset_ids(ds, h, index)
        if ids is not None:
            h.check_ids(ids, f"{ds.name}" + (f"[{index}]" if index is not None else ""))
    except HeapDamage as err:
        _fail(err, path)


def check_attrs(obj: h5py.Group | h5py.Dataset, path: str | os.PathLike | None = None) -> None:
    """Check the heap objects of the variable-length string attributes of ``obj``, found by reading its object
    header here (not through HDF5, which fails on some damaged attribute messages)."""
    h = _heaps(obj.file)
    if h is None:
        return
    try:
        at = h.base + int(h5py.h5o.get_info(obj.id).addr)
    except (OSError, RuntimeError, KeyError, ValueError):
        return  # HDF5 cannot read the header either: its own error comes with the first attribute read
    try:
        for name, raw in _attribute_data(h, at):
            h.check_ids(np.frombuffer(raw, HEAP_ID), f"attribute {name!r} of {obj.name}")
    except HeapDamage as err:
        _fail(err, path)


# ------------------------------------------------------------------------------------------------ heap IDs


def _dataset_ids(ds: h5py.Dataset, h: _Heaps, index: int | None) -> np.ndarray | None:
    """The heap IDs of ``ds`` (all, or element ``index``) from the file's bytes; None when not readable here."""
    n = int(np.prod(ds.shape, dtype=np.int64)) if ds.shape is not None else 0
    if index is not None and not 0 <= index < n:
        return None  # out of range: h5py refuses it before reading
    lo, hi = (0, n) if index is None else (index, index + 1)
    if hi <= lo:
        return None
    dcpl = ds.id.get_create_plist()
    layout = dcpl.get_layout()
    if layout == h5py.h5d.CONTIGUOUS:
        offset = ds.id.get_offset()
        if offset is None:  # never written: fill values, no heap objects
            return None
        raw = h.read(int(offset) + lo * HEAP_ID.itemsize, (hi - lo) * HEAP_ID.itemsize, f"{ds.name}'s data")
        return np.frombuffer(raw, HEAP_ID)
    if layout != h5py.h5d.CHUNKED or len(ds.shape) != 1:
        return None
    filters = [dcpl.get_filter(i) for i in range(dcpl.get_nfilters())]
    if any(flt[0] not in _FILTERS for flt in filters):
        return None
    rows = int(ds.chunks[0])
    if index is None:
        firsts: Iterable[int] = sorted(
            int(ds.id.get_chunk_info(i).chunk_offset[0]) for i in range(ds.id.get_num_chunks())
        )
    else:
        info = ds.id.get_chunk_info_by_coord((index // rows * rows,))
        firsts = [] if info.byte_offset is None else [int(info.chunk_offset[0])]
    parts = []
    for first in firsts:
        if first >= hi or first + rows <= lo:
            continue
        mask, data = ds.id.read_direct_chunk((first,))
        raw = _unfilter(bytes(data), filters, mask, rows * HEAP_ID.itemsize, ds.name)
        a, b = max(lo, first) - first, min(hi, first + rows) - first
        parts.append(np.frombuffer(raw, HEAP_ID)[a:b])
    return np.concatenate(parts) if parts else None


def _unfilter(data: bytes, filters: list, mask: int, size: int, name: str) -> bytes:
    """Undo a chunk's filters (last applied first), skipping those its filter mask says were not applied."""
    for i in range(len(filters) - 1, -1, -1):
        if mask & (1 << i):
            continue
        code, _flags, values, _name = filters[i]
        if code == h5py.h5z.FILTER_FLETCHER32:
            data = data[:-4]
        elif code == h5py.h5z.FILTER_DEFLATE:
            try:
                z = zlib.decompressobj()
                data = z.decompress(data, size)
            except zlib.error:
                raise HeapDamage(f"global heap: a chunk of {name} does not decompress") from None
        elif code == h5py.h5z.FILTER_SHUFFLE:
            width = int(values[0]) if values else HEAP_ID.itemsize
            n = len(data) // width if width > 0 else 0
            if n and width > 1:
                body = np.frombuffer(data, np.uint8, n * width).reshape(width, n).T.tobytes()
                data = body + data[n * width :]
    if len(data) < size:
        raise HeapDamage(f"global heap: a chunk of {name} holds {len(data)} bytes, not {size}")
    return data[:size]


def _attribute_data(h: _Heaps, at: int) -> list[tuple[str, bytes]]:
    """(name, heap IDs) of the variable-length string attributes in the object header at file offset ``at``.
    A header this parser does not follow gives fewer (or no) attributes, never an error: HDF5 opened the object
    already, and reads nothing more of an attribute that has no heap IDs."""
    out: list[tuple[str, bytes]] = []
    try:
        for mtype, body in _header_messages(h, at):
            if mtype == 0x000C:
                got = _attribute(body)
                if got is not None:
                    out.append(got)
    except (HeapDamage, struct.error, IndexError, ValueError, OverflowError):
        pass
    return out


def _header_messages(h: _Heaps, at: int) -> list[tuple[int, bytes]]:
    """(type, body) of each message of the object header at ``at`` (version 1 or 2), continuation blocks
    followed (at most OBJECT_HEADER_CHUNKS)."""
    head = h.read(at, 16, "object header")
    msgs: list[tuple[int, bytes]] = []
    if head[:4] == b"OHDR" and head[4] == 2:
        flags = head[5]
        p = 6 + (16 if flags & 0x20 else 0) + (4 if flags & 0x10 else 0)
        width = 1 << (flags & 3)
        pre = h.read(at, p + width, "object header")
        size0 = int.from_bytes(pre[p : p + width], "little")
        chunks = [(at + p + width, size0, 0)]
        hdr = 6 if flags & 0x04 else 4
    elif head[0] == 1:
        chunks = [(at + 16, struct.unpack_from("<I", head, 8)[0], 0)]
        flags, hdr = 0, 8
    else:
        return msgs
    v2 = hdr != 8
    done = 0
    while chunks and done < OBJECT_HEADER_CHUNKS:
        start, size, skip = chunks.pop(0)
        done += 1
        if size > 1 << 24:
            break
        data = h.read(start, size, "object header")
        p, end = skip, size - (4 if v2 and skip else 0)
        while end - p >= hdr:
            if v2:
                mtype, msize = data[p], struct.unpack_from("<H", data, p + 1)[0]
            else:
                mtype, msize = struct.unpack_from("<HH", data, p)
            body = data[p + hdr : p + hdr + msize]
            if len(body) != msize:
                break
            msgs.append((mtype, body))
            if mtype == 0x0010 and msize >= 16:  # continuation: address, length
                addr, length = struct.unpack_from("<QQ", body)
                if v2:  # "OCHK", messages, checksum
                    chunks.append((h.base + addr, length, 4))
                else:
                    chunks.append((h.base + addr, length, 0))
            p += hdr + msize
    return msgs


def _attribute(body: bytes) -> tuple[str, bytes] | None:
    """(name, heap IDs) of an attribute message (versions 1-3) whose value is a variable-length string."""
    version = body[0]
    name_size, type_size, space_size = struct.unpack_from("<HHH", body, 2)
    if version == 1:
        pad, p = 8, 8  # name, datatype and dataspace each padded to 8 bytes
    elif version in (2, 3):
        if body[1] & 0x03:  # shared datatype or dataspace: not followed
            return None
        pad, p = 1, 8 if version == 2 else 9  # version 3: the name's character set, one byte
    else:
        return None

    def padded(n: int) -> int:
        return (n + pad - 1) // pad * pad

    name = body[p : p + name_size].split(b"\0", 1)[0].decode("utf-8", "replace")
    p += padded(name_size)
    dtype = body[p : p + type_size]
    p += padded(type_size)
    space = body[p : p + space_size]
    p += padded(space_size)
    # Datatype message: class 9 (variable-length) in the low 4 bits, type 1 (string) in the first bit field.
    if len(dtype) < 2 or dtype[0] & 0x0F != 9 or dtype[1] & 0x0F != 1:
        return None
    count = _elements(space)
    if count is None:
        return None
    data = body[p : p + count * HEAP_ID.itemsize]
    return (name, data) if len(data) == count * HEAP_ID.itemsize else None


def _elements(space: bytes) -> int | None:
    """Element count of a dataspace message (version 1: rank 0 is a scalar; version 2: type 0 scalar, 1 simple,
    2 null); dimensions are 8-byte lengths."""
    version, rank = space[0], space[1]
    if version == 1:
        p, kind = 8, 1 if rank else 0
    elif version == 2:
        p, kind = 4, space[3]
    else:
        return None
    if kind == 2:
        return 0
    if kind == 0 or rank == 0:
        return 1
    dims = struct.unpack_from(f"<{rank}Q", space, p)
    return int(np.prod(np.array(dims, dtype=object)))
