"""OpenTelemetry spans and metrics for checks. Uses the API package only: with no SDK configured the
spans are non-recording (every attribute computation below is skipped) and the instruments are no-ops.

Spans (one trace reads: enforce, check, rewrite attempts, verdict)::

    guardrail.enforce        CHAIN: Guard.enforce / aenforce; final decision, rewrite, delivered text
    ├── guardrail.check      GUARDRAIL: policy, decision, action, scores, violations, evaluation events
    └── guardrail.rewrite    CHAIN: strategy; only when the decision is a rewrite
        ├── guardrail.reask  CHAIN: one re-ask of the model (the integration's model span nests here)
        └── guardrail.check  the revision's re-check (guardrail.check.role = revision)

The integrations put these under one ``guardrail.call`` span per guarded call, beside the model-call
span (OpenTelemetry GenAI conventions; see ``_genai``).

``guardrail.check`` carries the policy, decision, action, the ten scores (``guardrail.value.<dim>``),
violations with their margins, the deployment, the scorer model and device, the decision id
(``guardrail.decision_id``, also on the decision-log line), the shadow candidate's decision
(``guardrail.shadow.*``) when the policy names one, and one ``gen_ai.evaluation.result`` event per
value (OpenTelemetry GenAI semantic conventions). Prompt, answer and delivered text are recorded
only when content capture is on.

Metrics: ``guardrail.checks`` (counter), ``guardrail.check.duration`` (ms), ``guardrail.value.score``
(one histogram, attribute ``guardrail.value`` per dimension; recorded as score + 1 because
OpenTelemetry histograms take no negative values), ``guardrail.scorer.batch_size`` and
``guardrail.rewrites`` and ``guardrail.policy.reloads`` (counters).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, get_args

from opentelemetry import metrics, trace
from opentelemetry.metrics import Histogram, MeterProvider
from opentelemetry.trace import Span, Status, StatusCode, Tracer, TracerProvider

from guardrail._outputs import OutputPart
from guardrail._types import CheckRole
from guardrail._values import VALUES, label_for
from guardrail._verdict import Decision, Verdict
from guardrail._version import __version__

SPAN_NAME = "guardrail.check"
ENFORCE_SPAN = "guardrail.enforce"
REWRITE_SPAN = "guardrail.rewrite"
REASK_SPAN = "guardrail.reask"
CAPTURE_ENV = "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"
CONTENT_LIMIT = 4096
"""Characters of prompt/response text kept on a span when content capture is on."""

CHECKS = "guardrail.checks"
CHECK_DURATION = "guardrail.check.duration"
VALUE_SCORE = "guardrail.value.score"
BATCH_SIZE = "guardrail.scorer.batch_size"
REWRITES = "guardrail.rewrites"
RELOADS = "guardrail.policy.reloads"
DEPLOYMENT_KEYS = ("deployment", "tenant")
"""Metadata keys read, in this order, as the deployment recorded on spans and metrics."""

SCORE_OFFSET = 1.0
"""Added to a score before it is recorded: OpenTelemetry histograms drop negative values."""

# Recorded scores live in [0, 2]; the SDK's default millisecond buckets would put them all in two.
_SCORE_BUCKETS = tuple(round(0.1 * n, 1) for n in range(1, 20))
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
_MS_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000)
_SCALARS = (str, bool, int, float)


def capture_from_env() -> bool:
    """Whether the GenAI content-capture environment variable turns capture on."""
    return os.environ.get(CAPTURE_ENV, "").strip().lower() in ("1", "true", "yes")


def deployment_of(metadata: Mapping[str, Any] | None) -> str | None:
    """The deployment (or tenant) named in request metadata, as text; ``None`` when absent."""
    for key in DEPLOYMENT_KEYS:
        value = (metadata or {}).get(key)
        if isinstance(value, _SCALARS) and value != "":
            return str(value)
    return None


def _meter(meter_provider: MeterProvider | None) -> metrics.Meter:
    return metrics.get_meter("value-guardrail", __version__, meter_provider=meter_provider)


def batch_size_histogram(meter_provider: MeterProvider | None = None) -> Histogram:
    """The ``guardrail.scorer.batch_size`` histogram: items per scorer call."""
    return _meter(meter_provider).create_histogram(
        BATCH_SIZE, unit="{response}", description="Responses scored in one scorer call.",
        explicit_bucket_boundaries_advisory=_BATCH_BUCKETS,
    )  # fmt: skip


class CheckTelemetry:
    """Opens the spans of checks and enforcement, records verdicts on them and in metrics.

    Args:
        tracer_provider: Provider to use; default: whatever the application set globally.
        capture_content: Record prompt, answer and delivered text (capped at ``CONTENT_LIMIT``).
        meter_provider: Provider for the metrics; default: whatever the application set globally.
    """

    def __init__(
        self,
        tracer_provider: TracerProvider | None = None,
        capture_content: bool = False,
        meter_provider: MeterProvider | None = None,
    ) -> None:
        self._tracer = trace.get_tracer("value-guardrail", __version__, tracer_provider=tracer_provider)
        self.capture_content = capture_content
        self._attrs: dict[tuple[str, str, str | None, str], _Attributes] = {}
        meter = _meter(meter_provider)
        self._checks = meter.create_counter(CHECKS, unit="{check}", description="Checked responses, by decision.")
        self._duration = meter.create_histogram(
            CHECK_DURATION, unit="ms", description="Time to check one response (its share of a batched call).",
            explicit_bucket_boundaries_advisory=_MS_BUCKETS,
        )  # fmt: skip
        self._scores = meter.create_histogram(
            VALUE_SCORE, unit="{score+1}",
            description="Value score + 1, in [0, 2] (1: no connection); attribute guardrail.value names the value.",
            explicit_bucket_boundaries_advisory=_SCORE_BUCKETS,
        )  # fmt: skip
        self._rewrites = meter.create_counter(
            REWRITES, unit="{rewrite}", description="Rewrites carried out, by outcome."
        )
        self._reloads = meter.create_counter(
            RELOADS, unit="{reload}", description="Changes to a watched policy's files: applied, or failed (old kept)."
        )
        self.batch_size = batch_size_histogram(meter_provider)

    @property
    def tracer(self) -> Tracer:
        """The tracer of the ``guardrail.*`` spans (integrations open their call spans with it too)."""
        return self._tracer

    # -- spans ----------------------------------------------------------------------------

    @contextmanager
    def span(self, start_time: int | None = None) -> Iterator[Span]:
        """A ``guardrail.check`` span, ended after the block; ``start_time`` (ns) when scoring began.

        A check span has no children, so it is not made current (attaching a context costs more
        than the rest of a check's bookkeeping on a busy host).
        """
        span = self._tracer.start_span(SPAN_NAME, start_time=start_time, record_exception=False)
        try:
            yield span
        finally:
            span.end()

    @contextmanager
    def enforce_span(self) -> Iterator[Span]:
        """A ``guardrail.enforce`` span around a check and whatever carrying out its decision takes."""
        with self._tracer.start_as_current_span(ENFORCE_SPAN) as span:
            if span.is_recording():
                span.set_attribute("openinference.span.kind", "CHAIN")
            yield span

    @contextmanager
    def rewrite_span(self, strategy: str) -> Iterator[Span]:
        """A ``guardrail.rewrite`` span around a rewrite's re-asks and re-checks."""
        attrs = {"openinference.span.kind": "CHAIN", "guardrail.rewrite.strategy": strategy}
        with self._tracer.start_as_current_span(REWRITE_SPAN, attributes=attrs) as span:
            yield span

    @contextmanager
    def reask_span(self, attempt: int) -> Iterator[Span]:
        """A ``guardrail.reask`` span around one call of the integration's re-ask function."""
        attrs = {"openinference.span.kind": "CHAIN", "guardrail.rewrite.attempt": attempt}
        with self._tracer.start_as_current_span(REASK_SPAN, attributes=attrs) as span:
            yield span

    # -- recording ------------------------------------------------------------------------

    def count_reload(self, policy: str, outcome: str) -> None:
        """Count one reload of a watched policy: ``applied`` (swapped in) or ``failed`` (the old one kept)."""
        self._reloads.add(1, {"guardrail.policy.name": policy, "guardrail.reload.outcome": outcome})

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
        role: CheckRole = "answer",
        part: OutputPart | None = None,
    ) -> None:
        """Count the verdict in the metrics and put its attributes and evaluation events on ``span``."""
        deployment = deployment_of(metadata)
        self._measure(verdict, deployment, role)
        if not span.is_recording():
            return
        attrs: dict[str, Any] = {
            "openinference.span.kind": "GUARDRAIL",
            "guardrail.check.role": role,
            **self._policy_attrs(verdict, deployment),
            "guardrail.mode": verdict.mode,
            "guardrail.decision": verdict.decision,
            "guardrail.intended_decision": verdict.intended,
            "guardrail.risk": verdict.risk,
            "guardrail.latency_ms": verdict.latency_ms,
            "guardrail.scorer.model": model_id,
            "guardrail.scorer.device": device,
            "guardrail.violations": [v.rule for v in verdict.violations],
            "guardrail.violation_margins": [v.margin for v in verdict.violations],
            "guardrail.violation_messages": [v.message for v in verdict.violations],
        }
        if verdict.decision_id is not None:
            attrs["guardrail.decision_id"] = verdict.decision_id
        if verdict.shadow is not None:
            shadow = verdict.shadow
            attrs |= {
                "guardrail.shadow.policy.name": shadow.policy_name,
                "guardrail.shadow.policy.version": shadow.policy_version,
                "guardrail.shadow.policy.hash": shadow.policy_hash,
                "guardrail.shadow.decision": shadow.intended,
                "guardrail.shadow.agrees": shadow.intended == verdict.intended,
                "guardrail.shadow.violations": [v.rule for v in shadow.violations],
                "guardrail.shadow.violation_margins": [v.margin for v in shadow.violations],
            }
        if part is not None:
            attrs |= part.attributes()
        if verdict.language is not None:
            attrs["guardrail.language"] = verdict.language
        if verdict.normalized:
            attrs["guardrail.normalized"] = list(verdict.normalized)
        if verdict.form is not None:
            attrs["guardrail.normalized.form"] = verdict.form
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

    def record_enforced(self, span: Span, verdict: Verdict, *, prompt: str | None, response: str) -> None:
        """Put what enforcing ``verdict`` ended in on its ``guardrail.enforce`` span, and count rewrites."""
        deployment = deployment_of(verdict.metadata)
        rewrite = verdict.rewrite
        if rewrite is not None:
            self._rewrites.add(1, {
                "guardrail.rewrite.strategy": rewrite.strategy,
                "guardrail.rewrite.accepted": rewrite.accepted,
                "guardrail.final_decision": rewrite.final_decision,
                "guardrail.policy.name": verdict.policy_name,
                **({"guardrail.deployment": deployment} if deployment else {}),
            })  # fmt: skip
        if not span.is_recording():
            return
        attrs: dict[str, Any] = {
            **self._policy_attrs(verdict, deployment),
            "guardrail.decision": verdict.decision,
            "guardrail.final_decision": verdict.final_decision,
            "guardrail.altered": verdict.altered,
        }
        if rewrite is not None:
            attrs |= {
                "guardrail.rewrite.strategy": rewrite.strategy,
                "guardrail.rewrite.attempts": rewrite.attempts,
                "guardrail.rewrite.accepted": rewrite.accepted,
                "guardrail.rewrite.reason": rewrite.reason,
            }
            if rewrite.fallback is not None:
                attrs["guardrail.rewrite.fallback"] = rewrite.fallback
        if self.capture_content:
            if prompt is not None:
                attrs["guardrail.prompt"] = prompt[:CONTENT_LIMIT]
            attrs["guardrail.response"] = response[:CONTENT_LIMIT]
            if verdict.output is not None:
                attrs["guardrail.output"] = verdict.output[:CONTENT_LIMIT]
        span.set_attributes(attrs)

    @staticmethod
    def _policy_attrs(verdict: Verdict, deployment: str | None) -> dict[str, Any]:
        attrs = {
            "guardrail.policy.name": verdict.policy_name,
            "guardrail.policy.version": verdict.policy_version,
            "guardrail.policy.hash": verdict.policy_hash,
        }
        if deployment is not None:
            attrs["guardrail.deployment"] = deployment
        return attrs

    def _measure(self, verdict: Verdict, deployment: str | None, role: CheckRole) -> None:
        key = (verdict.policy_name, verdict.policy_version, deployment, role)
        attrs = self._attrs.get(key)
        if attrs is None:
            if len(self._attrs) > _ATTR_SETS:
                self._attrs.clear()
            attrs = self._attrs[key] = _Attributes.of(*key)
        self._checks.add(1, attrs.checks[verdict.decision])
        self._duration.record(verdict.latency_ms, attrs.duration)
        if verdict.scores is not None:
            for score, value_attrs in zip(verdict.scores.to_list(), attrs.values):
                self._scores.record(score + SCORE_OFFSET, value_attrs)


_ATTR_SETS = 1024
"""Metric attribute sets a telemetry object remembers (policy x deployment x role); bounded."""


@dataclass(frozen=True, slots=True)
class _Attributes:
    """The metric attributes of one (policy, version, deployment, role), built once, not per check."""

    checks: dict[str, dict[str, str]]  # by decision
    duration: dict[str, str]
    values: tuple[dict[str, str], ...]  # by value, in VALUES order

    @staticmethod
    def of(policy: str, version: str, deployment: str | None, role: str) -> _Attributes:
        common = {"guardrail.policy.name": policy}
        if deployment is not None:
            common["guardrail.deployment"] = deployment
        checks = {
            decision: {**common, "guardrail.policy.version": version, "guardrail.decision": decision,
                       "guardrail.check.role": role}
            for decision in get_args(Decision)
        }  # fmt: skip
        values = tuple({**common, "guardrail.value": name} for name in VALUES)
        return _Attributes(checks, {**common, "guardrail.check.role": role}, values)
