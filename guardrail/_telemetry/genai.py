"""Spans of one guarded model call, for the integrations (OpenTelemetry GenAI semantic conventions).

An integration opens a :class:`CallSpans` per guarded call with :meth:`Guard.trace_call`, its one door
into this module. The model-call span
and the guard's own spans sit side by side under it, so one trace reads: call, check, rewrite
attempts, verdict::

    guardrail.call                 CHAIN      one per guarded call: integration, policy, deployment, outcome
    ├── chat gpt-4o-mini           LLM        the model call: gen_ai.request.*, gen_ai.response.*, gen_ai.usage.*
    └── guardrail.enforce          CHAIN      (a stream has one guardrail.check per window here instead)
        ├── guardrail.check        GUARDRAIL
        └── guardrail.rewrite      CHAIN
            ├── guardrail.reask    CHAIN
            │   └── chat gpt-4o-mini   the re-ask's own model call
            └── guardrail.check    the revision's re-check

Integrations describe a call with :class:`ModelCall` and its answer with :class:`ModelReply`: they
know their host, this module knows the conventions. It uses the API package only, like
``_telemetry``: without an SDK every span here is non-recording and costs next to nothing.
"""

from __future__ import annotations

import json
import logging
from collections.abc import (
    AsyncGenerator,
    AsyncIterable,
    AsyncIterator,
    Callable,
    Generator,
    Iterable,
    Iterator,
    Mapping,
    Sequence,
)
from contextlib import contextmanager
from contextvars import Token
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, TypeVar

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import Span, SpanKind, Status, StatusCode, Tracer

from guardrail._telemetry.checks import CONTENT_LIMIT, CheckTelemetry, deployment_of
from guardrail._verdict import Verdict

C = TypeVar("C")
logger = logging.getLogger(__name__)

CALL_SPAN = "guardrail.call"
MESSAGES_LIMIT = 32
"""Messages of a request kept (the last ones) in ``gen_ai.input.messages`` when content capture is on."""
PARAMETERS = (
    "temperature", "max_tokens", "top_p", "top_k", "frequency_penalty", "presence_penalty", "seed", "stop_sequences",
)  # fmt: skip
"""Request parameters recorded as ``gen_ai.request.<name>`` (the conventions' names)."""

# The hosts' provider names (litellm's custom_llm_provider, LangChain's ls_provider) that differ from the
# conventions' well-known gen_ai.provider.name values; the others (openai, anthropic, groq...) agree.
_PROVIDERS = {
    "azure": "azure.ai.openai",
    "azure_ai": "azure.ai.inference",
    "bedrock": "aws.bedrock",
    "bedrock_converse": "aws.bedrock",
    "amazon_bedrock": "aws.bedrock",
    "vertex_ai": "gcp.vertex_ai",
    "google_vertexai": "gcp.vertex_ai",
    "gemini": "gcp.gemini",
    "google_genai": "gcp.gemini",
    "mistral": "mistral_ai",
    "mistralai": "mistral_ai",
    "watsonx": "ibm.watsonx.ai",
    "xai": "x_ai",
}


def provider_name(name: str) -> str:
    """``gen_ai.provider.name`` for a host's provider name (``bedrock`` -> ``aws.bedrock``; others as given)."""
    return _PROVIDERS.get(name.lower(), name.lower())


@dataclass(frozen=True)
class ModelCall:
    """What an integration knows about a model call before making it.

    Attributes:
        model: The requested model (``gen_ai.request.model``; also the span name's second word).
        provider: The host's provider name, recorded as ``gen_ai.provider.name`` (see :func:`provider_name`).
        parameters: Request parameters under the names in :data:`PARAMETERS`; others and ``None`` are left out.
        messages: Returns the request's ``(role, text)`` pairs; called only when content capture is on.
        operation: ``gen_ai.operation.name``.
    """

    model: str | None = None
    provider: str | None = None
    parameters: Mapping[str, Any] = field(default_factory=dict)
    messages: Callable[[], Sequence[tuple[str, str]]] | None = None
    operation: str = "chat"

    @property
    def span_name(self) -> str:
        """``{gen_ai.operation.name} {gen_ai.request.model}``, or the operation alone without a model."""
        return f"{self.operation} {self.model}" if self.model else self.operation


@dataclass(frozen=True)
class ModelReply:
    """What an integration read from a model's answer (any field may be unknown)."""

    model: str | None = None
    id: str | None = None
    finish_reasons: Sequence[str] = ()
    input_tokens: int | None = None
    output_tokens: int | None = None
    text: str | None = None
    """The answer's text; recorded only when content capture is on."""


class ModelSpan:
    """One model-call span (kind CLIENT, OpenInference ``LLM``), opened by :meth:`CallSpans.model`."""

    def __init__(self, span: Span, parent: Context, capture: bool) -> None:
        self.span = span
        self._context = trace.set_span_in_context(span, parent)
        self._capture = capture
        self._ended = False

    def record(self, reply: ModelReply) -> None:
        """Put what the answer says (response model and id, finish reasons, usage) on the span."""
        if not self._ended and self.span.is_recording():
            self.span.set_attributes(_reply_attributes(reply, self._capture))

    def fail(self, exc: BaseException) -> None:
        """Record the exception that ended the call (status ERROR, ``error.type``)."""
        if not self._ended:
            _fail(self.span, exc)

    def end(self) -> None:
        """End the span (once; later calls do nothing)."""
        if not self._ended:
            self._ended = True
            self.span.end()

    @contextmanager
    def current(self) -> Iterator[None]:
        """This span is current for the block (the host's own spans nest here); an exception fails and ends it."""
        token = otel_context.attach(self._context)
        try:
            yield
        except Exception as exc:
            self.fail(exc)
            self.end()
            raise
        finally:
            otel_context.detach(token)

    def wrap(self, upstream: Iterable[C], read: Callable[[list[C]], ModelReply]) -> Iterator[C]:
        """Pass a streamed answer through, each chunk pulled with this span current.

        When the stream ends or is closed, ``read(chunks)`` is recorded, the span ends, and ``upstream``
        is closed (the model call stops once the guard stops reading).
        """
        chunks: list[C] = []
        keep = self.span.is_recording()  # chunks are kept only to be read for the span
        source = iter(upstream)
        try:
            while True:
                with self.current():
                    try:
                        chunk = next(source)
                    except StopIteration:
                        return
                if keep:
                    chunks.append(chunk)
                yield chunk
        finally:
            try:
                close = getattr(upstream, "close", None)
                if close is not None:
                    close()
            finally:
                self._settle(read, chunks)

    async def awrap(self, upstream: AsyncIterable[C], read: Callable[[list[C]], ModelReply]) -> AsyncIterator[C]:
        """Async twin of :meth:`wrap` (``upstream.aclose()`` at the end)."""
        chunks: list[C] = []
        keep = self.span.is_recording()
        source = upstream.__aiter__()
        try:
            while True:
                with self.current():
                    try:
                        chunk = await source.__anext__()
                    except StopAsyncIteration:
                        return
                if keep:
                    chunks.append(chunk)
                yield chunk
        finally:
            try:
                close = getattr(upstream, "aclose", None)
                if close is not None:
                    await close()
            finally:
                self._settle(read, chunks)

    def _settle(self, read: Callable[[list[C]], ModelReply], chunks: list[C]) -> None:
        if self._ended:
            return
        try:
            if self.span.is_recording():
                self.record(read(chunks))
        except Exception:  # telemetry is a sink: reading a chunk it did not expect must not break the stream
            logger.warning("could not read the streamed model answer for its span", exc_info=True)
        self.end()


class CallSpans:
    """The ``guardrail.call`` span of one guarded call and the model-call spans under it.

    Opened by :meth:`Guard.trace_call`; the span starts as a child of the current span. ``with spans:``
    makes it current for the block and ends it there (an exception is recorded as the error); the
    guard's ``guardrail.enforce`` / ``guardrail.check`` spans opened inside nest under it. A stream
    keeps it open: :meth:`iterate` steps the guarded stream with it current and ends it at the end.

    Example:
        >>> with guard.trace_call(ModelCall("gpt-4o-mini", "openai"), integration="mine") as spans:  # doctest: +SKIP
        ...     with spans.model() as model:
        ...         answer = client.chat(...)
        ...         model.record(ModelReply(id=answer.id, input_tokens=answer.usage.input))
        ...     verdict = guard.enforce(answer.text, prompt, reask=reask)
        ...     spans.record(verdict)
    """

    def __init__(self, tracer: Tracer, capture: bool, call: ModelCall, attributes: Mapping[str, Any]) -> None:
        self.call = call
        self._tracer, self._capture = tracer, capture
        self.span = tracer.start_span(CALL_SPAN, attributes=attributes)
        # Marks the contexts inside this call, so model() knows whether it runs within it (a re-ask,
        # under guardrail.reask) or outside (a stream being opened: the model span goes under ours).
        self._key = otel_context.create_key("guardrail.call")
        self._context = otel_context.set_value(self._key, True, trace.set_span_in_context(self.span))
        self._tokens: list[Token[Context]] = []
        self._models: list[ModelSpan] = []
        self._checked = False
        self._ended = False

    def __enter__(self) -> CallSpans:
        self._tokens.append(otel_context.attach(self._context))
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        otel_context.detach(self._tokens.pop())
        if isinstance(exc, Exception):
            self.fail(exc)
        self.end()

    @contextmanager
    def active(self) -> Iterator[None]:
        """This call is current for the block, and stays open after it; an exception fails and ends it."""
        token = otel_context.attach(self._context)
        try:
            yield
        except Exception as exc:
            self.fail(exc)
            self.end()
            raise
        finally:
            otel_context.detach(token)

    @contextmanager
    def model(
        self, call: ModelCall | None = None, *, end: bool = True, start_time: int | None = None
    ) -> Iterator[ModelSpan]:
        """A model-call span, current for the block and ended at its end (``end=False``: a stream's, which
        :meth:`ModelSpan.wrap` ends).

        Inside this call (in ``with spans:``, or a re-ask under ``guardrail.reask``) the span is a child
        of the current span; outside, of ``guardrail.call``, and an exception then ends the call too.

        Args:
            call: What is asked (default: the call's own :class:`ModelCall`, e.g. a re-ask's messages differ).
            end: End the span when the block ends.
            start_time: When the call began, in ns since the epoch (a call made before the span was opened).
        """
        call = call or self.call
        inside = otel_context.get_value(self._key) is True
        base = otel_context.get_current() if inside else self._context
        span = self._tracer.start_span(
            call.span_name, context=base, kind=SpanKind.CLIENT, attributes=_start_attributes(call),
            start_time=start_time,
        )  # fmt: skip
        if span.is_recording():
            span.set_attributes(_request_attributes(call, self._capture))
        model = ModelSpan(span, base, self._capture)
        self._models.append(model)
        try:
            with model.current():
                yield model
        except Exception as exc:
            if not inside:
                self.fail(exc)
                self.end()
            raise
        if end:
            model.end()

    def iterate(self, stream: Iterator[C]) -> Generator[C, None, None]:
        """Pass a guarded stream through, each step with this call current (its window checks nest here).

        When the result ends or is closed, ``stream`` is closed, its ``verdict`` recorded and this call
        ended; closing or dropping the result ends the call even before its first chunk.
        """
        steps = self._steps(stream)
        next(steps)  # primed: suspended inside its try, so close() runs the finally from the start
        return steps  # type: ignore[return-value]

    async def aiterate(self, stream: AsyncIterator[C]) -> AsyncGenerator[C, None]:
        """Async twin of :meth:`iterate` (``stream.aclose()`` at the end)."""
        steps = self._asteps(stream)
        await steps.__anext__()  # primed, as in iterate()
        return steps  # type: ignore[return-value]

    def _steps(self, stream: Iterator[C]) -> Generator[C | None, None, None]:
        try:
            yield None
            while True:
                with self.active():
                    try:
                        item = next(stream)
                    except StopIteration:
                        return
                yield item
        finally:
            try:
                close = getattr(stream, "close", None)
                if close is not None:
                    close()
            finally:
                self.record(getattr(stream, "verdict", None))
                self.end()

    async def _asteps(self, stream: AsyncIterator[C]) -> AsyncGenerator[C | None, None]:
        try:
            yield None
            while True:
                with self.active():
                    try:
                        item = await stream.__anext__()
                    except StopAsyncIteration:
                        return
                yield item
        finally:
            try:
                close = getattr(stream, "aclose", None)
                if close is not None:
                    await close()
            finally:
                self.record(getattr(stream, "verdict", None))
                self.end()

    def record(self, verdict: Verdict | None) -> None:
        """Put the call's outcome on its span: decision, final decision, whether the answer was altered."""
        if not isinstance(verdict, Verdict) or self._ended:
            return
        self._checked = True
        if self.span.is_recording():
            self.span.set_attributes({
                "guardrail.decision": verdict.decision,
                "guardrail.final_decision": verdict.final_decision,
                "guardrail.altered": verdict.altered,
            })  # fmt: skip

    def fail(self, exc: BaseException) -> None:
        """Record the exception that ended the call (status ERROR, ``error.type``)."""
        if not self._ended:
            _fail(self.span, exc)

    def end(self) -> None:
        """End the span (once), and any model span a cut-short stream left open; ``guardrail.checked`` says
        whether an answer was checked."""
        if self._ended:
            return
        self._ended = True
        for model in self._models:
            model.end()
        if self.span.is_recording():
            self.span.set_attribute("guardrail.checked", self._checked)
        self.span.end()


def call_spans(
    telemetry: CheckTelemetry,
    call: ModelCall,
    *,
    integration: str,
    policy: tuple[str, str, str],
    metadata: Mapping[str, Any] | None = None,
    streamed: bool = False,
) -> CallSpans:
    """Open the ``guardrail.call`` span of one guarded call; :meth:`Guard.trace_call` is the public door.

    Args:
        telemetry: The guard's telemetry: its tracer provider and content-capture setting.
        call: What the integration is about to ask the model.
        integration: Recorded as ``guardrail.integration`` (``litellm``, ``langchain``...).
        policy: The policy's name, version and content hash.
        metadata: The request metadata the guard sees (``deployment`` / ``tenant`` are recorded).
        streamed: Whether the answer is streamed (``guardrail.streamed``).
    """
    name, version, digest = policy
    attributes: dict[str, Any] = {
        "openinference.span.kind": "CHAIN",
        "guardrail.integration": integration,
        "guardrail.streamed": streamed,
        "guardrail.policy.name": name,
        "guardrail.policy.version": version,
        "guardrail.policy.hash": digest,
    }
    deployment = deployment_of(metadata)
    if deployment is not None:
        attributes["guardrail.deployment"] = deployment
    return CallSpans(telemetry.tracer, telemetry.capture_content, call, attributes)


# -- attributes ---------------------------------------------------------------------------------


def _start_attributes(call: ModelCall) -> dict[str, Any]:
    # The conventions ask for these at span start, where a sampler can see them.
    attrs: dict[str, Any] = {"gen_ai.operation.name": call.operation}
    if call.provider:
        attrs["gen_ai.provider.name"] = provider_name(call.provider)
    if call.model:
        attrs["gen_ai.request.model"] = call.model
    return attrs


def _request_attributes(call: ModelCall, capture: bool) -> dict[str, Any]:
    attrs: dict[str, Any] = {"openinference.span.kind": "LLM"}
    if call.model:
        attrs["llm.model_name"] = call.model  # what Phoenix shows as the span's model
    for name in PARAMETERS:
        value = _value(call.parameters.get(name))
        if value is not None:
            attrs[f"gen_ai.request.{name}"] = value
    if capture and call.messages is not None:
        try:
            messages = list(call.messages())[-MESSAGES_LIMIT:]
        except Exception:  # telemetry is a sink: a message it cannot read must not stop the call
            logger.warning("could not read the request's messages for its span", exc_info=True)
        else:
            attrs["gen_ai.input.messages"] = _messages_json([(role, text, None) for role, text in messages])
    return attrs


def _reply_attributes(reply: ModelReply, capture: bool) -> dict[str, Any]:
    attrs: dict[str, Any] = {}
    if reply.model:
        attrs["gen_ai.response.model"] = reply.model
    if reply.id:
        attrs["gen_ai.response.id"] = reply.id
    if reply.finish_reasons:
        attrs["gen_ai.response.finish_reasons"] = [str(r) for r in reply.finish_reasons]
    if reply.input_tokens is not None:
        attrs["gen_ai.usage.input_tokens"] = attrs["llm.token_count.prompt"] = reply.input_tokens
    if reply.output_tokens is not None:
        attrs["gen_ai.usage.output_tokens"] = attrs["llm.token_count.completion"] = reply.output_tokens
    if reply.input_tokens is not None and reply.output_tokens is not None:
        attrs["llm.token_count.total"] = reply.input_tokens + reply.output_tokens
    if capture and reply.text is not None:
        finish = str(reply.finish_reasons[0]) if reply.finish_reasons else None
        attrs["gen_ai.output.messages"] = _messages_json([("assistant", reply.text, finish)])
    return attrs


def _messages_json(messages: Sequence[tuple[str, str, str | None]]) -> str:
    """Messages in the conventions' JSON form (text parts only), each text cut at ``CONTENT_LIMIT``."""
    out = []
    for role, text, finish in messages:
        message: dict[str, Any] = {"role": role, "parts": [{"type": "text", "content": text[:CONTENT_LIMIT]}]}
        if finish is not None:
            message["finish_reason"] = finish
        out.append(message)
    return json.dumps(out, ensure_ascii=False)


def _value(value: object) -> str | bool | int | float | list[str] | None:
    """A parameter as an attribute value; ``None`` for what an attribute cannot hold."""
    if isinstance(value, (str, bool, int, float)):
        return value
    if isinstance(value, Sequence) and all(isinstance(v, str) for v in value):
        return list(value)
    return None


def _fail(span: Span, exc: BaseException) -> None:
    if span.is_recording():
        span.record_exception(exc)
        span.set_attribute("error.type", type(exc).__qualname__)
        span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))
