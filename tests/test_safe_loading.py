"""Hostile policy files: alias bombs, huge or deep files and object tags fail fast with a clear PolicyError."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from guardrail import Guard, PolicyError, PolicySet
from guardrail._exceptions import PolicySyntaxError
from guardrail._policy.loader import MAX_DEPTH, MAX_FILE_BYTES, MAX_NODES, load_policy
from guardrail.testing import FakeScorer

# Nine levels of nine aliases: about 300 bytes that a plain safe_load expands to 9**9 (387 million) strings.
BOMB = "name: bomb\na: &a [x,x,x,x,x,x,x,x,x]\n" + "".join(
    f"{c}: &{c} [{','.join([f'*{p}'] * 9)}]\n" for p, c in zip("abcdefgh", "bcdefghi")
)
FAST_S = 5.0  # generous on a loaded machine (Ray's processes winding down): the bomb is refused in milliseconds


def _write(folder: Path, name: str, text: str | bytes) -> Path:
    path = folder / name
    path.write_bytes(text.encode() if isinstance(text, str) else text)
    return path


def _refused_fast(call: object, *args: object) -> PolicyError:
    start = time.perf_counter()
    with pytest.raises(PolicyError) as info:
        call(*args)  # type: ignore[operator]
    assert time.perf_counter() - start < FAST_S
    return info.value


def test_the_bomb_is_a_small_file() -> None:
    assert len(BOMB.encode()) < 320


def test_alias_bomb_fails_fast_in_load_policy(tmp_path: Path) -> None:
    path = _write(tmp_path, "bomb.yaml", BOMB)
    error = _refused_fast(load_policy, path)
    assert isinstance(error, PolicySyntaxError)
    assert str(error).startswith(f"{path}:3:")  # the first alias
    assert str(error) == (
        f"{path}:3:8  aliases expand this document to 490,329,066 YAML nodes; at most {MAX_NODES:,} are read"
    )


def test_alias_bomb_fails_fast_in_guard(tmp_path: Path) -> None:
    path = _write(tmp_path, "bomb.yaml", BOMB)
    error = _refused_fast(lambda: Guard(policy=path, scorer=FakeScorer()))
    assert "bomb.yaml" in str(error) and "aliases" in str(error)


def test_alias_bomb_fails_fast_as_a_policy_set_and_inside_one(tmp_path: Path) -> None:
    bomb_set = _write(tmp_path, "set.yaml", BOMB.replace("name: bomb", "key: deployment"))
    error = _refused_fast(lambda: PolicySet.load(bomb_set, scorer=FakeScorer()))
    assert "set.yaml:3:" in str(error) and "aliases" in str(error)
    _write(tmp_path, "bomb.yaml", BOMB)
    naming = _write(tmp_path, "naming.yaml", "policies:\n  x: ./bomb.yaml\n")
    error = _refused_fast(lambda: PolicySet.load(naming, scorer=FakeScorer()))
    assert "bomb.yaml:3:" in str(error)


def test_alias_bomb_fails_fast_at_proxy_start_up(tmp_path: Path) -> None:
    from guardrail_litellm import ValueGuardrail

    path = _write(tmp_path, "bomb.yaml", BOMB)
    error = _refused_fast(lambda: ValueGuardrail(policy=str(path), scorer=FakeScorer(), guardrail_name="g"))
    assert "bomb.yaml:3:" in str(error)
    bomb_set = _write(tmp_path, "set.yaml", BOMB.replace("name: bomb", "key: model"))
    error = _refused_fast(lambda: ValueGuardrail(policy_set=str(bomb_set), scorer=FakeScorer(), guardrail_name="g"))
    assert "set.yaml:3:" in str(error)


def test_merge_keys_and_small_aliases_keep_working(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        "merged.yaml",
        "name: merged\n"
        "thresholds:\n"
        "  benevolence: &floor {min: -0.3, action: log, severity: low}\n"
        "  universalism: {<<: *floor, min: -0.2}\n"
        "  security: *floor\n",
    )
    policy = load_policy(path)
    assert policy.thresholds["universalism"].min == -0.2
    assert policy.thresholds["universalism"].action == "log"
    assert policy.thresholds["security"] == policy.thresholds["benevolence"]


def test_recursive_alias_is_refused(tmp_path: Path) -> None:
    path = _write(tmp_path, "loop.yaml", "name: a\nloop: &x [1, *x]\n")
    error = _refused_fast(load_policy, path)
    assert str(error) == f"{path}:2:14  recursive alias *x: it is used inside its own anchor"


def test_file_size_limit(tmp_path: Path) -> None:
    path = _write(tmp_path, "big.yaml", "name: big\n" + "#" * MAX_FILE_BYTES + "\n")
    error = _refused_fast(load_policy, path)
    assert str(error) == f"{path}  the file is larger than {MAX_FILE_BYTES:,} bytes; a policy is a few kilobytes"


@pytest.mark.parametrize(
    "body",
    [
        "name: w\nx: [" + "1," * 400_000 + "1]\n",
        "name: w\nthresholds: {" + ",".join(f"k{i}: {{min: 0}}" for i in range(50_000)) + "}\n",
    ],
)
def test_too_many_nodes_stop_parsing_early(tmp_path: Path, body: str) -> None:
    path = _write(tmp_path, "wide.yaml", body)
    error = _refused_fast(load_policy, path)
    assert f"more than {MAX_NODES:,} YAML nodes; a policy has a few hundred" in str(error)


def test_just_under_the_size_limit_still_loads(tmp_path: Path) -> None:
    body = "name: big\ndescription: " + "x" * (MAX_FILE_BYTES - 40) + "\n"
    path = _write(tmp_path, "near.yaml", body)
    assert len(body) <= MAX_FILE_BYTES
    assert load_policy(path).name == "big"


@pytest.mark.parametrize("opening", ["[", "{a: "])
def test_deep_nesting_is_refused(tmp_path: Path, opening: str) -> None:
    closing = "]" if opening == "[" else "}"
    path = _write(tmp_path, "deep.yaml", f"name: deep\nx: {opening * 100_000}1{closing * 100_000}\n")
    error = _refused_fast(load_policy, path)
    assert isinstance(error, PolicySyntaxError)
    assert f"nested more than {MAX_DEPTH} levels deep" in str(error)


def test_deep_nesting_through_aliases_is_refused(tmp_path: Path) -> None:
    levels = "[" * 30 + "1" + "]" * 30
    text = f"name: deep\na: &a {levels}\n" + "".join(f"{c}: &{c} {levels.replace('1', f'*{p}')}\n"
                                                       for p, c in zip("abc", "bcd"))  # fmt: skip
    path = _write(tmp_path, "deep.yaml", text)
    error = _refused_fast(load_policy, path)
    assert f"nested more than {MAX_DEPTH} levels deep" in str(error)


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("9" * 5000, "cannot read this value"),
        ("2001-13-45", "cannot read this value"),
        ("!!python/object/apply:os.system [echo hacked]", "could not determine a constructor"),
        ("!!python/name:os.system", "could not determine a constructor"),
    ],
)
def test_values_that_cannot_be_constructed(tmp_path: Path, value: str, problem: str) -> None:
    path = _write(tmp_path, "odd.yaml", f"name: odd\ndescription: {value}\n")
    error = _refused_fast(load_policy, path)
    assert isinstance(error, PolicySyntaxError)
    assert str(error).startswith(f"{path}:2:14  ")
    assert problem in str(error)


def test_policy_set_file_size_and_utf8(tmp_path: Path) -> None:
    big = _write(tmp_path, "set.yaml", "policies: {}\n" + "#" * MAX_FILE_BYTES)
    assert "larger than" in str(_refused_fast(lambda: PolicySet.load(big, scorer=FakeScorer())))
    latin = _write(tmp_path, "latin.yaml", b"policies: {caf\xe9: default}\n")
    assert "not UTF-8" in str(_refused_fast(lambda: PolicySet.load(latin, scorer=FakeScorer())))
