"""Reliability: callers that cancel, time out, hang or send huge or broken input harm no one else.

Each test reproduces one way issue 13 broke the guard: cancelled checks killing the micro-batcher,
a hung scorer exhausting a pool, huge answers stalling everyone, bad scorer output escaping
``on_error``, lone surrogates, bad metadata. Edge cases use a fake scorer whose vector encodes the
answer's number (a verdict handed to the wrong caller shows); every user path also runs on the
real model.
"""

from __future__ import annotations

import asyncio
import math
import random
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import pytest

from guardrail import Guard, Item, Policy, ScorerError, ValueVector, Verdict, load_policy
from guardrail._scoring.batching import MicroBatcher
from guardrail.testing import FakeScorer, HangingScorer, ReturningScorer, number_of, numbered

POLICY = Policy(name="rel", version="1", thresholds={"benevolence": {"min": -0.3}})


class Slow(FakeScorer):
    """Each call takes ``delay_s`` in the calling thread (a forward pass), sync and async alike."""

    async def ascore(self, items: Sequence[Item]) -> list[ValueVector]:
        return await asyncio.to_thread(self.score, items)


# -- cancellation and timeouts ----------------------------------------------------------------------


def test_cancellation_storm_loses_and_crosses_nothing() -> None:
    batcher = MicroBatcher(FakeScorer(fn=numbered, delay_s=0.002), max_batch=64, max_wait_ms=2)
    guard = Guard(POLICY, scorer=batcher)
    rng = random.Random(13)
    n = 1000

    async def main() -> tuple[list[tuple[int, Any]], Verdict, float]:
        tasks = [asyncio.ensure_future(guard.acheck(f"answer #{i}")) for i in range(n)]
        doomed = set(rng.sample(range(n), n // 3))
        for i in sorted(doomed, key=lambda _: rng.random()):  # cancelled at random points of their life
            await asyncio.sleep(rng.random() / 2000)
            tasks[i].cancel()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        start = time.perf_counter()
        after = await guard.acheck("answer #7")
        return [(i, r) for i, r in enumerate(results) if i not in doomed], after, time.perf_counter() - start

    kept, after, after_s = asyncio.run(main())
    assert len(kept) == n - n // 3
    lost = [i for i, r in kept if isinstance(r, BaseException) or r.error is not None]
    crossed = [i for i, r in kept if not isinstance(r, BaseException) and number_of(r) != i % 1000]
    assert (lost, crossed) == ([], [])
    assert after.error is None and number_of(after) == 7 and after_s < 2.0
    assert batcher._lane.worker is not None and batcher._lane.worker.is_alive()


def test_sync_timeouts_from_threads_give_up_only_their_own_items() -> None:
    # Two guards share one batcher: one gives up after 1 ms, the other waits; only the first loses.
    batcher = MicroBatcher(FakeScorer(fn=numbered, delay_s=0.003), max_batch=16, max_wait_ms=1)
    patient = Guard(POLICY, scorer=batcher)
    hasty = Guard(POLICY.model_copy(update={"timeout_ms": 1.0}), scorer=batcher)
    results: dict[int, Verdict] = {}

    def caller(i: int) -> None:
        results[i] = (hasty if i % 3 == 0 else patient).check(f"answer #{i}")

    threads = [threading.Thread(target=caller, args=(i,)) for i in range(150)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    hasty_results = [v for i, v in results.items() if i % 3 == 0]
    assert any(v.error is not None and "ScoringTimeout" in v.error for v in hasty_results)
    assert all(v.decision == "block" for v in hasty_results if v.error is not None)  # fail closed
    others = {i: v for i, v in results.items() if i % 3}
    assert [i for i, v in others.items() if v.error is not None or number_of(v) != i] == []
    start = time.perf_counter()
    after = patient.check("answer #5")
    assert after.error is None and number_of(after) == 5 and time.perf_counter() - start < 2.0


def test_async_timeouts_leave_the_batcher_working() -> None:
    # The guard's own deadline cancels its request (issue 13: one timed-out 1 MB answer blocked all later checks).
    batcher = MicroBatcher(FakeScorer(fn=numbered, delay_s=0.05))
    hasty = Guard(POLICY.model_copy(update={"timeout_ms": 5.0}), scorer=batcher)

    async def main() -> tuple[list[Verdict], Verdict]:
        timed_out = await asyncio.gather(*(hasty.acheck(f"answer #{i}") for i in range(20)))
        return timed_out, await Guard(POLICY, scorer=batcher).acheck("answer #9")

    timed_out, after = asyncio.run(main())
    assert all(v.error == "ScoringTimeout: scoring took longer than timeout_ms=5" for v in timed_out)
    assert after.error is None and number_of(after) == 9


def test_a_cancelled_stream_leaves_the_next_stream_normal() -> None:
    policy = Policy(name="rel", scorer={"batching": True}, streaming={"chunk_size": 20, "context_size": 5})
    guard = Guard(policy, scorer=Slow(fn=numbered, delay_s=0.01))

    async def words(text: str) -> Any:
        for word in text.split(" "):
            await asyncio.sleep(0)
            yield word + " "

    async def consume(text: str) -> str:
        return "".join([chunk async for chunk in guard.astream(words(text))])

    async def main() -> tuple[str, Verdict]:
        doomed = [asyncio.ensure_future(consume("fine words " * 50)) for _ in range(20)]
        await asyncio.sleep(0.03)
        for task in doomed:
            task.cancel()
        await asyncio.gather(*doomed, return_exceptions=True)
        out = await consume("fine words " * 10 + "end #3")
        return out, await guard.acheck("answer #4")

    out, after = asyncio.run(main())
    assert out.endswith("end #3 ") and after.error is None and number_of(after) == 4


class Raising(FakeScorer):
    """Raises ``exc`` (any BaseException) for answers starting with ``BOOM``; scores the rest."""

    def __init__(self, exc: BaseException) -> None:
        super().__init__(fn=numbered)
        self.exc = exc

    def score(self, items: Sequence[Item]) -> list[ValueVector]:
        if any(r.startswith("BOOM") for _, r in items):
            raise self.exc
        return super().score(items)


@pytest.mark.parametrize("exc", [SystemExit(3), asyncio.CancelledError(), KeyboardInterrupt(), MemoryError()])
def test_the_worker_survives_any_exception_from_the_scorer(exc: BaseException) -> None:
    guard = Guard(POLICY, scorer=MicroBatcher(Raising(exc)))
    failed = guard.check("BOOM #1")
    assert failed.decision == "block" and failed.error is not None and type(exc).__name__ in failed.error
    after = guard.check("answer #2")
    assert after.error is None and number_of(after) == 2


def test_a_dead_worker_is_started_again() -> None:
    batcher = MicroBatcher(FakeScorer(fn=numbered))
    guard = Guard(POLICY, scorer=batcher)
    assert number_of(guard.check("answer #1")) == 1
    first = batcher._lane.worker
    assert first is not None
    batcher._lane.queue.put(None)  # the worker ends as if it had died
    first.join(5)
    assert not first.is_alive()
    assert number_of(guard.check("answer #2")) == 2
    assert batcher._lane.worker is not first


def test_hung_scorer_calls_do_not_exhaust_anything() -> None:
    # Issue 13: after 4 checks stuck in a hung scorer, healthy checks timed out too (a 4-thread pool).
    scorer = HangingScorer()
    guard = Guard(POLICY.model_copy(update={"timeout_ms": 100.0}), scorer=scorer)
    try:
        stuck = [guard.check(f"HANG #{i}") for i in range(8)]
        assert all(v.decision == "block" and v.error is not None and "ScoringTimeout" in v.error for v in stuck)
        healthy = [guard.check(f"answer #{i}") for i in range(20)]
        assert [number_of(v) for v in healthy] == list(range(20))
    finally:
        scorer.release.set()


def test_every_check_has_a_deadline_by_default() -> None:
    assert Policy(name="p").timeout_ms == 10_000
    assert load_policy("default").timeout_ms > 0
    with pytest.raises(ValueError, match="timeout_ms"):
        Policy(name="p", timeout_ms=None)  # type: ignore[arg-type]


# -- bounded cost -----------------------------------------------------------------------------------


def test_an_answer_over_max_chars_follows_on_error_by_default() -> None:
    scorer = FakeScorer(fn=numbered)
    guard = Guard(POLICY.model_copy(update={"max_chars": 100}), scorer=scorer)
    verdicts = guard.check_many(["x" * 101 + " #1", "short #2"])
    assert verdicts[0].decision == "block" and verdicts[0].error is not None
    assert "max_chars=100" in verdicts[0].error and "104 characters" in verdicts[0].error
    assert verdicts[1].error is None and number_of(verdicts[1]) == 2
    assert scorer.calls == [[(None, "short #2")]]  # the oversize answer never reached the scorer
    allow = Guard(POLICY.model_copy(update={"max_chars": 100, "on_error": "allow"}), scorer=scorer)
    assert allow.check("x" * 500).decision == "allow"


def test_truncate_scores_head_and_tail_only() -> None:
    scorer = FakeScorer()
    guard = Guard(POLICY.model_copy(update={"max_chars": 100, "oversize": "truncate"}), scorer=scorer)
    answer = "HEAD" + "m" * 10_000 + "TAIL"
    verdict = asyncio.run(guard.acheck(answer, prompt="p" * 5_000))
    assert verdict.error is None
    [[(prompt, seen)]] = scorer.calls
    assert seen.startswith("HEAD") and seen.endswith("TAIL") and len(seen) == 101
    assert prompt == "p" * 100


def test_lone_surrogates_are_replaced_before_scoring() -> None:
    scorer = FakeScorer()
    guard = Guard(POLICY, scorer=scorer)
    guard.check("caf\udce9 \ud83d", prompt="\udfff?")
    assert scorer.calls == [[("\ufffd?", "caf\ufffd \ufffd")]]


@pytest.mark.parametrize("call", ["check", "acheck", "stream"])
@pytest.mark.parametrize(("metadata", "message"), [([1, 2], "got list"), ({1: "x"}, "keys must be strings")])
def test_bad_metadata_is_a_clear_type_error(call: str, metadata: Any, message: str) -> None:
    guard = Guard(POLICY, scorer=FakeScorer())
    with pytest.raises(TypeError, match=f"^metadata .*{message}"):
        if call == "check":
            guard.check("fine", metadata=metadata)
        elif call == "acheck":
            asyncio.run(guard.acheck("fine", metadata=metadata))
        else:
            guard.stream(iter(["fine"]), metadata=metadata)
    assert guard.scorer.calls == []  # type: ignore[attr-defined]


def test_none_chunks_are_no_text() -> None:
    guard = Guard(POLICY, scorer=FakeScorer())
    stream = guard.stream(iter(["Hello", None, " there.", None]))
    assert "".join(stream) == "Hello there."
    assert stream.delivered == "Hello there."


def test_a_text_function_returning_no_string_is_a_clear_error() -> None:
    guard = Guard(POLICY, scorer=FakeScorer())
    with pytest.raises(TypeError, match=r"^text\(chunk\) must return a string or None, got int"):
        list(guard.stream(iter([1, 2]), text=lambda chunk: chunk))  # type: ignore[arg-type,return-value]


# -- scorer output ----------------------------------------------------------------------------------


def _nan() -> ValueVector:
    vector = ValueVector()
    object.__setattr__(vector, "benevolence", math.nan)  # what a broken scorer could hand back
    return vector


def _inf() -> ValueVector:
    vector = ValueVector()
    object.__setattr__(vector, "universalism", math.inf)
    return vector


BAD_OUTPUTS: dict[str, Callable[[int], Any]] = {
    "lists": lambda n: [[0.0] * 10 for _ in range(n)],
    "dict": lambda n: {i: ValueVector() for i in range(n)},
    "generator": lambda n: (ValueVector() for _ in range(n)),
    "too few": lambda n: [ValueVector()] * (n - 1),
    "too many": lambda n: [ValueVector()] * (n + 1),
    "objects": lambda n: [object()] * n,
    "None": lambda n: None,
    "nan": lambda n: [_nan()] * n,
    "inf": lambda n: [_inf()] * n,
}


@pytest.mark.parametrize("batched", [False, True], ids=["direct", "batched"])
@pytest.mark.parametrize("twin", ["check_many", "acheck_many"])
@pytest.mark.parametrize("output", sorted(BAD_OUTPUTS))
def test_bad_scorer_output_follows_on_error(output: str, twin: str, batched: bool) -> None:
    scorer: Any = ReturningScorer(BAD_OUTPUTS[output])
    if batched:
        scorer = MicroBatcher(scorer)
    block = Guard(POLICY, scorer=scorer)
    allow = Guard(POLICY.model_copy(update={"on_error": "allow"}), scorer=scorer)
    for guard, decision in ((block, "block"), (allow, "allow")):
        verdicts = guard.check_many(["a", "b"]) if twin == "check_many" else asyncio.run(guard.acheck_many(["a", "b"]))
        assert [v.decision for v in verdicts] == [decision, decision]
        assert all(v.scores is None and v.error and v.error.startswith("ScorerError: ") for v in verdicts)


# -- the real model -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def guard() -> Iterator[Guard]:
    """The guard a user builds: shipped model, default runtime, micro-batching with a background lane."""
    built = Guard()
    yield built
    assert isinstance(built.scorer, MicroBatcher)
    built.scorer.close()


def test_real_cancelled_acheck_then_next_check_is_normal(guard: Guard) -> None:
    async def main() -> tuple[Verdict, float]:
        for _ in range(5):
            task = asyncio.ensure_future(guard.acheck("Hello there."))
            await asyncio.sleep(0.001)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
        start = time.perf_counter()
        return await guard.acheck("Hello there."), time.perf_counter() - start

    verdict, seconds = asyncio.run(main())
    assert verdict.decision == "allow" and verdict.error is None
    assert seconds < 3.0  # issue 13: every later check waited the whole timeout and was blocked


def test_real_10mb_answer_is_decided_at_once(guard: Guard) -> None:
    start = time.perf_counter()
    verdict = guard.check("Hello there. " * 800_000)
    assert time.perf_counter() - start < 1.0
    assert verdict.decision == "block" and verdict.error is not None and "max_chars=64,000" in verdict.error


def test_real_huge_truncated_answer_does_not_delay_small_checks(guard: Guard) -> None:
    # oversize: truncate scores a 10 MB answer as its head and tail, in the background lane at low
    # priority, while small checks keep their own short deadlines.
    policy = load_policy("default").model_copy(update={"max_chars": 6000, "oversize": "truncate"})
    big_guard = Guard(policy, scorer=guard.scorer)
    small_guard = Guard(policy.model_copy(update={"timeout_ms": 3000.0}), scorer=guard.scorer)
    assert isinstance(guard.scorer, MicroBatcher) and guard.scorer._background is not None
    background = guard.scorer._background.scorer
    seen: list[int] = []
    original = background.score

    def spy(items: Sequence[Item]) -> list[ValueVector]:
        seen.extend(len(r) for _, r in items)
        return original(items)

    background.score = spy  # type: ignore[method-assign]
    try:
        big: list[tuple[Verdict, float]] = []

        def send_big() -> None:
            start = time.perf_counter()
            big.append((big_guard.check("Hello there. " * 800_000), time.perf_counter() - start))

        sender = threading.Thread(target=send_big)
        sender.start()
        small = []
        while sender.is_alive() and len(small) < 200:
            small.append(small_guard.check("Hello there."))
            time.sleep(0.02)  # traffic, not a flood: the background lane gets the idle CPU
        sender.join()
    finally:
        del background.score
    [(verdict, seconds)] = big
    assert verdict.error is None and verdict.scores is not None and seconds < 10.0  # scored, in time
    assert seen == [6001]  # the tokenizer never saw more than max_chars
    assert small and all(v.error is None and v.decision == "allow" for v in small)


def test_real_surrogates_and_nonfinite_model_output(guard: Guard, scorer: Any) -> None:
    verdict = guard.check("Hello \ud800 there.", prompt="Hi\udfff")
    assert verdict.error is None and verdict.decision == "allow"
    [vector] = scorer.score([("Hi\udfff", "Hello \ud800 there.")])
    assert all(math.isfinite(x) for x in vector)

    import torch

    def broken(batch: Any, pooled_only: bool) -> torch.Tensor:
        return torch.full((batch["input_ids"].shape[0], 10), math.nan)

    scorer._run = broken  # a graph or model gone bad: NaN is an error, never clamped to -1
    try:
        with pytest.raises(ScorerError, match="non-finite"):
            scorer.score([(None, "Hello there.")])
        failed = Guard(load_policy("default"), scorer=scorer).check("Hello there.")
        assert failed.decision == "block" and failed.error is not None and "non-finite" in failed.error
    finally:
        del scorer._run


def test_real_exit_with_a_large_check_in_flight_is_clean(tmp_path: Any) -> None:
    # A daemon thread inside ONNX Runtime when the interpreter exits aborted the process
    # ("terminate called without an active exception"); the lanes now wait for their forward pass.
    import subprocess
    import sys

    script = (
        "import threading, time\n"
        "from guardrail import Guard, load_policy\n"
        "g = Guard(load_policy('default').model_copy(update={'oversize': 'truncate', 'timeout_ms': 200.0}))\n"
        "g.check('Hello there.')\n"
        "threading.Thread(target=g.check, args=('Bread is good. ' * 70_000,), daemon=True).start()\n"
        "time.sleep(0.5)\n"
        "print('exiting', flush=True)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "exiting"
    assert "terminate called" not in done.stderr
