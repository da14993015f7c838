"""PolicySet (a policy per deployment) and GUARDRAIL_POLICY (the process default)."""

from __future__ import annotations

from pathlib import Path

import pytest

from guardrail import POLICY_ENV, Guard, PolicyError, PolicyNotFoundError, PolicySet, PolicyValidationError
from guardrail.testing import FakeScorer


def test_env_sets_the_process_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(POLICY_ENV, "strict")
    assert Guard(scorer=FakeScorer()).policy.name == "strict"
    monkeypatch.delenv(POLICY_ENV)
    assert Guard(scorer=FakeScorer()).policy.name == "default"


def test_env_with_a_bad_name_fails_clearly(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(POLICY_ENV, "no-such-policy")
    with pytest.raises(PolicyNotFoundError, match="no-such-policy"):
        Guard(scorer=FakeScorer())


def test_policy_set_picks_by_metadata_and_shares_the_scorer(tmp_path: Path) -> None:
    (tmp_path / "internal.yaml").write_text("name: internal\nextends: strict\n", encoding="utf-8")
    path = tmp_path / "deployments.yaml"
    path.write_text(
        "key: deployment\ndefault: default\npolicies:\n  support-bot: customer-support\n  internal: ./internal.yaml\n",
        encoding="utf-8",
    )
    scorer = FakeScorer()
    policies = PolicySet.load(path, scorer=scorer)
    assert policies.names == ["internal", "support-bot"]
    assert policies.guard({"deployment": "support-bot"}).policy.name == "customer-support"
    assert policies.guard({"deployment": "internal"}).policy.name == "internal"
    assert policies.guard({}).policy.name == policies.guard(None).policy.name == "default"
    assert {id(policies.guard({"deployment": n}).scorer) for n in policies.names} == {id(scorer)}


def test_unknown_deployment_is_a_clear_error() -> None:
    policies = PolicySet({"a": "default", "b": "strict"}, scorer=FakeScorer(), key="tenant")
    with pytest.raises(PolicyError, match=r"unknown tenant 'c' in request metadata; known: a, b"):
        policies.guard({"tenant": "c"})


def test_bad_policy_in_a_set_fails_at_load(tmp_path: Path) -> None:
    path = tmp_path / "set.yaml"
    path.write_text("policies:\n  x: ./missing.yaml\n", encoding="utf-8")
    with pytest.raises(PolicyNotFoundError, match=r"missing\.yaml"):
        PolicySet.load(path, scorer=FakeScorer())
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: bad\nthresholds: {kindness: {min: 0}}\n", encoding="utf-8")
    path.write_text("policies:\n  x: ./bad.yaml\n", encoding="utf-8")
    with pytest.raises(PolicyValidationError, match="kindness"):
        PolicySet.load(path, scorer=FakeScorer())


def test_bad_policy_set_file_names_the_field(tmp_path: Path) -> None:
    path = tmp_path / "set.yaml"
    path.write_text("policys: {}\n", encoding="utf-8")
    with pytest.raises(PolicyError, match=r"set.yaml: policys: Extra inputs are not permitted"):
        PolicySet.load(path, scorer=FakeScorer())
    with pytest.raises(PolicyNotFoundError, match="cannot read policy set"):
        PolicySet.load(tmp_path / "nope.yaml", scorer=FakeScorer())
