"""Guarded streams: hold text back until it is scored, window by window (NeMo's streaming settings).

A stream is any iterator of chunks (strings, litellm chunks, LangChain message chunks...). The
caller says how to read a chunk's text and how to build a chunk carrying released text, so the same
logic serves every integration. Windows are ``chunk_size`` new characters plus the last
``context_size`` characters already scored; the prompt goes with every window.

With ``stream_first: false`` a chunk's text is released only after the window holding it passed:
a blocked answer delivers none of its text, only the policy's message. With ``stream_first: true``
text flows at once and the stream is cut with the message as soon as a window violates.
A rewrite decision cannot be carried out mid-stream; its ``fallback`` action applies instead.
A ``None`` chunk carries nothing and is skipped.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Generic, Protocol, TypeVar

from guardrail._guard.rewrite import Result, fallback
from guardrail._outputs import OutputPart
from guardrail._policy.schema import Policy, Streaming
from guardrail._validate import check_metadata
from guardrail._verdict import Verdict

C = TypeVar("C")


class WindowChecker(Protocol):
    """What a guarded stream needs of its guard (a :class:`~guardrail.Guard` is one): the policy and checks."""

    @property
    def policy(self) -> Policy:
        """The policy whose ``streaming`` settings and actions apply."""
        ...

    def check(
        self, response: str, prompt: str | None = None, metadata: Mapping[str, Any] | None = None,
        *, part: OutputPart | None = None,
    ) -> Verdict:  # fmt: skip
        """Check one window."""
        ...

    async def acheck(
        self, response: str, prompt: str | None = None, metadata: Mapping[str, Any] | None = None,
        *, part: OutputPart | None = None,
    ) -> Verdict:  # fmt: skip
        """Async twin of :meth:`check`."""
        ...


_CANNOT_REWRITE = Result(False, None, 0, None, "a streamed answer cannot be rewritten; its fallback applies")


@dataclass
class _Window:
    """Sans-I/O state of one stream: what was received, scored and released."""

    settings: Streaming
    text: str = ""
    scored: int = 0
    released: int = 0
    _end: int = 0
    verdicts: list[Verdict] = field(default_factory=list)

    def feed(self, delta: str) -> None:
        self.text += delta

    def due(self, final: bool) -> str | None:
        """The next window to score, or ``None`` when not enough new text has arrived."""
        pending = len(self.text) - self.scored
        if pending <= 0 or (pending < self.settings.chunk_size and not final):
            return None
        if final:
            self._end = len(self.text)
        else:
            # End on a space when there is one, so a word is never split across two windows.
            end = self.scored + self.settings.chunk_size
            space = max(self.text.rfind(" ", self.scored + 1, end), self.text.rfind("\n", self.scored + 1, end))
            self._end = space if space > 0 else end
        # A short last window is stretched back over text already scored: a few words alone say
        # little about their values, so every window is as long as the settings allow.
        span = self.settings.chunk_size + self.settings.context_size
        start = max(0, min(self.scored - self.settings.context_size, self._end - span))
        return self.text[start : self._end]

    def passed(self) -> None:
        self.scored = self._end

    def releasable(self) -> str:
        """Text that may go to the caller now; marks it released."""
        limit = len(self.text) if self.settings.stream_first else self.scored
        out, self.released = self.text[self.released : limit], max(self.released, limit)
        return out


class _Base(Generic[C]):
    def __init__(
        self,
        guard: WindowChecker,
        prompt: str | None,
        metadata: Mapping[str, Any] | None,
        text: Callable[[C], str | None],
        rebuild: Callable[[C, str], C],
        part: OutputPart | None = None,
    ) -> None:
        check_metadata(metadata)  # here, not at the first window: a bad argument fails before any chunk is read
        self._guard, self._prompt, self._metadata, self._part = guard, prompt, metadata, part
        self._text, self._rebuild = text, rebuild
        self._window = _Window(guard.policy.streaming)
        self._template: C | None = None
        self._held: list[C] = []  # text-less chunks (role, finish, usage) waiting behind held text
        self.verdict: Verdict | None = None
        """The stream's verdict once it has ended: the violating window's, else the riskiest window's."""

    @property
    def delivered(self) -> str:
        """The answer's own text that reached the caller (the policy's message not included)."""
        return self._window.text[: self._window.released]

    def _receive(self, chunk: C) -> list[C]:
        """Take one upstream chunk; return chunks that can go out without scoring."""
        if chunk is None:
            return []
        delta = self._text(chunk) or ""
        if not isinstance(delta, str):
            raise TypeError(f"text(chunk) must return a string or None, got {type(delta).__name__}")
        if not delta:
            if self._window.released == len(self._window.text):
                return [chunk]
            self._held.append(chunk)
            return []
        self._template = chunk
        self._window.feed(delta)
        return self._release() if self._window.settings.stream_first else []

    def _release(self) -> list[C]:
        text = self._window.releasable()
        out = [self._rebuild(self._template, text)] if text and self._template is not None else []
        if self._window.released == len(self._window.text):
            out, self._held = out + self._held, []
        return out

    def _judge(self, verdict: Verdict) -> list[C] | None:
        """Record a window's verdict; chunks to send, and ``None`` when the stream must stop."""
        self._window.verdicts.append(verdict)
        final = self._final(verdict)
        if final.final_decision in ("block", "rewrite"):
            self.verdict = final
            message = final.output or ""
            return None if not message or self._template is None else [self._rebuild(self._template, message)]
        self._window.passed()
        return self._release()

    def _final(self, verdict: Verdict) -> Verdict:
        if verdict.decision in ("allow", "log"):
            return verdict
        if verdict.decision == "rewrite":
            # The same fallback Guard.enforce applies when a rewrite fails, with the reason it failed here.
            return fallback(self._guard.policy, verdict, self._window.text, _CANNOT_REWRITE)
        return replace(verdict, output=verdict.message)

    def _close(self) -> None:
        if self.verdict is None:
            riskiest = max(self._window.verdicts, key=lambda v: v.risk, default=None)
            self.verdict = riskiest if riskiest is None else replace(riskiest, output=self.delivered)


class GuardedStream(_Base[C], Iterator[C]):
    """A sync stream whose text is released only as the policy allows (see module docs).

    Example:
        >>> stream = guard.stream(iter(["Hello", " there"]))  # doctest: +SKIP
        >>> "".join(stream), stream.verdict.decision  # doctest: +SKIP
        ('Hello there', 'allow')
    """

    def __init__(self, guard: WindowChecker, chunks: Iterable[C], prompt: str | None = None,
                 metadata: Mapping[str, Any] | None = None, *,
                 text: Callable[[C], str | None] = str, rebuild: Callable[[C, str], C] = lambda c, t: t,  # type: ignore[assignment,return-value]
                 part: OutputPart | None = None) -> None:  # fmt: skip
        super().__init__(guard, prompt, metadata, text, rebuild, part)
        self._source = iter(chunks)
        self._gen = self._run()

    def __next__(self) -> C:
        return next(self._gen)

    def close(self) -> None:
        """Stop early (a client went away): closes the upstream and settles ``verdict``."""
        self._gen.close()

    def _check(self, window: str) -> list[C] | None:
        return self._judge(self._guard.check(window, prompt=self._prompt, metadata=self._metadata, part=self._part))

    def _run(self) -> Iterator[C]:
        try:
            for chunk in self._source:
                yield from self._receive(chunk)
                while (window := self._window.due(final=False)) is not None:
                    out = self._check(window)
                    if out is None or self.verdict is not None:
                        yield from out or []
                        return
                    yield from out
            while (window := self._window.due(final=True)) is not None:
                out = self._check(window)
                yield from out or []
                if self.verdict is not None:
                    return
            yield from self._release()
        finally:
            self._close()
            close = getattr(self._source, "close", None)
            if close is not None:
                close()  # stop the upstream model call once we stop reading


class AsyncGuardedStream(_Base[C], AsyncIterator[C]):
    """Async twin of :class:`GuardedStream`."""

    def __init__(self, guard: WindowChecker, chunks: AsyncIterable[C], prompt: str | None = None,
                 metadata: Mapping[str, Any] | None = None, *,
                 text: Callable[[C], str | None] = str, rebuild: Callable[[C, str], C] = lambda c, t: t,  # type: ignore[assignment,return-value]
                 part: OutputPart | None = None) -> None:  # fmt: skip
        super().__init__(guard, prompt, metadata, text, rebuild, part)
        self._source = chunks
        self._gen = self._run()

    def __anext__(self) -> Any:
        return self._gen.__anext__()

    async def aclose(self) -> None:
        """Stop early (a client went away): closes the upstream and settles ``verdict``."""
        await self._gen.aclose()

    async def _check(self, window: str) -> list[C] | None:
        return self._judge(
            await self._guard.acheck(window, prompt=self._prompt, metadata=self._metadata, part=self._part)
        )

    async def _run(self) -> AsyncIterator[C]:
        try:
            async for chunk in self._source:
                for out in self._receive(chunk):
                    yield out
                while (window := self._window.due(final=False)) is not None:
                    sent = await self._check(window)
                    for out in sent or []:
                        yield out
                    if sent is None or self.verdict is not None:
                        return
            while (window := self._window.due(final=True)) is not None:
                sent = await self._check(window)
                for out in sent or []:
                    yield out
                if self.verdict is not None:
                    return
            for out in self._release():
                yield out
        finally:
            self._close()
            close = getattr(self._source, "aclose", None)
            if close is not None:
                await close()
