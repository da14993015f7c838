"""``ValueGuardrailMiddleware``: checks the answers of a LangChain v1 agent (``create_agent``)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any

from langchain.agents.middleware import AgentMiddleware, ExtendedModelResponse, ModelRequest, ModelResponse
from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, ToolMessage
from langchain_core.outputs import ChatResult
from langchain_core.runnables import ensure_config
from langgraph.types import Command
from pydantic import PrivateAttr

from guardrail import CallSpans, ChoiceVerdict, Guard, ModelCall, PolicySet
from guardrail_langchain._chat_model import GuardedChatModel, agenerate, generate
from guardrail_langchain._common import (
    GuardChoice,
    PolicySource,
    guarded_message,
    is_checked,
    last_prompt,
    model_call,
    reask_messages,
    reply_of,
    request_metadata,
    revised_text,
)
from guardrail_langchain._outputs import acheck_parts, check_parts

Handler = Callable[[ModelRequest], ModelResponse]
AsyncHandler = Callable[[ModelRequest], Awaitable[ModelResponse]]


class ValueGuardrailMiddleware(AgentMiddleware):
    """Agent middleware that checks each model answer against a value policy.

    A blocked answer is replaced by the policy's message; a ``reask`` rewrite asks the model again
    through the agent (the request's messages, the rejected answer and the feedback), so other
    middleware sees the re-ask too. Every part of an answer is checked: its text, its reasoning and
    each tool call (as ``name({json arguments})``); a blocked answer keeps none of them, so a blocked
    tool call is never executed. Every checked answer carries its verdicts in
    ``response_metadata["guardrail"]``.

    When the agent streams (``agent.stream(..., stream_mode="messages")``), the model's tokens are
    held back and released window by window as they pass, as the policy's ``streaming`` block says,
    so a blocked answer's text never reaches the stream; reasoning and tool-call chunks are held until
    the answer has ended and they passed. A streamed rewrite decision applies its fallback.

    Args:
        guard: The guard to use; default: a ``Guard`` built from ``policy``.
        policy: A shipped policy name, a YAML path or a ``Policy`` (default: ``$GUARDRAIL_POLICY``,
            else ``default``).
        policies: A policy set picking the policy per run from ``config["metadata"]``.

    Example:
        >>> from langchain.agents import create_agent
        >>> agent = create_agent(model, tools=[search], middleware=[ValueGuardrailMiddleware()])  # doctest: +SKIP
        >>> agent.invoke({"messages": [("user", "Hi")]})["messages"][-1].content  # doctest: +SKIP
    """

    def __init__(
        self, guard: Guard | None = None, *, policy: PolicySource | None = None, policies: PolicySet | None = None
    ) -> None:
        super().__init__()
        self._choice = GuardChoice(guard, policy, policies)

    def wrap_model_call(self, request: ModelRequest, handler: Handler) -> ModelResponse | ExtendedModelResponse:
        """Call the model, then check every part of its answer and carry out the decision."""
        guard, metadata = self._pick()
        if isinstance(request.model, GuardedChatModel):
            return handler(request)  # it checks (and traces) its own answers, streams included
        with _call_spans(request, guard, metadata) as spans:
            request = _held_back(request, guard, spans)
            response = _call(spans, request, handler)
            found = _answer(response)
            if found is None:
                return response
            index, message = found
            prompt = last_prompt(request.messages)

            def reask(previous: str, feedback: str) -> str:
                return revised_text(_last_ai(_call(spans, _reasked(request, previous, feedback), handler)))

            outcome = check_parts(guard, message, 0, prompt, metadata, reask)
            if outcome is None:
                return response
            spans.record(outcome.verdict)
        return _with(request, response, index, message, outcome)

    async def awrap_model_call(
        self, request: ModelRequest, handler: AsyncHandler
    ) -> ModelResponse | ExtendedModelResponse:
        """Async twin of :meth:`wrap_model_call`."""
        guard, metadata = self._pick()
        if isinstance(request.model, GuardedChatModel):
            return await handler(request)
        with _call_spans(request, guard, metadata) as spans:
            request = _held_back(request, guard, spans)
            response = await _acall(spans, request, handler)
            found = _answer(response)
            if found is None:
                return response
            index, message = found
            prompt = last_prompt(request.messages)

            async def reask(previous: str, feedback: str) -> str:
                return revised_text(_last_ai(await _acall(spans, _reasked(request, previous, feedback), handler)))

            outcome = await acheck_parts(guard, message, 0, prompt, metadata, reask)
            if outcome is None:
                return response
            spans.record(outcome.verdict)
        return _with(request, response, index, message, outcome)

    def _pick(self) -> tuple[Guard, dict[str, Any]]:
        # The agent runs the model node inside the run's config: its metadata names the deployment.
        metadata = request_metadata(ensure_config().get("metadata"))
        return self._choice.pick(metadata), metadata


class _HeldBackModel(GuardedChatModel):
    """Streams as ``GuardedChatModel`` does but returns whole answers unchecked: the middleware checks
    those itself, so that a re-ask goes through the agent's handler. Its model-call spans go under the
    middleware's ``guardrail.call``."""

    _spans: CallSpans | None = PrivateAttr(default=None)

    def _call_spans(self, guard: Guard, call: ModelCall, metadata: dict[str, Any], streamed: bool = False) -> CallSpans:
        if self._spans is None:
            return super()._call_spans(guard, call, metadata, streamed)
        if streamed and self._spans.span.is_recording():
            self._spans.span.set_attribute("guardrail.streamed", True)  # the agent streams this call
        return self._spans

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        config, metadata = self._inner_call(run_manager, kwargs)
        spans = self._call_spans(self._choice.pick(metadata), model_call(self.model, messages, stop, kwargs), metadata)
        return generate(spans, self.model, messages, config, stop, kwargs)

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        config, metadata = self._inner_call(run_manager, kwargs)
        spans = self._call_spans(self._choice.pick(metadata), model_call(self.model, messages, stop, kwargs), metadata)
        return await agenerate(spans, self.model, messages, config, stop, kwargs)


def _call_spans(request: ModelRequest, guard: Guard, metadata: dict[str, Any]) -> CallSpans:
    call = model_call(request.model, _messages(request), None, request.model_settings)
    return guard.trace_call(call, integration="langchain.agent", metadata=metadata)


def _messages(request: ModelRequest) -> list[BaseMessage]:
    """What the model is sent: the system message, if any, then the conversation."""
    return [request.system_message, *request.messages] if request.system_message else list(request.messages)


def _call(spans: CallSpans, request: ModelRequest, handler: Handler) -> ModelResponse:
    """The agent's model call; in a model-call span unless the held-back model records its own."""
    if isinstance(request.model, _HeldBackModel):
        return handler(request)
    with spans.model(model_call(request.model, _messages(request), None, request.model_settings)) as span:
        response = handler(request)
        span.record(reply_of(_last_ai_or_none(response)))
    return response


async def _acall(spans: CallSpans, request: ModelRequest, handler: AsyncHandler) -> ModelResponse:
    """Async twin of :func:`_call`."""
    if isinstance(request.model, _HeldBackModel):
        return await handler(request)
    with spans.model(model_call(request.model, _messages(request), None, request.model_settings)) as span:
        response = await handler(request)
        span.record(reply_of(_last_ai_or_none(response)))
    return response


def _held_back(request: ModelRequest, guard: Guard, spans: CallSpans) -> ModelRequest:
    """The request with its model wrapped so that a streamed answer is held back until it passed."""
    if not isinstance(request.model, BaseChatModel):
        # e.g. a runtime-configurable model: it cannot be wrapped, so only whole answers are checked.
        return request
    model = _HeldBackModel(model=request.model, guard=guard)
    model._spans = spans
    return request.override(model=model)


def _reasked(request: ModelRequest, previous: str, feedback: str) -> ModelRequest:
    return request.override(messages=reask_messages(request.messages, previous, feedback))


def _answer(response: ModelResponse) -> tuple[int, AIMessage] | None:
    """Index and message of the answer to check; ``None`` when it was checked already."""
    for index in range(len(response.result) - 1, -1, -1):
        message = response.result[index]
        if isinstance(message, AIMessage):
            # A streamed answer was checked window by window on its way out and carries its verdict.
            return None if is_checked(message) else (index, message)
    return None


def _last_ai(response: ModelResponse) -> AIMessage:
    found = _last_ai_or_none(response)
    if found is None:
        raise ValueError("the re-asked model call returned no AIMessage")
    return found


def _last_ai_or_none(response: ModelResponse) -> AIMessage | None:
    return next((m for m in reversed(response.result) if isinstance(m, AIMessage)), None)


def _with(
    request: ModelRequest, response: ModelResponse, index: int, message: AIMessage, outcome: ChoiceVerdict
) -> ModelResponse | ExtendedModelResponse:
    """The response with the answer as delivered.

    An altered answer takes its tool calls with it: the replies the agent made up for them (a
    structured-output tool's) and the structured output are dropped too. An agent that waits for a
    structured answer would ask the model again and again; the run ends with the policy's message.
    """
    delivered = guarded_message(message, outcome)
    if not outcome.verdict.altered:
        return replace(response, result=[*response.result[:index], delivered, *response.result[index + 1 :]])
    called = {call["id"] for call in message.tool_calls}
    rest = [m for m in response.result[index + 1 :] if not (isinstance(m, ToolMessage) and m.tool_call_id in called)]
    stopped = replace(response, result=[*response.result[:index], delivered, *rest], structured_response=None)
    if request.response_format is None:
        return stopped
    return ExtendedModelResponse(model_response=stopped, command=Command(update={"jump_to": "end"}))
