"""Cross-request micro-batching: concurrent checks share one forward pass.

A scorer's cost per call is mostly fixed (kernel launches, Python overhead), so many callers
scoring one answer each waste most of it. ``MicroBatcher`` wraps any :class:`Scorer` and is one:
requests from threads (``score``) and tasks (``ascore``) go to one queue; a worker takes the first,
gathers whatever else arrives within ``max_wait_ms`` up to ``max_batch`` items, scores them in one
call (the transformer scorer sorts them by length, so padding stays small) and hands each caller
its own vectors. If the joint call fails, each request is scored alone, so a bad item fails only its
own caller.

Callers may give up at any time: a request whose future was cancelled before its turn is skipped
(``Future.set_running_or_notify_cancel``), and one that finished meanwhile is never set twice, so
a caller that cancels or times out loses its own item and nothing else. The worker survives any
exception from any scorer call, and is started again should it ever die.

Large requests (answers of more than ``large_chars`` characters in all) go to a second lane when a ``background``
scorer is given: its own worker thread at the lowest OS priority, so a 64k-character answer is
scored on whatever CPU the small checks leave, and never sits in front of them in the queue.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import os
import queue
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

from opentelemetry.metrics import Histogram, MeterProvider

from guardrail._exceptions import ScorerError
from guardrail._telemetry.checks import batch_size_histogram
from guardrail._types import Item, Scorer
from guardrail._validate import checked_vectors
from guardrail._values import ValueVector

logger = logging.getLogger(__name__)

_T = TypeVar("_T")

LARGE_CHARS = 4000
"""Requests with more characters than this (about four model windows) take the background lane."""


@dataclass
class _Request:
    items: list[Item]
    future: concurrent.futures.Future[list[ValueVector]] = field(default_factory=concurrent.futures.Future)


def _settle(
    future: concurrent.futures.Future[_T], result: _T | None = None, error: BaseException | None = None
) -> None:
    """Hand a result to a caller who may have gone: a finished or cancelled future is left alone."""
    if future.done():
        return
    with contextlib.suppress(concurrent.futures.InvalidStateError):  # settled between the check and now
        if error is not None:
            future.set_exception(error if isinstance(error, Exception) else ScorerError(_name(error)))
        else:
            future.set_result(result)  # type: ignore[arg-type]


def _name(error: BaseException) -> str:
    return f"the scorer raised {type(error).__name__}: {error}"


def in_thread(fn: Callable[..., _T], *args: object) -> concurrent.futures.Future[_T]:
    """Run ``fn(*args)`` on a new daemon thread; its future holds the result or the exception.

    A caller that stops waiting (a timeout) leaves the thread behind and nothing else: a thread per
    call, unlike a bounded pool, cannot be used up by calls that hang.
    """
    future: concurrent.futures.Future[_T] = concurrent.futures.Future()
    future.set_running_or_notify_cancel()

    def run() -> None:
        try:
            result = fn(*args)
        except BaseException as exc:  # whatever it raised is the caller's to see, never this thread's
            _settle(future, error=exc)
        else:
            _settle(future, result)

    threading.Thread(target=run, name="guardrail-score", daemon=True).start()
    return future


def lower_priority() -> None:
    """Lower the calling thread to the lowest OS scheduling priority (Linux; elsewhere a no-op).

    On Linux a thread is its own scheduling entity, so this slows only the work of this thread and
    of the threads it starts afterwards; the process and its other threads keep their priority.
    """
    setpriority = getattr(os, "setpriority", None)
    if setpriority is None or not hasattr(threading, "get_native_id"):
        return
    try:
        setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)
    except OSError as exc:  # a sandbox may forbid it: the lane still works, only unprioritised
        logger.warning("cannot lower the background lane's priority: %s", exc)


class _Lane:
    """One queue and the worker thread that serves it."""

    def __init__(self, name: str, scorer: Scorer, max_batch: int, max_wait_ms: float, low: bool,
                 record: Callable[[int], None]) -> None:  # fmt: skip
        self.name, self.scorer, self.max_batch, self.max_wait_ms, self.low = name, scorer, max_batch, max_wait_ms, low
        self.record = record
        self.queue: queue.SimpleQueue[_Request | None] = queue.SimpleQueue()
        self.worker: threading.Thread | None = None
        self._start_lock = threading.Lock()
        self.current: _Request | None = None
        self.exiting = False
        self.idle = threading.Event()
        self.idle.set()
        # At exit, wait (briefly) for a forward pass in flight: a native runtime torn down under a
        # running daemon thread aborts the process.
        weakref.finalize(self, _Lane._drain, self.idle, self._exiting)

    def _exiting(self) -> None:
        self.exiting = True

    @staticmethod
    def _drain(idle: threading.Event, exiting: Callable[[], None]) -> None:
        exiting()
        idle.wait(5.0)

    def abandoned(self) -> bool:
        """Whether the request being served is no longer wanted (its caller gave up, or the process exits)."""
        current = self.current
        return self.exiting or (current is not None and current.future.cancelled())

    def put(self, request: _Request) -> None:
        self._ensure_worker()
        self.queue.put(request)

    def close(self) -> None:
        if self.worker is not None:
            self.queue.put(None)
            self.worker.join()
            self.worker = None

    def _ensure_worker(self) -> None:
        worker = self.worker
        if worker is not None and worker.is_alive():
            return
        with self._start_lock:
            if self.worker is not None and self.worker.is_alive():
                return
            if self.worker is not None:
                logger.error("the %s worker of the micro-batcher died; starting a new one", self.name)
            # A daemon thread: an application that never calls close() can still exit.
            self.worker = threading.Thread(target=self._run, name=f"guardrail-{self.name}", daemon=True)
            self.worker.start()

    def _run(self) -> None:
        if self.low:
            lower_priority()
        while True:
            first = self.queue.get()
            if first is None:
                return
            batch, stop = self._gather(first)
            self.idle.clear()
            try:
                if self.low:
                    self._serve_slow(batch[0])  # max_batch 1: one large request at a time
                else:
                    self._serve(batch)
            except BaseException as exc:  # the worker outlives every batch: the batch's callers get the error
                logger.exception("micro-batcher: a batch failed outside the scorer")
                for request in batch:
                    _settle(request.future, error=exc)
            finally:
                self.current = None
                self.idle.set()
            if stop:
                return

    def _gather(self, first: _Request) -> tuple[list[_Request], bool]:
        batch, size = [first], len(first.items)
        deadline = time.perf_counter() + self.max_wait_ms / 1000
        while size < self.max_batch:
            timeout = deadline - time.perf_counter()
            try:
                nxt = self.queue.get(timeout=timeout) if timeout > 0 else self.queue.get_nowait()
            except queue.Empty:
                break
            if nxt is None:
                return batch, True
            batch.append(nxt)
            size += len(nxt.items)
        return batch, False

    def _serve(self, batch: list[_Request]) -> None:
        # From here on a caller can no longer cancel: those who already did are dropped.
        live = [request for request in batch if request.future.set_running_or_notify_cancel()]
        if not live:
            return
        items = [item for request in live for item in request.items]
        self.record(len(items))
        try:
            vectors = checked_vectors(self.scorer.score(items), len(items))
        except BaseException:
            for request in live:  # find the culprit: each request alone
                self._alone(request)
            return
        start = 0
        for request in live:
            end = start + len(request.items)
            _settle(request.future, vectors[start:end])
            start = end

    def _serve_slow(self, request: _Request) -> None:
        # The future stays pending while a large request is scored, so a caller who gives up can still
        # cancel it; the scorer asks abandoned() between forward passes and stops early.
        if request.future.cancelled():
            return
        self.current = request
        self.record(len(request.items))
        try:
            vectors: list[ValueVector] | None = checked_vectors(self.scorer.score(request.items), len(request.items))
            error: BaseException | None = None
        except BaseException as exc:
            vectors, error = None, exc
        if request.future.set_running_or_notify_cancel():
            _settle(request.future, vectors, error)

    def _alone(self, request: _Request) -> None:
        try:
            _settle(request.future, checked_vectors(self.scorer.score(request.items), len(request.items)))
        except BaseException as exc:  # the caller's own failure, raised in the caller
            _settle(request.future, error=exc)


class MicroBatcher:
    """A :class:`Scorer` that batches concurrent requests to another scorer.

    Args:
        scorer: The scorer doing the work.
        max_batch: Most items scored in one call (a single larger request still goes whole).
        max_wait_ms: Longest time the first request of a batch waits for company; 0 takes only
            what is already queued, so a lone request is never delayed.
        meter_provider: Provider for the ``guardrail.scorer.batch_size`` histogram of joint calls
            (default: global).
        background: A scorer for large requests, served one at a time by a worker at the lowest
            OS priority (``TransformerScorer.background()``); ``None``: one lane for all.
        large_chars: Requests with more characters than this take the background lane.

    Example:
        >>> batcher = MicroBatcher(TransformerScorer(), max_batch=64, max_wait_ms=2)  # doctest: +SKIP
        >>> guard = Guard(scorer=batcher)  # doctest: +SKIP
    """

    def __init__(
        self,
        scorer: Scorer,
        *,
        max_batch: int = 64,
        max_wait_ms: float = 2.0,
        meter_provider: MeterProvider | None = None,
        background: Scorer | None = None,
        large_chars: int = LARGE_CHARS,
    ) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        if max_wait_ms < 0:
            raise ValueError(f"max_wait_ms must be >= 0, got {max_wait_ms}")
        if large_chars < 1:
            raise ValueError(f"large_chars must be >= 1, got {large_chars}")
        self.scorer = scorer
        self.max_batch = max_batch
        self.max_wait_ms = max_wait_ms
        self.large_chars = large_chars
        self.batch_sizes: list[int] = []
        """Items per joint call, most recent last (bounded), for benchmarks and metrics."""
        self._batch_size: Histogram = batch_size_histogram(meter_provider)
        self._lane = _Lane("batcher", scorer, max_batch, max_wait_ms, False, self._record)
        self._background = None if background is None else _Lane("background", background, 1, 0.0, True, self._record)
        if self._background is not None and hasattr(background, "stop_when"):
            background.stop_when = self._background.abandoned  # type: ignore[union-attr]

    @property
    def model_id(self) -> str:
        """The wrapped scorer's model id."""
        return self.scorer.model_id

    @property
    def device(self) -> str:
        """The wrapped scorer's device."""
        return self.scorer.device

    def score(self, items: Sequence[Item]) -> list[ValueVector]:
        """Score ``items`` together with whatever other callers send meanwhile."""
        return self.submit(items).result()

    async def ascore(self, items: Sequence[Item]) -> list[ValueVector]:
        """Async twin of :meth:`score`; the event loop is never blocked, and cancelling gives up the request."""
        return await asyncio.wrap_future(self.submit(items))

    def submit(self, items: Sequence[Item]) -> concurrent.futures.Future[list[ValueVector]]:
        """Queue ``items``; the future holds their vectors. Cancel it to give the request up."""
        request = _Request(list(items))
        if not request.items:
            request.future.set_result([])
            return request.future
        large = sum(len(response) for _, response in request.items) > self.large_chars
        lane = self._background if large and self._background is not None else self._lane
        lane.put(request)
        return request.future

    def close(self) -> None:
        """Stop the worker threads (pending requests are still served first)."""
        self._lane.close()
        if self._background is not None:
            self._background.close()

    def _record(self, size: int) -> None:
        self.batch_sizes = [*self.batch_sizes[-999:], size]
        self._batch_size.record(size)
