"""Every part of an answer the user sees, read from each answer shape, checked, and delivered or withheld.

Three shapes carry answers through litellm: a chat ``ModelResponse`` (``choices[n].message``: content,
``reasoning_content``, tool calls), a Responses API ``ResponsesAPIResponse`` (``output`` items:
messages, reasoning, function calls) and an Anthropic message (``content`` blocks: text, thinking,
tool use). Each is read into :class:`Piece` s, one per checked text, each with its
:class:`~guardrail.OutputPart`; every piece gets its own verdict (and ``guardrail.check`` span).

A choice is delivered whole or not at all: when the verdict that decides it (:func:`guardrail.deciding`)
is a block, the choice carries the policy's message as its content and none of its reasoning or tool
calls. Only content can be rewritten (re-asked or redacted); a reasoning trace or a tool call cannot,
so a rewrite decision on one applies the action's fallback, as in a stream.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from guardrail import AsyncReask, Guard, OutputPart, Reask, Rewrite, Verdict, deciding, tool_call_text

CANNOT_REWRITE = "a reasoning trace or a tool call cannot be rewritten; its fallback applies"


@dataclass(frozen=True)
class Piece:
    """One text of an answer to check, and which part of the answer it is."""

    part: OutputPart
    text: str


def field(obj: object, name: str) -> Any:
    """``obj[name]`` for a mapping, ``obj.name`` otherwise (litellm mixes dicts and objects)."""
    return obj.get(name) if isinstance(obj, Mapping) else getattr(obj, name, None)


def _text(value: object) -> str | None:
    return value if isinstance(value, str) and value.strip() else None


# -- reading ----------------------------------------------------------------------------------------


def message_pieces(message: object, choice: int) -> list[Piece]:
    """The pieces of one chat message: its content, its ``reasoning_content``, each tool call."""
    pieces = []
    if (reasoning := _text(field(message, "reasoning_content"))) is not None:
        pieces.append(Piece(OutputPart("reasoning", choice), reasoning))
    if (content := _text(field(message, "content"))) is not None:
        pieces.append(Piece(OutputPart("content", choice), content))
    calls = list(field(message, "tool_calls") or [])
    if (legacy := field(message, "function_call")) is not None:
        calls.append({"function": legacy})
    for n, call in enumerate(calls):
        function = field(call, "function")
        name, arguments = field(function, "name"), field(function, "arguments")
        pieces.append(Piece(OutputPart("tool_call", choice, n, name), tool_call_text(name, arguments)))
    return pieces


def chat_pieces(response: object) -> list[Piece]:
    """The pieces of every choice of a chat ``ModelResponse``, whatever ``n`` asked for."""
    return [p for n, c in enumerate(field(response, "choices") or []) for p in message_pieces(field(c, "message"), n)]


def responses_pieces(response: object) -> list[Piece]:
    """The pieces of a Responses API answer: its message text, its reasoning, each function call."""
    content, reasoning, pieces = [], [], []
    for item in field(response, "output") or []:
        kind = field(item, "type")
        if kind == "message":
            texts = [c for c in field(item, "content") or [] if field(c, "type") == "output_text"]
            content += [field(c, "text") or "" for c in texts]
        elif kind == "reasoning":
            texts = [*(field(item, "summary") or []), *(field(item, "content") or [])]
            reasoning += [field(t, "text") or "" for t in texts]
        elif kind == "function_call":
            name = field(item, "name")
            n = sum(p.part.kind == "tool_call" for p in pieces)
            pieces.append(Piece(OutputPart("tool_call", 0, n, name), tool_call_text(name, field(item, "arguments"))))
    return _with_texts(pieces, "\n".join(reasoning), "".join(content))


def anthropic_pieces(message: object) -> list[Piece]:
    """The pieces of an Anthropic message: its text blocks, its thinking blocks, each tool use."""
    content, reasoning, pieces = [], [], []
    for block in field(message, "content") or []:
        kind = field(block, "type")
        if kind == "text":
            content.append(field(block, "text") or "")
        elif kind == "thinking":
            reasoning.append(field(block, "thinking") or "")
        elif kind in ("tool_use", "server_tool_use"):
            name = field(block, "name")
            n = sum(p.part.kind == "tool_call" for p in pieces)
            pieces.append(Piece(OutputPart("tool_call", 0, n, name), tool_call_text(name, field(block, "input"))))
    return _with_texts(pieces, "\n".join(reasoning), "".join(content))


def _with_texts(tools: list[Piece], reasoning: str, content: str) -> list[Piece]:
    texts = [Piece(OutputPart(kind, 0), text) for kind, text in (("reasoning", reasoning), ("content", content))
             if text.strip()]  # fmt: skip
    return [*texts, *tools]


# -- checking ---------------------------------------------------------------------------------------


def check_pieces(
    guard: Guard, pieces: Sequence[Piece], prompt: str | None, metadata: Mapping[str, Any] | None,
    reask: Reask | None = None,
) -> list[Verdict]:  # fmt: skip
    """One verdict per piece, in order: content through ``enforce`` (rewrites apply), the rest in one batch."""
    others = [p for p in pieces if p.part.kind != "content"]
    checked = guard.check_many([p.text for p in others], [prompt] * len(others), metadata,
                               parts=[p.part for p in others]) if others else []  # fmt: skip
    settled = iter(_settle_all(guard, others, checked))
    return [guard.enforce(p.text, prompt, metadata, reask=reask, part=p.part) if p.part.kind == "content"
            else next(settled) for p in pieces]  # fmt: skip


async def acheck_pieces(
    guard: Guard, pieces: Sequence[Piece], prompt: str | None, metadata: Mapping[str, Any] | None,
    reask: AsyncReask | None = None,
) -> list[Verdict]:  # fmt: skip
    """Async twin of :func:`check_pieces`; every piece is checked concurrently (the batcher joins them)."""
    others = [p for p in pieces if p.part.kind != "content"]
    contents = [p for p in pieces if p.part.kind == "content"]

    async def rest() -> list[Verdict]:
        if not others:
            return []
        verdicts = await guard.acheck_many([p.text for p in others], [prompt] * len(others), metadata,
                                           parts=[p.part for p in others])  # fmt: skip
        return _settle_all(guard, others, verdicts)

    enforced, settled = await asyncio.gather(
        asyncio.gather(*(guard.aenforce(p.text, prompt, metadata, reask=reask, part=p.part) for p in contents)), rest()
    )
    done, left = iter(enforced), iter(settled)
    return [next(done) if p.part.kind == "content" else next(left) for p in pieces]


def settle(guard: Guard, verdict: Verdict, text: str) -> Verdict:
    """A checked piece that cannot be rewritten: what it delivers, with a rewrite's fallback applied."""
    action = verdict.action
    if verdict.decision == "rewrite" and action is not None:
        fallback = guard.policy.action(action.fallback)
        record = Rewrite(action.strategy or "", 0, False, fallback.type, action.fallback, CANNOT_REWRITE)
        return replace(verdict, output=(fallback.message or "") if fallback.type == "block" else text, rewrite=record)
    return replace(verdict, output=verdict.message if verdict.decision == "block" else text)


def _settle_all(guard: Guard, pieces: Sequence[Piece], verdicts: Sequence[Verdict]) -> list[Verdict]:
    return [settle(guard, v, p.text) for p, v in zip(pieces, verdicts)]


# -- delivering -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    """What one choice delivers, from its pieces' verdicts."""

    verdicts: tuple[Verdict, ...]

    @property
    def deciding(self) -> Verdict:
        """The verdict that decides the choice (see :func:`guardrail.deciding`)."""
        return deciding(self.verdicts)

    @property
    def blocked(self) -> bool:
        """Whether the choice is withheld: the policy's message goes out instead of every part."""
        return self.deciding.final_decision == "block"

    @property
    def content(self) -> str | None:
        """The content to deliver: the message when blocked, else the (possibly rewritten) content."""
        if self.blocked:
            return self.deciding.output or ""
        return next((v.output for v in self.verdicts if v.part is not None and v.part.kind == "content"), None)

    @property
    def altered(self) -> bool:
        """Whether the choice differs from what the model sent."""
        return any(v.altered for v in self.verdicts)


def outcomes(verdicts: Sequence[Verdict]) -> dict[int, Outcome]:
    """The verdicts grouped by choice."""
    by_choice: dict[int, list[Verdict]] = {}
    for verdict in verdicts:
        by_choice.setdefault(verdict.part.choice if verdict.part is not None else 0, []).append(verdict)
    return {n: Outcome(tuple(vs)) for n, vs in by_choice.items()}


def withhold_reasoning(message: Any) -> None:
    """Drop a chat message's (or delta's) reasoning: ``reasoning_content`` and the blocks that repeat it."""
    for name in ("reasoning_content", "thinking_blocks", "reasoning_items"):
        if getattr(message, name, None) is not None:
            setattr(message, name, None)


def deliver_chat(response: Any, verdicts: Sequence[Verdict]) -> None:
    """Apply each choice's outcome to a chat ``ModelResponse`` in place."""
    for n, outcome in outcomes(verdicts).items():
        choice = response.choices[n]
        message = choice.message
        if outcome.blocked:
            message.content = outcome.content
            withhold_reasoning(message)
            message.tool_calls = None
            message.function_call = None
            if choice.finish_reason in ("tool_calls", "function_call"):
                choice.finish_reason = "stop"
        elif outcome.content is not None:
            message.content = outcome.content


def message_item(text: str, template: object = None) -> dict[str, Any]:
    """A Responses API output message carrying ``text`` (the id kept from ``template`` when there is one)."""
    return {"type": "message", "id": field(template, "id") or "msg_guardrail", "role": "assistant",
            "status": "completed", "content": [{"type": "output_text", "text": text, "annotations": []}]}  # fmt: skip


def deliver_responses(response: Any, verdicts: Sequence[Verdict]) -> None:
    """Apply the outcome to a Responses API answer (object or JSON dict) in place."""
    outcome = outcomes(verdicts).get(0)
    if outcome is None or not outcome.altered:
        return
    output = list(field(response, "output") or [])
    first = next((item for item in output if field(item, "type") == "message"), None)
    text = outcome.content or ""
    # Blocked, the message alone is left; rewritten, one message with the rewrite replaces the message items.
    kept = [] if outcome.blocked else [item for item in output if field(item, "type") != "message"]
    delivered = [message_item(text, first), *kept]
    if isinstance(response, dict):
        response["output"] = delivered
    else:
        response.output = delivered


def deliver_anthropic(message: dict[str, Any], verdicts: Sequence[Verdict]) -> None:
    """Apply the outcome to an Anthropic message (a dict) in place: blocked, only one text block is left."""
    outcome = outcomes(verdicts).get(0)
    if outcome is None or not outcome.altered:
        return
    text = {"type": "text", "text": outcome.content or ""}
    if outcome.blocked:
        message["content"] = [text]
        if message.get("stop_reason") == "tool_use":
            message["stop_reason"] = "end_turn"
    else:
        message["content"] = [text, *(b for b in message.get("content") or [] if field(b, "type") != "text")]
