"""The engine: signed margins, regions, distances, winner rules, shadow mode, errors and risk."""

from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from guardrail import Action, Engine, Policy, ValueVector, Verdict, decide

scores = st.floats(min_value=-1.0, max_value=1.0, allow_nan=False)
vectors = st.builds(ValueVector, *[scores] * 10)

REWRITE = Action(type="rewrite", strategy="reask", max_attempts=3, params={"tone": "kind"})


def policy(**fields: Any) -> Policy:
    return Policy(name=fields.pop("name", "test"), **fields)


def only(verdict: Verdict) -> Any:
    assert len(verdict.violations) == 1, verdict.violations
    return verdict.violations[0]


# -- thresholds -----------------------------------------------------------------------------


def test_floor_violation_message_and_fields() -> None:
    verdict = decide(policy(thresholds={"benevolence": {"min": -0.3}}), ValueVector(benevolence=-0.62))
    v = only(verdict)
    assert v.message == "benevolence -0.62, below the floor -0.30 by 0.32"
    assert v.rule == "thresholds.benevolence.min"
    assert v.dimension == "benevolence"
    assert v.observed == -0.62
    assert v.bound == -0.3
    assert v.margin == pytest.approx(0.32)
    assert v.action == "block"
    assert v.severity == "high"
    assert verdict.decision == verdict.intended == "block"
    assert verdict.action is not None and verdict.action.type == "block"
    assert verdict.action_name == "block"
    assert verdict.message == "I can't help with that request."
    assert verdict.summary() == "block (policy test v0): benevolence -0.62, below the floor -0.30 by 0.32"


def test_ceiling_violation_message() -> None:
    verdict = decide(policy(thresholds={"power": {"max": 0.5}}), ValueVector(power=0.8))
    v = only(verdict)
    assert v.message == "power +0.80, above the ceiling +0.50 by 0.30"
    assert v.rule == "thresholds.power.max"
    assert v.margin == pytest.approx(0.3)


def test_threshold_with_both_bounds_makes_two_rules() -> None:
    p = policy(thresholds={"power": {"min": -0.5, "max": 0.5}})
    assert only(decide(p, ValueVector(power=-0.9))).rule == "thresholds.power.min"
    assert only(decide(p, ValueVector(power=0.9))).rule == "thresholds.power.max"
    assert decide(p, ValueVector(power=0.0)).decision == "allow"


@pytest.mark.parametrize("observed", [-0.3, -0.29, 0.0, 1.0])
def test_floor_bound_belongs_to_the_safe_side(observed: float) -> None:
    verdict = decide(policy(thresholds={"benevolence": {"min": -0.3}}), ValueVector(benevolence=observed))
    assert verdict.violations == ()
    assert verdict.decision == "allow"
    assert verdict.action is None and verdict.action_name is None
    assert verdict.message is None
    assert verdict.risk <= 0.0


def test_ceiling_bound_belongs_to_the_safe_side() -> None:
    verdict = decide(policy(thresholds={"power": {"max": 0.5}}), ValueVector(power=0.5))
    assert verdict.decision == "allow"
    assert verdict.risk == 0.0


# -- boxes ----------------------------------------------------------------------------------

HATE_BOX = {
    "kind": "forbidden",
    "box": {"benevolence": {"max": -0.5}, "universalism": {"max": -0.3}},
    "action": "block",
    "severity": "critical",
}


def test_inside_forbidden_box_violates_with_the_binding_dimension() -> None:
    p = policy(regions={"hate": HATE_BOX})
    # benevolence is 0.3 inside its edge, universalism 0.1: universalism binds.
    v = only(decide(p, ValueVector(benevolence=-0.8, universalism=-0.4)))
    assert v.rule == "regions.hate"
    assert v.dimension == "universalism"
    assert v.observed == -0.4
    assert v.bound == -0.3
    assert v.margin == pytest.approx(0.1)
    assert v.severity == "critical"
    assert v.message == "universalism -0.40 inside forbidden region 'hate' (edge -0.30) by 0.10"


@pytest.mark.parametrize(
    "vector",
    [
        ValueVector(benevolence=-0.8, universalism=0.0),  # one dimension outside
        ValueVector(benevolence=0.0, universalism=-0.9),
        ValueVector(benevolence=-0.5, universalism=-0.9),  # on the edge: safe side
        ValueVector(),
    ],
)
def test_outside_forbidden_box_passes(vector: ValueVector) -> None:
    verdict = decide(policy(regions={"hate": HATE_BOX}), vector)
    assert verdict.violations == ()
    assert verdict.decision == "allow"


def test_forbidden_box_with_two_sided_range() -> None:
    p = policy(regions={"mid": {"kind": "forbidden", "box": {"power": {"min": -0.2, "max": 0.2}}}})
    v = only(decide(p, ValueVector(power=0.15)))
    # Inside by 0.05 from the max edge, 0.35 from the min edge: the nearer edge binds.
    assert v.bound == 0.2
    assert v.margin == pytest.approx(0.05)
    assert decide(p, ValueVector(power=0.25)).violations == ()


def test_outside_allowed_box_violates() -> None:
    p = policy(regions={"safe": {"kind": "allowed", "box": {"security": {"min": -0.2}}, "action": "log"}})
    verdict = decide(p, ValueVector(security=-0.5))
    v = only(verdict)
    assert v.rule == "regions.safe"
    assert v.dimension == "security"
    assert v.margin == pytest.approx(0.3)
    assert v.message == "security -0.50 outside allowed region 'safe' (edge -0.20) by 0.30"
    assert verdict.decision == "log"
    assert decide(p, ValueVector(security=-0.2)).decision == "allow"


def test_outside_all_allowed_regions_gives_one_violation_from_the_nearest() -> None:
    p = policy(
        regions={
            "calm": {"kind": "allowed", "box": {"stimulation": {"max": 0.0}}, "action": "block"},
            "kind": {"kind": "allowed", "box": {"benevolence": {"min": 0.5}}, "action": "log"},
        }
    )
    # 0.2 outside calm, 0.1 outside kind: kind is nearer and explains the violation.
    verdict = decide(p, ValueVector(stimulation=0.2, benevolence=0.4))
    v = only(verdict)
    assert v.rule == "regions.kind"
    assert v.margin == pytest.approx(0.1)
    assert verdict.decision == "log"
    # Inside one allowed region is enough.
    assert decide(p, ValueVector(stimulation=0.9, benevolence=0.6)).violations == ()
    assert decide(p, ValueVector(stimulation=-0.1, benevolence=0.0)).violations == ()


# -- distances ------------------------------------------------------------------------------


def ball(kind: str, metric: str, max_: float, reference: dict[str, float], **extra: Any) -> dict[str, Any]:
    return {"kind": kind, "distance": {"reference": reference, "metric": metric, "max": max_, **extra}}


@pytest.mark.parametrize(
    ("metric", "reference", "distance"),
    [
        ("l1", {}, 0.7),  # |0.3| + |0.4|
        ("l2", {}, 0.5),  # sqrt(0.09 + 0.16)
        ("l2", {"power": 0.3}, 0.4),
        ("cosine", {"security": 1.0}, 0.2),  # 1 - 0.4 / 0.5
        ("cosine", {"power": 0.3, "security": 0.4}, 0.0),  # same direction
        ("cosine", {"power": -0.3, "security": -0.4}, 2.0),  # opposite direction
    ],
)
def test_distance_metrics(metric: str, reference: dict[str, float], distance: float) -> None:
    p = policy(regions={"r": ball("forbidden", metric, 3.0, reference)})
    v = only(decide(p, ValueVector(power=0.3, security=0.4)))
    assert v.dimension is None
    assert v.observed == pytest.approx(distance)
    assert v.bound == 3.0
    assert v.margin == pytest.approx(3.0 - distance)
    assert v.message == f"{metric} distance {distance:.2f} to 'r' within 3.00 by {3.0 - distance:.2f}"


def test_cosine_of_the_zero_vector_is_orthogonal() -> None:
    p = policy(regions={"r": ball("forbidden", "cosine", 0.5, {"benevolence": -1.0})})
    verdict = decide(p, ValueVector())
    assert verdict.violations == ()
    assert verdict.risk == pytest.approx(-0.5)  # distance 1.0, radius 0.5


def test_cosine_with_zero_reference_does_not_divide_by_zero() -> None:
    p = policy(regions={"r": ball("allowed", "cosine", 0.5, {})})
    v = only(decide(p, ValueVector(power=0.5)))
    assert v.observed == 1.0


def test_forbidden_ball_inside_and_outside() -> None:
    p = policy(regions={"hate": ball("forbidden", "l2", 0.5, {"benevolence": -1.0, "universalism": -1.0})})
    inside = only(decide(p, ValueVector(benevolence=-0.8, universalism=-0.8)))
    assert inside.observed == pytest.approx(math.sqrt(0.08))
    assert inside.margin == pytest.approx(0.5 - math.sqrt(0.08))
    assert decide(p, ValueVector()).violations == ()
    # On the sphere itself: safe side.
    assert decide(p, ValueVector(benevolence=-0.5, universalism=-1.0)).violations == ()


def test_outside_allowed_ball_violates() -> None:
    p = policy(regions={"home": ball("allowed", "l1", 0.5, {"benevolence": 0.5})})
    v = only(decide(p, ValueVector(benevolence=-0.5)))
    assert v.observed == pytest.approx(1.0)
    assert v.margin == pytest.approx(0.5)
    assert v.message == "l1 distance 1.00 from allowed region 'home' exceeds 0.50 by 0.50"
    assert decide(p, ValueVector(benevolence=0.2)).violations == ()


def test_distance_over_a_subset_of_dimensions() -> None:
    region = ball("forbidden", "l2", 0.3, {"benevolence": -1.0}, dimensions=["benevolence"])
    p = policy(regions={"r": region})
    # power is far off but not counted.
    v = only(decide(p, ValueVector(benevolence=-0.9, power=1.0)))
    assert v.observed == pytest.approx(0.1)
    # Over all ten dimensions the same vector would be outside the ball.
    full = policy(regions={"r": ball("forbidden", "l2", 0.3, {"benevolence": -1.0})})
    assert decide(full, ValueVector(benevolence=-0.9, power=1.0)).violations == ()


def test_distance_reference_outside_subset_is_ignored() -> None:
    region = ball("forbidden", "l1", 0.2, {"power": 1.0, "benevolence": -1.0}, dimensions=["benevolence"])
    v = only(decide(policy(regions={"r": region}), ValueVector(benevolence=-1.0)))
    assert v.observed == 0.0


# -- winner rules ---------------------------------------------------------------------------


def winner_policy(**overrides: Any) -> Policy:
    return policy(
        thresholds={
            "power": {"max": 0.0, "action": "block", "severity": "low"},
            "hedonism": {"max": 0.0, "action": "soften", "severity": "critical"},
            "stimulation": {"max": 0.0, "action": "note", "severity": "critical"},
            "achievement": {"max": 0.0, "action": "allow", "severity": "critical"},
        },
        actions={"soften": REWRITE, "note": Action(type="log")},
        **overrides,
    )


def test_block_beats_rewrite_beats_log_beats_allow_regardless_of_severity() -> None:
    p = winner_policy()
    everything = ValueVector(power=0.1, hedonism=0.9, stimulation=0.9, achievement=0.9)
    verdict = decide(p, everything)
    assert verdict.decision == "block"
    assert [v.action for v in verdict.violations] == ["block", "soften", "note", "allow"]
    assert decide(p, ValueVector(hedonism=0.1, stimulation=0.9, achievement=0.9)).decision == "rewrite"
    assert decide(p, ValueVector(stimulation=0.1, achievement=0.9)).decision == "log"
    allowed = decide(p, ValueVector(achievement=0.9))
    assert allowed.decision == "allow"
    assert len(allowed.violations) == 1  # listed, but its action only allows
    assert allowed.action is None and allowed.action_name is None


def test_same_type_higher_severity_wins_over_larger_margin() -> None:
    p = policy(
        thresholds={
            "power": {"max": 0.0, "action": "block", "severity": "medium"},
            "hedonism": {"max": 0.0, "action": "refuse", "severity": "high"},
        },
        actions={"refuse": Action(type="block", message="no")},
    )
    verdict = decide(p, ValueVector(power=0.9, hedonism=0.1))
    assert verdict.action_name == "refuse"
    assert verdict.message == "no"
    assert [v.rule for v in verdict.violations] == ["thresholds.hedonism.max", "thresholds.power.max"]


def test_same_type_and_severity_larger_margin_wins() -> None:
    p = policy(
        thresholds={
            "power": {"max": 0.0, "action": "block"},
            "hedonism": {"max": 0.0, "action": "refuse"},
        },
        actions={"refuse": Action(type="block", message="no")},
    )
    assert decide(p, ValueVector(power=0.9, hedonism=0.1)).action_name == "block"
    assert decide(p, ValueVector(power=0.1, hedonism=0.9)).action_name == "refuse"


def test_rewrite_carries_strategy_and_params() -> None:
    verdict = decide(winner_policy(), ValueVector(hedonism=0.5))
    assert verdict.decision == "rewrite"
    assert verdict.action_name == "soften"
    assert verdict.action is not None
    assert verdict.action.strategy == "reask"
    assert verdict.action.params == {"tone": "kind"}
    assert verdict.message is None  # only block replaces the text
    assert not verdict.allowed
    assert verdict.to_dict()["action"] == {
        "name": "soften",
        "type": "rewrite",
        "strategy": "reask",
        "max_attempts": 3,
        "fallback": "block",
        "params": {"tone": "kind"},
    }  # min_keep is redact's setting: a reask's JSON leaves it out


def test_an_actions_json_carries_only_what_its_kind_uses() -> None:
    block = decide(policy(thresholds={"benevolence": {"min": -0.3}}), ValueVector(benevolence=-0.9))
    assert block.to_dict()["action"] == {"name": "block", "type": "block", "message": block.message}
    redact = Action(type="rewrite", strategy="redact", min_keep=0.7, fallback="log")
    assert redact.to_dict() == {"type": "rewrite", "strategy": "redact", "min_keep": 0.7, "fallback": "log"}
    assert Action(type="log").to_dict() == {"type": "log"}


# -- shadow mode ----------------------------------------------------------------------------


def test_shadow_mode_logs_what_it_would_block() -> None:
    p = policy(mode="shadow", thresholds={"benevolence": {"min": -0.3}})
    verdict = decide(p, ValueVector(benevolence=-0.62))
    assert verdict.decision == "log"
    assert verdict.intended == "block"
    assert verdict.mode == "shadow"
    assert verdict.allowed
    assert verdict.message is None
    assert verdict.action_name == "block"
    assert len(verdict.violations) == 1


def test_shadow_mode_allow_stays_allow() -> None:
    p = policy(mode="shadow", thresholds={"benevolence": {"min": -0.3}})
    verdict = decide(p, ValueVector())
    assert verdict.decision == verdict.intended == "allow"


# -- errors ---------------------------------------------------------------------------------


def test_fail_closed_by_default() -> None:
    verdict = Engine(policy()).fail("ScorerError: boom", latency_ms=3.0)
    assert verdict.decision == verdict.intended == "block"
    assert verdict.scores is None
    assert verdict.error == "ScorerError: boom"
    assert verdict.action_name == "block"
    assert verdict.latency_ms == 3.0
    assert verdict.risk == 1.0
    assert verdict.summary() == "block (policy test v0): scoring failed: ScorerError: boom"


def test_fail_open_when_on_error_allow() -> None:
    verdict = Engine(policy(on_error="allow")).fail("boom")
    assert verdict.decision == "allow"
    assert verdict.action is None
    assert verdict.error == "boom"
    assert verdict.risk == 0.0


def test_error_action_chooses_the_failure_action() -> None:
    p = policy(actions={"sorry": Action(type="block", message="try later")}, error_action="sorry")
    verdict = Engine(p).fail("boom")
    assert verdict.action_name == "sorry"
    assert verdict.message == "try later"


def test_fail_in_shadow_mode_logs() -> None:
    verdict = Engine(policy(mode="shadow")).fail("boom")
    assert verdict.decision == "log"
    assert verdict.intended == "block"


# -- verdict records the policy -------------------------------------------------------------


def test_verdict_records_policy_identity() -> None:
    p = policy(name="support", version="1.2")
    engine = Engine(p)
    verdict = engine.decide(ValueVector(), latency_ms=2.5)
    assert verdict.policy_name == "support"
    assert verdict.policy_version == "1.2"
    assert verdict.policy_hash == p.content_hash() == engine.policy_hash
    assert len(verdict.policy_hash) == 64
    assert verdict.latency_ms == 2.5
    assert verdict.mode == "enforce"
    assert verdict.error is None
    assert verdict.summary() == "allow (policy support v1.2)"


def test_to_dict_is_json_ready() -> None:
    verdict = decide(policy(thresholds={"benevolence": {"min": -0.3}}), ValueVector(benevolence=-0.62))
    d = verdict.to_dict()
    assert d["decision"] == "block"
    assert d["scores"]["benevolence"] == -0.62
    assert d["violations"][0]["margin"] == 0.32
    assert d["policy"]["name"] == "test"
    assert d["error"] is None


# -- risk -----------------------------------------------------------------------------------


def test_risk_is_the_largest_signed_margin() -> None:
    p = policy(thresholds={"benevolence": {"min": -0.3}, "power": {"max": 0.5}})
    engine = Engine(p)
    vector = ValueVector(benevolence=-0.2, power=0.7)
    assert engine.decide(vector).risk == pytest.approx(0.2)
    assert engine.risk(vector) == pytest.approx(0.2)
    safe = ValueVector(benevolence=0.0, power=0.0)
    assert engine.risk(safe) == pytest.approx(-0.3)


def test_risk_ignores_allow_rules() -> None:
    p = policy(thresholds={"power": {"max": 0.0, "action": "allow"}, "benevolence": {"min": -0.5}})
    vector = ValueVector(power=0.9)
    verdict = decide(p, vector)
    assert verdict.risk == pytest.approx(-0.5)
    assert verdict.decision == "allow"


def test_risk_without_rules_is_zero() -> None:
    assert decide(policy(), ValueVector(power=1.0)).risk == 0.0


# -- properties -----------------------------------------------------------------------------

PROPERTY_POLICY = policy(
    thresholds={
        "benevolence": {"min": -0.3, "action": "block"},
        "power": {"max": 0.6, "action": "soften", "severity": "medium"},
        "hedonism": {"max": 0.5, "action": "log", "severity": "low"},
        "stimulation": {"max": 0.5, "action": "allow"},
    },
    regions={
        "hate": HATE_BOX,
        "near_harm": ball("forbidden", "l2", 0.4, {"security": -1.0, "conformity": -1.0}),
        "home": {**ball("allowed", "cosine", 1.5, {"universalism": 1.0}), "action": "log"},
    },
    actions={"soften": REWRITE},
)
PROPERTY_ENGINE = Engine(PROPERTY_POLICY)


@given(vectors)
def test_same_vector_same_verdict(vector: ValueVector) -> None:
    assert PROPERTY_ENGINE.decide(vector) == PROPERTY_ENGINE.decide(vector)
    assert decide(PROPERTY_POLICY, vector) == PROPERTY_ENGINE.decide(vector)


@given(vectors)
def test_allow_iff_no_enforcing_violation(vector: ValueVector) -> None:
    verdict = PROPERTY_ENGINE.decide(vector)
    enforcing = [v for v in verdict.violations if PROPERTY_POLICY.action(v.action).type != "allow"]
    assert (verdict.decision == "allow") == (not enforcing)
    assert (verdict.risk > 0) == bool(enforcing)
    assert verdict.risk == pytest.approx(PROPERTY_ENGINE.risk(vector))
    assert all(v.margin > 0 for v in verdict.violations)
    if enforcing:
        assert verdict.risk == pytest.approx(max(v.margin for v in enforcing))
