"""OpenTelemetry spans for checks. Uses the API package only: with no SDK configured the spans
are non-recording and every attribute computation below is skipped.

Span ``guardrail.check`` carries the policy, decision, action, the ten scores
(``guardrail.value.<dim>``), violations, scorer model and device, and one
``gen_ai.evaluation.result`` event per value (OpenTelemetry GenAI semantic conventions).
Prompt and response text are recorded only when content capture is on.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from opentelemetry import trace
from opentelemetry.trace import Span, Status, StatusCode, TracerProvider

from guardrail._values import label_for
from guardrail._verdict import Verdict

SPAN_NAME = "guardrail.check"
CAPTURE_ENV = "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"
CONTENT_LIMIT = 4096
"""Characters of prompt/response text kept on a span when content capture is on."""

_SCALARS = (str, bool, int, float)


def capture_from_env() -> bool:
    """Whether the GenAI content-capture environment variable turns capture on."""
    return os.environ.get(CAPTURE_ENV, "").strip().lower() in ("1", "true", "yes")


class CheckTelemetry:
    """Opens one span per check and records a verdict on it.

    Args:
        tracer_provider: Provider to use; default: whatever the application set globally.
        capture_content: Record prompt and response text (capped at ``CONTENT_LIMIT``).
    """

    def __init__(self, tracer_provider: TracerProvider | None = None, capture_content: bool = False) -> None:
        from guardrail import __version__

        self._tracer = trace.get_tracer("value-guardrail", __version__, tracer_provider=tracer_provider)
        self.capture_content = capture_content

    @contextmanager
    def span(self, start_time: int | None = None) -> Iterator[Span]:
        """A ``guardrail.check`` span, current for the block; ``start_time`` (ns) when scoring began."""
        with self._tracer.start_as_current_span(SPAN_NAME, start_time=start_time, record_exception=False) as span:
            yield span

    def record(
        self,
        span: Span,
        verdict: Verdict,
        *,
        model_id: str,
        device: str,
        prompt: str | None,
        response: str,
        metadata: Mapping[str, Any] | None,
    ) -> None:
        """Put the verdict's attributes and evaluation events on ``span``."""
        if not span.is_recording():
            return
        attrs: dict[str, Any] = {
            "openinference.span.kind": "GUARDRAIL",
            "guardrail.policy.name": verdict.policy_name,
            "guardrail.policy.version": verdict.policy_version,
            "guardrail.policy.hash": verdict.policy_hash,
            "guardrail.mode": verdict.mode,
            "guardrail.decision": verdict.decision,
            "guardrail.intended_decision": verdict.intended,
            "guardrail.risk": verdict.risk,
            "guardrail.latency_ms": verdict.latency_ms,
            "guardrail.scorer.model": model_id,
            "guardrail.scorer.device": device,
            "guardrail.violations": [v.rule for v in verdict.violations],
            "guardrail.violation_messages": [v.message for v in verdict.violations],
        }
        if verdict.action is not None:
            attrs["guardrail.action"] = verdict.action_name or verdict.action.type
            attrs["guardrail.action.type"] = verdict.action.type
            if verdict.action.strategy:
                attrs["guardrail.action.strategy"] = verdict.action.strategy
        for key, value in (metadata or {}).items():
            if isinstance(value, _SCALARS):
                attrs[f"guardrail.metadata.{key}"] = value
        if self.capture_content:
            if prompt is not None:
                attrs["guardrail.prompt"] = prompt[:CONTENT_LIMIT]
            attrs["guardrail.response"] = response[:CONTENT_LIMIT]
        if verdict.scores is not None:
            for name, score in verdict.scores.to_dict().items():
                attrs[f"guardrail.value.{name}"] = score
                span.add_event(
                    "gen_ai.evaluation.result",
                    {
                        "gen_ai.evaluation.name": f"value.{name}",
                        "gen_ai.evaluation.score.value": score,
                        "gen_ai.evaluation.score.label": label_for(score),
                    },
                )
        span.set_attributes(attrs)
        if verdict.error:
            span.set_attribute("guardrail.error", verdict.error)
            span.set_status(Status(StatusCode.ERROR, verdict.error))
