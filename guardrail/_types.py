"""Shared aliases and protocols."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, Protocol, TypeAlias, runtime_checkable

from guardrail._values import ValueVector

Item: TypeAlias = tuple[str | None, str]
"""One thing to score: (prompt or None, response)."""

Runtime: TypeAlias = Literal["auto", "torch", "torch-bf16", "torch-int8", "onnx", "onnx-int8"]
"""Where the scorer's forward pass runs; see ``guardrail/_scoring/runtime.py`` and docs/performance.md."""

CheckRole: TypeAlias = Literal["answer", "revision", "sentence", "redacted"]
"""Why a check ran: the answer itself, or a rewrite's re-check (a revision, a sentence, the redacted rest)."""


@runtime_checkable
class Scorer(Protocol):
    """Anything that maps a batch of (prompt or None, response) pairs to value vectors.

    ``score`` and ``ascore`` return one :class:`ValueVector` per item, in order.
    ``model_id`` and ``device`` are recorded on spans.
    """

    model_id: str
    device: str

    def score(self, items: Sequence[Item]) -> list[ValueVector]:
        """Score a batch synchronously."""
        ...

    async def ascore(self, items: Sequence[Item]) -> list[ValueVector]:
        """Score a batch without blocking the event loop."""
        ...
