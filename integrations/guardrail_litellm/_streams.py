"""Guarded chat streams: content, reasoning and tool calls of a streamed answer, each held back until checked.

A chat stream's chunks carry, for its one choice, a reasoning delta, a content delta or tool-call
deltas (a chunk with several is split, one kind each). Consecutive chunks of one kind form a run:

- a content or reasoning run goes through a :class:`~guardrail.GuardedStream` of its own (the
  policy's ``streaming`` windows; its verdict labelled with the run's ``OutputPart``), which ends
  with the run, so its last window is checked when the model moves on, not at the end of the answer;
- a tool-call run is held whole, then each tool call is checked as ``name(arguments)``;
- role, finish and usage chunks pass in their place.

Once a part is blocked the choice delivers nothing more: one last chunk carries the policy's
message as content with ``finish_reason: "stop"``, and the model call is closed. Parts that passed
before it have already been delivered (a stream cannot take them back). Deltas of other choices
are dropped: a guarded stream carries one choice (``n`` above 1 is refused before the call).
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable, Iterator, Mapping
from itertools import groupby
from typing import Any, Literal, TypeAlias

from litellm.types.utils import Delta, ModelResponseStream, StreamingChoices

from guardrail import AsyncGuardedStream, Guard, GuardedStream, Output, OutputPart, Verdict, deciding, tool_call_text
from guardrail_litellm._mapping import blocked
from guardrail_litellm._parts import withhold_reasoning

Kind: TypeAlias = Literal["reasoning", "content", "tool_call", "other"]
_FIELDS: Mapping[Kind, str] = {"reasoning": "reasoning_content", "content": "content"}


def split(chunk: ModelResponseStream) -> list[tuple[Kind, ModelResponseStream]]:
    """A chunk as pieces of one kind each, for choice 0 only: reasoning, content, tool calls, then finish and usage."""
    choices = chunk.choices or []
    mine = [c for c in choices if (c.index or 0) == 0]
    if len(mine) != len(choices):
        if not mine:
            return []  # only deltas of a choice nobody asked for: never delivered
        chunk = chunk.model_copy(update={"choices": mine})
    if not mine:
        return [("other", chunk)]  # usage
    choice, delta = mine[0], mine[0].delta
    kinds: list[Kind] = [k for k, present in (
        ("reasoning", bool(getattr(delta, "reasoning_content", None))), ("content", bool(delta.content)),
        ("tool_call", bool(delta.tool_calls or delta.function_call))) if present]  # fmt: skip
    if not kinds:
        return [("other", chunk)]
    tail = choice.finish_reason is not None or getattr(chunk, "usage", None) is not None
    if len(kinds) == 1 and not tail:
        return [(kinds[0], chunk)]
    # The finish and usage go out after the text, in a chunk of their own: held text is released later.
    return [(kind, _only(chunk, kind)) for kind in kinds] + ([("other", _only(chunk, "other"))] if tail else [])


def _only(chunk: ModelResponseStream, kind: Kind) -> ModelResponseStream:
    piece = chunk.model_copy(deep=True)
    choice, delta = piece.choices[0], piece.choices[0].delta
    if kind != "reasoning":
        withhold_reasoning(delta)
    if kind != "content":
        delta.content = None
    if kind != "tool_call":
        delta.tool_calls, delta.function_call = None, None
    if kind != "other":
        choice.finish_reason = None
        if getattr(piece, "usage", None) is not None:
            piece.usage = None
    return piece


def reader(kind: Kind) -> Callable[[ModelResponseStream], str | None]:
    """Reads a run's text from a chunk: ``delta.content`` or ``delta.reasoning_content``."""
    name = _FIELDS[kind]

    def read(chunk: ModelResponseStream) -> str | None:
        value = getattr(chunk.choices[0].delta, name, None) if chunk.choices else None
        return value if isinstance(value, str) else None

    return read


def writer(kind: Kind) -> Callable[[ModelResponseStream, str], ModelResponseStream]:
    """Builds a chunk carrying released text of a run (a copy of the run's last chunk)."""
    name = _FIELDS[kind]

    def write(template: ModelResponseStream, text: str) -> ModelResponseStream:
        chunk = template.model_copy(deep=True)
        setattr(chunk.choices[0].delta, name, text)
        return chunk

    return write


def final_chunk(template: ModelResponseStream, message: str) -> ModelResponseStream:
    """The last chunk of a blocked choice: the policy's message as content, ``finish_reason: "stop"``."""
    return template.model_copy(update={"choices": [StreamingChoices(
        index=0, delta=Delta(role="assistant", content=message), finish_reason="stop")]}, deep=True)  # fmt: skip


def tool_outputs(chunks: Iterable[ModelResponseStream], start: int) -> list[Output]:
    """The tool calls a run of tool-call deltas assembles (name from the first delta, arguments joined)."""
    calls: dict[int, list[str]] = {}
    names: dict[int, str | None] = {}
    for chunk in chunks:
        delta = chunk.choices[0].delta
        deltas = list(delta.tool_calls or []) + ([_Legacy(delta.function_call)] if delta.function_call else [])
        for call in deltas:
            index = call.index or 0
            function = call.function
            names.setdefault(index, None)
            if function is not None and function.name and not names[index]:
                names[index] = function.name
            calls.setdefault(index, []).append((function.arguments or "") if function is not None else "")
    return [Output(OutputPart("tool_call", 0, start + n, names[i]), tool_call_text(names[i], "".join(calls[i])))
            for n, i in enumerate(sorted(calls))]  # fmt: skip


class _Legacy:
    """A legacy ``function_call`` delta read like a tool-call delta."""

    def __init__(self, function: Any) -> None:
        self.index, self.function = 0, function


class _Base:
    def __init__(self, guard: Guard, prompt: str | None, metadata: Mapping[str, Any] | None) -> None:
        self._guard, self._prompt, self._metadata = guard, prompt, metadata
        self.verdicts: list[Verdict] = []
        """Every checked part's verdict so far (all of them once the stream has ended)."""
        self._delivered: list[str] = []
        self._counts: dict[str, int] = {}
        self._closed = False

    @property
    def verdict(self) -> Verdict | None:
        """The deciding verdict once the stream has ended or a part is blocked; ``None`` before, or if none."""
        if not self.verdicts:
            return None
        verdict = deciding(self.verdicts)
        return verdict if self._closed or blocked(verdict) else None

    @property
    def delivered(self) -> str:
        """The answer's own content that reached the caller (the policy's message not included)."""
        return "".join(self._delivered)

    def _part(self, kind: Kind) -> OutputPart:
        n = self._counts.get(kind, 0)
        self._counts[kind] = n + 1
        return OutputPart(kind, 0, n)  # type: ignore[arg-type]  # only reasoning and content runs get here

    def _tools(self, held: list[ModelResponseStream]) -> list[Output]:
        pieces = tool_outputs(held, self._counts.get("tool_call", 0))
        self._counts["tool_call"] = self._counts.get("tool_call", 0) + len(pieces)
        return pieces

    def _settled(self, verdicts: list[Verdict], held: list[ModelResponseStream]) -> list[ModelResponseStream]:
        """Chunks of a checked tool-call run: all of them, or the block's last chunk."""
        self.verdicts += verdicts
        verdict = deciding(verdicts) if verdicts else None
        if verdict is not None and blocked(verdict):
            return [final_chunk(held[-1], verdict.output or "")]
        return held

    def _stopped(self, stream: GuardedStream[Any] | AsyncGuardedStream[Any], chunk: ModelResponseStream
                 ) -> ModelResponseStream | None:  # fmt: skip
        """The block's last chunk once a text run is blocked (its verdict recorded), else ``None``."""
        verdict = stream.verdict
        if verdict is None or not blocked(verdict):
            return None
        self.verdicts.append(verdict)
        return final_chunk(chunk, verdict.output or "")

    def _ran(self, stream: GuardedStream[Any] | AsyncGuardedStream[Any], kind: Kind) -> None:
        """Record a text run that ended unblocked: its verdict, and for content what it delivered."""
        if stream.verdict is not None:
            self.verdicts.append(stream.verdict)
        if kind == "content":
            self._delivered.append(stream.delivered)


class ChatStream(_Base, Iterator[ModelResponseStream]):
    """A sync guarded chat stream (see module docs); ``verdict``, ``verdicts``, ``delivered`` once it has ended."""

    def __init__(self, guard: Guard, chunks: Iterable[ModelResponseStream], prompt: str | None = None,
                 metadata: Mapping[str, Any] | None = None) -> None:  # fmt: skip
        super().__init__(guard, prompt, metadata)
        self._source = chunks
        self._gen = self._run()

    def __next__(self) -> ModelResponseStream:
        return next(self._gen)

    def close(self) -> None:
        """Stop early (the caller went away): settles the verdicts and closes the model call."""
        self._gen.close()

    def _run(self) -> Iterator[ModelResponseStream]:
        try:
            pieces = (piece for chunk in self._source for piece in split(chunk))
            for kind, run in groupby(pieces, key=lambda piece: piece[0]):
                chunks = (chunk for _, chunk in run)
                if kind == "other":
                    yield from chunks
                elif kind == "tool_call":
                    held = list(chunks)
                    out = self._settled(self._guard.enforce_outputs(self._tools(held), self._prompt, self._metadata),
                                        held)  # fmt: skip
                    yield from out
                    if out is not held:
                        return
                else:
                    stream = self._guard.stream(chunks, self._prompt, self._metadata, text=reader(kind),
                                                rebuild=writer(kind), part=self._part(kind))  # fmt: skip
                    try:
                        for chunk in stream:
                            if (last := self._stopped(stream, chunk)) is not None:
                                yield last
                                return
                            yield chunk
                    finally:
                        stream.close()
                    self._ran(stream, kind)
        finally:
            self._closed = True
            close = getattr(self._source, "close", None)
            if close is not None:
                close()  # stop the model call once we stop reading


class AsyncChatStream(_Base, AsyncIterator[ModelResponseStream]):
    """Async twin of :class:`ChatStream`."""

    def __init__(self, guard: Guard, chunks: AsyncIterable[ModelResponseStream], prompt: str | None = None,
                 metadata: Mapping[str, Any] | None = None) -> None:  # fmt: skip
        super().__init__(guard, prompt, metadata)
        self._source = chunks
        self._gen = self._run()

    def __anext__(self) -> Any:
        return self._gen.__anext__()

    async def aclose(self) -> None:
        """Async twin of :meth:`ChatStream.close`."""
        await self._gen.aclose()

    async def _run(self) -> AsyncIterator[ModelResponseStream]:
        runs = _Runs(self._source)
        try:
            async for kind, chunks in runs:
                if kind == "other":
                    async for chunk in chunks:
                        yield chunk
                elif kind == "tool_call":
                    held = [chunk async for chunk in chunks]
                    verdicts = await self._guard.aenforce_outputs(self._tools(held), self._prompt, self._metadata)
                    out = self._settled(verdicts, held)
                    for chunk in out:
                        yield chunk
                    if out is not held:
                        return
                else:
                    stream = self._guard.astream(chunks, self._prompt, self._metadata, text=reader(kind),
                                                 rebuild=writer(kind), part=self._part(kind))  # fmt: skip
                    try:
                        async for chunk in stream:
                            if (last := self._stopped(stream, chunk)) is not None:
                                yield last
                                return
                            yield chunk
                    finally:
                        await stream.aclose()
                    self._ran(stream, kind)
        finally:
            self._closed = True
            close = getattr(self._source, "aclose", None)
            if close is not None:
                await close()


class _Runs:
    """``itertools.groupby`` by kind over an async stream's split chunks: ``(kind, run)`` pairs, each run lazy."""

    def __init__(self, source: AsyncIterable[ModelResponseStream]) -> None:
        self._source = source.__aiter__()
        self._ahead: list[tuple[Kind, ModelResponseStream]] = []  # pieces read but not yet handed out
        self._ended = False

    async def _peek(self) -> tuple[Kind, ModelResponseStream] | None:
        while not self._ahead and not self._ended:
            try:
                self._ahead = split(await self._source.__anext__())
            except StopAsyncIteration:
                self._ended = True
        return self._ahead[0] if self._ahead else None

    async def _run(self, kind: Kind) -> AsyncIterator[ModelResponseStream]:
        while (piece := await self._peek()) is not None and piece[0] == kind:
            self._ahead.pop(0)
            yield piece[1]

    def __aiter__(self) -> AsyncIterator[tuple[Kind, AsyncIterator[ModelResponseStream]]]:
        return self._kinds()

    async def _kinds(self) -> AsyncIterator[tuple[Kind, AsyncIterator[ModelResponseStream]]]:
        while (piece := await self._peek()) is not None:
            run = self._run(piece[0])
            yield piece[0], run
            async for _ in run:  # what the caller left of the run (none, normally)
                pass
