"""A LangChain answer streamed under a guard: text window by window, reasoning and tool calls held to its end.

Text goes through the core's guarded stream (``Guard.stream``), released as the policy's
``streaming`` block says. Chunks that carry anything else the user sees (reasoning, tool-call
chunks, other content blocks, ``additional_kwargs``) are held back until the answer has ended;
added up, their reasoning and tool calls are checked, and they go out only if they all passed.
Otherwise the policy's message goes out in their place and none of them does.
"""

from __future__ import annotations

import operator
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Iterator, Mapping
from functools import reduce
from typing import Any

from langchain_core.messages import LC_AUTO_PREFIX, AIMessageChunk, BaseMessage

from guardrail import AsyncGuardedStream, ChoiceVerdict, Guard, GuardedStream, OutputPart, Verdict, deciding
from guardrail_langchain._outputs import held_outputs

_CONTENT = OutputPart("content")


class _Held:
    """Sans-I/O state of one streamed answer: the content's stream and the chunks held back beside it."""

    def __init__(self, guard: Guard, prompt: str | None, metadata: Mapping[str, Any]) -> None:
        self._guard, self._prompt, self._metadata = guard, prompt, metadata
        self._held: list[AIMessageChunk] = []
        self._others: list[Verdict] = []
        self._content: GuardedStream[AIMessageChunk] | AsyncGuardedStream[AIMessageChunk] | None = None

    @property
    def verdicts(self) -> list[Verdict]:
        """Every part's verdict so far, content first."""
        content = self._content.verdict if self._content is not None else None
        return [*([content] if content is not None else []), *self._others]

    @property
    def verdict(self) -> Verdict | None:
        """The deciding verdict so far (``None``: nothing was checked)."""
        verdicts = self.verdicts
        return deciding(verdicts) if verdicts else None

    @property
    def outcome(self) -> ChoiceVerdict | None:
        """Every part's verdict once the answer has ended (``None``: it had nothing to check)."""
        verdicts = self.verdicts
        return ChoiceVerdict(0, tuple(verdicts)) if verdicts else None

    def _divert(self, chunk: BaseMessage) -> list[AIMessageChunk]:
        """Split one upstream chunk; keep back what must wait, return what the text stream takes."""
        text, rest = split(chunk)
        if rest is not None and _shows_more(rest):
            self._held.append(rest)
            rest = None
        return [piece for piece in (text, rest) if piece is not None]

    def _pending(self) -> BaseMessage | None:
        """The held chunks added up, when there are any and the text was not stopped."""
        content = self._content.verdict if self._content is not None else None
        if not self._held or (content is not None and content.altered):
            return None  # a stopped answer delivers none of its other parts: they are dropped unchecked
        return reduce(operator.add, self._held)

    def _release(self, verdicts: list[Verdict]) -> list[AIMessageChunk]:
        self._others = verdicts
        decided = deciding(verdicts) if verdicts else None
        if decided is None or not decided.altered:
            return self._held
        message = decided.output or ""
        return [AIMessageChunk(content=message, id=self._held[0].id)] if message else []


class HeldAnswer(_Held, Iterator[AIMessageChunk]):
    """A guarded LangChain stream (see module docs); ``verdict`` and ``outcome`` settle as it ends."""

    def __init__(
        self, guard: Guard, upstream: Iterable[BaseMessage], prompt: str | None, metadata: Mapping[str, Any]
    ) -> None:
        super().__init__(guard, prompt, metadata)
        self._content = guard.stream(
            self._pieces(upstream), prompt, metadata, text=chunk_text, rebuild=rebuild, part=_CONTENT
        )
        self._gen = self._run()

    def __next__(self) -> AIMessageChunk:
        return next(self._gen)

    def close(self) -> None:
        """Stop early: closes the text stream and, with it, the upstream."""
        try:
            self._gen.close()
        finally:
            self._content.close()  # also when closed before the first chunk: the generator never ran

    def _pieces(self, upstream: Iterable[BaseMessage]) -> Iterator[AIMessageChunk]:
        for chunk in upstream:
            yield from self._divert(chunk)

    def _run(self) -> Iterator[AIMessageChunk]:
        try:
            yield from self._content
            held = self._pending()
            if held is not None:
                yield from self._release(self._guard.enforce_outputs(held_outputs(held), self._prompt, self._metadata))
        finally:
            self._content.close()


class AsyncHeldAnswer(_Held, AsyncIterator[AIMessageChunk]):
    """Async twin of :class:`HeldAnswer`."""

    def __init__(
        self, guard: Guard, upstream: AsyncIterable[BaseMessage], prompt: str | None, metadata: Mapping[str, Any]
    ) -> None:
        super().__init__(guard, prompt, metadata)
        self._content = guard.astream(
            self._pieces(upstream), prompt, metadata, text=chunk_text, rebuild=rebuild, part=_CONTENT
        )
        self._gen = self._run()

    def __anext__(self) -> Any:
        return self._gen.__anext__()

    async def aclose(self) -> None:
        """Stop early: closes the text stream and, with it, the upstream."""
        try:
            await self._gen.aclose()
        finally:
            await self._content.aclose()

    async def _pieces(self, upstream: AsyncIterable[BaseMessage]) -> AsyncIterator[AIMessageChunk]:
        async for chunk in upstream:
            for piece in self._divert(chunk):
                yield piece

    async def _run(self) -> AsyncIterator[AIMessageChunk]:
        try:
            async for chunk in self._content:
                yield chunk
            held = self._pending()
            if held is not None:
                verdicts = await self._guard.aenforce_outputs(held_outputs(held), self._prompt, self._metadata)
                for chunk in self._release(verdicts):
                    yield chunk
        finally:
            await self._content.aclose()


def chunk_text(chunk: AIMessageChunk) -> str:
    """The text of a chunk, as the guarded stream reads it."""
    return str(chunk.text)


def rebuild(template: AIMessageChunk, text: str) -> AIMessageChunk:
    """A chunk carrying released text (or the policy's message)."""
    return AIMessageChunk(content=text, id=template.id)


def split(chunk: BaseMessage) -> tuple[AIMessageChunk | None, AIMessageChunk | None]:
    """An upstream chunk as its text and the rest (tool-call chunks, reasoning, usage, finish reason, other blocks).

    Held-back text is re-chunked as it is released, so a chunk that carried text and more would
    repeat the rest; split, the rest goes out once.
    """
    if not isinstance(chunk, AIMessageChunk):  # a model without streaming yields its whole AIMessage
        chunk = AIMessageChunk(**chunk.model_dump(exclude={"type"}))
    # Run ids ("lc_run-...") of the wrapped model's run give way to our run's, so that every chunk of
    # the answer, and the answer as stored, carry one id; provider ids are kept.
    own_id = None if chunk.id is None or chunk.id.startswith(LC_AUTO_PREFIX) else chunk.id
    text = str(chunk.text)
    content: str | list[str | dict[str, Any]] = (
        "" if isinstance(chunk.content, str) else [b for b in chunk.content if not _is_text_block(b)]
    )
    rest = chunk.model_copy(update={"content": content, "id": own_id, "chunk_position": None})
    metadata = rest.response_metadata or rest.usage_metadata
    return (
        AIMessageChunk(content=text, id=own_id) if text else None,
        rest if metadata or _shows_more(rest) else None,
    )


def _shows_more(piece: AIMessageChunk) -> bool:
    """True when a piece carries more than metadata: blocks, tool calls or ``additional_kwargs`` (reasoning...)."""
    return bool(piece.content or piece.tool_call_chunks or piece.tool_calls or piece.invalid_tool_calls
                or piece.additional_kwargs)  # fmt: skip


def _is_text_block(block: str | dict[str, Any]) -> bool:
    return isinstance(block, str) or block.get("type") == "text"
