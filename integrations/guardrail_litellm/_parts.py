"""Every part of an answer the user sees, read from each answer shape, checked, and delivered or withheld.

Three shapes carry answers through litellm: a chat ``ModelResponse`` (``choices[n].message``: content,
``reasoning_content``, tool calls), a Responses API ``ResponsesAPIResponse`` (``output`` items:
messages, reasoning, function calls) and an Anthropic message (``content`` blocks: text, thinking,
tool use). Each is read into :class:`~guardrail.Output` s, one per checked text, each with its
:class:`~guardrail.OutputPart`, for :meth:`~guardrail.Guard.enforce_outputs` (one verdict and
``guardrail.check`` span per part; only content is rewritten).

A choice is delivered whole or not at all (:class:`~guardrail.ChoiceVerdict`): when it is blocked,
it carries the policy's message as its content and none of its reasoning or tool calls.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from guardrail import ChoiceVerdict, Output, OutputPart, Verdict, by_choice, tool_call_text


def field(obj: object, name: str) -> Any:
    """``obj[name]`` for a mapping, ``obj.name`` otherwise (litellm mixes dicts and objects)."""
    return obj.get(name) if isinstance(obj, Mapping) else getattr(obj, name, None)


def _text(value: object) -> str | None:
    return value if isinstance(value, str) and value.strip() else None


# -- reading ----------------------------------------------------------------------------------------


def message_outputs(message: object, choice: int) -> list[Output]:
    """The outputs of one chat message: its content, its ``reasoning_content``, each tool call."""
    pieces = []
    if (reasoning := _text(field(message, "reasoning_content"))) is not None:
        pieces.append(Output(OutputPart("reasoning", choice), reasoning))
    if (content := _text(field(message, "content"))) is not None:
        pieces.append(Output(OutputPart("content", choice), content))
    calls = list(field(message, "tool_calls") or [])
    if (legacy := field(message, "function_call")) is not None:
        calls.append({"function": legacy})
    for n, call in enumerate(calls):
        function = field(call, "function")
        name, arguments = field(function, "name"), field(function, "arguments")
        pieces.append(Output(OutputPart("tool_call", choice, n, name), tool_call_text(name, arguments)))
    return pieces


def chat_outputs(response: object) -> list[Output]:
    """The outputs of every choice of a chat ``ModelResponse``, whatever ``n`` asked for."""
    return [p for n, c in enumerate(field(response, "choices") or []) for p in message_outputs(field(c, "message"), n)]


def responses_outputs(response: object) -> list[Output]:
    """The outputs of a Responses API answer: its message text, its reasoning, each function call."""
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
            pieces.append(Output(OutputPart("tool_call", 0, n, name), tool_call_text(name, field(item, "arguments"))))
    return _with_texts(pieces, "\n".join(reasoning), "".join(content))


def anthropic_outputs(message: object) -> list[Output]:
    """The outputs of an Anthropic message: its text blocks, its thinking blocks, each tool use."""
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
            pieces.append(Output(OutputPart("tool_call", 0, n, name), tool_call_text(name, field(block, "input"))))
    return _with_texts(pieces, "\n".join(reasoning), "".join(content))


def _with_texts(tools: list[Output], reasoning: str, content: str) -> list[Output]:
    texts = [Output(OutputPart(kind, 0), text) for kind, text in (("reasoning", reasoning), ("content", content))
             if text.strip()]  # fmt: skip
    return [*texts, *tools]


# -- delivering -------------------------------------------------------------------------------------


def choices_of(verdicts: Sequence[Verdict]) -> dict[int, ChoiceVerdict]:
    """The verdicts grouped by choice, by choice index."""
    return {c.choice: c for c in by_choice(verdicts)}


def withhold_reasoning(message: Any) -> None:
    """Drop a chat message's (or delta's) reasoning: ``reasoning_content`` and the blocks that repeat it."""
    for name in ("reasoning_content", "thinking_blocks", "reasoning_items"):
        if getattr(message, name, None) is not None:
            setattr(message, name, None)


def deliver_chat(response: Any, verdicts: Sequence[Verdict]) -> None:
    """Apply each choice's outcome to a chat ``ModelResponse`` in place."""
    for n, outcome in choices_of(verdicts).items():
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
    outcome = choices_of(verdicts).get(0)
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
    outcome = choices_of(verdicts).get(0)
    if outcome is None or not outcome.altered:
        return
    text = {"type": "text", "text": outcome.content or ""}
    if outcome.blocked:
        message["content"] = [text]
        if message.get("stop_reason") == "tool_use":
            message["stop_reason"] = "end_turn"
    else:
        message["content"] = [text, *(b for b in message.get("content") or [] if field(b, "type") != "text")]
