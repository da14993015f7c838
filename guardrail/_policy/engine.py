"""Decisions: a policy and a value vector in, a verdict out. Pure and deterministic.

Every rule of a policy becomes a *signed margin*: how far past its bound a vector lies
(positive: violated; zero or negative: safe; a bound itself belongs to the safe side).
The verdict lists every violated rule; the strongest action type wins (block > rewrite >
log > allow), then the higher severity, then the larger margin. The policy's *risk* for a
vector is the largest signed margin over its enforcing rules, a continuous score used for
ranking (AUROC) and calibration.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, NamedTuple

from guardrail._policy.schema import ACTION_STRENGTH, Distance, Languages, Policy, Range, Region, SeverityRank
from guardrail._values import VALUES, ValueVector
from guardrail._verdict import Decision, RuleCheck, Verdict, Violation

_INDEX = {name: i for i, name in enumerate(VALUES)}
LANGUAGE_RULE = "languages.other"
"""The rule judging text in languages the policy does not read (its violations come from the guard's reader)."""


def language_violation(languages: Languages, share: float, message: str) -> Violation | None:
    """The language rule's violation for a ``share`` of unread text, as ``languages`` judges it.

    ``None`` when the rule scores every language (``other: score``): then no text goes unread.
    Shared by the guard's reader, its shadow candidate and every replay of recorded answers.
    """
    if languages.other == "score":
        return None
    return Violation(LANGUAGE_RULE, None, share, 0.0, share, languages.other, languages.severity, message)


class _Hit(NamedTuple):  # a tuple: built for every rule of every check, where a frozen dataclass costs 3x
    signed: float
    dimension: str | None
    observed: float
    bound: float
    message: str  # what a violation says; thresholds leave it empty when not violated (most checks)


@dataclass(frozen=True, slots=True)
class _Rule:
    name: str
    action: str
    severity: str
    measure: Callable[[Sequence[float]], _Hit]
    enforces: bool = True
    """Whether its action does more than allow (only such rules count towards risk)."""


def _floor(dim: str, bound: float) -> Callable[[Sequence[float]], _Hit]:
    i = _INDEX[dim]

    def measure(v: Sequence[float]) -> _Hit:
        margin = bound - v[i]
        text = f"{dim} {v[i]:+.2f}, below the floor {bound:+.2f} by {margin:.2f}" if margin > 0 else ""
        return _Hit(margin, dim, v[i], bound, text)

    return measure


def _ceiling(dim: str, bound: float) -> Callable[[Sequence[float]], _Hit]:
    i = _INDEX[dim]

    def measure(v: Sequence[float]) -> _Hit:
        margin = v[i] - bound
        text = f"{dim} {v[i]:+.2f}, above the ceiling {bound:+.2f} by {margin:.2f}" if margin > 0 else ""
        return _Hit(margin, dim, v[i], bound, text)

    return measure


def _edges(rng: Range) -> list[tuple[str, float]]:
    # Open edges (the ends of [-1, 1]) never bind, so only stated bounds count.
    return [(side, b) for side, b in (("min", rng.min), ("max", rng.max)) if b is not None]


def _box(name: str, region: Region) -> Callable[[Sequence[float]], _Hit]:
    assert region.box is not None  # guaranteed by Region validation
    box = [(d, _INDEX[d], _edges(r)) for d, r in region.box.items()]
    forbidden = region.kind == "forbidden"

    def measure(v: Sequence[float]) -> _Hit:
        # Per dimension, the signed distance *outside* its range (negative: inside by that much).
        worst: tuple[float, str, float] | None = None
        for dim, i, edges in box:
            if not edges:
                outside, bound = -1.0, 0.0
            else:
                outside, bound = max(((b - v[i]) if side == "min" else (v[i] - b), b) for side, b in edges)
            if worst is None or outside > worst[0]:
                worst = (outside, dim, bound)
        assert worst is not None
        outside, dim, bound = worst
        value = v[_INDEX[dim]]
        if forbidden:
            # Inside the box means every dimension inside; the least-deep one binds.
            text = f"{dim} {value:+.2f} inside forbidden region '{name}' (edge {bound:+.2f}) by {-outside:.2f}"
            return _Hit(-outside, dim, value, bound, text)
        text = f"{dim} {value:+.2f} outside allowed region '{name}' (edge {bound:+.2f}) by {outside:.2f}"
        return _Hit(outside, dim, value, bound, text)

    return measure


def _distance_fn(spec: Distance) -> Callable[[Sequence[float]], float]:
    dims = [_INDEX[d] for d in (spec.dimensions or VALUES)]
    ref = [spec.reference.get(VALUES[i], 0.0) for i in dims]

    def distance(v: Sequence[float]) -> float:
        diff = [v[i] - r for i, r in zip(dims, ref)]
        if spec.metric == "l1":
            return sum(abs(x) for x in diff)
        if spec.metric == "l2":
            return math.sqrt(sum(x * x for x in diff))
        dot = sum(v[i] * r for i, r in zip(dims, ref))
        norms = math.sqrt(sum(v[i] ** 2 for i in dims)) * math.sqrt(sum(r * r for r in ref))
        # A zero vector has no direction: treat it as orthogonal to the reference.
        return 1.0 - (dot / norms if norms > 0 else 0.0)

    return distance


def _ball(name: str, region: Region) -> Callable[[Sequence[float]], _Hit]:
    assert region.distance is not None  # guaranteed by Region validation
    spec = region.distance
    distance = _distance_fn(spec)
    forbidden = region.kind == "forbidden"

    def measure(v: Sequence[float]) -> _Hit:
        d = distance(v)
        if forbidden:
            text = f"{spec.metric} distance {d:.2f} to '{name}' within {spec.max:.2f} by {spec.max - d:.2f}"
            return _Hit(spec.max - d, None, d, spec.max, text)
        text = (
            f"{spec.metric} distance {d:.2f} from allowed region '{name}' exceeds {spec.max:.2f} by {d - spec.max:.2f}"
        )
        return _Hit(d - spec.max, None, d, spec.max, text)

    return measure


class Engine:
    """A policy compiled once into rules; :meth:`decide` maps a vector to a :class:`Verdict`.

    Example:
        >>> from guardrail import Policy, ValueVector
        >>> engine = Engine(Policy(name="p", thresholds={"benevolence": {"min": -0.3}}))
        >>> engine.decide(ValueVector(benevolence=-0.62)).violations[0].message
        'benevolence -0.62, below the floor -0.30 by 0.32'
    """

    def __init__(self, policy: Policy) -> None:
        self.policy = policy
        self.policy_hash = policy.content_hash()
        rules: list[_Rule] = []
        bounds: dict[str, tuple[str, int, float, bool]] = {}  # threshold rule -> (dimension, index, bound, floor?)
        for dim, t in policy.thresholds.items():
            if t.min is not None:
                rules.append(_Rule(f"thresholds.{dim}.min", t.action, t.severity, _floor(dim, t.min)))
                bounds[rules[-1].name] = (dim, _INDEX[dim], t.min, True)
            if t.max is not None:
                rules.append(_Rule(f"thresholds.{dim}.max", t.action, t.severity, _ceiling(dim, t.max)))
                bounds[rules[-1].name] = (dim, _INDEX[dim], t.max, False)
        self._allowed: list[_Rule] = []
        for name, region in policy.regions.items():
            shape = _box(name, region) if region.box is not None else _ball(name, region)
            rule = _Rule(f"regions.{name}", region.action, region.severity, shape)
            (rules if region.kind == "forbidden" else self._allowed).append(rule)
        enforcing = {name for name in {r.action for r in rules + self._allowed} if policy.action(name).type != "allow"}
        rules = [replace(r, enforces=r.action in enforcing) for r in rules]
        self._allowed = [replace(r, enforces=r.action in enforcing) for r in self._allowed]
        # Thresholds are measured inline, as a margin, in the order the policy lists them.
        self._thresholds = [(r, *bounds[r.name]) for r in rules if r.name in bounds]
        self._regions = [r for r in rules if r.name not in bounds]
        self._evaluator = self.evaluate  # one bound method for every verdict, not one per check

    def __reduce__(self) -> tuple[type[Engine], tuple[Policy]]:
        # Rules are closures, which do not pickle; the policy rebuilds them, so a verdict pickles whole.
        return (Engine, (self.policy,))

    def evaluate(self, verdict: Verdict) -> tuple[RuleCheck, ...]:
        """Every rule this policy evaluated for ``verdict``, in evaluation order (see :meth:`Verdict.rules`).

        Thresholds in the order the policy lists them, then forbidden regions, then allowed regions
        (only the nearest fires, when the vector is outside them all), then rules outside the value
        space (the language rule). Recomputed from the verdict's scores: the engine is pure.
        """
        failed = verdict.error is not None and self.policy.on_error == "block"
        decider = verdict.violations[0].rule if verdict.violations and not failed else None
        checks: list[RuleCheck] = []
        if verdict.scores is not None:
            v = verdict.scores.to_list()
            for rule, dim, i, bound, floor in self._thresholds:
                margin = bound - v[i] if floor else v[i] - bound
                checks.append(RuleCheck(rule.name, dim, v[i], bound, margin, rule.action, margin > 0,
                                        rule.name == decider))  # fmt: skip
            for rule in self._regions:
                hit = rule.measure(v)
                checks.append(RuleCheck(rule.name, hit.dimension, hit.observed, hit.bound, hit.signed, rule.action,
                                        hit.signed > 0, rule.name == decider))  # fmt: skip
            allowed = [(rule, rule.measure(v)) for rule in self._allowed]
            nearest = min(allowed, key=lambda rh: rh[1].signed)[0] if allowed else None
            for rule, hit in allowed:
                fired = rule is nearest and hit.signed > 0
                checks.append(RuleCheck(rule.name, hit.dimension, hit.observed, hit.bound, hit.signed, rule.action,
                                        fired, fired and rule.name == decider))  # fmt: skip
        value_rules = {c.rule for c in checks}
        for v in verdict.violations:
            if v.rule not in value_rules:
                checks.append(RuleCheck(v.rule, v.dimension, v.observed, v.bound, v.margin, v.action, True,
                                        v.rule == decider))  # fmt: skip
        rule = self.policy.languages
        if rule.other != "score" and verdict.scores is not None and all(c.rule != LANGUAGE_RULE for c in checks):
            # The rule fires on any share of unread text, so a quiet one read none: share 0, at its bound.
            checks.append(RuleCheck(LANGUAGE_RULE, None, 0.0, 0.0, 0.0, rule.other, False, False))
        return tuple(checks)

    def _hits(self, v: Sequence[float]) -> list[tuple[_Rule, _Hit]]:
        """Every rule's measure of ``v``, thresholds as bare margins unless violated (most checks violate none)."""
        hits = []
        for rule, dim, i, bound, floor in self._thresholds:
            margin = bound - v[i] if floor else v[i] - bound
            hits.append((rule, rule.measure(v) if margin > 0 else _Hit(margin, dim, v[i], bound, "")))
        hits += [(rule, rule.measure(v)) for rule in self._regions]
        if self._allowed:
            # Outside every allowed region violates; the nearest allowed region explains it.
            hits.append(min(((r, r.measure(v)) for r in self._allowed), key=lambda rh: rh[1].signed))
        return hits

    def risk(self, vector: ValueVector) -> float:
        """Largest signed margin over the rules that do more than allow (0.0 with no such rule)."""
        return self.decide(vector).risk

    def decide(
        self,
        vector: ValueVector | None,
        *,
        latency_ms: float = 0.0,
        extra: Sequence[Violation] = (),
        fields: Mapping[str, Any] | None = None,
    ) -> Verdict:
        """Return the verdict for one score vector. Same vector, same verdict.

        ``extra`` holds violations found outside the value space (the language rule), ranked with
        the value rules' own; ``vector`` is ``None`` when nothing of the answer was scored.
        ``fields`` sets further :class:`Verdict` fields (the decision id, the language...), so a
        guard builds each verdict once instead of copying it.
        """
        return self._decide(vector, latency_ms, extra, None, fields)

    def _decide(
        self, vector: ValueVector | None, latency_ms: float, extra: Sequence[Violation], error: str | None,
        fields: Mapping[str, Any] | None,
    ) -> Verdict:  # fmt: skip
        hits = self._hits(vector.to_list()) if vector is not None else []
        enforcing = [h.signed for r, h in hits if r.enforces]
        violations = [
            Violation(r.name, h.dimension, h.observed, h.bound, h.signed, r.action, r.severity, h.message)
            for r, h in hits
            if h.signed > 0
        ]
        if extra:
            enforcing += [v.margin for v in extra if self.policy.action(v.action).type != "allow"]
            violations += extra
        if len(violations) > 1:
            violations.sort(key=self._rank, reverse=True)
        winner = violations[0].action if violations else None
        risk = max(enforcing, default=0.0)
        return self._verdict(vector, tuple(violations), winner, risk, latency_ms, error, fields)

    def fail(
        self,
        error: str,
        *,
        latency_ms: float = 0.0,
        extra: Sequence[Violation] = (),
        fields: Mapping[str, Any] | None = None,
    ) -> Verdict:
        """Return the verdict for a check whose scoring failed, as the policy's ``on_error`` says.

        With ``on_error: allow`` the ``extra`` violations still decide (a language rule's block holds).
        """
        if self.policy.on_error == "allow":
            return self._decide(None, latency_ms, extra, error, fields)
        action = self.policy.error_action or "block"
        return self._verdict(None, tuple(extra), action, 1.0, latency_ms, error, fields)

    def _rank(self, violation: Violation) -> tuple[int, int, float]:
        action = self.policy.action(violation.action)
        return (ACTION_STRENGTH[action.type], SeverityRank[violation.severity], violation.margin)

    def _verdict(
        self,
        vector: ValueVector | None,
        violations: tuple[Violation, ...],
        action_name: str | None,
        risk: float,
        latency_ms: float,
        error: str | None,
        fields: Mapping[str, Any] | None,
    ) -> Verdict:
        action = self.policy.action(action_name) if action_name else None
        intended: Decision = action.type if action else "allow"
        decision: Decision = intended
        if self.policy.mode == "shadow" and intended != "allow":
            decision = "log"
        return Verdict(
            decision=decision,
            intended=intended,
            scores=vector,
            violations=violations,
            action=action if intended != "allow" else None,
            action_name=action_name if intended != "allow" else None,
            policy_name=self.policy.name,
            policy_version=self.policy.version,
            policy_hash=self.policy_hash,
            mode=self.policy.mode,
            risk=risk,
            latency_ms=latency_ms,
            error=error,
            _evaluator=self._evaluator,
            **(fields or {}),
        )


def decide(policy: Policy, vector: ValueVector) -> Verdict:
    """Decide one vector against one policy (compiles the policy; prefer :class:`Engine` in loops)."""
    return Engine(policy).decide(vector)
