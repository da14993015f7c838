"""MicroBatcher: concurrent checks share one scorer call; verdicts never cross; errors stay local."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence

import pytest

from guardrail import Guard, Policy, ValueVector
from guardrail._scoring.batching import MicroBatcher
from guardrail._types import Item
from guardrail.testing import FakeScorer


def tagged(prompt: str | None, response: str) -> ValueVector:
    """A vector that encodes the response's number, so a crossed verdict shows."""
    n = int(response.split()[-1])
    return ValueVector(power=n / 1000, benevolence=-0.9 if n % 7 == 0 else 0.2)


class SlowScorer(FakeScorer):
    """Each call takes a while, so concurrent callers pile up behind it (as behind a forward pass)."""

    def score(self, items: Sequence[Item]) -> list[ValueVector]:
        import time

        time.sleep(0.02)
        return super().score(items)


def test_concurrent_async_checks_are_batched_and_never_crossed() -> None:
    scorer = SlowScorer(fn=tagged)
    guard = Guard(Policy(name="b", thresholds={"benevolence": {"min": -0.3}}), scorer=MicroBatcher(scorer))

    async def main() -> list[tuple[int, float, str]]:
        verdicts = await asyncio.gather(*(guard.acheck(f"answer {n}") for n in range(200)))
        return [(n, v.scores.power, v.decision) for n, v in enumerate(verdicts) if v.scores is not None]

    results = asyncio.run(main())
    assert [(n, round(p * 1000), d) for n, p, d in results] == [
        (n, n, "block" if n % 7 == 0 else "allow") for n in range(200)
    ]
    assert len(scorer.calls) < 50 and max(len(c) for c in scorer.calls) > 1


def test_threads_calling_check_are_batched() -> None:
    scorer = SlowScorer(fn=tagged)
    guard = Guard(Policy(name="b"), scorer=MicroBatcher(scorer, max_batch=16, max_wait_ms=5))
    out: dict[int, float] = {}

    def worker(n: int) -> None:
        verdict = guard.check(f"answer {n}")
        assert verdict.scores is not None
        out[n] = verdict.scores.power

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(64)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert {n: round(p * 1000) for n, p in out.items()} == {n: n for n in range(64)}
    assert max(len(c) for c in scorer.calls) <= 16 and len(scorer.calls) < 64


def test_a_bad_item_fails_only_its_caller() -> None:
    def picky(prompt: str | None, response: str) -> ValueVector:
        if "poison" in response:
            raise ValueError("cannot score this")
        return ValueVector()

    guard = Guard(Policy(name="b"), scorer=MicroBatcher(SlowScorer(fn=picky), max_wait_ms=20))

    async def main() -> list[str]:
        texts = ["fine 1", "poison 2", "fine 3", "fine 4"]
        return [v.decision for v in await asyncio.gather(*(guard.acheck(t) for t in texts))]

    assert asyncio.run(main()) == ["allow", "block", "allow", "allow"]  # fail closed, only there


def test_lone_request_is_not_delayed_and_empty_is_free() -> None:
    scorer = FakeScorer()
    batcher = MicroBatcher(scorer, max_wait_ms=0)
    assert batcher.score([]) == [] and scorer.calls == []
    assert batcher.score([(None, "x")]) == [ValueVector()]
    assert batcher.batch_sizes == [1]
    batcher.close()


def test_policy_scorer_section_switches_batching() -> None:
    scorer = FakeScorer()
    assert Guard(Policy(name="p"), scorer=scorer).scorer is scorer  # a scorer passed in stays as is
    on = Guard(Policy(name="p", scorer={"batching": True, "max_batch": 8, "max_wait_ms": 3}), scorer=scorer)
    assert isinstance(on.scorer, MicroBatcher) and (on.scorer.max_batch, on.scorer.max_wait_ms) == (8, 3)
    assert on.scorer.model_id == "fake" and on.scorer.device == "cpu"
    assert Guard(Policy(name="p", scorer={"batching": False}), scorer=scorer).scorer is scorer


@pytest.mark.parametrize(("kwargs", "message"), [({"max_batch": 0}, "max_batch"), ({"max_wait_ms": -1}, "max_wait")])
def test_bad_settings(kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        MicroBatcher(FakeScorer(), **kwargs)  # type: ignore[arg-type]
