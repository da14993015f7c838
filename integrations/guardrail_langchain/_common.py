"""What the chat model and the agent middleware share: picking the guard, reading messages, quiet callbacks."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

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

from guardrail import ChoiceVerdict, Guard, ModelCall, ModelReply, Policy, PolicySet

PolicySource = str | os.PathLike[str] | Policy
"""A shipped policy name, a YAML path or a :class:`~guardrail.Policy`."""

METADATA_KEY = "guardrail"
"""Where a checked answer's verdict goes in ``AIMessage.response_metadata``: the deciding part's
``Verdict.to_dict()``, with every checked part's under ``"parts"``."""

# LangChain's own per-call tracing parameters (ls_provider, ls_model_name...) describe the model
# call, not the request: they stay out of the verdict's metadata and its span attributes.
_LANGSMITH_PREFIX = "ls_"

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
    """One fixed guard, or a :class:`~guardrail.PolicySet` that picks a guard per call from its metadata."""

    def __init__(self, guard: Guard | None, policy: PolicySource | None, policies: PolicySet | None) -> None:
        given = [
            name for name, value in (("guard", guard), ("policy", policy), ("policies", policies)) if value is not None
        ]
        if len(given) > 1:
            raise ValueError(f"pass at most one of guard, policy and policies; got {' and '.join(given)}")
        self.policies = policies
        self.guard = None if policies is not None else guard if guard is not None else Guard(policy)

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


def quiet_callbacks(callbacks: Callbacks) -> list[BaseCallbackHandler] | BaseCallbackManager:
    """Callbacks for the wrapped model's own run, without handlers that stream tokens to a consumer.

    The wrapped model's raw tokens are the text under check: a stream consumer (``astream_events``,
    LangGraph's ``stream_mode="messages"``) must only see what the guarded run releases. Tracers and
    other handlers still see the wrapped run. The result is never ``None``, so the call does not fall
    back to the callbacks of the surrounding runnable context.
    """
    if callbacks is None:
        return []
    if isinstance(callbacks, list):
        return [handler for handler in callbacks if not _streams(handler)]
    manager = callbacks.copy()
    for handler in [*manager.handlers, *manager.inheritable_handlers]:
        if _streams(handler):
            manager.remove_handler(handler)
    return manager


def child_callbacks(run_manager: CallbackManagerForLLMRun | AsyncCallbackManagerForLLMRun) -> CallbackManager:
    """Callbacks for a run nested in a chat model's run (what ``get_child`` gives a chain's run)."""
    manager = CallbackManager(handlers=[], parent_run_id=run_manager.run_id)
    manager.set_handlers(run_manager.inheritable_handlers)
    manager.add_tags(run_manager.inheritable_tags)
    manager.add_metadata(run_manager.inheritable_metadata)
    return manager


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


def _streams(handler: BaseCallbackHandler) -> bool:
    return isinstance(handler, _STREAMING_MARKERS)
