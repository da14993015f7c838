"""Answer parts: which piece of an answer a check read, on the verdict and the span; the text of a tool call."""

from __future__ import annotations

import asyncio
import math

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from guardrail import Guard, Output, OutputPart, Policy, ValueVector, Verdict, by_choice, deciding, tool_call_text
from guardrail.testing import FakeScorer

BAD = ValueVector(benevolence=-0.62)
POLICY = Policy(
    name="test",
    version="1",
    thresholds={"benevolence": {"min": -0.3}, "power": {"max": 0.5, "action": "log"}},
)


def make_guard(exporter: InMemorySpanExporter) -> Guard:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    scorer = FakeScorer({"bad": BAD, "pushy": ValueVector(power=0.8), "worse": ValueVector(benevolence=-0.9)})
    return Guard(POLICY, scorer=scorer, tracer_provider=provider)


@pytest.mark.parametrize("run_async", [False, True], ids=["check", "acheck"])
def test_part_is_on_the_verdict_and_the_span(run_async: bool) -> None:
    exporter = InMemorySpanExporter()
    guard = make_guard(exporter)
    part = OutputPart("tool_call", choice=1, index=2, name="send_email")
    verdict = asyncio.run(guard.acheck("bad", part=part)) if run_async else guard.check("bad", part=part)
    assert verdict.part == part
    assert verdict.to_dict()["part"] == {"kind": "tool_call", "choice": 1, "index": 2, "name": "send_email"}
    [span] = exporter.get_finished_spans()
    attrs = dict(span.attributes or {})
    assert attrs["guardrail.output.kind"] == "tool_call"
    assert attrs["guardrail.output.choice"] == 1
    assert attrs["guardrail.output.index"] == 2
    assert attrs["guardrail.output.name"] == "send_email"


def test_no_part_leaves_verdict_and_span_as_before() -> None:
    exporter = InMemorySpanExporter()
    verdict = make_guard(exporter).check("bad")
    assert verdict.part is None
    assert "part" not in verdict.to_dict()
    [span] = exporter.get_finished_spans()
    assert not any(key.startswith("guardrail.output.") for key in span.attributes or {})


def test_check_many_labels_each_part_and_refuses_a_short_list() -> None:
    exporter = InMemorySpanExporter()
    guard = make_guard(exporter)
    parts = [OutputPart("content"), OutputPart("reasoning")]
    verdicts = guard.check_many(["fine", "bad"], parts=parts)
    assert [v.part for v in verdicts] == parts
    assert [v.decision for v in verdicts] == ["allow", "block"]
    with pytest.raises(ValueError, match="parts has 1 entries but responses has 2"):
        guard.check_many(["fine", "bad"], parts=parts[:1])


def test_enforce_and_stream_carry_the_part() -> None:
    exporter = InMemorySpanExporter()
    guard = make_guard(exporter)
    part = OutputPart("reasoning", choice=0)
    assert guard.enforce("bad", part=part).part == part
    stream = guard.stream(iter(["fine ", "words"]), part=part)
    assert "".join(stream) == "fine words"
    assert stream.verdict is not None and stream.verdict.part == part


@pytest.mark.parametrize(
    ("name", "arguments", "text"),
    [
        ("send_email", '{"to": "bob"}', 'send_email({"to": "bob"})'),
        ("send_email", {"to": "bob", "body": "hé"}, 'send_email({"to": "bob", "body": "hé"})'),
        ("lookup", None, "lookup()"),
        (None, {"q": 1}, 'tool({"q": 1})'),
        ("f", {"x": math.inf}, 'f({"x": Infinity})'),
    ],
)
def test_tool_call_text(name: str | None, arguments: object, text: str) -> None:
    assert tool_call_text(name, arguments) == text


def test_tool_call_text_survives_unserialisable_arguments() -> None:
    cyclic: dict[str, object] = {}
    cyclic["self"] = cyclic
    assert tool_call_text("f", cyclic).startswith("f({'self'")


def _verdicts(guard: Guard, *texts: str) -> list[Verdict]:
    return [guard.enforce(text) for text in texts]


def test_deciding_picks_the_most_altering_then_the_riskiest() -> None:
    guard = make_guard(InMemorySpanExporter())
    fine, pushy, bad, worse = _verdicts(guard, "fine", "pushy", "bad", "worse")
    assert deciding([fine, pushy]) is pushy  # log alters more than allow
    assert deciding([bad, fine, pushy]) is bad
    assert deciding([bad, worse]) is worse  # both block: the riskier one
    with pytest.raises(ValueError, match="at least one verdict"):
        deciding([])


# -- enforcing every part of an answer ------------------------------------------------------------

REWRITE_POLICY = Policy(
    name="rewrite",
    version="1",
    thresholds={"benevolence": {"min": -0.3, "action": "fix"}},
    actions={"fix": {"type": "rewrite", "strategy": "reask", "fallback": "block"}},
)


def _rewriting_guard(exporter: InMemorySpanExporter) -> Guard:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return Guard(REWRITE_POLICY, scorer=FakeScorer({"bad": BAD}), tracer_provider=provider)


def _answer(choice: int, content: str, tool: str) -> list[Output]:
    return [
        Output(OutputPart("content", choice), content),
        Output(OutputPart("reasoning", choice), "thinking it over"),
        Output(OutputPart("tool_call", choice, 0, "send"), tool),
    ]


@pytest.mark.parametrize("run_async", [False, True], ids=["enforce_outputs", "aenforce_outputs"])
def test_enforce_outputs_rewrites_content_and_falls_back_for_the_rest(run_async: bool) -> None:
    exporter = InMemorySpanExporter()
    guard = _rewriting_guard(exporter)
    outputs = [*_answer(0, "bad", "fine call"), *_answer(1, "fine", "bad")]

    def reask(previous: str, feedback: str) -> str:
        return "a kinder answer"

    async def areask(previous: str, feedback: str) -> str:
        return reask(previous, feedback)

    if run_async:
        verdicts = asyncio.run(guard.aenforce_outputs(outputs, "why?", reask=areask))
    else:
        verdicts = guard.enforce_outputs(outputs, "why?", reask=reask)
    assert [v.part for v in verdicts] == [o.part for o in outputs]
    first, second = by_choice(verdicts)
    # Choice 0: its content was re-asked and the revision passed; it goes out rewritten.
    assert (first.choice, first.blocked, first.content) == (0, False, "a kinder answer")
    assert first.altered
    # Choice 1: its tool call cannot be rewritten, so the rewrite's fallback (block) withholds the choice.
    assert second.blocked
    assert second.verdict.part == OutputPart("tool_call", 1, 0, "send")
    assert second.verdict.rewrite is not None
    assert second.verdict.rewrite.reason == "a tool call cannot be rewritten; its fallback applies"
    assert second.content == second.verdict.output
    assert [p["part"]["kind"] for p in second.to_dict()["parts"]] == ["content", "reasoning", "tool_call"]
    checks = [s for s in exporter.get_finished_spans() if s.name == "guardrail.check"]
    kinds = sorted(str((s.attributes or {}).get("guardrail.output.kind")) for s in checks)
    # Six parts, plus the re-check of the revision (which is no part of the answer).
    assert kinds.count("content") == 2 and kinds.count("reasoning") == 2 and kinds.count("tool_call") == 2


def test_a_rewrite_decision_on_reasoning_says_so() -> None:
    guard = _rewriting_guard(InMemorySpanExporter())
    [verdict] = guard.enforce_outputs([Output(OutputPart("reasoning"), "bad")])
    assert verdict.final_decision == "block"
    assert verdict.rewrite is not None
    assert verdict.rewrite.reason == "a reasoning trace cannot be rewritten; its fallback applies"


def test_a_choice_without_content_that_passes_delivers_no_content() -> None:
    guard = make_guard(InMemorySpanExporter())
    [choice] = by_choice(guard.enforce_outputs([Output(OutputPart("tool_call", name="f"), "f()")]))
    assert not choice.blocked and choice.content is None and not choice.altered
