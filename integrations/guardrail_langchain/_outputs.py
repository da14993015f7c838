"""Every part of a LangChain answer the user sees, read for checking: its text, its reasoning and its tool calls.

The guard checks them (``Guard.enforce_outputs``): content is enforced as before (a rewrite re-asks or
redacts it); reasoning and tool calls cannot be rewritten, so a rewrite decision on one of them applies
the action's fallback. The part whose verdict alters most decides the message
(:class:`guardrail.ChoiceVerdict`); every part's verdict is kept under ``"parts"``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from langchain_core.messages import AIMessage, BaseMessage

from guardrail import AsyncReask, ChoiceVerdict, Guard, Output, OutputPart, Reask, by_choice, tool_call_text


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


def outputs(message: BaseMessage, choice: int = 0) -> list[Output]:
    """Every part of ``message`` to check, content first: its text, each reasoning text, each tool call
    (valid or not: an invalid one's raw arguments reach the user too)."""
    found: list[Output] = []
    text = str(message.text)
    if text.strip():
        found.append(Output(OutputPart("content", choice), text))
    found += [Output(OutputPart("reasoning", choice, n), r) for n, r in enumerate(reasoning_texts(message))]
    if isinstance(message, AIMessage):
        calls = [*message.tool_calls, *message.invalid_tool_calls]
        for n, call in enumerate(calls):
            name = call.get("name")
            found.append(Output(OutputPart("tool_call", choice, n, name), tool_call_text(name, call.get("args"))))
    return found


def held_outputs(message: BaseMessage) -> list[Output]:
    """The parts of a streamed answer held back beside its text: reasoning and tool calls (``message``: those
    chunks added up)."""
    return [o for o in outputs(message) if not o.rewritable]


def check_parts(
    guard: Guard, message: BaseMessage, choice: int, prompt: str | None, metadata: Mapping[str, Any],
    reask: Reask | None,
) -> ChoiceVerdict | None:  # fmt: skip
    """Check every part of one message (``None``: it has none); ``reask`` re-asks for its content."""
    found = outputs(message, choice)
    if not found:
        return None
    [checked] = by_choice(guard.enforce_outputs(found, prompt, metadata, reask=reask))
    return checked


async def acheck_parts(
    guard: Guard, message: BaseMessage, choice: int, prompt: str | None, metadata: Mapping[str, Any],
    reask: AsyncReask | None,
) -> ChoiceVerdict | None:  # fmt: skip
    """Async twin of :func:`check_parts`; the content and the other parts are checked at once."""
    found = outputs(message, choice)
    if not found:
        return None
    [checked] = by_choice(await guard.aenforce_outputs(found, prompt, metadata, reask=reask))
    return checked
