"""``Telemetry.force_flush(timeout)`` returns within about its timeout when the OTLP endpoint is down or hangs."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest

from guardrail import Guard, Policy
from guardrail.telemetry import Telemetry, configure
from guardrail.testing import FakeScorer

TIMEOUT_MS = 1500
MARGIN_S = 2.0  # generous on a loaded machine; the SDK's exporters retry for 10 s per signal


@pytest.fixture
def closed_port() -> int:
    """A port on 127.0.0.1 that nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A server on 127.0.0.1 that accepts connections (the backlog) and never answers."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(64)
        yield int(sock.getsockname()[1])


def _traffic(telemetry: Telemetry) -> None:
    guard = Guard(Policy(name="flush"), FakeScorer(), tracer_provider=telemetry.tracer_provider,
                  meter_provider=telemetry.meter_provider)  # fmt: skip
    for _ in range(3):
        guard.check("Hello there.")


@pytest.mark.parametrize("protocol", ["http/protobuf", "grpc"])
@pytest.mark.parametrize("endpoint", ["closed_port", "silent_server"])
def test_force_flush_keeps_its_timeout(request: pytest.FixtureRequest, protocol: str, endpoint: str) -> None:
    port = request.getfixturevalue(endpoint)
    url = f"http://127.0.0.1:{port}"
    telemetry = configure("flush-test", exporter="otlp", protocol=protocol, endpoint=url, set_global=False)  # type: ignore[arg-type]
    _traffic(telemetry)
    start = time.perf_counter()
    delivered = telemetry.force_flush(TIMEOUT_MS)
    took = time.perf_counter() - start
    # Stopped in the background: against a dead endpoint shutdown waits out the exporter's own timeout,
    # and left running, its threads would retry for the rest of the session.
    threading.Thread(target=telemetry.shutdown, daemon=True).start()
    assert delivered is False
    assert took < TIMEOUT_MS / 1000 + MARGIN_S, f"force_flush({TIMEOUT_MS}) took {took:.1f} s"


def test_force_flush_succeeds_when_nothing_is_stuck() -> None:
    telemetry = configure("flush-test", exporter="none", set_global=False)
    _traffic(telemetry)
    assert telemetry.force_flush(TIMEOUT_MS) is True
    telemetry.shutdown()


def test_force_flush_rejects_a_bad_timeout() -> None:
    telemetry = configure("flush-test", exporter="none", set_global=False)
    with pytest.raises(ValueError, match="timeout_millis must be a positive number of milliseconds, got -1"):
        telemetry.force_flush(-1)
    telemetry.shutdown()
