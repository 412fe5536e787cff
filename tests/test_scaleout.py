"""Scale-out on dask (docs/scale-out.md): the same store and the same detection results in this process, on a
local cluster and on a real cluster (a ``dask scheduler`` and two ``dask worker`` processes on 127.0.0.1,
started from this environment and always stopped); streamed detection equal to whole-run detection; cancel;
small inputs stay in this process (no socket)."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from kat_gui import cli, parallel, pipeline
from kat_gui.errors import Cancelled, KatInputError

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from benchmarks import synth_run  # noqa: E402


def _datasets(path: Path) -> dict[str, object]:
    out: dict[str, object] = {}
    with h5py.File(path, "r") as f:

        def visit(name, obj):
            if isinstance(obj, h5py.Dataset):
                out[name] = (obj.dtype.str, obj[()])
            out[name + "@attrs"] = {k: np.asarray(v).tolist() for k, v in obj.attrs.items()}

        f.visititems(visit)
        out["@root"] = {k: np.asarray(v).tolist() for k, v in f.attrs.items()}
    return out


def assert_same_store(a: Path, b: Path) -> None:
    """Same groups, datasets (dtype and values) and attributes: the HDF5 content, not the file bytes."""
    da, db = _datasets(a), _datasets(b)
    assert sorted(da) == sorted(db)
    for k in da:
        va, vb = da[k], db[k]
        if isinstance(va, tuple):
            assert va[0] == vb[0], k
            assert np.array_equal(np.asarray(va[1]), np.asarray(vb[1])), k
        else:
            assert va == vb, k


@pytest.fixture(scope="module")
def traces(tmp_path_factory) -> Path:
    """8 ranks x 60 steps of a decode job whose rank 5 runs slow from step 20 (6,240 GPU events)."""
    d = tmp_path_factory.mktemp("traces")
    synth_run.generate(d, ranks=8, steps=60, layers=4, culprit=5, slowdown=0.25, seed=1)
    return d


@pytest.fixture(scope="module")
def serial_store(traces, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("serial") / "run.kat.h5"
    assert cli.main(["ingest", str(traces), "-o", str(out), "--workers", "0"]) == 0
    return out


def _detect_json(store: Path, tmp: Path, *extra: str, window_rows: int | None = None) -> dict:
    copy = tmp / f"d{len(list(tmp.iterdir()))}.kat.h5"
    shutil.copy(store, copy)
    out = copy.with_suffix(".json")
    old = os.environ.get("KAT_DETECT_WINDOW_ROWS")
    try:
        if window_rows is not None:
            os.environ["KAT_DETECT_WINDOW_ROWS"] = str(window_rows)
        assert cli.main(["detect", str(copy), "--json", str(out), *extra]) == 0
    finally:
        if old is None:
            os.environ.pop("KAT_DETECT_WINDOW_ROWS", None)
        else:
            os.environ["KAT_DETECT_WINDOW_ROWS"] = old
    return json.loads(out.read_text())


@pytest.fixture(scope="module")
def whole_result(serial_store, tmp_path_factory) -> dict:
    return _detect_json(serial_store, tmp_path_factory.mktemp("whole"), "--workers", "0")


def test_whole_run_names_the_slow_gpu(whole_result):
    top = whole_result["findings"][0]
    assert top["component"] == "gpu" and top["ranks"] == [5], top


def test_streamed_detection_is_byte_identical_to_whole_run(serial_store, whole_result, tmp_path, monkeypatch):
    import kat_gui.detect.streamed as streamed

    seen = []
    build = streamed.StreamedAnalysis.build.__func__

    def spy(cls, *a, **k):
        run = build(cls, *a, **k)
        seen.append(len(run.windows) if run is not None else 0)
        return run

    monkeypatch.setattr(streamed.StreamedAnalysis, "build", classmethod(spy))
    doc = _detect_json(serial_store, tmp_path, "--workers", "0", window_rows=700)
    assert seen and seen[0] >= 5, seen  # really streamed, in several windows
    assert json.dumps(doc, sort_keys=True) == json.dumps(whole_result, sort_keys=True)


def test_parallel_ingest_and_detect_on_a_local_cluster(traces, serial_store, whole_result, tmp_path):
    out = tmp_path / "par.kat.h5"
    assert cli.main(["ingest", str(traces), "-o", str(out), "--workers", "2"]) == 0
    assert_same_store(serial_store, out)
    doc = _detect_json(out, tmp_path, "--workers", "2", window_rows=1500)
    assert json.dumps(doc, sort_keys=True) == json.dumps(whole_result, sort_keys=True)


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_both_worker_start_methods_write_the_serial_store(
    traces, serial_store, tmp_path, monkeypatch, method
):
    monkeypatch.setenv("KAT_DASK_START", method)
    out = tmp_path / f"{method}.kat.h5"
    assert cli.main(["ingest", str(traces), "-o", str(out), "--workers", "2"]) == 0
    assert_same_store(serial_store, out)


def test_workers_are_forked_only_where_it_is_safe(serial_store, monkeypatch):
    from kat_gui.store import TraceStore, open_files

    monkeypatch.delenv("KAT_DASK_START", raising=False)
    for name in [m for m in sys.modules if m.startswith("PySide6")]:
        monkeypatch.delitem(sys.modules, name)
    assert open_files() == 0
    assert parallel.start_method(fork_safe=True) == "fork"  # `kat ingest`: no Qt, no HDF5 file open
    with TraceStore.open(serial_store):
        assert open_files() == 1
        assert parallel.start_method(fork_safe=open_files() == 0) == "spawn"
    assert parallel.start_method() == "spawn"  # a caller that does not say (detection: the store is open)
    monkeypatch.setitem(sys.modules, "PySide6", sys)
    assert parallel.start_method(fork_safe=True) == "spawn"  # a GUI process
    monkeypatch.setenv("KAT_DASK_START", "fork")
    assert parallel.start_method() == "fork"


def test_small_inputs_stay_in_this_process(traces, tmp_path, monkeypatch):
    def no_cluster(n, fork_safe=False):
        raise AssertionError("a small ingest must not start a cluster")

    monkeypatch.setattr(parallel, "_local_cluster", no_cluster)
    monkeypatch.delenv(parallel.ENV_SCHEDULER, raising=False)
    pipeline.ingest([traces], tmp_path / "s.kat.h5")


def test_large_inputs_use_every_core_by_default(traces, tmp_path, monkeypatch):
    calls = []

    def fake_cluster(n, fork_safe=False):
        calls.append(n)
        return parallel.InProcess(), lambda: None

    monkeypatch.setattr(parallel, "_local_cluster", fake_cluster)
    monkeypatch.setattr(parallel, "cpu_count", lambda: 4)
    monkeypatch.setattr(pipeline, "INGEST_MIN_BYTES", 1)
    monkeypatch.delenv(parallel.ENV_SCHEDULER, raising=False)
    pipeline.ingest([traces], tmp_path / "l.kat.h5")
    assert calls == [4]


def test_cancel_stops_the_workers_and_leaves_nothing(traces, tmp_path):
    psutil = pytest.importorskip("psutil")

    def workers() -> set[
        int
    ]:  # spawned processes, not multiprocessing's resource tracker (it stays, by design)
        out = set()
        for p in psutil.Process().children(recursive=True):
            try:
                if p.is_running() and "resource_tracker" not in " ".join(p.cmdline()):
                    out.add(p.pid)
            except psutil.Error:
                pass
        return out

    before = workers()
    calls = []

    def progress(frac, msg):
        calls.append(msg)
        if len(calls) > 3:
            raise Cancelled()

    out = tmp_path / "c.kat.h5"
    with pytest.raises(Cancelled):
        pipeline.ingest([traces], out, progress=progress, scale=parallel.Scale(workers=2))
    assert not out.exists() and not list(tmp_path.glob("*.tmp-*"))
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        left = workers() - before
        if not left:
            break
        time.sleep(0.2)
    assert not left, "worker processes outlived the cancelled ingest"


def test_bad_worker_count_is_one_line(traces, tmp_path, capsys):
    assert cli.main(["ingest", str(traces), "-o", str(tmp_path / "x.kat.h5"), "--workers", "-1"]) == 2
    assert "--workers must be 0 or more" in capsys.readouterr().err


def test_unreachable_scheduler_is_one_line(traces, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(parallel, "CONNECT_TIMEOUT_S", 2)
    port = _free_port()
    rc = cli.main(
        ["ingest", str(traces), "-o", str(tmp_path / "x.kat.h5"), "--scheduler", f"tcp://127.0.0.1:{port}"]
    )
    assert rc == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cannot reach the dask scheduler" in err[0]


# ---------------------------------------------------------------------------------------------- real cluster


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_port(port: int, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port}")


@pytest.fixture(scope="module")
def dask_cluster(tmp_path_factory):
    """``dask scheduler`` + 2 ``dask worker`` processes on 127.0.0.1 (free ports, no dashboard), started from
    this environment in another working folder; stopped (terminate, then kill) whatever happens."""
    dask = Path(sys.executable).with_name("dask")
    if not dask.exists():
        pytest.fail(f"{dask} missing: dask[distributed] is a runtime requirement (requirements/runtime.txt)")
    work = tmp_path_factory.mktemp("cluster")
    env = dict(os.environ, PYTHONPATH=str(ROOT), DASK_DISTRIBUTED__WORKER__DAEMON="False")
    env.pop(parallel.ENV_SCHEDULER, None)
    port = _free_port()
    address = f"tcp://127.0.0.1:{port}"
    procs: list[subprocess.Popen] = []

    def start(args: list[str], name: str) -> None:
        log = open(work / f"{name}.log", "w")  # noqa: SIM115 - closed with the process
        procs.append(
            subprocess.Popen([str(dask), *args], cwd=work, env=env, stdout=log, stderr=subprocess.STDOUT)
        )

    try:
        start(["scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard"], "scheduler")
        _wait_port(port, 60)
        for i in range(2):
            start(
                ["worker", address, "--host", "127.0.0.1", "--nthreads", "1", "--no-dashboard",
                 "--memory-limit", "0", "--local-directory", str(work / f"w{i}"), "--name", f"w{i}"],
                f"worker{i}",
            )  # fmt: skip
        from distributed import Client

        with Client(address, timeout=30) as client:
            client.wait_for_workers(2, timeout=90)
        yield address
    finally:
        for p in reversed(procs):
            p.terminate()
        for p in reversed(procs):
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(timeout=10)


def test_ingest_and_detect_through_a_real_cluster(dask_cluster, traces, serial_store, whole_result, tmp_path):
    out = tmp_path / "cluster.kat.h5"
    assert cli.main(["ingest", str(traces), "-o", str(out), "--scheduler", dask_cluster]) == 0
    assert_same_store(serial_store, out)
    doc = _detect_json(out, tmp_path, "--scheduler", dask_cluster, window_rows=1500)
    assert json.dumps(doc, sort_keys=True) == json.dumps(whole_result, sort_keys=True)


def test_scheduler_from_the_environment(dask_cluster, traces, serial_store, tmp_path, monkeypatch):
    monkeypatch.setenv(parallel.ENV_SCHEDULER, dask_cluster)
    out = tmp_path / "env.kat.h5"
    pipeline.ingest([traces], out)
    assert_same_store(serial_store, out)


def test_a_path_the_workers_cannot_see_is_one_line(dask_cluster):
    with (
        pytest.raises(KatInputError) as e,
        parallel.executor(parallel.Scale(scheduler=dask_cluster), paths=["/no/such/kat/input.json"]),
    ):
        pass
    assert "cannot see this path" in str(e.value) and "\n" not in str(e.value)


def test_cancel_during_streamed_detection_writes_nothing(serial_store, tmp_path, monkeypatch):
    from kat_gui.detect import detect_store, load_result
    from kat_gui.store import TraceStore

    monkeypatch.setenv("KAT_DETECT_WINDOW_ROWS", "700")
    copy = tmp_path / "cancel.kat.h5"
    shutil.copy(serial_store, copy)
    seen = []

    def progress(frac, msg):
        seen.append(msg)
        if "references" in msg:  # inside the window passes
            raise Cancelled()

    with pytest.raises(Cancelled), parallel.requested(parallel.Scale(workers=0)):
        detect_store(copy, progress=progress)
    assert any("windows of steps" in m for m in seen)
    with TraceStore.open(copy) as st:
        assert load_result(st) is None
