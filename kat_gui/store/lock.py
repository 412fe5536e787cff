"""Several KAT processes on one store: the sidecar lock file that serialises writers, and the file signature
that tells a reader the store changed.

Readers never hold a lock while they read events (written once at ingest, never modified). Writers of results
(detection, notes) take an exclusive ``flock`` on ``.RUN.kat.h5.lock`` next to the store for the few
milliseconds of their write and write their pid and command into it; a reader takes the same lock shared
while it opens the store or reads results, so it never sees a write half done. See "Concurrent use" in
``docs/store-format.md`` for why.

Waits: a writer (or a reader) that finds the lock taken retries for ``KAT_LOCK_WAIT`` seconds (default
:data:`DEFAULT_WAIT_S`). A writer then gives up with :class:`StoreBusy` (one line naming the other process);
a reader goes on without the lock (it retries a read that fails) and, for the next STUCK_S seconds, does
not wait for that lock again.

Without ``fcntl`` (Windows) the locks do nothing.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from kat_gui.errors import KatInputError

try:
    import fcntl
except ImportError:  # pragma: no cover - not on Linux/macOS
    fcntl = None  # type: ignore[assignment]

LOCK_SUFFIX = ".lock"
WAIT_ENV = "KAT_LOCK_WAIT"
DEFAULT_WAIT_S = 10.0
POLL_S = 0.05

# (st_dev, st_ino, st_size, st_mtime_ns) of a store; None when the path is gone.
Signature = tuple[int, int, int, int] | None

# Lock files whose exclusive lock the current thread holds: a read in the middle of one's own write must not
# wait for oneself.
_held = threading.local()
# A reader that waited the whole wait for a writer does not wait again for STUCK_S seconds (a stopped or hung
# writer would otherwise cost every later read of this process the whole wait): lock file -> monotonic time.
STUCK_S = 30.0
_stuck: dict[str, float] = {}


class StoreBusy(KatInputError):
    """Another process holds the store's write lock for longer than the wait."""

    def __init__(self, path: str | os.PathLike, holder: str):
        super().__init__(None, f"{Path(path)} is being written by {holder}; try again when it finishes")
        self.path = os.fspath(path)


def lock_path(store: str | os.PathLike) -> Path:
    """The sidecar lock file of a store: ``.RUN.kat.h5.lock`` in the same folder (hidden, so that ``ls`` and
    ``kat gui runs/*`` do not show it)."""
    p = Path(store)
    return p.with_name("." + p.name + LOCK_SUFFIX)


def wait_seconds() -> float:
    """How long to wait for the lock: ``$KAT_LOCK_WAIT`` seconds (default DEFAULT_WAIT_S)."""
    try:
        return max(0.0, float(os.environ.get(WAIT_ENV, DEFAULT_WAIT_S)))
    except ValueError:
        return DEFAULT_WAIT_S


def signature(path: str | os.PathLike) -> Signature:
    """What changes when the store is written or replaced: device, inode, size, modification time."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def process_name() -> str:
    """How this process is named in the lock file: ``kat detect``, ``kat gui``, ``python -c``, ``script.py``."""
    argv = sys.argv or [""]
    prog = os.path.basename(argv[0]) if argv[0] else "python"
    if prog in ("kat", "kat-gui") or argv[0].endswith(os.path.join("kat_gui", "__main__.py")):
        sub = next((a for a in argv[1:] if not a.startswith("-")), "")
        return "kat-gui" if prog == "kat-gui" else f"kat {sub}".strip()
    return "python -c" if prog == "-c" else prog


def _holder(fd: int | None) -> str:
    """``KAT pid 1234 (kat detect)`` from the lock file's content, or a generic phrase."""
    if fd is not None:
        try:
            text = os.pread(fd, 4096, 0).decode("utf-8", "replace").strip()
        except OSError:
            text = ""
        pid, _, name = text.partition(" ")
        if pid.isdigit():
            return f"KAT pid {pid} ({name})" if name else f"KAT pid {pid}"
    return "another KAT process"


def _holds(lock: Path) -> bool:
    return str(lock) in getattr(_held, "paths", set())


def _flock_wait(fd: int, mode: int, wait_s: float) -> bool:
    """Take ``flock(fd, mode)``, retrying for ``wait_s`` seconds; False when it stayed taken."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            fcntl.flock(fd, mode | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if time.monotonic() >= deadline:
                return False
            time.sleep(POLL_S)
        except OSError:  # a file system without flock: go on unlocked
            return True


@contextmanager
def write_lock(store: str | os.PathLike, wait_s: float | None = None) -> Iterator[None]:
    """Hold the store's exclusive write lock (raises :class:`StoreBusy` after ``wait_s`` seconds).

    The lock file is created when missing and kept afterwards (removing it would let two writers lock
    different files). In a folder where it cannot be created the store file itself is locked instead.
    """
    lock = lock_path(store)
    if fcntl is None or _holds(lock):
        yield
        return
    sidecar = True
    try:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError:
        sidecar = False
        try:
            fd = os.open(store, os.O_RDONLY)
        except OSError:  # the write itself will say what is wrong with the store
            yield
            return
    try:
        if not _flock_wait(fd, fcntl.LOCK_EX, wait_seconds() if wait_s is None else wait_s):
            raise StoreBusy(store, _holder(fd if sidecar else None))
        if sidecar:
            try:
                os.ftruncate(fd, 0)
                os.pwrite(fd, f"{os.getpid()} {process_name()}\n".encode(), 0)
            except OSError:
                pass
        held = getattr(_held, "paths", None)
        if held is None:
            held = _held.paths = set()
        held.add(str(lock))
        try:
            yield
        finally:
            held.discard(str(lock))
            if sidecar:
                try:
                    os.ftruncate(fd, 0)
                except OSError:
                    pass
    finally:
        os.close(fd)  # releases the flock


@contextmanager
def read_lock(store: str | os.PathLike, wait_s: float | None = None) -> Iterator[bool]:
    """Hold the store's lock shared while the body reads; yields False when it goes on without it (no lock
    file, one this process cannot read, or a writer that kept it past the wait)."""
    lock = lock_path(store)
    if fcntl is None or _holds(lock):
        yield _holds(lock)
        return
    try:
        fd = os.open(lock, os.O_RDONLY)
    except OSError:
        yield False
        return
    try:
        wait = wait_seconds() if wait_s is None else wait_s
        if time.monotonic() < _stuck.get(str(lock), 0.0):
            wait = 0.0
        locked = _flock_wait(fd, fcntl.LOCK_SH, wait)
        if locked:
            _stuck.pop(str(lock), None)
        else:
            _stuck[str(lock)] = time.monotonic() + STUCK_S
        yield locked
    finally:
        os.close(fd)
