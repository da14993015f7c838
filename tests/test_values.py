"""The value space: keys, order, bands, and ValueVector validation and round trips."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from guardrail import DEFINITIONS, GROUPS, SAFETY_VALUES, VALUES, ValueVector, label_for

TEN = (
    "self_direction",
    "stimulation",
    "hedonism",
    "achievement",
    "power",
    "security",
    "tradition",
    "conformity",
    "benevolence",
    "universalism",
)

scores = st.floats(min_value=-1.0, max_value=1.0, allow_nan=False)
vectors = st.builds(ValueVector, *[scores] * len(TEN))


# -- the value space ------------------------------------------------------------------------


def test_values_are_the_ten_keys_in_order() -> None:
    assert VALUES == TEN


def test_definitions_cover_every_key_in_order() -> None:
    assert tuple(DEFINITIONS) == VALUES
    assert all(text.strip() for text in DEFINITIONS.values())


def test_groups_cover_every_key_and_name_only_known_keys() -> None:
    members = {key for group in GROUPS.values() for key in group}
    assert members == set(VALUES)


def test_safety_values_are_known_keys() -> None:
    assert set(SAFETY_VALUES) <= set(VALUES)


@pytest.mark.parametrize(
    ("score", "label"),
    [
        (1.0, "upholds"),
        (0.31, "upholds"),
        (0.3, "none"),
        (0.0, "none"),
        (-0.3, "none"),
        (-0.31, "opposes"),
        (-1.0, "opposes"),
    ],
)
def test_label_bands_with_the_edges_in_none(score: float, label: str) -> None:
    assert label_for(score) == label


def test_labels_of_a_vector() -> None:
    v = ValueVector(benevolence=-0.62, power=0.3, security=0.31)
    labels = v.labels()
    assert list(labels) == list(VALUES)
    assert labels["benevolence"] == "opposes"
    assert labels["power"] == "none"
    assert labels["security"] == "upholds"
    assert labels["tradition"] == "none"


# -- validation -----------------------------------------------------------------------------


@pytest.mark.parametrize("bad", [1.01, -1.5, 2])
def test_out_of_range_names_the_key(bad: float) -> None:
    with pytest.raises(ValueError, match=r"'power' must lie in \[-1, 1\]"):
        ValueVector(power=bad)


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_names_the_key(bad: float) -> None:
    with pytest.raises(ValueError, match=r"'tradition' must lie in \[-1, 1\]"):
        ValueVector(tradition=bad)


def test_bool_is_not_a_score() -> None:
    with pytest.raises(ValueError, match="'hedonism' must be a number, got True"):
        ValueVector(hedonism=True)


def test_text_is_not_a_score() -> None:
    with pytest.raises(ValueError, match="'security' must be a number"):
        ValueVector(security="0.5")  # type: ignore[arg-type]


def test_bounds_are_valid_and_ints_become_floats() -> None:
    v = ValueVector(power=1, security=-1)
    assert v.power == 1.0 and isinstance(v.power, float)
    assert v.security == -1.0 and isinstance(v.security, float)


@pytest.mark.parametrize("count", [0, 9, 11])
def test_from_sequence_wrong_count(count: int) -> None:
    with pytest.raises(ValueError, match=f"needs 10 scores, got {count}"):
        ValueVector.from_sequence([0.0] * count)


def test_from_sequence_out_of_range_names_the_key() -> None:
    with pytest.raises(ValueError, match="'universalism'"):
        ValueVector.from_sequence([0.0] * 9 + [1.2])


def test_from_dict_unknown_key() -> None:
    with pytest.raises(ValueError, match="unknown value dimension 'kindness'"):
        ValueVector.from_dict({"kindness": 0.1})


def test_from_dict_strict_names_missing_keys() -> None:
    with pytest.raises(ValueError, match="missing: self_direction, stimulation"):
        ValueVector.from_dict({k: 0.0 for k in VALUES[2:]}, strict=True)


def test_from_dict_fills_missing_with_zero() -> None:
    v = ValueVector.from_dict({"benevolence": -0.62})
    assert v.to_list() == [0.0] * 8 + [-0.62, 0.0]


def test_vector_is_frozen() -> None:
    v = ValueVector()
    with pytest.raises(AttributeError):
        v.power = 0.5  # type: ignore[misc]


# -- access ---------------------------------------------------------------------------------


def test_named_and_index_access_agree() -> None:
    v = ValueVector.from_sequence([i / 10 for i in range(10)])
    for i, key in enumerate(VALUES):
        assert v[key] == v[i] == getattr(v, key) == i / 10
    assert v[-1] == v.universalism
    assert len(v) == 10
    assert list(v) == v.to_list()


def test_unknown_key_access() -> None:
    with pytest.raises(ValueError, match="unknown value dimension 'kindness'"):
        ValueVector()["kindness"]


def test_index_out_of_range() -> None:
    with pytest.raises(IndexError):
        ValueVector()[10]


def test_to_dict_is_in_order() -> None:
    v = ValueVector(benevolence=-0.62)
    d = v.to_dict()
    assert list(d) == list(VALUES)
    assert d["benevolence"] == -0.62


@given(vectors)
def test_dict_round_trip(v: ValueVector) -> None:
    assert ValueVector.from_dict(v.to_dict()) == v
    assert ValueVector.from_dict(v.to_dict(), strict=True) == v


@given(vectors)
def test_sequence_round_trip(v: ValueVector) -> None:
    assert ValueVector.from_sequence(v.to_list()) == v
    assert ValueVector.from_sequence(v) == v
