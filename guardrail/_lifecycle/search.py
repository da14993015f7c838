"""The bound search of ``guardrail policy tune``: the floors and ceilings with the best recall within an FPR budget.

Each bound to tune (a :class:`BoundSpec`) gets candidate values, loosest first: off (the edge of
[-1, 1]), P's own bound, and one just past each distinct score of the examples (at most
``_MAX_CANDIDATES``, spaced by quantile). A candidate sits halfway between two recorded scores (the
fifth decimal is 5), so recorded and live scores are decided alike. For every candidate a boolean
row says which examples it alters; with ``base`` (what the rules kept from P alter) the search
counts, in numpy, how many unacceptable (true positives) and acceptable (false positives) examples
the policy alters:

1. greedy: from every bound off, tighten the bound that adds the most unacceptable examples per
   acceptable one, while the false positives stay within the budget;
2. coordinate ascent from the greedy result and from P's own bounds: move one bound at a time to
   its best value with the others fixed, until none moves; the better of the two wins;
3. each bound moves to the middle of the gap between the examples only it alters and the nearest
   ones it lets through, which decides every example as before (P's own bound stays when it lies
   in that gap).

Altering is a union: a policy alters an answer when any violated rule's action blocks or rewrites,
whatever wins the ranking, so the counts are exact; the caller confirms them with the engine.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from guardrail._lifecycle.labelled import DECIMALS
from guardrail._policy.schema import Policy
from guardrail._values import NO_CONNECTION, VALUES, check_dimension

Side = Literal["min", "max"]

_HALF = 0.5 * 10.0**-DECIMALS  # bounds sit halfway between recorded scores: recorded and live scores agree
_MAX_CANDIDATES = 256
_MAX_PASSES = 50


@dataclass(frozen=True)
class BoundSpec:
    """One bound to tune: which value and side, P's bound, its action, and how far it may move."""

    value: str
    side: Side
    before: float | None
    action: str
    limit: float
    """The tightest bound allowed: a floor at most this, a ceiling at least this."""

    @property
    def column(self) -> int:
        """The value's index in the fixed order (its column of a score matrix)."""
        return VALUES.index(self.value)

    @property
    def rule(self) -> str:
        """The rule's name, as on verdicts: ``thresholds.security.min``."""
        return f"thresholds.{self.value}.{self.side}"

    @property
    def off(self) -> float:
        """The bound that alters nothing (the edge of [-1, 1])."""
        return -1.0 if self.side == "min" else 1.0

    def alters(self, scores: np.ndarray, bound: float | np.ndarray) -> np.ndarray:
        """Which scores this bound at ``bound`` alters (NaN, nothing scored: none)."""
        if self.side == "min":
            return np.less(scores, bound)
        return np.greater(scores, bound)


def bound_specs(policy: Policy, values: Iterable[str], ceilings: Iterable[str], allow_band: bool) -> list[BoundSpec]:
    """The bounds to tune: P's own (both sides where it has both), then each named value's floor (or ceiling)."""
    sides: dict[str, list[Side]] = {}
    for value, t in policy.thresholds.items():
        sides[value] = [side for side, b in (("min", t.min), ("max", t.max)) if b is not None]
    ceilings = {check_dimension(v) for v in ceilings}
    for value in [check_dimension(v) for v in values] + sorted(ceilings, key=VALUES.index):
        want: Side = "max" if value in ceilings else "min"
        if want not in sides.setdefault(value, []):
            sides[value].append(want)
    specs = []
    for value, wanted in sides.items():
        threshold = policy.thresholds.get(value)
        for side in wanted:
            before = None if threshold is None else getattr(threshold, side)
            action = "block" if threshold is None else threshold.action
            if allow_band:
                limit = 1.0 if side == "min" else -1.0
            elif side == "min":  # never into the band, though a bound P already has there may stay
                limit = max(-NO_CONNECTION, before if before is not None else -1.0)
            else:
                limit = min(NO_CONNECTION, before if before is not None else 1.0)
            specs.append(BoundSpec(value, side, before, action, limit))
    return specs


def _candidates(spec: BoundSpec, scores: np.ndarray) -> np.ndarray:
    """Bounds worth trying, loosest first: off, P's own, and one just past each distinct score."""
    seen = np.unique(scores[~np.isnan(scores)])
    if spec.side == "min":
        tried = np.round(seen + _HALF, 5)  # alters every score up to and including s
        tried = tried[tried <= spec.limit]
    else:
        tried = np.round(seen - _HALF, 5)
        tried = tried[tried >= spec.limit]
    if len(tried) > _MAX_CANDIDATES:
        tried = tried[np.unique(np.linspace(0, len(tried) - 1, _MAX_CANDIDATES).round().astype(int))]
    fixed = [spec.off] + ([spec.before] if spec.before is not None else [])
    values = np.unique(np.concatenate([tried, fixed]))
    return values if spec.side == "min" else values[::-1]


class _Search:
    """The best bounds for FPR <= budget / acceptable examples, on precomputed coverage matrices."""

    def __init__(self, covers: list[np.ndarray], base: np.ndarray, bad: np.ndarray, budget: int) -> None:
        self.covers, self.base, self.bad, self.good, self.budget = covers, base, bad, ~bad, budget

    def _counts(self, state: Sequence[int]) -> tuple[int, int]:
        covered = self.base.copy()
        for cover, k in zip(self.covers, state):
            covered |= cover[k]
        return int(np.count_nonzero(covered & self.bad)), int(np.count_nonzero(covered & self.good))

    def rank(self, state: Sequence[int]) -> tuple[int, int, int]:
        """Feasible first, then more unacceptable examples altered, then fewer acceptable ones."""
        tp, fp = self._counts(state)
        return (1, tp, -fp) if fp <= self.budget else (0, -fp, tp)

    def greedy(self) -> list[int]:
        """From every bound off, tighten the bound that alters the most unacceptable examples per
        acceptable one, while the budget holds."""
        state = [0] * len(self.covers)
        covered = self.base.copy()
        for cover in self.covers:
            covered |= cover[0]
        fp = int(np.count_nonzero(covered & self.good))
        while True:
            best: tuple[float, int, int, int, int] | None = None  # ratio, tp, -step, j, k
            for j, cover in enumerate(self.covers):
                gain = cover[state[j] + 1 :] & ~covered
                gtp = np.count_nonzero(gain & self.bad, axis=1)
                gfp = np.count_nonzero(gain & self.good, axis=1)
                ok = np.flatnonzero((gtp > 0) & (fp + gfp <= self.budget))
                if ok.size == 0:
                    continue
                ratio = gtp[ok] / (gfp[ok] + 1.0)
                pick = ok[np.lexsort((ok, -gtp[ok], -ratio))[0]]  # best ratio, then most gained, then loosest
                key = (float(ratio[ok == pick][0]), int(gtp[pick]), -int(pick), j, state[j] + 1 + int(pick))
                if best is None or key[:3] > best[:3]:
                    best = key
            if best is None:
                return state
            j, k = best[3], best[4]
            fp += int(np.count_nonzero(self.covers[j][k] & ~covered & self.good))
            covered |= self.covers[j][k]
            state[j] = k

    def polish(self, state: Sequence[int], prefer: Sequence[int]) -> list[int]:
        """Coordinate ascent: move one bound at a time to its best value with the others fixed, until none
        moves. Ties keep the current value, then ``prefer`` (P's bound), then the loosest."""
        state = list(state)
        for _ in range(_MAX_PASSES):
            moved = False
            for j, cover in enumerate(self.covers):
                other = self.base.copy()
                for i, k in enumerate(state):
                    if i != j:
                        other |= self.covers[i][k]
                new = cover & ~other
                tp = np.count_nonzero(new & self.bad, axis=1) + int(np.count_nonzero(other & self.bad))
                fp = np.count_nonzero(new & self.good, axis=1) + int(np.count_nonzero(other & self.good))
                feasible = fp <= self.budget
                keys = [((1, int(t), -int(f)) if ok else (0, -int(f), int(t)), k == state[j], k == prefer[j], -k)
                        for k, (t, f, ok) in enumerate(zip(tp, fp, feasible))]  # fmt: skip
                k = max(range(len(keys)), key=keys.__getitem__)
                if keys[k][0] > keys[state[j]][0]:
                    state[j], moved = k, True
            if not moved:
                break
        return state


def _centred(spec: BoundSpec, scores: np.ndarray, bound: float, others: np.ndarray) -> float:
    """``bound`` moved to the middle of the gap between the examples only it alters and the ones it
    lets through (nothing else alters them), which decides every example as before; P's own bound
    when that lies in the gap."""
    free = ~others & ~np.isnan(scores)
    hit = spec.alters(scores, bound)
    held, passed = scores[free & hit], scores[free & ~hit]
    if spec.side == "min":  # every floor in (held.max(), passed.min()] decides alike
        low = float(held.max()) if held.size else -1.0 - _HALF
        high = min(float(passed.min()) if passed.size else 1.0, spec.limit)
    else:  # every ceiling in [passed.max(), held.min()) decides alike
        low = max(float(passed.max()) if passed.size else -1.0, spec.limit)
        high = float(held.min()) if held.size else 1.0 + _HALF

    def fits(b: float) -> bool:
        """Whether bound ``b`` decides every example as ``bound`` does."""
        inside = low < b <= high if spec.side == "min" else low <= b < high
        return inside and -1.0 <= b <= 1.0

    if spec.before is not None and fits(spec.before):
        return spec.before
    middle = (max(low, -1.0) + min(high, 1.0)) / 2
    snapped = round(math.floor(round(middle * 10**DECIMALS, 6)) / 10**DECIMALS + _HALF, 5)
    return snapped if fits(snapped) else bound


def propose(specs: list[BoundSpec], matrix: np.ndarray, bad: np.ndarray, base: np.ndarray, budget: int) -> list[float]:
    """The tuned bound of each spec on these examples (see the module docs)."""
    columns = [matrix[:, s.column] for s in specs]
    grids = [_candidates(s, c) for s, c in zip(specs, columns)]
    covers = [s.alters(c[None, :], g[:, None]) for s, c, g in zip(specs, columns, grids)]
    search = _Search(covers, base, bad, budget)
    prefer = [int(np.flatnonzero(g == s.before)[0]) if s.before is not None else 0 for s, g in zip(specs, grids)]
    results = [search.polish(search.greedy(), prefer), search.polish(prefer, prefer)]
    # The better of the two; on a tie the one that keeps more of P's bounds.
    best = max(results, key=lambda st: (search.rank(st), sum(a == b for a, b in zip(st, prefer))))
    bounds = [float(g[k]) for g, k in zip(grids, best)]
    for j, spec in enumerate(specs):
        bounds[j] = _centred(spec, columns[j], bounds[j], altered_by(specs, columns, bounds, base, leave_out=j))
    return bounds


def altered_by(
    specs: Sequence[BoundSpec], columns: Sequence[np.ndarray], bounds: Sequence[float], base: np.ndarray,
    leave_out: int | None = None,
) -> np.ndarray:  # fmt: skip
    """The examples the kept rules (``base``) and the tuned bounds alter, one bound left out if asked."""
    altered = base.copy()
    for j, (spec, column, bound) in enumerate(zip(specs, columns, bounds)):
        if j != leave_out:
            altered |= spec.alters(column, bound)
    return altered
