"""Guarded twins of ``litellm.completion`` and ``litellm.acompletion``."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import litellm
from litellm import CustomStreamWrapper, ModelResponse
from litellm.types.utils import ModelResponseStream

from guardrail import CallSpans, Guard, GuardrailViolation, ModelCall, PolicySet, Verdict
from guardrail_litellm._guards import PolicySource, is_ready, resolve
from guardrail_litellm._mapping import attach, blocked, prompt_of, reask_messages, reask_text, requested_choices
from guardrail_litellm._parts import chat_outputs, deliver_chat
from guardrail_litellm._spans import model_call, reply_of, stream_reply
from guardrail_litellm._streams import AsyncChatStream, ChatStream


@dataclass(frozen=True)
class _Call:
    """One guarded call: litellm's arguments by name, and what the guard needs from them."""

    kwargs: dict[str, Any]
    guard: Guard
    prompt: str | None
    metadata: Mapping[str, Any] | None

    @property
    def streaming(self) -> bool:
        return bool(self.kwargs.get("stream"))

    def reask_kwargs(self, previous: str, feedback: str) -> dict[str, Any]:
        """The same call again with the refused answer and the feedback appended, not streamed, one choice."""
        kwargs = {k: v for k, v in self.kwargs.items() if k not in ("stream_options", "n")}
        return {**kwargs, "messages": reask_messages(self.kwargs["messages"], previous, feedback), "stream": False}

    def spans(self) -> CallSpans:
        """The ``guardrail.call`` span of this call (model call, check and rewrite spans nest under it)."""
        return self.guard.trace_call(model_call(self.kwargs), integration="litellm", metadata=self.metadata,
                                     streamed=self.streaming)  # fmt: skip


def _by_name(args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
    # litellm.completion(model, messages, ...): only these two are ever passed by position.
    if len(args) > 2:
        raise TypeError(f"pass arguments after model and messages by keyword; got {len(args)} positional arguments")
    named = dict(zip(("model", "messages"), args))
    duplicate = named.keys() & kwargs.keys()
    if duplicate:
        raise TypeError(f"got multiple values for argument {sorted(duplicate)[0]!r}")
    kwargs = {**named, **kwargs}
    if not isinstance(kwargs.get("messages"), list):
        raise TypeError(f"messages must be a list of chat messages, got {type(kwargs.get('messages')).__name__}")
    requested_choices(kwargs.get("n"), streamed=bool(kwargs.get("stream")))
    return kwargs


def _prepare(
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    guard: Guard | None,
    policy: PolicySource | None,
    policies: PolicySet | None,
) -> _Call:
    kwargs = _by_name(args, kwargs)
    metadata = kwargs.get("metadata")
    if metadata is not None and not isinstance(metadata, Mapping):
        raise TypeError(f"metadata must be a mapping, got {type(metadata).__name__}")
    if metadata is not None:
        metadata = dict(metadata)  # a snapshot: litellm writes its own entries into the caller's dict
    chosen = resolve(guard, policy, policies, metadata)
    return _Call(kwargs, chosen, prompt_of(kwargs["messages"]), metadata)


def completion(
    *args: Any,
    guard: Guard | None = None,
    policy: PolicySource | None = None,
    policies: PolicySet | None = None,
    raise_on_block: bool = False,
    **kwargs: Any,
) -> ModelResponse | GuardedCompletionStream:
    """``litellm.completion`` with the answer checked by a value guard before it is returned.

    Takes litellm's arguments unchanged, plus at most one of ``guard`` (a :class:`~guardrail.Guard`),
    ``policy`` (a shipped policy name, a YAML path or a :class:`~guardrail.Policy`) and ``policies``
    (a :class:`~guardrail.PolicySet`, which picks the guard from ``metadata``); with none, a
    process-default ``Guard()`` is built on first use.

    Every part of every choice is checked, each with its own verdict: the content, the
    ``reasoning_content`` and each tool call (as ``name(arguments)``). Each ``choices[n]`` holds what
    the policy lets through: the answer, its rewrite, or, when any of its parts is blocked, the policy
    message alone (no reasoning, no tool calls). :func:`verdict_of` gives the deciding verdict,
    :func:`verdicts_of` every part's. A reask rewrite asks the model again for that choice's content
    alone; reasoning and tool calls cannot be rewritten, so their rewrite's fallback applies. Empty
    answers pass unchecked. ``n`` must be a whole number (1 for a stream).

    Args:
        raise_on_block: Raise :class:`~guardrail.GuardrailViolation` instead of returning the policy
            message when a choice is finally blocked.

    Returns:
        A ``ModelResponse``, or with ``stream=True`` a :class:`GuardedCompletionStream`.

    Example:
        >>> from guardrail_litellm import completion, verdict_of
        >>> response = completion(model="gpt-4o-mini", messages=[{"role": "user", "content": "Hi"}],
        ...                       mock_response="Hello! How can I help?")  # doctest: +SKIP
        >>> verdict_of(response).decision  # doctest: +SKIP
        'allow'
    """
    call = _prepare(args, kwargs, guard, policy, policies)
    spans = call.spans()
    if call.streaming:
        with spans.model(end=False) as model:  # the model span stays open while the answer streams
            response = litellm.completion(**call.kwargs)
        guarded = ChatStream(call.guard, model.wrap(response, stream_reply), call.prompt, call.metadata)
        return GuardedCompletionStream(response, guarded, raise_on_block, spans.iterate(guarded))
    with spans:
        response = _model(spans, call.kwargs, spans.call)
        pieces = chat_outputs(response)
        if not pieces:
            return response

        def reask(previous: str, feedback: str) -> str:
            again = call.reask_kwargs(previous, feedback)
            return reask_text(_model(spans, again, model_call(again)))

        verdicts = call.guard.enforce_outputs(pieces, call.prompt, call.metadata, reask=reask)
        spans.record(attach(response, verdicts, raise_on_block=raise_on_block))
    deliver_chat(response, verdicts)
    return response


async def acompletion(
    *args: Any,
    guard: Guard | None = None,
    policy: PolicySource | None = None,
    policies: PolicySet | None = None,
    raise_on_block: bool = False,
    **kwargs: Any,
) -> ModelResponse | AsyncGuardedCompletionStream:
    """Async twin of :func:`completion` (``litellm.acompletion``; async iteration with ``stream=True``).

    Example:
        >>> response = await acompletion(model="gpt-4o-mini", messages=messages, stream=True)  # doctest: +SKIP
        >>> text = "".join([c.choices[0].delta.content or "" async for c in response])  # doctest: +SKIP
        >>> response.verdict.decision  # doctest: +SKIP
        'allow'
    """
    if not is_ready(guard, policy, policies):
        # The first call loads the model (about a second): keep the event loop free meanwhile.
        call = await asyncio.to_thread(_prepare, args, kwargs, guard, policy, policies)
    else:
        call = _prepare(args, kwargs, guard, policy, policies)
    spans = call.spans()
    if call.streaming:
        with spans.model(end=False) as model:
            response = await litellm.acompletion(**call.kwargs)
        guarded = AsyncChatStream(call.guard, model.awrap(response, stream_reply), call.prompt, call.metadata)
        return AsyncGuardedCompletionStream(response, guarded, raise_on_block, await spans.aiterate(guarded))
    with spans:
        response = await _amodel(spans, call.kwargs, spans.call)
        pieces = chat_outputs(response)
        if not pieces:
            return response

        async def reask(previous: str, feedback: str) -> str:
            again = call.reask_kwargs(previous, feedback)
            return reask_text(await _amodel(spans, again, model_call(again)))

        verdicts = await call.guard.aenforce_outputs(pieces, call.prompt, call.metadata, reask=reask)
        spans.record(attach(response, verdicts, raise_on_block=raise_on_block))
    deliver_chat(response, verdicts)
    return response


def _model(spans: CallSpans, kwargs: dict[str, Any], call: ModelCall) -> Any:
    """``litellm.completion`` inside a model-call span (the first call, or a re-ask under ``guardrail.reask``)."""
    with spans.model(call) as model:
        response = litellm.completion(**kwargs)
        model.record(reply_of(response))
    return response


async def _amodel(spans: CallSpans, kwargs: dict[str, Any], call: ModelCall) -> Any:
    """Async twin of :func:`_model`."""
    with spans.model(call) as model:
        response = await litellm.acompletion(**kwargs)
        model.record(reply_of(response))
    return response


class _StreamBase:
    def __init__(self, upstream: CustomStreamWrapper, guarded: ChatStream | AsyncChatStream,
                 raise_on_block: bool, chunks: Iterator[Any] | AsyncIterator[Any] | None = None) -> None:  # fmt: skip
        self._upstream, self._guarded, self._raise = upstream, guarded, raise_on_block
        # What is iterated: the guarded stream, stepped inside its guardrail.call span when traced.
        self._chunks = guarded if chunks is None else chunks

    @property
    def verdict(self) -> Verdict | None:
        """The deciding verdict once the stream has ended (``None`` before, and for an empty answer)."""
        return self._guarded.verdict

    @property
    def verdicts(self) -> tuple[Verdict, ...]:
        """Every checked part's verdict (content, reasoning, each tool call), all of them once it has ended."""
        return tuple(self._guarded.verdicts)

    @property
    def delivered(self) -> str:
        """The answer's own text that reached the caller (the policy message not included)."""
        return self._guarded.delivered

    def _stopping(self) -> bool:
        """True once the answer is blocked and the caller wants an exception instead of the message."""
        return self._raise and blocked(self._guarded.verdict)

    def _check(self) -> None:
        if self._stopping():
            raise GuardrailViolation(self._guarded.verdict)  # type: ignore[arg-type]  # _stopping() checked it

    def __getattr__(self, name: str) -> Any:
        # Everything else (model, logging_obj, _hidden_params, ...) is litellm's stream's.
        upstream = self.__dict__.get("_upstream")
        if upstream is None:
            raise AttributeError(name)
        return getattr(upstream, name)


class GuardedCompletionStream(_StreamBase, Iterator[ModelResponseStream]):
    """What :func:`completion` returns with ``stream=True``: litellm's chunks, released as the policy allows.

    Content and reasoning are held back and scored per the policy's ``streaming`` block, tool calls
    are held whole until checked; role, finish and usage chunks keep their place. A blocked answer
    ends with one chunk carrying the policy message and ``finish_reason: "stop"`` (with
    ``raise_on_block``, :class:`~guardrail.GuardrailViolation` is raised instead). Other attributes
    are litellm's ``CustomStreamWrapper``'s.

    Example:
        >>> stream = completion(model="gpt-4o-mini", messages=messages, stream=True)  # doctest: +SKIP
        >>> for chunk in stream:  # doctest: +SKIP
        ...     print(chunk.choices[0].delta.content or "", end="")
        >>> stream.verdict.decision  # doctest: +SKIP
        'allow'
    """

    _guarded: ChatStream
    _chunks: Iterator[ModelResponseStream]

    def __iter__(self) -> GuardedCompletionStream:
        return self

    def __next__(self) -> ModelResponseStream:
        try:
            chunk = next(self._chunks)
        except StopIteration:
            self._check()
            raise
        if self._stopping():
            self.close()  # the block's message chunk comes after its verdict: end here, raise instead of sending it
        self._check()
        return chunk

    def close(self) -> None:
        """Stop early (the caller went away): settles ``verdict``, ends the trace and closes litellm's stream."""
        close = getattr(self._chunks, "close", None)
        if close is not None:
            close()
        self._upstream.close()


class AsyncGuardedCompletionStream(_StreamBase, AsyncIterator[ModelResponseStream]):
    """Async twin of :class:`GuardedCompletionStream`, returned by :func:`acompletion` with ``stream=True``."""

    _guarded: AsyncChatStream
    _chunks: AsyncIterator[ModelResponseStream]

    def __aiter__(self) -> AsyncGuardedCompletionStream:
        return self

    async def __anext__(self) -> ModelResponseStream:
        try:
            chunk = await self._chunks.__anext__()
        except StopAsyncIteration:
            self._check()
            raise
        if self._stopping():
            await self.aclose()
        self._check()
        return chunk

    async def aclose(self) -> None:
        """Async twin of :meth:`GuardedCompletionStream.close`."""
        close = getattr(self._chunks, "aclose", None)
        if close is not None:
            await close()
        await self._upstream.aclose()
