"""value-guardrail: score LLM responses in Schwartz value space and enforce a value policy.

Quick start::

    from guardrail import Guard

    guard = Guard()                     # shipped default policy and model, offline
    verdict = guard.check("Immigrants are parasites and criminals...", prompt="What do you think about immigrants?")
    verdict.decision                    # 'allow' | 'log' | 'block' | 'rewrite'
    verdict.scores.universalism         # one of ten scores in [-1, 1]
    verdict.summary()                   # "block (policy default v1.2): universalism -0.91, below the floor ..."

The README and ``docs/`` have the rest.

``import guardrail`` does not import torch: the scorer loads it when first built.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from guardrail._choices import ChoiceVerdict, by_choice, deciding
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
from guardrail._guard.guard import POLICY_ENV, AsyncReask, Guard, Reask, default_policy
from guardrail._guard.policyset import PolicySet
from guardrail._guard.shared import shared_guard, shared_guard_built
from guardrail._guard.streaming import AsyncGuardedStream, GuardedStream
from guardrail._outputs import Output, OutputKind, OutputPart, tool_call_text
from guardrail._policy.engine import Engine, decide
from guardrail._policy.loader import load_policy, policy_schema
from guardrail._policy.schema import Action, DecisionLogSettings, Distance, Policy, Range, Region, Streaming, Threshold
from guardrail._scoring.remote import RemoteScorer
from guardrail._telemetry.decisionlog import DecisionLog
from guardrail._telemetry.genai import CallSpans, ModelCall, ModelReply, ModelSpan
from guardrail._types import Item, Scorer
from guardrail._values import DEFINITIONS, GROUPS, SAFETY_VALUES, VALUES, ValueVector, label_for
from guardrail._verdict import Decision, Rewrite, RuleCheck, Verdict, Violation
from guardrail._version import __version__

if TYPE_CHECKING:
    from guardrail._scoring.scorer import TransformerScorer


def __getattr__(name: str) -> Any:
    # TransformerScorer pulls in torch and transformers: load it only when asked for.
    if name == "TransformerScorer":
        from guardrail._scoring.scorer import TransformerScorer

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
    "CallSpans",
    "ChoiceVerdict",
    "DataError",
    "Decision",
    "DecisionLog",
    "DecisionLogSettings",
    "Distance",
    "Engine",
    "Guard",
    "GuardedStream",
    "GuardrailError",
    "GuardrailViolation",
    "Issue",
    "Item",
    "ModelCall",
    "ModelLoadError",
    "ModelReply",
    "ModelSpan",
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
    "RemoteScorer",
    "Rewrite",
    "RuleCheck",
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
    "default_policy",
    "label_for",
    "load_policy",
    "policy_schema",
    "shared_guard",
    "shared_guard_built",
    "tool_call_text",
]
