"""The decision log: one whole JSON line per decision, rotated by size, never holding up the caller.

Real files, FIFOs and ``/dev/full``, real threads, a real subprocess for the exit path, and the
OpenTelemetry SDK's in-memory reader for the drop counter.
"""

from __future__ import annotations

import gc
import hashlib
import json
import logging
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader, NumberDataPoint

from guardrail import Policy, ValueVector
from guardrail._policy.engine import Engine
from guardrail._telemetry.decisionlog import (
    BATCH_LINES,
    DROPPED,
    EXIT_TIMEOUT_S,
    DecisionLog,
    new_decision_id,
)

POLICY = Policy(
    name="test", version="3",
    thresholds={"benevolence": {"min": -0.3, "severity": "critical"}, "power": {"max": 0.8, "action": "log"}},
)  # fmt: skip
ENGINE = Engine(POLICY)
BAD = ValueVector(benevolence=-0.62, universalism=0.5, power=0.9)
FINE = ValueVector(benevolence=0.4, universalism=0.2)
ANSWER = "Start by quietly collecting every small mistake they make."
FIELDS = ["decision_id", "time", "deployment", "policy", "decision", "intended", "action", "violations", "scores",
          "latency_ms", "error", "language", "answer_sha256"]  # fmt: skip


@pytest.fixture
def reader() -> InMemoryMetricReader:
    return InMemoryMetricReader()


@pytest.fixture
def make_log(reader: InMemoryMetricReader) -> Iterator[Any]:
    """Builds logs on the test's meter provider and closes every one of them at the end."""
    provider = MeterProvider(metric_readers=[reader])
    logs: list[DecisionLog] = []

    def make(path: str | os.PathLike[str], **kw: Any) -> DecisionLog:
        logs.append(DecisionLog(path, meter_provider=provider, **kw))
        return logs[-1]

    yield make
    for log in logs:
        log.close(timeout=30)


def drops(reader: InMemoryMetricReader) -> dict[str, int]:
    """The ``guardrail.decision_log.dropped`` counter, by reason."""
    out: dict[str, int] = {}
    data = reader.get_metrics_data()
    for resource in data.resource_metrics if data is not None else []:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                if metric.name == DROPPED:
                    for point in metric.data.data_points:
                        assert isinstance(point, NumberDataPoint)
                        out[str(point.attributes["reason"])] = int(point.value)
    return out


def lines(path: Path) -> list[dict[str, Any]]:
    """Every line of ``path`` as JSON; fails on a partial or interleaved line."""
    text = path.read_text(encoding="utf-8")
    assert text == "" or text.endswith("\n"), f"{path.name} ends inside a line"
    return [json.loads(line) for line in text.splitlines()]


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def time_of(line: dict[str, Any]) -> int:
    """The line's time in microseconds since the epoch (checks the RFC 3339 UTC form on the way)."""
    stamp = datetime.strptime(line["time"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
    return (stamp - datetime(1970, 1, 1, tzinfo=UTC)) // (stamp.resolution)


# -- the line ----------------------------------------------------------------------------------


def test_blocked_decision_writes_every_field(make_log: Any, tmp_path: Path) -> None:
    verdict = replace(ENGINE.decide(BAD, latency_ms=12.34567), decision_id="d-1", language="en")
    path = tmp_path / "deep" / "er" / "decisions.jsonl"  # parent folders are created
    log = make_log(path)
    before = time.time_ns() // 1000
    log.record(verdict, deployment="support-bot", prompt="How do I get my colleague fired?", response=ANSWER)
    after = time.time_ns() // 1000
    assert log.flush(timeout=10)
    [line] = lines(path)
    assert list(line) == FIELDS  # no text without content capture
    assert line == {
        "decision_id": "d-1",
        "time": line["time"],
        "deployment": "support-bot",
        "policy": {"name": "test", "version": "3", "revision": POLICY.content_hash()},
        "decision": "block",
        "intended": "block",
        "action": "block",
        "violations": [
            {"rule": "thresholds.benevolence.min", "margin": pytest.approx(0.32), "action": "block",
             "severity": "critical"},
            {"rule": "thresholds.power.max", "margin": pytest.approx(0.1), "action": "log", "severity": "high"},
        ],
        "scores": BAD.to_dict(),
        "latency_ms": 12.346,
        "error": None,
        "language": "en",
        "answer_sha256": sha256(ANSWER),
    }  # fmt: skip
    assert len(line["policy"]["revision"]) == 64
    assert list(line["scores"]) == list(BAD.to_dict())  # the ten values, by name, in order
    assert before <= time_of(line) <= after
    assert log.dropped == 0


def test_allowed_decision_has_no_action_and_a_new_id_each(make_log: Any, tmp_path: Path) -> None:
    verdict = ENGINE.decide(FINE)
    assert verdict.decision_id is None
    path = tmp_path / "decisions.jsonl"
    log = make_log(path)
    log.record(verdict)
    log.record(verdict, response=ANSWER)
    assert log.flush(timeout=10)
    first, second = lines(path)
    assert list(first) == FIELDS
    assert (first["decision"], first["intended"], first["action"], first["violations"]) == ("allow", "allow", None, [])
    assert (first["deployment"], first["error"], first["language"]) == (None, None, None)
    assert first["scores"] == FINE.to_dict()
    assert first["answer_sha256"] == sha256("")
    assert second["answer_sha256"] == sha256(ANSWER)
    ids = [uuid.UUID(first["decision_id"]), uuid.UUID(second["decision_id"])]
    assert ids[0] != ids[1] and {i.version for i in ids} == {4}


def test_failed_check_writes_the_error_and_no_scores(make_log: Any, tmp_path: Path) -> None:
    verdict = ENGINE.fail("scoring took longer than 50 ms", latency_ms=50.0)
    path = tmp_path / "decisions.jsonl"
    log = make_log(path)
    log.record(verdict, deployment="bot", response=ANSWER)
    assert log.flush(timeout=10)
    [line] = lines(path)
    assert list(line) == FIELDS
    assert line["scores"] is None
    assert line["error"] == "scoring took longer than 50 ms"
    assert (line["decision"], line["intended"], line["action"], line["violations"]) == ("block", "block", "block", [])
    assert line["latency_ms"] == 50.0
    assert line["answer_sha256"] == sha256(ANSWER)


def test_text_only_with_content_capture(make_log: Any, tmp_path: Path) -> None:
    verdict = ENGINE.decide(BAD)
    # Non-ASCII text, and a lone surrogate (an emoji cut in half), still make a valid UTF-8 JSON line.
    answer = "Voilà: déjà vu \ud83d"
    path = tmp_path / "decisions.jsonl"
    log = make_log(path, capture_content=True)
    log.record(verdict, prompt="Ça va ?", response=answer)
    log.record(verdict, response=ANSWER)
    assert log.flush(timeout=10)
    path.read_bytes().decode("utf-8")  # strict UTF-8
    first, second = lines(path)
    assert list(first) == [*FIELDS, "prompt", "response"]
    assert (first["prompt"], first["response"]) == ("Ça va ?", answer)
    assert first["answer_sha256"] == hashlib.sha256(answer.encode("utf-8", "surrogatepass")).hexdigest()
    assert (second["prompt"], second["response"], second["answer_sha256"]) == (None, ANSWER, sha256(ANSWER))


def test_shadow_candidate_is_written_with_agreement(make_log: Any, tmp_path: Path) -> None:
    candidate = Policy(name="candidate", version="4", thresholds={"universalism": {"min": 0.6}})
    shadow = Engine(candidate)
    disagreeing = replace(ENGINE.decide(FINE), shadow=shadow.decide(FINE))  # allow here, block there
    agreeing = replace(ENGINE.decide(BAD), shadow=shadow.decide(BAD))  # block both
    path = tmp_path / "decisions.jsonl"
    log = make_log(path)
    log.record(disagreeing)
    log.record(agreeing)
    assert log.flush(timeout=10)
    first, second = lines(path)
    assert list(first) == [*FIELDS, "shadow"]
    assert first["decision"] == "allow"
    assert first["shadow"] == {
        "policy": {"name": "candidate", "version": "4", "revision": candidate.content_hash()},
        "decision": "block",
        "agrees": False,
        "violations": ["thresholds.universalism.min"],
    }
    assert (second["decision"], second["shadow"]["decision"], second["shadow"]["agrees"]) == ("block", "block", True)


def test_new_decision_id_is_a_fresh_uuid4() -> None:
    ids = {new_decision_id() for _ in range(1000)}
    assert len(ids) == 1000
    assert {uuid.UUID(i).version for i in ids} == {4}


@pytest.mark.parametrize(
    ("argument", "value"), [("max_bytes", 0), ("backups", -1), ("queue_size", 0), ("queue_size", 2.5)]
)
def test_bad_settings_name_the_argument(tmp_path: Path, argument: str, value: Any) -> None:
    with pytest.raises(ValueError, match=f"{argument} must be an integer >= "):
        DecisionLog(tmp_path / "x.jsonl", **{argument: value})


# -- rotation ----------------------------------------------------------------------------------


def test_rotation_keeps_backups_of_whole_lines_and_loses_only_the_oldest(make_log: Any, tmp_path: Path) -> None:
    path = tmp_path / "decisions.jsonl"
    log = make_log(path, max_bytes=4096, backups=3)
    verdict = ENGINE.decide(BAD)
    ids = [f"d-{i:04d}" for i in range(400)]
    for i, decision_id in enumerate(ids):
        log.record(replace(verdict, decision_id=decision_id))
        if i % 150 == 0:
            assert log.flush(timeout=10)  # the rotation also happens between batches, not only inside one
    assert log.flush(timeout=10)
    files = [Path(f"{path}.{n}") for n in (3, 2, 1)] + [path]  # oldest first
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in files)  # .4 was deleted
    kept: list[str] = []
    for n, file in enumerate(files):
        size = file.stat().st_size
        assert 0 < size <= 4096, file.name
        if file != path:  # a rotated file was full: the next line would not have fitted
            next_line = files[n + 1].read_bytes().split(b"\n", 1)[0] + b"\n"
            assert size + len(next_line) > 4096, file.name
        kept += [line["decision_id"] for line in lines(file)]
    # In order, with nothing missing: the newest lines, back to some point in the deleted oldest file.
    assert kept == ids[-len(kept) :]
    assert len(kept) > 3 * (4096 // len(path.read_bytes().split(b"\n", 1)[0] + b"\n"))


def test_rotation_without_backups_empties_the_file(make_log: Any, tmp_path: Path) -> None:
    path = tmp_path / "decisions.jsonl"
    log = make_log(path, max_bytes=2048, backups=0)
    ids = [f"d-{i:03d}" for i in range(60)]
    for decision_id in ids:
        log.record(replace(ENGINE.decide(BAD), decision_id=decision_id))
    assert log.flush(timeout=10)
    assert [p.name for p in tmp_path.iterdir()] == [path.name]
    kept = [line["decision_id"] for line in lines(path)]
    assert 0 < path.stat().st_size <= 2048
    assert kept == ids[-len(kept) :]


def test_a_line_larger_than_max_bytes_gets_a_file_of_its_own(make_log: Any, tmp_path: Path) -> None:
    path = tmp_path / "decisions.jsonl"
    log = make_log(path, max_bytes=1024, backups=5, capture_content=True)
    for n in range(3):
        log.record(replace(ENGINE.decide(FINE), decision_id=f"big-{n}"), response="x" * 3000)
    assert log.flush(timeout=10)
    files = [Path(f"{path}.2"), Path(f"{path}.1"), path]
    assert [[line["decision_id"] for line in lines(file)] for file in files] == [["big-0"], ["big-1"], ["big-2"]]


# -- threads, slow and full disks, closing -----------------------------------------------------


def test_concurrent_records_are_all_written_whole(make_log: Any, tmp_path: Path) -> None:
    path = tmp_path / "decisions.jsonl"
    log = make_log(path, queue_size=20_000)
    verdicts = [ENGINE.decide(BAD), ENGINE.decide(FINE), ENGINE.fail("down")]
    start = threading.Barrier(8)

    def worker(t: int) -> None:
        start.wait()
        for i in range(2000):
            log.record(replace(verdicts[i % 3], decision_id=f"{t}-{i}"), deployment=f"tenant-{t}", response=ANSWER)

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert log.flush(timeout=60)
    written = lines(path)  # each line parses: none interleaved
    assert len(written) == 16_000 and log.dropped == 0
    by_thread: dict[str, list[int]] = {}
    for line in written:
        t, i = line["decision_id"].split("-")
        assert line["deployment"] == f"tenant-{t}"
        by_thread.setdefault(t, []).append(int(i))
    assert by_thread == {str(t): list(range(2000)) for t in range(8)}  # all there, each thread's in its order


def test_slow_disk_never_blocks_record_and_counts_the_overflow(
    make_log: Any, reader: InMemoryMetricReader, tmp_path: Path
) -> None:
    fifo = tmp_path / "decisions.jsonl"
    os.mkfifo(fifo)  # nobody reads it: the writer blocks opening it, like a disk that does not answer
    log = make_log(fifo, queue_size=100)
    verdict = ENGINE.decide(BAD)
    took: list[int] = []

    def caller() -> None:
        for i in range(5000):
            started = time.perf_counter_ns()
            log.record(replace(verdict, decision_id=str(i)))
            took.append(time.perf_counter_ns() - started)

    thread = threading.Thread(target=caller)
    thread.start()
    thread.join(timeout=60)
    assert not thread.is_alive(), "record() blocked on the disk"
    took.sort()
    assert took[len(took) // 2] < 100_000, f"median {took[len(took) // 2]} ns"
    assert took[int(len(took) * 0.99)] < 1_000_000, f"p99 {took[int(len(took) * 0.99)]} ns"
    assert took[-1] < 100_000_000, f"max {took[-1]} ns"
    # The queue (100) and the writer's first batch hold what was accepted; the rest is counted.
    assert 5000 - 100 - BATCH_LINES <= log.dropped <= 5000 - 100
    assert drops(reader) == {"queue_full": log.dropped}
    # The disk answers again: every accepted line arrives, in order.
    received: list[bytes] = []
    drain = threading.Thread(target=lambda: received.append(fifo.read_bytes()))
    drain.start()
    log.close(timeout=30)
    drain.join(timeout=30)
    ids = [json.loads(line)["decision_id"] for line in received[0].splitlines()]
    assert len(ids) == 5000 - log.dropped
    assert ids == sorted(ids, key=int) and ids[0] == "0"


def test_full_disk_counts_drops_warns_once_and_resumes(
    make_log: Any, reader: InMemoryMetricReader, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "decisions.jsonl"
    path.symlink_to("/dev/full")  # every write: ENOSPC
    log = make_log(path)
    verdict = ENGINE.decide(BAD)
    with caplog.at_level(logging.INFO, logger="guardrail"):
        for _ in range(3):  # a burst over several batches
            for _ in range(50):
                log.record(verdict)
            assert not log.flush(timeout=10)
        assert log.dropped == 150
        assert drops(reader) == {"write_error": 150}
        warnings = [r for r in caplog.records if r.name == "guardrail" and r.levelno == logging.WARNING]
        assert len(warnings) == 1
        assert str(path) in warnings[0].getMessage() and "No space left on device" in warnings[0].getMessage()
        # Space again: the next lines are written.
        path.unlink()
        for n in range(5):
            log.record(replace(verdict, decision_id=f"after-{n}"))
        assert log.flush(timeout=10)
    assert [line["decision_id"] for line in lines(path)] == [f"after-{n}" for n in range(5)]
    assert log.dropped == 150
    assert [r.getMessage() for r in caplog.records if r.name == "guardrail" and r.levelno == logging.INFO] == [
        f"decision log {path}: writing again after 150 dropped lines"
    ]
    assert len([r for r in caplog.records if r.name == "guardrail" and r.levelno == logging.WARNING]) == 1


def test_records_after_close_are_counted_as_closed(make_log: Any, reader: InMemoryMetricReader, tmp_path: Path) -> None:
    path = tmp_path / "decisions.jsonl"
    with make_log(path) as log:
        log.record(ENGINE.decide(BAD))
        log.record(ENGINE.decide(FINE))
    assert log.closed and log.flush()  # closing wrote what was queued
    for _ in range(3):
        log.record(ENGINE.decide(BAD))
    log.close()  # again: nothing more
    assert len(lines(path)) == 2
    assert log.dropped == 3
    assert drops(reader) == {"closed": 3}


def _child(tmp_path: Path, code: str) -> subprocess.CompletedProcess[str]:
    script = (
        "import sys, time\n"
        "from guardrail import Policy, ValueVector\n"
        "from guardrail._policy.engine import Engine\n"
        "from guardrail._telemetry.decisionlog import DecisionLog\n"
        "verdict = Engine(Policy(name='exit')).decide(ValueVector())\n" + code
    )
    return subprocess.run([sys.executable, "-c", script, str(tmp_path)], capture_output=True, text=True, timeout=120)


def test_queued_lines_are_written_at_exit(tmp_path: Path) -> None:
    result = _child(
        tmp_path, "log = DecisionLog(sys.argv[1] + '/d.jsonl')\nfor _ in range(3000): log.record(verdict)\n"
    )
    assert result.returncode == 0, result.stderr
    assert len(lines(tmp_path / "d.jsonl")) == 3000


def test_a_stuck_disk_does_not_keep_the_process_alive(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "d.jsonl")
    code = "log = DecisionLog(sys.argv[1] + '/d.jsonl')\nlog.record(verdict)\nprint(time.time())\n"
    result = _child(tmp_path, code)
    ended = time.time()
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert ended - float(result.stdout) < EXIT_TIMEOUT_S + 3.0


def test_a_log_nobody_closed_is_written_and_stopped_when_collected(tmp_path: Path) -> None:
    def writers() -> int:
        return sum(t.name == "guardrail-decision-log" for t in threading.enumerate())

    running = writers()
    log = DecisionLog(tmp_path / "d.jsonl")
    for _ in range(20):
        log.record(ENGINE.decide(BAD))
    assert writers() == running + 1
    del log  # the last reference: the log closes as close() would
    gc.collect()
    assert len(lines(tmp_path / "d.jsonl")) == 20
    assert writers() == running
