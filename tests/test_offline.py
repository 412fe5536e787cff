"""KAT opens no network connection at run time (air-gapped workstations; docs/packaging.md).

Every command runs in a subprocess whose Python has socket creation for network families blocked by a
``sitecustomize.py`` on PYTHONPATH: ``socket.socket`` for AF_INET/AF_INET6 (and any family but local ones),
``socket.create_connection`` and ``socket.getaddrinfo`` raise and record the attempt in a log file. Local IPC
(AF_UNIX, e.g. Qt's accessibility/DBus probe) is allowed and logged separately; it never leaves the machine.
Native code (Qt, llama.cpp) does not go through Python's socket module, so the GUI and the model run are also
traced with strace, when it is installed, and any AF_INET/AF_INET6 socket() call fails the test.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

GUARD = textwrap.dedent(
    """
    # Installed by tests/test_offline.py: no network from this process.
    import os
    import socket as _socket

    _LOG = os.environ["KAT_NET_LOG"]
    _LOCAL = {_socket.AF_UNIX, getattr(_socket, "AF_NETLINK", -1)}


    def _record(kind, what):
        with open(_LOG, "a", encoding="utf-8") as f:
            f.write(f"{kind}\\t{os.getpid()}\\t{what}\\n")


    _Base = _socket.socket


    class GuardedSocket(_Base):
        def __init__(self, family=-1, type=-1, proto=-1, fileno=None):
            fam = _socket.AF_INET if family == -1 else family
            if fileno is None and fam not in _LOCAL:
                _record("net", f"socket(family={fam}, type={type})")
                raise OSError("network disabled by tests/test_offline.py")
            if fileno is None:
                _record("local", f"socket(family={fam})")
            super().__init__(family, type, proto, fileno)


    def _create_connection(address, *args, **kwargs):
        _record("net", f"create_connection({address!r})")
        raise OSError("network disabled by tests/test_offline.py")


    def _getaddrinfo(host, *args, **kwargs):
        _record("net", f"getaddrinfo({host!r})")
        raise _socket.gaierror("network disabled by tests/test_offline.py")


    _socket.socket = GuardedSocket
    _socket.SocketType = GuardedSocket
    _socket.create_connection = _create_connection
    _socket.getaddrinfo = _getaddrinfo
    """
)


@pytest.fixture(scope="module")
def guard(tmp_path_factory):
    d = tmp_path_factory.mktemp("netguard")
    (d / "sitecustomize.py").write_text(GUARD, encoding="utf-8")
    return d


def _env(guard: Path, log: Path, cache: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(guard), str(ROOT)])
    env["KAT_NET_LOG"] = str(log)
    env["KAT_CACHE_DIR"] = str(cache)
    env["QT_QPA_PLATFORM"] = "offscreen"
    # Proxies would be a way out if anything tried; point them nowhere.
    env["http_proxy"] = env["https_proxy"] = env["HTTP_PROXY"] = env["HTTPS_PROXY"] = "http://127.0.0.1:9"
    return env


def _kat(args: list[str], env: dict[str, str], timeout: float = 240, strace_log: Path | None = None):
    cmd = [sys.executable, "-m", "kat_gui.cli", *args]
    if strace_log is not None:
        cmd = ["strace", "-f", "-qq", "-e", "trace=socket,connect", "-o", str(strace_log), *cmd]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout, cwd=ROOT)


def _attempts(log: Path, kind: str = "net") -> list[str]:
    if not log.exists():
        return []
    return [ln for ln in log.read_text(encoding="utf-8").splitlines() if ln.startswith(kind + "\t")]


def _strace_net(log: Path) -> list[str]:
    """socket()/connect() calls of a network family in an strace log (AF_UNIX and AF_NETLINK are local)."""
    return [ln for ln in log.read_text(encoding="utf-8").splitlines() if "AF_INET" in ln]


def _can_strace() -> bool:
    if shutil.which("strace") is None:
        return False
    probe = subprocess.run(["strace", "-qq", "-e", "trace=none", "true"], capture_output=True)
    return probe.returncode == 0


def test_guard_blocks_and_records(guard, tmp_path):
    """Control: the guard really stops a connection and records it (else the tests below prove nothing)."""
    log = tmp_path / "net.log"
    code = (
        "import socket\n"
        "for f in (lambda: socket.create_connection(('127.0.0.1', 9), timeout=1),\n"
        "          lambda: socket.socket(socket.AF_INET6, socket.SOCK_STREAM),\n"
        "          lambda: socket.getaddrinfo('pypi.org', 443)):\n"
        "    try:\n"
        "        f()\n"
        "    except OSError:\n"
        "        pass\n"
        "    else:\n"
        "        raise SystemExit('not blocked')\n"
        "socket.socket(socket.AF_UNIX, socket.SOCK_STREAM).close()\n"  # local IPC: allowed
    )
    r = subprocess.run(
        [sys.executable, "-c", code],
        env=_env(guard, log, tmp_path),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
    assert len(_attempts(log)) == 3
    assert _attempts(log, "local")


@pytest.fixture(scope="module")
def offline_run(guard, tmp_path_factory, dlrm_dir):
    """A real trace ingested with the network blocked; later tests read the same store and log."""
    d = tmp_path_factory.mktemp("offline")
    log = d / "net.log"
    env = _env(guard, log, d / "cache")
    store = d / "run.kat.h5"
    r = _kat(["ingest", str(dlrm_dir), "-o", str(store)], env)
    assert r.returncode == 0, r.stderr
    return store, env, log


def test_ingest_and_detect_offline(offline_run, tmp_path):
    store, env, log = offline_run
    assert store.is_file()
    r = _kat(["detect", str(store), "--json", str(tmp_path / "d.json")], env)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "d.json").stat().st_size > 0
    assert _attempts(log) == []


def test_explain_without_model_offline(offline_run):
    store, env, log = offline_run
    r = _kat(["explain", str(store), "--no-llm"], env)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip()
    assert _attempts(log) == []


@pytest.mark.llm
@pytest.mark.slow
def test_explain_with_bundled_model_offline(offline_run, tmp_path):
    store, env, log = offline_run
    trace = tmp_path / "strace.log" if _can_strace() else None
    r = _kat(["explain", str(store), "--json"], env, strace_log=trace)
    assert r.returncode == 0, r.stderr
    assert '"narrative"' in r.stdout or '"hypotheses"' in r.stdout
    assert _attempts(log) == []
    if trace is not None:
        assert _strace_net(trace) == []


@pytest.mark.gui
@pytest.mark.slow
def test_gui_offline_screenshot(offline_run, tmp_path):
    store, env, log = offline_run
    png = tmp_path / "shot.png"
    trace = tmp_path / "strace.log" if _can_strace() else None
    r = _kat(["gui", str(store), "--screenshot", str(png), "--quit"], env, strace_log=trace)
    assert r.returncode == 0, r.stderr
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert _attempts(log) == []
    if trace is not None:
        assert _strace_net(trace) == []


# A local cluster (``--workers N``, or the default for large inputs) talks over TCP, but only on 127.0.0.1: this
# guard lets loopback sockets through and records any bind, connect or name lookup beyond it, in every process
# (the workers are spawned Pythons that read the same sitecustomize).
LOOPBACK_GUARD = textwrap.dedent(
    """
    import os
    import socket as _socket

    _LOG = os.environ["KAT_NET_LOG"]
    _LOOPBACK = {"127.0.0.1", "::1", "localhost"}
    _INET = {_socket.AF_INET, getattr(_socket, "AF_INET6", -1)}


    def _record(kind, what):
        with open(_LOG, "a", encoding="utf-8") as f:
            f.write(f"{kind}\\t{os.getpid()}\\t{what}\\n")


    def _check(sock, address, what):
        if sock.family in _INET:
            host = address[0] if isinstance(address, tuple) else address
            if host not in _LOOPBACK:
                _record("net", f"{what}({address!r})")
                raise OSError("only loopback allowed by tests/test_offline.py")
            _record("loopback", f"{what}({address!r})")


    _Base = _socket.socket


    class LoopbackSocket(_Base):
        def bind(self, address):
            _check(self, address, "bind")
            return super().bind(address)

        def connect(self, address):
            _check(self, address, "connect")
            return super().connect(address)

        def connect_ex(self, address):
            _check(self, address, "connect_ex")
            return super().connect_ex(address)


    _getaddrinfo = _socket.getaddrinfo


    def _guarded_getaddrinfo(host, *args, **kwargs):
        if host not in _LOOPBACK and host is not None:
            _record("net", f"getaddrinfo({host!r})")
            raise _socket.gaierror("only loopback allowed by tests/test_offline.py")
        return _getaddrinfo(host, *args, **kwargs)


    _socket.socket = LoopbackSocket
    _socket.SocketType = LoopbackSocket
    _socket.getaddrinfo = _guarded_getaddrinfo
    """
)


def test_a_local_cluster_stays_on_loopback(tmp_path):
    """``kat ingest --workers 2`` and ``kat detect --workers 2`` (a dask LocalCluster): every socket of the
    client, the scheduler and the workers binds and connects to 127.0.0.1 only."""
    d = tmp_path / "loopguard"
    d.mkdir()
    (d / "sitecustomize.py").write_text(LOOPBACK_GUARD, encoding="utf-8")
    log = tmp_path / "net.log"
    env = _env(d, log, tmp_path / "cache")
    env["KAT_DETECT_WINDOW_ROWS"] = "1000"  # several windows: detection really runs on the workers
    env.pop("DASK_SCHEDULER_ADDRESS", None)
    traces = tmp_path / "traces"
    code = f"import sys; sys.path.insert(0, {str(ROOT)!r}); from benchmarks import synth_run; "
    code += f"synth_run.generate(__import__('pathlib').Path({str(traces)!r}), 4, 30, 2, 1, 0.3, 0)"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
    store = tmp_path / "run.kat.h5"
    r = _kat(["ingest", str(traces), "-o", str(store), "--workers", "2"], env)
    assert r.returncode == 0, r.stderr
    r = _kat(["detect", str(store), "--workers", "2"], env)
    assert r.returncode == 0, r.stderr
    assert _attempts(log) == []
    assert _attempts(log, "loopback"), "the guard saw no socket: was a cluster started?"
