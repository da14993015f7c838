"""What the scorer reads of an answer: the answer as a reader sees it, in the languages it reads.

A :class:`Reader` is built once from a policy. For each answer it reads a structured answer (JSON,
a tool call) as the prose it carries (:func:`guardrail._guard.structured.prose`), undoes disguises
(:func:`guardrail._guard.normalize.normalize`, when the policy's ``normalize`` is on), then splits
off the pieces in languages the policy does not support (:func:`guardrail._guard.language.split_languages`);
those pieces are not scored but judged by the policy's ``languages.other`` rule, as one more
violation next to the value rules.
"""

from __future__ import annotations

from dataclasses import dataclass

from guardrail._guard.language import LanguageDetector, split_languages
from guardrail._guard.normalize import Normalized, normalize
from guardrail._guard.structured import STEP as STRUCTURED
from guardrail._guard.structured import prose
from guardrail._policy.engine import language_violation
from guardrail._policy.schema import Policy
from guardrail._verdict import Violation


@dataclass(frozen=True, slots=True)
class Reading:
    """One answer as the scorer reads it.

    ``text`` is what is scored, ``None`` when nothing is left to score (all of it is in
    languages the policy does not read). ``normalized`` names the disguises undone, ``language``
    is the answer's main language (``None``: too short to tell), and ``violation`` the language
    rule's, when it fired.
    """

    text: str | None
    normalized: tuple[str, ...] = ()
    language: str | None = None
    violation: Violation | None = None
    decoded: tuple[str, ...] = ()
    """Decoded runs (base64, rot13...) scored on their own as well, in languages the policy reads."""

    @property
    def forms(self) -> tuple[str, ...]:
        """Every text to score for this answer: the answer as read, then each decoded run alone."""
        return ((self.text,) if self.text is not None else ()) + self.decoded


class Reader:
    """Reads answers the way ``policy`` says (``normalize``, ``languages``); safe to share between threads."""

    def __init__(self, policy: Policy, detector: LanguageDetector | None = None) -> None:
        self._normalize = policy.normalize
        self._rule = policy.languages
        self._supported = frozenset(policy.languages.supported)
        self._detector = detector or LanguageDetector()

    def _reads(self, text: str) -> float:
        return self._detector.reads(text, self._supported)

    def read(self, response: str) -> Reading:
        """The :class:`Reading` of one answer."""
        structured = prose(response)
        steps: tuple[str, ...] = ()
        if structured is not None:
            response, steps = structured, (STRUCTURED,)
        if not self._normalize and not self._rule.detect:
            return Reading(response, steps)  # nothing to undo, no language to tell
        seen = normalize(response, self._reads) if self._normalize else Normalized(response)
        steps += seen.steps
        split = split_languages(
            seen.text, self._supported, self._detector,
            min_letters=self._rule.min_letters, min_confidence=self._rule.min_confidence,
        )  # fmt: skip
        decoded = tuple(self._readable(run) for run in seen.decoded)
        decoded = tuple(run for run in decoded if run.strip() and run != seen.text)
        if not split.other or self._rule.other == "score":
            return Reading(seen.text, steps, split.language, decoded=decoded)
        names = ", ".join(split.other)
        message = (f"{split.other_share:.0%} of the answer is in {names}, which the policy does not read "
                   f"(supported: {', '.join(self._rule.supported)})")  # fmt: skip
        violation = language_violation(self._rule, split.other_share, message)
        text = split.kept if split.kept.strip() else None
        return Reading(text, steps, split.language, violation, decoded)

    def _readable(self, text: str) -> str:
        """``text`` without its pieces in languages the policy does not read (all of it under ``score``)."""
        if self._rule.other == "score":
            return text
        return split_languages(
            text, self._supported, self._detector,
            min_letters=self._rule.min_letters, min_confidence=self._rule.min_confidence,
        ).kept  # fmt: skip
