"""Metrics: checks by decision, durations, scores per value, scorer batch sizes, rewrites."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import HistogramDataPoint, InMemoryMetricReader, NumberDataPoint

from guardrail import VALUES, Guard, Policy, ValueVector
from guardrail._scoring.batching import MicroBatcher
from guardrail._telemetry.checks import SCORE_OFFSET
from guardrail.testing import FakeScorer

BAD = ValueVector(benevolence=-0.62, universalism=0.5)
POLICY = Policy(name="test", version="3", thresholds={"benevolence": {"min": -0.3}})


@pytest.fixture
def reader() -> InMemoryMetricReader:
    return InMemoryMetricReader()


def make_guard(reader: InMemoryMetricReader, policy: Policy = POLICY, **kw: Any) -> Guard:
    provider = MeterProvider(metric_readers=[reader])
    return Guard(policy, scorer=kw.pop("scorer", FakeScorer({"bad": BAD})), meter_provider=provider, **kw)


def points(reader: InMemoryMetricReader, name: str) -> list[Any]:
    data = reader.get_metrics_data()
    found = []
    for resource in data.resource_metrics if data is not None else []:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                if metric.name == name:
                    found.extend(metric.data.data_points)
    return found


def counts(reader: InMemoryMetricReader, name: str, *keys: str) -> dict[tuple[Any, ...], int]:
    out: dict[tuple[Any, ...], int] = {}
    for point in points(reader, name):
        assert isinstance(point, NumberDataPoint)
        key = tuple(point.attributes.get(k) for k in keys)
        out[key] = out.get(key, 0) + int(point.value)
    return out


def test_checks_counted_by_decision_policy_and_deployment(reader: InMemoryMetricReader) -> None:
    guard = make_guard(reader)
    guard.check("bad", metadata={"deployment": "bot"})
    guard.check("fine", metadata={"deployment": "bot"})
    guard.check_many(["bad", "fine", "fine"], metadata={"tenant": "acme"})
    asyncio.run(guard.acheck("fine"))
    keys = ("guardrail.decision", "guardrail.deployment", "guardrail.policy.name", "guardrail.policy.version")
    assert counts(reader, "guardrail.checks", *keys) == {
        ("block", "bot", "test", "3"): 1,
        ("allow", "bot", "test", "3"): 1,
        ("block", "acme", "test", "3"): 1,
        ("allow", "acme", "test", "3"): 2,
        ("allow", None, "test", "3"): 1,
    }


def test_duration_histogram(reader: InMemoryMetricReader) -> None:
    guard = make_guard(reader, scorer=FakeScorer(delay_s=0.01))
    verdicts = [*guard.check_many(["a", "b"]), guard.check("c")]
    [point] = points(reader, "guardrail.check.duration")
    assert isinstance(point, HistogramDataPoint)
    assert point.count == 3
    assert point.sum == pytest.approx(sum(v.latency_ms for v in verdicts))
    assert point.attributes["guardrail.check.role"] == "answer"


def test_one_score_histogram_with_a_value_attribute(reader: InMemoryMetricReader) -> None:
    guard = make_guard(reader)
    guard.check("bad", metadata={"deployment": "bot"})
    guard.check("bad", metadata={"deployment": "bot"})
    by_value = {p.attributes["guardrail.value"]: p for p in points(reader, "guardrail.value.score")}
    assert list(by_value) == list(VALUES)
    for value, point in by_value.items():
        assert point.count == 2
        assert point.attributes["guardrail.deployment"] == "bot"
        # Recorded with the offset (histograms take no negative values); the mean reads back exactly.
        assert point.sum / point.count - SCORE_OFFSET == pytest.approx(BAD[value])
    assert by_value["benevolence"].min == pytest.approx(-0.62 + SCORE_OFFSET)
    assert list(by_value["power"].explicit_bounds)[:3] == [0.1, 0.2, 0.3]


def test_failed_scoring_counts_but_records_no_scores(reader: InMemoryMetricReader) -> None:
    from guardrail import ScorerError

    guard = make_guard(reader, scorer=FakeScorer(fail=ScorerError("down")))
    assert guard.check("x").error is not None
    assert counts(reader, "guardrail.checks", "guardrail.decision") == {("block",): 1}
    assert points(reader, "guardrail.value.score") == []


def test_batch_size_of_each_scoring_call(reader: InMemoryMetricReader) -> None:
    guard = make_guard(reader)
    guard.check("a")
    guard.check_many(["a", "b", "c", "d"])
    [point] = points(reader, "guardrail.scorer.batch_size")
    assert (point.count, point.sum, point.min, point.max) == (2, 5, 1, 4)


def test_micro_batcher_records_its_joint_calls(reader: InMemoryMetricReader) -> None:
    provider = MeterProvider(metric_readers=[reader])
    batcher = MicroBatcher(FakeScorer(), max_batch=64, max_wait_ms=50, meter_provider=provider)
    guard = Guard(POLICY, scorer=batcher, meter_provider=provider)

    async def main() -> None:
        await asyncio.gather(*(guard.acheck(f"answer {n}") for n in range(20)))

    asyncio.run(main())
    batcher.close()
    [point] = points(reader, "guardrail.scorer.batch_size")
    assert point.sum == 20  # every item once, recorded by the batcher only
    assert point.count == len(batcher.batch_sizes) < 20


def test_guard_built_batcher_uses_the_guard_meter_provider(reader: InMemoryMetricReader) -> None:
    policy = POLICY.model_copy(update={"scorer": POLICY.scorer.model_copy(update={"batching": True})})
    guard = make_guard(reader, policy)
    assert isinstance(guard.scorer, MicroBatcher)
    guard.check_many(["a", "b", "c"])
    guard.scorer.close()
    [point] = points(reader, "guardrail.scorer.batch_size")
    assert (point.count, point.sum) == (1, 3)


def test_rewrites_and_rechecks(reader: InMemoryMetricReader) -> None:
    policy = Policy(
        name="rw", thresholds={"benevolence": {"min": -0.3, "action": "soften"}},
        actions={"soften": {"type": "rewrite", "strategy": "reask", "max_attempts": 1}},
    )  # fmt: skip
    guard = make_guard(reader, policy)
    guard.enforce("bad", metadata={"deployment": "bot"}, reask=lambda previous, feedback: "fine")
    guard.enforce("bad", reask=lambda previous, feedback: "bad")
    keys = (
        "guardrail.rewrite.strategy",
        "guardrail.rewrite.accepted",
        "guardrail.final_decision",
        "guardrail.deployment",
    )
    assert counts(reader, "guardrail.rewrites", *keys) == {
        ("reask", True, "rewrite", "bot"): 1,
        ("reask", False, "block", None): 1,
    }
    roles = counts(reader, "guardrail.checks", "guardrail.check.role", "guardrail.decision")
    assert roles == {("answer", "rewrite"): 2, ("revision", "allow"): 1, ("revision", "rewrite"): 1}


def test_no_meter_provider_is_a_no_op() -> None:
    guard = Guard(POLICY, scorer=FakeScorer({"bad": BAD}))
    assert guard.check("bad").decision == "block"
