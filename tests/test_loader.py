"""Tests for guardrail._policy.loader: golden file:line:col output for every invalid fixture."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from guardrail._exceptions import (
    Issue,
    PolicyError,
    PolicyNotFoundError,
    PolicySyntaxError,
    PolicyValidationError,
)
from guardrail._policy import loader as _loader
from guardrail._policy.loader import load_policy, policy_schema, validate_files
from guardrail._policy.schema import Policy
from guardrail._values import VALUES

FIXTURES = Path(__file__).parent / "fixtures" / "policies"
TEN = ", ".join(VALUES)

GOLDEN: dict[str, tuple[type[PolicyError], str]] = {
    "unknown_dimension": (
        PolicyValidationError,
        (
            "invalid/unknown_dimension.yaml:4:3  thresholds.kindness  "
            f"unknown value dimension 'kindness'; expected one of: {TEN}"
        ),
    ),
    "min_gt_max": (
        PolicyValidationError,
        "invalid/min_gt_max.yaml:3:3  thresholds.power  min (0.5) is greater than max (0.2)",
    ),
    "wrong_type": (
        PolicyValidationError,
        (
            "invalid/wrong_type.yaml:4:10  thresholds.benevolence.min  "
            "Input should be a valid number, unable to parse string as a number (got 'high')"
        ),
    ),
    "unknown_action": (
        PolicyValidationError,
        (
            "invalid/unknown_action.yaml:5:36  thresholds.benevolence.action  "
            "unknown action 'nuke'; defined: allow, block, log, soften"
        ),
    ),
    "unknown_top_level_key": (
        PolicyValidationError,
        (
            f"invalid/unknown_top_level_key.yaml:3:1  rules  unknown key 'rules'; allowed: {', '.join(Policy.model_fields)}"
        ),
    ),
    "missing_extends": (
        PolicyNotFoundError,
        ("invalid/missing_extends.yaml:2:10  extends  policy 'no_such_policy' not found; shipped policies: base"),
    ),
    "cycle_a": (
        PolicyValidationError,
        (
            "invalid/cycle_a.yaml:3:10  extends  cyclic extends: "
            "invalid/cycle_a.yaml -> invalid/cycle_b.yaml -> invalid/cycle_a.yaml"
        ),
    ),
    "cycle_b": (
        PolicyValidationError,
        (
            "invalid/cycle_b.yaml:2:10  extends  cyclic extends: "
            "invalid/cycle_b.yaml -> invalid/cycle_a.yaml -> invalid/cycle_b.yaml"
        ),
    ),
    "bad_syntax": (
        PolicySyntaxError,
        "invalid/bad_syntax.yaml:4:8  while parsing a flow mapping: expected ',' or '}', but got ':'",
    ),
    "box_and_distance": (
        PolicyValidationError,
        "invalid/box_and_distance.yaml:3:3  regions.hateful  a region needs exactly one of box or distance",
    ),
    "rewrite_without_strategy": (
        PolicyValidationError,
        "invalid/rewrite_without_strategy.yaml:3:3  actions.soften  a rewrite action needs a strategy (reask or redact)",
    ),
    "top_level_list": (
        PolicyValidationError,
        "invalid/top_level_list.yaml:1:1  the top level must be a mapping of policy keys, got a list",
    ),
    "many_issues": (
        PolicyValidationError,
        (
            "invalid/many_issues.yaml:2:7  mode  Input should be 'enforce' or 'shadow' (got 'loud')\n"
            "invalid/many_issues.yaml:4:16  thresholds.power.max  "
            "Input should be less than or equal to 1 (got 1.5)\n"
            "invalid/many_issues.yaml:4:21  thresholds.power.colour  "
            "unknown key 'colour'; allowed: min, max, action, severity\n"
            "invalid/many_issues.yaml:10:27  regions.odd.distance.dimensions.1  "
            f"unknown value dimension 'kindness'; expected one of: {TEN}"
        ),
    ),
    # The bad severity is inherited, so the error points into the parent file.
    "bad_inherited": (
        PolicyValidationError,
        (
            "invalid/bad_inherited_base.yaml:3:31  thresholds.power.severity  "
            "Input should be 'low', 'medium', 'high' or 'critical' (got 'huge')"
        ),
    ),
    "bad_inherited_base": (
        PolicyValidationError,
        (
            "invalid/bad_inherited_base.yaml:3:31  thresholds.power.severity  "
            "Input should be 'low', 'medium', 'high' or 'critical' (got 'huge')"
        ),
    ),
}


@pytest.fixture(autouse=True)
def shipped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Run from the fixtures folder, with one shipped policy: ``base``."""
    folder = tmp_path / "shipped"
    folder.mkdir()
    (folder / "base.yaml").write_text(
        "name: shipped-base\nthresholds:\n  power: {max: 0.5, action: log}\n", encoding="utf-8"
    )
    monkeypatch.setattr(_loader, "policies_dir", lambda: folder)
    monkeypatch.chdir(FIXTURES)
    return folder


def test_every_invalid_fixture_has_a_golden_message() -> None:
    assert sorted(p.stem for p in (FIXTURES / "invalid").glob("*.yaml")) == sorted(GOLDEN)


@pytest.mark.parametrize("name", sorted(GOLDEN))
def test_invalid_fixture_golden(name: str) -> None:
    error_type, expected = GOLDEN[name]
    with pytest.raises(error_type) as info:
        load_policy(f"invalid/{name}.yaml")
    assert type(info.value) is error_type
    assert str(info.value) == expected


def test_issue_fields() -> None:
    with pytest.raises(PolicyValidationError) as info:
        load_policy("invalid/wrong_type.yaml")
    assert info.value.issues == [
        Issue(
            file="invalid/wrong_type.yaml",
            line=4,
            column=10,
            path="thresholds.benevolence.min",
            message="Input should be a valid number, unable to parse string as a number (got 'high')",
        )
    ]


def test_syntax_error_fields() -> None:
    with pytest.raises(PolicySyntaxError) as info:
        load_policy("invalid/bad_syntax.yaml")
    assert (info.value.file, info.value.line, info.value.column) == ("invalid/bad_syntax.yaml", 4, 8)


def test_extends_by_path_merges_one_bound() -> None:
    policy = load_policy("valid/child.yaml")
    assert policy.name == "child"
    assert policy.extends == "base.yaml"
    assert policy.version == "1.0"
    bene = policy.thresholds["benevolence"]
    assert (bene.min, bene.max, bene.action, bene.severity) == (-0.1, 0.9, "block", "high")
    assert policy.thresholds["power"].max == 0.6
    assert set(policy.regions) == {"hateful"}


def test_null_removes_inherited_entries() -> None:
    policy = load_policy("valid/removal.yaml")
    assert set(policy.thresholds) == {"benevolence"}
    assert policy.regions == {}
    assert policy.thresholds["benevolence"].min == -0.3


def test_extends_shipped_name(tmp_path: Path) -> None:
    child = tmp_path / "child.yaml"
    child.write_text("name: child\nextends: base\nthresholds:\n  power: {min: -0.2}\n")
    policy = load_policy(child)
    power = policy.thresholds["power"]
    assert (power.min, power.max, power.action) == (-0.2, 0.5, "log")


def test_shipped_name_and_pathlike_and_policy() -> None:
    assert load_policy("base").name == "shipped-base"
    assert load_policy(Path("valid/base.yaml")).name == "base"
    policy = Policy(name="inline")
    assert load_policy(policy) is policy


def test_unknown_shipped_name() -> None:
    with pytest.raises(PolicyNotFoundError) as info:
        load_policy("strict")
    assert str(info.value) == "policy 'strict' not found; shipped policies: base"


def test_missing_file(shipped: Path) -> None:
    (shipped / "base.yaml").unlink()
    with pytest.raises(PolicyNotFoundError) as info:
        load_policy("nowhere/policy.yaml")
    assert str(info.value) == "policy file 'nowhere/policy.yaml' not found; shipped policies: none"


def test_no_shipped_folder(monkeypatch: pytest.MonkeyPatch) -> None:
    def missing() -> Path:
        raise FileNotFoundError("no policies")

    monkeypatch.setattr(_loader, "policies_dir", missing)
    with pytest.raises(PolicyNotFoundError) as info:
        load_policy("default")
    assert str(info.value) == "policy 'default' not found; shipped policies: none"


def _write(tmp_path: Path, text: str | bytes) -> Path:
    path = tmp_path / "p.yaml"
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("name: a\nname: b\n", ":2:1  duplicate key 'name'"),
        ("name: a: b\n", ":1:8  mapping values are not allowed here"),
        ("name: a\x07\n", ":1:8  unacceptable character #x0007: special characters are not allowed"),
        (b"name: \xff\n", "  not UTF-8 text (invalid start byte)"),
    ],
)
def test_syntax_errors(tmp_path: Path, text: str | bytes, expected: str) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(PolicySyntaxError) as info:
        load_policy(path)
    assert str(info.value) == f"{path}{expected}"


def test_empty_file(tmp_path: Path) -> None:
    path = _write(tmp_path, "# nothing\n")
    with pytest.raises(PolicyValidationError) as info:
        load_policy(path)
    assert str(info.value) == f"{path}  the top level must be a mapping of policy keys, got an empty file"


def test_unreadable_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _write(tmp_path, "name: a\n")

    def denied(self: Path, *args: Any, **kwargs: Any) -> Any:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(Path, "open", denied)
    with pytest.raises(PolicyNotFoundError, match=r"cannot read policy file .*: Permission denied"):
        load_policy(path)


def test_missing_key_and_yaml_merge_keys(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        "thresholds:\n  power: &bounds {max: 2}\n  security: {<<: *bounds, min: 0}\n",
    )
    with pytest.raises(PolicyValidationError) as info:
        load_policy(path)
    assert [str(i).removeprefix(str(path)) for i in info.value.issues] == [
        ":1:1  name  missing required key 'name'",
        ":2:24  thresholds.power.max  Input should be less than or equal to 1 (got 2)",
        ":2:24  thresholds.security.max  Input should be less than or equal to 1 (got 2)",
    ]


def test_wrong_container_type(tmp_path: Path) -> None:
    path = _write(tmp_path, "name: null\nthresholds: [power]\n")
    with pytest.raises(PolicyValidationError) as info:
        load_policy(path)
    assert [str(i).removeprefix(str(path)) for i in info.value.issues] == [
        ":1:7  name  Input should be a valid string (got None)",
        ":2:13  thresholds  Input should be a valid dictionary",
    ]


def test_recursive_alias_is_a_syntax_error(tmp_path: Path) -> None:
    path = _write(tmp_path, "name: a\nloop: &x [*x]\n")
    with pytest.raises(PolicySyntaxError) as info:
        load_policy(path)
    assert str(info.value) == f"{path}:2:11  recursive alias *x: it is used inside its own anchor"


def test_non_string_key_and_error_action(tmp_path: Path) -> None:
    path = _write(tmp_path, "name: a\nerror_action: gone\nthresholds:\n  1: {min: 0}\n")
    with pytest.raises(PolicyValidationError) as info:
        load_policy(path)
    assert [str(i).removeprefix(str(path)) for i in info.value.issues] == [
        ":2:15  error_action  unknown action 'gone'; defined: allow, block, log",
        ":4:3  thresholds.1  Input should be a valid string (got 1)",
    ]
    path.write_text("name: a\nerror_action: gone\n", encoding="utf-8")
    with pytest.raises(PolicyValidationError) as info:
        load_policy(path)
    assert str(info.value) == f"{path}:2:15  error_action  unknown action 'gone'; defined: allow, block, log"


def test_unknown_box_dimension(tmp_path: Path) -> None:
    text = "name: a\nregions:\n  r:\n    kind: allowed\n    box:\n      kindness: {min: 0}\n"
    path = _write(tmp_path, text)
    with pytest.raises(PolicyValidationError) as info:
        load_policy(path)
    assert str(info.value).startswith(f"{path}:6:7  regions.r.box.kindness  unknown value dimension")


def test_model_at_outside_the_schema() -> None:
    assert _loader._model_at(("thresholds", "power")).__name__ == "Threshold"
    assert _loader._model_at(("nope",)) is None
    assert _loader._model_at(("name", "x")) is None


def test_validate_files() -> None:
    results = validate_files(["valid/child.yaml", Path("invalid/min_gt_max.yaml")])
    assert results[0] == ("valid/child.yaml", None)
    name, error = results[1]
    assert name == os.path.join("invalid", "min_gt_max.yaml")
    assert isinstance(error, PolicyValidationError)


def test_policy_schema() -> None:
    schema = policy_schema()
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["title"] == "value-guardrail policy"
    assert "thresholds" in schema["properties"]
    assert "name" in schema["required"]


_score = st.floats(min_value=-1.0, max_value=1.0, allow_nan=False)


@st.composite
def _threshold(draw: st.DrawFn) -> dict[str, Any]:
    low, high = sorted([draw(_score), draw(_score)])
    spec: dict[str, Any] = draw(st.sampled_from([{"min": low}, {"max": high}, {"min": low, "max": high}]))
    if draw(st.booleans()):
        spec["action"] = draw(st.sampled_from(["allow", "log", "block"]))
    if draw(st.booleans()):
        spec["severity"] = draw(st.sampled_from(["low", "medium", "high", "critical"]))
    return spec


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture], deadline=None)
@given(thresholds=st.dictionaries(st.sampled_from(VALUES), _threshold()))
def test_thresholds_round_trip_through_yaml(tmp_path: Path, thresholds: dict[str, Any]) -> None:
    data = {"name": "generated", "thresholds": thresholds}
    path = tmp_path / "generated.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    assert load_policy(path) == Policy.model_validate(data)


ROUNDS = """\
name: rounds
mode: loud
thresholds:
  kindness: {min: 0}
  power: {min: high, action: nuke}
  security: {min: 0, action: zap}
regions:
  odd:
    kind: forbidden
    box: {warmth: {max: 0}, power: {max: 2}}
    action: nuke
  both:
    kind: forbidden
    distance: {reference: {calm: 0.5}, max: 1, dimensions: [power, calmness]}
    box: {power: {max: 0}}
actions:
  soften: {type: rewrite}
  redo: {type: rewrite, strategy: reask, fallback: soften}
error_action: nope
"""


def test_every_problem_of_a_file_in_one_run(tmp_path: Path) -> None:
    # Schema errors, unknown dimensions, unknown actions and region shapes together, in file order,
    # where they used to come in rounds (each kind only once the one before was fixed).
    path = _write(tmp_path, ROUNDS)
    with pytest.raises(PolicyValidationError) as info:
        load_policy(path)
    dimension = f"expected one of: {TEN}"
    assert [str(i).removeprefix(str(path)) for i in info.value.issues] == [
        ":2:7  mode  Input should be 'enforce' or 'shadow' (got 'loud')",
        f":4:3  thresholds.kindness  unknown value dimension 'kindness'; {dimension}",
        ":5:16  thresholds.power.min  Input should be a valid number, unable to parse string as a number (got 'high')",
        ":5:30  thresholds.power.action  unknown action 'nuke'; defined: allow, block, log, redo, soften",
        ":6:30  thresholds.security.action  unknown action 'zap'; defined: allow, block, log, redo, soften",
        f":10:11  regions.odd.box.warmth  unknown value dimension 'warmth'; {dimension}",
        ":10:42  regions.odd.box.power.max  Input should be less than or equal to 1 (got 2)",
        ":11:13  regions.odd.action  unknown action 'nuke'; defined: allow, block, log, redo, soften",
        ":12:3  regions.both  a region needs exactly one of box or distance",
        f":14:28  regions.both.distance.reference.calm  unknown value dimension 'calm'; {dimension}",
        f":14:68  regions.both.distance.dimensions.1  unknown value dimension 'calmness'; {dimension}",
        ":17:3  actions.soften  a rewrite action needs a strategy (reask or redact)",
        ":18:52  actions.redo.fallback  'soften' is a rewrite; a fallback must not be",
        ":19:15  error_action  unknown action 'nope'; defined: allow, block, log, redo, soften",
    ]


def test_policy_built_in_python_names_every_unknown_action() -> None:
    with pytest.raises(ValueError) as info:
        Policy(name="p", thresholds={"power": {"max": 0, "action": "a"}, "security": {"min": 0, "action": "b"}})
    assert [(e["loc"], e["msg"]) for e in info.value.errors()] == [  # type: ignore[attr-defined]
        (("thresholds", "power", "action"), "Value error, unknown action 'a'; defined: allow, block, log"),
        (("thresholds", "security", "action"), "Value error, unknown action 'b'; defined: allow, block, log"),
    ]


def test_policy_validate_prints_every_problem_once_each(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from guardrail._cli import app

    rounds = _write(tmp_path, ROUNDS)
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text("name: b\na: &a [x,x,x,x]\n" + "".join(f"{c}: &{c} [*{p},*{p},*{p},*{p}]\n"
                                                         for p, c in zip("abcdefgh", "bcdefghi")))  # fmt: skip
    result = CliRunner().invoke(app, ["policy", "validate", str(rounds), str(bomb)])
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 15 and all(line.startswith(str(rounds) + ":") for line in lines[:14])
    assert lines[14].startswith(f"{bomb}:3:8  aliases expand this document to ")
