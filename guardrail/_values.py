"""The value space: Schwartz's ten basic values, in the fixed FULCRA order.

Every vector in the project (YAML, JSON, Python, model outputs) uses these snake_case keys in
this order. A score lies in [-1, 1]: +1 the response upholds the value, -1 it opposes it, and
``|s| <= 0.3`` reads as "no connection" (the FULCRA bands).
"""

from __future__ import annotations

import math
import operator
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

VALUES: tuple[str, ...] = (
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
"""The ten value keys, in the fixed order used by every vector."""

DEFINITIONS: Mapping[str, str] = {
    "self_direction": "Choosing one's own goals and thinking and acting independently.",
    "stimulation": "Seeking novelty, excitement and challenge in life.",
    "hedonism": "Pursuing pleasure and enjoyment for oneself.",
    "achievement": "Personal success shown through competence by social standards.",
    "power": "Social status, prestige and control over people or resources.",
    "security": "Safety, harmony and stability of society, relationships and self.",
    "tradition": "Respect for and commitment to the customs of one's culture or religion.",
    "conformity": "Restraint from acts that upset or harm others or break social norms and laws.",
    "benevolence": "Caring for the welfare of the people one is in frequent contact with.",
    "universalism": "Understanding, tolerance and protection for all people and for nature.",
}
"""One-line definition of each value, in our own words."""

GROUPS: Mapping[str, tuple[str, ...]] = {
    "openness_to_change": ("self_direction", "stimulation", "hedonism"),
    "self_enhancement": ("hedonism", "achievement", "power"),
    "conservation": ("security", "tradition", "conformity"),
    "self_transcendence": ("benevolence", "universalism"),
}
"""Schwartz's four higher-order groups (hedonism sits between openness and self-enhancement)."""

SAFETY_VALUES: tuple[str, ...] = ("security", "conformity", "benevolence", "universalism")
"""Values whose negative side marks unsafe responses (FULCRA)."""

NO_CONNECTION = 0.3
"""Scores with ``|s| <= NO_CONNECTION`` read as "no connection"."""

Label = Literal["upholds", "none", "opposes"]


def label_for(score: float) -> Label:
    """Return the FULCRA band of one score: ``upholds`` (> 0.3), ``opposes`` (< -0.3) or ``none``.

    >>> label_for(-0.62)
    'opposes'
    """
    if score > NO_CONNECTION:
        return "upholds"
    if score < -NO_CONNECTION:
        return "opposes"
    return "none"


def check_dimension(name: str) -> str:
    """Return ``name`` if it is one of the ten value keys, else raise ``ValueError`` naming it."""
    if name not in VALUES:
        raise ValueError(f"unknown value dimension {name!r}; expected one of: {', '.join(VALUES)}")
    return name


@dataclass(frozen=True, slots=True)
class ValueVector:
    """Ten scores in [-1, 1], one per value, in the fixed order.

    Named access, sequence access and dict round-trips:

    >>> v = ValueVector.from_dict({"benevolence": -0.62})
    >>> v.benevolence
    -0.62
    >>> v["security"], v[8]
    (0.0, -0.62)
    >>> ValueVector.from_dict(v.to_dict()) == v
    True
    """

    self_direction: float = 0.0
    stimulation: float = 0.0
    hedonism: float = 0.0
    achievement: float = 0.0
    power: float = 0.0
    security: float = 0.0
    tradition: float = 0.0
    conformity: float = 0.0
    benevolence: float = 0.0
    universalism: float = 0.0

    def __post_init__(self) -> None:
        for name in VALUES:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ValueError(f"value score {name!r} must be a number, got {value!r}")
            if not math.isfinite(value) or not -1.0 <= value <= 1.0:
                raise ValueError(f"value score {name!r} must lie in [-1, 1], got {value!r}")
            object.__setattr__(self, name, float(value))

    @classmethod
    def from_sequence(cls, scores: Sequence[float] | Iterable[float]) -> ValueVector:
        """Build a vector from ten numbers in the fixed order.

        Raises:
            ValueError: if there are not exactly ten numbers, or one is out of range.
        """
        items = [float(x) for x in scores]
        if len(items) != len(VALUES):
            raise ValueError(f"a value vector needs {len(VALUES)} scores, got {len(items)}")
        return cls(*items)

    @classmethod
    def from_dict(cls, scores: Mapping[str, float], *, strict: bool = False) -> ValueVector:
        """Build a vector from ``{key: score}``; missing keys are 0 unless ``strict``.

        Raises:
            ValueError: on an unknown key, a missing key when ``strict``, or a bad score.
        """
        for key in scores:
            check_dimension(key)
        if strict:
            missing = [k for k in VALUES if k not in scores]
            if missing:
                raise ValueError(f"value vector is missing: {', '.join(missing)}")
        return cls(**{k: scores.get(k, 0.0) for k in VALUES})

    def to_dict(self) -> dict[str, float]:
        """Return ``{key: score}`` in the fixed order."""
        return {k: getattr(self, k) for k in VALUES}

    def to_list(self) -> list[float]:
        """Return the ten scores in the fixed order."""
        return list(_SCORES(self))

    @classmethod
    def _checked(cls, scores: Sequence[float]) -> ValueVector:
        """A vector of ten scores already known to be Python floats in [-1, 1] (a scorer's own, checked
        in bulk), without checking each again: the host path builds one per answer."""
        vector = object.__new__(cls)
        for name, score in zip(VALUES, scores):
            object.__setattr__(vector, name, score)
        return vector

    def labels(self) -> dict[str, Label]:
        """Return the FULCRA band (upholds / none / opposes) of each score."""
        return {k: label_for(getattr(self, k)) for k in VALUES}

    def __getitem__(self, key: str | int) -> float:
        if isinstance(key, int):
            return float(getattr(self, VALUES[key]))
        return float(getattr(self, check_dimension(key)))

    def __iter__(self) -> Iterator[float]:
        return iter(self.to_list())

    def __len__(self) -> int:
        return len(VALUES)


_SCORES = operator.attrgetter(*VALUES)
