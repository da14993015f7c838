"""The parts of a model's answer that reach the user, and how a message's verdict follows from theirs.

A chat answer is more than its text: a provider may return several choices, a reasoning trace
(``reasoning_content``) and tool calls whose arguments an application acts on or shows. Every one
of them is checked, each with its own verdict (and its own ``guardrail.check`` span, labelled with
the :class:`OutputPart` it checked). One choice is delivered as a whole or not at all: the verdict
that decides it is the one that alters most (:func:`deciding`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, TypeAlias

if TYPE_CHECKING:
    from guardrail._verdict import Verdict

OutputKind: TypeAlias = Literal["content", "reasoning", "tool_call"]
"""What a checked text is: the answer's content, its reasoning trace, or one tool call."""

_STRENGTH: Mapping[str, int] = {"allow": 0, "log": 1, "rewrite": 2, "block": 3}


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


@dataclass(frozen=True, slots=True)
class ChoiceVerdict:
    """The verdicts of one choice's parts; the one that alters most decides whether the choice goes out.

    A choice is delivered whole or not at all: when it is :attr:`blocked`, the policy's message
    replaces its content and none of its reasoning or tool calls is delivered.
    """

    choice: int
    verdicts: tuple[Verdict, ...]

    @property
    def verdict(self) -> Verdict:
        """The deciding verdict (:func:`deciding`)."""
        return deciding(self.verdicts)

    @property
    def blocked(self) -> bool:
        """Whether the choice is withheld and the policy's message goes out instead."""
        return self.verdict.final_decision == "block"

    @property
    def altered(self) -> bool:
        """Whether what goes out differs from what the model sent."""
        return any(v.altered for v in self.verdicts)

    @property
    def content(self) -> str | None:
        """The content to deliver: the policy's message when blocked, else the (possibly rewritten) content;
        ``None`` when the choice had no content and is not blocked."""
        if self.blocked:
            return self.verdict.output or ""
        return next((v.output for v in self.verdicts if v.part is None or v.part.kind == "content"), None)

    def to_dict(self) -> dict[str, Any]:
        """JSON form: the deciding verdict's ``to_dict()`` and every part's under ``"parts"``."""
        return {**self.verdict.to_dict(), "parts": [v.to_dict() for v in self.verdicts]}


def by_choice(verdicts: Sequence[Verdict]) -> list[ChoiceVerdict]:
    """Group an answer's verdicts by the choice their part belongs to, in choice order."""
    groups: dict[int, list[Verdict]] = {}
    for verdict in verdicts:
        groups.setdefault(verdict.part.choice if verdict.part is not None else 0, []).append(verdict)
    return [ChoiceVerdict(n, tuple(groups[n])) for n in sorted(groups)]


def deciding(verdicts: Sequence[Verdict]) -> Verdict:
    """The verdict that decides a whole choice: the one whose final decision alters most, then the riskiest.

    Raises:
        ValueError: for an empty sequence.
    """
    if not verdicts:
        raise ValueError("deciding() needs at least one verdict")
    return max(verdicts, key=lambda v: (_STRENGTH[v.final_decision], v.risk))
