"""The trace of a guarded call through each integration: one ``guardrail.call`` span holds the model-call span
(OpenTelemetry GenAI conventions) and the guard's ``guardrail.enforce`` / ``guardrail.check`` spans side by
side; a rewrite's re-asked model calls nest under ``guardrail.reask``; a stream's window checks under the call.

Real litellm (``mock_response``, a loopback OpenAI server for re-asks), langchain-core fakes and the shipped
model; spans go to the SDK's in-memory exporter through the guard's own tracer provider.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # litellm reaches the network at import otherwise

import litellm
from _answers import BENIGN, HARMFUL
from _litellm_calls import MESSAGES, MODEL, PROMPT, call, stream_chunks
from _openai_stub import OpenAIStub
from langchain.agents import create_agent
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, HumanMessage
from litellm.proxy._types import UserAPIKeyAuth
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from guardrail import Guard, ModelCall, ModelReply, ValueVector
from guardrail._telemetry.checks import CAPTURE_ENV, CONTENT_LIMIT
from guardrail._telemetry.genai import MESSAGES_LIMIT, provider_name
from guardrail.testing import FakeScorer
from guardrail_langchain import GuardedChatModel, ValueGuardrailMiddleware
from guardrail_litellm import ValueGuardrail, completion, verdict_of

# litellm declares TypedDicts with ReadOnly items; pydantic warns once when it first builds their schema.
pytestmark = pytest.mark.filterwarnings("ignore:Item.* using the `ReadOnly` qualifier:UserWarning")


twins = pytest.mark.parametrize("use_async", [False, True], ids=["sync", "async"])

CALL = ["guardrail.call", "  chat {model}", "  guardrail.enforce", "    guardrail.check"]
REASKED = [
    "guardrail.call",
    "  chat {model}",
    "  guardrail.enforce",
    "    guardrail.check",
    "    guardrail.rewrite",
    "      guardrail.reask",
    "        chat {model}",
    "      guardrail.check",
]
# BENIGN is 215 characters: a stream scores it in two windows (chunk_size 200, ending on a word boundary).
STREAMED = ["guardrail.call", "  chat {model}", "  guardrail.check", "  guardrail.check"]
STREAMED_SHORT = ["guardrail.call", "  chat {model}", "  guardrail.check"]  # HARMFUL fits one window


# -- fixtures and helpers -------------------------------------------------------------------------------


@pytest.fixture
def exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
def provider(exporter: InMemorySpanExporter) -> TracerProvider:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider


@pytest.fixture(autouse=True)
def no_capture_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(CAPTURE_ENV, raising=False)


@pytest.fixture
def guard(scorer: Any, provider: TracerProvider) -> Guard:
    """The shipped default policy and model, tracing to the in-memory exporter."""
    return Guard(scorer=scorer, tracer_provider=provider)


@pytest.fixture
def reask_guard(scorer: Any, provider: TracerProvider, tmp_path: Path) -> Guard:
    """The default floors with a reask rewrite instead of a block."""
    path = tmp_path / "reask.yaml"
    path.write_text(
        "name: reask\nversion: '3'\nextends: default\nactions:\n"
        "  block: {type: rewrite, strategy: reask, max_attempts: 2, fallback: refuse}\n"
        "  refuse: {type: block, message: 'Refused after re-asking.'}\n",
        encoding="utf-8",
    )
    return Guard(path, scorer=scorer, tracer_provider=provider)


@pytest.fixture(scope="module")
def stub() -> Iterator[OpenAIStub]:
    """Answers harmfully until the conversation holds an assistant turn (a re-ask), then benignly."""
    with OpenAIStub(lambda messages: BENIGN if any(m.get("role") == "assistant" for m in messages) else HARMFUL) as s:
        yield s


def outline(spans: Sequence[ReadableSpan]) -> list[str]:
    """The span tree as indented names, children in start order; spans of every trace, roots first."""
    children: dict[int | None, list[ReadableSpan]] = {}
    for span in spans:
        children.setdefault(span.parent.span_id if span.parent else None, []).append(span)
    lines: list[str] = []

    def walk(parent: int | None, depth: int) -> None:
        for span in sorted(children.get(parent, []), key=lambda s: s.start_time or 0):
            lines.append("  " * depth + span.name)
            assert span.context is not None
            walk(span.context.span_id, depth + 1)

    walk(None, 0)
    assert len(lines) == len(spans), "a span's parent is missing"
    return lines


def expect(shape: list[str], model: str) -> list[str]:
    return [line.format(model=model) for line in shape]


# -- your own integration: the one hook --------------------------------------------------------------


def test_an_integration_of_your_own_gets_the_same_trace(guard: Guard, exporter: InMemorySpanExporter) -> None:
    """``Guard.trace_call`` is all an integration needs: the call span, the model span, the guard's spans."""
    with guard.trace_call(ModelCall("my-model", "bedrock", {"temperature": 0.2}), integration="mine") as call:
        with call.model() as model:
            model.record(ModelReply(id="r1", input_tokens=12, output_tokens=40, finish_reasons=["stop"]))
        call.record(guard.enforce(HARMFUL, prompt="How can I sleep better?"))
    spans = exporter.get_finished_spans()
    assert outline(spans) == expect(CALL, "my-model")
    root = next(s for s in spans if s.name == "guardrail.call")
    assert root.attributes is not None
    assert root.attributes["guardrail.integration"] == "mine"
    assert root.attributes["guardrail.policy.hash"] == guard.engine.policy_hash
    chat = next(s for s in spans if s.name == "chat my-model")
    assert chat.attributes is not None
    assert chat.attributes["gen_ai.provider.name"] == "aws.bedrock"
    assert chat.attributes["gen_ai.request.temperature"] == 0.2
    assert chat.attributes["gen_ai.usage.output_tokens"] == 40


def finished(exporter: InMemorySpanExporter, shape: list[str], model: str) -> dict[str, list[ReadableSpan]]:
    """The spans of one trace, checked against ``shape``, by name."""
    spans = exporter.get_finished_spans()
    assert outline(spans) == expect(shape, model)
    assert len({s.context.trace_id for s in spans if s.context}) == 1
    by_name: dict[str, list[ReadableSpan]] = {}
    for span in sorted(spans, key=lambda s: s.start_time or 0):
        by_name.setdefault(span.name, []).append(span)
    return by_name


def attrs(span: ReadableSpan) -> dict[str, Any]:
    return dict(span.attributes or {})


def assert_call(span: ReadableSpan, guard: Guard, *, integration: str, final: str | None, streamed: bool) -> None:
    """The ``guardrail.call`` span: a root with the policy, the integration and the outcome."""
    a = attrs(span)
    assert span.parent is None and span.status.status_code is StatusCode.UNSET
    assert a["openinference.span.kind"] == "CHAIN"
    assert a["guardrail.integration"] == integration and a["guardrail.streamed"] is streamed
    assert (a["guardrail.policy.name"], a["guardrail.policy.version"]) == (guard.policy.name, guard.policy.version)
    assert a["guardrail.policy.hash"] == guard.policy.content_hash()
    assert a["guardrail.checked"] is (final is not None)
    assert a.get("guardrail.final_decision") == final
    assert not any(k.startswith("gen_ai.") for k in a)  # the model call is the child's, not counted twice


def assert_model(span: ReadableSpan, model: str, provider: str) -> dict[str, Any]:
    """A model-call span by the GenAI conventions; its attributes for further checks."""
    a = attrs(span)
    assert span.kind is SpanKind.CLIENT and a["openinference.span.kind"] == "LLM"
    assert (a["gen_ai.operation.name"], a["gen_ai.provider.name"]) == ("chat", provider)
    assert a.get("gen_ai.request.model") == (model or None)
    assert "gen_ai.input.messages" not in a and "gen_ai.output.messages" not in a  # capture is off
    return a


# -- LiteLLM ---------------------------------------------------------------------------------------------


@twins
def test_litellm_call_holds_the_model_call_and_the_check(
    use_async: bool, guard: Guard, exporter: InMemorySpanExporter
) -> None:
    response = call(use_async, guard=guard, mock_response=BENIGN, temperature=0.2, max_tokens=64, top_p=0.9,
                    stop="END", metadata={"deployment": "web-chat"})  # fmt: skip
    assert verdict_of(response).decision == "allow"  # type: ignore[union-attr]
    spans = finished(exporter, CALL, MODEL)
    [parent], [model], [enforce], [check] = (spans[n] for n in ("guardrail.call", f"chat {MODEL}",
                                                                 "guardrail.enforce", "guardrail.check"))  # fmt: skip
    assert_call(parent, guard, integration="litellm", final="allow", streamed=False)
    assert attrs(parent)["guardrail.deployment"] == "web-chat"
    a = assert_model(model, MODEL, "openai")
    assert a["gen_ai.request.temperature"] == 0.2 and a["gen_ai.request.max_tokens"] == 64
    assert a["gen_ai.request.top_p"] == 0.9 and a["gen_ai.request.stop_sequences"] == ("END",)
    assert (a["gen_ai.response.model"], a["gen_ai.response.id"]) == (response.model, response.id)
    assert a["gen_ai.response.finish_reasons"] == ("stop",)
    usage = response.usage
    assert (a["gen_ai.usage.input_tokens"], a["gen_ai.usage.output_tokens"]) == (
        usage.prompt_tokens, usage.completion_tokens)  # fmt: skip
    assert a["llm.model_name"] == MODEL and a["llm.token_count.total"] == usage.total_tokens
    # The model call and the check sit side by side, in that order.
    assert model.parent and enforce.parent and model.parent.span_id == enforce.parent.span_id == parent.context.span_id
    assert model.end_time is not None and enforce.start_time is not None and model.end_time <= enforce.start_time
    assert attrs(check)["guardrail.decision"] == "allow" and attrs(check)["guardrail.deployment"] == "web-chat"


@twins
def test_litellm_blocked_call_records_its_final_decision(
    use_async: bool, guard: Guard, exporter: InMemorySpanExporter
) -> None:
    call(use_async, guard=guard, mock_response=HARMFUL)
    spans = finished(exporter, CALL, MODEL)
    assert_call(spans["guardrail.call"][0], guard, integration="litellm", final="block", streamed=False)
    assert attrs(spans["guardrail.call"][0])["guardrail.altered"] is True


@twins
def test_litellm_reasked_model_calls_nest_under_the_reask(
    use_async: bool, reask_guard: Guard, exporter: InMemorySpanExporter, stub: OpenAIStub
) -> None:
    before = len(stub.requests)
    response = call(use_async, guard=reask_guard, model="openai/stub", api_base=stub.base_url, api_key="sk-stub",
                    temperature=0.3)  # fmt: skip
    assert response.choices[0].message.content == BENIGN
    spans = finished(exporter, REASKED, "stub")
    assert_call(spans["guardrail.call"][0], reask_guard, integration="litellm", final="rewrite", streamed=False)
    first, again = spans["chat stub"]
    [reask] = spans["guardrail.reask"]
    assert again.parent is not None and again.parent.span_id == reask.context.span_id
    for span, n in ((first, before + 1), (again, before + 2)):
        a = assert_model(span, "stub", "openai")
        assert a["gen_ai.request.temperature"] == 0.3
        assert (a["gen_ai.response.id"], a["gen_ai.usage.input_tokens"]) == (f"chatcmpl-stub-{n}", 1)
    roles = [attrs(s)["guardrail.check.role"] for s in spans["guardrail.check"]]
    assert roles == ["answer", "revision"]


@twins
def test_litellm_stream_keeps_the_call_open_until_it_ends(
    use_async: bool, guard: Guard, exporter: InMemorySpanExporter
) -> None:
    chunks, _ = stream_chunks(use_async, guard=guard, mock_response=BENIGN)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == BENIGN
    spans = finished(exporter, STREAMED, MODEL)
    [parent], [model], checks = spans["guardrail.call"], spans[f"chat {MODEL}"], spans["guardrail.check"]
    assert_call(parent, guard, integration="litellm", final="allow", streamed=True)
    a = assert_model(model, MODEL, "openai")
    assert a["gen_ai.response.finish_reasons"] == ("stop",) and a["gen_ai.response.id"] == chunks[0].id
    # The model span covers the upstream stream; the window checks run under the call, which ends last.
    assert model.end_time is not None and parent.end_time is not None and model.end_time <= parent.end_time
    for check in checks:
        assert check.parent is not None and check.parent.span_id == parent.context.span_id
        assert check.end_time is not None and check.end_time <= parent.end_time


@twins
def test_litellm_blocked_stream(use_async: bool, guard: Guard, exporter: InMemorySpanExporter) -> None:
    stream_chunks(use_async, guard=guard, mock_response=HARMFUL)
    spans = finished(exporter, STREAMED_SHORT, MODEL)
    assert_call(spans["guardrail.call"][0], guard, integration="litellm", final="block", streamed=True)


def test_litellm_stream_closed_early_still_ends_its_spans(guard: Guard, exporter: InMemorySpanExporter) -> None:
    stream = completion(model=MODEL, messages=MESSAGES, mock_response=BENIGN, stream=True, guard=guard)
    stream.close()  # before the first chunk
    assert outline(exporter.get_finished_spans()) == ["guardrail.call", f"  chat {MODEL}"]
    [parent] = [s for s in exporter.get_finished_spans() if s.name == "guardrail.call"]
    assert attrs(parent)["guardrail.checked"] is False


def test_a_failing_model_call_fails_its_spans(guard: Guard, exporter: InMemorySpanExporter) -> None:
    with pytest.raises(litellm.InternalServerError):
        completion(model=MODEL, messages=MESSAGES, mock_response=Exception("upstream down"), guard=guard)
    spans = exporter.get_finished_spans()
    assert outline(spans) == ["guardrail.call", f"  chat {MODEL}"]
    for span in spans:
        assert span.status.status_code is StatusCode.ERROR
        assert attrs(span)["error.type"] == "InternalServerError"
        assert [e.name for e in span.events] == ["exception"]


def test_content_is_captured_only_when_asked_and_capped(
    scorer: Any, provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    guard = Guard(scorer=scorer, tracer_provider=provider, capture_content=True)
    long = "Rest. " * CONTENT_LIMIT
    history = [{"role": "user", "content": f"turn {n}"} for n in range(MESSAGES_LIMIT + 5)]
    completion(model=MODEL, messages=[*history, {"role": "user", "content": long}], mock_response=BENIGN, guard=guard)
    [model] = [s for s in exporter.get_finished_spans() if s.name == f"chat {MODEL}"]
    sent = json.loads(attrs(model)["gen_ai.input.messages"])
    assert len(sent) == MESSAGES_LIMIT and sent[-1]["role"] == "user"
    assert sent[-1]["parts"] == [{"type": "text", "content": long[:CONTENT_LIMIT]}]
    answer = json.loads(attrs(model)["gen_ai.output.messages"])
    assert answer == [{"role": "assistant", "parts": [{"type": "text", "content": BENIGN}], "finish_reason": "stop"}]


# -- LiteLLM proxy hooks ------------------------------------------------------------------------------


def proxy_hook(guard: Guard) -> ValueGuardrail:
    hook = ValueGuardrail(guardrail_name="values", event_hook="post_call", default_on=True, scorer=guard.scorer)
    hook.guard = guard  # the proxy builds its guard on the global provider; this one traces to the test's
    return hook


def test_proxy_post_call_hook_records_the_call_it_judges(guard: Guard, exporter: InMemorySpanExporter) -> None:
    hook = proxy_hook(guard)
    data = {"model": "support-model", "messages": MESSAGES, "metadata": {}, "temperature": 0.1}

    async def run() -> Any:
        answer = await litellm.acompletion(model=MODEL, messages=MESSAGES, mock_response=HARMFUL)
        return answer, await hook.async_post_call_success_hook(data, UserAPIKeyAuth(), answer)

    answer, response = asyncio.run(run())
    assert verdict_of(response).decision == "block"  # type: ignore[union-attr]
    spans = finished(exporter, CALL, "support-model")
    assert_call(spans["guardrail.call"][0], guard, integration="litellm.proxy", final="block", streamed=False)
    a = assert_model(spans["chat support-model"][0], "support-model", "openai")  # the alias the client asked for
    assert (a["gen_ai.response.model"], a["gen_ai.response.id"]) == (MODEL, answer.id)
    assert a["gen_ai.usage.output_tokens"] == answer.usage.completion_tokens
    assert a["gen_ai.request.temperature"] == 0.1
    assert attrs(spans["guardrail.check"][0])["guardrail.metadata.model"] == "support-model"


def test_proxy_stream_hook_records_the_stream_it_judges(guard: Guard, exporter: InMemorySpanExporter) -> None:
    hook = proxy_hook(guard)
    data = {"model": "support-model", "messages": MESSAGES, "metadata": {}, "stream": True}

    async def run() -> list[Any]:
        upstream = await litellm.acompletion(model=MODEL, messages=MESSAGES, mock_response=BENIGN, stream=True)
        return [c async for c in hook.async_post_call_streaming_iterator_hook(UserAPIKeyAuth(), upstream, data)]

    assert "".join(c.choices[0].delta.content or "" for c in asyncio.run(run()) if c.choices) == BENIGN
    spans = finished(exporter, STREAMED, "support-model")
    assert_call(spans["guardrail.call"][0], guard, integration="litellm.proxy", final="allow", streamed=True)
    a = assert_model(spans["chat support-model"][0], "support-model", "openai")
    assert a["gen_ai.response.finish_reasons"] == ("stop",)


# -- LangChain: GuardedChatModel -------------------------------------------------------------------------


class ChatNamedFake(GenericFakeChatModel):
    """A fake that names its model and temperature, as real chat models do (ls_provider: ``namedfake``)."""

    model_name: str = "fake-gpt"
    temperature: float = 0.4


def answer(text: str, n: int = 1) -> AIMessage:
    """An answer with the response metadata and usage a provider's chat model attaches."""
    return AIMessage(
        content=text, id=f"resp-{n}",
        response_metadata={"model_name": "fake-gpt-2025", "finish_reason": "stop"},
        usage_metadata={"input_tokens": 7, "output_tokens": 11, "total_tokens": 18},
    )  # fmt: skip


def invoke(model: Any, use_async: bool, text: str = PROMPT) -> Any:
    return asyncio.run(model.ainvoke(text)) if use_async else model.invoke(text)


@twins
def test_langchain_call_holds_the_model_call_and_the_check(
    use_async: bool, guard: Guard, exporter: InMemorySpanExporter
) -> None:
    model = GuardedChatModel(model=ChatNamedFake(messages=iter([answer(BENIGN)])), guard=guard)
    assert invoke(model, use_async).response_metadata["guardrail"]["decision"] == "allow"
    spans = finished(exporter, CALL, "fake-gpt")
    assert_call(spans["guardrail.call"][0], guard, integration="langchain", final="allow", streamed=False)
    a = assert_model(spans["chat fake-gpt"][0], "fake-gpt", "namedfake")
    assert a["gen_ai.request.temperature"] == 0.4
    assert (a["gen_ai.response.model"], a["gen_ai.response.id"]) == ("fake-gpt-2025", "resp-1")
    assert a["gen_ai.response.finish_reasons"] == ("stop",)
    assert (a["gen_ai.usage.input_tokens"], a["gen_ai.usage.output_tokens"]) == (7, 11)


@twins
def test_langchain_reasked_model_calls_nest_under_the_reask(
    use_async: bool, reask_guard: Guard, exporter: InMemorySpanExporter
) -> None:
    fake = ChatNamedFake(messages=iter([answer(HARMFUL, 1), answer(BENIGN, 2)]))
    assert invoke(GuardedChatModel(model=fake, guard=reask_guard), use_async).content == BENIGN
    spans = finished(exporter, REASKED, "fake-gpt")
    assert_call(spans["guardrail.call"][0], reask_guard, integration="langchain", final="rewrite", streamed=False)
    first, again = spans["chat fake-gpt"]
    assert again.parent is not None and again.parent.span_id == spans["guardrail.reask"][0].context.span_id
    assert [attrs(s)["gen_ai.response.id"] for s in (first, again)] == ["resp-1", "resp-2"]


@twins
def test_langchain_stream_keeps_the_call_open_until_it_ends(
    use_async: bool, guard: Guard, exporter: InMemorySpanExporter
) -> None:
    model = GuardedChatModel(model=ChatNamedFake(messages=iter([answer(BENIGN)])), guard=guard)
    if use_async:

        async def run() -> str:
            return "".join([str(c.content) async for c in model.astream(PROMPT)])

        text = asyncio.run(run())
    else:
        text = "".join(str(c.content) for c in model.stream(PROMPT))
    assert text == BENIGN
    spans = finished(exporter, STREAMED, "fake-gpt")
    [parent], [chat], checks = spans["guardrail.call"], spans["chat fake-gpt"], spans["guardrail.check"]
    assert_call(parent, guard, integration="langchain", final="allow", streamed=True)
    assert assert_model(chat, "fake-gpt", "namedfake")["gen_ai.response.id"] == "resp-1"
    assert all(c.parent is not None and c.parent.span_id == parent.context.span_id for c in checks)
    assert chat.end_time is not None and parent.end_time is not None and chat.end_time <= parent.end_time


PARTS = ["guardrail.call", "  chat {model}", "  guardrail.enforce", "    guardrail.check", "  guardrail.check",
         "  guardrail.check"]  # fmt: skip
# BENIGN in two windows, then the held-back reasoning (GenericFakeChatModel streams no tool calls)
STREAMED_PARTS = ["guardrail.call", "  chat {model}", "  guardrail.check", "  guardrail.check", "  guardrail.check"]


def parts_of(checks: Sequence[ReadableSpan]) -> list[tuple[Any, ...]]:
    """Each check's ``guardrail.output.*`` attributes and decision, in start order."""
    return [(a["guardrail.output.kind"], a["guardrail.output.choice"], a["guardrail.output.index"],
             a.get("guardrail.output.name"), a["guardrail.decision"]) for a in map(attrs, checks)]  # fmt: skip


def with_parts(text: str) -> AIMessage:
    """An answer with reasoning and a tool call beside its text."""
    return AIMessage(content=text, id="resp-1", additional_kwargs={"reasoning_content": "The user asks about sleep."},
                     tool_calls=[{"name": "get_tip", "args": {"topic": "sleep"}, "id": "call_1"}])  # fmt: skip


@twins
def test_langchain_each_part_is_checked_on_its_own_span(
    use_async: bool, provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    # The scorer reads the tool call as the prose it carries: "get tip: ...".
    fake = FakeScorer(fn=lambda p, r: ValueVector(benevolence=-0.9 if "get tip" in r else 0.0))
    parted = Guard(scorer=fake, tracer_provider=provider)
    answer = invoke(GuardedChatModel(model=ChatNamedFake(messages=iter([with_parts(BENIGN)])), guard=parted), use_async)
    assert answer.response_metadata["guardrail"]["part"]["kind"] == "tool_call" and not answer.tool_calls
    spans = finished(exporter, PARTS, "fake-gpt")
    assert parts_of(spans["guardrail.check"]) == [
        ("content", 0, 0, None, "allow"),
        ("reasoning", 0, 0, None, "allow"),
        ("tool_call", 0, 0, "get_tip", "block"),
    ]
    assert_call(spans["guardrail.call"][0], parted, integration="langchain", final="block", streamed=False)


def test_langchain_stream_checks_each_held_part_on_its_own_span(guard: Guard, exporter: InMemorySpanExporter) -> None:
    model = GuardedChatModel(model=ChatNamedFake(messages=iter([with_parts(BENIGN)])), guard=guard)
    chunks = list(model.stream(PROMPT))
    assert chunks[-1].response_metadata["guardrail"]["decision"] == "allow"
    spans = finished(exporter, STREAMED_PARTS, "fake-gpt")
    assert [p[:4] for p in parts_of(spans["guardrail.check"])] == [
        ("content", 0, 0, None),
        ("content", 0, 0, None),
        ("reasoning", 0, 0, None),
    ]
    assert_call(spans["guardrail.call"][0], guard, integration="langchain", final="allow", streamed=True)


# -- LangChain: agent middleware --------------------------------------------------------------------------


@twins
def test_agent_middleware_call_holds_the_model_call_and_the_check(
    use_async: bool, guard: Guard, exporter: InMemorySpanExporter
) -> None:
    agent = create_agent(ChatNamedFake(messages=iter([answer(HARMFUL)])), tools=[],
                         middleware=[ValueGuardrailMiddleware(guard)])  # fmt: skip
    state = {"messages": [HumanMessage(PROMPT)]}
    result = asyncio.run(agent.ainvoke(state)) if use_async else agent.invoke(state)
    assert result["messages"][-1].response_metadata["guardrail"]["decision"] == "block"
    spans = finished(exporter, CALL, "fake-gpt")
    assert_call(spans["guardrail.call"][0], guard, integration="langchain.agent", final="block", streamed=False)
    assert assert_model(spans["chat fake-gpt"][0], "fake-gpt", "namedfake")["gen_ai.usage.output_tokens"] == 11


def test_agent_middleware_reasks_through_the_handler(reask_guard: Guard, exporter: InMemorySpanExporter) -> None:
    fake = ChatNamedFake(messages=iter([answer(HARMFUL, 1), answer(BENIGN, 2)]))
    agent = create_agent(fake, tools=[], middleware=[ValueGuardrailMiddleware(reask_guard)])
    assert agent.invoke({"messages": [HumanMessage(PROMPT)]})["messages"][-1].content == BENIGN
    spans = finished(exporter, REASKED, "fake-gpt")
    assert_call(spans["guardrail.call"][0], reask_guard, integration="langchain.agent", final="rewrite",
                streamed=False)  # fmt: skip


def test_agent_middleware_stream(guard: Guard, exporter: InMemorySpanExporter) -> None:
    agent = create_agent(ChatNamedFake(messages=iter([answer(BENIGN)])), tools=[],
                         middleware=[ValueGuardrailMiddleware(guard)])  # fmt: skip
    chunks = list(agent.stream({"messages": [HumanMessage(PROMPT)]}, stream_mode="messages"))
    assert "".join(str(m.content) for m, _ in chunks) == BENIGN
    spans = finished(exporter, STREAMED, "fake-gpt")
    assert_call(spans["guardrail.call"][0], guard, integration="langchain.agent", final="allow", streamed=True)


def test_provider_names_follow_the_conventions() -> None:
    assert [provider_name(p) for p in ("openai", "bedrock", "azure", "google_vertexai", "Anthropic")] == [
        "openai", "aws.bedrock", "azure.ai.openai", "gcp.vertex_ai", "anthropic"]  # fmt: skip
