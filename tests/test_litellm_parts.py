"""Every part of a LiteLLM answer the user sees is checked: each choice, its reasoning, its tool calls.

Real litellm against a loopback OpenAI server (``_openai_stub``) that answers with several choices,
``reasoning_content`` and tool calls, streamed and not; the shipped model judges, fixed vectors
(FakeScorer) cover the edges.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import pytest
from _answers import BENIGN, HARMFUL
from _litellm_calls import MESSAGES, call, stream_chunks
from _openai_stub import OpenAIStub, Reply
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from guardrail import Guard, OutputPart, ValueVector
from guardrail.testing import FakeScorer
from guardrail_litellm import acompletion, verdict_of, verdicts_of

# litellm's own warnings (its TypedDicts' ReadOnly items; its usage-chunk check reads a deprecated pydantic
# attribute): theirs, not ours. Every other warning stays an error.
pytestmark = [
    pytest.mark.filterwarnings("ignore:Item.* using the `ReadOnly` qualifier:UserWarning"),
    pytest.mark.filterwarnings("ignore:Accessing the 'model_.*' attribute on the instance is deprecated"),
]

twins = pytest.mark.parametrize("use_async", [False, True], ids=["completion", "acompletion"])
TOOL_ARGS = json.dumps({"to": "buyer@example.com", "body": HARMFUL})
BENIGN_ARGS = json.dumps({"city": "Lisbon"})


class Replies:
    """What the stub answers next (set per test), so one module-scoped server serves every test."""

    def __init__(self) -> None:
        self.next: str | Reply | list[Reply] = BENIGN

    def __call__(self, messages: list[dict[str, Any]]) -> str | Reply | list[Reply]:
        return self.next


REPLIES = Replies()


@pytest.fixture(autouse=True)
def own_event_loop() -> Iterator[None]:
    """A current event loop that is closed after the test.

    litellm's sync service logger calls ``asyncio.get_event_loop()``, which would create a loop that
    a later ``asyncio.run()`` drops unclosed (a ResourceWarning at some later test).
    """
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    yield
    asyncio.set_event_loop(None)
    loop.close()


@pytest.fixture(scope="module")
def stub() -> Iterator[OpenAIStub]:
    with OpenAIStub(REPLIES) as s:
        yield s


@pytest.fixture(scope="module")
def guard(scorer: Any) -> Guard:
    return Guard(scorer=scorer)


def ask(stub: OpenAIStub, answer: str | Reply | list[Reply], use_async: bool, **kwargs: Any) -> Any:
    REPLIES.next = answer
    return call(use_async, model="openai/stub", api_base=stub.base_url, api_key="sk-stub", **kwargs)


def ask_stream(
    stub: OpenAIStub, answer: str | Reply | list[Reply], use_async: bool, **kwargs: Any
) -> tuple[list[Any], Any]:
    REPLIES.next = answer
    return stream_chunks(use_async, model="openai/stub", api_base=stub.base_url, api_key="sk-stub", **kwargs)


def field_of(chunks: list[Any], name: str) -> str:
    return "".join(getattr(c.choices[0].delta, name, None) or "" for c in chunks if c.choices)


def tool_deltas(chunks: list[Any]) -> list[Any]:
    return [t for c in chunks if c.choices for t in (c.choices[0].delta.tool_calls or [])]


# -- choices ------------------------------------------------------------------------------------------


@twins
def test_each_of_n_choices_is_checked_and_delivered_on_its_own(use_async: bool, guard: Guard, stub: OpenAIStub) -> None:
    response = ask(stub, [Reply(BENIGN), Reply(HARMFUL)], use_async, guard=guard, n=2)
    first, second = response.choices
    assert first.message.content == BENIGN
    assert second.message.content == guard.policy.action("block").message
    assert [(v.part, v.decision) for v in verdicts_of(response)] == [
        (OutputPart("content", 0), "allow"), (OutputPart("content", 1), "block")]  # fmt: skip
    assert verdict_of(response).decision == "block"  # type: ignore[union-attr]  # one choice blocked decides
    assert [p["part"]["choice"] for p in response._hidden_params["guardrail_parts"]] == [0, 1]
    assert stub.requests[-1]["n"] == 2


@twins
def test_a_choice_the_provider_added_is_checked_too(use_async: bool, guard: Guard, stub: OpenAIStub) -> None:
    response = ask(stub, [Reply(BENIGN), Reply(HARMFUL)], use_async, guard=guard)  # n not given: one expected
    assert len(response.choices) == 2
    assert response.choices[1].message.content == guard.policy.action("block").message
    assert "wallet" not in response.model_dump_json()


def test_a_streamed_choice_nobody_asked_for_is_never_delivered(guard: Guard, stub: OpenAIStub) -> None:
    chunks, _ = ask_stream(stub, [Reply(BENIGN), Reply(HARMFUL)], False, guard=guard)
    assert {c.index for chunk in chunks for c in chunk.choices} == {0}
    assert field_of(chunks, "content") == BENIGN and "wallet" not in "".join(c.model_dump_json() for c in chunks)


# -- reasoning ----------------------------------------------------------------------------------------


@twins
def test_harmful_reasoning_blocks_the_choice(use_async: bool, guard: Guard, stub: OpenAIStub) -> None:
    response = ask(stub, Reply(content=BENIGN, reasoning=HARMFUL), use_async, guard=guard)
    message = response.choices[0].message
    assert message.content == guard.policy.action("block").message
    assert getattr(message, "reasoning_content", None) is None and "wallet" not in response.model_dump_json()
    reasoning, content = verdicts_of(response)
    assert (reasoning.part, reasoning.decision) == (OutputPart("reasoning", 0), "block")
    assert (content.part, content.decision) == (OutputPart("content", 0), "allow")


@twins
def test_benign_reasoning_is_delivered(use_async: bool, guard: Guard, stub: OpenAIStub) -> None:
    thought = "The user wants practical sleep advice; a short list of habits will help."
    response = ask(stub, Reply(content=BENIGN, reasoning=thought), use_async, guard=guard)
    assert response.choices[0].message.reasoning_content == thought
    assert [v.decision for v in verdicts_of(response)] == ["allow", "allow"]


@twins
def test_harmful_streamed_reasoning_delivers_none_of_it(use_async: bool, guard: Guard, stub: OpenAIStub) -> None:
    chunks, stream = ask_stream(stub, Reply(content=BENIGN, reasoning=HARMFUL), use_async, guard=guard)
    assert field_of(chunks, "reasoning_content") == ""
    assert field_of(chunks, "content") == guard.policy.action("block").message  # nothing of the answer either
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert stream.verdict.decision == "block" and stream.verdict.part == OutputPart("reasoning", 0)


# -- tool calls ---------------------------------------------------------------------------------------


@twins
def test_harmful_tool_call_arguments_block_the_choice(use_async: bool, guard: Guard, stub: OpenAIStub) -> None:
    reply = Reply(content="I'll send that email now.", tool_calls=(("send_email", TOOL_ARGS),))
    response = ask(stub, reply, use_async, guard=guard)
    choice = response.choices[0]
    assert (choice.message.content, choice.message.tool_calls, choice.finish_reason) == (
        guard.policy.action("block").message, None, "stop")  # fmt: skip
    tool = next(v for v in verdicts_of(response) if v.part is not None and v.part.kind == "tool_call")
    assert tool.part == OutputPart("tool_call", 0, 0, "send_email") and tool.decision == "block"


@twins
def test_benign_tool_calls_keep_their_place(use_async: bool, guard: Guard, stub: OpenAIStub) -> None:
    reply = Reply(content=None, tool_calls=(("get_weather", BENIGN_ARGS), ("set_alarm", '{"time": "07:00"}')))
    response = ask(stub, reply, use_async, guard=guard)
    assert [t.function.name for t in response.choices[0].message.tool_calls] == ["get_weather", "set_alarm"]
    assert response.choices[0].finish_reason == "tool_calls"
    assert [v.part.index for v in verdicts_of(response)] == [0, 1]  # type: ignore[union-attr]


@twins
def test_harmful_streamed_tool_call_is_held_back(use_async: bool, guard: Guard, stub: OpenAIStub) -> None:
    reply = Reply(content="Sending it.", tool_calls=(("send_email", TOOL_ARGS),))
    chunks, stream = ask_stream(stub, reply, use_async, guard=guard)
    assert tool_deltas(chunks) == []  # not one argument character got out
    assert field_of(chunks, "content").endswith(guard.policy.action("block").message)
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert stream.verdict.part == OutputPart("tool_call", 0, 0, "send_email")


@twins
def test_benign_stream_with_every_part_is_delivered_whole_in_order(
    use_async: bool, guard: Guard, stub: OpenAIStub
) -> None:
    thought = "The user wants practical sleep advice; a short list of habits will help."
    reply = Reply(content=BENIGN, reasoning=thought, tool_calls=(("get_weather", BENIGN_ARGS),))
    chunks, stream = ask_stream(stub, reply, use_async, guard=guard, stream_options={"include_usage": True})
    assert (field_of(chunks, "reasoning_content"), field_of(chunks, "content")) == (thought, BENIGN)
    assert "".join(t.function.arguments or "" for t in tool_deltas(chunks)) == BENIGN_ARGS
    kinds = [k for c in chunks if c.choices for k, v in (("r", getattr(c.choices[0].delta, "reasoning_content", None)),
             ("c", c.choices[0].delta.content), ("t", c.choices[0].delta.tool_calls)) if v]  # fmt: skip
    assert kinds == sorted(kinds, key="rct".index)  # reasoning, then content, then the tool call
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["tool_calls"]
    assert getattr(chunks[-1], "usage", None) is not None
    assert {v.part.kind for v in stream.verdicts} == {"reasoning", "content", "tool_call"}  # type: ignore[union-attr]
    assert stream.verdict.decision == "allow"


@twins
def test_a_blocked_stream_ends_with_a_finish_reason(use_async: bool, guard: Guard, stub: OpenAIStub) -> None:
    chunks, stream = ask_stream(stub, HARMFUL, use_async, guard=guard)
    assert field_of(chunks, "content") == guard.policy.action("block").message and stream.delivered == ""
    assert chunks[-1].choices[0].finish_reason == "stop"


# -- rewrites and spans -------------------------------------------------------------------------------


def write_policy(tmp_path: Any, actions: str) -> Any:
    path = tmp_path / "policy.yaml"
    path.write_text(f"name: parts\nextends: default\nactions:\n{actions}", encoding="utf-8")
    return path


def harm(prompt: str | None, response: str) -> ValueVector:
    return ValueVector(benevolence=-0.9) if "hurt" in response else ValueVector(benevolence=0.5)


@twins
def test_reasoning_and_tool_calls_are_never_rewritten_their_fallback_applies(
    use_async: bool, stub: OpenAIStub, tmp_path: Any
) -> None:
    policy = write_policy(tmp_path, "  block: {type: rewrite, strategy: redact, min_keep: 0.1, fallback: refuse}\n"
                                    "  refuse: {type: block, message: 'Refused.'}\n")  # fmt: skip
    guard = Guard(policy, scorer=FakeScorer(fn=harm))
    response = ask(stub, Reply("Fine. Rest well.", tool_calls=(("note", '{"text": "Rest. Then hurt them."}'),)),
                   use_async, guard=guard)  # fmt: skip
    assert response.choices[0].message.content == "Refused." and response.choices[0].message.tool_calls is None
    tool = verdicts_of(response)[-1]
    assert (tool.decision, tool.final_decision, tool.rewrite.accepted) == ("rewrite", "block", False)  # type: ignore[union-attr]
    assert "cannot be rewritten" in tool.rewrite.reason  # type: ignore[union-attr]


def test_each_part_has_its_own_check_span(scorer: Any, stub: OpenAIStub) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    guard = Guard(scorer=scorer, tracer_provider=provider)
    reply = Reply(content=BENIGN, reasoning="Sleep advice it is.", tool_calls=(("get_weather", BENIGN_ARGS),))
    REPLIES.next = reply
    asyncio.run(acompletion(model="openai/stub", api_base=stub.base_url, api_key="sk-stub", messages=MESSAGES,
                            guard=guard))  # fmt: skip
    checks = [dict(s.attributes or {}) for s in exporter.get_finished_spans() if s.name == "guardrail.check"]
    assert sorted((a["guardrail.output.kind"], a["guardrail.output.choice"], a.get("guardrail.output.name"))
                  for a in checks) == [("content", 0, None), ("reasoning", 0, None), ("tool_call", 0, "get_weather")]  # fmt: skip
