"""``Guard``: score a response, decide against the policy, record the check. Sync and async twins."""

from __future__ import annotations

import asyncio
import concurrent.futures
import itertools
import logging
import os
import threading
import time
from collections.abc import AsyncIterable, Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import replace
from os import PathLike
from typing import Any, TypeVar

from opentelemetry.metrics import MeterProvider
from opentelemetry.trace import TracerProvider

from guardrail._exceptions import ScorerError, ScoringTimeout
from guardrail._guard.language import LanguageDetector
from guardrail._guard.reading import Reader, Reading
from guardrail._guard.reload import DEFAULT_INTERVAL_S, FileWatch, Revision, fingerprint
from guardrail._guard.rewrite import Result, Strategy, fallback, reask, redact
from guardrail._guard.streaming import AsyncGuardedStream, GuardedStream
from guardrail._outputs import Output, OutputPart
from guardrail._policy.engine import Engine, language_violation
from guardrail._policy.loader import load_policy, policy_files
from guardrail._policy.schema import ACTION_STRENGTH, Policy
from guardrail._resources import policies_dir
from guardrail._scoring.batching import MicroBatcher, in_thread
from guardrail._telemetry.checks import CheckTelemetry, capture_from_env, deployment_of
from guardrail._telemetry.decisionlog import DecisionLog
from guardrail._telemetry.genai import CallSpans, ModelCall, call_spans
from guardrail._types import CheckRole, Item, Scorer
from guardrail._validate import check_metadata, checked_vectors, clean_text
from guardrail._values import ValueVector
from guardrail._verdict import Rewrite, Verdict, Violation

PolicySource = str | PathLike[str] | Policy
C = TypeVar("C")

logger = logging.getLogger("guardrail")

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
        shadow: A candidate policy decided beside this one on the same scores and recorded with each
            verdict (``verdict.shadow``), never applied; default: the policy's ``shadow``.
        decision_log: Where to append one JSON line per decision; default: the policy's
            ``decision_log`` (none when it sets none).
        reload: Watch the policy's files (and the shadow candidate's) and swap in each valid change
            between checks; a change that is not valid keeps the running revision, logs one line and
            counts it. Default: on for a policy read from your own file, off for a shipped name or a
            :class:`Policy` object.
        reload_interval_s: How often watched files are checked (seconds).

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
        shadow: PolicySource | None = None,
        decision_log: DecisionLog | None = None,
        reload: bool | None = None,
        reload_interval_s: float = DEFAULT_INTERVAL_S,
    ) -> None:
        self._source: PolicySource = default_policy() if policy is None else policy
        self._shadow_source = shadow
        self._detector = LanguageDetector()  # one detector for every revision: it loads once
        self._current = self._revision()
        # Decision ids: a random prefix per guard and a counter (a uuid4 per check costs 6 us).
        self._id_prefix, self._ids = f"{os.urandom(8).hex()}-", itertools.count(1)
        self.reload_failures = 0
        """Changes to the policy's files that were not valid and were not swapped in."""
        self._reload_lock = threading.Lock()
        settings = self.policy.scorer
        if scorer is None:
            scorer = own_scorer(self.policy, meter_provider)
        elif settings.batching and not isinstance(scorer, MicroBatcher):
            scorer = _batched(scorer, self.policy, meter_provider)
        self.scorer = scorer
        if capture_content is None:
            capture_content = capture_from_env() if self.policy.capture_content is None else self.policy.capture_content
        self._telemetry = CheckTelemetry(tracer_provider, capture_content, meter_provider)
        log = self.policy.decision_log
        if decision_log is None and log is not None:
            decision_log = DecisionLog(
                log.path, max_bytes=log.max_bytes, backups=log.backups, queue_size=log.queue_size,
                capture_content=capture_content if log.capture_content is None else log.capture_content,
                meter_provider=meter_provider,
            )  # fmt: skip
        self.decision_log = decision_log
        """The sink every decision is appended to, ``None`` without one."""
        watch = self._own_files() if reload is None else reload
        if watch and not self._current.files:
            raise ValueError("reload=True needs a policy read from a file, not a Policy object")
        self._fingerprint = self._current.fingerprint
        self._watch = FileWatch(self, Guard._poll, reload_interval_s) if watch else None

    # -- the policy and its revisions -----------------------------------------------------

    @property
    def policy(self) -> Policy:
        """The policy this guard decides under now (the latest valid revision of its files)."""
        return self._current.policy

    @property
    def engine(self) -> Engine:
        """The compiled rules of :attr:`policy`."""
        return self._current.engine

    @property
    def revision(self) -> str:
        """The revision checks are decided under now: the first 12 hex digits of the policy's content hash."""
        return self._current.hash[:12]

    def reload(self) -> bool:
        """Read the policy's files again now; swap the new revision in when it is valid and differs.

        Checks already running finish under the revision they started with. A change that is not
        valid keeps the running revision: one error line is logged, ``reload_failures`` and the
        ``guardrail.policy.reloads`` counter (``outcome=failed``) count it. Returns whether a new
        revision was swapped in. Scorer settings (``scorer:``) and ``capture_content`` apply at start
        only: a change to them is logged and waits for a restart.
        """
        with self._reload_lock:
            old = self._current
            try:
                new = self._revision()
            except Exception as exc:  # a broken change must never stop the guard: keep deciding under the old
                self.reload_failures += 1
                self._telemetry.count_reload(old.policy.name, "failed")
                logger.error("policy %s: the change is not valid; still deciding under revision %s: %s",
                             _shown(self._source), old.hash[:12], exc)  # fmt: skip
                return False
            self._fingerprint = new.fingerprint
            same_shadow = (old.shadow and old.shadow.policy_hash) == (new.shadow and new.shadow.policy_hash)
            if new.hash == old.hash and same_shadow:
                return False
            if new.policy.scorer != old.policy.scorer or new.policy.capture_content != old.policy.capture_content:
                logger.warning("policy %s: scorer and capture_content changes take effect at the next start",
                               _shown(self._source))  # fmt: skip
            self._current = new  # one assignment: a check sees the old revision or the new, never a mix
            self._telemetry.count_reload(new.policy.name, "applied")
            logger.info("policy %s: now deciding under revision %s (was %s)", _shown(self._source), new.hash[:12],
                        old.hash[:12])  # fmt: skip
            return True

    def _poll(self) -> None:
        now = fingerprint(self._current.files)
        if now != self._fingerprint:
            self._fingerprint = now  # a broken change is tried once, until the files change again
            self.reload()

    def _revision(self) -> Revision:
        """Read the policy (and its shadow candidate) from their sources: one consistent revision."""
        # The files are listed, and their fingerprint taken, before they are read: an edit made while
        # reading changes the fingerprint again, so the next poll reads it.
        files = [] if isinstance(self._source, Policy) else policy_files(self._source)
        taken = fingerprint(files)
        policy = load_policy(self._source)
        candidate = self._shadow_source if self._shadow_source is not None else policy.shadow
        shadow = None
        if candidate is not None:
            more = [] if isinstance(candidate, Policy) else policy_files(candidate)
            files, taken = files + more, taken + fingerprint(more)
            shadow = Engine(load_policy(candidate))
        return Revision(policy, Engine(policy), Reader(policy, self._detector), shadow, tuple(files), taken)

    def _own_files(self) -> bool:
        """Whether the policy comes from files of the user's (shipped policies change only with the package)."""
        try:
            shipped = policies_dir().resolve()
        except FileNotFoundError:
            return bool(self._current.files)
        return any(not path.is_relative_to(shipped) for path in self._current.files)

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
            rev = self._current  # the check and any rewrite decide under one revision
            verdict = self._check_many([response], [prompt], metadata, "answer", [part], rev=rev)[0]
            verdict = self._carry_out(verdict, response, prompt, metadata, reask, rev)
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
            rev = self._current
            verdict = (await self._acheck_many([response], [prompt], metadata, "answer", [part], rev=rev))[0]
            verdict = await self._acarry_out(verdict, response, prompt, metadata, reask, rev)
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
        rev = self._current
        checked = self._check_many([o.text for o in fixed], [prompt] * len(fixed), metadata, "answer",
                                   [o.part for o in fixed], rev=rev) if fixed else []  # fmt: skip
        settled = iter([self._settle(v, o, rev) for v, o in zip(checked, fixed)])
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
            rev = self._current
            checked = await self._acheck_many([o.text for o in fixed], [prompt] * len(fixed), metadata, "answer",
                                              [o.part for o in fixed], rev=rev)  # fmt: skip
            return [self._settle(v, o, rev) for v, o in zip(checked, fixed)]

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
        rev = self._current
        policy = (rev.policy.name, rev.policy.version, rev.hash)
        return call_spans(self._telemetry, call, integration=integration, policy=policy, metadata=metadata,
                          streamed=streamed)  # fmt: skip

    # -- twins behind the public ones ----------------------------------------------------

    def _check_many(
        self, responses: Sequence[str], prompts: Sequence[str | None] | None,
        metadata: Mapping[str, Any] | None, role: CheckRole,
        parts: Sequence[OutputPart | None] | None = None, timeout_ms: float | None = None,
        *, rev: Revision | None = None,
    ) -> list[Verdict]:  # fmt: skip
        rev = rev or self._current  # taken once: a reload meanwhile never mixes revisions within a verdict
        items, oversize = self._prepare(rev, responses, prompts, metadata, parts, timeout_ms)
        start = (time.perf_counter(), time.time_ns())
        readings = self._read(rev, items, oversize)
        todo = _to_score(items, readings)
        self._count_batch(todo)
        try:
            scored: list[ValueVector] | str = self._score(todo, self._limit(rev, timeout_ms))
        except Exception as exc:  # a scorer failure is the policy's on_error to decide, never raised
            scored = self._describe(exc)
        return self._finish(rev, items, readings, _outcomes(readings, scored), start, metadata, role, parts)

    async def _acheck_many(
        self, responses: Sequence[str], prompts: Sequence[str | None] | None,
        metadata: Mapping[str, Any] | None, role: CheckRole,
        parts: Sequence[OutputPart | None] | None = None, timeout_ms: float | None = None,
        *, rev: Revision | None = None,
    ) -> list[Verdict]:  # fmt: skip
        rev = rev or self._current
        items, oversize = self._prepare(rev, responses, prompts, metadata, parts, timeout_ms)
        start = (time.perf_counter(), time.time_ns())
        if sum(len(response) for _, response in items) > _READ_INLINE:
            # A huge answer is read off the event loop, so it holds up no other caller's check.
            readings = await asyncio.to_thread(self._read, rev, items, oversize)
        else:
            readings = self._read(rev, items, oversize)
        todo = _to_score(items, readings)
        self._count_batch(todo)
        try:
            scored: list[ValueVector] | str = await self._ascore(todo, self._limit(rev, timeout_ms))
        except Exception as exc:  # a scorer failure is the policy's on_error to decide, never raised
            scored = self._describe(exc)
        return self._finish(rev, items, readings, _outcomes(readings, scored), start, metadata, role, parts)

    def _carry_out(
        self, verdict: Verdict, response: str, prompt: str | None,
        metadata: Mapping[str, Any] | None, reask: Reask | None, rev: Revision,
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
                    return self._rewritten(verdict, response, stop.value, rev)
                try:
                    if request[0] == "check":
                        reply = self._check_many(request[1], [prompt] * len(request[1]), metadata, request[2],
                                                 rev=rev)  # fmt: skip
                    else:
                        assert reask is not None
                        attempt += 1
                        with self._telemetry.reask_span(attempt):
                            reply = reask(request[1], request[2])
                            _check_text("reask() result", reply)
                except Exception as exc:  # a failing re-ask must not lose the answer's fate: fall back
                    return fallback(rev.policy, verdict, response, _failed(exc))

    async def _acarry_out(
        self, verdict: Verdict, response: str, prompt: str | None,
        metadata: Mapping[str, Any] | None, reask: AsyncReask | None, rev: Revision,
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
                    return self._rewritten(verdict, response, stop.value, rev)
                try:
                    if request[0] == "check":
                        reply = await self._acheck_many(request[1], [prompt] * len(request[1]), metadata,
                                                        request[2], rev=rev)  # fmt: skip
                    else:
                        assert reask is not None
                        attempt += 1
                        with self._telemetry.reask_span(attempt):
                            reply = await reask(request[1], request[2])
                            _check_text("reask() result", reply)
                except Exception as exc:  # a failing re-ask must not lose the answer's fate: fall back
                    return fallback(rev.policy, verdict, response, _failed(exc))

    # -- shared, I/O-free ---------------------------------------------------------------

    def _strategy(self, verdict: Verdict, response: str, *, can_ask: bool) -> Strategy | None:
        if verdict.decision != "rewrite" or verdict.action is None:
            return None
        if verdict.action.strategy == "redact":
            return redact(response, verdict.action)
        return reask(response, verdict, verdict.action, can_ask)

    def _settle(self, verdict: Verdict, output: Output, rev: Revision) -> Verdict:
        """Carry out the decision on a part that cannot be rewritten: a rewrite applies its fallback."""
        if verdict.decision != "rewrite" or verdict.action is None:
            return self._deliver(verdict, output.text)
        what = "reasoning trace" if output.part.kind == "reasoning" else output.part.kind.replace("_", " ")
        return fallback(
            rev.policy,
            verdict,
            output.text,
            Result(False, None, 0, None, f"a {what} cannot be rewritten; its fallback applies"),
        )

    @staticmethod
    def _deliver(verdict: Verdict, response: str) -> Verdict:
        return replace(verdict, output=verdict.message if verdict.decision == "block" else response)

    def _rewritten(self, verdict: Verdict, response: str, result: Result, rev: Revision) -> Verdict:
        if not result.accepted:
            return fallback(rev.policy, verdict, response, result)
        assert verdict.action is not None and verdict.action.strategy is not None
        record = Rewrite(verdict.action.strategy, result.attempts, True, "rewrite", None, result.reason)
        return replace(verdict, output=result.text, rewrite=record)

    def _prepare(
        self, rev: Revision, responses: Sequence[str], prompts: Sequence[str | None] | None, metadata: object,
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
            item, error = self._sized(rev.policy, p, r)
            items.append(item)
            oversize.append(error)
        return items, oversize

    @staticmethod
    def _sized(policy: Policy, prompt: str | None, response: str) -> tuple[Item, str | None]:
        """The item the scorer sees: at most ``max_chars`` of each text, lone surrogates replaced."""
        limit = policy.max_chars
        error = None
        if prompt is not None and len(prompt) > limit:
            prompt = prompt[:limit]  # the scorer reads only a prompt's start
        if len(response) > limit:
            if policy.oversize == "error":
                error = f"too long: the answer has {len(response):,} characters, more than max_chars={limit:,}"
            else:
                # Never the whole text: tokenising and scoring cost at most max_chars characters.
                response = response[: limit // 2] + "\n" + response[len(response) - limit // 2 :]
        return (None if prompt is None else clean_text(prompt), clean_text(response)), error

    def _read(self, rev: Revision, items: list[Item], oversize: list[str | None]) -> list[Reading | str]:
        """Each item's reading, or the error that stops it (its size, a failed language detection)."""
        readings: list[Reading | str] = []
        for (_, response), error in zip(items, oversize):
            if error is not None:
                readings.append(error)
                continue
            try:
                readings.append(rev.reader.read(response))
            except Exception as exc:  # like a scorer failure: the policy's on_error decides
                readings.append(self._describe(exc))
        return readings

    @staticmethod
    def _limit(rev: Revision, timeout_ms: float | None) -> float:
        return (rev.policy.timeout_ms if timeout_ms is None else timeout_ms) / 1000

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
        rev: Revision,
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
        violation decides). The shadow candidate, when there is one, decides on the same outcome."""
        # A batch shares one forward pass, so each verdict reports its share of the batch time.
        latency = (time.perf_counter() - start[0]) * 1000 / max(len(items), 1)
        log = self.decision_log
        deployment = deployment_of(metadata) if log is not None else None
        verdicts = []
        for n, (prompt, response) in enumerate(items):
            with self._telemetry.span(start_time=start[1]) as span:
                outcome, reading = outcomes[n], readings[n]
                extra = () if isinstance(reading, str) or reading.violation is None else (reading.violation,)
                fields: dict[str, Any] = {"decision_id": f"{self._id_prefix}{next(self._ids):x}"}
                if rev.shadow is not None:
                    fields["shadow"] = _decided(rev.shadow, outcome, latency, _as_candidate(rev.shadow, extra))
                if not isinstance(reading, str) and (reading.language is not None or reading.normalized):
                    fields |= {"language": reading.language, "normalized": reading.normalized}
                if metadata:
                    fields["metadata"] = dict(metadata)
                part = parts[n] if parts is not None else None
                if part is not None:
                    fields["part"] = part
                verdict = _decided(rev.engine, outcome, latency, extra, fields)  # built once, never copied
                self._telemetry.record(
                    span, verdict, model_id=self._model_id, device=self._device,
                    prompt=prompt, response=response, metadata=metadata, role=role, part=part,
                )  # fmt: skip
            if log is not None:
                log.record(verdict, deployment=deployment, prompt=prompt, response=response)
            verdicts.append(verdict)
        return verdicts

    @property
    def _model_id(self) -> str:
        return str(getattr(self.scorer, "model_id", type(self.scorer).__name__))

    @property
    def _device(self) -> str:
        return str(getattr(self.scorer, "device", "unknown"))


def own_scorer(policy: Policy, meter_provider: MeterProvider | None = None) -> Scorer:
    """The scorer a ``Guard`` builds for ``policy`` when none is passed in, as its ``scorer:`` block says.

    A remote scoring service, or the shipped model on the policy's runtime; micro-batched unless
    ``batching: false``.
    """
    settings = policy.scorer
    scorer: Scorer
    background: Scorer | None = None
    if settings.remote is not None:
        from guardrail._scoring.remote import RemoteScorer

        remote = settings.remote
        scorer = RemoteScorer(
            remote.url, timeout_ms=remote.timeout_ms or policy.timeout_ms, retries=remote.retries,
            token=os.environ.get(remote.token_env),
        )  # fmt: skip
    else:
        from guardrail._scoring.scorer import TransformerScorer

        transformer = TransformerScorer(runtime=settings.runtime)
        scorer, background = transformer, transformer.background()
    return scorer if settings.batching is False else _batched(scorer, policy, meter_provider, background)


def _batched(
    scorer: Scorer, policy: Policy, meter_provider: MeterProvider | None, background: Scorer | None = None
) -> MicroBatcher:
    """``scorer`` behind a micro-batcher with the policy's ``scorer:`` settings."""
    settings = policy.scorer
    return MicroBatcher(
        scorer, max_batch=settings.max_batch, max_wait_ms=settings.max_wait_ms, meter_provider=meter_provider,
        background=background,
    )  # fmt: skip


def _shown(source: PolicySource) -> str:
    return source.name if isinstance(source, Policy) else os.fspath(source)


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


def _decided(
    engine: Engine, outcome: Outcome, latency: float, extra: tuple[Violation, ...],
    fields: dict[str, Any] | None = None,
) -> Verdict:  # fmt: skip
    """``engine``'s verdict on one item's outcome: its error, or the verdict of the form that decides.

    The form that decides has the strongest decision, then the highest risk. The answer as read
    comes first and wins ties; a decoded run alone that decides more is marked ``form="decoded"``.
    ``fields``: further verdict fields (see :meth:`Engine.decide`).
    """
    if isinstance(outcome, str):
        return engine.fail(outcome, latency_ms=latency, extra=extra, fields=fields)
    if len(outcome) < 2:
        return engine.decide(outcome[0] if outcome else None, latency_ms=latency, extra=extra, fields=fields)
    verdicts = [engine.decide(v, latency_ms=latency, extra=extra) for v in outcome]
    best = max(range(len(verdicts)), key=lambda n: (ACTION_STRENGTH[verdicts[n].intended], verdicts[n].risk, -n))
    return replace(verdicts[best], **(fields or {}), **({"form": "decoded"} if best else {}))


def _as_candidate(engine: Engine, extra: tuple[Violation, ...]) -> tuple[Violation, ...]:
    """The language violation as the shadow candidate's own rule judges the same unread text.

    A candidate that scores every language has no such rule; the text was not scored either way,
    since both decide on the enforced policy's reading (one forward pass).
    """
    judged = (language_violation(engine.policy.languages, v.margin, v.message) for v in extra)
    return tuple(v for v in judged if v is not None)


def _failed(exc: Exception) -> Result:
    return Result(False, None, 0, None, f"re-ask failed: {type(exc).__name__}: {exc}")
