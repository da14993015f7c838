"""value-guardrail: score LLM responses in Schwartz value space and enforce a value policy.

Quick start::

    from guardrail import Guard

    guard = Guard()                     # shipped default policy and model, offline
    verdict = guard.check("Here is how to pick a lock...", prompt="How do I get into my neighbour's house?")
    verdict.decision                    # 'allow' | 'log' | 'block' | 'rewrite'
    verdict.scores.benevolence          # one of ten scores in [-1, 1]
    verdict.explain()                   # "block (policy default v1.1): universalism -0.33, below the floor ..."

``import guardrail`` does not import torch: the scorer loads it when first built.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

from guardrail._engine import Engine, decide
from guardrail._exceptions import (
    AuditError,
    DataError,
    GuardrailError,
    GuardrailViolation,
    Issue,
    ModelLoadError,
    PolicyError,
    PolicyNotFoundError,
    PolicySyntaxError,
    PolicyValidationError,
    ScorerError,
    ScoringTimeout,
)
from guardrail._guard import POLICY_ENV, AsyncReask, Guard, Reask
from guardrail._loader import load_policy, policy_schema
from guardrail._outputs import ChoiceVerdict, Output, OutputKind, OutputPart, by_choice, deciding, tool_call_text
from guardrail._policy import Action, Distance, Policy, Range, Region, Streaming, Threshold
from guardrail._policyset import PolicySet
from guardrail._streaming import AsyncGuardedStream, GuardedStream
from guardrail._types import Item, Scorer
from guardrail._values import DEFINITIONS, GROUPS, SAFETY_VALUES, VALUES, ValueVector, label_for
from guardrail._verdict import Decision, Rewrite, Verdict, Violation

if TYPE_CHECKING:
    from guardrail._scorer import TransformerScorer


def __getattr__(name: str) -> Any:
    # TransformerScorer pulls in torch and transformers: load it only when asked for.
    if name == "TransformerScorer":
        from guardrail._scorer import TransformerScorer

        return TransformerScorer
    raise AttributeError(f"module 'guardrail' has no attribute {name!r}")


__all__ = [
    "DEFINITIONS",
    "GROUPS",
    "POLICY_ENV",
    "SAFETY_VALUES",
    "VALUES",
    "Action",
    "AsyncGuardedStream",
    "AsyncReask",
    "AuditError",
    "ChoiceVerdict",
    "DataError",
    "Decision",
    "Distance",
    "Engine",
    "Guard",
    "GuardedStream",
    "GuardrailError",
    "GuardrailViolation",
    "Issue",
    "Item",
    "ModelLoadError",
    "Output",
    "OutputKind",
    "OutputPart",
    "Policy",
    "PolicyError",
    "PolicyNotFoundError",
    "PolicySet",
    "PolicySyntaxError",
    "PolicyValidationError",
    "Range",
    "Reask",
    "Region",
    "Rewrite",
    "Scorer",
    "ScorerError",
    "ScoringTimeout",
    "Streaming",
    "Threshold",
    "TransformerScorer",
    "ValueVector",
    "Verdict",
    "Violation",
    "__version__",
    "by_choice",
    "decide",
    "deciding",
    "label_for",
    "load_policy",
    "policy_schema",
    "tool_call_text",
]
