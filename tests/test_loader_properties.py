"""Property tests of the policy loader: valid policies round-trip, broken ones and random bytes give PolicyError only."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from guardrail._exceptions import PolicyError, PolicyValidationError
from guardrail._policy.loader import load_policy
from guardrail._policy.schema import Policy
from guardrail._values import VALUES

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

_score = st.floats(min_value=-1.0, max_value=1.0, allow_nan=False).map(lambda x: round(x, 3))
_names = st.text("abcdefghijklmnopqrstuvwxyz_", min_size=1, max_size=12)
_severity = st.sampled_from(["low", "medium", "high", "critical"])


@st.composite
def _range(draw: st.DrawFn, need_bound: bool = False) -> dict[str, Any]:
    low, high = sorted([draw(_score), draw(_score)])
    options = [{"min": low}, {"max": high}, {"min": low, "max": high}]
    return dict(draw(st.sampled_from(options if need_bound else [*options, {}])))


@st.composite
def policies(draw: st.DrawFn) -> dict[str, Any]:
    """A valid raw policy: thresholds, box and distance regions, actions of every type, settings."""
    actions: dict[str, Any] = {}
    for name in draw(st.lists(_names, max_size=3, unique=True)):
        kind = draw(st.sampled_from(["allow", "log", "block", "rewrite"]))
        spec: dict[str, Any] = {"type": kind}
        if kind == "block":
            spec["message"] = draw(st.text(max_size=30))
        if kind == "rewrite":
            spec["strategy"] = draw(st.sampled_from(["reask", "redact"]))
        actions[name] = spec
    usable = ["allow", "log", "block", *actions]
    thresholds = {
        dim: {**draw(_range(need_bound=True)), "action": draw(st.sampled_from(usable)), "severity": draw(_severity)}
        for dim in draw(st.lists(st.sampled_from(VALUES), max_size=4, unique=True))
    }
    regions: dict[str, Any] = {}
    for name in draw(st.lists(_names, max_size=3, unique=True)):
        region: dict[str, Any] = {"kind": draw(st.sampled_from(["allowed", "forbidden"])),
                                  "action": draw(st.sampled_from(usable))}  # fmt: skip
        if draw(st.booleans()):
            region["box"] = {d: draw(_range()) for d in draw(st.lists(st.sampled_from(VALUES), min_size=1,
                                                                          max_size=3, unique=True))}  # fmt: skip
        else:
            dims = draw(st.lists(st.sampled_from(VALUES), min_size=1, max_size=3, unique=True))
            region["distance"] = {"reference": {d: draw(_score) for d in dims}, "max": draw(st.floats(0.01, 3)),
                                  "metric": draw(st.sampled_from(["l1", "l2", "cosine"])), "dimensions": dims}  # fmt: skip
        regions[name] = region
    policy: dict[str, Any] = {"name": draw(_names), "version": draw(st.sampled_from(["1", "2.0", "v3"])),
                              "mode": draw(st.sampled_from(["enforce", "shadow"])), "thresholds": thresholds,
                              "regions": regions, "actions": actions,
                              "on_error": draw(st.sampled_from(["block", "allow"]))}  # fmt: skip
    if draw(st.booleans()):
        policy["streaming"] = {"chunk_size": draw(st.integers(1, 500)), "context_size": draw(st.integers(0, 100))}
    return policy


def _write(folder: Path, text: str | bytes) -> Path:
    path = folder / "generated.yaml"
    path.write_bytes(text.encode() if isinstance(text, str) else text)
    return path


@SETTINGS
@given(data=policies())
def test_valid_policies_round_trip_through_yaml(tmp_path: Path, data: dict[str, Any]) -> None:
    assert load_policy(_write(tmp_path, yaml.safe_dump(data))) == Policy.model_validate(data)


BREAKERS: list[tuple[str, Any]] = [
    ("unknown top-level key", lambda d: d.__setitem__("colour", "red")),
    ("unknown dimension", lambda d: d["thresholds"].__setitem__("kindness", {"min": 0})),
    ("wrong type", lambda d: d.__setitem__("mode", ["loud"])),
    ("name missing", lambda d: d.pop("name")),
    ("unknown action", lambda d: d["thresholds"].__setitem__("power", {"max": 0, "action": "nuke"})),
    ("score out of range", lambda d: d["thresholds"].__setitem__("security", {"min": 2})),
    ("min above max", lambda d: d["thresholds"].__setitem__("tradition", {"min": 0.5, "max": 0.1})),
    ("region without a shape", lambda d: d["regions"].__setitem__("empty", {"kind": "forbidden"})),
    ("rewrite without strategy", lambda d: d["actions"].__setitem__("bad", {"type": "rewrite"})),
]
"""Ways to break a valid policy: (what, change in place)."""


@SETTINGS
@given(data=policies(), picks=st.lists(st.sampled_from(BREAKERS), min_size=1, max_size=3, unique=True))
def test_broken_policies_give_located_policy_errors(tmp_path: Path, data: dict[str, Any], picks: list[Any]) -> None:
    broken = copy.deepcopy(data)
    for _, change in picks:
        change(broken)
    path = _write(tmp_path, yaml.safe_dump(broken))
    try:
        load_policy(path)
    except PolicyValidationError as exc:
        assert len(exc.issues) >= len(picks)  # every breakage in the one run
        assert all(i.file == str(path) and i.line is not None and i.column is not None for i in exc.issues)
        positions = [(i.line, i.column) for i in exc.issues]
        assert positions == sorted(positions)
    else:
        raise AssertionError(f"{[what for what, _ in picks]} was accepted")


# YAML's punctuation, anchors and aliases, and whole lines that make a policy, in any order.
_token = st.sampled_from([*"ab:-[]{}&*!|>'\"#%@,? \n\t0123456789.<~", "name: x\n", "&a ", "*a", "<<: ", "!!str "])
_yamlish = st.lists(_token, max_size=80).map("".join)


@SETTINGS
@given(raw=st.one_of(st.binary(max_size=300), _yamlish.map(str.encode)))
def test_any_bytes_give_a_policy_or_a_policy_error(tmp_path: Path, raw: bytes) -> None:
    path = _write(tmp_path, raw)
    try:
        policy = load_policy(path)
    except PolicyError as exc:
        assert str(exc).startswith(str(path)), str(exc)
    else:
        assert isinstance(policy, Policy)
