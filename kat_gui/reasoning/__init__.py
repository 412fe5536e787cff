"""Reasoning: detection findings -> ranked hypotheses with evidence, counter-evidence, a cause->effect chain and
next checks from the knowledge base (``resources/knowledge``). Deterministic; imports only events and topology.

Public API: ``build_hypotheses(findings, topology, meta) -> list[Hypothesis]``, ``Hypothesis.to_dict()``,
``knowledge.load_knowledge()``, ``knowledge.playbooks_for(component)``.
"""

from kat_gui.reasoning.hypotheses import (
    COMPONENT_NOUN,
    COMPONENT_TITLE,
    OWN_NUMBER,
    Hypothesis,
    build_hypotheses,
)
from kat_gui.reasoning.knowledge import Check, Playbook, load_knowledge, playbook, playbooks_for

__all__ = [
    "COMPONENT_NOUN",
    "COMPONENT_TITLE",
    "Check",
    "Hypothesis",
    "OWN_NUMBER",
    "Playbook",
    "build_hypotheses",
    "load_knowledge",
    "playbook",
    "playbooks_for",
]
