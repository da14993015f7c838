"""Spans: one ``guardrail.check`` span per check, its attributes and GenAI evaluation events."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from guardrail import VALUES, Guard, Policy, ScorerError, ValueVector
from guardrail._telemetry import CAPTURE_ENV, CONTENT_LIMIT
from guardrail.testing import FakeScorer

BAD = ValueVector(benevolence=-0.62, universalism=0.5)
POLICY = Policy(name="test", version="3", thresholds={"benevolence": {"min": -0.3}})


@pytest.fixture
def exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


def make_guard(exporter: InMemorySpanExporter, policy: Policy = POLICY, **kw: Any) -> Guard:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    scorer = FakeScorer({"bad": BAD}, fail=kw.pop("fail", None))
    return Guard(policy, scorer=scorer, tracer_provider=provider, **kw)


def only_span(exporter: InMemorySpanExporter) -> ReadableSpan:
    spans = exporter.get_finished_spans()
    assert len(spans) == 1, spans
    return spans[0]


def test_one_span_per_check(exporter: InMemorySpanExporter) -> None:
    guard = make_guard(exporter)
    guard.check("bad")
    asyncio.run(guard.acheck("fine"))
    guard.check_many(["a", "b", "c"])
    spans = exporter.get_finished_spans()
    assert [s.name for s in spans] == ["guardrail.check"] * 5


def test_span_attributes(exporter: InMemorySpanExporter) -> None:
    guard = make_guard(exporter)
    verdict = guard.check("bad", "prompt", metadata={"user": "u1", "nested": {"no": 1}})
    attrs = only_span(exporter).attributes
    assert attrs is not None
    assert attrs["openinference.span.kind"] == "GUARDRAIL"
    assert attrs["guardrail.policy.name"] == "test"
    assert attrs["guardrail.policy.version"] == "3"
    assert attrs["guardrail.policy.hash"] == POLICY.content_hash()
    assert attrs["guardrail.mode"] == "enforce"
    assert attrs["guardrail.decision"] == "block"
    assert attrs["guardrail.intended_decision"] == "block"
    assert attrs["guardrail.action"] == "block"
    assert attrs["guardrail.action.type"] == "block"
    assert attrs["guardrail.risk"] == pytest.approx(verdict.risk)
    assert attrs["guardrail.latency_ms"] == verdict.latency_ms
    assert attrs["guardrail.scorer.model"] == "fake"
    assert attrs["guardrail.scorer.device"] == "cpu"
    assert tuple(attrs["guardrail.violations"]) == ("thresholds.benevolence.min",)
    assert tuple(attrs["guardrail.violation_messages"]) == ("benevolence -0.62, below the floor -0.30 by 0.32",)
    assert attrs["guardrail.metadata.user"] == "u1"
    assert "guardrail.metadata.nested" not in attrs
    for dim in VALUES:
        assert attrs[f"guardrail.value.{dim}"] == BAD[dim]
    assert "guardrail.error" not in attrs


def test_allowed_span_has_no_action(exporter: InMemorySpanExporter) -> None:
    make_guard(exporter).check("fine")
    span = only_span(exporter)
    attrs = span.attributes
    assert attrs is not None
    assert attrs["guardrail.decision"] == "allow"
    assert "guardrail.action" not in attrs
    assert tuple(attrs["guardrail.violations"]) == ()
    assert span.status.status_code is StatusCode.UNSET


def test_rewrite_span_records_strategy(exporter: InMemorySpanExporter) -> None:
    policy = Policy(
        name="rw",
        thresholds={"benevolence": {"min": -0.3, "action": "soften"}},
        actions={"soften": {"type": "rewrite", "strategy": "redact"}},
    )
    make_guard(exporter, policy).check("bad")
    attrs = only_span(exporter).attributes
    assert attrs is not None
    assert attrs["guardrail.action"] == "soften"
    assert attrs["guardrail.action.type"] == "rewrite"
    assert attrs["guardrail.action.strategy"] == "redact"


def test_ten_evaluation_events(exporter: InMemorySpanExporter) -> None:
    make_guard(exporter).check("bad")
    events = only_span(exporter).events
    assert len(events) == 10
    assert all(e.name == "gen_ai.evaluation.result" for e in events)
    by_name = {e.attributes["gen_ai.evaluation.name"]: e.attributes for e in events if e.attributes}
    assert list(by_name) == [f"value.{dim}" for dim in VALUES]
    bene = by_name["value.benevolence"]
    assert bene["gen_ai.evaluation.score.value"] == -0.62
    assert bene["gen_ai.evaluation.score.label"] == "opposes"
    assert by_name["value.universalism"]["gen_ai.evaluation.score.label"] == "upholds"
    assert by_name["value.power"]["gen_ai.evaluation.score.value"] == 0.0
    assert by_name["value.power"]["gen_ai.evaluation.score.label"] == "none"


def test_no_content_by_default(exporter: InMemorySpanExporter, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(CAPTURE_ENV, raising=False)
    make_guard(exporter).check("secret response", "secret prompt")
    span = only_span(exporter)
    attrs = span.attributes
    assert attrs is not None
    assert "guardrail.prompt" not in attrs
    assert "guardrail.response" not in attrs
    texts = [str(v) for v in attrs.values()]
    texts += [str(v) for e in span.events for v in (e.attributes or {}).values()]
    assert not any("secret" in t for t in texts)


def test_capture_content_records_capped_text(exporter: InMemorySpanExporter) -> None:
    long_text = "x" * (CONTENT_LIMIT + 100)
    make_guard(exporter, capture_content=True).check(long_text, "the prompt")
    attrs = only_span(exporter).attributes
    assert attrs is not None
    assert attrs["guardrail.prompt"] == "the prompt"
    assert attrs["guardrail.response"] == "x" * CONTENT_LIMIT


def test_capture_content_without_prompt(exporter: InMemorySpanExporter) -> None:
    make_guard(exporter, capture_content=True).check("short")
    attrs = only_span(exporter).attributes
    assert attrs is not None
    assert attrs["guardrail.response"] == "short"
    assert "guardrail.prompt" not in attrs


@pytest.mark.parametrize("value", ["true", "TRUE", "1", " yes "])
def test_env_var_turns_capture_on(exporter: InMemorySpanExporter, monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv(CAPTURE_ENV, value)
    make_guard(exporter).check("the response")
    attrs = only_span(exporter).attributes
    assert attrs is not None
    assert attrs["guardrail.response"] == "the response"


@pytest.mark.parametrize("value", ["false", "0", ""])
def test_env_var_off_values(exporter: InMemorySpanExporter, monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv(CAPTURE_ENV, value)
    make_guard(exporter).check("the response")
    attrs = only_span(exporter).attributes
    assert attrs is not None
    assert "guardrail.response" not in attrs


def test_explicit_capture_beats_env_var(exporter: InMemorySpanExporter, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(CAPTURE_ENV, "true")
    make_guard(exporter, capture_content=False).check("the response")
    attrs = only_span(exporter).attributes
    assert attrs is not None
    assert "guardrail.response" not in attrs


@pytest.mark.parametrize("run_async", [False, True], ids=["check", "acheck"])
def test_error_verdict_sets_span_status(exporter: InMemorySpanExporter, run_async: bool) -> None:
    guard = make_guard(exporter, fail=ScorerError("down"))
    verdict = asyncio.run(guard.acheck("fine")) if run_async else guard.check("fine")
    span = only_span(exporter)
    assert span.status.status_code is StatusCode.ERROR
    assert span.status.description == "ScorerError: down"
    attrs = span.attributes
    assert attrs is not None
    assert attrs["guardrail.error"] == verdict.error == "ScorerError: down"
    assert attrs["guardrail.decision"] == "block"
    assert not any(k.startswith("guardrail.value.") for k in attrs)
    assert span.events == ()


def test_no_provider_is_a_no_op() -> None:
    # Nothing configured: the global no-op provider makes spans harmless.
    guard = Guard(POLICY, scorer=FakeScorer({"bad": BAD}))
    assert guard.check("bad").decision == "block"
    assert asyncio.run(guard.acheck("fine")).decision == "allow"
    assert guard.check_many(["bad", "fine"], metadata={"k": "v"})[1].decision == "allow"
