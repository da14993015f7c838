"""Test doubles shipped with the library, for testing policies and integrations without a model."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence

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
