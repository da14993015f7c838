"""``Guard``: score a response, decide against the policy, record the check. Sync and async twins."""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import time
from collections.abc import AsyncIterable, Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import replace
from os import PathLike
from typing import Any, TypeVar

from opentelemetry.metrics import MeterProvider
from opentelemetry.trace import TracerProvider

from guardrail._exceptions import ScorerError, ScoringTimeout
from guardrail._guard.reading import Reader, Reading
from guardrail._guard.rewrite import Result, Strategy, fallback, reask, redact
from guardrail._guard.streaming import AsyncGuardedStream, GuardedStream
from guardrail._outputs import Output, OutputPart
from guardrail._policy.engine import Engine
from guardrail._policy.loader import load_policy
from guardrail._policy.schema import ACTION_STRENGTH, Policy
from guardrail._scoring.batching import MicroBatcher, in_thread
from guardrail._telemetry.checks import CheckTelemetry, capture_from_env
from guardrail._telemetry.genai import CallSpans, ModelCall, call_spans
from guardrail._types import CheckRole, Item, Scorer
from guardrail._validate import check_metadata, checked_vectors, clean_text
from guardrail._values import ValueVector
from guardrail._verdict import Rewrite, Verdict, Violation

PolicySource = str | PathLike[str] | Policy
C = TypeVar("C")

POLICY_ENV = "GUARDRAIL_POLICY"
"""Environment variable naming the process-wide default policy (a shipped name or a path)."""

Reask = Callable[[str, str], str]
"""Ask the model again: ``(previous answer, feedback) -> revised answer`` (supplied by integrations)."""
AsyncReask = Callable[[str, str], Awaitable[str]]


def default_policy() -> str:
    """The policy a ``Guard()`` without one uses: ``$GUARDRAIL_POLICY``, else ``default``."""
    return os.environ.get(POLICY_ENV) or "default"


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
            :class:`Policy`; default: ``$GUARDRAIL_POLICY``, else ``"default"``.
        scorer: Any :class:`Scorer`; default: the shipped :class:`TransformerScorer`.
        tracer_provider: OpenTelemetry provider for the ``guardrail.*`` spans (default: global).
        capture_content: Record prompt, answer and delivered text on spans; default: the policy's
            ``capture_content``, else the ``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT``
            environment variable.
        meter_provider: OpenTelemetry provider for the ``guardrail.*`` metrics (default: global).

    Example:
        >>> guard = Guard()  # doctest: +SKIP
        >>> verdict = guard.check("Sure, here is a recipe for bread...", prompt="Bread?")  # doctest: +SKIP
        >>> verdict.decision  # doctest: +SKIP
        'allow'
    """

    def __init__(
        self,
        policy: PolicySource | None = None,
        scorer: Scorer | None = None,
        *,
        tracer_provider: TracerProvider | None = None,
        capture_content: bool | None = None,
        meter_provider: MeterProvider | None = None,
    ) -> None:
        self.policy = load_policy(default_policy() if policy is None else policy)
        self.engine = Engine(self.policy)
        self._reader = Reader(self.policy)
        settings = self.policy.scorer
        built = scorer is None
        background: Scorer | None = None
        if scorer is None and settings.remote is not None:
            from guardrail._scoring.remote import RemoteScorer

            remote = settings.remote
            scorer = RemoteScorer(
                remote.url, timeout_ms=remote.timeout_ms or self.policy.timeout_ms, retries=remote.retries,
                token=os.environ.get(remote.token_env),
            )  # fmt: skip
        elif scorer is None:
            from guardrail._scoring.scorer import TransformerScorer

            transformer = TransformerScorer(runtime=settings.runtime)
            scorer, background = transformer, transformer.background()
        batching = built if settings.batching is None else settings.batching
        if batching and not isinstance(scorer, MicroBatcher):
            scorer = MicroBatcher(
                scorer, max_batch=settings.max_batch, max_wait_ms=settings.max_wait_ms,
                meter_provider=meter_provider, background=background,
            )  # fmt: skip
        self.scorer = scorer
        if capture_content is None:
            capture_content = capture_from_env() if self.policy.capture_content is None else self.policy.capture_content
        self._telemetry = CheckTelemetry(tracer_provider, capture_content, meter_provider)

    # -- public twins -------------------------------------------------------------------

    def check(
        self,
        response: str,
        prompt: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        *,
        part: OutputPart | None = None,
    ) -> Verdict:
        """Check one response (optionally with the prompt that produced it).

        ``part`` says which piece of an answer this is (a choice, its reasoning, a tool call); it is
        recorded on the span and in ``verdict.part``.
        """
        return self.check_many([response], [prompt], metadata, parts=[part])[0]

    async def acheck(
        self,
        response: str,
        prompt: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        *,
        part: OutputPart | None = None,
    ) -> Verdict:
        """Async twin of :meth:`check`."""
        return (await self.acheck_many([response], [prompt], metadata, parts=[part]))[0]

    def check_many(
        self,
        responses: Sequence[str],
        prompts: Sequence[str | None] | None = None,
        metadata: Mapping[str, Any] | None = None,
        *,
        parts: Sequence[OutputPart | None] | None = None,
        timeout_ms: float | None = None,
    ) -> list[Verdict]:
        """Check a batch in one scoring pass; one verdict per response, in order (``parts``: see :meth:`check`).

        ``timeout_ms`` limits this call's scoring instead of the policy's per-check ``timeout_ms``,
        e.g. scaled to the batch for offline scoring (``guardrail score``).
        """
        return self._check_many(responses, prompts, metadata, "answer", parts, timeout_ms)

    async def acheck_many(
        self,
        responses: Sequence[str],
        prompts: Sequence[str | None] | None = None,
        metadata: Mapping[str, Any] | None = None,
        *,
        parts: Sequence[OutputPart | None] | None = None,
        timeout_ms: float | None = None,
    ) -> list[Verdict]:
        """Async twin of :meth:`check_many`."""
        return await self._acheck_many(responses, prompts, metadata, "answer", parts, timeout_ms)

    def enforce(
        self,
        response: str,
        prompt: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        *,
        reask: Reask | None = None,
        part: OutputPart | None = None,
    ) -> Verdict:
        """Check one response and carry out the decision; ``verdict.output`` is what to deliver.

        ``allow``/``log`` deliver the response, ``block`` the policy's message, ``rewrite`` runs the
        action's strategy (``reask`` calls ``reask(previous, feedback)``; without it a reask falls
        back) and ``verdict.rewrite`` records how it went. One ``guardrail.enforce`` span holds the
        check, any rewrite's re-asks and re-checks, and the final decision (and the delivered text
        when content capture is on).

        Example:
            >>> verdict = guard.enforce(answer, prompt=question)  # doctest: +SKIP
            >>> send(verdict.output)  # doctest: +SKIP
        """
        with self._telemetry.enforce_span() as span:
            verdict = self.check(response, prompt, metadata, part=part)
            verdict = self._carry_out(verdict, response, prompt, metadata, reask)
            self._telemetry.record_enforced(span, verdict, prompt=prompt, response=response)
        return verdict

    async def aenforce(
        self,
        response: str,
        prompt: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        *,
        reask: AsyncReask | None = None,
        part: OutputPart | None = None,
    ) -> Verdict:
        """Async twin of :meth:`enforce`; ``reask`` is awaited."""
        with self._telemetry.enforce_span() as span:
            verdict = await self.acheck(response, prompt, metadata, part=part)
            verdict = await self._acarry_out(verdict, response, prompt, metadata, reask)
            self._telemetry.record_enforced(span, verdict, prompt=prompt, response=response)
        return verdict

    def enforce_outputs(
        self,
        outputs: Sequence[Output],
        prompt: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        *,
        reask: Reask | None = None,
    ) -> list[Verdict]:
        """Check every part of an answer and carry out each decision; one verdict per output, in order.

        Content goes through :meth:`enforce` (a rewrite re-asks or redacts it). A reasoning trace
        or a tool call cannot be rewritten: those are checked in one batch, and a rewrite decision
        applies its action's fallback. Group the verdicts with :func:`~guardrail.by_choice` to
        deliver each choice whole or not at all.

        Example:
            >>> outputs = [Output(OutputPart("content"), answer), Output(OutputPart("tool_call", name="send"), call)]
            >>> [choice] = by_choice(guard.enforce_outputs(outputs, prompt=question))  # doctest: +SKIP
            >>> choice.blocked  # doctest: +SKIP
            False
        """
        contents = [o for o in outputs if o.rewritable]
        enforced = iter([self.enforce(o.text, prompt, metadata, reask=reask, part=o.part) for o in contents])
        fixed = [o for o in outputs if not o.rewritable]
        checked = self.check_many([o.text for o in fixed], [prompt] * len(fixed), metadata,
                                  parts=[o.part for o in fixed]) if fixed else []  # fmt: skip
        settled = iter([self._settle(v, o) for v, o in zip(checked, fixed)])
        return [next(enforced) if o.rewritable else next(settled) for o in outputs]

    async def aenforce_outputs(
        self,
        outputs: Sequence[Output],
        prompt: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        *,
        reask: AsyncReask | None = None,
    ) -> list[Verdict]:
        """Async twin of :meth:`enforce_outputs`; the parts are checked concurrently (the batcher joins them)."""
        fixed = [o for o in outputs if not o.rewritable]

        async def rest() -> list[Verdict]:
            if not fixed:
                return []
            checked = await self.acheck_many([o.text for o in fixed], [prompt] * len(fixed), metadata,
                                             parts=[o.part for o in fixed])  # fmt: skip
            return [self._settle(v, o) for v, o in zip(checked, fixed)]

        contents = [self.aenforce(o.text, prompt, metadata, reask=reask, part=o.part) for o in outputs if o.rewritable]
        enforced, settled = await asyncio.gather(asyncio.gather(*contents), rest())
        done, left = iter(enforced), iter(settled)
        return [next(done) if o.rewritable else next(left) for o in outputs]

    def stream(
        self,
        chunks: Iterable[C],
        prompt: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        *,
        text: Callable[[C], str | None] = str,  # type: ignore[assignment]
        rebuild: Callable[[C, str], C] = lambda chunk, text: text,  # type: ignore[assignment,return-value]
        part: OutputPart | None = None,
    ) -> GuardedStream[C]:
        """Guard a streamed answer; iterate the result instead of ``chunks``.

        ``text(chunk)`` reads a chunk's text and ``rebuild(chunk, text)`` makes a chunk carrying
        released text (defaults: chunks are strings). Settings: the policy's ``streaming`` block.
        After iteration, ``stream.verdict`` holds the verdict. ``part``: see :meth:`check`.
        """
        return GuardedStream(self, chunks, prompt, metadata, text=text, rebuild=rebuild, part=part)

    def astream(
        self,
        chunks: AsyncIterable[C],
        prompt: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        *,
        text: Callable[[C], str | None] = str,  # type: ignore[assignment]
        rebuild: Callable[[C, str], C] = lambda chunk, text: text,  # type: ignore[assignment,return-value]
        part: OutputPart | None = None,
    ) -> AsyncGuardedStream[C]:
        """Async twin of :meth:`stream`."""
        return AsyncGuardedStream(self, chunks, prompt, metadata, text=text, rebuild=rebuild, part=part)

    def trace_call(
        self,
        call: ModelCall,
        *,
        integration: str,
        metadata: Mapping[str, Any] | None = None,
        streamed: bool = False,
    ) -> CallSpans:
        """Open the ``guardrail.call`` span of one guarded model call: an integration's one hook into tracing.

        The model-call span (OpenTelemetry GenAI conventions, :meth:`CallSpans.model`) and this guard's
        own ``guardrail.enforce`` / ``guardrail.check`` spans nest under it, with this guard's tracer
        provider and content-capture setting.

        Args:
            call: What the integration is about to ask the model.
            integration: Recorded as ``guardrail.integration`` (``litellm``, ``langchain``, your own).
            metadata: The request metadata this guard sees (``deployment`` / ``tenant`` are recorded).
            streamed: Whether the answer is streamed (``guardrail.streamed``).

        Example:
            >>> with guard.trace_call(ModelCall("gpt-4o-mini", "openai"), integration="mine") as call:  # doctest: +SKIP
            ...     with call.model() as model:
            ...         answer = client.chat(...)
            ...         model.record(ModelReply(id=answer.id, output_tokens=answer.usage.output))
            ...     call.record(guard.enforce(answer.text, prompt))
        """
        policy = (self.policy.name, self.policy.version, self.engine.policy_hash)
        return call_spans(self._telemetry, call, integration=integration, policy=policy, metadata=metadata,
                          streamed=streamed)  # fmt: skip

    # -- twins behind the public ones ----------------------------------------------------

    def _check_many(
        self, responses: Sequence[str], prompts: Sequence[str | None] | None,
        metadata: Mapping[str, Any] | None, role: CheckRole,
        parts: Sequence[OutputPart | None] | None = None, timeout_ms: float | None = None,
    ) -> list[Verdict]:  # fmt: skip
        items, oversize = self._prepare(responses, prompts, metadata, parts, timeout_ms)
        start = (time.perf_counter(), time.time_ns())
        readings = self._read(items, oversize)
        todo = _to_score(items, readings)
        self._count_batch(todo)
        try:
            scored: list[ValueVector] | str = self._score(todo, self._limit(timeout_ms))
        except Exception as exc:  # a scorer failure is the policy's on_error to decide, never raised
            scored = self._describe(exc)
        return self._finish(items, readings, _outcomes(readings, scored), start, metadata, role, parts)

    async def _acheck_many(
        self, responses: Sequence[str], prompts: Sequence[str | None] | None,
        metadata: Mapping[str, Any] | None, role: CheckRole,
        parts: Sequence[OutputPart | None] | None = None, timeout_ms: float | None = None,
    ) -> list[Verdict]:  # fmt: skip
        items, oversize = self._prepare(responses, prompts, metadata, parts, timeout_ms)
        start = (time.perf_counter(), time.time_ns())
        if sum(len(response) for _, response in items) > _READ_INLINE:
            # A huge answer is read off the event loop, so it holds up no other caller's check.
            readings = await asyncio.to_thread(self._read, items, oversize)
        else:
            readings = self._read(items, oversize)
        todo = _to_score(items, readings)
        self._count_batch(todo)
        try:
            scored: list[ValueVector] | str = await self._ascore(todo, self._limit(timeout_ms))
        except Exception as exc:  # a scorer failure is the policy's on_error to decide, never raised
            scored = self._describe(exc)
        return self._finish(items, readings, _outcomes(readings, scored), start, metadata, role, parts)

    def _carry_out(
        self, verdict: Verdict, response: str, prompt: str | None,
        metadata: Mapping[str, Any] | None, reask: Reask | None,
    ) -> Verdict:  # fmt: skip
        strategy = self._strategy(verdict, response, can_ask=reask is not None)
        if strategy is None:
            return self._deliver(verdict, response)
        reply: object = None
        attempt = 0
        with self._telemetry.rewrite_span(verdict.action.strategy if verdict.action else ""):
            while True:
                try:
                    request = strategy.send(reply)
                except StopIteration as stop:
                    return self._rewritten(verdict, response, stop.value)
                try:
                    if request[0] == "check":
                        reply = self._check_many(request[1], [prompt] * len(request[1]), metadata, request[2])
                    else:
                        assert reask is not None
                        attempt += 1
                        with self._telemetry.reask_span(attempt):
                            reply = reask(request[1], request[2])
                            _check_text("reask() result", reply)
                except Exception as exc:  # a failing re-ask must not lose the answer's fate: fall back
                    return fallback(self.policy, verdict, response, _failed(exc))

    async def _acarry_out(
        self, verdict: Verdict, response: str, prompt: str | None,
        metadata: Mapping[str, Any] | None, reask: AsyncReask | None,
    ) -> Verdict:  # fmt: skip
        strategy = self._strategy(verdict, response, can_ask=reask is not None)
        if strategy is None:
            return self._deliver(verdict, response)
        reply: object = None
        attempt = 0
        with self._telemetry.rewrite_span(verdict.action.strategy if verdict.action else ""):
            while True:
                try:
                    request = strategy.send(reply)
                except StopIteration as stop:
                    return self._rewritten(verdict, response, stop.value)
                try:
                    if request[0] == "check":
                        reply = await self._acheck_many(request[1], [prompt] * len(request[1]), metadata, request[2])
                    else:
                        assert reask is not None
                        attempt += 1
                        with self._telemetry.reask_span(attempt):
                            reply = await reask(request[1], request[2])
                            _check_text("reask() result", reply)
                except Exception as exc:  # a failing re-ask must not lose the answer's fate: fall back
                    return fallback(self.policy, verdict, response, _failed(exc))

    # -- shared, I/O-free ---------------------------------------------------------------

    def _strategy(self, verdict: Verdict, response: str, *, can_ask: bool) -> Strategy | None:
        if verdict.decision != "rewrite" or verdict.action is None:
            return None
        if verdict.action.strategy == "redact":
            return redact(response, verdict.action)
        return reask(response, verdict, verdict.action, can_ask)

    def _settle(self, verdict: Verdict, output: Output) -> Verdict:
        """Carry out the decision on a part that cannot be rewritten: a rewrite applies its fallback."""
        if verdict.decision != "rewrite" or verdict.action is None:
            return self._deliver(verdict, output.text)
        what = "reasoning trace" if output.part.kind == "reasoning" else output.part.kind.replace("_", " ")
        return fallback(
            self.policy,
            verdict,
            output.text,
            Result(False, None, 0, None, f"a {what} cannot be rewritten; its fallback applies"),
        )

    @staticmethod
    def _deliver(verdict: Verdict, response: str) -> Verdict:
        return replace(verdict, output=verdict.message if verdict.decision == "block" else response)

    def _rewritten(self, verdict: Verdict, response: str, result: Result) -> Verdict:
        if not result.accepted:
            return fallback(self.policy, verdict, response, result)
        assert verdict.action is not None and verdict.action.strategy is not None
        record = Rewrite(verdict.action.strategy, result.attempts, True, "rewrite", None, result.reason)
        return replace(verdict, output=result.text, rewrite=record)

    def _prepare(
        self, responses: Sequence[str], prompts: Sequence[str | None] | None, metadata: object,
        parts: Sequence[OutputPart | None] | None, timeout_ms: float | None,
    ) -> tuple[list[Item], list[str | None]]:  # fmt: skip
        """Check the arguments; the items to score (sized to ``max_chars``) and each one's size error."""
        if isinstance(responses, str):
            raise TypeError("responses must be a sequence of strings; use check() for one response")
        if prompts is None:
            prompts = [None] * len(responses)
        if len(prompts) != len(responses):
            raise ValueError(f"prompts has {len(prompts)} entries but responses has {len(responses)}")
        if parts is not None and len(parts) != len(responses):
            raise ValueError(f"parts has {len(parts)} entries but responses has {len(responses)}")
        if timeout_ms is not None and not timeout_ms > 0:
            raise ValueError(f"timeout_ms must be > 0, got {timeout_ms!r}")
        check_metadata(metadata)
        items: list[Item] = []
        oversize: list[str | None] = []
        for n, (p, r) in enumerate(zip(prompts, responses)):
            _check_text("response" if len(responses) == 1 else f"responses[{n}]", r)
            _check_text("prompt" if len(responses) == 1 else f"prompts[{n}]", p, optional=True)
            item, error = self._sized(p, r)
            items.append(item)
            oversize.append(error)
        return items, oversize

    def _sized(self, prompt: str | None, response: str) -> tuple[Item, str | None]:
        """The item the scorer sees: at most ``max_chars`` of each text, lone surrogates replaced."""
        limit = self.policy.max_chars
        error = None
        if prompt is not None and len(prompt) > limit:
            prompt = prompt[:limit]  # the scorer reads only a prompt's start
        if len(response) > limit:
            if self.policy.oversize == "error":
                error = f"too long: the answer has {len(response):,} characters, more than max_chars={limit:,}"
            else:
                # Never the whole text: tokenising and scoring cost at most max_chars characters.
                response = response[: limit // 2] + "\n" + response[len(response) - limit // 2 :]
        return (None if prompt is None else clean_text(prompt), clean_text(response)), error

    def _read(self, items: list[Item], oversize: list[str | None]) -> list[Reading | str]:
        """Each item's reading, or the error that stops it (its size, a failed language detection)."""
        readings: list[Reading | str] = []
        for (_, response), error in zip(items, oversize):
            if error is not None:
                readings.append(error)
                continue
            try:
                readings.append(self._reader.read(response))
            except Exception as exc:  # like a scorer failure: the policy's on_error decides
                readings.append(self._describe(exc))
        return readings

    def _limit(self, timeout_ms: float | None) -> float:
        return (self.policy.timeout_ms if timeout_ms is None else timeout_ms) / 1000

    def _count_batch(self, items: list[Item]) -> None:
        # A MicroBatcher records the joint calls it makes, which is what the scorer really sees.
        if items and not isinstance(self.scorer, MicroBatcher):
            self._telemetry.batch_size.record(len(items))

    def _score(self, items: list[Item], limit: float) -> list[ValueVector]:
        """Score with a deadline; the caller's thread only waits, so a hung scorer holds no one else."""
        if not items:
            return []
        if isinstance(self.scorer, MicroBatcher):
            future = self.scorer.submit(items)
        else:
            future = in_thread(self.scorer.score, items)
        # wait(), not result(timeout): a TimeoutError the scorer raised itself is its failure, not our limit.
        if not concurrent.futures.wait([future], limit).done:
            future.cancel()  # a request still queued is dropped, so no one scores it for nobody
            raise ScoringTimeout(_late(limit))
        return checked_vectors(future.result(), len(items))

    async def _ascore(self, items: list[Item], limit: float) -> list[ValueVector]:
        """Async twin of :meth:`_score`; a cancelled caller cancels its scoring request too."""
        if not items:
            return []
        task = asyncio.ensure_future(self.scorer.ascore(items))
        try:
            done, _ = await asyncio.wait({task}, timeout=limit)
        finally:
            if not task.done():
                task.cancel()
        if not done:
            raise ScoringTimeout(_late(limit))
        if task.cancelled():  # the scorer cancelled itself: a failure, not the caller's cancellation
            raise ScorerError("the scorer's call was cancelled")
        return checked_vectors(task.result(), len(items))

    @staticmethod
    def _describe(exc: BaseException) -> str:
        return f"{type(exc).__name__}: {exc}"

    def _finish(
        self,
        items: list[Item],
        readings: list[Reading | str],
        outcomes: list[Outcome],
        start: tuple[float, int],
        metadata: Mapping[str, Any] | None,
        role: CheckRole = "answer",
        parts: Sequence[OutputPart | None] | None = None,
    ) -> list[Verdict]:
        """One verdict per item from its outcome: the error that stopped it, or a vector per form
        it was read in, the form with the strongest decision deciding (none: only its language
        violation decides)."""
        # A batch shares one forward pass, so each verdict reports its share of the batch time.
        latency = (time.perf_counter() - start[0]) * 1000 / max(len(items), 1)
        verdicts = []
        for n, (prompt, response) in enumerate(items):
            with self._telemetry.span(start_time=start[1]) as span:
                outcome, reading = outcomes[n], readings[n]
                extra = () if isinstance(reading, str) or reading.violation is None else (reading.violation,)
                if isinstance(outcome, str):
                    verdict = self.engine.fail(outcome, latency_ms=latency, extra=extra)
                else:
                    verdict = self._strongest(outcome, latency, extra)
                if not isinstance(reading, str) and (reading.language is not None or reading.normalized):
                    verdict = replace(verdict, language=reading.language, normalized=reading.normalized)
                if metadata:
                    verdict = _with_metadata(verdict, metadata)
                part = parts[n] if parts is not None else None
                if part is not None:
                    verdict = replace(verdict, part=part)
                self._telemetry.record(
                    span, verdict, model_id=self._model_id, device=self._device,
                    prompt=prompt, response=response, metadata=metadata, role=role, part=part,
                )  # fmt: skip
            verdicts.append(verdict)
        return verdicts

    def _strongest(self, vectors: list[ValueVector], latency: float, extra: tuple[Violation, ...]) -> Verdict:
        """The verdict of the form that decides: the strongest decision, then the highest risk.

        The answer as read comes first and wins ties; a decoded run alone that decides more is
        marked ``form="decoded"``.
        """
        if len(vectors) < 2:
            return self.engine.decide(vectors[0] if vectors else None, latency_ms=latency, extra=extra)
        verdicts = [self.engine.decide(v, latency_ms=latency, extra=extra) for v in vectors]
        best = max(range(len(verdicts)), key=lambda n: (ACTION_STRENGTH[verdicts[n].intended], verdicts[n].risk, -n))
        return verdicts[best] if best == 0 else replace(verdicts[best], form="decoded")

    @property
    def _model_id(self) -> str:
        return str(getattr(self.scorer, "model_id", type(self.scorer).__name__))

    @property
    def _device(self) -> str:
        return str(getattr(self.scorer, "device", "unknown"))


def _late(limit: float) -> str:
    return f"scoring took longer than timeout_ms={limit * 1000:g}"


_READ_INLINE = 16_000
"""Characters an async check reads on the event loop; a larger batch is read in a worker thread."""


def _to_score(items: list[Item], readings: list[Reading | str]) -> list[Item]:
    """The (prompt, text) pairs the scorer gets: every form of each readable item, in order."""
    return [(prompt, form) for (prompt, _), r in zip(items, readings) if isinstance(r, Reading) for form in r.forms]


Outcome = list[ValueVector] | str
"""What scoring one item gave: a vector per form it was read in (none: nothing left to score), or an error."""


def _outcomes(readings: list[Reading | str], scored: list[ValueVector] | str) -> list[Outcome]:
    """Each item's outcome: its own error, else its forms' vectors, else the error the batch's scoring hit."""
    vectors = iter(scored if isinstance(scored, list) else [])
    outcomes: list[Outcome] = []
    for reading in readings:
        if isinstance(reading, str):
            outcomes.append(reading)
        elif isinstance(scored, str) and reading.forms:
            outcomes.append(scored)
        else:
            outcomes.append([next(vectors) for _ in reading.forms])
    return outcomes


def _failed(exc: Exception) -> Result:
    return Result(False, None, 0, None, f"re-ask failed: {type(exc).__name__}: {exc}")


def _with_metadata(verdict: Verdict, metadata: Mapping[str, Any]) -> Verdict:
    return replace(verdict, metadata=dict(metadata))
