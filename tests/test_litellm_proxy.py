"""guardrail_litellm.ValueGuardrail: its proxy hooks in-process, then the real proxy end to end over HTTP.

In-process tests hand the hooks real litellm responses and streams (mock_response); the end-to-end
test starts ``litellm --config`` as a subprocess (it loads the shipped model itself) with the example
``proxy_config.yaml`` and talks to it with httpx, plain and streamed.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # litellm reaches the network at import otherwise

import litellm
from _openai_stub import OpenAIStub
from fastapi import HTTPException
from litellm.proxy._types import UserAPIKeyAuth

from guardrail import Guard, ValueVector
from guardrail.testing import FakeScorer
from guardrail_litellm import ValueGuardrail, verdict_of

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


async def streamed(hook: ValueGuardrail, text: str, data: dict[str, Any]) -> str:
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
        asyncio.run(streamed(hook, "I will hurt them.", request(stream=True)))


def test_stream_hook_holds_a_blocked_answer_back() -> None:
    hook = guardrail()
    assert asyncio.run(streamed(hook, "Go and hurt them badly tonight.", request(stream=True))) == BLOCK_MESSAGE
    assert asyncio.run(streamed(hook, "Drink water and rest.", request(stream=True))) == "Drink water and rest."


def test_answers_without_text_and_other_responses_pass() -> None:
    hook = guardrail()
    tool_call = litellm.ModelResponse(choices=[{"index": 0, "finish_reason": "tool_calls", "message": {
        "role": "assistant", "content": None,
        "tool_calls": [{"id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"}}]}}])  # fmt: skip
    assert checked(hook, request(), tool_call) is None
    assert checked(hook, request(), litellm.EmbeddingResponse()) is None
    assert hook.guard.scorer.calls == []  # type: ignore[attr-defined]


def test_more_than_one_choice_is_refused() -> None:
    with pytest.raises(HTTPException, match="checks one answer; got n=2"):
        checked(guardrail(), request(n=2), "Fine.")


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


@dataclass
class Proxy:
    url: str
    log: Path

    def tail(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")[-4000:]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def proxy(tmp_path_factory: pytest.TempPathFactory, stub: OpenAIStub) -> Iterator[Proxy]:
    """``litellm --config``: the example config, plus a model served by the stub that a policy set re-asks."""
    folder = tmp_path_factory.mktemp("proxy")
    policies = folder / "policies.yaml"
    policies.write_text(f"key: model\ndefault: default\npolicies:\n  stub-model: {write_reask_policy(folder)}\n")
    config = json.loads(json.dumps(CONFIG))
    config["model_list"].append({"model_name": "stub-model", "litellm_params": {
        "model": "openai/stub", "api_base": stub.base_url, "api_key": "sk-stub"}})  # fmt: skip
    [entry] = config["guardrails"]
    del entry["litellm_params"]["policy"]
    entry["litellm_params"]["policy_set"] = str(policies)
    (folder / "config.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")

    process, server = start_proxy(folder / "config.yaml", folder / "proxy.log")
    try:
        yield server
    finally:
        stop(process)


def start_proxy(config: Path, log: Path, attempts: int = 2) -> tuple[subprocess.Popen[bytes], Proxy]:
    """Start the proxy and wait until it is live; a start that dies early (a port race) is retried once."""
    env = {**os.environ, "LITELLM_MASTER_KEY": "sk-test", "LITELLM_LOCAL_MODEL_COST_MAP": "True",
           "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "NO_PROXY": "127.0.0.1,localhost"}  # fmt: skip
    for attempt in range(1, attempts + 1):
        port = free_port()
        command = [sys.executable, "-c", "import sys; from litellm import run_server; sys.exit(run_server())",
                   "--config", str(config), "--host", "127.0.0.1", "--port", str(port)]  # fmt: skip
        with log.open("ab") as out:
            out.write(f"--- attempt {attempt}, port {port}\n".encode())
            out.flush()
            process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=config.parent)
        server = Proxy(f"http://127.0.0.1:{port}", log)
        deadline = time.monotonic() + 180  # the proxy imports a lot and loads the model: ~10-20 s here
        while process.poll() is None and time.monotonic() < deadline:
            try:
                if httpx.get(f"{server.url}/health/liveliness", timeout=2, trust_env=False).status_code == 200:
                    return process, server
            except httpx.TransportError:
                pass
            time.sleep(0.5)
        stop(process)
        if time.monotonic() >= deadline:
            pytest.fail(f"the proxy was not ready after 180 s:\n{server.tail()}", pytrace=False)
    pytest.fail(f"the proxy exited with {process.returncode}:\n{server.tail()}", pytrace=False)


def stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=15)


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
