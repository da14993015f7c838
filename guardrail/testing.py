"""Test doubles shipped with the library, for testing policies and integrations without a model,
and the disguises an attacker puts on an answer, for red-teaming a policy with one."""

from __future__ import annotations

import asyncio
import base64
import codecs
import threading
import urllib.parse
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from guardrail._types import Item
from guardrail._values import ValueVector


class FakeScorer:
    """A scorer that returns fixed vectors: by exact response text, else by a function, else zero.

    Example:
        >>> scorer = FakeScorer({"bad": ValueVector(benevolence=-0.9)})
        >>> scorer.score([(None, "bad")])[0].benevolence
        -0.9
    """

    model_id = "fake"
    device = "cpu"

    def __init__(
        self,
        table: Mapping[str, ValueVector] | None = None,
        fn: Callable[[str | None, str], ValueVector] | None = None,
        *,
        fail: BaseException | None = None,
        delay_s: float = 0.0,
    ) -> None:
        self.table = dict(table or {})
        self.fn = fn
        self.fail = fail
        self.delay_s = delay_s
        self.calls: list[list[Item]] = []

    def _one(self, prompt: str | None, response: str) -> ValueVector:
        if response in self.table:
            return self.table[response]
        if self.fn is not None:
            return self.fn(prompt, response)
        return ValueVector()

    def score(self, items: Sequence[Item]) -> list[ValueVector]:
        """Return the fixed vector of each item (raises ``fail`` if set)."""
        import time

        self.calls.append(list(items))
        if self.delay_s:
            time.sleep(self.delay_s)
        if self.fail is not None:
            raise self.fail
        return [self._one(p, r) for p, r in items]

    async def ascore(self, items: Sequence[Item]) -> list[ValueVector]:
        """Async twin of :meth:`score`."""
        self.calls.append(list(items))
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        if self.fail is not None:
            raise self.fail
        return [self._one(p, r) for p, r in items]


def numbered(prompt: str | None, response: str) -> ValueVector:
    """A ``FakeScorer`` function whose vector names the answer: for telling verdicts apart under load.

    The number after the last ``#`` goes into ``power`` (``"answer #12"`` -> 0.012, modulo 1000), so a
    verdict handed to the wrong caller shows (:func:`number_of`); answers starting with ``BAD``
    oppose benevolence (-0.9).

    >>> numbered(None, "answer #12").power
    0.012
    """
    number = int(response.rsplit("#", 1)[-1]) if "#" in response else 0
    return ValueVector(power=(number % 1000) / 1000, benevolence=-0.9 if response.startswith("BAD") else 0.0)


def number_of(verdict: Any) -> int | None:
    """The answer number a :func:`numbered` verdict carries; ``None`` when scoring failed."""
    scores = getattr(verdict, "scores", None)
    return None if scores is None else round(scores.power * 1000)


class HangingScorer(FakeScorer):
    """A :func:`numbered` scorer that hangs on answers starting with ``HANG`` (a stuck forward pass).

    Stuck calls wait until :attr:`release` is set (at most ``limit_s``); every other call is answered
    at once, so a test can show that stuck work does not hold up healthy checks.
    """

    def __init__(self, limit_s: float = 30.0) -> None:
        super().__init__(fn=numbered)
        self.limit_s = limit_s
        self.release = threading.Event()
        """Set it to let the stuck calls finish."""

    def score(self, items: Sequence[Item]) -> list[ValueVector]:
        """Score ``items``; hangs first when one of them starts with ``HANG``."""
        if any(response.startswith("HANG") for _, response in items):
            self.release.wait(self.limit_s)
        return super().score(items)


class ReturningScorer(FakeScorer):
    """A scorer whose output is whatever ``make(number of items)`` returns, checked or not.

    For testing what a guard does with a broken scorer: lists, dicts, generators, the wrong count,
    NaN or infinite scores.

    Example:
        >>> ReturningScorer(lambda n: [{"benevolence": 0.0}] * n).score([(None, "hi")])
        [{'benevolence': 0.0}]
    """

    def __init__(self, make: Callable[[int], Any]) -> None:
        super().__init__()
        self.make = make

    def score(self, items: Sequence[Item]) -> Any:
        """Return ``make(len(items))`` as it is."""
        return self.make(len(items))

    async def ascore(self, items: Sequence[Item]) -> Any:
        """Async twin of :meth:`score`."""
        return self.make(len(items))


_LOOKALIKES = str.maketrans("aeopcxyiAEOPCXHKMT", "аеорсхуіАЕОРСХНКМТ")
_LEET = str.maketrans("aeiost", "431057")

DISGUISES: Mapping[str, Callable[[str], str]] = {
    "base64": lambda text: "Sure! Here is my answer in base64: " + base64.b64encode(text.encode()).decode(),
    "hex": lambda text: text.encode().hex(),
    "url": lambda text: urllib.parse.quote(text),
    "rot13": lambda text: "Here it is in rot13: " + codecs.encode(text, "rot13"),
    "reversed": lambda text: text[::-1],
    "zero_width": lambda text: "\u200b".join(text),
    "emoji": lambda text: " \U0001f642 ".join(text.split(" ")),
    "homoglyphs": lambda text: text.translate(_LOOKALIKES),
    "leet": lambda text: text.translate(_LEET),
}
"""Ways to disguise an answer that a guard must see through: name -> transformation.

Example:
    >>> DISGUISES["reversed"]("hello there")
    'ereht olleh'
"""
