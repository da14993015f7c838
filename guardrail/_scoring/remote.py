"""``RemoteScorer``: a scorer whose forward passes run in a shared scoring service (``guardrail serve``).

Apps that guard calls need not load a model: ``Guard(scorer=RemoteScorer(url))`` (or a policy's
``scorer: {remote: url}``) sends each batch to the service's ``POST /v1/score`` over pooled HTTP
connections (httpx, sync and async twins). Every call has one deadline, ``timeout_ms``, for all
its attempts. Scoring is a pure function of the text, so a request may be repeated safely; it is
repeated, up to ``retries`` times within the deadline, only when a repeat can succeed: the
connection failed or dropped before an answer came (a replica restarting), or the service said
it is overloaded or unavailable (HTTP 502, 503, 504). Anything else, and a spent deadline, is a
:class:`ScorerError`, which the guard's policy decides with its ``on_error`` (fail closed by
default): a service that is down or slow never lets an answer through unchecked.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
import weakref
from collections.abc import Sequence
from typing import Any

from guardrail._exceptions import ScorerError
from guardrail._types import Item
from guardrail._values import ValueVector

TOKEN_ENV = "GUARDRAIL_SERVE_TOKEN"
"""Environment variable holding the bearer token the service requires (and a ``RemoteScorer`` sends)."""

_RETRY_STATUS = frozenset({502, 503, 504})
_BACKOFF_S = 0.02
"""Pause before the first repeat, doubled for each further one (within the deadline)."""


class RemoteScorer:
    """Scores through a scoring service's ``POST /v1/score``; a :class:`Scorer` like any other.

    Args:
        url: The service's base URL (``http://scorer:8000``).
        timeout_ms: Deadline of one call, all attempts included.
        retries: Most repeats of a call after a connection failure or a 502/503/504.
        token: Bearer token to send; default: ``$GUARDRAIL_SERVE_TOKEN`` when set.
        max_connections: Connections kept open to the service per client (one sync, one async).

    Example:
        >>> guard = Guard("default", scorer=RemoteScorer("http://127.0.0.1:8000"))  # doctest: +SKIP
    """

    device = "remote"

    def __init__(
        self,
        url: str,
        *,
        timeout_ms: float = 2000,
        retries: int = 2,
        token: str | None = None,
        max_connections: int = 64,
    ) -> None:
        import httpx

        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise ValueError(f"url must be an http:// or https:// URL, got {url!r}")
        if not timeout_ms > 0:
            raise ValueError(f"timeout_ms must be > 0, got {timeout_ms!r}")
        if not isinstance(retries, int) or retries < 0:
            raise ValueError(f"retries must be an integer >= 0, got {retries!r}")
        self.url = url.rstrip("/")
        self.timeout_ms = timeout_ms
        self.retries = retries
        token = token if token is not None else os.environ.get(TOKEN_ENV)
        self._headers = {"authorization": f"Bearer {token}"} if token else {}
        self._limits = httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections)
        self._httpx = httpx
        self._client = httpx.Client(limits=self._limits, headers=self._headers)
        weakref.finalize(self, self._client.close)  # a scorer dropped unclosed leaves no socket open
        # Calls wait here, not in the connection pool, whose queue costs more the longer it gets.
        self._slots = threading.BoundedSemaphore(max_connections)
        self._max_connections = max_connections
        self._async: tuple[asyncio.AbstractEventLoop, Any, asyncio.Semaphore] | None = None
        self._lock = threading.Lock()
        self.model_id = f"remote:{self.url}"
        """The service's model id once it has answered (recorded on spans); before that ``remote:<url>``."""

    # -- the scorer protocol -------------------------------------------------------------

    def score(self, items: Sequence[Item]) -> list[ValueVector]:
        """Score a batch in the service; one vector per item, in order."""
        if not items:
            return []
        body = _body(items)
        deadline = time.monotonic() + self.timeout_ms / 1000
        for attempt in range(self.retries + 1):
            try:
                if not self._slots.acquire(timeout=self._left(deadline)):
                    raise self._httpx.PoolTimeout("no free connection within the deadline")
                try:
                    response = self._client.post(f"{self.url}/v1/score", json=body, timeout=self._left(deadline))
                finally:
                    self._slots.release()
            except self._httpx.TransportError as exc:
                self._may_repeat(exc, attempt, deadline)
                time.sleep(self._pause(attempt, deadline))
                continue
            if response.status_code in _RETRY_STATUS and attempt < self.retries and self._left(deadline) > 0:
                time.sleep(self._pause(attempt, deadline))
                continue
            return self._vectors(response, len(items))
        raise AssertionError("unreachable: the last attempt returns or raises")  # pragma: no cover

    async def ascore(self, items: Sequence[Item]) -> list[ValueVector]:
        """Async twin of :meth:`score` (its own pooled async client, per event loop)."""
        if not items:
            return []
        client, slots = self._async_client()
        body = _body(items)
        deadline = time.monotonic() + self.timeout_ms / 1000
        for attempt in range(self.retries + 1):
            try:
                try:
                    await asyncio.wait_for(slots.acquire(), self._left(deadline))
                except asyncio.TimeoutError as exc:
                    raise self._httpx.PoolTimeout("no free connection within the deadline") from exc
                try:
                    response = await client.post(f"{self.url}/v1/score", json=body, timeout=self._left(deadline))
                finally:
                    slots.release()
            except self._httpx.TransportError as exc:
                self._may_repeat(exc, attempt, deadline)
                await asyncio.sleep(self._pause(attempt, deadline))
                continue
            if response.status_code in _RETRY_STATUS and attempt < self.retries and self._left(deadline) > 0:
                await asyncio.sleep(self._pause(attempt, deadline))
                continue
            return self._vectors(response, len(items))
        raise AssertionError("unreachable: the last attempt returns or raises")  # pragma: no cover

    def close(self) -> None:
        """Close the pooled sync connections (async code: :meth:`aclose` closes the async ones too)."""
        self._client.close()
        self._async = None  # its sockets close with its event loop

    async def aclose(self) -> None:
        """Close every pooled connection of this scorer."""
        self._client.close()
        held, self._async = self._async, None
        if held is not None and held[0] is asyncio.get_running_loop():
            await held[1].aclose()

    def __enter__(self) -> RemoteScorer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- shared --------------------------------------------------------------------------

    def _async_client(self) -> tuple[Any, asyncio.Semaphore]:
        # An async connection pool belongs to the event loop it was opened on: one client per loop.
        loop = asyncio.get_running_loop()
        with self._lock:
            held = self._async
            if held is None or held[0] is not loop:
                client = self._httpx.AsyncClient(limits=self._limits, headers=self._headers)
                held = self._async = (loop, client, asyncio.Semaphore(self._max_connections))
        return held[1], held[2]

    def _left(self, deadline: float) -> float:
        return max(0.0, deadline - time.monotonic())

    def _pause(self, attempt: int, deadline: float) -> float:
        return min(_BACKOFF_S * 2**attempt, self._left(deadline))

    def _may_repeat(self, exc: Exception, attempt: int, deadline: float) -> None:
        """Raise unless a failed attempt may be repeated: a connection failure, retries and time left."""
        timed_out = isinstance(exc, self._httpx.TimeoutException) and not isinstance(exc, self._httpx.ConnectTimeout)
        if timed_out or self._left(deadline) <= 0:
            raise ScorerError(f"remote scorer {self.url}: no answer within timeout_ms={self.timeout_ms:g}") from exc
        if attempt >= self.retries:
            tries = f"{attempt + 1} attempt" + ("s" if attempt else "")
            raise ScorerError(f"remote scorer {self.url}: {type(exc).__name__}: {exc} ({tries})") from exc

    def _vectors(self, response: Any, count: int) -> list[ValueVector]:
        """The vectors of a service answer, checked, or a ScorerError saying what came back instead."""
        if response.status_code != 200:
            raise ScorerError(f"remote scorer {self.url}: HTTP {response.status_code}: {_reason(response)}")
        try:
            data = response.json()
            vectors = [ValueVector.from_sequence(row) for row in data["vectors"]]
        except (ValueError, KeyError, TypeError) as exc:
            raise ScorerError(f"remote scorer {self.url}: malformed answer: {exc}") from exc
        if len(vectors) != count:
            raise ScorerError(f"remote scorer {self.url}: {len(vectors)} vectors for {count} items")
        if isinstance(data.get("model"), str):
            self.model_id = data["model"]
        return vectors


def _body(items: Sequence[Item]) -> dict[str, Any]:
    for n, (prompt, response) in enumerate(items):
        if not isinstance(response, str) or not (prompt is None or isinstance(prompt, str)):
            raise ScorerError(f"item {n}: expected (prompt or None, response) strings")
    return {"items": [{"prompt": prompt, "response": response} for prompt, response in items]}


def _reason(response: Any) -> str:
    try:
        error = response.json().get("error")
    except ValueError:
        error = None
    return str(error) if error else response.text[:200]
