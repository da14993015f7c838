"""Guard: sync and async twins over a FakeScorer, input checks, failures, timeouts, metadata."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import pytest

from guardrail import Guard, Item, Policy, Scorer, ScorerError, ValueVector, Verdict
from guardrail.testing import FakeScorer

BAD = ValueVector(benevolence=-0.62)
POLICY = Policy(name="test", version="2", thresholds={"benevolence": {"min": -0.3}})


def make_guard(policy: Policy = POLICY, **scorer: Any) -> Guard:
    return Guard(policy, scorer=FakeScorer({"bad": BAD}, **scorer))


def check_sync(guard: Guard, response: Any, prompt: Any = None, **kw: Any) -> Verdict:
    return guard.check(response, prompt, **kw)


def check_async(guard: Guard, response: Any, prompt: Any = None, **kw: Any) -> Verdict:
    return asyncio.run(guard.acheck(response, prompt, **kw))


def many_sync(guard: Guard, responses: Any, prompts: Any = None, **kw: Any) -> list[Verdict]:
    return guard.check_many(responses, prompts, **kw)


def many_async(guard: Guard, responses: Any, prompts: Any = None, **kw: Any) -> list[Verdict]:
    return asyncio.run(guard.acheck_many(responses, prompts, **kw))


one = pytest.mark.parametrize("check", [check_sync, check_async], ids=["check", "acheck"])
many = pytest.mark.parametrize("check_many", [many_sync, many_async], ids=["check_many", "acheck_many"])


def test_fake_scorer_is_a_scorer() -> None:
    assert isinstance(FakeScorer(), Scorer)


def test_guard_accepts_a_policy_object() -> None:
    guard = make_guard()
    assert guard.policy is POLICY
    assert guard.scorer.model_id == "fake"


# -- one response ---------------------------------------------------------------------------


@one
def test_check_blocks_a_bad_response(check: Any) -> None:
    verdict = check(make_guard(), "bad", "prompt?")
    assert verdict.decision == "block"
    assert verdict.scores == BAD
    assert verdict.violations[0].message == "benevolence -0.62, below the floor -0.30 by 0.32"
    assert verdict.policy_name == "test"
    assert verdict.policy_version == "2"
    assert verdict.error is None
    assert verdict.latency_ms > 0


@one
def test_check_allows_a_good_response(check: Any) -> None:
    verdict = check(make_guard(), "fine")
    assert verdict.decision == "allow"
    assert verdict.scores == ValueVector()
    assert verdict.violations == ()
    assert verdict.allowed


@one
def test_check_passes_prompt_and_response_to_the_scorer(check: Any) -> None:
    guard = make_guard()
    check(guard, "answer", "question")
    assert guard.scorer.calls == [[("question", "answer")]]  # type: ignore[attr-defined]


@one
def test_check_uses_the_prompt(check: Any) -> None:
    scorer = FakeScorer(fn=lambda prompt, _: BAD if prompt == "harm?" else ValueVector())
    guard = Guard(POLICY, scorer=scorer)
    assert check(guard, "same text", "harm?").decision == "block"
    assert check(guard, "same text", "bread?").decision == "allow"
    assert check(guard, "same text").decision == "allow"


@one
def test_metadata_is_attached_to_the_verdict(check: Any) -> None:
    meta = {"user": "u1", "turn": 3}
    verdict = check(make_guard(), "bad", metadata=meta)
    assert verdict.metadata == meta
    assert verdict.metadata is not meta  # copied, so later changes don't leak in
    assert check(make_guard(), "bad").metadata == {}


# -- input errors ---------------------------------------------------------------------------


@one
@pytest.mark.parametrize("response", [None, 3, b"bytes", ["list"]])
def test_response_must_be_text(check: Any, response: Any) -> None:
    with pytest.raises(TypeError, match=r"^response must be a string"):
        check(make_guard(), response)


@one
def test_prompt_must_be_text_or_none(check: Any) -> None:
    with pytest.raises(TypeError, match=r"^prompt must be a string or None, got int"):
        check(make_guard(), "fine", 3)


@many
def test_many_names_the_bad_entry(check_many: Any) -> None:
    with pytest.raises(TypeError, match=r"^responses\[1\] must be a string, got int"):
        check_many(make_guard(), ["a", 1])
    with pytest.raises(TypeError, match=r"^prompts\[0\] must be a string or None"):
        check_many(make_guard(), ["a", "b"], [1, None])


@many
@pytest.mark.parametrize("prompts", [[], ["p"], ["p", "q", "r"]])
def test_prompts_length_mismatch(check_many: Any, prompts: list[str]) -> None:
    with pytest.raises(ValueError, match=f"prompts has {len(prompts)} entries but responses has 2"):
        check_many(make_guard(), ["a", "b"], prompts)


@many
def test_many_rejects_a_bare_string(check_many: Any) -> None:
    with pytest.raises(TypeError, match="responses must be a sequence of strings"):
        check_many(make_guard(), "bad")


@one
def test_input_errors_do_not_reach_the_scorer(check: Any) -> None:
    guard = make_guard()
    with pytest.raises(TypeError):
        check(guard, 3)
    assert guard.scorer.calls == []  # type: ignore[attr-defined]


# -- batches --------------------------------------------------------------------------------


@many
def test_many_scores_in_one_pass_and_keeps_order(check_many: Any) -> None:
    guard = make_guard()
    verdicts = check_many(guard, ["fine", "bad", "ok"], ["p1", None, "p3"], metadata={"batch": 1})
    assert [v.decision for v in verdicts] == ["allow", "block", "allow"]
    assert guard.scorer.calls == [[("p1", "fine"), (None, "bad"), ("p3", "ok")]]  # type: ignore[attr-defined]
    assert all(v.metadata == {"batch": 1} for v in verdicts)
    assert all(v.latency_ms > 0 for v in verdicts)


@many
def test_many_of_nothing(check_many: Any) -> None:
    assert check_many(make_guard(), []) == []


# -- scorer failures ------------------------------------------------------------------------


@one
def test_scorer_error_fails_closed(check: Any) -> None:
    verdict = check(make_guard(fail=ScorerError("model fell over")), "fine")
    assert verdict.decision == "block"
    assert verdict.error == "ScorerError: model fell over"
    assert verdict.scores is None
    assert verdict.violations == ()
    assert verdict.message == "I can't help with that request."


@one
def test_any_scorer_exception_fails_closed(check: Any) -> None:
    verdict = check(make_guard(fail=RuntimeError("cuda")), "fine")
    assert verdict.decision == "block"
    assert verdict.error == "RuntimeError: cuda"


@one
def test_scorer_error_with_on_error_allow(check: Any) -> None:
    policy = POLICY.model_copy(update={"on_error": "allow"})
    verdict = check(make_guard(policy, fail=ScorerError("down")), "bad")
    assert verdict.decision == "allow"
    assert verdict.error == "ScorerError: down"
    assert verdict.scores is None


@one
def test_scorer_own_timeout_without_a_limit_fails_closed(check: Any) -> None:
    # A TimeoutError from the scorer itself (no timeout_ms set) is an ordinary failure.
    verdict = check(make_guard(fail=TimeoutError("socket")), "fine")
    assert verdict.decision == "block"
    assert verdict.error == "TimeoutError: socket"


@many
def test_scorer_failure_fails_every_item(check_many: Any) -> None:
    verdicts = check_many(make_guard(fail=ScorerError("down")), ["a", "b"])
    assert [v.decision for v in verdicts] == ["block", "block"]
    assert all(v.error == "ScorerError: down" for v in verdicts)


class WrongCount:
    """A scorer that drops the last item."""

    model_id = "wrong"
    device = "cpu"

    def score(self, items: Sequence[Item]) -> list[ValueVector]:
        return [ValueVector() for _ in items][:-1]

    async def ascore(self, items: Sequence[Item]) -> list[ValueVector]:
        return self.score(items)


@many
def test_wrong_vector_count_fails_closed(check_many: Any) -> None:
    verdicts = check_many(Guard(POLICY, scorer=WrongCount()), ["a", "b"])
    assert [v.decision for v in verdicts] == ["block", "block"]
    assert all(v.error == "ScorerError: 1 vectors for 2 items" for v in verdicts)
    assert all(v.scores is None for v in verdicts)


# -- timeouts -------------------------------------------------------------------------------


@one
def test_timeout_fails_closed_with_scoring_timeout(check: Any) -> None:
    policy = POLICY.model_copy(update={"timeout_ms": 20.0})
    verdict = check(make_guard(policy, delay_s=0.3), "fine")
    assert verdict.decision == "block"
    assert verdict.scores is None
    assert verdict.error == "ScoringTimeout: scoring took longer than timeout_ms=20"


@one
def test_timeout_with_on_error_allow(check: Any) -> None:
    policy = POLICY.model_copy(update={"timeout_ms": 20.0, "on_error": "allow"})
    verdict = check(make_guard(policy, delay_s=0.3), "fine")
    assert verdict.decision == "allow"
    assert verdict.error is not None and "ScoringTimeout" in verdict.error


@one
def test_fast_scorer_within_timeout(check: Any) -> None:
    policy = POLICY.model_copy(update={"timeout_ms": 5000.0})
    verdict = check(make_guard(policy), "bad")
    assert verdict.decision == "block"
    assert verdict.error is None
    assert verdict.scores == BAD
