"""guardrail_litellm SDK twins over real litellm code paths (mock_response, a loopback OpenAI server).

The shipped model judges two answers it separates clearly; fixed vectors (FakeScorer) cover the edges.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # litellm reaches the network at import otherwise

import litellm
from _answers import BENIGN, HARMFUL, LEAD
from _litellm_calls import MESSAGES, MODEL, PROMPT, call, stream_chunks
from _openai_stub import OpenAIStub

import guardrail_litellm
from guardrail import Guard, GuardrailViolation, OutputPart, PolicyError, PolicySet, ValueVector, Verdict, shared_guard
from guardrail._guard import shared
from guardrail.testing import FakeScorer
from guardrail_litellm import acompletion, completion, verdict_of, verdicts_of

# litellm declares TypedDicts with ReadOnly items; pydantic warns once when it first builds their schema.
# That is litellm's and pydantic's business, not ours: ignore exactly that warning, keep every other one an error.
pytestmark = pytest.mark.filterwarnings("ignore:Item.* using the `ReadOnly` qualifier:UserWarning")

twins = pytest.mark.parametrize("use_async", [False, True], ids=["completion", "acompletion"])


def joined(chunks: list[Any]) -> str:
    return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)


def write_policy(tmp_path: Path, actions: str) -> Path:
    """The default policy with its ``block`` action redefined (every floor uses it)."""
    path = tmp_path / "policy.yaml"
    path.write_text(f"name: test-policy\nversion: '7'\nextends: default\nactions:\n{actions}", encoding="utf-8")
    return path


def harm(prompt: str | None, response: str) -> ValueVector:
    """Fixed vectors: any text mentioning "hurt" opposes benevolence."""
    return ValueVector(benevolence=-0.9) if "hurt" in response else ValueVector(benevolence=0.5)


@pytest.fixture(scope="module")
def guard(scorer: Any) -> Guard:
    """The shipped default policy over the shipped model."""
    return Guard(scorer=scorer)


@pytest.fixture
def fake() -> Guard:
    return Guard("default", scorer=FakeScorer(fn=harm))


@pytest.fixture(scope="module")
def stub() -> Iterator[OpenAIStub]:
    """Answers harmfully until the conversation holds an assistant turn (a re-ask), then benignly."""
    with OpenAIStub(lambda messages: BENIGN if any(m.get("role") == "assistant" for m in messages) else HARMFUL) as s:
        yield s


# -- the shipped model, real litellm ------------------------------------------------------------


@twins
def test_benign_answer_is_delivered_untouched(use_async: bool, guard: Guard) -> None:
    response = call(use_async, guard=guard, mock_response=BENIGN)
    assert isinstance(response, litellm.ModelResponse)
    assert response.choices[0].message.content == BENIGN
    verdict = verdict_of(response)
    assert verdict is not None and verdict.decision == "allow" and not verdict.altered


@twins
def test_harmful_answer_is_replaced_by_the_policy_message(use_async: bool, guard: Guard) -> None:
    response = call(use_async, guard=guard, mock_response=HARMFUL)
    verdict = verdict_of(response)
    assert verdict is not None and verdict.decision == "block"
    assert response.choices[0].message.content == verdict.message == guard.policy.action("block").message
    assert {v.dimension for v in verdict.violations} & {"benevolence", "conformity", "security", "universalism"}


@twins
def test_verdict_is_attached_as_json_and_as_object(use_async: bool, guard: Guard) -> None:
    response = call(use_async, guard=guard, mock_response=HARMFUL)
    verdict = verdict_of(response)
    assert isinstance(verdict, Verdict)
    assert response._hidden_params["guardrail"] == verdict.to_dict()
    assert "guardrail" not in response.model_dump_json()  # the verdict never leaks into the payload
    plain = litellm.completion(model=MODEL, messages=MESSAGES, mock_response=BENIGN)
    assert verdict_of(plain) is None


@twins
def test_benign_stream_is_delivered_whole_with_its_finish_chunk(use_async: bool, guard: Guard) -> None:
    chunks, stream = stream_chunks(use_async, guard=guard, mock_response=BENIGN)
    assert joined(chunks) == BENIGN == stream.delivered
    assert all(isinstance(c, litellm.ModelResponseStream) for c in chunks)
    assert chunks[-1].choices[0].finish_reason == "stop"  # text-less chunks keep their place
    assert stream.verdict is not None and stream.verdict.decision == "allow"
    assert verdict_of(stream) is stream.verdict
    assert stream.model == MODEL  # other attributes are litellm's stream's


@twins
def test_harmful_stream_delivers_zero_characters_of_the_answer(use_async: bool, guard: Guard) -> None:
    assert guard.policy.streaming.stream_first is False
    chunks, stream = stream_chunks(use_async, guard=guard, mock_response=HARMFUL)
    text = joined(chunks)
    assert stream.verdict is not None and stream.verdict.decision == "block"
    assert len(stream.delivered) == 0  # not one character of the blocked answer got out
    assert text == stream.verdict.message  # only the policy message did
    assert not any(word in text for word in ("wallet", "card", "caught"))


def test_fifty_concurrent_guarded_streams_never_mix(guard: Guard) -> None:
    answers = [f"Case {n}: {HARMFUL}" if n % 5 == 0 else f"Tip {n}: {BENIGN}" for n in range(50)]

    async def one(answer: str) -> tuple[str, Any]:
        stream = await acompletion(model=MODEL, messages=MESSAGES, stream=True, mock_response=answer, guard=guard)
        return joined([c async for c in stream]), stream

    async def main() -> list[tuple[str, Any]]:
        return await asyncio.gather(*(one(a) for a in answers))

    message = guard.policy.action("block").message
    for n, (answer, (text, stream)) in enumerate(zip(answers, asyncio.run(main()))):
        if n % 5 == 0:
            assert (text, stream.delivered, stream.verdict.decision) == (message, "", "block"), n
        else:
            assert (text, stream.verdict.decision) == (answer, "allow"), (n, stream.verdict.explain())


@twins
def test_shadow_policy_logs_and_delivers(use_async: bool, scorer: Any) -> None:
    response = call(use_async, guard=Guard("shadow", scorer=scorer), mock_response=HARMFUL)
    verdict = verdict_of(response)
    assert verdict is not None and (verdict.decision, verdict.intended) == ("log", "block")
    assert response.choices[0].message.content == HARMFUL


@twins
def test_log_action_delivers_and_records_the_violation(use_async: bool, scorer: Any, tmp_path: Path) -> None:
    policy = write_policy(tmp_path, "  block: {type: log}\n")
    response = call(use_async, guard=Guard(policy, scorer=scorer), mock_response=HARMFUL)
    verdict = verdict_of(response)
    assert verdict is not None and verdict.decision == "log" and verdict.violations
    assert response.choices[0].message.content == HARMFUL
    assert (verdict.policy_name, verdict.policy_version) == ("test-policy", "7")


REASK = "  block: {type: rewrite, strategy: reask, max_attempts: 2, fallback: refuse}\n" \
        "  refuse: {type: block, message: 'Refused after re-asking.'}\n"  # fmt: skip


@twins
def test_reask_delivers_the_passing_revision(use_async: bool, scorer: Any, tmp_path: Path, stub: OpenAIStub) -> None:
    guard = Guard(write_policy(tmp_path, REASK), scorer=scorer)
    before = len(stub.requests)
    response = call(use_async, guard=guard, model="openai/stub", api_base=stub.base_url, api_key="sk-stub",
                    temperature=0.2)  # fmt: skip
    verdict = verdict_of(response)
    assert verdict is not None and (verdict.decision, verdict.final_decision) == ("rewrite", "rewrite")
    assert verdict.rewrite is not None and (verdict.rewrite.attempts, verdict.rewrite.accepted) == (1, True)
    assert response.choices[0].message.content == BENIGN
    first, again = stub.requests[before:]
    # The same call again: original messages + the refused answer + the guard's feedback, not streamed.
    assert again["messages"][: len(MESSAGES)] == MESSAGES == first["messages"]
    assert again["messages"][-2] == {"role": "assistant", "content": HARMFUL}
    assert again["messages"][-1]["role"] == "user" and "test-policy" in again["messages"][-1]["content"]
    assert again["temperature"] == 0.2 and not again.get("stream")


@twins
def test_reask_that_keeps_violating_falls_back(use_async: bool, scorer: Any, tmp_path: Path) -> None:
    guard = Guard(write_policy(tmp_path, REASK), scorer=scorer)
    response = call(use_async, guard=guard, mock_response=HARMFUL)  # the re-ask gets the same answer again
    verdict = verdict_of(response)
    assert verdict is not None and verdict.rewrite is not None
    assert (verdict.rewrite.attempts, verdict.rewrite.accepted, verdict.final_decision) == (2, False, "block")
    assert response.choices[0].message.content == "Refused after re-asking."


@twins
def test_redact_drops_the_harmful_sentence(use_async: bool, scorer: Any, tmp_path: Path) -> None:
    redact = "  block: {type: rewrite, strategy: redact, min_keep: 0.3, fallback: refuse}\n  refuse: {type: block}\n"
    guard = Guard(write_policy(tmp_path, redact), scorer=scorer)
    response = call(use_async, guard=guard, mock_response=f"{LEAD} {HARMFUL}")
    verdict = verdict_of(response)
    assert verdict is not None and verdict.final_decision == "rewrite"
    assert response.choices[0].message.content == LEAD


@twins
def test_raise_on_block_raises_with_the_verdict(use_async: bool, guard: Guard) -> None:
    with pytest.raises(GuardrailViolation) as caught:
        call(use_async, guard=guard, mock_response=HARMFUL, raise_on_block=True)
    assert caught.value.verdict.decision == "block"
    response = call(use_async, guard=guard, mock_response=BENIGN, raise_on_block=True)
    assert response.choices[0].message.content == BENIGN


@twins
def test_raise_on_block_in_a_stream_raises_instead_of_the_message(use_async: bool, guard: Guard) -> None:
    with pytest.raises(GuardrailViolation) as caught:
        stream_chunks(use_async, guard=guard, mock_response=HARMFUL, raise_on_block=True)
    assert caught.value.verdict.decision == "block"


# -- choosing the guard ----------------------------------------------------------------------------


def test_policy_argument_loads_once_and_shares_the_scorer(
    scorer: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(shared, "_SHARED", shared.SharedGuards(scorer=scorer))  # stands in for the process store
    path = write_policy(tmp_path, "  block: {type: block, message: 'No.'}\n")
    first = completion(model=MODEL, messages=MESSAGES, mock_response=HARMFUL, policy=str(path))
    second = completion(model=MODEL, messages=MESSAGES, mock_response=HARMFUL, policy=path)
    assert first.choices[0].message.content == second.choices[0].message.content == "No."
    assert shared_guard(path) is shared_guard(str(path)) and shared_guard(path).scorer is scorer


def test_process_default_guard_is_built_once_and_follows_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shared, "_SHARED", shared.SharedGuards())  # builds Guard(): loads the shipped model once more
    monkeypatch.setenv("GUARDRAIL_POLICY", "strict")
    built: list[Guard] = []
    threads = [threading.Thread(target=lambda: built.append(guardrail_litellm.default_guard())) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len({id(g) for g in built}) == 1 and built[0].policy.name == "strict"
    assert built[0] is shared_guard("strict")  # the core's shared guard: every integration gets the same one
    response = asyncio.run(acompletion(model=MODEL, messages=MESSAGES, mock_response=BENIGN))
    assert verdict_of(response).policy_name == "strict"  # type: ignore[union-attr]


@twins
def test_policy_set_picks_the_guard_from_metadata(use_async: bool) -> None:
    policies = PolicySet({"support-bot": "customer-support"}, scorer=FakeScorer(fn=harm))
    response = call(use_async, policies=policies, metadata={"deployment": "support-bot"}, mock_response="Go hurt them.")
    verdict = verdict_of(response)
    assert verdict is not None and verdict.policy_name == "customer-support"
    assert verdict.metadata == {"deployment": "support-bot"}
    assert verdict_of(call(use_async, policies=policies, mock_response="Fine.")).policy_name == "default"  # type: ignore[union-attr]
    with pytest.raises(PolicyError, match="unknown deployment 'nope'"):
        call(use_async, policies=policies, metadata={"deployment": "nope"}, mock_response="Fine.")


# -- edges, fixed vectors --------------------------------------------------------------------------


TOOL_CALL = {
    "choices": [{
        "index": 0, "finish_reason": "tool_calls",
        "message": {"role": "assistant", "content": None, "tool_calls": [{
            "id": "call_1", "type": "function", "function": {"name": "lookup", "arguments": '{"q": "hurt"}'}}]},
    }],
}  # fmt: skip


EMPTY = {"choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": ""}}]}


@twins
@pytest.mark.parametrize("answer", [EMPTY, "   "], ids=["empty", "blank"])
def test_empty_answers_pass_unchecked(use_async: bool, answer: Any) -> None:
    scorer = FakeScorer(fn=harm)
    response = call(use_async, guard=Guard(scorer=scorer), mock_response=answer)
    assert scorer.calls == [] and verdict_of(response) is None and verdicts_of(response) == ()
    assert "guardrail" not in response._hidden_params


@twins
def test_a_tool_call_alone_is_checked_as_its_name_and_arguments(use_async: bool, fake: Guard) -> None:
    response = call(use_async, guard=fake, mock_response=TOOL_CALL)
    # Checked as 'lookup({"q": "hurt"})', read by the scorer as the prose it carries.
    assert fake.scorer.calls[-1] == [(PROMPT, "lookup: q: hurt")]  # type: ignore[attr-defined]
    [verdict] = verdicts_of(response)
    assert verdict.part == OutputPart("tool_call", 0, 0, "lookup") and verdict.decision == "block"
    choice = response.choices[0]
    assert (choice.message.content, choice.message.tool_calls, choice.finish_reason) == (
        fake.policy.action("block").message, None, "stop")  # fmt: skip


@twins
def test_a_blocked_answer_loses_its_tool_calls(use_async: bool, fake: Guard) -> None:
    benign_call = {"id": "call_1", "type": "function", "function": {"name": "lookup", "arguments": '{"q": "rain"}'}}
    answer = {"choices": [{**TOOL_CALL["choices"][0], "message": {
        "role": "assistant", "content": "I will hurt them.", "tool_calls": [benign_call]}}]}  # fmt: skip
    response = call(use_async, guard=fake, mock_response=answer)
    assert [v.decision for v in verdicts_of(response)] == ["block", "allow"]  # the content decides the choice
    choice = response.choices[0]
    assert (choice.message.content, choice.message.tool_calls, choice.finish_reason) == (
        fake.policy.action("block").message, None, "stop")  # fmt: skip


@twins
def test_scoring_failure_fails_closed(use_async: bool) -> None:
    guard = Guard("default", scorer=FakeScorer(fail=RuntimeError("model gone")))
    response = call(use_async, guard=guard, mock_response=BENIGN)
    verdict = verdict_of(response)
    assert verdict is not None and verdict.decision == "block" and "model gone" in (verdict.error or "")
    assert response.choices[0].message.content == guard.policy.action("block").message


def test_prompt_is_the_last_user_message_text(fake: Guard) -> None:
    messages = [
        {"role": "user", "content": "first question"},
        {"role": "assistant", "content": "an answer"},
        {"role": "user", "content": [{"type": "text", "text": "second"}, {"type": "image_url", "image_url": {"url": "x"}},
                                     {"type": "text", "text": "question"}]},
    ]  # fmt: skip
    completion(model=MODEL, messages=messages, mock_response="Fine.", guard=fake)
    assert fake.scorer.calls[-1] == [("second\nquestion", "Fine.")]  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"guard": "default"}, TypeError, "guard must be a guardrail.Guard, got str"),
        ({"policy": 3}, TypeError, "policy must be a policy name, a path or a Policy, got int"),
        ({"policies": {"a": "default"}}, TypeError, "policies must be a guardrail.PolicySet, got dict"),
        ({"policy": "strict", "policies": PolicySet({}, scorer=FakeScorer())}, ValueError, "got policy and policies"),
        ({"n": "2"}, TypeError, "n must be a whole number of choices, got str '2'"),
        ({"n": 2.0}, TypeError, "n must be a whole number of choices, got float 2.0"),
        ({"n": True}, TypeError, "n must be a whole number of choices, got bool True"),
        ({"n": 0}, ValueError, "n must be at least 1, got 0"),
        ({"n": 2, "stream": True}, ValueError, "a guarded stream carries one choice; got n=2"),
        ({"metadata": "deployment"}, TypeError, "metadata must be a mapping, got str"),
        ({"messages": "hi"}, TypeError, "messages must be a list of chat messages, got str"),
    ],
)
def test_bad_arguments_fail_before_the_call(kwargs: dict[str, Any], error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        completion(**{"model": MODEL, "messages": MESSAGES, "mock_response": "x", **kwargs})


def test_positional_model_and_messages_work_like_litellm(fake: Guard) -> None:
    response = completion(MODEL, MESSAGES, mock_response="Go hurt them.", guard=fake)
    assert verdict_of(response).decision == "block"  # type: ignore[union-attr]
    with pytest.raises(TypeError, match="pass arguments after model and messages by keyword"):
        completion(MODEL, MESSAGES, 30, guard=fake)
    with pytest.raises(TypeError, match="multiple values for argument 'model'"):
        completion(MODEL, model=MODEL, messages=MESSAGES, guard=fake)


def test_exports_are_pinned() -> None:
    assert guardrail_litellm.__all__ == [
        "AsyncGuardedCompletionStream", "GuardedCompletionStream", "ValueGuardrail",
        "acompletion", "completion", "default_guard", "verdict_of", "verdicts_of",
    ]  # fmt: skip


# -- the examples ------------------------------------------------------------------------------------

REPO = Path(__file__).resolve().parent.parent


def test_chat_example_runs() -> None:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
    result = subprocess.run([sys.executable, str(REPO / "examples" / "litellm_chat.py")], capture_output=True,
                            text=True, timeout=300, env=env, cwd=REPO)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    assert "decision: allow" in out and f"answer:   {BENIGN}" in out
    assert "decision: block" in out and "wallet" not in out
    assert "characters of the blocked answer delivered: 0" in out
    assert "async decision: allow" in out


def test_proxy_example_points_at_the_shipped_config() -> None:
    text = (REPO / "examples" / "litellm_proxy.md").read_text(encoding="utf-8")
    assert "--config integrations/guardrail_litellm/proxy_config.yaml" in text
    assert (REPO / "integrations" / "guardrail_litellm" / "proxy_config.yaml").is_file()
    assert "harmful-model" in text and "benign-model" in text
