"""The decision log: one JSON line per decision, appended to a file by a background thread (like OPA's).

A line holds what an auditor needs to question a decision without the traces: its id and time, the
deployment, the policy and its revision, the decision and why (violations with their margins, the ten
scores), the SHA-256 of the answer (its text only with content capture on) and, when a shadow
candidate runs, what it would have decided. The file is rotated by size as
``logging.handlers.RotatingFileHandler`` does (PATH -> PATH.1 -> ... -> PATH.N, the oldest deleted),
between lines, never inside one.

The caller never waits on the disk: :meth:`DecisionLog.record` puts the verdict on a bounded queue
and returns; one daemon thread turns queued verdicts into lines and writes them, many per system call.
A line that cannot be queued (the disk is slower than the traffic), written (disk full, no permission)
or that comes after :meth:`DecisionLog.close` is dropped and counted: in :attr:`DecisionLog.dropped`
and in the ``guardrail.decision_log.dropped`` counter (attribute ``reason``: ``queue_full``,
``write_error``, ``closed``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import queue
import threading
import time
import uuid
import weakref
from collections.abc import Callable
from contextlib import suppress
from types import TracebackType
from typing import Any, Literal, NamedTuple, get_args

from opentelemetry import metrics
from opentelemetry.metrics import MeterProvider

from guardrail._verdict import Verdict
from guardrail._version import __version__

DROPPED = "guardrail.decision_log.dropped"
DropReason = Literal["queue_full", "write_error", "closed"]
EXIT_TIMEOUT_S = 2.0
"""Seconds the interpreter's exit waits for queued lines to be written (a stuck disk cannot hold it longer)."""

BATCH_LINES = 1024
"""Lines the writer takes off the queue, serialises and writes with one system call, at most."""
_OPEN_FLAGS = os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_BINARY", 0)

logger = logging.getLogger("guardrail")


def new_decision_id() -> str:
    """A new unique decision id: a random UUID (version 4) as text, as OPA's ``decision_id``."""
    return str(uuid.uuid4())


class _Entry(NamedTuple):
    """What ``record`` queues: the caller's part of a line, turned into JSON on the writer thread."""

    verdict: Verdict
    time_ns: int
    deployment: str | None
    prompt: str | None
    response: str


class _Marker:
    """A flush or close request, answered once every line queued before it was written or dropped."""

    __slots__ = ("done", "failures", "ok", "stop")

    def __init__(self, failures: int, *, stop: bool) -> None:
        self.done = threading.Event()
        self.failures = failures  # the writer's write-error drops when it was asked
        self.ok = False
        self.stop = stop


class _Drops:
    """The count of dropped lines, in total and in the OpenTelemetry counter by reason."""

    def __init__(self, meter_provider: MeterProvider | None) -> None:
        meter = metrics.get_meter("value-guardrail", __version__, meter_provider=meter_provider)
        self._counter = meter.create_counter(
            DROPPED, unit="{line}", description="Decision-log lines dropped (reason: queue_full, write_error, closed)."
        )
        self._attrs = {reason: {"reason": reason} for reason in get_args(DropReason)}
        self._lock = threading.Lock()  # callers' threads and the writer's count at once
        self.total = 0

    def add(self, lines: int, reason: DropReason) -> None:
        with self._lock:
            self.total += lines
        self._counter.add(lines, self._attrs[reason])


def line_of(
    verdict: Verdict,
    *,
    time_ns: int,
    deployment: str | None = None,
    prompt: str | None = None,
    response: str = "",
    capture_content: bool = False,
) -> dict[str, Any]:
    """The decision-log line of ``verdict`` as a JSON-ready mapping (the fields are described in docs/audit.md).

    Args:
        verdict: The decision.
        time_ns: When it was recorded, in nanoseconds since the epoch (``time.time_ns()``).
        deployment: The deployment (or tenant) the answer was checked for.
        prompt: The prompt, written only with ``capture_content``.
        response: The answer as checked: always hashed, written only with ``capture_content``.
        capture_content: Write the prompt and answer text.
    """
    line: dict[str, Any] = {
        "decision_id": verdict.decision_id or new_decision_id(),
        "time": _rfc3339(time_ns),
        "deployment": deployment,
        "policy": _policy(verdict),
        "decision": verdict.decision,
        "intended": verdict.intended,
        "action": verdict.action_name,
        "violations": [
            {"rule": v.rule, "margin": v.margin, "action": v.action, "severity": v.severity} for v in verdict.violations
        ],
        "scores": None if verdict.scores is None else verdict.scores.to_dict(),
        "latency_ms": round(verdict.latency_ms, 3),
        "error": verdict.error,
        "language": verdict.language,
        # surrogatepass: a lone surrogate (a cut emoji) still hashes, the same way every time.
        "answer_sha256": hashlib.sha256(response.encode("utf-8", "surrogatepass")).hexdigest(),
    }
    if capture_content:
        line["prompt"] = prompt
        line["response"] = response
    if verdict.shadow is not None:
        shadow = verdict.shadow
        line["shadow"] = {
            "policy": _policy(shadow),
            "decision": shadow.intended,
            "agrees": verdict.agrees,
            "violations": [v.rule for v in shadow.violations],
        }
    return line


def _policy(verdict: Verdict) -> dict[str, str]:
    return {"name": verdict.policy_name, "version": verdict.policy_version, "revision": verdict.policy_hash}


def _rfc3339(time_ns: int) -> str:
    seconds, nanos = divmod(time_ns, 1_000_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{nanos // 1000:06d}Z"


def _encode_json(line: dict[str, Any]) -> bytes:
    text = json.dumps(line, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    # A lone surrogate can only sit inside a JSON string, where backslashreplace writes it as the
    # JSON escape \udXXX: the line stays valid UTF-8 and valid JSON.
    return (text + "\n").encode("utf-8", "backslashreplace")


def _encoder() -> Callable[[dict[str, Any]], bytes]:
    """orjson when it is installed (a tenth of json's cost, on the writer's share of the GIL), else json."""
    try:
        import orjson
    except ImportError:
        return _encode_json

    def encode(line: dict[str, Any]) -> bytes:
        try:
            return orjson.dumps(line) + b"\n"
        except TypeError:  # orjson refuses lone surrogates (JSONEncodeError is a TypeError): json escapes them
            return _encode_json(line)

    return encode


_encode = _encoder()


class _Writer:
    """The writer thread's side: the queue, the open file, rotation, and the account of failures."""

    def __init__(
        self, path: str, *, max_bytes: int, backups: int, queue_size: int, capture_content: bool, drops: _Drops
    ) -> None:
        self.path = path
        self.queue: queue.Queue[_Entry | _Marker] = queue.Queue(queue_size)
        self.closed = False
        self.failures = 0  # lines dropped for write errors; read by flush requests
        self._max_bytes = max_bytes
        self._backups = backups
        self._capture = capture_content
        self._drops = drops
        self._fd: int | None = None
        self._size = 0
        self._burst = 0  # lines dropped since the last successful write; > 0 while failing
        self._close_lock = threading.Lock()
        self.thread = threading.Thread(target=self._run, name="guardrail-decision-log", daemon=True)

    # -- requests from other threads ---------------------------------------------------------

    def request(self, timeout: float | None, *, stop: bool) -> _Marker | None:
        """Queue a flush (or stop) marker, waiting up to ``timeout`` for room; ``None`` when none came."""
        marker = _Marker(self.failures, stop=stop)
        try:
            self.queue.put(marker, timeout=timeout)
        except queue.Full:
            return None
        return marker

    def close(self, timeout: float | None) -> None:
        """Stop taking lines, write what is queued (waiting up to ``timeout``), close the file."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._close_lock:
            first, self.closed = not self.closed, True
        if first:
            self.request(timeout, stop=True)
        self.thread.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
        if not self.thread.is_alive():
            self._discard()

    def _discard(self) -> None:
        # What a caller queued between the closed check and the stop marker is past the end of the log.
        while True:
            try:
                item = self.queue.get_nowait()
            except queue.Empty:
                return
            if isinstance(item, _Marker):
                item.done.set()
            else:
                self._drops.add(1, "closed")

    # -- the thread --------------------------------------------------------------------------

    def _run(self) -> None:
        stopped = False
        while not stopped:
            batch = [self.queue.get()]
            while len(batch) < BATCH_LINES:
                try:
                    batch.append(self.queue.get_nowait())
                except queue.Empty:
                    break
            stopped = self._handle(batch)
        self._close_file()

    def _handle(self, batch: list[_Entry | _Marker]) -> bool:
        """Write a batch's lines in order, answering its markers on the way; True at a stop marker."""
        lines: list[bytes] = []
        for i, item in enumerate(batch):
            if isinstance(item, _Marker):
                self._write(lines)
                lines = []
                item.ok = self.failures == item.failures
                item.done.set()
                if item.stop:
                    self._after_stop(batch[i + 1 :])
                    return True
                continue
            try:
                lines.append(_encode(line_of(item.verdict, time_ns=item.time_ns, deployment=item.deployment,
                                             prompt=item.prompt, response=item.response,
                                             capture_content=self._capture)))  # fmt: skip
            except Exception as exc:  # the telemetry boundary: one line that cannot be serialised must not stop the log
                self._fail(1, exc, reopen=False)
        self._write(lines)
        return False

    def _after_stop(self, rest: list[_Entry | _Marker]) -> None:
        for item in rest:
            if isinstance(item, _Marker):
                item.done.set()
            else:
                self._drops.add(1, "closed")

    def _write(self, lines: list[bytes]) -> None:
        """Append ``lines``, rotating between them; on an error the rest of them is dropped (later lines retry)."""
        i = 0
        while i < len(lines):
            try:
                fd = self._open()
                n = self._fitting(lines, i)
                if n == 0:
                    self._rotate()
                    continue
                self._append(fd, b"".join(lines[i : i + n]))
            except OSError as exc:
                self._fail(len(lines) - i, exc)
                return
            i += n
            if self._burst:
                logger.info("decision log %s: writing again after %d dropped lines", self.path, self._burst)
                self._burst = 0

    def _fitting(self, lines: list[bytes], start: int) -> int:
        """How many lines from ``start`` fit in the current file (a line larger than a file gets one alone)."""
        room = self._max_bytes - self._size
        end = start
        while end < len(lines) and len(lines[end]) <= room:
            room -= len(lines[end])
            end += 1
        if end == start and self._size == 0:
            return 1
        return end - start

    def _open(self) -> int:
        if self._fd is None:
            parent = os.path.dirname(self.path)
            if parent:
                os.makedirs(parent, exist_ok=True)
            # A FIFO nobody reads blocks here, on this thread: only the queue fills meanwhile.
            self._fd = os.open(self.path, _OPEN_FLAGS, 0o666)
            self._size = os.fstat(self._fd).st_size
        return self._fd

    def _append(self, fd: int, data: bytes) -> None:
        before = self._size
        view = memoryview(data)
        try:
            while view:
                view = view[os.write(fd, view) :]
        except OSError:
            # Cut off a partly written batch, so the file keeps whole lines (not possible on a device).
            with suppress(OSError):
                os.ftruncate(fd, before)
            raise
        self._size += len(data)

    def _rotate(self) -> None:
        self._close_file()
        if self._backups == 0:
            with suppress(FileNotFoundError):
                os.remove(self.path)
            return
        for n in range(self._backups - 1, 0, -1):
            source = f"{self.path}.{n}"
            if os.path.lexists(source):
                os.replace(source, f"{self.path}.{n + 1}")  # replaces (deletes) the oldest
        with suppress(FileNotFoundError):
            os.replace(self.path, f"{self.path}.1")

    def _fail(self, lines: int, exc: Exception, *, reopen: bool = True) -> None:
        if reopen:
            self._close_file()  # reopened for the next lines: a path freed or fixed meanwhile is picked up
        self.failures += lines
        self._drops.add(lines, "write_error")
        if not self._burst:
            logger.warning(
                "decision log %s: cannot write (%s); dropping lines (counted in %s) until writing works again",
                self.path, exc, DROPPED,
            )  # fmt: skip
        self._burst += lines

    def _close_file(self) -> None:
        if self._fd is not None:
            with suppress(OSError):
                os.close(self._fd)
            self._fd = None
            self._size = 0


class DecisionLog:
    """Appends one JSON line per decision to a file, rotated by size, on a background thread.

    ``record`` never blocks and never raises: the line is queued and a daemon thread writes it. Lines
    that cannot be queued or written are dropped and counted (:attr:`dropped`, and the counter
    ``guardrail.decision_log.dropped`` with attribute ``reason``). Queued lines are written at
    :meth:`close`, when the log is garbage-collected, and at interpreter exit (waiting at most
    ``EXIT_TIMEOUT_S``). Parent directories of ``path`` are created on the first write.

    Args:
        path: The log file; a relative path is taken from the current directory now.
        max_bytes: Size at which the file is rotated to ``PATH.1``; a line is never split, and a
            single line larger than this gets a file of its own.
        backups: Rotated files kept (``PATH.1`` newest ... ``PATH.N`` oldest); 0 empties the file instead.
        queue_size: Lines waiting for the disk before new ones are dropped.
        capture_content: Write the prompt and answer text on each line (the answer's SHA-256 always is).
        meter_provider: Provider of the drop counter; default: whatever the application set globally.

    Example:
        >>> with DecisionLog("logs/decisions.jsonl") as log:  # doctest: +SKIP
        ...     log.record(guard.check(answer), deployment="support-bot")
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        max_bytes: int = 100 * 1024 * 1024,
        backups: int = 5,
        queue_size: int = 10_000,
        capture_content: bool = False,
        meter_provider: MeterProvider | None = None,
    ) -> None:
        text = os.fspath(path)
        if not isinstance(text, str) or not text:
            raise ValueError(f"path must be a non-empty file path, got {path!r}")
        for name, value, least in (("max_bytes", max_bytes, 1), ("backups", backups, 0), ("queue_size", queue_size, 1)):
            if not isinstance(value, int) or isinstance(value, bool) or value < least:
                raise ValueError(f"{name} must be an integer >= {least}, got {value!r}")
        self.capture_content = capture_content
        self._drops = _Drops(meter_provider)
        self._writer = _Writer(
            os.path.abspath(text), max_bytes=max_bytes, backups=backups, queue_size=queue_size,
            capture_content=capture_content, drops=self._drops,
        )  # fmt: skip
        self._writer.thread.start()
        # Registers with atexit (weakref.finalize's one hook) and closes a log nobody closed; refers to
        # the writer only, so the log itself can still be collected.
        self._finalizer = weakref.finalize(self, self._writer.close, EXIT_TIMEOUT_S)

    @property
    def path(self) -> str:
        """The log file, as an absolute path."""
        return self._writer.path

    @property
    def dropped(self) -> int:
        """Lines dropped so far, for any reason."""
        return self._drops.total

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called: later records are dropped."""
        return self._writer.closed

    def record(
        self, verdict: Verdict, *, deployment: str | None = None, prompt: str | None = None, response: str = ""
    ) -> None:
        """Queue the line of one decision; returns at once (a full queue or a closed log drops and counts it).

        Args:
            verdict: The decision; its ``decision_id`` is the line's (a new one when it has none).
            deployment: The deployment (or tenant) the answer was checked for.
            prompt: The prompt, written only with content capture on.
            response: The answer as checked: its SHA-256 is always written, its text only with capture on.
        """
        writer = self._writer
        if writer.closed:
            self._drops.add(1, "closed")
            return
        try:
            writer.queue.put_nowait(_Entry(verdict, time.time_ns(), deployment, prompt, response))
        except queue.Full:
            self._drops.add(1, "queue_full")

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every line queued so far is written; True when all were, False on a drop or the timeout."""
        deadline = None if timeout is None else time.monotonic() + timeout
        if self._writer.closed:
            return not self._writer.thread.is_alive() and self._writer.queue.empty()
        marker = self._writer.request(timeout, stop=False)
        if marker is None:
            return False
        remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
        return marker.done.wait(remaining) and marker.ok

    def close(self, timeout: float | None = 5.0) -> None:
        """Write what is queued (waiting up to ``timeout`` seconds) and close the file; later records are dropped.

        Calling it again does nothing more. A disk that stays stuck past ``timeout`` keeps its lines
        queued on the daemon thread; they are written if it frees before the process ends.
        """
        self._finalizer.detach()
        self._writer.close(timeout)

    def __enter__(self) -> DecisionLog:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"DecisionLog({self.path!r}, dropped={self.dropped}, closed={self.closed})"
