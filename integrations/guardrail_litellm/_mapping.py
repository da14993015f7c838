"""Translate litellm objects to guard inputs and verdicts back onto litellm objects. No I/O, no policy logic."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from guardrail import GuardrailViolation, Verdict, deciding

HIDDEN_KEY = "guardrail"
"""Key of the deciding verdict's JSON form in ``response._hidden_params``."""
PARTS_KEY = "guardrail_parts"
"""Key of every part's verdict (JSON, in order) in ``response._hidden_params``."""
_VERDICTS_ATTR = "_guardrail_verdicts"


def text_of_content(content: object) -> str | None:
    """The text of a message's ``content``: a string, or the text parts of a list of parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, Sequence):
        parts = [p.get("text") for p in content if isinstance(p, Mapping) and p.get("type") in ("text", "input_text")]
        texts = [p for p in parts if isinstance(p, str)]
        return "\n".join(texts) if texts else None
    return None


def prompt_of(messages: object) -> str | None:
    """The last user message's text (the prompt the guard reads with the answer), ``None`` when there is none.

    ``messages`` is a chat or Anthropic message list, or a Responses API ``input`` (a text or a list of items).
    """
    if isinstance(messages, str):
        return messages  # a Responses API input given as one text
    if not isinstance(messages, Sequence):
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


def requested_choices(n: object, *, streamed: bool) -> int:
    """How many choices a call asks for: ``n`` checked, so no choice can slip past the guard.

    Raises:
        TypeError: ``n`` is not a whole number (``2.0`` and ``"2"`` included).
        ValueError: ``n`` is below 1, or above 1 for a stream (a guarded stream carries one choice).
    """
    if n is None:
        return 1
    if not isinstance(n, int) or isinstance(n, bool):
        raise TypeError(f"n must be a whole number of choices, got {type(n).__name__} {n!r}")
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    if streamed and n > 1:
        raise ValueError(f"a guarded stream carries one choice; got n={n} (stream=False checks each of several)")
    return n


def attach(response: Any, verdicts: Sequence[Verdict], *, raise_on_block: bool = False) -> Verdict | None:
    """Record the verdicts on a response; return the deciding one (``None`` when nothing was checked).

    JSON goes in ``_hidden_params`` (the deciding verdict and every part's), the objects where
    :func:`verdict_of` and :func:`verdicts_of` find them.

    Raises:
        GuardrailViolation: ``raise_on_block`` and some choice is finally blocked.
    """
    if not verdicts:
        return None
    verdict = deciding(verdicts)
    if raise_on_block and blocked(verdict):
        raise GuardrailViolation(verdict)
    if isinstance(response, dict):
        hidden = response.setdefault("_hidden_params", {})
    else:
        hidden = getattr(response, "_hidden_params", None)
    if isinstance(hidden, dict):
        hidden[HIDDEN_KEY] = verdict.to_dict()
        hidden[PARTS_KEY] = [v.to_dict() for v in verdicts]
    if not isinstance(response, dict):
        # object.__setattr__: a plain attribute, outside the pydantic fields, so it never reaches model_dump().
        object.__setattr__(response, _VERDICTS_ATTR, tuple(verdicts))
    return verdict


def verdicts_of(obj: object) -> tuple[Verdict, ...]:
    """Every part's verdict of a guarded response or stream, in order (each names its ``part``); ``()`` when none.

    A response has one verdict per checked part: each choice's content, its reasoning and each of
    its tool calls. A stream has them once it has ended.
    """
    found = getattr(obj, _VERDICTS_ATTR, None)
    if found is None:
        found = getattr(obj, "verdicts", None)  # guarded streams
    return tuple(v for v in found if isinstance(v, Verdict)) if isinstance(found, (tuple, list)) else ()


def verdict_of(obj: object) -> Verdict | None:
    """The verdict that decides a guarded response or stream, ``None`` when nothing was checked.

    Of every part's verdict (:func:`verdicts_of`), the one whose final decision alters most: a block
    when any choice is blocked. ``None`` for empty answers, for responses the guard never saw, and
    for a stream that has not ended yet. The JSON form is also in ``response._hidden_params["guardrail"]``.

    Example:
        >>> response = completion(model="gpt-4o-mini", messages=messages)  # doctest: +SKIP
        >>> verdict_of(response).decision  # doctest: +SKIP
        'allow'
    """
    found = verdicts_of(obj)
    return deciding(found) if found else None


def chunk_text(chunk: object) -> str | None:
    """The content a streamed chunk carries (``choices[0].delta.content``); ``None`` for other deltas."""
    choices = getattr(chunk, "choices", None)
    if not choices:
        return None
    content = getattr(getattr(choices[0], "delta", None), "content", None)
    return content if isinstance(content, str) else None


def reask_messages(messages: Sequence[Any], previous: str, feedback: str) -> list[Any]:
    """The original messages, the refused answer and the guard's feedback: what the model sees when re-asked."""
    return [*messages, {"role": "assistant", "content": previous}, {"role": "user", "content": feedback}]


def reask_text(response: object) -> str:
    """The text of a re-ask's answer; an answer without text cannot replace the refused one."""
    text = answer_of(response)
    if text is None:
        raise ValueError("the re-asked model answered without text content (tool calls or an empty message)")
    return text
