"""What the chat model and the agent middleware share: picking the guard, reading messages, quiet callbacks."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import replace
from typing import Any, TypeVar
from uuid import UUID

from langchain_core.callbacks import (
    AsyncCallbackManagerForLLMRun,
    BaseCallbackHandler,
    BaseCallbackManager,
    CallbackManager,
    CallbackManagerForLLMRun,
    Callbacks,
)
from langchain_core.messages import LC_AUTO_PREFIX, AIMessage, BaseMessage, HumanMessage
from langchain_core.messages.ai import UsageMetadata, add_usage
from langchain_core.tracers import _streaming
from langchain_core.tracers import context as _tracer_context
from langchain_core.tracers.core import _TracerCore

from guardrail import ChoiceVerdict, Guard, ModelCall, ModelReply, Policy, PolicySet, shared_guard

PolicySource = str | os.PathLike[str] | Policy
"""A shipped policy name, a YAML path or a :class:`~guardrail.Policy`."""

METADATA_KEY = "guardrail"
"""Where a checked answer's verdict goes in ``AIMessage.response_metadata``: the deciding part's
``Verdict.to_dict()``, with every checked part's under ``"parts"``."""

# LangChain's own per-call tracing parameters (ls_provider, ls_model_name...) describe the model
# call, not the request: they stay out of the verdict's metadata and its span attributes.
_LANGSMITH_PREFIX = "ls_"

C = TypeVar("C")

# The context variables LangChain adds handlers from when it configures a run (see
# context_handlers_hidden); without this list, handlers set that way are not hidden.
_CONFIGURE_HOOKS: Sequence[tuple[Any, ...]] = getattr(_tracer_context, "_configure_hooks", ())

# Handlers that forward tokens to a consumer (astream_events, astream_log, LangGraph's "messages"
# stream) carry LangChain's streaming marker; a v2 marker exists from langchain-core 1.8 on.
_STREAMING_MARKERS: tuple[type, ...] = tuple(
    marker
    for marker in (
        getattr(_streaming, "_StreamingCallbackHandler", None),
        getattr(_streaming, "_V2StreamingCallbackHandler", None),
    )
    if marker is not None
)


class GuardChoice:
    """One fixed guard, or a :class:`~guardrail.PolicySet` that picks a guard per call from its metadata.

    Without a guard or a set, the guard is the process-wide shared one of the policy
    (:func:`guardrail.shared_guard`): building a wrapper does not load a model again.
    """

    def __init__(self, guard: Guard | None, policy: PolicySource | None, policies: PolicySet | None) -> None:
        given = [
            name for name, value in (("guard", guard), ("policy", policy), ("policies", policies)) if value is not None
        ]
        if len(given) > 1:
            raise ValueError(f"pass at most one of guard, policy and policies; got {' and '.join(given)}")
        self.policies = policies
        self.guard = None if policies is not None else guard if guard is not None else shared_guard(policy)

    def pick(self, metadata: Mapping[str, Any]) -> Guard:
        """The guard for a call with this metadata (raises ``PolicyError`` for an unknown deployment)."""
        if self.policies is not None:
            return self.policies.guard(metadata)
        assert self.guard is not None  # built in __init__ whenever there is no policy set
        return self.guard

    def describe(self) -> dict[str, Any]:
        """What guards the calls, for a model's identifying parameters."""
        if self.policies is not None:
            return {"policies": self.policies.names, "policy_key": self.policies.key}
        assert self.guard is not None
        return {"policy": self.guard.policy.name, "policy_version": self.guard.policy.version}


def request_metadata(metadata: Mapping[str, Any] | None) -> dict[str, Any]:
    """A call's metadata as the guard sees it: the run's metadata without LangChain's ``ls_`` parameters."""
    return {k: v for k, v in (metadata or {}).items() if not k.startswith(_LANGSMITH_PREFIX)}


def last_prompt(messages: Sequence[BaseMessage]) -> str | None:
    """The text of the last human message: the prompt an answer is scored with."""
    for message in reversed(messages):
        if isinstance(message, HumanMessage):
            return str(message.text)
    return None


def answer_text(message: BaseMessage) -> str | None:
    """The text to check in a model's answer; ``None`` when there is none (e.g. only tool calls)."""
    text = str(message.text)
    return text if text.strip() else None


def is_checked(message: BaseMessage) -> bool:
    """True when the answer already carries a verdict (a guarded stream or a ``GuardedChatModel`` checked it)."""
    return METADATA_KEY in message.response_metadata


def reask_messages(messages: Sequence[BaseMessage], previous: str, feedback: str) -> list[BaseMessage]:
    """The conversation for a re-ask: the original messages, the rejected answer and the feedback."""
    return [*messages, AIMessage(content=previous), HumanMessage(content=feedback)]


def revised_text(message: BaseMessage) -> str:
    """The text of a re-asked answer; an answer without text cannot replace one, so it raises."""
    text = answer_text(message)
    if text is None:
        # Guard.enforce turns a failing re-ask into the rewrite action's fallback, with this reason.
        raise ValueError("the re-asked model answered without text (tool calls only or empty)")
    return text


def guarded_message(message: BaseMessage, outcome: ChoiceVerdict) -> AIMessage:
    """The answer to deliver: the original with its verdicts, or the deciding verdict's output when altered."""
    verdict = outcome.verdict
    metadata = {**message.response_metadata, METADATA_KEY: outcome.to_dict()}
    if isinstance(message, AIMessage) and not verdict.altered:
        return message.model_copy(update={"response_metadata": metadata})
    # An altered answer delivers none of the original's parts (reasoning, tool calls, other blocks):
    # they belonged to the answer that was stopped.
    usage = message.usage_metadata if isinstance(message, AIMessage) else None
    return AIMessage(
        content=verdict.output or "", id=message.id, name=message.name, response_metadata=metadata,
        usage_metadata=usage,
    )  # fmt: skip


def nested_callbacks(
    source: CallbackManagerForLLMRun | AsyncCallbackManagerForLLMRun | Callbacks, parent_run_id: UUID | None = None
) -> CallbackManager:
    """Callbacks for the wrapped model's own run: the tracers of the guarded run, the run nested in it.

    The guarded run is the call as its caller sees it: every other handler (usage and cost counters,
    loggers, callbacks given per call) sees that run alone, so one call counts once. Tracers
    (LangSmith, OpenInference, ``collect_runs``: LangChain's ``BaseTracer`` family) also see the
    wrapped model's run, as a child of the guarded one. Handlers that stream tokens to a consumer
    (``astream_events``, ``stream_events``, LangGraph's ``stream_mode="messages"``) are left out too:
    the wrapped model's raw tokens are the text under check, and a consumer must only see what the
    guarded run releases.

    Args:
        source: The guarded run's manager (``_generate``), or the call's callbacks (``_stream``, which
            LangChain hands no run manager).
        parent_run_id: The guarded run's id, when ``source`` is the call's callbacks.
    """
    if isinstance(source, (CallbackManagerForLLMRun, AsyncCallbackManagerForLLMRun, BaseCallbackManager)):
        handlers, tags, metadata = source.inheritable_handlers, source.inheritable_tags, source.inheritable_metadata
        if not isinstance(source, BaseCallbackManager):
            parent_run_id = source.run_id  # a run manager: the guarded run itself
    else:
        handlers, tags, metadata = list(source or []), [], {}
    manager = CallbackManager(handlers=[], parent_run_id=parent_run_id)
    manager.set_handlers([handler for handler in handlers if _traces(handler)])
    manager.add_tags(tags)
    manager.add_metadata(metadata)
    return manager


@contextmanager
def context_handlers_hidden() -> Iterator[None]:
    """Hide, from the runs started inside, the handlers LangChain adds from context variables
    (``get_usage_metadata_callback()``, ``get_openai_callback()``...) unless they trace.

    LangChain adds such a handler to every run it configures, the wrapped model's included; it is on
    the guarded run already. Only starting a run reads them: hiding them while the wrapped model's run
    starts is enough, and its handlers are the same as :func:`nested_callbacks` gives it.
    """
    hidden = []
    for var, *_ in _CONFIGURE_HOOKS:
        handler = var.get()
        if handler is not None and not _traces(handler):
            hidden.append((var, var.set(None)))
    try:
        yield
    finally:
        for var, token in reversed(hidden):
            var.reset(token)


def hidden_iter(chunks: Iterator[C]) -> Iterator[C]:
    """``chunks`` (the wrapped model's stream), each step taken with :func:`context_handlers_hidden`."""
    try:
        while True:
            with context_handlers_hidden():
                try:
                    chunk = next(chunks)
                except StopIteration:
                    return
            yield chunk
    finally:
        close = getattr(chunks, "close", None)
        if close is not None:
            close()


async def hidden_aiter(chunks: AsyncIterator[C]) -> AsyncIterator[C]:
    """Async twin of :func:`hidden_iter`."""
    try:
        while True:
            with context_handlers_hidden():
                try:
                    chunk = await chunks.__anext__()
                except StopAsyncIteration:
                    return
            yield chunk
    finally:
        aclose = getattr(chunks, "aclose", None)
        if aclose is not None:
            await aclose()


def with_usage_of(message: AIMessage, others: Sequence[BaseMessage]) -> AIMessage:
    """``message`` with the token usage of ``others`` (the re-asks made for it) added to its own."""
    usage = message.usage_metadata
    for other in others:
        if isinstance(other, AIMessage) and other.usage_metadata:
            usage = add_usage(usage, other.usage_metadata)
    return message if usage is message.usage_metadata else message.model_copy(update={"usage_metadata": usage})


# -- what a model-call span records -------------------------------------------------------------------


def model_call(
    model: object, messages: Sequence[BaseMessage], stop: list[str] | None, kwargs: Mapping[str, Any]
) -> ModelCall:
    """The call ``model.invoke(messages, stop=stop, **kwargs)`` makes, as LangChain's tracing parameters describe it.

    The provider is ``ls_provider`` (else the model's ``_llm_type``), the model ``ls_model_name``.
    """
    params: Mapping[str, Any] = {}
    get_params = getattr(model, "_get_ls_params", None)
    if callable(get_params):
        try:
            params = get_params(stop=stop, **kwargs)
        except Exception:  # a model's tracing parameters are a courtesy; the call goes on without them
            params = {}
    provider = params.get("ls_provider") or getattr(model, "_llm_type", None)
    top_p = kwargs.get("top_p", getattr(model, "top_p", None))
    parameters = {
        "temperature": params.get("ls_temperature"),
        "max_tokens": params.get("ls_max_tokens"),
        "top_p": top_p,
        "stop_sequences": params.get("ls_stop"),
    }
    name = params.get("ls_model_name")
    return ModelCall(
        name if isinstance(name, str) and name else None,
        provider if isinstance(provider, str) and provider else None,
        {k: v for k, v in parameters.items() if v is not None},
        lambda: [(_ROLES.get(m.type, m.type), str(m.text)) for m in messages],
    )


def reply_of(message: BaseMessage | None) -> ModelReply:
    """What a model's answer says about the call: response model and id, finish reason, token usage."""
    if message is None:
        return ModelReply()
    meta = message.response_metadata
    model = meta.get("model_name") or meta.get("model")
    # The provider's response id; LangChain's own run ids ("lc_run-...", "run-...") are not one.
    own_id = message.id if message.id and not message.id.startswith((LC_AUTO_PREFIX, "run-")) else None
    response_id = meta.get("id") or own_id
    finish = meta.get("finish_reason") or meta.get("stop_reason") or meta.get("done_reason")
    usage = message.usage_metadata if isinstance(message, AIMessage) else None
    return ModelReply(
        model=model if isinstance(model, str) else None,
        id=response_id if isinstance(response_id, str) else None,
        finish_reasons=[finish] if isinstance(finish, str) else [],
        input_tokens=usage["input_tokens"] if usage else None,
        output_tokens=usage["output_tokens"] if usage else None,
        text=str(message.text),
    )


def result_reply(messages: Sequence[BaseMessage]) -> ModelReply:
    """What an answer of several generations says: the first one's metadata, every one's finish reason."""
    reply = reply_of(messages[0] if messages else None)
    finishes = [reason for m in messages for reason in reply_of(m).finish_reasons]
    return replace(reply, finish_reasons=finishes)


def stream_reply(chunks: Sequence[BaseMessage]) -> ModelReply:
    """What a streamed answer says about the call: metadata as the last chunks give it, usage added up."""
    metadata: dict[str, Any] = {}
    usage: UsageMetadata | None = None
    ids = []
    for chunk in chunks:
        metadata.update(chunk.response_metadata)
        chunk_usage = chunk.usage_metadata if isinstance(chunk, AIMessage) else None
        if chunk_usage:
            usage = add_usage(usage, chunk_usage)  # some providers split usage over chunks (input first)
        ids.append(chunk.id)
    text = "".join(str(chunk.text) for chunk in chunks)
    provider_id = next((i for i in ids if i and not i.startswith((LC_AUTO_PREFIX, "run-"))), None)
    return reply_of(AIMessage(content=text, id=provider_id, response_metadata=metadata, usage_metadata=usage))


# Message types as the GenAI conventions name the roles.
_ROLES = {"human": "user", "ai": "assistant", "system": "system", "tool": "tool"}


def _traces(handler: BaseCallbackHandler) -> bool:
    """A tracer (records runs as a tree) that does not stream tokens to a consumer."""
    return isinstance(handler, _TracerCore) and not isinstance(handler, _STREAMING_MARKERS)
