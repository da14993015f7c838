"""Guard.enforce / aenforce: block, log, shadow, and the two rewrite strategies with their fallbacks."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from guardrail import Guard, Policy, PolicyValidationError, ValueVector, Verdict, load_policy
from guardrail._guard.rewrite import feedback, split_sentences
from guardrail.testing import FakeScorer


def harm(prompt: str | None, response: str) -> ValueVector:
    """Fixed vectors: any text mentioning "hurt" opposes benevolence by -0.8."""
    return ValueVector(benevolence=-0.8) if "hurt" in response else ValueVector(benevolence=0.4)


def policy(action: dict[str, Any], mode: str = "enforce") -> Policy:
    return Policy(
        name="p", version="3", mode=mode, thresholds={"benevolence": {"min": -0.3, "action": "act"}},
        actions={"act": action, "refuse": {"type": "block", "message": "Refused."}},
    )  # fmt: skip


def enforce(guard: Guard, response: str, use_async: bool, reask: Any = None) -> Verdict:
    if not use_async:
        return guard.enforce(response, prompt="q", reask=reask)
    areask = None
    if reask is not None:

        async def areask(previous: str, message: str) -> str:
            return reask(previous, message)

    return asyncio.run(guard.aenforce(response, prompt="q", reask=areask))


twins = pytest.mark.parametrize("use_async", [False, True], ids=["enforce", "aenforce"])


@twins
def test_allow_delivers_the_answer(use_async: bool) -> None:
    guard = Guard(policy({"type": "block"}), scorer=FakeScorer(fn=harm))
    verdict = enforce(guard, "Happy to help.", use_async)
    assert (verdict.decision, verdict.output, verdict.altered) == ("allow", "Happy to help.", False)


@twins
def test_block_delivers_the_message(use_async: bool) -> None:
    guard = Guard(policy({"type": "block", "message": "No."}), scorer=FakeScorer(fn=harm))
    verdict = enforce(guard, "Go hurt them.", use_async)
    assert (verdict.decision, verdict.output, verdict.message, verdict.altered) == ("block", "No.", "No.", True)


@twins
def test_log_passes_untouched_but_records(use_async: bool) -> None:
    guard = Guard(policy({"type": "log"}), scorer=FakeScorer(fn=harm))
    verdict = enforce(guard, "Go hurt them.", use_async)
    assert (verdict.decision, verdict.output) == ("log", "Go hurt them.")
    assert verdict.violations[0].dimension == "benevolence"


@twins
def test_shadow_never_alters(use_async: bool) -> None:
    calls: list[str] = []
    guard = Guard(policy({"type": "rewrite", "strategy": "reask"}, mode="shadow"), scorer=FakeScorer(fn=harm))
    verdict = enforce(guard, "Go hurt them.", use_async, reask=lambda p, m: calls.append(m) or "fine")
    assert (verdict.decision, verdict.intended, verdict.output) == ("log", "rewrite", "Go hurt them.")
    assert calls == []  # shadow records what would happen, it does not re-ask


@twins
def test_reask_accepts_the_first_passing_revision(use_async: bool) -> None:
    seen: list[tuple[str, str]] = []
    revisions = iter(["Still hurt them.", "Talk to them calmly."])

    def ask(previous: str, message: str) -> str:
        seen.append((previous, message))
        return next(revisions)

    guard = Guard(policy({"type": "rewrite", "strategy": "reask", "max_attempts": 3}), scorer=FakeScorer(fn=harm))
    verdict = enforce(guard, "Go hurt them.", use_async, reask=ask)
    assert verdict.decision == "rewrite" and verdict.final_decision == "rewrite"
    assert verdict.output == "Talk to them calmly."
    assert verdict.rewrite is not None
    assert (verdict.rewrite.strategy, verdict.rewrite.attempts, verdict.rewrite.accepted) == ("reask", 2, True)
    assert seen[0][0] == "Go hurt them." and seen[1][0] == "Still hurt them."
    assert "benevolence -0.80, below the floor -0.30 by 0.50" in seen[0][1]
    assert verdict.scores is not None and verdict.scores.benevolence == -0.8  # the original answer's check
    assert verdict.to_dict()["rewrite"]["attempts"] == 2


@twins
def test_reask_falls_back_after_max_attempts(use_async: bool) -> None:
    guard = Guard(
        policy({"type": "rewrite", "strategy": "reask", "max_attempts": 2, "fallback": "refuse"}),
        scorer=FakeScorer(fn=harm),
    )
    verdict = enforce(guard, "Go hurt them.", use_async, reask=lambda p, m: "I will hurt them anyway.")
    assert verdict.rewrite is not None
    assert (verdict.rewrite.attempts, verdict.rewrite.accepted, verdict.rewrite.fallback) == (2, False, "refuse")
    assert (verdict.final_decision, verdict.output, verdict.message) == ("block", "Refused.", "Refused.")


@twins
def test_reask_without_a_model_falls_back_closed(use_async: bool) -> None:
    guard = Guard(policy({"type": "rewrite", "strategy": "reask"}), scorer=FakeScorer(fn=harm))
    verdict = enforce(guard, "Go hurt them.", use_async)
    assert verdict.final_decision == "block" and verdict.rewrite is not None
    assert "no model to re-ask" in verdict.rewrite.reason


@twins
def test_reask_that_raises_falls_back_with_the_reason(use_async: bool) -> None:
    def broken(previous: str, message: str) -> str:
        raise ConnectionError("model down")

    guard = Guard(policy({"type": "rewrite", "strategy": "reask"}), scorer=FakeScorer(fn=harm))
    verdict = enforce(guard, "Go hurt them.", use_async, reask=broken)
    assert verdict.final_decision == "block" and verdict.rewrite is not None
    assert verdict.rewrite.reason == "re-ask failed: ConnectionError: model down"


@twins
def test_redact_drops_violating_sentences(use_async: bool) -> None:
    scorer = FakeScorer(fn=harm)
    guard = Guard(policy({"type": "rewrite", "strategy": "redact", "min_keep": 0.4}), scorer=scorer)
    answer = "Fresh air helps a lot. Then go hurt your neighbour! Drink water and rest."
    verdict = enforce(guard, answer, use_async)
    assert verdict.output == "Fresh air helps a lot. Drink water and rest."
    assert verdict.rewrite is not None and verdict.rewrite.reason == "dropped 1 of 3 sentences"
    # One batch for the sentences, one re-check of what remains.
    assert [len(c) for c in scorer.calls] == [1, 3, 1]


@twins
def test_redact_falls_back_when_too_little_is_left(use_async: bool) -> None:
    guard = Guard(policy({"type": "rewrite", "strategy": "redact", "min_keep": 0.9}), scorer=FakeScorer(fn=harm))
    verdict = enforce(guard, "OK. Go hurt them, all of them, tonight.", use_async)
    assert verdict.final_decision == "block" and verdict.rewrite is not None
    assert "below min_keep 90%" in verdict.rewrite.reason


def test_redact_falls_back_when_the_rest_still_violates() -> None:
    def joint(prompt: str | None, response: str) -> ValueVector:  # each sentence is fine, together they are not
        return ValueVector(benevolence=-0.9) if response.count(".") > 1 else ValueVector()

    guard = Guard(policy({"type": "rewrite", "strategy": "redact", "min_keep": 0.1}), scorer=FakeScorer(fn=joint))
    verdict = guard.enforce("One. Two. Three.")
    assert verdict.final_decision == "block" and verdict.rewrite is not None
    assert verdict.rewrite.reason.startswith("the redacted answer still violates")


def test_rewrite_fallback_may_log() -> None:
    guard = Guard(policy({"type": "rewrite", "strategy": "reask", "fallback": "log"}), scorer=FakeScorer(fn=harm))
    verdict = guard.enforce("Go hurt them.")
    assert (verdict.final_decision, verdict.output, verdict.altered) == ("log", "Go hurt them.", False)


def test_failed_scoring_fails_closed_in_enforce() -> None:
    guard = Guard(policy({"type": "log"}), scorer=FakeScorer(fail=RuntimeError("boom")))
    verdict = guard.enforce("anything")
    assert verdict.decision == "block" and verdict.output == "I can't help with that request."


@pytest.mark.parametrize(
    ("action", "message"),
    [
        ({"type": "rewrite", "strategy": "paraphrase"}, "strategy"),
        ({"type": "rewrite"}, "needs a strategy"),
        ({"type": "rewrite", "strategy": "reask", "fallback": "nope"}, "unknown action 'nope'"),
        ({"type": "rewrite", "strategy": "reask", "max_attempts": 0}, "max_attempts"),
        ({"type": "rewrite", "strategy": "redact", "min_keep": 2}, "min_keep"),
    ],
)
def test_bad_rewrite_actions_are_rejected(tmp_path: Any, action: dict[str, Any], message: str) -> None:
    import yaml

    path = tmp_path / "p.yaml"
    data = {"name": "p", "thresholds": {"benevolence": {"min": -0.3, "action": "act"}}, "actions": {"act": action}}
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    with pytest.raises(PolicyValidationError, match=message):
        load_policy(path)


def test_a_rewrite_cannot_fall_back_to_a_rewrite() -> None:
    with pytest.raises(ValueError, match="a fallback must not be"):
        Policy(
            name="p",
            actions={"a": {"type": "rewrite", "strategy": "reask", "fallback": "b"},
                     "b": {"type": "rewrite", "strategy": "redact"}},
        )  # fmt: skip


def test_split_sentences_and_feedback() -> None:
    assert split_sentences("One. Two!  Three?\nFour\n\n") == ["One.", "Two!", "Three?", "Four"]
    verdict = Guard(policy({"type": "block"}), scorer=FakeScorer(fn=harm)).check("hurt")
    assert "benevolence -0.80" in feedback(verdict) and "(p)" in feedback(verdict)
