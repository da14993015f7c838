"""Every part of a LangChain answer the user sees, checked: its text, its reasoning and its tool calls.

A message is delivered whole or not at all. Its content is enforced as before (a rewrite re-asks or
redacts it); reasoning and tool calls cannot be rewritten in part, so a rewrite decision on one of
them applies the action's fallback. The part whose verdict alters most decides the message
(:func:`guardrail.deciding`); every part's verdict is kept under ``"parts"``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from langchain_core.messages import AIMessage, BaseMessage

from guardrail import Guard, OutputPart, Rewrite, Verdict, deciding, tool_call_text

ContentCheck = Callable[[str, OutputPart], Verdict]
"""Enforces a message's content (``Guard.enforce`` with the integration's re-ask)."""
AsyncContentCheck = Callable[[str, OutputPart], Awaitable[Verdict]]


@dataclass(frozen=True, slots=True)
class Piece:
    """One checked part of an answer and the text it is scored as."""

    part: OutputPart
    text: str


@dataclass(frozen=True, slots=True)
class Outcome:
    """The verdicts of one message's parts, content first; the one that alters most decides the message."""

    verdicts: tuple[Verdict, ...]

    @property
    def verdict(self) -> Verdict:
        """The deciding verdict (:func:`guardrail.deciding`)."""
        return deciding(self.verdicts)

    def to_dict(self) -> dict[str, Any]:
        """``response_metadata["guardrail"]``: the deciding verdict, and every part's under ``"parts"``."""
        return {**self.verdict.to_dict(), "parts": [v.to_dict() for v in self.verdicts]}


def reasoning_texts(message: BaseMessage) -> list[str]:
    """The reasoning a message delivers: standard ``reasoning`` content blocks (``message.content_blocks``,
    which also reads provider formats), and ``additional_kwargs["reasoning_content"]`` when it is not one
    of them."""
    texts = [
        block["reasoning"]
        for block in message.content_blocks
        if block.get("type") == "reasoning" and isinstance(block.get("reasoning"), str)
    ]
    extra = message.additional_kwargs.get("reasoning_content")
    if isinstance(extra, str) and extra not in texts:
        texts.append(extra)
    return [text for text in texts if text.strip()]


def pieces(message: BaseMessage, choice: int = 0) -> list[Piece]:
    """Every part of ``message`` to check, content first: its text, each reasoning text, each tool call
    (valid or not: an invalid one's raw arguments reach the user too)."""
    found: list[Piece] = []
    text = str(message.text)
    if text.strip():
        found.append(Piece(OutputPart("content", choice), text))
    found += [Piece(OutputPart("reasoning", choice, n), r) for n, r in enumerate(reasoning_texts(message))]
    if isinstance(message, AIMessage):
        calls = [*message.tool_calls, *message.invalid_tool_calls]
        for n, call in enumerate(calls):
            name = call.get("name")
            found.append(Piece(OutputPart("tool_call", choice, n, name), tool_call_text(name, call.get("args"))))
    return found


def check_parts(
    guard: Guard, message: BaseMessage, choice: int, prompt: str | None, metadata: Mapping[str, Any],
    enforce: ContentCheck,
) -> Outcome | None:  # fmt: skip
    """Check every part of one message (``None``: it has none); ``enforce`` carries out the content's decision."""
    found = pieces(message, choice)
    if not found:
        return None
    content, others = _split(found)
    head = [enforce(content.text, content.part)] if content else []
    return Outcome((*head, *_check(guard, others, prompt, metadata)))


async def acheck_parts(
    guard: Guard, message: BaseMessage, choice: int, prompt: str | None, metadata: Mapping[str, Any],
    enforce: AsyncContentCheck,
) -> Outcome | None:  # fmt: skip
    """Async twin of :func:`check_parts`; the content and the other parts are checked at once."""
    found = pieces(message, choice)
    if not found:
        return None
    content, others = _split(found)
    if content is None:
        return Outcome(tuple(await _acheck(guard, others, prompt, metadata)))
    head, rest = await asyncio.gather(enforce(content.text, content.part), _acheck(guard, others, prompt, metadata))
    return Outcome((head, *rest))


def check_held(guard: Guard, message: BaseMessage, prompt: str | None, metadata: Mapping[str, Any]) -> list[Verdict]:
    """Verdicts of a streamed answer's held-back reasoning and tool calls (``message``: those chunks added up)."""
    return _check(guard, _split(pieces(message))[1], prompt, metadata)


async def acheck_held(
    guard: Guard, message: BaseMessage, prompt: str | None, metadata: Mapping[str, Any]
) -> list[Verdict]:
    """Async twin of :func:`check_held`."""
    return await _acheck(guard, _split(pieces(message))[1], prompt, metadata)


def settled(guard: Guard, verdict: Verdict, text: str) -> Verdict:
    """A reasoning or tool-call verdict carried out, as ``Guard.enforce`` would with nothing to rewrite:
    ``output`` is what goes out, and a rewrite decision applies its action's fallback."""
    if verdict.decision != "rewrite" or verdict.action is None:
        return replace(verdict, output=verdict.message if verdict.decision == "block" else text)
    name = verdict.action.fallback
    fallback = guard.policy.action(name)
    kind = verdict.part.kind if verdict.part else "part"
    reason = f"a {kind.replace('_', ' ')} cannot be rewritten; its fallback applies"
    record = Rewrite(verdict.action.strategy or "", 0, False, fallback.type, name, reason)
    output = (fallback.message or "") if fallback.type == "block" else text
    return replace(verdict, output=output, rewrite=record)


def _split(found: Sequence[Piece]) -> tuple[Piece | None, list[Piece]]:
    content = next((p for p in found if p.part.kind == "content"), None)
    return content, [p for p in found if p.part.kind != "content"]


def _check(guard: Guard, found: Sequence[Piece], prompt: str | None, metadata: Mapping[str, Any]) -> list[Verdict]:
    if not found:
        return []
    texts, prompts, parts = [p.text for p in found], [prompt] * len(found), [p.part for p in found]
    checked = guard.check_many(texts, prompts, metadata, parts=parts)
    return [settled(guard, v, p.text) for v, p in zip(checked, found, strict=True)]


async def _acheck(
    guard: Guard, found: Sequence[Piece], prompt: str | None, metadata: Mapping[str, Any]
) -> list[Verdict]:
    if not found:
        return []
    texts, prompts, parts = [p.text for p in found], [prompt] * len(found), [p.part for p in found]
    checked = await guard.acheck_many(texts, prompts, metadata, parts=parts)
    return [settled(guard, v, p.text) for v, p in zip(checked, found, strict=True)]
