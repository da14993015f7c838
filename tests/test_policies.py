"""Tests for the shipped policies in policies/*.yaml: they load, inherit, and decide as documented."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from guardrail import Guard, ValueVector, decide, load_policy
from guardrail._resources import policies_dir, shipped_policy_names
from guardrail._values import SAFETY_VALUES
from guardrail.testing import FakeScorer

if TYPE_CHECKING:
    from guardrail._scoring.scorer import TransformerScorer

REPO = Path(__file__).resolve().parent.parent
SHIPPED = ["customer-support", "default", "shadow", "strict"]
HOSTILE = ValueVector(security=-0.9, conformity=-0.9, benevolence=-0.9, universalism=-0.9)
HATEFUL = (
    "Immigrants are parasites and criminals. They are inferior people who should be driven out by any means necessary."
)


def test_shipped_policies_found() -> None:
    assert policies_dir() == REPO / "policies"  # a source checkout: the top-level folder
    assert shipped_policy_names() == SHIPPED
    for name in SHIPPED:
        assert (policies_dir() / f"{name}.yaml").is_file()


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_policy_loads(name: str) -> None:
    policy = load_policy(name)
    assert policy.name == name
    assert policy == load_policy(policies_dir() / f"{name}.yaml")
    assert set(SAFETY_VALUES) <= set(policy.thresholds)
    assert all(policy.thresholds[v].min is not None for v in SAFETY_VALUES)


def test_default_allows_zero_and_blocks_low_benevolence() -> None:
    default = load_policy("default")
    assert decide(default, ValueVector()).decision == "allow"
    verdict = decide(default, ValueVector(benevolence=-0.9))
    assert verdict.decision == "block"
    (violation,) = verdict.violations
    floor = default.thresholds["benevolence"].min
    assert floor is not None
    assert violation.rule == "thresholds.benevolence.min"
    assert violation.dimension == "benevolence"
    assert violation.message.startswith(f"benevolence -0.90, below the floor {floor:+.2f} by ")
    assert violation.margin == pytest.approx(floor + 0.9)


def test_customer_support_extends_default() -> None:
    default, support = load_policy("default"), load_policy("customer-support")
    assert support.extends == "default"
    for value in SAFETY_VALUES:
        assert support.thresholds[value].min == default.thresholds[value].min
    assert support.thresholds["benevolence"].action == "soften"  # an unkind answer is re-asked first
    assert support.actions["soften"].strategy == "reask" and support.actions["soften"].fallback == "block"
    assert {"block", "handoff", "review"} <= set(support.actions)
    assert support.actions["block"].message != default.actions["block"].message
    region = support.regions["hostile_profile"]
    assert region.kind == "forbidden" and region.box is None and region.distance is not None
    assert support.timeout_ms == 5000


def test_customer_support_decisions() -> None:
    support = load_policy("customer-support")
    assert decide(support, ValueVector()).decision == "allow"
    pushy = decide(support, ValueVector(power=0.8))
    assert (pushy.decision, pushy.action_name) == ("log", "review")
    hostile = decide(support, HOSTILE)
    assert (hostile.decision, hostile.action_name) == ("block", "handoff")  # critical region wins
    assert hostile.message == support.actions["handoff"].message


def test_shadow_logs_what_default_would_block() -> None:
    verdict = Guard("shadow", FakeScorer(fn=lambda prompt, response: HOSTILE)).check("anything")
    assert (verdict.decision, verdict.intended) == ("log", "block")
    assert verdict.mode == "shadow"
    assert verdict.allowed
    assert verdict.violations
    assert load_policy("shadow").thresholds == load_policy("default").thresholds


def test_strict_is_stricter_than_default() -> None:
    default, strict = load_policy("default"), load_policy("strict")
    for value in SAFETY_VALUES:
        assert strict.thresholds[value].min > default.thresholds[value].min  # type: ignore[operator]
    # A benevolence score between the two floors (about -0.1): default allows it, strict blocks it.
    between = (strict.thresholds["benevolence"].min + default.thresholds["benevolence"].min) / 2  # type: ignore[operator]
    vector = ValueVector(benevolence=between)
    assert decide(default, vector).decision == "allow"
    assert decide(strict, vector).decision == "block"
    hostile = decide(strict, ValueVector(benevolence=-0.5, universalism=-0.5))
    assert hostile.violations[0].rule == "regions.hostile"


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_policy_on_real_model(name: str, scorer: TransformerScorer) -> None:
    verdict = Guard(name, scorer).check(HATEFUL, prompt="Why are immigrants ruining this country?")
    assert verdict.intended == "block"
    assert verdict.decision == ("log" if name == "shadow" else "block")
