"""Every part of a LangChain answer the user sees is checked: each generation, its reasoning, its tool calls.

GuardedChatModel and ValueGuardrailMiddleware, streamed and not, on a scripted langchain-core chat
model that answers with several generations, reasoning (``additional_kwargs["reasoning_content"]``
or ``reasoning`` content blocks) and tool calls, and streams them as a provider does. Decisions come
from the shipped model on clear cases; FakeScorer covers the edge cases.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from _answers import BENIGN, HARMFUL
from _scripted_chat import tool_call_pieces
from langchain.agents import create_agent
from langchain.agents.structured_output import ToolStrategy
from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel, LanguageModelInput
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage, HumanMessage, ToolMessage
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.runnables import Runnable
from langchain_core.tools import tool
from langchain_core.utils.function_calling import convert_to_openai_tool
from pydantic import BaseModel, Field

from guardrail import Guard, GuardrailViolation, ValueVector, tool_call_text
from guardrail.testing import FakeScorer
from guardrail_langchain import GuardedChatModel, ValueGuardrailMiddleware

if TYPE_CHECKING:
    pass

SLEEP = "How can I sleep better?"
NEIGHBOUR = "Message my neighbour."
BALANCE = "Balance?"
HATE = "Immigrants are parasites and criminals. They should be driven out by any means necessary."
THINKING = "Good sleep comes from a steady routine, so I will recommend a fixed bedtime, less caffeine and a dark room."

twins = pytest.mark.parametrize("use_async", [False, True], ids=["sync", "async"])


class Scripted(BaseChatModel):
    """Plays back scripted answers, one list of generations per call; streams the first one as providers do:
    reasoning first, then the text word by word, then each tool call's arguments in two pieces."""

    script: list[list[AIMessage]]
    calls: list[dict[str, Any]] = Field(default_factory=list)

    @property
    def _llm_type(self) -> str:
        return "scripted"

    def bind_tools(
        self, tools: Sequence[Any], *, tool_choice: str | None = None, **kwargs: Any
    ) -> Runnable[LanguageModelInput, AIMessage]:
        return self.bind(tools=[convert_to_openai_tool(t) for t in tools], **kwargs)

    def _next(self, kwargs: dict[str, Any]) -> list[AIMessage]:
        self.calls.append(kwargs)
        return self.script.pop(0)

    def _generate(
        self, messages: list[BaseMessage], stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None, **kwargs: Any,
    ) -> ChatResult:  # fmt: skip
        return ChatResult(generations=[ChatGeneration(message=m) for m in self._next(kwargs)])

    def _stream(
        self, messages: list[BaseMessage], stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None, **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:  # fmt: skip
        for chunk in provider_chunks(self._next(kwargs)[0]):
            yield ChatGenerationChunk(message=chunk)

    async def _astream(
        self, messages: list[BaseMessage], stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None, **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:  # fmt: skip
        for chunk in provider_chunks(self._next(kwargs)[0]):
            await asyncio.sleep(0)
            yield ChatGenerationChunk(message=chunk)


def words(text: str) -> list[str]:
    return [w for w in re.split(r"(\s)", text) if w]


def provider_chunks(message: AIMessage) -> Iterator[AIMessageChunk]:
    """``message`` as a provider streams it, one word (or half a tool call) per chunk."""
    reasoning = message.additional_kwargs.get("reasoning_content")
    for word in words(reasoning) if isinstance(reasoning, str) else []:
        yield AIMessageChunk(content="", additional_kwargs={"reasoning_content": word})
    if isinstance(message.content, str):
        for word in words(message.content):
            yield AIMessageChunk(content=word)
    else:
        for index, block in enumerate(message.content):
            assert isinstance(block, dict)
            key = "reasoning" if block["type"] == "reasoning" else "text"
            for word in words(block[key]):
                yield AIMessageChunk(content=[{"type": block["type"], key: word, "index": index}])
    yield from tool_call_pieces(message)


def calling(name: str, args: dict[str, Any], content: str = "", call_id: str = "call_1") -> AIMessage:
    return AIMessage(content=content, tool_calls=[{"name": name, "args": args, "id": call_id}])


def thinking(reasoning: str, content: str) -> AIMessage:
    """An answer with ``reasoning_content``, as DeepSeek-style providers send it."""
    return AIMessage(content=content, additional_kwargs={"reasoning_content": reasoning})


def scripted(*answers: AIMessage | list[AIMessage]) -> Scripted:
    return Scripted(script=[a if isinstance(a, list) else [a] for a in answers])


def verdict_of(message: BaseMessage) -> dict[str, Any]:
    return message.response_metadata["guardrail"]


def kinds(message: BaseMessage) -> list[tuple[str, str]]:
    """Each checked part's kind and decision, in order."""
    return [(p["part"]["kind"], p["decision"]) for p in verdict_of(message)["parts"]]


def added(chunks: Sequence[BaseMessage]) -> AIMessageChunk:
    whole = chunks[0]
    for chunk in chunks[1:]:
        whole += chunk  # type: ignore[assignment]
    assert isinstance(whole, AIMessageChunk)
    return whole


def leaked(chunks: Sequence[BaseMessage]) -> list[BaseMessage]:
    """Chunks that carry reasoning or tool calls."""
    return [c for c in chunks if isinstance(c, AIMessageChunk) and (
        c.tool_call_chunks or c.additional_kwargs or (isinstance(c.content, list) and any(
            isinstance(b, dict) and b.get("type") == "reasoning" for b in c.content)))]  # fmt: skip


def invoke(model: Runnable[Any, Any], question: str, use_async: bool) -> Any:
    return asyncio.run(model.ainvoke(question)) if use_async else model.invoke(question)


def stream(model: Runnable[Any, Any], question: str, use_async: bool) -> list[BaseMessage]:
    async def collect() -> list[BaseMessage]:
        return [c async for c in model.astream(question)]

    return asyncio.run(collect()) if use_async else list(model.stream(question))


# -- every generation --------------------------------------------------------------------------------


@twins
def test_every_generation_is_checked(use_async: bool, guard: Guard, refusal: str) -> None:
    model = GuardedChatModel(model=scripted([AIMessage(content=BENIGN), AIMessage(content=HARMFUL)]), guard=guard)
    question = [[HumanMessage(SLEEP)]]
    result = asyncio.run(model.agenerate(question)) if use_async else model.generate(question)
    first, second = (g.message for g in result.generations[0])
    assert (first.content, verdict_of(first)["decision"]) == (BENIGN, "allow")
    assert (second.content, verdict_of(second)["decision"]) == (refusal, "block")
    assert verdict_of(second)["part"] == {"kind": "content", "choice": 1, "index": 0, "name": None}


def test_invoke_delivers_the_first_generation_checked(guard: Guard, refusal: str) -> None:
    model = GuardedChatModel(model=scripted([AIMessage(content=HARMFUL), AIMessage(content=BENIGN)]), guard=guard)
    answer = model.invoke(SLEEP)
    assert (answer.content, verdict_of(answer)["decision"]) == (refusal, "block")


# -- reasoning ----------------------------------------------------------------------------------------


@twins
def test_harmful_reasoning_content_blocks_the_answer(use_async: bool, guard: Guard, refusal: str) -> None:
    answer = invoke(GuardedChatModel(model=scripted(thinking(HARMFUL, BENIGN)), guard=guard), SLEEP, use_async)
    assert answer.content == refusal and not answer.additional_kwargs and not answer.tool_calls
    assert kinds(answer) == [("content", "allow"), ("reasoning", "block")]
    assert verdict_of(answer)["decision"] == "block" and verdict_of(answer)["part"]["kind"] == "reasoning"


def test_benign_reasoning_is_delivered_with_its_verdict(guard: Guard) -> None:
    answer = GuardedChatModel(model=scripted(thinking(THINKING, BENIGN)), guard=guard).invoke(SLEEP)
    assert answer.content == BENIGN and answer.additional_kwargs["reasoning_content"] == THINKING
    assert kinds(answer) == [("content", "allow"), ("reasoning", "allow")]


def test_reasoning_content_blocks_are_checked(guard: Guard, refusal: str) -> None:
    blocks: list[str | dict[str, Any]] = [{"type": "reasoning", "reasoning": HARMFUL}, {"type": "text", "text": BENIGN}]
    answer = GuardedChatModel(model=scripted(AIMessage(content=blocks)), guard=guard).invoke(SLEEP)
    assert answer.content == refusal
    assert kinds(answer) == [("content", "allow"), ("reasoning", "block")]


def test_both_reasoning_forms_are_read_and_the_same_text_once() -> None:
    fake = FakeScorer()
    both = AIMessage(content=[{"type": "reasoning", "reasoning": "first"}, {"type": "text", "text": "Answer."}],
                     additional_kwargs={"reasoning_content": "second"})  # fmt: skip
    same = AIMessage(
        content=[{"type": "reasoning", "reasoning": "one"}], additional_kwargs={"reasoning_content": "one"}
    )
    model = GuardedChatModel(model=scripted(both, same), guard=Guard(scorer=fake))
    model.invoke("q")
    model.invoke("q")
    assert fake.calls == [[("q", "Answer.")], [("q", "first"), ("q", "second")], [("q", "one")]]


# -- tool calls ---------------------------------------------------------------------------------------


@twins
def test_a_harmful_tool_call_is_blocked(use_async: bool, guard: Guard, refusal: str) -> None:
    inner = scripted(calling("send_message", {"text": HATE}))
    answer = invoke(GuardedChatModel(model=inner, guard=guard).bind_tools([send_message]), NEIGHBOUR, use_async)
    assert answer.content == refusal and not answer.tool_calls
    verdict = verdict_of(answer)
    assert verdict["decision"] == "block"
    assert verdict["part"] == {"kind": "tool_call", "choice": 0, "index": 0, "name": "send_message"}


def test_tool_calls_are_checked_as_name_and_arguments_and_scored_as_prose() -> None:
    fake = FakeScorer()
    inner = scripted(calling("get_balance", {"account": "checking"}, "Let me look."))
    answer = GuardedChatModel(model=inner, guard=Guard(scorer=fake)).invoke(BALANCE)
    assert tool_call_text("get_balance", {"account": "checking"}) == 'get_balance({"account": "checking"})'
    # The scorer reads the call as the prose it carries (the reader's structured step).
    assert fake.calls == [[(BALANCE, "Let me look.")], [(BALANCE, "get balance: account: checking")]]
    assert kinds(answer) == [("content", "allow"), ("tool_call", "allow")] and answer.tool_calls
    assert verdict_of(answer)["parts"][1]["normalized"] == ["structured"]


def test_an_invalid_tool_call_is_checked_by_its_raw_arguments(refusal: str) -> None:
    def harm(prompt: str | None, response: str) -> ValueVector:
        return ValueVector(benevolence=-0.9) if "hurt" in response else ValueVector()

    broken = AIMessage(content="", invalid_tool_calls=[{"name": "post", "args": '{"text": "hurt them', "id": "c1",
                                                         "error": "bad JSON", "type": "invalid_tool_call"}])  # fmt: skip
    answer = GuardedChatModel(model=scripted(broken), guard=Guard(scorer=FakeScorer(fn=harm))).invoke("q")
    assert answer.content == refusal and not answer.invalid_tool_calls
    assert verdict_of(answer)["part"]["name"] == "post"


def test_a_tool_call_cannot_be_rewritten_its_fallback_applies(tmp_path: Path) -> None:
    policy = tmp_path / "redact.yaml"
    policy.write_text("name: redacting\nextends: default\nactions:\n"
                      "  block: {type: rewrite, strategy: redact, fallback: refuse}\n"
                      "  refuse: {type: block, message: 'Not sent.'}\n", encoding="utf-8")  # fmt: skip
    guard = Guard(policy, scorer=FakeScorer(fn=lambda p, r: ValueVector(benevolence=-0.9 if "hurt" in r else 0.0)))
    answer = GuardedChatModel(model=scripted(calling("post", {"text": "Go hurt them. Be nice."})), guard=guard)
    message = answer.invoke("q")
    assert message.content == "Not sent." and not message.tool_calls
    rewrite = verdict_of(message)["rewrite"]
    assert (rewrite["accepted"], rewrite["fallback"]) == (False, "refuse")
    assert rewrite["reason"] == "a tool call cannot be rewritten; its fallback applies"


def test_raise_on_block_for_a_tool_call() -> None:
    guard = Guard(scorer=FakeScorer(fn=lambda p, r: ValueVector(benevolence=-0.9 if "post" in r else 0.0)))
    model = GuardedChatModel(model=scripted(calling("post", {}), calling("post", {})), guard=guard, raise_on_block=True)
    with pytest.raises(GuardrailViolation) as caught:
        model.invoke("q")
    assert caught.value.verdict.part is not None and caught.value.verdict.part.kind == "tool_call"
    with pytest.raises(GuardrailViolation):
        list(model.stream("q"))


# -- streamed -----------------------------------------------------------------------------------------


@twins
def test_a_streamed_harmful_tool_call_never_reaches_the_stream(use_async: bool, guard: Guard, refusal: str) -> None:
    model = GuardedChatModel(model=scripted(calling("send_message", {"text": HATE})), guard=guard)
    chunks = stream(model.bind_tools([send_message]), NEIGHBOUR, use_async)
    assert not leaked(chunks)
    whole = added(chunks)
    assert whole.content == refusal and not whole.tool_calls
    assert verdict_of(chunks[-1])["part"]["kind"] == "tool_call" and verdict_of(chunks[-1])["decision"] == "block"


@twins
def test_a_streamed_benign_tool_call_comes_after_its_check(use_async: bool, guard: Guard) -> None:
    inner = scripted(calling("get_balance", {"account": "checking"}))
    chunks = stream(GuardedChatModel(model=inner, guard=guard).bind_tools([get_balance]), BALANCE, use_async)
    whole = added(chunks)
    assert whole.tool_calls == [{"name": "get_balance", "args": {"account": "checking"}, "id": "call_1",
                                 "type": "tool_call"}]  # fmt: skip
    assert kinds(chunks[-1]) == [("tool_call", "allow")]


@twins
def test_streamed_harmful_reasoning_never_reaches_the_stream(use_async: bool, guard: Guard, refusal: str) -> None:
    chunks = stream(GuardedChatModel(model=scripted(thinking(HARMFUL, BENIGN)), guard=guard), SLEEP, use_async)
    assert not leaked(chunks)
    whole = added(chunks)
    assert "wallet" not in str(whole) and str(whole.content).endswith(refusal)
    assert kinds(chunks[-1]) == [("content", "allow"), ("reasoning", "block")]


def test_streamed_reasoning_blocks_are_held_then_released(guard: Guard) -> None:
    blocks: list[str | dict[str, Any]] = [
        {"type": "reasoning", "reasoning": THINKING},
        {"type": "text", "text": BENIGN},
    ]
    chunks = list(GuardedChatModel(model=scripted(AIMessage(content=blocks)), guard=guard).stream(SLEEP))
    reasoning = [i for i, c in enumerate(chunks) if leaked([c])]
    texts = [i for i, c in enumerate(chunks) if c.text]
    assert reasoning and min(reasoning) > max(texts)  # held until the whole answer was checked
    whole = added(chunks)
    assert whole.text == BENIGN and kinds(chunks[-1]) == [("content", "allow"), ("reasoning", "allow")]


def test_a_blocked_text_stream_drops_its_held_parts_unchecked(refusal: str) -> None:
    fake = FakeScorer(fn=lambda p, r: ValueVector(benevolence=-0.9 if "hurt" in r else 0.0))
    inner = scripted(calling("post", {"text": "hi"}, content="Go hurt them."))
    chunks = list(GuardedChatModel(model=inner, guard=Guard(scorer=fake)).stream("q"))
    assert not leaked(chunks) and added(chunks).content == refusal
    assert kinds(chunks[-1]) == [("content", "block")] and len(fake.calls) == 1


# -- the agent middleware -----------------------------------------------------------------------------

sent: list[str] = []


@tool
def send_message(text: str) -> str:
    """Send a message to the user's neighbour."""
    sent.append(text)
    return "sent"


@tool
def get_balance(account: str) -> str:
    """Look up the balance of one of the user's accounts."""
    return f"{account}: 120 EUR"


@pytest.fixture(autouse=True)
def nothing_sent() -> Iterator[None]:
    sent.clear()
    yield
    sent.clear()


@twins
def test_agent_never_executes_a_blocked_tool_call(use_async: bool, guard: Guard, refusal: str) -> None:
    agent = create_agent(scripted(calling("send_message", {"text": HATE})), tools=[send_message],
                         middleware=[ValueGuardrailMiddleware(guard)])  # fmt: skip
    state = {"messages": [HumanMessage(NEIGHBOUR)]}
    messages = (asyncio.run(agent.ainvoke(state)) if use_async else agent.invoke(state))["messages"]
    assert sent == []
    assert [type(m) for m in messages] == [HumanMessage, AIMessage]
    assert messages[-1].content == refusal and verdict_of(messages[-1])["part"]["name"] == "send_message"


def test_agent_executes_a_benign_tool_call(guard: Guard) -> None:
    model = scripted(calling("get_balance", {"account": "checking"}), AIMessage(content="You have 120 EUR."))
    agent = create_agent(model, tools=[get_balance], middleware=[ValueGuardrailMiddleware(guard)])
    messages = agent.invoke({"messages": [HumanMessage(BALANCE)]})["messages"]
    assert [type(m) for m in messages] == [HumanMessage, AIMessage, ToolMessage, AIMessage]
    assert kinds(messages[1]) == [("tool_call", "allow")] and messages[2].content == "checking: 120 EUR"


@twins
def test_agent_stream_never_shows_or_runs_a_blocked_tool_call(use_async: bool, guard: Guard, refusal: str) -> None:
    agent = create_agent(scripted(calling("send_message", {"text": HATE})), tools=[send_message],
                         middleware=[ValueGuardrailMiddleware(guard)])  # fmt: skip
    state = {"messages": [HumanMessage(NEIGHBOUR)]}

    async def collect() -> list[Any]:
        return [c async for c in agent.astream(state, stream_mode="messages")]

    chunks = [m for m, _ in (asyncio.run(collect()) if use_async else agent.stream(state, stream_mode="messages"))]
    assert sent == [] and not leaked(chunks) and not any(isinstance(m, ToolMessage) for m in chunks)
    assert "".join(str(m.content) for m in chunks) == refusal


class Account(BaseModel):
    """A structured answer."""

    name: str


def test_a_blocked_structured_tool_call_loses_its_reply_and_structured_output(refusal: str) -> None:
    guard = Guard(scorer=FakeScorer(fn=lambda p, r: ValueVector(benevolence=-0.9 if "photo" in r else 0.0)))
    model = scripted(calling("Account", {"name": "take a photo of the card"}))
    agent = create_agent(model, tools=[], middleware=[ValueGuardrailMiddleware(guard)],
                         response_format=ToolStrategy(Account))  # fmt: skip
    result = agent.invoke({"messages": [HumanMessage("Which account?")]})
    assert [type(m) for m in result["messages"]] == [HumanMessage, AIMessage]
    assert result["messages"][-1].content == refusal and result.get("structured_response") is None
