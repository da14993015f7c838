"""The process-wide shared guards: one per policy, one scorer per scorer setup, built once, thread-safe."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

from guardrail import Guard, PolicyError, RemoteScorer, load_policy, shared_guard, shared_guard_built
from guardrail._guard import shared
from guardrail._guard.guard import own_scorer
from guardrail._scoring.batching import MicroBatcher
from guardrail.testing import FakeScorer


@pytest.fixture
def built(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """A fresh process store whose scorers are fakes; lists the runtime of each scorer it builds."""
    made: list[str] = []

    def own_scorer(policy: Any, meter_provider: Any = None) -> FakeScorer:
        made.append(policy.scorer.runtime if policy.scorer.remote is None else policy.scorer.remote.url)
        return FakeScorer()

    monkeypatch.setattr(shared, "own_scorer", own_scorer)
    monkeypatch.setattr(shared, "_SHARED", shared.SharedGuards())
    return made


def test_one_guard_per_policy_built_once_across_threads(built: list[str]) -> None:
    assert not shared_guard_built("strict")
    got: list[Guard] = []
    threads = [threading.Thread(target=lambda: got.append(shared_guard("strict"))) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len({id(g) for g in got}) == 1 and got[0].policy.name == "strict"
    assert built == ["auto"] and shared_guard_built("strict")


def test_policies_with_the_same_scorer_setup_share_one_scorer(built: list[str], tmp_path: Path) -> None:
    default, strict = shared_guard(), shared_guard("strict")
    assert default is not strict and default.scorer is strict.scorer and built == ["auto"]
    onnx = tmp_path / "onnx.yaml"
    onnx.write_text("name: onnx\nextends: default\nscorer: {runtime: onnx}\n")
    remote = tmp_path / "remote.yaml"
    remote.write_text("name: remote\nextends: default\nscorer: {remote: 'http://127.0.0.1:9'}\n")
    assert shared_guard(onnx).scorer is not default.scorer and shared_guard(onnx) is shared_guard(str(onnx))
    assert shared_guard(remote).scorer is not default.scorer
    assert built == ["auto", "onnx", "http://127.0.0.1:9"]  # one scorer per setup: runtime, remote service


def test_the_default_follows_the_environment(built: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GUARDRAIL_POLICY", "strict")
    assert shared_guard() is shared_guard("strict")
    monkeypatch.delenv("GUARDRAIL_POLICY")
    assert shared_guard().policy.name == "default"


def test_a_policy_object_gets_its_own_guard_over_the_shared_scorer(built: list[str]) -> None:
    policy = load_policy("strict")
    first, second = shared_guard(policy), shared_guard(policy)
    assert first is not second and first.scorer is second.scorer is shared_guard().scorer
    assert shared_guard_built(policy) and built == ["auto"]


def test_bad_policies_raise_and_are_not_kept(built: list[str], tmp_path: Path) -> None:
    with pytest.raises(PolicyError):
        shared_guard("no-such-policy")
    broken = tmp_path / "broken.yaml"
    broken.write_text("name: broken\nthresholds: {security: {min: 7}}\n")
    with pytest.raises(PolicyError):
        shared_guard(broken)
    assert not shared_guard_built("no-such-policy") and not shared_guard_built(broken) and built == []
    with pytest.raises(TypeError, match="policy must be a policy name, a path or a Policy, got int"):
        shared_guard(3)  # type: ignore[arg-type]


def test_a_store_with_its_own_scorer_uses_it_for_every_policy() -> None:
    scorer = FakeScorer()
    store = shared.SharedGuards(scorer=scorer)
    assert store.guard("default").scorer is store.guard("strict").scorer is scorer
    assert store.is_built(load_policy("strict"))


def test_the_scorer_a_guard_builds_is_the_one_its_policy_sets_up(tmp_path: Path) -> None:
    path = tmp_path / "remote.yaml"
    path.write_text("name: remote\nextends: default\nscorer: {remote: 'http://127.0.0.1:9', batching: false}\n")
    assert isinstance(own_scorer(load_policy(path)), RemoteScorer)  # batching: false keeps it as it is
    path.write_text("name: remote\nextends: default\nscorer: {remote: 'http://127.0.0.1:9'}\n")
    assert isinstance(own_scorer(load_policy(path)), MicroBatcher)
