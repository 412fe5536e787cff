"""On-disk cache of the evaluated prompt prefix (the llama.cpp context state after the fixed instructions).

Prompt evaluation is the whole latency of an explanation on a CPU; the instructions that come before the run's
facts are the same on every run, so their evaluated state is saved once and loaded by later processes.

File format (no pickle): ``MAGIC``, a 4-byte little-endian header length, a JSON header, then the raw state bytes.
The header binds the state to the model file's sha256, the context size, the llama-cpp-python version and the exact
prefix tokens, and holds the sha256 of the state bytes. A file that fails any check is ignored (and removed): the
caller then evaluates the prefix as if there were no cache. The directory is kept under ``MAX_BYTES``.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import tempfile
from pathlib import Path

MAGIC = b"KATKV1\n"
MAX_BYTES = 64 * 1024 * 1024
SUFFIX = ".kvstate"


def cache_dir() -> Path:
    """``$KAT_CACHE_DIR/explain-prefix`` or the platformdirs user cache dir's ``explain-prefix``."""
    env = os.environ.get("KAT_CACHE_DIR")
    if env:
        base = Path(env)
    else:
        import platformdirs

        base = Path(platformdirs.user_cache_dir("kat", appauthor=False))
    return base / "explain-prefix"


def _key(header: dict) -> str:
    blob = json.dumps(
        [header["model_sha256"], header["n_ctx"], header["runtime"], header["tokens"]], separators=(",", ":")
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:32]


def path_for(directory: Path, model_sha256: str, n_ctx: int, runtime: str, tokens: list[int]) -> Path:
    key = _key({"model_sha256": model_sha256, "n_ctx": n_ctx, "runtime": runtime, "tokens": list(tokens)})
    return directory / f"{key}{SUFFIX}"


def save(
    directory: Path, model_sha256: str, n_ctx: int, runtime: str, tokens: list[int], state: bytes
) -> Path | None:
    """Write atomically; then drop the oldest files while the directory exceeds ``MAX_BYTES``. None on OSError."""
    header = {
        "model_sha256": model_sha256,
        "n_ctx": int(n_ctx),
        "runtime": runtime,
        "tokens": [int(t) for t in tokens],
        "state_bytes": len(state),
        "state_sha256": hashlib.sha256(state).hexdigest(),
    }
    head = json.dumps(header, separators=(",", ":")).encode()
    target = path_for(directory, model_sha256, n_ctx, runtime, tokens)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=directory, suffix=".tmp")
        with os.fdopen(fd, "wb") as f:
            f.write(MAGIC + struct.pack("<I", len(head)) + head)
            f.write(state)
        os.replace(tmp, target)
        _trim(directory)
    except OSError:
        return None
    return target


def load(directory: Path, model_sha256: str, n_ctx: int, runtime: str, tokens: list[int]) -> bytes | None:
    """The state bytes for exactly this model, context size, runtime and prefix, or None (missing or invalid;
    an invalid file is removed so it is rebuilt)."""
    p = path_for(directory, model_sha256, n_ctx, runtime, tokens)
    try:
        data = p.read_bytes()
    except OSError:
        return None
    state = _parse(data, model_sha256, n_ctx, runtime, tokens)
    if state is None:
        try:
            p.unlink()
        except OSError:
            pass
    else:
        try:
            os.utime(p)  # least recently used is trimmed first
        except OSError:
            pass
    return state


def _parse(data: bytes, model_sha256: str, n_ctx: int, runtime: str, tokens: list[int]) -> bytes | None:
    if not data.startswith(MAGIC) or len(data) < len(MAGIC) + 4:
        return None
    (n,) = struct.unpack("<I", data[len(MAGIC) : len(MAGIC) + 4])
    start = len(MAGIC) + 4
    try:
        header = json.loads(data[start : start + n].decode())
    except (UnicodeDecodeError, ValueError):
        return None
    if not isinstance(header, dict):
        return None
    state = data[start + n :]
    ok = (
        header.get("model_sha256") == model_sha256
        and header.get("n_ctx") == int(n_ctx)
        and header.get("runtime") == runtime
        and header.get("tokens") == [int(t) for t in tokens]
        and header.get("state_bytes") == len(state)
        and header.get("state_sha256") == hashlib.sha256(state).hexdigest()
    )
    return state if ok else None


def _trim(directory: Path) -> None:
    max_bytes = MAX_BYTES
    files = sorted(directory.glob(f"*{SUFFIX}"), key=lambda q: q.stat().st_mtime)
    total = sum(q.stat().st_size for q in files)
    for q in files:
        if total <= max_bytes:
            break
        total -= q.stat().st_size
        q.unlink()


_SHA_MEMO: dict[tuple, str] = {}


def model_sha256(path: Path, directory: Path | None = None) -> str:
    """sha256 of the model file, memoised per (path, size, mtime) in memory and in ``directory/models.json``
    (hashing ~100 MB costs ~0.4 s here, which would be most of the first-token budget)."""
    st = path.stat()
    ident = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if ident in _SHA_MEMO:
        return _SHA_MEMO[ident]
    memo_file = (directory or cache_dir()) / "models.json"
    key = "|".join(map(str, ident))
    memo: dict = {}
    try:
        loaded = json.loads(memo_file.read_text(encoding="utf-8"))
        memo = loaded if isinstance(loaded, dict) else {}
    except (OSError, ValueError):
        pass
    digest = memo.get(key)
    if not (isinstance(digest, str) and len(digest) == 64):
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 22), b""):
                h.update(chunk)
        digest = h.hexdigest()
        memo = {k: v for k, v in memo.items() if not k.startswith(ident[0] + "|")}
        memo[key] = digest
        try:
            memo_file.parent.mkdir(parents=True, exist_ok=True)
            tmp = memo_file.with_suffix(".tmp")
            tmp.write_text(json.dumps(memo), encoding="utf-8")
            os.replace(tmp, memo_file)
        except OSError:
            pass
    _SHA_MEMO[ident] = digest
    return digest
