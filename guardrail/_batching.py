"""Cross-request micro-batching: concurrent checks share one forward pass.

A scorer's cost per call is mostly fixed (kernel launches, Python overhead), so many callers
scoring one answer each waste most of it. ``MicroBatcher`` wraps any :class:`Scorer` and is one:
requests from threads (``score``) and tasks (``ascore``) go to one queue; a worker takes the first,
gathers whatever else arrives within ``max_wait_ms`` up to ``max_batch`` items, scores them in one
call (the transformer scorer sorts them by length, so padding stays small) and hands each caller
its own vectors. If the joint call fails, each request is scored alone, so a bad item fails only its
own caller.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import queue
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from opentelemetry.metrics import MeterProvider

from guardrail._telemetry import batch_size_histogram
from guardrail._types import Item, Scorer
from guardrail._values import ValueVector


@dataclass
class _Request:
    items: list[Item]
    future: concurrent.futures.Future[list[ValueVector]] = field(default_factory=concurrent.futures.Future)


class MicroBatcher:
    """A :class:`Scorer` that batches concurrent requests to another scorer.

    Args:
        scorer: The scorer doing the work.
        max_batch: Most items scored in one call (a single larger request still goes whole).
        max_wait_ms: Longest time the first request of a batch waits for company; 0 takes only
            what is already queued, so a lone request is never delayed.
        meter_provider: Provider for the ``guardrail.scorer.batch_size`` histogram of joint calls
            (default: global).

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
    ) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        if max_wait_ms < 0:
            raise ValueError(f"max_wait_ms must be >= 0, got {max_wait_ms}")
        self.scorer = scorer
        self.max_batch = max_batch
        self.max_wait_ms = max_wait_ms
        self.batch_sizes: list[int] = []
        """Items per joint call, most recent last (bounded), for benchmarks and metrics."""
        self._batch_size = batch_size_histogram(meter_provider)
        self._queue: queue.SimpleQueue[_Request | None] = queue.SimpleQueue()
        self._worker: threading.Thread | None = None
        self._start_lock = threading.Lock()

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
        return self._submit(items).result()

    async def ascore(self, items: Sequence[Item]) -> list[ValueVector]:
        """Async twin of :meth:`score`; the event loop is never blocked."""
        return await asyncio.wrap_future(self._submit(items))

    def close(self) -> None:
        """Stop the worker thread (pending requests are still served first)."""
        if self._worker is not None:
            self._queue.put(None)
            self._worker.join()
            self._worker = None

    def _submit(self, items: Sequence[Item]) -> concurrent.futures.Future[list[ValueVector]]:
        request = _Request(list(items))
        if not request.items:
            request.future.set_result([])
            return request.future
        self._ensure_worker()
        self._queue.put(request)
        return request.future

    def _ensure_worker(self) -> None:
        if self._worker is None:
            with self._start_lock:
                if self._worker is None:
                    # A daemon thread: an application that never calls close() can still exit.
                    self._worker = threading.Thread(target=self._run, name="guardrail-batcher", daemon=True)
                    self._worker.start()

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            batch, size, stop = [first], len(first.items), False
            deadline = time.perf_counter() + self.max_wait_ms / 1000
            while size < self.max_batch:
                timeout = deadline - time.perf_counter()
                try:
                    nxt = self._queue.get(timeout=timeout) if timeout > 0 else self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    stop = True
                    break
                batch.append(nxt)
                size += len(nxt.items)
            self._serve(batch)
            if stop:
                return

    def _serve(self, batch: list[_Request]) -> None:
        items = [item for request in batch for item in request.items]
        self.batch_sizes = [*self.batch_sizes[-999:], len(items)]
        self._batch_size.record(len(items))
        try:
            vectors = self.scorer.score(items)
            if len(vectors) != len(items):
                raise RuntimeError(f"scorer returned {len(vectors)} vectors for {len(items)} items")
        except Exception:
            if len(batch) == 1:
                self._fail_or_retry(batch[0])
            else:
                for request in batch:  # find the culprit: each request alone
                    self._fail_or_retry(request)
            return
        start = 0
        for request in batch:
            end = start + len(request.items)
            request.future.set_result(vectors[start:end])
            start = end

    def _fail_or_retry(self, request: _Request) -> None:
        try:
            request.future.set_result(self.scorer.score(request.items))
        except Exception as exc:  # the caller's own failure, raised in the caller
            request.future.set_exception(exc)
