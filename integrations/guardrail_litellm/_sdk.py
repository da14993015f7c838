"""Guarded twins of ``litellm.completion`` and ``litellm.acompletion``."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import litellm
from litellm import CustomStreamWrapper, ModelResponse
from litellm.types.utils import ModelResponseStream

from guardrail import AsyncGuardedStream, Guard, GuardedStream, GuardrailViolation, PolicySet, Verdict
from guardrail._genai import CallSpans, ModelCall, call_spans
from guardrail_litellm._guards import PolicySource, is_ready, resolve
from guardrail_litellm._mapping import (
    answer_of,
    blocked,
    chunk_text,
    deliver,
    prompt_of,
    reask_messages,
    reask_text,
    rebuild_chunk,
)
from guardrail_litellm._spans import model_call, reply_of, stream_reply


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
        """The same call again with the refused answer and the feedback appended, not streamed."""
        kwargs = {k: v for k, v in self.kwargs.items() if k != "stream_options"}
        return {**kwargs, "messages": reask_messages(self.kwargs["messages"], previous, feedback), "stream": False}

    def spans(self) -> CallSpans:
        """The ``guardrail.call`` span of this call (model call, check and rewrite spans nest under it)."""
        return call_spans(self.guard, model_call(self.kwargs), integration="litellm", metadata=self.metadata,
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
    if (kwargs.get("n") or 1) > 1:
        # Each choice would need its own verdict; failing here costs nothing, an unchecked choice would leak.
        raise ValueError(f"n must be 1 for a guarded call (one answer, one verdict); got n={kwargs['n']}")
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
    process-default ``Guard()`` is built on first use. ``choices[0].message.content`` holds what the
    policy lets through (the answer, its rewrite, or the policy message); :func:`verdict_of` gives the
    verdict. Answers without text (tool calls only) pass unchecked.

    Args:
        raise_on_block: Raise :class:`~guardrail.GuardrailViolation` instead of returning the policy
            message when the answer is finally blocked.

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
        upstream = model.wrap(response, stream_reply)
        guarded = call.guard.stream(upstream, call.prompt, call.metadata, text=chunk_text, rebuild=rebuild_chunk)
        return GuardedCompletionStream(response, guarded, raise_on_block, spans.iterate(guarded))
    with spans:
        response = _model(spans, call.kwargs, spans.call)
        text = answer_of(response)
        if text is None:
            return response

        def reask(previous: str, feedback: str) -> str:
            again = call.reask_kwargs(previous, feedback)
            return reask_text(_model(spans, again, model_call(again)))

        verdict = call.guard.enforce(text, call.prompt, call.metadata, reask=reask)
        spans.record(verdict)
    return deliver(response, verdict, raise_on_block=raise_on_block)


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
        upstream = model.awrap(response, stream_reply)
        guarded = call.guard.astream(upstream, call.prompt, call.metadata, text=chunk_text, rebuild=rebuild_chunk)
        return AsyncGuardedCompletionStream(response, guarded, raise_on_block, await spans.aiterate(guarded))
    with spans:
        response = await _amodel(spans, call.kwargs, spans.call)
        text = answer_of(response)
        if text is None:
            return response

        async def reask(previous: str, feedback: str) -> str:
            again = call.reask_kwargs(previous, feedback)
            return reask_text(await _amodel(spans, again, model_call(again)))

        verdict = await call.guard.aenforce(text, call.prompt, call.metadata, reask=reask)
        spans.record(verdict)
    return deliver(response, verdict, raise_on_block=raise_on_block)


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
    def __init__(self, upstream: CustomStreamWrapper, guarded: GuardedStream[Any] | AsyncGuardedStream[Any],
                 raise_on_block: bool, chunks: Iterator[Any] | AsyncIterator[Any] | None = None) -> None:  # fmt: skip
        self._upstream, self._guarded, self._raise = upstream, guarded, raise_on_block
        # What is iterated: the guarded stream, stepped inside its guardrail.call span when traced.
        self._chunks = guarded if chunks is None else chunks

    @property
    def verdict(self) -> Verdict | None:
        """The stream's verdict once it has ended (``None`` before, and for an answer with no text)."""
        return self._guarded.verdict

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

    Text is held back and scored per the policy's ``streaming`` block; role, tool-call, finish and
    usage chunks keep their place. A blocked answer ends with one chunk carrying the policy message
    (with ``raise_on_block``, :class:`~guardrail.GuardrailViolation` is raised instead). Other
    attributes are litellm's ``CustomStreamWrapper``'s.

    Example:
        >>> stream = completion(model="gpt-4o-mini", messages=messages, stream=True)  # doctest: +SKIP
        >>> for chunk in stream:  # doctest: +SKIP
        ...     print(chunk.choices[0].delta.content or "", end="")
        >>> stream.verdict.decision  # doctest: +SKIP
        'allow'
    """

    _guarded: GuardedStream[ModelResponseStream]
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

    _guarded: AsyncGuardedStream[ModelResponseStream]
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
