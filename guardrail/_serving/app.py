"""The scoring service's HTTP API: a Starlette app, served by uvicorn or inside Ray Serve.

Routes:

- ``POST /v1/score``: ``{"items": [{"prompt": str | null, "response": str}, ...]}`` ->
  ``{"model": id, "values": [ten names], "vectors": [[ten scores], ...]}``, one row per item.
- ``POST /v1/check``: the same items, an optional ``policy`` (one of the service's) and
  ``metadata`` -> ``{"policy": name, "verdicts": [verdict JSON, ...]}``; a scoring failure is
  decided by the policy's ``on_error`` (fail closed by default), never an HTTP error.
- ``POST /beta/litellm_basic_guardrail_api``: LiteLLM's Generic Guardrail API, so a LiteLLM proxy
  calls the service as an external guardrail: ``texts`` in, ``{"action": "NONE"}``,
  ``{"action": "BLOCKED", "blocked_reason": ...}`` or ``{"action": "GUARDRAIL_INTERVENED",
  "texts": [...]}`` out; the policy may be named in ``additional_provider_specific_params``.
- ``GET /healthz`` (the process answers) and ``GET /readyz`` (the model is loaded: 200, else 503).

Every request but the probes needs ``Authorization: Bearer <token>`` (or LiteLLM's
``x-api-key``) when the token's environment variable is set. Bodies over ``max_body_bytes`` and
requests over ``max_items`` get 413 before anything is scored. Requests are traced as
OpenTelemetry server spans (with the ``http.server.request.duration`` metric), the guards'
``guardrail.check`` spans nested in them.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from opentelemetry.metrics import MeterProvider
from opentelemetry.trace import TracerProvider
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from guardrail._exceptions import PolicyError
from guardrail._serving.service import ScoringService, ServeSettings, vectors_json
from guardrail._values import VALUES
from guardrail._verdict import Verdict

GENERIC_GUARDRAIL_ROUTE = "/beta/litellm_basic_guardrail_api"
"""Where LiteLLM's Generic Guardrail API posts (the proxy appends it to the guardrail's ``api_base``)."""

PROBES = frozenset({"/healthz", "/readyz"})


class ItemIn(BaseModel):
    """One (prompt, response) pair to score."""

    model_config = ConfigDict(extra="forbid")

    prompt: str | None = Field(default=None, description="The prompt that produced the response.")
    response: str = Field(description="The response to score.")


class ScoreRequest(BaseModel):
    """``POST /v1/score``."""

    model_config = ConfigDict(extra="forbid")

    items: list[ItemIn] = Field(min_length=1, description="Pairs to score, in order.")


class CheckRequest(ScoreRequest):
    """``POST /v1/check``."""

    policy: str | None = Field(default=None, description="One of the service's policies (default: its first).")
    metadata: dict[str, str | int | float | bool] | None = Field(default=None, description="Recorded on spans.")


class GuardrailRequest(BaseModel):
    """The fields of a Generic Guardrail API request this service reads (the rest is ignored)."""

    model_config = ConfigDict(extra="ignore")

    input_type: str = Field(description="request (the user's input) or response (the model's answer).")
    texts: list[str] | None = Field(default=None, description="The texts to check.")
    structured_messages: list[dict[str, Any]] | None = Field(default=None, description="The chat, for the prompt.")
    additional_provider_specific_params: dict[str, Any] | None = Field(default=None)
    litellm_call_id: str | None = Field(default=None)
    model: str | None = Field(default=None)


class _Refused(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def create_app(
    service: ScoringService,
    *,
    tracer_provider: TracerProvider | None = None,
    meter_provider: MeterProvider | None = None,
    start: bool = True,
) -> ASGIApp:
    """The service's ASGI app; ``start``: load the service's model when the app starts (lifespan)."""
    settings = service.settings
    routes = [
        Route("/v1/score", _score, methods=["POST"]),
        Route("/v1/check", _check, methods=["POST"]),
        Route(GENERIC_GUARDRAIL_ROUTE, _guardrail_api, methods=["POST"]),
        Route("/healthz", _healthz, methods=["GET"]),
        Route("/readyz", _readyz, methods=["GET"]),
    ]

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if start:
            service.start()
        yield
        service.close()

    token = os.environ.get(settings.token_env) or None
    app = Starlette(routes=routes, lifespan=lifespan, middleware=[Middleware(_BearerAuth, token=token)])
    app.state.service = service
    from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware

    return OpenTelemetryMiddleware(
        app, excluded_urls=",".join(PROBES), tracer_provider=tracer_provider, meter_provider=meter_provider
    )


KEEP_ALIVE_S = 65
"""Seconds an idle client connection is kept open (above the 5-60 s pools of HTTP clients and proxies)."""


def run(settings: ServeSettings) -> None:
    """Serve on uvicorn until stopped (Ctrl-C or SIGTERM: requests in flight finish first)."""
    import uvicorn

    app = create_app(ScoringService(settings))
    # Idle connections stay open longer than clients keep them (httpx: 5 s, like uvicorn's own default):
    # with equal limits a pooled connection can be reused just as the server closes it, and the request fails.
    uvicorn.run(app, host=settings.host, port=settings.port, log_level="info", timeout_graceful_shutdown=30,
                timeout_keep_alive=KEEP_ALIVE_S)  # fmt: skip


# -- middleware ---------------------------------------------------------------------------


class _BearerAuth:
    """Refuses requests without the service's token (when it has one); probes always pass."""

    def __init__(self, app: ASGIApp, token: str | None) -> None:
        self.app = app
        self._token = token.encode() if token else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self._token is None or scope["type"] != "http" or scope["path"] in PROBES:
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        given = headers.get(b"authorization", b"")
        given = given[7:] if given[:7].lower() == b"bearer " else headers.get(b"x-api-key", b"")
        if not hmac.compare_digest(given, self._token):
            await _error(401, "missing or wrong bearer token")(scope, receive, send)
            return
        await self.app(scope, receive, send)


# -- routes -------------------------------------------------------------------------------


async def _score(request: Request) -> Response:
    try:
        service = _ready(request)
        body = ScoreRequest.model_validate(await _json(request, service.settings))
        _count(len(body.items), service.settings)
        items = [(item.prompt, item.response) for item in body.items]
        try:
            vectors = await asyncio.wait_for(service.scorer.ascore(items), service.settings.timeout_ms / 1000)
        except asyncio.TimeoutError as exc:  # TimeoutError itself from Python 3.11
            raise _Refused(504, f"scoring took longer than timeout_ms={service.settings.timeout_ms:g}") from exc
        except Exception as exc:  # a failed forward pass: the caller's on_error decides, told why
            raise _Refused(503, f"scoring failed: {type(exc).__name__}: {exc}") from exc
    except _Refused as refused:
        return _error(refused.status, str(refused))
    except ValidationError as exc:
        return _invalid(exc)
    model = str(getattr(service.scorer, "model_id", "unknown"))
    return JSONResponse({"model": model, "values": list(VALUES), "vectors": vectors_json(vectors)})


async def _check(request: Request) -> Response:
    try:
        service = _ready(request)
        body = CheckRequest.model_validate(await _json(request, service.settings))
        _count(len(body.items), service.settings)
        guard = _guard(service, body.policy)
    except _Refused as refused:
        return _error(refused.status, str(refused))
    except ValidationError as exc:
        return _invalid(exc)
    verdicts = await guard.acheck_many([i.response for i in body.items], [i.prompt for i in body.items],
                                       body.metadata)  # fmt: skip
    return JSONResponse({"policy": guard.policy.name, "verdicts": [v.to_dict() for v in verdicts]})


async def _guardrail_api(request: Request) -> Response:
    try:
        service = _ready(request)
        body = GuardrailRequest.model_validate(await _json(request, service.settings))
        texts = body.texts or []
        _count(len(texts), service.settings)
        params = body.additional_provider_specific_params or {}
        guard = _guard(service, params.get("policy") if isinstance(params.get("policy"), str) else None)
    except _Refused as refused:
        return _error(refused.status, str(refused))
    except ValidationError as exc:
        return _invalid(exc)
    if not texts:
        return JSONResponse({"action": "NONE"})
    # A response is checked with the prompt that produced it; a request's texts are the prompt.
    prompt = _last_user_message(body.structured_messages) if body.input_type == "response" else None
    metadata = {"litellm_call_id": body.litellm_call_id} if body.litellm_call_id else None
    verdicts = await asyncio.gather(*(guard.aenforce(text, prompt, metadata) for text in texts))
    return JSONResponse(_guardrail_answer(texts, verdicts))


def _guardrail_answer(texts: list[str], verdicts: list[Verdict]) -> dict[str, Any]:
    """BLOCKED when any text is blocked; texts rewritten (redacted): GUARDRAIL_INTERVENED; else NONE."""
    blocked = [v for v in verdicts if v.final_decision == "block"]
    if blocked:
        return {"action": "BLOCKED", "blocked_reason": blocked[0].output or blocked[0].summary(),
                "guardrail": {"verdicts": [v.summary() for v in verdicts]}}  # fmt: skip
    if any(v.altered for v in verdicts):
        return {"action": "GUARDRAIL_INTERVENED", "texts": [v.output if v.output is not None else t
                                                            for v, t in zip(verdicts, texts)]}  # fmt: skip
    return {"action": "NONE"}


async def _healthz(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def _readyz(request: Request) -> Response:
    service: ScoringService = request.app.state.service
    if service.ready:
        return JSONResponse({"status": "ready", "model": str(getattr(service.scorer, "model_id", "unknown")),
                             "policies": service.policy_names})  # fmt: skip
    if service.error is not None:
        return JSONResponse({"status": "failed", "error": service.error}, status_code=503)
    return JSONResponse({"status": "loading"}, status_code=503)


# -- helpers ------------------------------------------------------------------------------


def _ready(request: Request) -> ScoringService:
    service: ScoringService = request.app.state.service
    if not service.ready:
        raise _Refused(503, service.error or "the model is still loading")
    return service


async def _json(request: Request, settings: ServeSettings) -> Any:
    """The request body as JSON, read no further than ``max_body_bytes``."""
    limit = settings.max_body_bytes
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _Refused(413, f"request body of {int(declared):,} bytes is over max_body_bytes={limit:,}")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise _Refused(413, f"request body is over max_body_bytes={limit:,}")
    try:
        return json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise _Refused(400, f"request body is not JSON: {exc}") from exc


def _count(items: int, settings: ServeSettings) -> None:
    if items > settings.max_items:
        raise _Refused(413, f"{items:,} items are over max_items={settings.max_items:,}")


def _guard(service: ScoringService, name: str | None) -> Any:
    try:
        return service.guard(name)
    except PolicyError as exc:
        raise _Refused(404, str(exc)) from exc


def _last_user_message(messages: list[dict[str, Any]] | None) -> str | None:
    for message in reversed(messages or []):
        content = message.get("content")
        if message.get("role") == "user":
            if isinstance(content, str):
                return content
            if isinstance(content, list):  # content parts: their text
                return " ".join(p["text"] for p in content if isinstance(p, dict) and isinstance(p.get("text"), str))
    return None


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def _invalid(exc: ValidationError) -> JSONResponse:
    first = exc.errors()[0]
    where = ".".join(str(p) for p in first["loc"]) or "(body)"
    return _error(422, f"{where}: {first['msg']} ({exc.error_count()} problem(s) in all)")
