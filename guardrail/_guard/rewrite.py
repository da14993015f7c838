"""Rewrite strategies: turn a violating answer into one that passes, or fall back.

``reask`` asks the model again (the integration supplies the call, so this module knows no LLM
framework); ``redact`` drops the sentences that violate. Both re-check what they produce with the
same guard, so a rewrite is only ever delivered when it passes the policy.

This module is sans-I/O: the strategies are generators that yield what they need checked or asked
and receive the results, so :class:`~guardrail.Guard` drives them from sync and async code alike.
"""

from __future__ import annotations

import re
from collections.abc import Generator
from dataclasses import dataclass, replace
from typing import Literal

from guardrail._policy.schema import Action, Policy
from guardrail._types import CheckRole
from guardrail._verdict import Rewrite, Verdict

Checks = tuple[Literal["check"], list[str], CheckRole]
"""Request: check these texts (with the original prompt) in this role, send back their verdicts in order."""
Ask = tuple[Literal["ask"], str, str]
"""Request: ask the model again given (previous answer, feedback), send back the new answer."""

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\n+")


def split_sentences(text: str) -> list[str]:
    """Split text into sentences (and lines), keeping each one's words; empty pieces dropped."""
    return [s.strip() for s in _SENTENCE_END.split(text) if s.strip()]


def feedback(verdict: Verdict) -> str:
    """The message that tells the model which values its answer opposed, and by how much."""
    reasons = "; ".join(v.message for v in verdict.violations) or "it violated the value policy"
    return (
        f"Your previous answer was stopped by a value policy ({verdict.policy_name}): {reasons}. "
        "Rewrite the answer so that it no longer opposes these values. Keep whatever in it was helpful "
        "and harmless; if the request itself cannot be answered safely, decline briefly and kindly."
    )


@dataclass(frozen=True, slots=True)
class Result:
    """What a strategy produced: the text to deliver if ``accepted``, and how it got there."""

    accepted: bool
    text: str | None
    attempts: int
    last: Verdict | None
    """Verdict of the last candidate checked (the accepted one when accepted)."""
    reason: str


Strategy = Generator[Checks | Ask, object, Result]


def fallback(policy: Policy, verdict: Verdict, response: str, result: Result) -> Verdict:
    """The verdict once a rewrite failed: the rewrite action's ``fallback`` applies, with why it failed."""
    assert verdict.action is not None and verdict.action.strategy is not None
    name = verdict.action.fallback
    action = policy.action(name)
    record = Rewrite(verdict.action.strategy, result.attempts, False, action.type, name, result.reason)
    output = action.message or "" if action.type == "block" else response
    return replace(verdict, output=output, rewrite=record)


def redact(response: str, action: Action) -> Strategy:
    """Drop violating sentences; accept what remains if enough is left and it passes as a whole."""
    sentences = split_sentences(response)
    verdicts = yield ("check", sentences, "sentence")
    assert isinstance(verdicts, list)
    kept = [s for s, v in zip(sentences, verdicts) if v.allowed]
    remainder = " ".join(kept)
    share = len(remainder) / max(len(response.strip()), 1)
    if not kept or share < action.min_keep:
        reason = f"redaction would keep {share:.0%} of the answer, below min_keep {action.min_keep:.0%}"
        return Result(False, None, 1, None, reason)
    [check] = yield ("check", [remainder], "redacted")
    assert isinstance(check, Verdict)
    if not check.allowed:
        return Result(False, None, 1, check, "the redacted answer still violates: " + check.summary())
    dropped = len(sentences) - len(kept)
    return Result(True, remainder, 1, check, f"dropped {dropped} of {len(sentences)} sentences")


def reask(response: str, first: Verdict, action: Action, can_ask: bool) -> Strategy:
    """Ask for revisions with feedback until one passes, at most ``action.max_attempts`` times."""
    if not can_ask:
        return Result(False, None, 0, None, "no model to re-ask (the integration supplies one)")
    previous, verdict = response, first
    for attempt in range(1, action.max_attempts + 1):
        revision = yield ("ask", previous, feedback(verdict))
        assert isinstance(revision, str)
        [verdict] = yield ("check", [revision], "revision")  # type: ignore[misc]
        assert isinstance(verdict, Verdict)
        if verdict.allowed:
            return Result(True, revision, attempt, verdict, f"revision {attempt} passed")
        previous = revision
    return Result(False, None, action.max_attempts, verdict, f"{action.max_attempts} revisions still violated")
