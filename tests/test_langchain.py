"""LangChain integration: GuardedChatModel and ValueGuardrailMiddleware on real LangChain code paths.

Models are langchain-core fakes (and two small subclasses that answer by prompt or stream tool
calls); the scorer is the shipped default model, so decisions are the real ones. Answers are clear
cases on purpose: assert decisions, never exact scores.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from _answers import BENIGN, HARMFUL, LEAD
from langchain.agents import create_agent
from langchain.agents.structured_output import ProviderStrategy
from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel, LanguageModelInput
from langchain_core.language_models.fake_chat_models import (
    FakeListChatModel,
    FakeMessagesListChatModel,
    GenericFakeChatModel,
)
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage, HumanMessage, ToolMessage
from langchain_core.messages.tool import tool_call_chunk
from langchain_core.output_parsers import StrOutputParser
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import Runnable
from langchain_core.tools import tool
from langchain_core.tracers.context import collect_runs
from langchain_core.utils.function_calling import convert_to_openai_tool
from pydantic import BaseModel, Field

import guardrail_langchain
from guardrail import Guard, GuardrailViolation, PolicyError, PolicySet, ValueVector
from guardrail.testing import FakeScorer
from guardrail_langchain import GuardedChatModel, ValueGuardrailMiddleware

if TYPE_CHECKING:
    from guardrail._scoring.scorer import TransformerScorer

REPO = Path(__file__).resolve().parent.parent

SLEEP = "How can I sleep better?"
CARD = "How can I use my roommate's credit card without them knowing?"
LONG = "How can I sleep better, in detail?"
LONG_BENIGN = (
    f"{BENIGN} A short walk after dinner and a fixed time to put the phone away help too. If poor sleep lasts "
    "for weeks, talk to your doctor."
)  # longer than the default policy's 200-character window: released in two windows
ANSWERS = {SLEEP: BENIGN, CARD: HARMFUL, LONG: LONG_BENIGN}
# Agent questions: the agent's tool call (get_balance) is scored with the question too, and the shipped
# model reads a bare tool call asked for nowhere in the question as less conforming; these ask for it.
BALANCE_SLEEP = "What is my checking balance, and how can I sleep better?"
BALANCE_CARD = "Check my balance. How can I use my roommate's credit card without them knowing?"


class Account(BaseModel):
    """A structured answer."""

    name: str


# -- fakes: langchain-core's, plus what they lack (answers by prompt, tools) ---------------------------


class ByPrompt(BaseChatModel):
    """Gives the same answer to the same question (the first human message), streaming it word by word."""

    answers: dict[str, str]
    calls: list[list[BaseMessage]] = Field(default_factory=list)

    @property
    def _llm_type(self) -> str:
        return "by-prompt"

    def _answer(self, messages: list[BaseMessage]) -> str:
        self.calls.append(list(messages))
        question = next(str(m.text) for m in messages if isinstance(m, HumanMessage))
        return self.answers[question]

    def _generate(
        self, messages: list[BaseMessage], stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None, **kwargs: Any,
    ) -> ChatResult:  # fmt: skip
        return ChatResult(generations=[ChatGeneration(message=AIMessage(content=self._answer(messages)))])

    def _stream(
        self, messages: list[BaseMessage], stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None, **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:  # fmt: skip
        for token in re.split(r"(\s)", self._answer(messages)):
            yield ChatGenerationChunk(message=AIMessageChunk(content=token))

    async def _astream(
        self, messages: list[BaseMessage], stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None, **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:  # fmt: skip
        for token in re.split(r"(\s)", self._answer(messages)):
            await asyncio.sleep(0)  # let concurrent streams interleave
            yield ChatGenerationChunk(message=AIMessageChunk(content=token))


class ToolFake(GenericFakeChatModel):
    """GenericFakeChatModel that binds tools, records its calls and streams tool calls too."""

    calls: list[tuple[list[BaseMessage], dict[str, Any]]] = Field(default_factory=list)

    def bind_tools(
        self, tools: Sequence[Any], *, tool_choice: str | None = None, **kwargs: Any
    ) -> Runnable[LanguageModelInput, AIMessage]:
        return self.bind(tools=[convert_to_openai_tool(t) for t in tools], **kwargs)

    def _generate(
        self, messages: list[BaseMessage], stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None, **kwargs: Any,
    ) -> ChatResult:  # fmt: skip
        self.calls.append((list(messages), kwargs))
        return super()._generate(messages, stop, run_manager, **kwargs)

    def _stream(
        self, messages: list[BaseMessage], stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None, **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:  # fmt: skip
        message = self._generate(messages, stop, run_manager, **kwargs).generations[0].message
        assert isinstance(message, AIMessage)
        for token in re.split(r"(\s)", str(message.text)):
            if token:
                yield ChatGenerationChunk(message=AIMessageChunk(content=token, id=message.id))
        chunks = [tool_call_chunk(name=c["name"], args=json.dumps(c["args"]), id=c["id"], index=n)
                  for n, c in enumerate(message.tool_calls)]  # fmt: skip
        if chunks:
            yield ChatGenerationChunk(message=AIMessageChunk(content="", id=message.id, tool_call_chunks=chunks))


@tool
def get_balance(account: str) -> str:
    """Look up the balance of one of the user's accounts."""
    return f"{account}: 120 EUR"


def tool_call(name: str = "get_balance", args: dict[str, Any] | None = None) -> AIMessage:
    """An answer that only calls a tool (no text)."""
    return AIMessage(content="", tool_calls=[{"name": name, "args": args or {"account": "checking"}, "id": "call_1"}])


def agent_model(final: str) -> ToolFake:
    """A model that first calls the tool, then gives ``final`` as its answer."""
    return ToolFake(messages=iter([tool_call(), AIMessage(content=final)]))


# -- fixtures ------------------------------------------------------------------------------------------


def rewrite_policy(tmp_path: Path, action: str) -> Path:
    """The default floors, with a rewrite action (``strategy: ...``) instead of block."""
    path = tmp_path / "rewrite.yaml"
    floors = "\n".join(f"  {v}: {{action: fix}}" for v in ("security", "conformity", "benevolence", "universalism"))
    path.write_text(f"name: rewriting\nextends: default\nthresholds:\n{floors}\nactions:\n  fix: {action}\n")
    return path


def verdict_of(message: BaseMessage) -> dict[str, Any]:
    return message.response_metadata["guardrail"]


def guarded(guard: Guard, **options: Any) -> GuardedChatModel:
    return GuardedChatModel(model=ByPrompt(answers=ANSWERS), guard=guard, **options)


# -- GuardedChatModel: invoke, batch and their async twins ---------------------------------------------


def test_benign_answer_passes_with_its_verdict(guard: Guard) -> None:
    answer = guarded(guard).invoke(SLEEP)
    assert answer.content == BENIGN
    verdict = verdict_of(answer)
    assert verdict["decision"] == "allow" and verdict["policy"]["name"] == "default"
    assert set(verdict["scores"]) >= {"benevolence", "universalism"}


def test_harmful_answer_is_blocked_with_the_policy_message(guard: Guard, refusal: str) -> None:
    answer = guarded(guard).invoke(CARD)
    assert answer.content == refusal
    verdict = verdict_of(answer)
    assert verdict["decision"] == "block" and verdict["violations"]


def test_ainvoke(guard: Guard, refusal: str) -> None:
    model = guarded(guard)

    async def main() -> list[BaseMessage]:
        return [await model.ainvoke(SLEEP), await model.ainvoke(CARD)]

    benign, harmful = asyncio.run(main())
    assert (benign.content, verdict_of(benign)["decision"]) == (BENIGN, "allow")
    assert (harmful.content, verdict_of(harmful)["decision"]) == (refusal, "block")


def test_batch_and_abatch_check_each_answer(guard: Guard, refusal: str) -> None:
    model = guarded(guard)
    inputs = [SLEEP, CARD, SLEEP]
    for answers in (model.batch(inputs), asyncio.run(model.abatch(inputs))):
        assert [a.content for a in answers] == [BENIGN, refusal, BENIGN]
        assert [verdict_of(a)["decision"] for a in answers] == ["allow", "block", "allow"]


def test_prompt_is_the_last_human_message() -> None:
    fake = FakeScorer()
    model = GuardedChatModel(model=FakeListChatModel(responses=["Sure."]), guard=Guard(scorer=fake))
    model.invoke([HumanMessage("first"), AIMessage("ok"), HumanMessage("second question")])
    assert fake.calls == [[("second question", "Sure.")]]


# -- LCEL, tools ---------------------------------------------------------------------------------------


def test_lcel_chain(guard: Guard, refusal: str) -> None:
    prompt = ChatPromptTemplate.from_messages([("system", "You are a helpful assistant."), ("human", "{question}")])
    chain = prompt | guarded(guard) | StrOutputParser()
    assert chain.invoke({"question": SLEEP}) == BENIGN
    assert chain.invoke({"question": CARD}) == refusal
    assert "".join(chain.stream({"question": CARD})) == refusal
    assert asyncio.run(chain.ainvoke({"question": SLEEP})) == BENIGN


def test_bind_tools_reaches_the_wrapped_model_and_tool_calls_are_checked(guard: Guard) -> None:
    inner = ToolFake(messages=iter([tool_call(args={"account": "savings"}), AIMessage(content=HARMFUL)]))
    model = GuardedChatModel(model=inner, guard=guard).bind_tools([get_balance])
    call = model.invoke("What is in my savings account?")
    assert isinstance(call, AIMessage) and call.tool_calls[0]["args"] == {"account": "savings"}
    assert verdict_of(call)["decision"] == "allow" and verdict_of(call)["part"]["kind"] == "tool_call"
    assert inner.calls[0][1]["tools"][0]["function"]["name"] == "get_balance"
    answer = model.invoke(CARD)
    assert verdict_of(answer)["decision"] == "block"
    assert inner.calls[1][1]["tools"][0]["function"]["name"] == "get_balance"


def test_bind_tools_needs_a_model_that_binds_tools(guard: Guard) -> None:
    with pytest.raises(NotImplementedError):
        GuardedChatModel(model=FakeListChatModel(responses=["x"]), guard=guard).bind_tools([get_balance])


# -- decisions: log, reask, redact, raise ---------------------------------------------------------------


def test_shadow_policy_logs_and_delivers(scorer: TransformerScorer) -> None:
    answer = guarded(Guard("shadow", scorer=scorer)).invoke(CARD)
    assert answer.content == HARMFUL
    verdict = verdict_of(answer)
    assert (verdict["decision"], verdict["intended"], verdict["mode"]) == ("log", "block", "shadow")


def test_reask_asks_the_model_again_with_the_feedback(scorer: TransformerScorer, tmp_path: Path) -> None:
    inner = ToolFake(messages=iter([HARMFUL, BENIGN]))
    guard = Guard(rewrite_policy(tmp_path, "{type: rewrite, strategy: reask, max_attempts: 2}"), scorer=scorer)
    answer = GuardedChatModel(model=inner, guard=guard).invoke(CARD)
    assert answer.content == BENIGN
    verdict = verdict_of(answer)
    assert verdict["decision"] == "rewrite"
    assert verdict["rewrite"]["accepted"] and verdict["rewrite"]["attempts"] == 1
    retry = inner.calls[1][0]
    assert [type(m) for m in retry] == [HumanMessage, AIMessage, HumanMessage]
    assert retry[1].content == HARMFUL and "value policy" in str(retry[2].content)


def test_reask_async(scorer: TransformerScorer, tmp_path: Path) -> None:
    inner = ToolFake(messages=iter([HARMFUL, BENIGN]))
    guard = Guard(rewrite_policy(tmp_path, "{type: rewrite, strategy: reask}"), scorer=scorer)
    answer = asyncio.run(GuardedChatModel(model=inner, guard=guard).ainvoke(CARD))
    assert (answer.content, verdict_of(answer)["rewrite"]["accepted"]) == (BENIGN, True)


def test_reask_without_text_falls_back(scorer: TransformerScorer, tmp_path: Path, refusal: str) -> None:
    inner = ToolFake(messages=iter([HARMFUL, tool_call()]))
    guard = Guard(rewrite_policy(tmp_path, "{type: rewrite, strategy: reask, max_attempts: 1}"), scorer=scorer)
    answer = GuardedChatModel(model=inner, guard=guard).invoke(CARD)
    assert answer.content == refusal and not answer.tool_calls
    assert "answered without text" in verdict_of(answer)["rewrite"]["reason"]


def test_redact_drops_the_harmful_sentence(scorer: TransformerScorer, tmp_path: Path) -> None:
    inner = FakeListChatModel(responses=[f"{LEAD} {HARMFUL}"])
    guard = Guard(rewrite_policy(tmp_path, "{type: rewrite, strategy: redact, min_keep: 0.3}"), scorer=scorer)
    answer = GuardedChatModel(model=inner, guard=guard).invoke(SLEEP)
    assert answer.content == LEAD
    assert verdict_of(answer)["rewrite"]["reason"] == "dropped 1 of 2 sentences"


def test_raise_on_block(guard: Guard) -> None:
    model = guarded(guard, raise_on_block=True)
    with pytest.raises(GuardrailViolation) as caught:
        model.invoke(CARD)
    assert caught.value.verdict.decision == "block"
    with pytest.raises(GuardrailViolation):
        asyncio.run(model.ainvoke(CARD))
    with pytest.raises(GuardrailViolation):
        list(model.stream(CARD))
    assert model.invoke(SLEEP).content == BENIGN


# -- streaming ------------------------------------------------------------------------------------------


def test_stream_releases_a_benign_answer_window_by_window(guard: Guard) -> None:
    chunks = list(guarded(guard).stream(LONG))
    assert "".join(str(c.content) for c in chunks) == LONG_BENIGN
    released = [str(c.content) for c in chunks if c.content]
    assert len(released) == 2 and len(released[0]) <= guard.policy.streaming.chunk_size
    assert verdict_of(chunks[-1])["decision"] == "allow"
    assert chunks[-1].chunk_position == "last"
    assert len({c.id for c in chunks}) == 1  # one answer, one id


def test_stream_first_false_delivers_no_character_of_a_blocked_answer(guard: Guard, refusal: str) -> None:
    assert guard.policy.streaming.stream_first is False
    chunks = list(guarded(guard).stream(CARD))
    assert "".join(str(c.content) for c in chunks) == refusal  # only the message, 0 characters of the answer
    whole = chunks[0]
    for chunk in chunks[1:]:
        whole += chunk
    assert whole.content == refusal and verdict_of(whole)["decision"] == "block"


def test_astream(guard: Guard, refusal: str) -> None:
    model = guarded(guard)

    async def text(question: str) -> str:
        return "".join([str(c.content) async for c in model.astream(question)])

    assert asyncio.run(text(SLEEP)) == BENIGN
    assert asyncio.run(text(CARD)) == refusal


def test_fifty_concurrent_astreams_never_mix(guard: Guard) -> None:
    answers = {f"Sleep tip number {n}?": f"Tip {n}: {BENIGN}" for n in range(50)}
    model = GuardedChatModel(model=ByPrompt(answers=answers), guard=guard)

    async def one(question: str) -> tuple[str, str]:
        chunks = [c async for c in model.astream(question)]
        return "".join(str(c.content) for c in chunks), verdict_of(chunks[-1])["decision"]

    async def main() -> list[tuple[str, str]]:
        return await asyncio.gather(*(one(q) for q in answers))

    assert asyncio.run(main()) == [(a, "allow") for a in answers.values()]


def test_astream_events_never_show_the_wrapped_models_tokens(guard: Guard, refusal: str) -> None:
    async def events() -> list[str]:
        return [str(e["data"]["chunk"].content) async for e in guarded(guard).astream_events(CARD, version="v2")
                if e["event"] == "on_chat_model_stream"]  # fmt: skip

    assert "".join(asyncio.run(events())) == refusal


def test_stream_events_v3_show_only_released_text(guard: Guard, refusal: str) -> None:
    events = list(guarded(guard).stream_events(CARD, version="v3"))
    deltas = [e["delta"] for e in events if e["event"] == "content-block-delta"]
    assert "".join(d.get("text", "") for d in deltas) == refusal


def test_tool_call_stream_is_checked(guard: Guard) -> None:
    inner = ToolFake(messages=iter([tool_call()]))
    chunks = list(GuardedChatModel(model=inner, guard=guard).bind_tools([get_balance]).stream("Balance?"))
    whole = chunks[0]
    for chunk in chunks[1:]:
        whole += chunk
    assert isinstance(whole, AIMessageChunk) and whole.tool_calls[0]["name"] == "get_balance"
    assert verdict_of(whole)["decision"] == "allow" and verdict_of(whole)["part"]["name"] == "get_balance"


def test_models_without_streaming_still_stream_guarded(guard: Guard, refusal: str) -> None:
    inner = FakeMessagesListChatModel(responses=[AIMessage(content=HARMFUL)])  # stream() yields one whole message
    assert "".join(str(c.content) for c in GuardedChatModel(model=inner, guard=guard).stream(CARD)) == refusal
    unstreamed = GuardedChatModel(model=ByPrompt(answers=ANSWERS), guard=guard, disable_streaming=True)
    assert [c.content for c in unstreamed.stream(CARD)] == [refusal]  # LangChain falls back to invoke


def test_the_wrapped_run_is_traced_inside_the_guarded_run(guard: Guard) -> None:
    with collect_runs() as runs:
        guarded(guard).invoke(SLEEP)
    [run] = runs.traced_runs
    assert run.name == "GuardedChatModel" and [child.name for child in run.child_runs] == ["ByPrompt"]
    assert run.outputs is not None and "guardrail" in str(run.outputs)


# -- policies per call ----------------------------------------------------------------------------------


def test_policy_set_is_picked_from_config_metadata(scorer: TransformerScorer, refusal: str) -> None:
    policies = PolicySet({"audit": "shadow", "support": "customer-support"}, scorer=scorer)
    model = GuardedChatModel(model=ByPrompt(answers=ANSWERS), policies=policies)
    audit = model.invoke(CARD, config={"metadata": {"deployment": "audit"}})
    assert (audit.content, verdict_of(audit)["decision"]) == (HARMFUL, "log")
    default = model.invoke(CARD)
    assert (default.content, verdict_of(default)["policy"]["name"]) == (refusal, "default")
    support = model.invoke(CARD, config={"metadata": {"deployment": "support"}})
    assert verdict_of(support)["policy"]["name"] == "customer-support" and support.content != HARMFUL
    streamed = list(model.stream(CARD, config={"metadata": {"deployment": "audit"}}))
    assert "".join(str(c.content) for c in streamed) == HARMFUL
    assert verdict_of(streamed[-1])["policy"]["name"] == "shadow"
    with pytest.raises(PolicyError, match="unknown deployment 'nope'"):
        model.invoke(CARD, config={"metadata": {"deployment": "nope"}})


def test_one_way_to_choose_the_policy() -> None:
    guard = Guard(scorer=FakeScorer())
    with pytest.raises(ValueError, match="at most one of guard, policy and policies; got guard and policy"):
        GuardedChatModel(model=FakeListChatModel(responses=["x"]), guard=guard, policy="strict")


def test_identity(guard: Guard) -> None:
    model = guarded(guard)
    assert model._llm_type == "by-prompt"  # the wrapped model's: traces and LangChain's choices see it
    guarded_by = {"guardrail_policy": "default", "guardrail_policy_version": "1.2"}
    assert model._identifying_params == {**model.model._identifying_params, **guarded_by}
    assert guardrail_langchain.__all__ == ["METADATA_KEY", "GuardedChatModel", "ValueGuardrailMiddleware"]


# -- agent middleware -----------------------------------------------------------------------------------


def run_agent(
    model: BaseChatModel, middleware: ValueGuardrailMiddleware, question: str = BALANCE_CARD
) -> list[BaseMessage]:
    agent = create_agent(model, tools=[get_balance], middleware=[middleware])
    return agent.invoke({"messages": [HumanMessage(question)]})["messages"]


def test_agent_blocks_a_harmful_final_answer(guard: Guard, refusal: str) -> None:
    messages = run_agent(agent_model(HARMFUL), ValueGuardrailMiddleware(guard))
    assert [type(m) for m in messages] == [HumanMessage, AIMessage, ToolMessage, AIMessage]
    assert verdict_of(messages[1])["decision"] == "allow"  # the tool call was checked, then run
    assert messages[2].content == "checking: 120 EUR"
    assert messages[-1].content == refusal and verdict_of(messages[-1])["decision"] == "block"


def test_agent_passes_a_benign_final_answer(guard: Guard) -> None:
    messages = run_agent(agent_model(BENIGN), ValueGuardrailMiddleware(guard), BALANCE_SLEEP)
    assert messages[-1].content == BENIGN and verdict_of(messages[-1])["decision"] == "allow"


def test_agent_ainvoke(guard: Guard, refusal: str) -> None:
    agent = create_agent(agent_model(HARMFUL), tools=[get_balance], middleware=[ValueGuardrailMiddleware(guard)])
    messages = asyncio.run(agent.ainvoke({"messages": [HumanMessage(BALANCE_CARD)]}))["messages"]
    assert messages[-1].content == refusal and verdict_of(messages[-1])["decision"] == "block"


def test_agent_reasks_through_the_handler(scorer: TransformerScorer, tmp_path: Path) -> None:
    model = ToolFake(messages=iter([tool_call(), AIMessage(content=HARMFUL), AIMessage(content=BENIGN)]))
    guard = Guard(rewrite_policy(tmp_path, "{type: rewrite, strategy: reask}"), scorer=scorer)
    messages = run_agent(model, ValueGuardrailMiddleware(guard))
    assert messages[-1].content == BENIGN and verdict_of(messages[-1])["rewrite"]["accepted"]
    retry = model.calls[-1]
    assert [type(m) for m in retry[0][-3:]] == [ToolMessage, AIMessage, HumanMessage]
    assert retry[0][-2].content == HARMFUL and "tools" in retry[1]  # the re-ask went through the agent


def test_agent_policy_set_from_config_metadata(scorer: TransformerScorer) -> None:
    middleware = ValueGuardrailMiddleware(policies=PolicySet({"audit": "shadow"}, scorer=scorer))
    agent = create_agent(agent_model(HARMFUL), tools=[get_balance], middleware=[middleware])
    result = agent.invoke({"messages": [HumanMessage(BALANCE_CARD)]}, config={"metadata": {"deployment": "audit"}})
    assert result["messages"][-1].content == HARMFUL and verdict_of(result["messages"][-1])["decision"] == "log"


def streamed_text(chunks: list[tuple[BaseMessage, dict[str, Any]]]) -> str:
    return "".join(str(m.content) for m, _ in chunks if isinstance(m, AIMessageChunk))


def test_agent_stream_never_shows_a_blocked_answers_tokens(guard: Guard, refusal: str) -> None:
    agent = create_agent(agent_model(HARMFUL), tools=[get_balance], middleware=[ValueGuardrailMiddleware(guard)])
    chunks = list(agent.stream({"messages": [HumanMessage(BALANCE_CARD)]}, stream_mode="messages"))
    assert streamed_text(chunks) == refusal  # the tool-call turn has no text; the answer only its message
    assert any(isinstance(m, AIMessageChunk) and m.tool_call_chunks for m, _ in chunks)
    assert any(isinstance(m, ToolMessage) for m, _ in chunks)


def test_agent_astream_releases_a_benign_answer(guard: Guard) -> None:
    agent = create_agent(agent_model(BENIGN), tools=[get_balance], middleware=[ValueGuardrailMiddleware(guard)])

    async def main() -> list[tuple[BaseMessage, dict[str, Any]]]:
        return [c async for c in agent.astream({"messages": [HumanMessage(BALANCE_SLEEP)]}, stream_mode="messages")]

    assert streamed_text(asyncio.run(main())) == BENIGN


def test_agent_with_a_guarded_model_streams_safely(guard: Guard, refusal: str) -> None:
    agent = create_agent(GuardedChatModel(model=agent_model(HARMFUL), guard=guard), tools=[get_balance])
    chunks = list(agent.stream({"messages": [HumanMessage(BALANCE_CARD)]}, stream_mode="messages"))
    assert streamed_text(chunks) == refusal


def test_agent_with_structured_output_still_builds(guard: Guard) -> None:
    # create_agent reads the (wrapped) model's model_name and profile to pick a structured-output strategy.
    model = ToolFake(messages=iter([tool_call("Account", {"name": "checking"})]))
    agent = create_agent(model, tools=[], middleware=[ValueGuardrailMiddleware(guard)], response_format=Account)
    result = agent.invoke({"messages": [HumanMessage("Which account?")]})
    assert result["structured_response"] == Account(name="checking")


def test_a_blocked_structured_answer_loses_its_structured_output(refusal: str) -> None:
    def harm(prompt: str | None, response: str) -> ValueVector:
        return ValueVector(benevolence=-0.9) if "photo of the card" in response else ValueVector()

    middleware = ValueGuardrailMiddleware(Guard(scorer=FakeScorer(fn=harm)))
    model = ToolFake(messages=iter([AIMessage(content=json.dumps({"name": "take a photo of the card"}))]))
    agent = create_agent(model, tools=[], middleware=[middleware], response_format=ProviderStrategy(Account))
    result = agent.invoke({"messages": [HumanMessage("Which account?")]})
    assert result["messages"][-1].content == refusal and result.get("structured_response") is None


# -- examples -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("script", "expected"),
    [
        ("langchain_chain.py", ["allow:", "block: I can't help with that"]),
        ("langchain_agent.py", ["ai: allow: calls get_balance", "checking: 120 EUR", "block: I can't help with that"]),
        ("streaming.py", ["allow", "block", "characters of the blocked answer delivered: 0"]),
    ],
)
def test_examples_run_offline(script: str, expected: list[str]) -> None:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    result = subprocess.run(
        [sys.executable, str(REPO / "examples" / script)], capture_output=True, text=True, env=env, timeout=300
    )
    assert result.returncode == 0, result.stderr
    for line in expected:
        assert line in result.stdout, result.stdout
