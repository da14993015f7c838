"""The parts of a model's answer that reach the user.

A chat answer is more than its text: a provider may return several choices, a reasoning trace
(``reasoning_content``) and tool calls whose arguments an application acts on or shows. Every one
of them is checked, each with its own verdict (and its own ``guardrail.check`` span, labelled with
the :class:`OutputPart` it checked). How a choice's verdict follows from its parts' is ``_choices``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Literal, TypeAlias

OutputKind: TypeAlias = Literal["content", "reasoning", "tool_call"]
"""What a checked text is: the answer's content, its reasoning trace, or one tool call."""


@dataclass(frozen=True, slots=True)
class OutputPart:
    """Which piece of an answer a check read; recorded on the check's span and in ``Verdict.part``.

    Args:
        kind: ``content``, ``reasoning`` or ``tool_call``.
        choice: Index of the choice (``choices[n]``) the piece belongs to.
        index: Position among pieces of the same kind in that choice (the n-th tool call).
        name: The tool's name, for a tool call.
    """

    kind: OutputKind = "content"
    choice: int = 0
    index: int = 0
    name: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON form, as in ``Verdict.to_dict()["part"]``."""
        return {"kind": self.kind, "choice": self.choice, "index": self.index, "name": self.name}

    def attributes(self) -> dict[str, Any]:
        """Span attributes: ``guardrail.output.kind``, ``.choice``, ``.index`` and, for a tool call, ``.name``."""
        attrs: dict[str, Any] = {
            "guardrail.output.kind": self.kind,
            "guardrail.output.choice": self.choice,
            "guardrail.output.index": self.index,
        }
        if self.name is not None:
            attrs["guardrail.output.name"] = self.name
        return attrs


def tool_call_text(name: str | None, arguments: object) -> str:
    """The text a tool call is checked as: the function's name, then its arguments.

    Arguments given as a mapping (LangChain's ``tool_call["args"]``) are written as JSON, a string
    (OpenAI's ``function.arguments``) is kept as it is, so both integrations score the same text.

    >>> tool_call_text("send_email", {"to": "bob", "body": "hi"})
    'send_email({"to": "bob", "body": "hi"})'
    """
    if isinstance(arguments, str):
        args = arguments
    elif arguments is None:
        args = ""
    else:
        try:
            args = json.dumps(arguments, ensure_ascii=False, default=str)
        except (TypeError, ValueError):  # cyclic or otherwise unserialisable: its repr still shows the words
            args = repr(arguments)
    return f"{name or 'tool'}({args})"


@dataclass(frozen=True, slots=True)
class Output:
    """One text of an answer to check, and which part of the answer it is (see ``Guard.enforce_outputs``)."""

    part: OutputPart
    text: str

    @property
    def rewritable(self) -> bool:
        """Only content can be re-asked or redacted; a reasoning trace or a tool call is delivered or withheld."""
        return self.part.kind == "content"
