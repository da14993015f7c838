"""Translate litellm objects to guard inputs and verdicts back onto litellm objects. No I/O, no policy logic."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from guardrail import GuardrailViolation, Verdict

HIDDEN_KEY = "guardrail"
"""Key of the verdict's JSON form in ``response._hidden_params``."""
_VERDICT_ATTR = "_guardrail_verdict"


def text_of_content(content: object) -> str | None:
    """The text of a message's ``content``: a string, or the text parts of a list of parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, Sequence):
        parts = [p.get("text") for p in content if isinstance(p, Mapping) and p.get("type") == "text"]
        texts = [p for p in parts if isinstance(p, str)]
        return "\n".join(texts) if texts else None
    return None


def prompt_of(messages: object) -> str | None:
    """The last user message's text (the prompt the guard reads with the answer), ``None`` when there is none."""
    if not isinstance(messages, Sequence) or isinstance(messages, str):
        return None
    for message in reversed(messages):
        if isinstance(message, Mapping):
            role, content = message.get("role"), message.get("content")
        else:  # litellm Message objects
            role, content = getattr(message, "role", None), getattr(message, "content", None)
        if role == "user":
            return text_of_content(content)
    return None


def answer_of(response: object) -> str | None:
    """The text of ``choices[0].message.content``; ``None`` for tool-call-only or empty answers (nothing to check)."""
    choices = getattr(response, "choices", None)
    if not choices:
        return None
    message = getattr(choices[0], "message", None)
    content = getattr(message, "content", None)
    return content if isinstance(content, str) and content.strip() else None


def blocked(verdict: Verdict | None) -> bool:
    """Whether what was finally done is a block (a block decision, or a rewrite that fell back to one)."""
    return verdict is not None and verdict.final_decision == "block"


def deliver(response: Any, verdict: Verdict, *, raise_on_block: bool = False) -> Any:
    """Put the verdict's output into ``choices[0]`` and attach the verdict; raise when asked to on a block.

    A blocked answer also loses its tool calls: they came with text the policy refused.
    """
    if raise_on_block and blocked(verdict):
        raise GuardrailViolation(verdict)
    choice = response.choices[0]
    if verdict.output is not None:
        choice.message.content = verdict.output
    if blocked(verdict):
        choice.message.tool_calls = None
        choice.message.function_call = None
        if choice.finish_reason in ("tool_calls", "function_call"):
            choice.finish_reason = "stop"
    attach(response, verdict)
    return response


def attach(response: Any, verdict: Verdict) -> None:
    """Record the verdict on a response: JSON in ``_hidden_params``, the object for :func:`verdict_of`."""
    hidden = getattr(response, "_hidden_params", None)
    if isinstance(hidden, dict):
        hidden[HIDDEN_KEY] = verdict.to_dict()
    # object.__setattr__: a plain attribute, outside the pydantic fields, so it never reaches model_dump().
    object.__setattr__(response, _VERDICT_ATTR, verdict)


def verdict_of(obj: object) -> Verdict | None:
    """The :class:`~guardrail.Verdict` of a guarded response or stream, ``None`` when nothing was checked.

    ``None`` for answers with no text (tool calls only), for responses the guard never saw, and for a
    stream that has not ended yet. The JSON form is also in ``response._hidden_params["guardrail"]``.

    Example:
        >>> response = completion(model="gpt-4o-mini", messages=messages)  # doctest: +SKIP
        >>> verdict_of(response).decision  # doctest: +SKIP
        'allow'
    """
    found = getattr(obj, _VERDICT_ATTR, None)
    if isinstance(found, Verdict):
        return found
    found = getattr(obj, "verdict", None)  # guarded streams
    return found if isinstance(found, Verdict) else None


def chunk_text(chunk: object) -> str | None:
    """The text a streamed chunk carries (``choices[0].delta.content``); ``None`` for role, tool, finish, usage."""
    choices = getattr(chunk, "choices", None)
    if not choices:
        return None
    content = getattr(getattr(choices[0], "delta", None), "content", None)
    return content if isinstance(content, str) else None


def rebuild_chunk(template: Any, text: str) -> Any:
    """A copy of ``template`` whose ``choices[0].delta.content`` is ``text`` (released or policy text)."""
    chunk = template.model_copy(deep=True)
    chunk.choices[0].delta.content = text
    return chunk


def reask_messages(messages: Sequence[Any], previous: str, feedback: str) -> list[Any]:
    """The original messages, the refused answer and the guard's feedback: what the model sees when re-asked."""
    return [*messages, {"role": "assistant", "content": previous}, {"role": "user", "content": feedback}]


def reask_text(response: object) -> str:
    """The text of a re-ask's answer; an answer without text cannot replace the refused one."""
    text = answer_of(response)
    if text is None:
        raise ValueError("the re-asked model answered without text content (tool calls or an empty message)")
    return text
