"""Rates with seeded bootstrap intervals for ``guardrail policy tune``.

The false-positive rate (FPR) is the share of acceptable examples a policy alters (blocks or
rewrites), the recall the share of unacceptable ones. Acceptable and unacceptable examples are
resampled separately, so each rate keeps its own count, and every rate is measured on the same
resamples: :func:`bootstrap` gives the 95 % percentile interval of a fixed set of decisions.
:func:`new_answers` runs the search again on the first ``RETUNED`` resamples and measures each one's
bounds on the examples it left out (out of bag): bounds chosen on the examples flatter their own
rates there, and the out-of-bag rates say what to expect on answers the search did not see.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator, Mapping
from typing import NamedTuple

import numpy as np

from guardrail._lifecycle.search import BoundSpec, altered_by, propose

RETUNED = 200
"""Resamples the search runs again on for :func:`new_answers` (each costs one search)."""

_DRAWN = 4_000_000  # example indices drawn at once, so memory stays bounded on large sets


class Rate(NamedTuple):
    """A share of examples, with its 95 % bootstrap interval: ``count`` of ``total``."""

    value: float
    low: float
    high: float
    count: int
    total: int

    def to_dict(self) -> dict[str, float | int]:
        """JSON form."""
        return {"value": round(self.value, 6), "low": round(self.low, 6), "high": round(self.high, 6),
                "count": self.count, "total": self.total}  # fmt: skip

    def __str__(self) -> str:
        return f"{self.value:.1%} [{self.low:.1%}, {self.high:.1%}]"


class Expected(NamedTuple):
    """A rate to expect on new answers: over resamples, the bounds tuned again on the resample and measured
    on the examples it left out (out of bag); the mean and the 2.5 and 97.5 percentiles."""

    value: float
    low: float
    high: float
    resamples: int
    """Resamples that left out examples of the group measured."""

    def to_dict(self) -> dict[str, float | int]:
        """JSON form."""
        return {"value": round(self.value, 6), "low": round(self.low, 6), "high": round(self.high, 6),
                "resamples": self.resamples}  # fmt: skip

    def __str__(self) -> str:
        return f"{self.value:.1%} [{self.low:.1%}, {self.high:.1%}]"


def _resamples(bad: np.ndarray, resamples: int, seed: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Seeded resamples of the acceptable and of the unacceptable examples, drawn separately (each rate
    keeps its own count): chunks of ``(acceptable rows, unacceptable rows)``, one resample a row."""
    rng = np.random.default_rng(seed)
    good_rows, bad_rows = np.flatnonzero(~bad), np.flatnonzero(bad)
    per_draw = max(1, _DRAWN // max(bad.size, 1))  # resamples drawn at once, so memory stays bounded
    done = 0
    while done < resamples:
        size = min(per_draw, resamples - done)
        yield rng.choice(good_rows, size=(size, good_rows.size)), rng.choice(bad_rows, size=(size, bad_rows.size))
        done += size


def bootstrap(
    altered: Mapping[str, np.ndarray], bad: np.ndarray, resamples: int, seed: int
) -> dict[str, tuple[Rate, Rate]]:
    """The FPR and the recall of each ``altered`` flag vector, with 95 % percentile intervals, every
    flag vector measured on the same resamples."""
    groups = (np.flatnonzero(~bad), np.flatnonzero(bad))
    shares: dict[str, tuple[list[np.ndarray], list[np.ndarray]]] = {name: ([], []) for name in altered}
    for draws in _resamples(bad, resamples, seed):
        for name, flags in altered.items():
            for kept, rows in zip(shares[name], draws):
                kept.append(flags[rows].mean(axis=1))
    rates = {}
    for name, flags in altered.items():
        pair = []
        for kept, rows in zip(shares[name], groups):
            low, high = np.quantile(np.concatenate(kept), [0.025, 0.975])
            count = int(np.count_nonzero(flags[rows]))
            pair.append(Rate(count / rows.size, float(low), float(high), count, int(rows.size)))
        rates[name] = (pair[0], pair[1])
    return rates


def new_answers(
    specs: list[BoundSpec], matrix: np.ndarray, bad: np.ndarray, base: np.ndarray, target: float, resamples: int,
    seed: int,
) -> tuple[Expected, Expected]:  # fmt: skip
    """FPR and recall to expect on new answers: the search run again on each of the first ``RETUNED``
    resamples (those of :func:`bootstrap`), its bounds measured on the examples the resample left out.

    The bounds are chosen on the examples they are measured on, so the examples' own rates flatter the
    proposal; rates out of bag do not.
    """
    columns = [matrix[:, s.column] for s in specs]
    groups = (np.flatnonzero(~bad), np.flatnonzero(bad))
    found: tuple[list[float], list[float]] = ([], [])
    draws = ((g, b) for good, unacceptable in _resamples(bad, resamples, seed) for g, b in zip(good, unacceptable))
    for good, unacceptable in itertools.islice(draws, RETUNED):
        rows = np.concatenate([good, unacceptable])
        budget = math.floor(target * good.size + 1e-9)
        bounds = propose(specs, matrix[rows], bad[rows], base[rows], budget) if specs else []
        altered = altered_by(specs, columns, bounds, base)
        for kept, group, drawn in zip(found, groups, (good, unacceptable)):
            left = np.setdiff1d(group, drawn)
            if left.size:
                kept.append(float(altered[left].mean()))
    pair = []
    for kept in found:
        shares = np.array(kept) if kept else np.array([np.nan])
        low, high = np.quantile(shares, [0.025, 0.975])
        pair.append(Expected(float(shares.mean()), float(low), float(high), len(kept)))
    return pair[0], pair[1]
