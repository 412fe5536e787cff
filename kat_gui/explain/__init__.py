"""Explain: a plain-language account of the diagnosis, phrased by a local GGUF model under a grammar and
grounding-checked sentence by sentence, with a deterministic narrative as fallback.

Public API:
- ``explain_store(path, use_llm=True, model_path=None, on_token=None, cancel=None) -> Explanation``;
- ``explain_findings(findings, topology=None, meta=None, *, use_llm, model_path, on_token, cancel, style,
  timeout_s, n_threads) -> Explanation`` (no store needed);
- ``warm_up(model_path=None, style="select", n_threads=None) -> dict``: load the model and evaluate the fixed
  prompt prefix ahead of the first explanation (GUI worker thread at start);
- ``grounding.verify(text, facts)``, ``grounding.sanitize_trace_text(name)``.
"""

from kat_gui.explain.core import Explanation, explain_findings, explain_store, load_store_inputs, warm_up

__all__ = ["Explanation", "explain_findings", "explain_store", "load_store_inputs", "warm_up"]
