"""llama-cpp-python runtime: load a GGUF offline, generate with streaming, cancel between tokens, time out.

Assumes the model is a chat model with a template embedded in the GGUF (the bundled SmolLM2-135M-Instruct has
ChatML). A GGUF LoRA adapter (KAT's explainer adapter, ``models/``) can be applied on top at load time. Loaded
models are cached per (path, adapter, threads, context) so repeated explanations skip the load.
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


def _runtime_id() -> str:
    try:
        import llama_cpp

        return f"llama-cpp-python {llama_cpp.__version__}"
    except Exception:  # pragma: no cover
        return "llama-cpp-python"


def _restore(llama, tokens: list[int], state: bytes, np) -> None:
    """Load a saved context state holding ``tokens``. Only the KV cache matters: the next prompt is longer than
    the prefix, so its suffix evaluation produces fresh logits (the saved scores are left zero)."""
    from llama_cpp.llama import LlamaState

    ids = np.zeros(llama.input_ids.shape, dtype=np.intc)
    ids[: len(tokens)] = tokens
    llama.reset()
    llama.load_state(
        LlamaState(
            input_ids=ids,
            scores=np.zeros((1, llama.n_vocab()), dtype=np.single),
            n_tokens=len(tokens),
            llama_state=state,
            llama_state_size=len(state),
            seed=llama._seed,
        )
    )


def _check_gguf(p: Path, what: str) -> None:
    if not p.is_file():
        raise KatInputError(p, f"{what} not found")
    with open(p, "rb") as f:
        magic = f.read(4)
    if magic != b"GGUF":
        raise KatInputError(p, f"not a GGUF {what} (llama.cpp needs .gguf)")


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

    def __init__(
        self,
        llama,
        path: Path,
        n_threads: int,
        load_s: float,
        n_ctx: int = DEFAULT_CTX,
        adapter: Path | None = None,
        display_name: str | None = None,
    ):
        self.llama = llama
        self.path = path
        self.n_threads = n_threads
        self.load_s = load_s
        self.n_ctx = n_ctx
        self.adapter = adapter
        self.display_name = display_name

    @property
    def name(self) -> str:
        if self.display_name:
            return self.display_name
        try:
            meta = self.llama.metadata or {}
        except Exception:
            meta = {}
        base = str(meta.get("general.name") or self.path.stem)
        return f"{base} + adapter {self.adapter.stem}" if self.adapter else base

    def identity_sha256(self, directory: Path) -> str:
        """What the context state depends on: the model file, and the adapter file when one is applied."""
        from kat_gui.explain import prefix_cache

        sha = prefix_cache.model_sha256(self.path, directory)
        if self.adapter is None:
            return sha
        import hashlib

        return hashlib.sha256(
            f"{sha}+{prefix_cache.model_sha256(self.adapter, directory)}".encode()
        ).hexdigest()

    @classmethod
    def load(
        cls,
        path: str | os.PathLike,
        n_threads: int | None = None,
        n_ctx: int = DEFAULT_CTX,
        adapter: str | os.PathLike | None = None,
        display_name: str | None = None,
    ) -> LocalModel:
        """Load ``path`` (a GGUF chat model), with the GGUF LoRA ``adapter`` applied when given."""
        p = Path(path)
        _check_gguf(p, "model file")
        a = None
        if adapter is not None:
            a = Path(adapter)
            _check_gguf(a, "adapter file")
        n_threads = n_threads or default_threads()
        key = (
            str(p.resolve()),
            p.stat().st_mtime_ns,
            str(a.resolve()) if a else None,
            a.stat().st_mtime_ns if a else None,
            n_threads,
            n_ctx,
        )
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
                        lora_path=str(a) if a else None,
                        verbose=False,
                    )
                except Exception as exc:
                    what = f"cannot load the model{' with adapter ' + a.name if a else ''}: {exc}"
                    raise KatInputError(a if a and "lora" in str(exc).lower() else p, what) from exc
                _CACHE.clear()  # one model resident at a time: they are 100 MB to GBs
                _CACHE[key] = llama
        return cls(llama, p, n_threads, time.perf_counter() - t0, n_ctx, a, display_name)

    def prompt_tokens(self, messages: list[dict]) -> list[int] | None:
        """The tokens ``create_chat_completion`` evaluates for ``messages`` (same template, same tokenizer
        call), or None when the model has no embedded chat template."""
        template = (self.llama.metadata or {}).get("tokenizer.chat_template")
        if not template or self.llama.chat_format != "chat_template.default":
            return None
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        model = self.llama._model
        eos_id, bos_id = self.llama.token_eos(), self.llama.token_bos()
        eos = model.token_get_text(eos_id) if eos_id != -1 else ""
        bos = model.token_get_text(bos_id) if bos_id != -1 else ""
        res = Jinja2ChatFormatter(template=template, eos_token=eos, bos_token=bos, stop_token_ids=[eos_id])(
            messages=messages
        )
        return self.llama.tokenize(res.prompt.encode("utf-8"), add_bos=not res.added_special, special=True)

    def prefix_tokens(self, probe_a: list[dict], probe_b: list[dict]) -> list[int] | None:
        """The run-independent token prefix: the common prefix of two prompts that differ only in their facts,
        less its last token (a token at the boundary could merge differently with another run's first fact)."""
        a, b = self.prompt_tokens(probe_a), self.prompt_tokens(probe_b)
        if not a or not b:
            return None
        n = 0
        for x, y in zip(a, b, strict=False):
            if x != y:
                break
            n += 1
        return a[: n - 1] if n > 1 else None

    def warm_prefix(self, tokens: list[int], use_disk: bool = True) -> tuple[str, float]:
        """Make the context hold exactly ``tokens`` evaluated, so the next prompt that starts with them evaluates
        only the rest. Returns (how: ``resident`` | ``disk`` | ``evaluated``, seconds).

        ``disk`` loads a state saved by an earlier process for this model file (sha256), context size, runtime
        version and prefix; an unusable file is ignored and the prefix evaluated (then saved)."""
        import numpy as np

        t0 = time.perf_counter()
        llama = self.llama
        with _LOCK:
            n = len(tokens)
            if llama.n_tokens >= n and list(llama.input_ids[:n]) == list(tokens):
                return "resident", time.perf_counter() - t0
            from kat_gui.explain import prefix_cache

            directory = prefix_cache.cache_dir()
            runtime = _runtime_id()
            sha = None
            if use_disk:
                try:
                    sha = self.identity_sha256(directory)
                except OSError:
                    sha = None
            state = prefix_cache.load(directory, sha, self.n_ctx, runtime, tokens) if sha else None
            if state is not None:
                try:
                    _restore(llama, tokens, state, np)
                    return "disk", time.perf_counter() - t0
                except Exception:
                    pass  # a state llama.cpp refuses: evaluate instead
            llama.reset()
            llama.eval(tokens)
            if sha:
                saved = llama.save_state()
                prefix_cache.save(directory, sha, self.n_ctx, runtime, tokens, bytes(saved.llama_state))
            return "evaluated", time.perf_counter() - t0

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
