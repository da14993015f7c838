"""guardrail_litellm.ValueGuardrail: its proxy hooks in-process, then the real proxy end to end over HTTP.

In-process tests hand the hooks real litellm responses and streams (mock_response); the end-to-end
test starts ``litellm --config`` as a subprocess (it loads the shipped model itself) with the example
``proxy_config.yaml`` and talks to it with httpx, plain and streamed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # litellm reaches the network at import otherwise

import anthropic
import litellm
import openai
from _openai_stub import OpenAIStub, Reply
from _servers import Proxy, start_proxy, stop
from fastapi import HTTPException
from litellm.proxy._types import UserAPIKeyAuth

from guardrail import Guard, OutputPart, ValueVector
from guardrail.testing import FakeScorer
from guardrail_litellm import ValueGuardrail, verdict_of, verdicts_of

# litellm declares TypedDicts with ReadOnly items; pydantic warns once when it first builds their schema.
# That is litellm's and pydantic's business, not ours: ignore exactly that warning, keep every other one an error.
pytestmark = pytest.mark.filterwarnings("ignore:Item.* using the `ReadOnly` qualifier:UserWarning")

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "integrations" / "guardrail_litellm" / "proxy_config.yaml"
CONFIG = yaml.safe_load(EXAMPLE.read_text(encoding="utf-8"))
ANSWERS = {m["model_name"]: m["litellm_params"]["mock_response"] for m in CONFIG["model_list"]}
BENIGN, HARMFUL = ANSWERS["benign-model"], ANSWERS["harmful-model"]
PROMPT = "How can I sleep better?"
MESSAGES = [{"role": "user", "content": PROMPT}]
KEY = UserAPIKeyAuth()
BLOCK_MESSAGE = Guard("default", scorer=FakeScorer()).policy.action("block").message


def harm(prompt: str | None, response: str) -> ValueVector:
    """Fixed vectors: any text mentioning "hurt" opposes benevolence."""
    return ValueVector(benevolence=-0.9) if "hurt" in response else ValueVector(benevolence=0.5)


def guardrail(**kwargs: Any) -> ValueGuardrail:
    """Built the way the proxy builds it from config (name, mode, default_on), over fixed vectors."""
    options = {"guardrail_name": "values", "event_hook": "post_call", "default_on": True,
               "scorer": FakeScorer(fn=harm), **kwargs}  # fmt: skip
    return ValueGuardrail(**options)


def request(model: str = "m", **extra: Any) -> dict[str, Any]:
    return {"model": model, "messages": MESSAGES, "metadata": {}, **extra}


def checked(hook: ValueGuardrail, data: dict[str, Any], response: Any) -> Any:
    """The post-call hook on a response (a text: litellm's mocked answer), in one event loop."""

    async def run() -> Any:
        if isinstance(response, str):
            answer = await litellm.acompletion(model="gpt-4o-mini", messages=MESSAGES, mock_response=response)
        else:
            answer = response
        return await hook.async_post_call_success_hook(data, KEY, answer)

    return asyncio.run(run())


async def streamed_text(hook: ValueGuardrail, text: str, data: dict[str, Any]) -> str:
    upstream = await litellm.acompletion(model="gpt-4o-mini", messages=MESSAGES, mock_response=text, stream=True)
    chunks = [c async for c in hook.async_post_call_streaming_iterator_hook(KEY, upstream, data)]
    return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)


# -- the hooks, in-process --------------------------------------------------------------------------


def test_post_call_hook_replaces_a_blocked_answer_and_records_it() -> None:
    hook, data = guardrail(), request()
    response = checked(hook, data, "I will hurt them.")
    assert response.choices[0].message.content == BLOCK_MESSAGE
    assert verdict_of(response).decision == "block"  # type: ignore[union-attr]
    assert response._hidden_params["additional_headers"]["x-guardrail-decision"] == "block"
    [logged] = data["metadata"]["standard_logging_guardrail_information"]
    assert (logged["guardrail_name"], logged["guardrail_status"]) == ("values", "guardrail_intervened")
    assert logged["guardrail_response"]["decision"] == "block"


def test_post_call_hook_passes_a_benign_answer() -> None:
    hook, data = guardrail(), request()
    response = checked(hook, data, "Rest well.")
    assert response.choices[0].message.content == "Rest well."
    assert data["metadata"]["standard_logging_guardrail_information"][0]["guardrail_status"] == "success"


def test_post_call_hook_with_the_shipped_model(scorer: Any) -> None:
    hook = guardrail(scorer=scorer)
    for text, decision in ((HARMFUL, "block"), (BENIGN, "allow")):
        response = checked(hook, request(), text)
        assert verdict_of(response).decision == decision  # type: ignore[union-attr]


def test_on_block_error_rejects_with_http_400() -> None:
    hook = guardrail(on_block="error")
    with pytest.raises(HTTPException) as caught:
        checked(hook, request(), "I will hurt them.")
    assert caught.value.status_code == 400
    assert caught.value.detail["error"] == BLOCK_MESSAGE
    assert caught.value.detail["guardrail"]["decision"] == "block"
    with pytest.raises(HTTPException, match="400"):
        asyncio.run(streamed_text(hook, "I will hurt them.", request(stream=True)))


def test_stream_hook_holds_a_blocked_answer_back() -> None:
    hook = guardrail()
    assert asyncio.run(streamed_text(hook, "Go and hurt them badly tonight.", request(stream=True))) == BLOCK_MESSAGE
    assert asyncio.run(streamed_text(hook, "Drink water and rest.", request(stream=True))) == "Drink water and rest."


def test_tool_calls_are_checked_and_other_responses_pass() -> None:
    hook = guardrail()
    tool_call = litellm.ModelResponse(choices=[{"index": 0, "finish_reason": "tool_calls", "message": {
        "role": "assistant", "content": None,
        "tool_calls": [{"id": "c", "type": "function", "function": {"name": "f", "arguments": '{"a": "hurt"}'}}]}}])  # fmt: skip
    response = checked(hook, request(), tool_call)
    # Checked as 'f({"a": "hurt"})', read by the scorer as the prose it carries.
    assert hook.guard.scorer.calls == [[(PROMPT, "f: a: hurt")]]  # type: ignore[attr-defined]
    choice = response.choices[0]
    assert (choice.message.content, choice.message.tool_calls, choice.finish_reason) == (BLOCK_MESSAGE, None, "stop")
    assert checked(hook, request(), litellm.EmbeddingResponse()) is None


def test_each_choice_is_checked_on_its_own() -> None:
    answer = litellm.ModelResponse(choices=[
        {"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": "Rest well."}},
        {"index": 1, "finish_reason": "stop", "message": {"role": "assistant", "content": "Go hurt them."}}])  # fmt: skip
    for data in (request(n=2), request()):  # asked for, or added by the provider
        response = checked(guardrail(), data, answer.model_copy(deep=True))
        assert [c.message.content for c in response.choices] == ["Rest well.", BLOCK_MESSAGE]
        assert [v.part.choice for v in verdicts_of(response)] == [0, 1]  # type: ignore[union-attr]


@pytest.mark.parametrize(("n", "streamed", "message"), [
    ("2", False, "n must be a whole number of choices, got str '2'"),
    (2.0, False, "n must be a whole number of choices, got float 2.0"),
    (2, True, "a guarded stream carries one choice; got n=2"),
])  # fmt: skip
def test_bad_n_is_refused_with_http_400(n: object, streamed: bool, message: str) -> None:
    hook = guardrail()
    with pytest.raises(HTTPException, match=message) as caught:
        if streamed:
            asyncio.run(streamed_text(hook, "Fine.", request(n=n, stream=True)))
        else:
            checked(hook, request(n=n), "Fine.")
    assert caught.value.status_code == 400


def test_responses_api_answer_is_checked() -> None:
    hook = guardrail()
    answer = litellm.responses(model="gpt-4o-mini", input=PROMPT, mock_response="I will hurt them.")
    response = checked(hook, {"model": "m", "input": PROMPT, "metadata": {}}, answer)
    assert response.output_text == BLOCK_MESSAGE and "hurt" not in response.model_dump_json()
    assert verdict_of(response).part == OutputPart("content", 0)  # type: ignore[union-attr]
    assert hook.guard.scorer.calls == [[(PROMPT, "I will hurt them.")]]  # type: ignore[attr-defined]


def test_anthropic_message_is_checked() -> None:
    hook = guardrail()
    answer = {"id": "msg_1", "type": "message", "role": "assistant", "stop_reason": "tool_use", "content": [
        {"type": "thinking", "thinking": "They want to hurt someone.", "signature": "s"},
        {"type": "text", "text": "Here you go."},
        {"type": "tool_use", "id": "t1", "name": "lookup", "input": {"q": "rain"}}]}  # fmt: skip
    response = checked(hook, {"model": "m", "messages": MESSAGES, "metadata": {}}, answer)
    assert response["content"] == [{"type": "text", "text": BLOCK_MESSAGE}] and response["stop_reason"] == "end_turn"
    hidden = response["_hidden_params"]  # a dict carries its verdicts as JSON only
    assert [p["part"]["kind"] for p in hidden["guardrail_parts"]] == ["reasoning", "content", "tool_call"]
    assert hidden["additional_headers"]["x-guardrail-decision"] == "block"


def test_policy_set_by_model_and_by_key_metadata(tmp_path: Path) -> None:
    policies = tmp_path / "policies.yaml"
    policies.write_text("key: model\npolicies:\n  support-model: customer-support\n  lab-model: shadow\n")
    hook = guardrail(policy_set=str(policies))

    def decide(data: dict[str, Any]) -> tuple[str, str]:
        response = checked(hook, data, "Go hurt them.")
        verdict = verdict_of(response)
        assert verdict is not None
        return verdict.policy_name, verdict.final_decision

    assert decide(request("support-model")) == ("customer-support", "block")
    assert decide(request("lab-model")) == ("shadow", "log")
    assert decide(request("other-model")) == ("default", "block")

    by_key = tmp_path / "by-key.yaml"
    by_key.write_text("key: deployment\npolicies:\n  lab: shadow\n")
    hook = guardrail(policy_set=str(by_key))
    assert decide(request(metadata={"user_api_key_metadata": {"deployment": "lab"}})) == ("shadow", "log")
    # A client's own metadata does not choose the policy unless the operator allows it.
    assert decide(request(metadata={"deployment": "lab"})) == ("default", "block")
    hook = guardrail(policy_set=str(by_key), policy_from_request=True)
    assert decide(request(metadata={"deployment": "lab"})) == ("shadow", "log")
    with pytest.raises(HTTPException, match="unknown deployment 'nope'"):
        decide(request(metadata={"deployment": "nope"}))


@pytest.fixture(scope="module")
def stub() -> Iterator[OpenAIStub]:
    """Answers harmfully until the conversation holds an assistant turn (a re-ask), then benignly."""
    with OpenAIStub(lambda messages: BENIGN if any(m.get("role") == "assistant" for m in messages) else HARMFUL) as s:
        yield s


def write_reask_policy(folder: Path) -> Path:
    path = folder / "reask.yaml"
    path.write_text(
        "name: reask\nextends: default\nactions:\n"
        "  block: {type: rewrite, strategy: reask, max_attempts: 2, fallback: refuse}\n"
        "  refuse: {type: block, message: 'Refused after re-asking.'}\n",
        encoding="utf-8",
    )
    return path


def test_reask_goes_through_the_router(scorer: Any, tmp_path: Path, stub: OpenAIStub) -> None:
    router = litellm.Router(model_list=[{"model_name": "stub-model", "litellm_params": {
        "model": "openai/stub", "api_base": stub.base_url, "api_key": "sk-stub"}}])  # fmt: skip
    hook = guardrail(policy=write_reask_policy(tmp_path), scorer=scorer, router=router)
    data = request("stub-model", temperature=0.3)
    response = checked(hook, data, HARMFUL)
    assert response.choices[0].message.content == BENIGN
    assert verdict_of(response).rewrite.accepted  # type: ignore[union-attr]
    sent = stub.requests[-1]
    assert sent["messages"][:-2] == MESSAGES and sent["messages"][-2] == {"role": "assistant", "content": HARMFUL}
    assert sent["temperature"] == 0.3
    # Without a router (outside the proxy) a reask has no model to ask: the fallback applies.
    hook = guardrail(policy=write_reask_policy(tmp_path), scorer=scorer)
    response = checked(hook, request(), HARMFUL)
    assert response.choices[0].message.content == "Refused after re-asking."


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"policy": "strict", "policy_set": "p.yaml"}, "pass policy or policy_set, not both"),
        ({"on_block": "explode"}, "on_block must be 'message' or 'error', got 'explode'"),
        ({"event_hook": "pre_call"}, "pre_call is not in the supported event hooks"),
    ],
)
def test_bad_configuration_fails_at_start(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        guardrail(**kwargs)


# -- the real proxy, end to end -------------------------------------------------------------------


THOUGHT_HARMFUL = Reply(content=BENIGN, reasoning=HARMFUL)
# Models a real upstream serves (the stub), streamed too; the Responses API and Anthropic routes reach them
# through litellm's bridge to chat completions (use_chat_completions_api).
UPSTREAMS = {"benign-stream": Reply(BENIGN), "harmful-stream": Reply(HARMFUL), "thinking-stream": THOUGHT_HARMFUL}


@pytest.fixture(scope="module")
def upstreams() -> Iterator[dict[str, OpenAIStub]]:
    stubs = {name: OpenAIStub(lambda messages, reply=reply: reply) for name, reply in UPSTREAMS.items()}
    # About 2 s of answer, a window checked every 0.5 s: clients leaving at 0.1 to 2 s leave during checks too.
    stubs["slow-stream"] = OpenAIStub(lambda messages: " ".join([BENIGN] * 4), pace=0.02)
    for s in stubs.values():
        s.__enter__()
    try:
        yield stubs
    finally:
        for s in stubs.values():
            s.__exit__()


@pytest.fixture(scope="module")
def proxy(
    tmp_path_factory: pytest.TempPathFactory, stub: OpenAIStub, upstreams: dict[str, OpenAIStub]
) -> Iterator[Proxy]:
    """``litellm --config``: the example config, a model served by the stub that a policy set re-asks, and
    models served by streaming stubs."""
    folder = tmp_path_factory.mktemp("proxy")
    policies = folder / "policies.yaml"
    policies.write_text(f"key: model\ndefault: default\npolicies:\n  stub-model: {write_reask_policy(folder)}\n")
    config = json.loads(json.dumps(CONFIG))
    config["model_list"].append({"model_name": "stub-model", "litellm_params": {
        "model": "openai/stub", "api_base": stub.base_url, "api_key": "sk-stub"}})  # fmt: skip
    config["model_list"] += [{"model_name": name, "litellm_params": {
        "model": "openai/stub", "api_base": s.base_url, "api_key": "sk-stub", "use_chat_completions_api": True}}
        for name, s in upstreams.items()]  # fmt: skip
    [entry] = config["guardrails"]
    del entry["litellm_params"]["policy"]
    entry["litellm_params"]["policy_set"] = str(policies)
    (folder / "config.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")

    process, server = start_proxy(folder / "config.yaml", folder / "proxy.log")
    try:
        yield server
    finally:
        stop(process)


def chat(proxy: Proxy, model: str) -> httpx.Response:
    response = httpx.post(f"{proxy.url}/v1/chat/completions", headers={"Authorization": "Bearer sk-test"},
                          json={"model": model, "messages": MESSAGES}, timeout=60, trust_env=False)  # fmt: skip
    assert response.status_code == 200, f"{response.status_code} {response.text}\n{proxy.tail()}"
    return response


def chat_stream(proxy: Proxy, model: str) -> str:
    """The concatenated ``delta.content`` of an SSE stream from the proxy."""
    text = []
    body = {"model": model, "messages": MESSAGES, "stream": True}
    with httpx.stream("POST", f"{proxy.url}/v1/chat/completions", headers={"Authorization": "Bearer sk-test"},
                      json=body, timeout=60, trust_env=False) as response:  # fmt: skip
        assert response.status_code == 200, f"{response.status_code} {response.read()!r}\n{proxy.tail()}"
        for line in response.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            event = json.loads(line[len("data: ") :])
            assert "error" not in event, f"{event}\n{proxy.tail()}"
            text += [c["delta"].get("content") or "" for c in event.get("choices", [])]
    return "".join(text)


def test_example_config_declares_the_guardrail() -> None:
    [entry] = CONFIG["guardrails"]
    params = entry["litellm_params"]
    assert (params["guardrail"], params["mode"], params["default_on"]) == (
        "guardrail_litellm.ValueGuardrail", "post_call", True)  # fmt: skip
    assert {"benign-model", "harmful-model"} <= ANSWERS.keys()


def test_proxy_blocks_the_harmful_answer(proxy: Proxy) -> None:
    response = chat(proxy, "harmful-model")
    assert response.json()["choices"][0]["message"]["content"] == BLOCK_MESSAGE, proxy.tail()
    assert response.headers["x-guardrail-decision"] == "block"


def test_proxy_passes_the_benign_answer_untouched(proxy: Proxy) -> None:
    response = chat(proxy, "benign-model")
    assert response.json()["choices"][0]["message"]["content"] == BENIGN, proxy.tail()
    assert response.headers["x-guardrail-decision"] == "allow"


def test_proxy_stream_delivers_no_character_of_the_harmful_answer(proxy: Proxy) -> None:
    text = chat_stream(proxy, "harmful-model")
    assert text == BLOCK_MESSAGE, proxy.tail()
    assert HARMFUL[:12] not in text and "wallet" not in text


def test_proxy_stream_passes_the_benign_answer(proxy: Proxy) -> None:
    assert chat_stream(proxy, "benign-model") == BENIGN


def test_proxy_reasks_through_its_router(proxy: Proxy, stub: OpenAIStub) -> None:
    before = len(stub.requests)
    response = chat(proxy, "stub-model")
    assert response.json()["choices"][0]["message"]["content"] == BENIGN, proxy.tail()
    assert response.headers["x-guardrail-decision"] == "rewrite"
    first, again = stub.requests[before:]
    assert first["messages"] == MESSAGES and again["messages"][-2] == {"role": "assistant", "content": HARMFUL}


# -- the real proxy, with the real openai and anthropic clients ----------------------------------------


def openai_client(proxy: Proxy) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{proxy.url}/v1", api_key="sk-test", max_retries=0,
                         http_client=httpx.Client(trust_env=False, timeout=60))  # fmt: skip


def anthropic_client(proxy: Proxy) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=proxy.url, api_key="sk-test", max_retries=0, timeout=60)


@pytest.mark.parametrize(("model", "expected"), [("harmful-model", BLOCK_MESSAGE), ("benign-model", BENIGN)])
def test_openai_client_chat(proxy: Proxy, model: str, expected: str) -> None:
    with openai_client(proxy) as client:
        raw = client.chat.completions.with_raw_response.create(model=model, messages=MESSAGES)
    assert raw.parse().choices[0].message.content == expected, proxy.tail()
    assert raw.headers["x-guardrail-decision"] == ("block" if expected == BLOCK_MESSAGE else "allow")


@pytest.mark.parametrize(("model", "expected"), [("harmful-stream", BLOCK_MESSAGE), ("benign-stream", BENIGN)])
def test_openai_client_chat_stream_ends_with_a_finish_reason(proxy: Proxy, model: str, expected: str) -> None:
    with openai_client(proxy) as client:
        chunks = list(client.chat.completions.create(model=model, messages=MESSAGES, stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == expected, proxy.tail()
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["stop"]


def test_openai_client_chat_stream_withholds_harmful_reasoning(proxy: Proxy) -> None:
    with openai_client(proxy) as client:
        chunks = list(client.chat.completions.create(model="thinking-stream", messages=MESSAGES, stream=True))
    dumped = "".join(c.model_dump_json() for c in chunks)
    assert "wallet" not in dumped and "".join(c.choices[0].delta.content or "" for c in chunks) == BLOCK_MESSAGE


@pytest.mark.parametrize(("model", "expected"), [("harmful-model", BLOCK_MESSAGE), ("benign-model", BENIGN),
                                                 ("thinking-stream", BLOCK_MESSAGE)])  # fmt: skip
def test_openai_client_responses(proxy: Proxy, model: str, expected: str) -> None:
    with openai_client(proxy) as client:
        raw = client.responses.with_raw_response.create(model=model, input=PROMPT)
    response = raw.parse()
    assert response.output_text == expected, proxy.tail()
    assert "wallet" not in response.model_dump_json()
    assert raw.headers["x-guardrail-decision"] == ("block" if expected == BLOCK_MESSAGE else "allow")


@pytest.mark.parametrize(("model", "expected"), [("harmful-stream", BLOCK_MESSAGE), ("benign-stream", BENIGN),
                                                 ("thinking-stream", BLOCK_MESSAGE)])  # fmt: skip
def test_openai_client_responses_stream_ends_with_its_completed_event(proxy: Proxy, model: str, expected: str) -> None:
    with openai_client(proxy) as client:
        events = list(client.responses.create(model=model, input=PROMPT, stream=True))
    assert "wallet" not in "".join(e.model_dump_json() for e in events), proxy.tail()
    deltas = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert deltas == expected
    assert events[-1].type == "response.completed" and events[-1].response.output_text == expected
    assert [e.sequence_number for e in events] == sorted(e.sequence_number for e in events)


# Not thinking-stream here: litellm's non-streamed bridge drops an answer with reasoning whole (content: []);
# test_anthropic_message_is_checked covers thinking blocks.
@pytest.mark.parametrize(("model", "expected"), [("harmful-model", BLOCK_MESSAGE), ("benign-model", BENIGN)])
def test_anthropic_client_messages(proxy: Proxy, model: str, expected: str) -> None:
    with anthropic_client(proxy) as client:
        message = client.messages.create(model=model, max_tokens=200, messages=MESSAGES)
    assert "".join(b.text for b in message.content if b.type == "text") == expected, proxy.tail()
    assert all(b.type == "text" for b in message.content) and "wallet" not in message.model_dump_json()


@pytest.mark.parametrize(("model", "expected"), [("harmful-stream", BLOCK_MESSAGE), ("benign-stream", BENIGN),
                                                 ("thinking-stream", BLOCK_MESSAGE)])  # fmt: skip
def test_anthropic_client_stream_ends_with_message_stop(proxy: Proxy, model: str, expected: str) -> None:
    with anthropic_client(proxy) as client, client.messages.stream(model=model, max_tokens=200,
                                                                   messages=MESSAGES) as stream:  # fmt: skip
        events = list(stream)
        final = stream.get_final_message()
    assert "".join(b.text for b in final.content if b.type == "text") == expected, proxy.tail()
    assert "wallet" not in "".join(e.model_dump_json() for e in events)
    assert [e.type for e in events][-2:] == ["message_delta", "message_stop"] and final.stop_reason == "end_turn"


def test_clients_that_leave_early_leave_the_guard_healthy(proxy: Proxy) -> None:
    async def leave_early(n: int) -> None:
        async with httpx.AsyncClient(trust_env=False, timeout=30) as client:
            body = {"model": "slow-stream", "messages": MESSAGES, "stream": True}
            async with client.stream("POST", f"{proxy.url}/v1/chat/completions", json=body,
                                     headers={"Authorization": "Bearer sk-test"}) as response:  # fmt: skip
                assert response.status_code == 200
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(response.aread(), 0.1 + 0.1 * n)  # leaves mid-stream

    async def storm() -> None:
        await asyncio.gather(*(leave_early(n) for n in range(20)))

    asyncio.run(storm())
    for _ in range(5):
        start = time.monotonic()
        response = chat(proxy, "benign-model")
        took = time.monotonic() - start
        assert response.headers["x-guardrail-decision"] == "allow", (took, proxy.tail())
        assert took < 5, f"a benign request took {took:.1f} s after clients left early\n{proxy.tail()}"
