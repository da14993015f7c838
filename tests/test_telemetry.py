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
from guardrail._telemetry.checks import CAPTURE_ENV, CONTENT_LIMIT
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


# -- deployment, margins, roles, enforcement spans ------------------------------------------------

REWRITE = Policy(
    name="rw",
    version="2",
    thresholds={"benevolence": {"min": -0.3, "action": "soften"}},
    actions={"soften": {"type": "rewrite", "strategy": "reask", "max_attempts": 2, "fallback": "block"}},
)


def by_name(exporter: InMemorySpanExporter) -> dict[str, list[ReadableSpan]]:
    out: dict[str, list[ReadableSpan]] = {}
    for span in exporter.get_finished_spans():
        out.setdefault(span.name, []).append(span)
    return out


def attrs_of(span: ReadableSpan) -> dict[str, Any]:
    assert span.attributes is not None
    return dict(span.attributes)


@pytest.mark.parametrize(
    ("metadata", "expected"),
    [({"deployment": "bot"}, "bot"), ({"tenant": "acme"}, "acme"), ({"deployment": "a", "tenant": "b"}, "a"),
     ({"deployment": 7}, "7"), ({"user": "u"}, None), (None, None)],
)  # fmt: skip
def test_deployment_attribute(exporter: InMemorySpanExporter, metadata: Any, expected: str | None) -> None:
    make_guard(exporter).check("bad", metadata=metadata)
    assert attrs_of(only_span(exporter)).get("guardrail.deployment") == expected


def test_violation_margins_and_role(exporter: InMemorySpanExporter) -> None:
    verdict = make_guard(exporter).check("bad")
    attrs = attrs_of(only_span(exporter))
    assert tuple(attrs["guardrail.violation_margins"]) == pytest.approx([v.margin for v in verdict.violations])
    assert attrs["guardrail.check.role"] == "answer"


@pytest.mark.parametrize("use_async", [False, True], ids=["enforce", "aenforce"])
def test_enforce_span_holds_check_rewrite_and_reasks(exporter: InMemorySpanExporter, use_async: bool) -> None:
    revisions = iter(["still bad", "kind now"])
    guard = make_guard(exporter, REWRITE, capture_content=True)
    guard.scorer.table["still bad"] = BAD  # type: ignore[attr-defined]
    metadata = {"deployment": "bot"}
    if use_async:

        async def areask(previous: str, feedback: str) -> str:
            return next(revisions)

        verdict = asyncio.run(guard.aenforce("bad", "the prompt", metadata, reask=areask))
    else:
        verdict = guard.enforce("bad", "the prompt", metadata, reask=lambda previous, feedback: next(revisions))
    assert verdict.final_decision == "rewrite" and verdict.output == "kind now"
    spans = by_name(exporter)
    [enforce], [rewrite] = spans["guardrail.enforce"], spans["guardrail.rewrite"]
    checks, reasks = spans["guardrail.check"], spans["guardrail.reask"]
    assert enforce.parent is None
    assert rewrite.parent is not None and rewrite.parent.span_id == enforce.context.span_id
    first = [c for c in checks if attrs_of(c)["guardrail.check.role"] == "answer"]
    revised = [c for c in checks if attrs_of(c)["guardrail.check.role"] == "revision"]
    assert len(first) == 1 and first[0].parent is not None and first[0].parent.span_id == enforce.context.span_id
    assert len(revised) == 2 and all(
        c.parent is not None and c.parent.span_id == rewrite.context.span_id for c in revised
    )
    assert [attrs_of(r)["guardrail.rewrite.attempt"] for r in reasks] == [1, 2]
    assert all(r.parent is not None and r.parent.span_id == rewrite.context.span_id for r in reasks)
    attrs = attrs_of(enforce)
    assert attrs["openinference.span.kind"] == "CHAIN"
    assert attrs["guardrail.policy.name"] == "rw" and attrs["guardrail.policy.version"] == "2"
    assert attrs["guardrail.policy.hash"] == REWRITE.content_hash()
    assert attrs["guardrail.deployment"] == "bot"
    assert (attrs["guardrail.decision"], attrs["guardrail.final_decision"]) == ("rewrite", "rewrite")
    assert attrs["guardrail.altered"] is True
    assert attrs["guardrail.rewrite.strategy"] == "reask"
    assert attrs["guardrail.rewrite.attempts"] == 2
    assert attrs["guardrail.rewrite.accepted"] is True
    assert attrs["guardrail.rewrite.reason"] == "revision 2 passed"
    assert "guardrail.rewrite.fallback" not in attrs
    assert (attrs["guardrail.prompt"], attrs["guardrail.response"], attrs["guardrail.output"]) == (
        "the prompt", "bad", "kind now",
    )  # fmt: skip


def test_enforce_records_fallback_and_failed_reask(exporter: InMemorySpanExporter) -> None:
    def broken(previous: str, feedback: str) -> str:
        raise ConnectionError("model down")

    verdict = make_guard(exporter, REWRITE).enforce("bad", metadata={"tenant": "t1"}, reask=broken)
    assert verdict.final_decision == "block"
    spans = by_name(exporter)
    attrs = attrs_of(spans["guardrail.enforce"][0])
    assert attrs["guardrail.final_decision"] == "block"
    assert attrs["guardrail.rewrite.accepted"] is False
    assert attrs["guardrail.rewrite.fallback"] == "block"
    assert attrs["guardrail.rewrite.reason"] == "re-ask failed: ConnectionError: model down"
    assert attrs["guardrail.deployment"] == "t1"
    assert "guardrail.output" not in attrs  # capture is off
    [reask] = spans["guardrail.reask"]
    assert reask.status.status_code is StatusCode.ERROR
    assert [e.name for e in reask.events] == ["exception"]


def test_enforce_allow_has_no_rewrite_span(exporter: InMemorySpanExporter) -> None:
    verdict = make_guard(exporter).enforce("fine")
    assert verdict.output == "fine"
    spans = by_name(exporter)
    assert set(spans) == {"guardrail.enforce", "guardrail.check"}
    attrs = attrs_of(spans["guardrail.enforce"][0])
    assert (attrs["guardrail.final_decision"], attrs["guardrail.altered"]) == ("allow", False)
    assert not any(k.startswith("guardrail.rewrite") for k in attrs)


def test_redact_rechecks_have_their_roles(exporter: InMemorySpanExporter) -> None:
    policy = Policy(
        name="rd", thresholds={"benevolence": {"min": -0.3, "action": "cut"}},
        actions={"cut": {"type": "rewrite", "strategy": "redact", "min_keep": 0.1}},
    )  # fmt: skip
    guard = make_guard(exporter, policy)
    guard.scorer.table.update({"bad.": BAD, "bad. And fine.": BAD})  # type: ignore[attr-defined]
    verdict = guard.enforce("bad. And fine.")
    assert verdict.final_decision == "rewrite" and verdict.output == "And fine."
    roles = [attrs_of(s)["guardrail.check.role"] for s in by_name(exporter)["guardrail.check"]]
    assert sorted(roles) == ["answer", "redacted", "sentence", "sentence"]
    assert "guardrail.reask" not in by_name(exporter)


@pytest.mark.parametrize(
    ("policy_capture", "env", "argument", "captured"),
    [(True, "", None, True), (False, "true", None, False), (None, "true", None, True), (None, "", None, False),
     (True, "", False, False), (False, "", True, True)],
)  # fmt: skip
def test_policy_capture_switch(
    exporter: InMemorySpanExporter, monkeypatch: pytest.MonkeyPatch,
    policy_capture: bool | None, env: str, argument: bool | None, captured: bool,
) -> None:  # fmt: skip
    monkeypatch.setenv(CAPTURE_ENV, env)
    policy = POLICY.model_copy(update={"capture_content": policy_capture})
    make_guard(exporter, policy, capture_content=argument).check("the answer")
    assert ("guardrail.response" in attrs_of(only_span(exporter))) is captured


def test_policy_capture_loads_from_yaml(tmp_path: Any) -> None:
    from guardrail import load_policy

    path = tmp_path / "p.yaml"
    path.write_text("name: p\nextends: default\ncapture_content: true\n", encoding="utf-8")
    assert load_policy(path).capture_content is True
    assert load_policy("default").capture_content is None
