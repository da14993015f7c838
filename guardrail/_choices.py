"""How a choice's verdict follows from its parts': one choice is delivered as a whole or not at all.

The verdict that decides a choice is the one that alters most (:func:`deciding`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from guardrail._verdict import Verdict

_STRENGTH: Mapping[str, int] = {"allow": 0, "log": 1, "rewrite": 2, "block": 3}


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
