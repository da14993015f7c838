"""``Guard``: score a response, decide against the policy, record the check. Sync and async twins."""

from __future__ import annotations

import asyncio
import concurrent.futures
import time
from collections.abc import Mapping, Sequence
from dataclasses import replace
from os import PathLike
from typing import Any

from opentelemetry.trace import TracerProvider

from guardrail._engine import Engine
from guardrail._loader import load_policy
from guardrail._policy import Policy
from guardrail._telemetry import CheckTelemetry, capture_from_env
from guardrail._types import Item, Scorer
from guardrail._values import ValueVector
from guardrail._verdict import Verdict

PolicySource = str | PathLike[str] | Policy


def _check_text(name: str, value: object, optional: bool = False) -> None:
    if value is None and optional:
        return
    if not isinstance(value, str):
        kind = "a string or None" if optional else "a string"
        raise TypeError(f"{name} must be {kind}, got {type(value).__name__}")


class Guard:
    """Checks LLM responses against a value policy.

    Args:
        policy: A shipped policy name (``"default"``, ``"strict"``...), a YAML path, or a
            :class:`Policy`.
        scorer: Any :class:`Scorer`; default: the shipped :class:`TransformerScorer`.
        tracer_provider: OpenTelemetry provider for ``guardrail.check`` spans (default: global).
        capture_content: Record prompt and response text on spans; default: the
            ``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT`` environment variable.

    Example:
        >>> guard = Guard()  # doctest: +SKIP
        >>> verdict = guard.check("Sure, here is a recipe for bread...", prompt="Bread?")  # doctest: +SKIP
        >>> verdict.decision  # doctest: +SKIP
        'allow'
    """

    def __init__(
        self,
        policy: PolicySource = "default",
        scorer: Scorer | None = None,
        *,
        tracer_provider: TracerProvider | None = None,
        capture_content: bool | None = None,
    ) -> None:
        self.policy = load_policy(policy)
        self.engine = Engine(self.policy)
        if scorer is None:
            from guardrail._scorer import TransformerScorer

            scorer = TransformerScorer()
        self.scorer = scorer
        capture = capture_from_env() if capture_content is None else capture_content
        self._telemetry = CheckTelemetry(tracer_provider, capture)
        self._timeout = self.policy.timeout_ms / 1000 if self.policy.timeout_ms else None
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None

    # -- public twins -------------------------------------------------------------------

    def check(self, response: str, prompt: str | None = None, metadata: Mapping[str, Any] | None = None) -> Verdict:
        """Check one response (optionally with the prompt that produced it)."""
        return self.check_many([response], [prompt], metadata)[0]

    async def acheck(
        self, response: str, prompt: str | None = None, metadata: Mapping[str, Any] | None = None
    ) -> Verdict:
        """Async twin of :meth:`check`."""
        return (await self.acheck_many([response], [prompt], metadata))[0]

    def check_many(
        self,
        responses: Sequence[str],
        prompts: Sequence[str | None] | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> list[Verdict]:
        """Check a batch in one scoring pass; one verdict per response, in order."""
        items = self._items(responses, prompts)
        start = (time.perf_counter(), time.time_ns())
        try:
            vectors: list[ValueVector] | None = self._score(items)
            error = None
        except Exception as exc:  # a scorer failure is the policy's on_error to decide, never raised
            vectors, error = None, self._describe(exc)
        return self._finish(items, vectors, error, start, metadata)

    async def acheck_many(
        self,
        responses: Sequence[str],
        prompts: Sequence[str | None] | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> list[Verdict]:
        """Async twin of :meth:`check_many`."""
        items = self._items(responses, prompts)
        start = (time.perf_counter(), time.time_ns())
        try:
            vectors: list[ValueVector] | None = await asyncio.wait_for(self.scorer.ascore(items), self._timeout)
            error = None
        except Exception as exc:  # a scorer failure is the policy's on_error to decide, never raised
            vectors, error = None, self._describe(exc)
        return self._finish(items, vectors, error, start, metadata)

    # -- shared, I/O-free ---------------------------------------------------------------

    @staticmethod
    def _items(responses: Sequence[str], prompts: Sequence[str | None] | None) -> list[Item]:
        if isinstance(responses, str):
            raise TypeError("responses must be a sequence of strings; use check() for one response")
        if prompts is None:
            prompts = [None] * len(responses)
        if len(prompts) != len(responses):
            raise ValueError(f"prompts has {len(prompts)} entries but responses has {len(responses)}")
        for n, (p, r) in enumerate(zip(prompts, responses)):
            _check_text("response" if len(responses) == 1 else f"responses[{n}]", r)
            _check_text("prompt" if len(responses) == 1 else f"prompts[{n}]", p, optional=True)
        return list(zip(prompts, responses))

    def _score(self, items: list[Item]) -> list[ValueVector]:
        if self._timeout is None:
            return self.scorer.score(items)
        if self._pool is None:
            self._pool = concurrent.futures.ThreadPoolExecutor(4, thread_name_prefix="guardrail-score")
        future = self._pool.submit(self.scorer.score, items)
        try:
            return future.result(self._timeout)
        except concurrent.futures.TimeoutError as exc:
            raise TimeoutError(self._describe(exc)) from exc

    def _describe(self, exc: BaseException) -> str:
        # Only our own limit is a ScoringTimeout; asyncio.TimeoutError differs from TimeoutError on 3.10.
        timeouts = (TimeoutError, asyncio.TimeoutError, concurrent.futures.TimeoutError)
        if self.policy.timeout_ms is not None and isinstance(exc, timeouts):
            return f"ScoringTimeout: scoring took longer than timeout_ms={self.policy.timeout_ms:g}"
        return f"{type(exc).__name__}: {exc}"

    def _finish(
        self,
        items: list[Item],
        vectors: list[ValueVector] | None,
        error: str | None,
        start: tuple[float, int],
        metadata: Mapping[str, Any] | None,
    ) -> list[Verdict]:
        if vectors is not None and len(vectors) != len(items):
            vectors, error = None, f"ScorerError: {len(vectors)} vectors for {len(items)} items"
        # A batch shares one forward pass, so each verdict reports its share of the batch time.
        latency = (time.perf_counter() - start[0]) * 1000 / max(len(items), 1)
        verdicts = []
        for n, (prompt, response) in enumerate(items):
            with self._telemetry.span(start_time=start[1]) as span:
                if vectors is None:
                    verdict = self.engine.fail(error or "unknown error", latency_ms=latency)
                else:
                    verdict = self.engine.decide(vectors[n], latency_ms=latency)
                if metadata:
                    verdict = _with_metadata(verdict, metadata)
                self._telemetry.record(
                    span, verdict, model_id=self._model_id, device=self._device,
                    prompt=prompt, response=response, metadata=metadata,
                )  # fmt: skip
            verdicts.append(verdict)
        return verdicts

    @property
    def _model_id(self) -> str:
        return str(getattr(self.scorer, "model_id", type(self.scorer).__name__))

    @property
    def _device(self) -> str:
        return str(getattr(self.scorer, "device", "unknown"))


def _with_metadata(verdict: Verdict, metadata: Mapping[str, Any]) -> Verdict:
    return replace(verdict, metadata=dict(metadata))
