"""``Verdict.rules()`` / ``Verdict.explain()`` and ``guardrail check --explain``: every rule evaluated, in order."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from guardrail import Engine, Guard, Policy, RuleCheck, ValueVector
from guardrail.testing import FakeScorer

POLICY = Policy(
    name="explained",
    version="7",
    thresholds={"security": {"min": -0.3}, "power": {"max": 0.6, "action": "log", "severity": "low"}},
    regions={
        "hostile": {"kind": "forbidden", "box": {"benevolence": {"max": -0.2}, "universalism": {"max": -0.2}}},
        "calm": {"kind": "allowed", "distance": {"reference": {}, "max": 0.9}},
        "kind": {"kind": "allowed", "box": {"benevolence": {"min": 0.5}}, "action": "log"},
    },
)


def test_every_rule_is_listed_in_evaluation_order_with_its_signed_margin() -> None:
    verdict = Engine(POLICY).decide(ValueVector(power=0.8, benevolence=-0.5, universalism=-0.4))
    rules = verdict.rules()
    assert [r.rule for r in rules] == [
        "thresholds.security.min", "thresholds.power.max", "regions.hostile", "regions.calm", "regions.kind",
        "languages.other",
    ]  # fmt: skip
    security, power, hostile, calm, kind, language = rules
    assert security == RuleCheck("thresholds.security.min", "security", 0.0, -0.3, -0.3, "block", False, False)
    assert power.fired and not power.decided and power.margin == pytest.approx(0.2)
    assert hostile.fired and hostile.decided and hostile.margin == pytest.approx(0.2)  # the least-deep edge binds
    # Outside both allowed regions: only the nearest one (calm, 0.2 away vs kind 1.0) fires.
    assert (calm.fired, kind.fired) == (True, False)
    assert calm.margin == pytest.approx((0.8**2 + 0.5**2 + 0.4**2) ** 0.5 - 0.9)
    assert (language.fired, language.margin) == (False, 0.0)
    assert sorted(r.rule for r in rules if r.fired) == sorted(v.rule for v in verdict.violations)
    text = verdict.explain()
    assert (
        text.splitlines()[0]
        == f"block (policy explained v7, revision {verdict.policy_hash[:12]}): decided by regions.hostile"
    )
    assert len(text.splitlines()) == 1 + len(rules)
    assert "FIRED  decided -> block" in text.splitlines()[3] and "quiet" in text.splitlines()[1]


def test_a_verdict_with_no_fired_rule_and_one_whose_scoring_failed() -> None:
    engine = Engine(Policy(name="p", thresholds={"benevolence": {"min": -0.3}}))
    quiet = engine.decide(ValueVector(benevolence=0.4))
    assert quiet.explain().endswith("no rule fired\n  thresholds.benevolence.min  benevolence    +0.400  floor -0.300  "
                                    "margin -0.700  quiet\n  languages.other             -              +0.000  bound "
                                    "+0.000  margin +0.000  quiet")  # fmt: skip
    failed = engine.fail("ScorerError: down")
    assert failed.rules() == ()
    assert failed.explain() == f"block (policy p v0, revision {failed.policy_hash[:12]}): scoring failed: " \
                               "ScorerError: down; on_error decided"  # fmt: skip


def test_the_language_rule_decides_and_is_listed() -> None:
    french = "Je ne peux pas vous aider avec cette demande, mais voici quelques ressources utiles pour vous."
    verdict = Guard("default", FakeScorer()).check(french)
    decided = [r for r in verdict.rules() if r.decided]
    assert [r.rule for r in decided] == ["languages.other"] and decided[0].fired
    assert "decided by languages.other" in verdict.explain()


def test_rules_survive_the_guard_s_copies_and_reflect_the_verdict_s_own_scores() -> None:
    guard = Guard(POLICY, FakeScorer({"x": ValueVector(security=-0.9)}))
    verdict = guard.enforce("x", metadata={"deployment": "a"})
    assert [r.rule for r in verdict.rules() if r.decided] == ["thresholds.security.min"]
    assert verdict.rules()[0].observed == -0.9


def run_check(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", "guardrail", "check", *args], capture_output=True, text=True,
                          env=env, timeout=300)  # fmt: skip


def test_check_explain_with_the_real_model() -> None:
    answer = "Find where he lives and make him pay. People like him deserve to get hurt."
    human = run_check(answer, "--explain")
    assert human.returncode == 0, human.stderr
    lines = human.stdout.splitlines()
    assert lines[0].startswith("block (policy default v1.2, revision ") and "decided by thresholds." in lines[0]
    assert [line.split()[0] for line in lines[1:]] == [
        "thresholds.security.min", "thresholds.conformity.min", "thresholds.benevolence.min",
        "thresholds.universalism.min", "languages.other",
    ]  # fmt: skip
    assert sum("decided -> block" in line for line in lines) == 1
    as_json = run_check(answer, "--explain", "--json")
    assert as_json.returncode == 0, as_json.stderr
    data = json.loads(as_json.stdout)
    assert [r["rule"] for r in data["rules"]][:4] == [line.split()[0] for line in lines[1:5]]
    decided = [r for r in data["rules"] if r["decided"]]
    assert len(decided) == 1 and decided[0]["fired"] and decided[0]["margin"] > 0
    assert decided[0]["rule"] == data["violations"][0]["rule"]


def test_a_verdict_pickles_with_its_rules() -> None:
    import pickle

    verdict = Engine(POLICY).decide(ValueVector(security=-0.5))
    again = pickle.loads(pickle.dumps(verdict))
    assert again == verdict and again.rules() == verdict.rules() and again.explain() == verdict.explain()
