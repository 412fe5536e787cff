"""llama-cpp-python runtime: load a GGUF offline, generate with streaming, cancel between tokens, time out.

Assumes the model is a chat model with a template embedded in the GGUF (the bundled SmolLM2-135M-Instruct has
ChatML). Loaded models are cached per (path, threads, context) so repeated explanations skip the load.
"""

from __future__ import annotations

import atexit
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from kat_gui.errors import KatInputError

DEFAULT_CTX = 1024
_CACHE: dict[tuple, object] = {}
_LOCK = threading.Lock()


@atexit.register
def _close_cached_models() -> None:
    """Free resident models before interpreter teardown: llama-cpp's own __del__ fails once modules are gone."""
    while _CACHE:
        _key, llama = _CACHE.popitem()
        close = getattr(llama, "close", None)
        if close is not None:
            try:
                close()
            except Exception:
                pass


def default_threads() -> int:
    """min(2, cores), or 1 when the cores are already busy.

    Measured here on 2 shared cores under load ~3: 2 llama.cpp threads spin-wait on each other and ran ~8x slower
    (21 s vs 2.8 s for the same 60 tokens) than 1 thread. ``KAT_LLM_THREADS`` overrides."""
    env = os.environ.get("KAT_LLM_THREADS")
    if env and env.isdigit() and int(env) > 0:
        return int(env)
    cores = os.cpu_count() or 1
    n = min(2, cores)
    try:
        if n > 1 and os.getloadavg()[0] >= cores - 0.5:
            n = 1
    except OSError:
        pass
    return n


@dataclass
class Generation:
    text: str
    tokens: int
    first_token_s: float | None
    total_s: float
    stop: str  # done | length | cancelled | timeout
    # CPU seconds of this process: with one thread, what the wall times would be on an otherwise idle core.
    first_token_cpu_s: float | None = None
    total_cpu_s: float | None = None


class LocalModel:
    """A loaded GGUF chat model. ``load`` raises KatInputError naming the file when it is missing or unloadable."""

    def __init__(self, llama, path: Path, n_threads: int, load_s: float):
        self.llama = llama
        self.path = path
        self.n_threads = n_threads
        self.load_s = load_s

    @property
    def name(self) -> str:
        try:
            meta = self.llama.metadata or {}
        except Exception:
            meta = {}
        return str(meta.get("general.name") or self.path.stem)

    @classmethod
    def load(
        cls, path: str | os.PathLike, n_threads: int | None = None, n_ctx: int = DEFAULT_CTX
    ) -> LocalModel:
        p = Path(path)
        if not p.is_file():
            raise KatInputError(p, "model file not found")
        with open(p, "rb") as f:
            magic = f.read(4)
        if magic != b"GGUF":
            raise KatInputError(p, "not a GGUF model file (llama.cpp needs .gguf)")
        n_threads = n_threads or default_threads()
        key = (str(p.resolve()), p.stat().st_mtime_ns, n_threads, n_ctx)
        t0 = time.perf_counter()
        with _LOCK:
            llama = _CACHE.get(key)
            if llama is None:
                try:
                    from llama_cpp import Llama
                except ImportError as exc:  # pragma: no cover - the package is a hard dependency
                    raise KatInputError(p, f"llama-cpp-python is not installed ({exc})") from exc
                try:
                    llama = Llama(
                        model_path=str(p),
                        n_ctx=n_ctx,
                        n_threads=n_threads,
                        n_threads_batch=n_threads,
                        verbose=False,
                    )
                except Exception as exc:
                    raise KatInputError(p, f"cannot load the model: {exc}") from exc
                _CACHE.clear()  # one model resident at a time: they are 100 MB to GBs
                _CACHE[key] = llama
        return cls(llama, p, n_threads, time.perf_counter() - t0)

    def generate(
        self,
        messages: list[dict],
        *,
        max_tokens: int = 160,
        grammar: str | None = None,
        on_token: Callable[[str], None] | None = None,
        cancel: Callable[[], bool] | None = None,
        timeout_s: float = 30.0,
        temperature: float = 0.0,
    ) -> Generation:
        """Stream a chat completion. Stops between tokens when ``cancel()`` is true or ``timeout_s`` has passed."""
        kwargs: dict = {"max_tokens": max_tokens, "temperature": temperature, "stream": True, "seed": 0}
        if grammar is not None:
            from llama_cpp import LlamaGrammar

            kwargs["grammar"] = LlamaGrammar.from_string(grammar, verbose=False)
        t0 = time.perf_counter()
        c0 = time.process_time()
        first: float | None = None
        first_cpu: float | None = None
        parts: list[str] = []
        stop = "done"
        n = 0
        # No reset(): llama-cpp-python reuses the evaluated prefix (system prompt) of the previous call.
        with _LOCK:  # a llama context is not re-entrant
            stream = self.llama.create_chat_completion(messages=messages, **kwargs)
            try:
                for chunk in stream:
                    choice = chunk["choices"][0]
                    piece = choice.get("delta", {}).get("content")
                    if piece:
                        n += 1
                        if first is None:
                            first = time.perf_counter() - t0
                            first_cpu = time.process_time() - c0
                        parts.append(piece)
                        if on_token is not None:
                            on_token(piece)
                    if choice.get("finish_reason") == "length":
                        stop = "length"
                    if cancel is not None and cancel():
                        stop = "cancelled"
                        break
                    if time.perf_counter() - t0 > timeout_s:
                        stop = "timeout"
                        break
            finally:
                close = getattr(stream, "close", None)
                if close is not None:
                    close()
        return Generation(
            "".join(parts), n, first, time.perf_counter() - t0, stop, first_cpu, time.process_time() - c0
        )
