"""Where parallel work runs: in this process, on every core of this machine, or on a dask cluster.

KAT's parallel stages (ingest: one task per trace file; detection: one task per rank, then per step window)
submit plain functions through an :class:`Executor` and merge the results in order themselves. Three kinds:

- :class:`InProcess` (``workers=0``): each task runs when it is submitted, in this process, one at a time. No
  thread, no process, no socket: the default for small inputs (and what ``tests/test_offline.py`` runs).
- a ``distributed.LocalCluster`` (``workers=N``): N worker processes of one thread each, scheduler and workers
  on 127.0.0.1 with random free ports, no dashboard, scratch space in a temporary folder removed afterwards;
- an existing cluster (``scheduler="tcp://host:8786"``, or ``$DASK_SCHEDULER_ADDRESS``): KAT connects as a
  client. Its workers must import the same KAT version and see the inputs and the output at the same paths
  (a shared filesystem): :meth:`Executor.check_paths` says so in one line when a worker cannot.

Tasks are ``dask.distributed`` futures: a task's result stays on the worker that computed it until it is
asked for (:meth:`Task.result`) or passed to another task (which then runs where the data is). Cancelling
(``Cancelled`` from a progress callback, Ctrl-C) cancels every outstanding future before the error leaves
:func:`executor`.

``workers=None`` (the default) decides from the work: a LocalCluster of one worker per core when there are
at least two tasks' worth of inputs and at least ``min_bytes`` of them (starting the cluster costs about a
second: measured in ``docs/scale-out.md``) on a machine of at least ``AUTO_MIN_CORES`` cores, in-process
otherwise. Units: bytes for sizes, seconds for times.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kat_gui.errors import Cancelled, KatInputError

ENV_SCHEDULER = "DASK_SCHEDULER_ADDRESS"
CONNECT_TIMEOUT_S = 20


@dataclass(frozen=True)
class Scale:
    """What the user asked for: ``workers`` (None: decide from the work; 0: in this process; N: a local
    cluster of N worker processes) and ``scheduler`` (the address of a running cluster; wins over workers)."""

    workers: int | None = None
    scheduler: str | None = None

    def address(self) -> str | None:
        """The scheduler to connect to: the one named, else ``$DASK_SCHEDULER_ADDRESS`` unless a worker count
        was given explicitly."""
        if self.scheduler:
            return self.scheduler
        if self.workers is None:
            return os.environ.get(ENV_SCHEDULER) or None
        return None


_requested: ContextVar[Scale | None] = ContextVar("kat_scale", default=None)


@contextlib.contextmanager
def requested(scale: Scale | None) -> Iterator[None]:
    """Make ``scale`` the one library calls without an explicit scale use (``kat detect --workers`` sets it
    around ``detect_store``), for the duration of the block."""
    token = _requested.set(scale)
    try:
        yield
    finally:
        _requested.reset(token)


def requested_scale() -> Scale:
    """The scale set by :func:`requested`, or the default (decide from the work)."""
    return _requested.get() or Scale()


def cpu_count() -> int:
    """Cores this process may run on."""
    try:
        return max(len(os.sched_getaffinity(0)), 1)
    except (AttributeError, OSError):
        return max(os.cpu_count() or 1, 1)


class Task:
    """The result of a task submitted to an :class:`InProcess` executor (already computed)."""

    __slots__ = ("_error", "_value")

    def __init__(self, value: Any = None, error: BaseException | None = None):
        self._value = value
        self._error = error

    def result(self) -> Any:
        if self._error is not None:
            raise self._error
        return self._value

    def release(self) -> None:
        self._value = None


class Executor:
    """Submits tasks and hands back their results; see the module docstring for the three kinds."""

    workers = 0
    description = "in this process"

    def submit(self, fn: Callable, *args: Any, priority: int = 0, spread: bool = False) -> Any:
        """Run ``fn(*args)`` as a task (``priority``: higher runs first among queued tasks; ``spread``: on the
        worker with the fewest such tasks outstanding, for tasks that start a chain of work on their data)."""
        raise NotImplementedError

    def check_paths(self, paths: Iterable[str | os.PathLike]) -> None:
        """Raise KatInputError (one line) when a worker cannot see one of ``paths``."""

    def cancel(self) -> None:
        """Cancel every task still outstanding."""

    def run_everywhere(self, fn: Callable[[], Any]) -> None:
        """Run ``fn()`` in every process that runs tasks (to release what tasks keep per process)."""
        fn()


class InProcess(Executor):
    """Runs each task at once, here. A task's exception is kept and raised by ``result()``, as dask does, so
    that callers that read results in order raise the first error in that order."""

    def submit(self, fn: Callable, *args: Any, priority: int = 0, spread: bool = False) -> Task:
        args = tuple(a.result() if isinstance(a, Task) else a for a in args)
        try:
            return Task(fn(*args))
        except (Cancelled, KeyboardInterrupt):
            raise
        except Exception as exc:  # noqa: BLE001 - handed to the caller by result()
            return Task(error=exc)


class OnDask(Executor):
    """Tasks as ``distributed`` futures on a client (of a LocalCluster or of a running scheduler)."""

    def __init__(self, client, description: str, workers: int):
        self.client = client
        self.description = description
        self.workers = workers
        self._futures: list = []
        self._spread: list = []
        self._worker_list: list[str] = []
        self._workers_at = -1e9

    def submit(self, fn: Callable, *args: Any, priority: int = 0, spread: bool = False) -> Any:
        kw: dict[str, Any] = {}
        if spread:
            # dask places tasks without inputs as it sees fit, which here left one of two workers idle most of
            # the time; the least busy worker is asked for instead (another may still take it if it is gone).
            self._spread = [(w, f) for w, f in self._spread if not f.done()]
            workers = self._workers()
            if workers:
                load = {w: 0 for w in workers}
                for w, _f in self._spread:
                    if w in load:
                        load[w] += 1
                kw = {"workers": [min(workers, key=lambda w: load[w])], "allow_other_workers": True}
        fut = self.client.submit(fn, *args, pure=False, priority=priority, **kw)
        if kw:
            self._spread.append((kw["workers"][0], fut))
        # Only futures still running are kept (for cancel): holding a finished one would keep its result
        # alive on its worker.
        self._futures = [f for f in self._futures if not f.done()]
        self._futures.append(fut)
        return fut

    def _workers(self) -> list[str]:
        now = time.monotonic()
        if now - self._workers_at > 5.0:
            self._worker_list = sorted(self.client.scheduler_info(n_workers=-1).get("workers", {}))
            self._workers_at = now
        return self._worker_list

    def check_paths(self, paths: Iterable[str | os.PathLike]) -> None:
        wanted = [os.path.abspath(os.fspath(p)) for p in paths]
        if not wanted:
            return
        seen = self.client.run(_missing_paths, wanted)
        for worker, missing in sorted(seen.items()):
            if missing:
                raise KatInputError(
                    missing[0],
                    f"dask worker {worker} cannot see this path: the inputs and the output must be on a "
                    "filesystem every worker shares, at the same path",
                )

    def run_everywhere(self, fn: Callable[[], Any]) -> None:
        with contextlib.suppress(Exception):
            self.client.run(fn)

    def cancel(self) -> None:
        live = [f for f in self._futures if not f.done()]
        if live:
            with contextlib.suppress(Exception):
                self.client.cancel(live, force=True)
        self._futures = []


def _missing_paths(paths: Sequence[str]) -> list[str]:
    """Run on each worker: the paths it cannot see (a file, or the folder a new file goes into)."""
    return [p for p in paths if not os.path.exists(p)]


# Least cores for the automatic choice of a local cluster: the process that merges (the store writer, the
# detection client with dask's scheduler) needs a core of its own; on 2 cores two workers and it were slower
# than one process (benchmarks/results/scaleout.md).
AUTO_MIN_CORES = 4


def worth_a_cluster(n_tasks: int, n_bytes: int, min_bytes: int) -> bool:
    """The automatic choice: several tasks, enough bytes to pay for starting workers, and enough cores."""
    return n_tasks >= 2 and n_bytes >= min_bytes and cpu_count() >= AUTO_MIN_CORES


@contextlib.contextmanager
def executor(
    scale: Scale | None = None,
    *,
    n_tasks: int = 1,
    n_bytes: int = 0,
    min_bytes: int = 1 << 62,
    paths: Sequence[str | os.PathLike] = (),
    fork_safe: bool = False,
) -> Iterator[Executor]:
    """The executor ``scale`` asks for (see the module docstring); ``n_tasks``/``n_bytes`` size the work for
    the automatic choice, ``min_bytes`` is the least work worth a local cluster, ``paths`` must be visible to
    every worker of a running cluster, ``fork_safe`` says this process has no HDF5 file open (a local
    cluster may then fork its workers: :func:`start_method`). Outstanding tasks are cancelled when the block
    raises."""
    scale = scale or requested_scale()
    if scale.workers is not None and scale.workers < 0:
        raise KatInputError(None, f"--workers must be 0 or more, not {scale.workers}")
    address = scale.address()
    if address:
        ex, close = _connect(address)
        ex.check_paths(paths)
    else:
        n = scale.workers
        if n is None:
            n = min(cpu_count(), n_tasks) if worth_a_cluster(n_tasks, n_bytes, min_bytes) else 0
        if n == 0:
            yield InProcess()
            return
        ex, close = _local_cluster(n, fork_safe)
    try:
        yield ex
    except BaseException:
        ex.cancel()
        raise
    finally:
        close()


def _quiet_dask() -> None:
    # Connection chatter of a cluster shutting down is not the user's business; real errors reach the caller
    # through the futures.
    for name in ("distributed", "distributed.worker", "distributed.scheduler", "distributed.nanny"):
        logging.getLogger(name).setLevel(logging.ERROR)


def _connect(address: str) -> tuple[OnDask, Callable[[], None]]:
    from distributed import Client

    _quiet_dask()
    try:
        client = Client(address, timeout=CONNECT_TIMEOUT_S, set_as_default=False)
    except (OSError, TimeoutError) as exc:
        raise KatInputError(None, f"cannot reach the dask scheduler at {address} ({exc})") from None
    n = len(client.scheduler_info(n_workers=-1).get("workers", {}))
    return OnDask(client, f"dask scheduler {address} ({n} workers)", n), client.close


def start_method(fork_safe: bool = False) -> str:
    """How the local cluster starts its worker processes: ``fork`` where it is safe, else dask's ``spawn``.

    A spawned worker is a new interpreter that imports dask, numpy, h5py and KAT again: about 1 s before the
    first task here, as long as a whole 200 MB ingest in one process (``docs/scale-out.md``). A forked one
    starts in ~0.1 s with everything imported. Fork is used only when the caller says this process holds no
    HDF5 file open (``fork_safe``: the library's open-file state would be shared with the child; the ingest
    pipeline checks with ``store.open_files()``), on Linux, by a process without Qt (a GUI process's threads
    and display connection must not be duplicated): the ``kat ingest`` command. ``KAT_DASK_START`` (``fork``
    or ``spawn``) overrides the choice."""
    forced = os.environ.get("KAT_DASK_START", "").strip().lower()
    if forced in ("fork", "spawn"):
        return forced
    if (
        not fork_safe
        or not sys.platform.startswith("linux")
        or any(m.startswith("PySide6") for m in sys.modules)
    ):
        return "spawn"
    return "fork"


def _local_cluster(n: int, fork_safe: bool = False) -> tuple[OnDask, Callable[[], None]]:
    import dask
    from distributed import Client, LocalCluster

    _quiet_dask()
    scratch = tempfile.mkdtemp(prefix="kat-dask-")
    cluster = client = None
    # dask spawns workers with MALLOC_TRIM_THRESHOLD_ set, which turns off glibc's adaptive mmap threshold:
    # every large numpy array is then mapped and unmapped afresh (page faults), 25-40 % slower for the readers
    # and sorts here. KAT's tasks hold bounded memory; the single-thread settings stay.
    environ = {k: v for k, v in (dask.config.get("distributed.nanny.pre-spawn-environ") or {}).items()
               if k != "MALLOC_TRIM_THRESHOLD_"}  # fmt: skip
    method = start_method(fork_safe)
    try:
        with dask.config.set(
            {
                "distributed.nanny.pre-spawn-environ": environ,
                "distributed.worker.multiprocessing-method": method,
            }
        ):
            cluster = LocalCluster(
                n_workers=n,
                threads_per_worker=1,
                processes=True,
                host="127.0.0.1",
                dashboard_address=None,
                silence_logs=logging.CRITICAL,  # shutdown races (heartbeats to a closed scheduler) are noise
                local_directory=scratch,
                memory_limit=0,  # tasks are sized by KAT (bounded windows); no spilling or pausing by dask
            )
        client = Client(cluster, set_as_default=False)
    except BaseException:
        if cluster is not None:
            cluster.close()
        shutil.rmtree(scratch, ignore_errors=True)
        raise

    def close() -> None:
        with contextlib.suppress(Exception):
            client.close()
        with contextlib.suppress(Exception):
            cluster.close()
        shutil.rmtree(scratch, ignore_errors=True)

    return OnDask(client, f"local cluster of {n} worker processes", n), close


def in_order(
    ex: Executor,
    items: Sequence[Any],
    submit: Callable[[Executor, Any], Any],
    window: int | None = None,
) -> Iterator[tuple[Any, Any]]:
    """Submit ``submit(ex, item)`` for every item, at most ``window`` ahead of the one being consumed, and
    yield ``(item, task)`` in the items' order; the caller reads ``task.result()``. With an in-process
    executor each task runs just before it is yielded (no read-ahead, one result alive at a time)."""
    if window is None:
        window = 2 * ex.workers + 1
    window = max(window, 1)
    pending: list[tuple[Any, Any]] = []
    it = iter(items)
    for item in it:
        pending.append((item, submit(ex, item)))
        if len(pending) >= window:
            break
    while pending:
        yield pending.pop(0)
        nxt = next(it, _END)
        if nxt is not _END:
            pending.append((nxt, submit(ex, nxt)))


_END = object()
POLL_S = 0.2


class Prefetch:
    """Results of submitted tasks brought into this process as soon as each task completes (on dask, by the
    client's event loop in the background), so that the caller, which reads them in its own order, finds them
    here instead of paying a round trip per result. Errors are raised by :meth:`result`, for that task."""

    def __init__(self, ex: Executor):
        self._ac = None
        self._got: dict[str, tuple[Any, Any]] = {}
        if isinstance(ex, OnDask):
            from distributed import as_completed

            self._ac = as_completed(loop=ex.client.loop, with_results=True, raise_errors=False)

    def add(self, task: Any) -> Any:
        if self._ac is not None:
            self._ac.add(task)
        return task

    def _drain(self) -> None:
        for fut, res in self._ac.next_batch(block=False):
            self._got[fut.key] = (fut, res)

    def ready(self, task: Any) -> bool:
        """Whether ``task``'s result is here (always, in process)."""
        if self._ac is None:
            return True
        self._drain()
        return task.key in self._got

    def result(self, task: Any, poll: Callable[[], None] | None = None) -> Any:
        """``task``'s result, waiting for it (``poll`` every :data:`POLL_S`, as :func:`wait`)."""
        if self._ac is None:
            return task.result()
        last = time.monotonic()
        while True:
            self._drain()
            if task.key in self._got:
                fut, res = self._got.pop(task.key)
                return fut.result() if fut.status == "error" else res
            with self._ac.thread_condition:
                if not self._ac.has_ready():
                    self._ac.thread_condition.wait(timeout=0.05)
            if poll is not None and time.monotonic() - last >= POLL_S:
                poll()
                last = time.monotonic()


def wait(task: Any, poll: Callable[[], None] | None = None) -> Any:
    """``task.result()``, calling ``poll`` every :data:`POLL_S` while it is not ready (a progress callback that
    raises ``Cancelled`` when the user cancels: the wait ends at once, and :func:`executor` cancels the rest)."""
    if isinstance(task, Task) or poll is None:
        return task.result()
    while True:
        try:
            return task.result(timeout=POLL_S)
        except TimeoutError:
            poll()


def describe(path: str | os.PathLike) -> str:
    """A path as worker tasks receive it: absolute, so a worker started elsewhere finds the same file."""
    return str(Path(path).resolve())
