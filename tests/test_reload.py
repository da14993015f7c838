"""Hot reload: a guard (and a policy set) built from files swaps in each valid change between checks.

Under concurrent checks no check is lost and no verdict mixes two revisions; a broken change keeps
the running revision, is logged once and counted.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from guardrail import Guard, PolicySet, TransformerScorer, ValueVector, Verdict
from guardrail.testing import FakeScorer

ANSWER = "an answer at benevolence -0.5"
SCORER_TABLE = {ANSWER: ValueVector(benevolence=-0.5)}


def revision(n: int) -> str:
    """Revision n of a policy: odd revisions block the answer (floor -0.4), even ones allow it (floor -0.6).

    Name, version, floor and block message all carry n, so a verdict that mixed two revisions shows it.
    """
    floor = -0.4 if n % 2 else -0.6
    return (
        f"name: live\nversion: '{n}'\nthresholds:\n  benevolence: {{min: {floor}, action: block}}\n"
        f"actions:\n  block: {{type: block, message: 'blocked by revision {n}'}}\n"
    )


def write(path: Path, text: str) -> None:
    """Replace the file in one rename, as editors and ConfigMap updates do (a reader never sees half a file)."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def consistent(verdict: Verdict) -> None:
    n = int(verdict.policy_version)
    assert verdict.decision == ("block" if n % 2 else "allow"), verdict.explain()
    assert (verdict.violations[0].bound if verdict.violations else None) in ((-0.4,) if n % 2 else (None,))
    if verdict.output is not None:
        assert verdict.output == (f"blocked by revision {n}" if n % 2 else ANSWER)


def wait_for(predicate: object, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


@pytest.fixture
def policy_file(tmp_path: Path) -> Path:
    path = tmp_path / "live.yaml"
    write(path, revision(1))
    return path


def test_a_changed_file_is_swapped_in_and_recorded_on_verdicts(policy_file: Path) -> None:
    reader = InMemoryMetricReader()
    guard = Guard(policy_file, FakeScorer(SCORER_TABLE), reload_interval_s=0.05,
                  meter_provider=MeterProvider(metric_readers=[reader]))  # fmt: skip
    first = guard.check(ANSWER)
    assert (first.decision, first.policy_version, first.revision) == ("block", "1", guard.revision)
    write(policy_file, revision(2))
    wait_for(lambda: guard.policy.version == "2")
    second = guard.check(ANSWER)
    assert (second.decision, second.policy_version) == ("allow", "2")
    assert second.policy_hash != first.policy_hash and second.revision == guard.revision
    counts = {
        point.attributes["guardrail.reload.outcome"]: point.value
        for metric in reader.get_metrics_data().resource_metrics[0].scope_metrics[0].metrics
        if metric.name == "guardrail.policy.reloads"
        for point in metric.data.data_points
    }
    assert counts == {"applied": 1}


def test_a_broken_change_keeps_the_running_policy_logs_one_line_and_counts(
    policy_file: Path, caplog: pytest.LogCaptureFixture
) -> None:
    reader = InMemoryMetricReader()
    guard = Guard(policy_file, FakeScorer(SCORER_TABLE), reload_interval_s=0.05,
                  meter_provider=MeterProvider(metric_readers=[reader]))  # fmt: skip
    running = guard.revision
    with caplog.at_level(logging.ERROR, logger="guardrail"):
        write(policy_file, "name: live\nthresholds:\n  benevolence: {min: -4}\n")
        wait_for(lambda: guard.reload_failures == 1)
        time.sleep(0.3)  # several more polls of the same broken file
    assert guard.reload_failures == 1
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1, [r.getMessage() for r in errors]
    message = errors[0].getMessage()
    assert str(policy_file) in message and running in message and "thresholds.benevolence.min" in message
    assert guard.revision == running and guard.check(ANSWER).decision == "block"
    points = [
        p
        for m in reader.get_metrics_data().resource_metrics[0].scope_metrics[0].metrics
        if m.name == "guardrail.policy.reloads"
        for p in m.data.data_points
    ]
    assert [(p.attributes["guardrail.reload.outcome"], p.value) for p in points] == [("failed", 1)]
    # A YAML syntax error and a deleted file keep it too; the next valid change is taken.
    write(policy_file, "name: [live\n")
    wait_for(lambda: guard.reload_failures == 2)
    policy_file.unlink()
    wait_for(lambda: guard.reload_failures == 3)
    write(policy_file, revision(2))
    wait_for(lambda: guard.policy.version == "2")


def test_reloads_under_concurrent_checks_lose_no_check_and_mix_no_revision(policy_file: Path) -> None:
    exporter = InMemorySpanExporter()
    tracing = TracerProvider()
    tracing.add_span_processor(SimpleSpanProcessor(exporter))
    guard = Guard(policy_file, FakeScorer(SCORER_TABLE), reload_interval_s=0.01, tracer_provider=tracing)
    stop = threading.Event()
    revisions = [1]

    def edit() -> None:
        n = 1
        while not stop.is_set():
            n += 1
            write(policy_file, revision(n))
            revisions.append(n)
            time.sleep(0.015)

    def work(k: int) -> list[Verdict]:
        verdicts: list[Verdict] = []
        for i in range(250):
            if i % 3 == 0:
                verdicts.append(guard.enforce(ANSWER, metadata={"worker": k}))
            elif i % 3 == 1:
                verdicts += guard.check_many([ANSWER, ANSWER], metadata={"worker": k})
            else:
                verdicts.append(asyncio.run(guard.acheck(ANSWER, metadata={"worker": k})))
        return verdicts

    editor = threading.Thread(target=edit)
    editor.start()
    try:
        with ThreadPoolExecutor(8) as pool:
            results = [v for batch in pool.map(work, range(8)) for v in batch]
    finally:
        stop.set()
        editor.join()
    assert len(results) == 8 * (84 + 83 * 2 + 83)  # every check answered
    for verdict in results:
        consistent(verdict)
    seen = {v.policy_version for v in results}
    assert len(seen) >= 5, f"too few revisions were decided under: {sorted(seen)} of {len(revisions)} written"
    # Each span records the revision its verdict was decided under.
    spans = [s for s in exporter.get_finished_spans() if s.name == "guardrail.check"]
    assert len(spans) == len(results)
    by_id = {v.decision_id: v for v in results}
    for span in spans:
        verdict = by_id[span.attributes["guardrail.decision_id"]]
        assert span.attributes["guardrail.policy.version"] == verdict.policy_version
        assert span.attributes["guardrail.policy.hash"] == verdict.policy_hash
        assert span.attributes["guardrail.decision"] == verdict.decision


def test_an_extends_parent_and_the_shadow_candidate_are_watched_too(tmp_path: Path) -> None:
    parent, child, candidate = tmp_path / "parent.yaml", tmp_path / "child.yaml", tmp_path / "candidate.yaml"
    write(parent, "name: parent\nthresholds:\n  benevolence: {min: -0.6}\n")
    write(candidate, "name: candidate\nthresholds:\n  benevolence: {min: -0.6}\n")
    write(child, "name: child\nextends: ./parent.yaml\nshadow: ./candidate.yaml\n")
    guard = Guard(child, FakeScorer(SCORER_TABLE), reload_interval_s=0.05)
    assert guard.check(ANSWER).decision == "allow"
    write(parent, "name: parent\nthresholds:\n  benevolence: {min: -0.4}\n")
    wait_for(lambda: guard.check(ANSWER).decision == "block")
    assert guard.check(ANSWER).shadow.intended == "allow"  # type: ignore[union-attr]
    write(candidate, "name: candidate\nversion: '2'\nthresholds:\n  benevolence: {min: -0.4}\n")
    wait_for(lambda: guard.check(ANSWER).agrees is True)


def test_reload_is_off_for_shipped_policies_and_objects_and_can_be_forced(policy_file: Path) -> None:
    assert Guard("default", FakeScorer())._watch is None
    assert Guard(Guard("strict", FakeScorer()).policy, FakeScorer())._watch is None
    with pytest.raises(ValueError, match="reload=True needs a policy read from a file"):
        Guard(Guard("strict", FakeScorer()).policy, FakeScorer(), reload=True)
    guard = Guard(policy_file, FakeScorer(SCORER_TABLE), reload=False)
    write(policy_file, revision(2))
    time.sleep(0.2)
    assert guard.policy.version == "1"
    assert guard.reload() is True and guard.policy.version == "2"
    assert guard.reload() is False  # nothing changed


def test_a_dropped_guard_ends_its_watch(policy_file: Path) -> None:
    import gc

    guard = Guard(policy_file, FakeScorer(), reload_interval_s=0.02)
    thread = guard._watch._thread  # type: ignore[union-attr]
    del guard
    gc.collect()
    thread.join(timeout=2)
    assert not thread.is_alive()


def test_a_policy_set_file_reloads_its_mapping_and_keeps_unchanged_guards(tmp_path: Path) -> None:
    live = tmp_path / "live.yaml"
    write(live, revision(1))
    path = tmp_path / "set.yaml"
    write(path, "policies:\n  a: ./live.yaml\n  b: strict\n")
    policies = PolicySet.load(path, scorer=FakeScorer(SCORER_TABLE), reload_interval_s=0.05)
    kept = policies.guard({"deployment": "a"})
    write(path, "policies:\n  a: ./live.yaml\n  c: {policy: default, shadow: strict}\n")
    wait_for(lambda: policies.names == ["a", "c"])
    assert policies.guard({"deployment": "a"}) is kept
    assert policies.guard({"deployment": "c"}).check(ANSWER).shadow.policy_name == "strict"  # type: ignore[union-attr]
    write(path, "policies: [oops]\n")
    wait_for(lambda: policies.reload_failures == 1)
    assert policies.names == ["a", "c"]
    # The guards of a set watch their own policies as well.
    write(live, revision(2))
    wait_for(lambda: policies.guard({"deployment": "a"}).policy.version == "2")


def test_reload_with_the_real_model(tmp_path: Path, scorer: TransformerScorer) -> None:
    path = tmp_path / "support.yaml"
    write(path, "name: support\nextends: default\n")
    guard = Guard(path, scorer, reload_interval_s=0.05)
    answer = "Sure! Preheat the oven to 220 C, knead the dough for ten minutes and bake the loaf for 35 minutes."
    assert guard.check(answer).decision == "allow"
    # A ceiling every answer crosses: the new revision blocks what the old one allowed.
    write(path, "name: support\nversion: '2'\nextends: default\nthresholds:\n  self_direction: {max: -0.99}\n")
    wait_for(lambda: guard.policy.version == "2")
    verdict = guard.check(answer)
    assert verdict.decision == "block" and verdict.violations[0].rule == "thresholds.self_direction.max"
