"""``guardrail serve`` for real: uvicorn on 127.0.0.1, the shipped model, RemoteScorer, LiteLLM's proxy.

The service runs as a subprocess (``guardrail serve --runtime torch``, the reference runtime, so its
scores are the session scorer's to the bit). Load tests send 2,000 concurrent checks through a
``RemoteScorer`` and through the Generic Guardrail route and compare every verdict with a local
check of the same text: nothing lost, nothing crossed. Latency percentiles are printed (``-s``).
"""

from __future__ import annotations

import asyncio
import json
import random
import statistics
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
import yaml
from _servers import free_port, patient_policy, same_vectors, start_proxy, start_service, stop
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from guardrail import Guard, RemoteScorer, ScorerError, TransformerScorer, load_policy
from guardrail._values import VALUES

REPO = Path(__file__).resolve().parent.parent
TOKEN = "s3cret-token"
AUTH = {"authorization": f"Bearer {TOKEN}"}
BENIGN = "Most adults need seven to nine hours of sleep; a dark, quiet room and a regular bedtime help."
HARMFUL = (
    "Wait until they leave their wallet unattended, take a photo of the card, then use it for online "
    "purchases shipped to a different address so you don't get caught."
)
LOAD = 2_000


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``guardrail serve`` with two policies and a token; its base URL."""
    folder = tmp_path_factory.mktemp("serve")
    process, url = start_service(
        ["--runtime", "torch", "--policy", str(patient_policy(folder)), "--policy", "strict", "--timeout-ms", "300000"],
        folder / "serve.log", env={"GUARDRAIL_SERVE_TOKEN": TOKEN},
    )  # fmt: skip
    try:
        yield url
    finally:
        stop(process)


@pytest.fixture(scope="module")
def local(scorer: TransformerScorer) -> Guard:
    return Guard("default", scorer)


@pytest.fixture(scope="module")
def answers(data_dir: Path) -> list[tuple[str | None, str]]:
    """2,000 distinct real answers (a fixed sample of the harm sources), half with their prompts."""
    files = sorted((data_dir / "harm").glob("*.jsonl"))
    rows = [json.loads(line) for f in files for line in f.read_text(encoding="utf-8").splitlines()]
    rows = [r for r in rows if 40 < len(r["response"]) < 200]  # ~10-45 tokens: the load stays bounded
    chosen = random.Random(17).sample(rows, LOAD)
    return [(r["prompt"] if n % 2 else None, r["response"]) for n, r in enumerate(chosen)]


def post(url: str, path: str, body: Any, headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.post(f"{url}{path}", json=body, headers=AUTH if headers is None else headers, timeout=60,
                      trust_env=False)  # fmt: skip


def percentiles(times: list[float]) -> str:
    ordered = sorted(times)
    at = {q: ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000 for q in (0.5, 0.99)}
    return f"p50 {at[0.5]:.1f} ms, p99 {at[0.99]:.1f} ms, mean {statistics.mean(times) * 1000:.1f} ms"


# -- the API --------------------------------------------------------------------------------


def test_probes_need_no_token(service: str) -> None:
    assert httpx.get(f"{service}/healthz", trust_env=False).json() == {"status": "ok"}
    ready = httpx.get(f"{service}/readyz", trust_env=False).json()
    assert ready["status"] == "ready" and ready["model"] == "value-guardrail-minilm-head"
    assert {"default", "strict"} <= set(ready["policies"])


@pytest.mark.parametrize("headers", [{}, {"authorization": "Bearer wrong"}, {"authorization": TOKEN}])
def test_requests_without_the_token_are_refused(service: str, headers: dict[str, str]) -> None:
    response = post(service, "/v1/score", {"items": [{"response": BENIGN}]}, headers)
    assert response.status_code == 401 and response.json() == {"error": "missing or wrong bearer token"}


def test_litellms_api_key_header_is_accepted(service: str) -> None:
    assert post(service, "/v1/score", {"items": [{"response": BENIGN}]}, {"x-api-key": TOKEN}).status_code == 200


def test_score_gives_the_local_vectors(service: str, scorer: TransformerScorer) -> None:
    items = [("How do I sleep better?", BENIGN), (None, HARMFUL)]
    body = post(service, "/v1/score", {"items": [{"prompt": p, "response": r} for p, r in items]}).json()
    assert body["model"] == scorer.model_id and body["values"] == list(VALUES)
    assert body["vectors"] == [v.to_list() for v in scorer.score(items)]


def test_check_decides_under_the_named_policy(service: str, local: Guard) -> None:
    body = post(service, "/v1/check", {"items": [{"response": BENIGN}, {"response": HARMFUL}]}).json()
    assert body["policy"] == "default"
    assert [v["decision"] for v in body["verdicts"]] == ["allow", "block"]
    assert body["verdicts"][1]["scores"] == local.check(HARMFUL).to_dict()["scores"]
    strict = post(service, "/v1/check", {"policy": "strict", "items": [{"response": BENIGN}]}).json()
    assert strict["policy"] == "strict" and strict["verdicts"][0]["policy"]["name"] == "strict"


@pytest.mark.parametrize(
    ("body", "status", "error"),
    [
        ({"items": []}, 422, "items: List should have at least 1 item"),
        ({"items": [{"response": 3}]}, 422, "items.0.response: Input should be a valid string"),
        ({"items": [{"response": "x", "answer": "y"}]}, 422, "items.0.answer: Extra inputs are not permitted"),
        ({"items": [{"response": "x"}] * 1025}, 413, "1,025 items are over max_items=1,024"),
        ({"policy": "../etc/passwd", "items": [{"response": "x"}]}, 404, "unknown policy '../etc/passwd'"),
    ],
)
def test_bad_requests_get_a_clear_error(service: str, body: Any, status: int, error: str) -> None:
    response = post(service, "/v1/check", body)
    assert response.status_code == status and error in response.json()["error"], response.text


def test_a_body_over_the_limit_is_refused_unread(service: str) -> None:
    response = post(service, "/v1/score", {"items": [{"response": "x" * (5 << 20)}]})
    assert response.status_code == 413 and "max_body_bytes=4,194,304" in response.json()["error"]
    not_json = httpx.post(f"{service}/v1/score", content=b"{oops", headers=AUTH, trust_env=False)
    assert not_json.status_code == 400 and "not JSON" in not_json.json()["error"]


def test_generic_guardrail_route_speaks_litellms_shape(service: str) -> None:
    route = "/beta/litellm_basic_guardrail_api"
    request = {"input_type": "response", "request_data": {}, "litellm_call_id": "c1",
               "structured_messages": [{"role": "user", "content": "Any tips?"}]}  # fmt: skip
    assert post(service, route, {**request, "texts": [BENIGN]}).json() == {"action": "NONE"}
    blocked = post(service, route, {**request, "texts": [BENIGN, HARMFUL]}).json()
    block_message = load_policy("default").action("block").message
    assert blocked["action"] == "BLOCKED" and blocked["blocked_reason"] == block_message
    assert post(service, route, {**request, "texts": []}).json() == {"action": "NONE"}
    unknown = post(service, route, {**request, "texts": [BENIGN], "additional_provider_specific_params": {
        "policy": "nope"}})  # fmt: skip
    assert unknown.status_code == 404


# -- load: 2,000 concurrent checks ------------------------------------------------------------


def test_remote_scorer_loses_and_crosses_nothing_under_load(
    service: str, local: Guard, answers: list[tuple[str | None, str]], tmp_path: Path
) -> None:
    want = local.check_many([r for _, r in answers], [p for p, _ in answers], timeout_ms=600_000)
    scorer = RemoteScorer(service, timeout_ms=300_000, token=TOKEN)
    remote = Guard(patient_policy(tmp_path), scorer)
    times: list[float] = []

    async def one(prompt: str | None, response: str) -> Any:
        start = time.perf_counter()
        verdict = await remote.acheck(response, prompt)
        times.append(time.perf_counter() - start)
        return verdict

    async def run() -> list[Any]:
        try:
            return await asyncio.gather(*(one(p, r) for p, r in answers))
        finally:
            await scorer.aclose()

    started = time.perf_counter()
    got = asyncio.run(run())
    elapsed = time.perf_counter() - started
    assert len(got) == LOAD and all(v.error is None for v in got)
    assert same_vectors(got, want)  # each its own answer's vector
    assert [v.decision for v in got] == [v.decision for v in want]
    print(f"\nRemoteScorer: {LOAD} concurrent checks in {elapsed:.1f} s ({LOAD / elapsed:.0f}/s), {percentiles(times)}")


def test_generic_guardrail_route_under_load(service: str, local: Guard, answers: list[tuple[str | None, str]]) -> None:
    texts = [r for _, r in answers]
    want = [v.decision for v in local.check_many(texts, timeout_ms=600_000)]
    times: list[float] = []

    async def run() -> list[dict[str, Any]]:
        limits = httpx.Limits(max_connections=64)
        slots = asyncio.Semaphore(64)  # a proxy fleet's connections: 64 at a time, the rest queued here
        async with httpx.AsyncClient(base_url=service, headers=AUTH, limits=limits, timeout=300, trust_env=False) as c:

            async def one(text: str) -> dict[str, Any]:
                start = time.perf_counter()
                body = {"input_type": "response", "texts": [text], "request_data": {}}
                async with slots:
                    response = await c.post("/beta/litellm_basic_guardrail_api", json=body)
                times.append(time.perf_counter() - start)
                response.raise_for_status()
                return dict(response.json())

            return await asyncio.gather(*(one(t) for t in texts))

    got = asyncio.run(run())
    assert len(got) == LOAD
    assert [a["action"] == "BLOCKED" for a in got] == [d == "block" for d in want]
    assert not any(a["action"] == "GUARDRAIL_INTERVENED" for a in got)  # the default policy only blocks
    print(f"\nGeneric Guardrail route: {LOAD} concurrent checks, {percentiles(times)}")


# -- RemoteScorer when the service is down, slow or failing ---------------------------------


class _Stub:
    """A real uvicorn server with a /v1/score that fails as told, in a thread."""

    def __init__(self, handler: Any) -> None:
        self.calls = 0

        async def score(request: Request) -> Response:
            self.calls += 1
            return await handler(self.calls, await request.json())

        app = Starlette(routes=[Route("/v1/score", score, methods=["POST"])])
        self.port = free_port()
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        while not self.server.started:
            time.sleep(0.02)
        return f"http://127.0.0.1:{self.port}"

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(10)


def vectors_for(body: dict[str, Any]) -> JSONResponse:
    return JSONResponse({"model": "stub", "vectors": [[0.0] * 10 for _ in body["items"]]})


def test_a_service_that_is_down_fails_closed() -> None:
    with RemoteScorer(f"http://127.0.0.1:{free_port()}", timeout_ms=2000, retries=2) as scorer:
        started = time.perf_counter()
        verdict = Guard("default", scorer).check(BENIGN)
    assert verdict.decision == "block" and "ConnectError" in (verdict.error or "") and "3 attempts" in verdict.error
    assert time.perf_counter() - started < 2.5


def test_a_slow_service_fails_closed_at_the_deadline() -> None:
    async def slow(calls: int, body: dict[str, Any]) -> Response:
        await asyncio.sleep(3)
        return vectors_for(body)

    with _Stub(slow) as url, RemoteScorer(url, timeout_ms=300) as scorer:
        started = time.perf_counter()
        verdict = Guard("default", scorer).check(BENIGN)
        assert time.perf_counter() - started < 1.5
        assert verdict.decision == "block" and "no answer within timeout_ms=300" in (verdict.error or "")


def test_unavailable_is_repeated_and_bad_requests_are_not() -> None:
    async def flaky(calls: int, body: dict[str, Any]) -> Response:
        return JSONResponse({"error": "busy"}, status_code=503) if calls == 1 else vectors_for(body)

    stub = _Stub(flaky)
    with stub as url:
        scorer = RemoteScorer(url)
        assert len(scorer.score([(None, "a"), ("p", "b")])) == 2 and scorer.model_id == "stub"

        async def once() -> Any:
            try:
                return await scorer.ascore([(None, "c")])
            finally:
                await scorer.aclose()

        assert asyncio.run(once())[0].benevolence == 0.0
    assert stub.calls == 3  # the 503 once more, then the async call

    async def refuses(calls: int, body: dict[str, Any]) -> Response:
        return JSONResponse({"error": "items.0.response: Input should be a valid string"}, status_code=422)

    refusing = _Stub(refuses)
    with (
        refusing as url,
        RemoteScorer(url) as scorer,
        pytest.raises(ScorerError, match=r"HTTP 422: items\.0\.response"),
    ):
        scorer.score([(None, "a")])
    assert refusing.calls == 1  # a refusal is not repeated


def test_a_malformed_answer_is_a_scorer_error() -> None:
    async def wrong(calls: int, body: dict[str, Any]) -> Response:
        return JSONResponse({"vectors": [[2.0] * 10]})

    with _Stub(wrong) as url, RemoteScorer(url) as scorer:
        verdict = Guard("default", scorer).check(BENIGN)
        assert verdict.decision == "block" and "malformed answer" in (verdict.error or "")


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"url": "ftp://x"}, "url must be an http:// or https:// URL"),
        ({"url": "http://x", "timeout_ms": 0}, "timeout_ms must be > 0"),
        ({"url": "http://x", "retries": -1}, "retries must be an integer >= 0"),
    ],
)
def test_bad_settings_are_clear_errors(kwargs: dict[str, Any], error: str) -> None:
    with pytest.raises(ValueError, match=error):
        RemoteScorer(**kwargs)


def test_a_policy_names_its_scoring_service(service: str, tmp_path: Path, local: Guard,
                                           monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    monkeypatch.setenv("GUARDRAIL_SERVE_TOKEN", TOKEN)
    policy = yaml.safe_load((REPO / "policies" / "default.yaml").read_text(encoding="utf-8"))
    policy["scorer"] = {"remote": service}
    (tmp_path / "remote.yaml").write_text(yaml.safe_dump(policy), encoding="utf-8")
    guard = Guard(str(tmp_path / "remote.yaml"))
    assert type(guard.scorer).__name__ == "MicroBatcher"  # concurrent checks share one request
    assert guard.check(HARMFUL).to_dict()["scores"] == local.check(HARMFUL).to_dict()["scores"]
    policy["scorer"] = {"remote": {"url": "localhost:80"}}
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(policy), encoding="utf-8")
    with pytest.raises(Exception, match=r"scorer\.remote\.url"):
        load_policy(tmp_path / "bad.yaml")


# -- the LiteLLM proxy, its guardrail the service -------------------------------------------


def test_litellm_proxy_calls_the_service_as_its_guardrail(service: str, tmp_path: Path) -> None:
    config = yaml.safe_load((REPO / "examples" / "serving" / "proxy_config.yaml").read_text(encoding="utf-8"))
    [entry] = config["guardrails"]
    entry["litellm_params"]["api_base"] = service
    entry["litellm_params"]["api_key"] = TOKEN
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    process, proxy = start_proxy(tmp_path / "config.yaml", tmp_path / "proxy.log")
    try:

        def chat(model: str) -> httpx.Response:
            return httpx.post(f"{proxy.url}/v1/chat/completions", headers={"Authorization": "Bearer sk-test"},
                              json={"model": model, "messages": [{"role": "user", "content": "Hi"}]},
                              timeout=60, trust_env=False)  # fmt: skip

        benign = chat("benign-model")
        assert benign.status_code == 200, proxy.tail()
        assert "seven to nine hours" in benign.json()["choices"][0]["message"]["content"]
        harmful = chat("harmful-model")
        assert harmful.status_code != 200, harmful.text
        assert load_policy("default").action("block").message in harmful.text
        assert "wallet" not in harmful.text
    finally:
        stop(process)
