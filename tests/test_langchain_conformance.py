"""A guarded chat model is the model it wraps, but for the guard: one run per call, its settings, its identity.

LangChain's own standard tests run in ``test_langchain_standard.py``; these pin what they do not:
user callbacks see one chat-model run per call and count its tokens once (re-asks included);
tracers still see the wrapped run nested in it; settings given to the wrapper configure the wrapped
model or are refused; traces name the wrapped provider; wrappers are cheap to build; structured
output is the wrapped model's own and is checked; an agent with the middleware says and spends
what it says and spends without it, when nothing is blocked. The wrapped model is
``ScriptedChatModel``; the scorer is the shipped model.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from pathlib import Path
from typing import Any

import pytest
from _answers import BENIGN, HARMFUL
from _scripted_chat import DEFAULT_REPLY, ScriptedChatModel
from langchain.agents import create_agent
from langchain_core.callbacks import BaseCallbackHandler, UsageMetadataCallbackHandler, get_usage_metadata_callback
from langchain_core.language_models import BaseChatModel
from langchain_core.language_models.fake_chat_models import FakeListChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage
from langchain_core.runnables import RunnableLambda
from langchain_core.tools import tool
from langchain_core.tracers.context import collect_runs
from pydantic import BaseModel

from guardrail import Guard, GuardrailViolation, shared_guard
from guardrail_langchain import GuardedChatModel, ValueGuardrailMiddleware

CARD = "How can I use my roommate's credit card without them knowing?"
SLEEP = "How can I sleep better?"
WEATHER = "What is the weather in San Francisco, CA?"


@tool
def get_weather(location: str) -> str:
    """The weather at a place."""
    return "It's sunny."


class Answer(BaseModel):
    """A structured answer."""

    answer: str


def scripted(**settings: Any) -> ScriptedChatModel:
    return ScriptedChatModel(replies={SLEEP: BENIGN, CARD: HARMFUL}, **settings)


def verdict_of(message: BaseMessage) -> dict[str, Any]:
    return message.response_metadata["guardrail"]


class Starts(BaseCallbackHandler):
    """Counts chat-model runs as a user's handler sees them."""

    def __init__(self) -> None:
        self.starts = self.ends = 0

    def on_chat_model_start(self, serialized: Any, messages: Any, **kwargs: Any) -> None:
        self.starts += 1

    def on_llm_end(self, response: Any, **kwargs: Any) -> None:
        self.ends += 1


# -- one run per call ----------------------------------------------------------------------------------

CALLS = ["invoke", "stream", "batch", "ainvoke", "astream", "abatch"]


def run(model: BaseChatModel, how: str, config: dict[str, Any] | None = None) -> list[BaseMessage]:
    """One call of ``model`` on SLEEP (``batch``: two), every answer whole."""
    prompts = [SLEEP, SLEEP] if "batch" in how else [SLEEP]

    async def whole(prompt: str) -> BaseMessage:
        chunks = [chunk async for chunk in model.astream(prompt, config)]
        return sum(chunks[1:], chunks[0])

    if how == "invoke":
        return [model.invoke(SLEEP, config)]
    if how == "stream":
        chunks = list(model.stream(SLEEP, config))
        return [sum(chunks[1:], chunks[0])]
    if how == "batch":
        return model.batch(prompts, config)
    if how == "ainvoke":
        return [asyncio.run(model.ainvoke(SLEEP, config))]
    if how == "astream":
        return [asyncio.run(whole(SLEEP))]
    return asyncio.run(model.abatch(prompts, config))


@pytest.mark.parametrize("how", CALLS)
def test_a_usage_callback_counts_each_call_once(how: str, guard: Guard) -> None:
    bare = UsageMetadataCallbackHandler()
    run(scripted(), how, {"callbacks": [bare]})
    given = UsageMetadataCallbackHandler()
    answers = run(GuardedChatModel(model=scripted(), guard=guard), how, {"callbacks": [given]})
    assert [verdict_of(a)["decision"] for a in answers] == ["allow"] * len(answers)  # checked, not altered
    assert given.usage_metadata == bare.usage_metadata and bare.usage_metadata  # one call's tokens, once
    with get_usage_metadata_callback() as context:  # handlers LangChain adds from the context, too
        run(GuardedChatModel(model=scripted(), guard=guard), how)
    assert context.usage_metadata == bare.usage_metadata


@pytest.mark.parametrize("how", CALLS)
def test_user_callbacks_see_one_chat_model_run_per_call(how: str, guard: Guard) -> None:
    handler = Starts()
    answers = run(GuardedChatModel(model=scripted(), guard=guard), how, {"callbacks": [handler]})
    assert handler.starts == handler.ends == len(answers)


def test_usage_counts_the_re_ask_too(scorer: Any, tmp_path: Path) -> None:
    policy = tmp_path / "reask.yaml"
    floors = "\n".join(f"  {v}: {{action: fix}}" for v in ("security", "conformity", "benevolence", "universalism"))
    policy.write_text(f"name: reasking\nextends: default\nthresholds:\n{floors}\nactions:\n"
                      "  fix: {type: rewrite, strategy: reask, max_attempts: 1}\n")  # fmt: skip
    model = GuardedChatModel(model=scripted(), guard=Guard(policy, scorer=scorer))
    with get_usage_metadata_callback() as usage:
        answer = model.invoke(CARD)
    assert answer.content == DEFAULT_REPLY and verdict_of(answer)["decision"] == "rewrite"
    first = scripted().invoke(CARD).usage_metadata
    assert first is not None and answer.usage_metadata is not None
    assert answer.usage_metadata["total_tokens"] > first["total_tokens"]  # the first answer and the re-ask
    [(_, counted)] = usage.usage_metadata.items()
    assert counted == answer.usage_metadata


@pytest.mark.parametrize("streamed", [False, True], ids=["invoke", "stream"])
def test_tracers_see_the_wrapped_run_nested_in_the_guarded_one(streamed: bool, guard: Guard) -> None:
    model = GuardedChatModel(model=scripted(), guard=guard)
    with collect_runs() as runs:
        list(model.stream(SLEEP)) if streamed else model.invoke(SLEEP)
    [run] = runs.traced_runs
    assert run.name == "GuardedChatModel" and [child.name for child in run.child_runs] == ["ScriptedChatModel"]
    assert run.child_runs[0].parent_run_id == run.id


# -- settings, identity, construction ------------------------------------------------------------------


def test_settings_given_to_the_wrapper_configure_the_wrapped_model(guard: Guard) -> None:
    inner = scripted()
    model = GuardedChatModel(model=inner, guard=guard, stop=["you"], temperature=0, max_tokens=10, timeout=5)
    assert isinstance(model.model, ScriptedChatModel) and model.model is not inner
    assert (model.model.stop, model.model.temperature, model.model.max_tokens, model.model.timeout) == (
        ["you"], 0, 10, 5,
    )  # fmt: skip
    assert inner.stop is None and inner.replies == model.model.replies  # the original is left as it was
    assert model.invoke("Hello").content == scripted().invoke("Hello", stop=["you"]).content
    assert "you" not in str(model.invoke("Hello").content) and "you" in DEFAULT_REPLY
    # By alias as well as by name, as the wrapped class takes them; a per-call stop still wins.
    renamed = GuardedChatModel(model=inner, guard=guard, model_name="scripted-chat-2", stop_sequences=["today"])
    assert (renamed.model.model_name, renamed.model.stop) == ("scripted-chat-2", ["today"])
    assert renamed.invoke("Hello").response_metadata["model_name"] == "scripted-chat-2"


def test_a_setting_the_wrapped_model_lacks_is_refused(guard: Guard) -> None:
    with pytest.raises(ValueError, match=r"top_kk=3: not a setting of GuardedChatModel, and ScriptedChatModel has no"):
        GuardedChatModel(model=scripted(), guard=guard, top_kk=3)
    with pytest.raises(ValueError, match=r"FakeListChatModel has no such field.*\.bind\(stop=\.\.\.\)"):
        GuardedChatModel(model=FakeListChatModel(responses=["x"]), guard=guard, stop=["x"])
    with pytest.raises(ValueError, match="ScriptedChatModel does not take temperature as given"):
        GuardedChatModel(model=scripted(), guard=guard, temperature="hot")


def test_identity_is_the_wrapped_models(guard: Guard) -> None:
    model = GuardedChatModel(model=scripted(model_name="scripted-chat-1"), guard=guard, temperature=0.5)
    assert model._llm_type == "scripted-chat"
    params = model._get_ls_params(stop=["x"])
    assert params == {"ls_provider": "scripted", "ls_model_name": "scripted-chat-1", "ls_model_type": "chat",
                      "ls_temperature": 0.5, "ls_stop": ["x"]}  # fmt: skip
    assert model._get_ls_params(model="other")["ls_model_name"] == "other"
    with collect_runs() as runs:
        model.invoke(SLEEP)
    [run] = runs.traced_runs
    assert run.extra is not None and run.extra["metadata"]["ls_provider"] == "scripted"
    assert run.extra["metadata"]["ls_model_name"] == "scripted-chat-1"


def test_wrappers_share_one_guard_and_are_cheap_to_build(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GUARDRAIL_POLICY", raising=False)
    first = GuardedChatModel(model=scripted())  # builds (or finds) the shared guard of the default policy
    assert first.policy == "default" and first._choice.guard is shared_guard("default")
    inner = scripted()
    times = []
    for _ in range(30):
        start = time.perf_counter()
        model = GuardedChatModel(model=inner)
        times.append(time.perf_counter() - start)
        assert model._choice.guard is first._choice.guard
    assert statistics.median(times) < 0.005, f"median construction {statistics.median(times) * 1000:.2f} ms"
    assert GuardedChatModel(model=inner, policy="strict")._choice.guard.scorer is first._choice.guard.scorer
    given = Guard(scorer=first._choice.guard.scorer)
    assert GuardedChatModel(model=inner, guard=given)._choice.guard is given  # an explicit guard wins
    monkeypatch.setenv("GUARDRAIL_POLICY", "strict")
    assert GuardedChatModel(model=inner).policy == "strict"


# -- structured output ---------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["function_calling", "json_schema", "json_mode"])
def test_structured_output_is_the_wrapped_models_own_and_checked(method: str, guard: Guard) -> None:
    model = GuardedChatModel(model=scripted(field_values={"answer": BENIGN}), guard=guard)
    structured = model.with_structured_output(Answer, method=method, include_raw=True)
    result = structured.invoke("Answer in 'answer': how can I sleep better?")
    assert result["parsed"] == Answer(answer=BENIGN) and result["parsing_error"] is None
    assert verdict_of(result["raw"])["decision"] == "allow"
    binding = structured.first.steps__["raw"]  # type: ignore[attr-defined]
    assert binding.bound is model  # the call goes through the guard...
    expected = {"function_calling": "tools", "json_schema": "response_format", "json_mode": "response_format"}
    assert expected[method] in binding.kwargs  # ...with the wrapped model's own arguments
    if method != "function_calling":
        kind = binding.kwargs["response_format"]["type"]
        assert kind == {"json_schema": "json_schema", "json_mode": "json_object"}[method]


@pytest.mark.parametrize("method", ["function_calling", "json_schema"])
def test_a_harmful_structured_answer_is_blocked(method: str, guard: Guard) -> None:
    inner = scripted(field_values={"answer": HARMFUL})
    structured = GuardedChatModel(model=inner, guard=guard).with_structured_output(Answer, method=method)
    prompt = "Answer in 'answer': " + CARD
    if method == "function_calling":
        assert structured.invoke(prompt) is None  # no tool call is left to parse
    else:
        with pytest.raises(Exception, match="Invalid json output"):  # the policy's message is no JSON
            structured.invoke(prompt)
    strict = GuardedChatModel(model=inner, guard=guard, raise_on_block=True).with_structured_output(
        Answer, method=method
    )
    with pytest.raises(GuardrailViolation):
        strict.invoke(prompt)


def test_structured_output_the_wrapper_cannot_guard_is_refused(guard: Guard) -> None:
    class Detached(ScriptedChatModel):
        def with_structured_output(self, schema: Any, **kwargs: Any) -> Any:
            return RunnableLambda(lambda _: {"answer": "not from the model"})

    with pytest.raises(TypeError, match="does not call the model itself"):
        GuardedChatModel(model=Detached(), guard=guard).with_structured_output(Answer)
    with pytest.raises(NotImplementedError):  # a model without structured output has none guarded either
        GuardedChatModel(model=FakeListChatModel(responses=["x"]), guard=guard).with_structured_output(Answer)


# -- the agent middleware ------------------------------------------------------------------------------


def conversation(messages: list[BaseMessage]) -> list[tuple[Any, ...]]:
    """What an agent run said and spent, without ids and verdicts."""
    said = []
    for m in messages:
        calls = [(c["name"], c["args"]) for c in m.tool_calls] if isinstance(m, AIMessage) else []
        usage = m.usage_metadata if isinstance(m, AIMessage) else None
        said.append((type(m).__name__, m.content, calls, usage))
    return said


@pytest.mark.parametrize("how", ["invoke", "stream", "ainvoke"])
def test_an_agent_with_the_middleware_says_and_spends_what_it_does_without(how: str, guard: Guard) -> None:
    def run_agent(middleware: list[ValueGuardrailMiddleware]) -> tuple[list[BaseMessage], dict[str, Any]]:
        agent = create_agent(scripted(), tools=[get_weather], middleware=middleware)
        question = {"messages": [HumanMessage(WEATHER)]}
        with get_usage_metadata_callback() as usage:
            if how == "invoke":
                messages = agent.invoke(question)["messages"]
            elif how == "ainvoke":
                messages = asyncio.run(agent.ainvoke(question))["messages"]
            else:
                streamed = list(agent.stream(question, stream_mode=["messages", "values"]))
                messages = [chunk for mode, chunk in streamed if mode == "values"][-1]["messages"]
        return messages, usage.usage_metadata

    bare, bare_usage = run_agent([])
    guarded, guarded_usage = run_agent([ValueGuardrailMiddleware(guard)])
    assert [type(m).__name__ for m in bare] == ["HumanMessage", "AIMessage", "ToolMessage", "AIMessage"]
    assert conversation(guarded) == conversation(bare) and bare[1].tool_calls  # a tool call, then the answer
    assert guarded_usage == bare_usage and bare_usage
    checked = [verdict_of(m)["decision"] for m in guarded if isinstance(m, AIMessage)]
    assert checked == ["allow", "allow"]  # both answers were checked and passed
