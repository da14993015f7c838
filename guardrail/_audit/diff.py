"""``guardrail policy diff``: what a policy change would do to recorded answers, from their recorded scores.

Each recorded answer is decided under both policies (no model runs): its applied decision and
action, and the rules that fire. Most answers cannot change, and telling which is cheap: over the
whole score array at once (numpy), every rule's margin is measured under each policy, and an
answer whose outcome is fixed without its margins (nothing fires, or the strongest violations
all name one action) and the same under both policies is settled there. The rest (outcomes that
differ or hang on margins, margins within 1e-9 of a bound, unscored answers, answers with a
recorded language finding) are decided by each policy's :class:`Engine`, whose verdicts are the
ones reported.

Answers whose scoring failed are decided by each policy's ``on_error`` (``Engine.fail``). A
recorded ``languages.other`` violation (text in a language the recording policy did not read, so
never scored) is rebuilt under each policy with its own ``languages.other`` action and severity;
under a policy with ``other: score`` it is dropped, and the answer is counted as not re-scorable
for that policy, since its text would have been scored and never was.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from guardrail._audit.recorded import LANGUAGE_RULE, Recorded, read_recorded
from guardrail._exceptions import AuditError
from guardrail._policy.engine import Engine, language_violation
from guardrail._policy.loader import dotted, load_policy
from guardrail._policy.schema import ACTION_STRENGTH, Policy, Range, Region, SeverityRank
from guardrail._values import VALUES, ValueVector
from guardrail._verdict import Verdict

EPS = 1e-9
"""Margins this close to a bound are left to the engine: numpy may sum a distance in another order."""
SAMPLE = 64
"""Answers settled by the array pass that are decided by the engines too; any disagreement: engines for all."""
_INDEX = {name: i for i, name in enumerate(VALUES)}


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PolicyRef(_Model):
    """One side of the comparison: the policy as given and as loaded."""

    source: str = Field(description="The name or path it was given as.")
    name: str
    version: str
    hash: str


class Transition(_Model):
    """Answers whose applied outcome moves one way: ``allow->block``, or ``block(a)->block(b)`` for an action."""

    change: str
    before: str
    after: str
    rows: int = Field(ge=1)
    examples: list[str]


class RuleChange(_Model):
    """One rule that fires on different answers under the new policy."""

    rule: str
    newly_fire: int = Field(ge=0)
    no_longer_fire: int = Field(ge=0)
    newly_fire_examples: list[str]
    no_longer_fire_examples: list[str]


class PolicyDiff(_Model):
    """What re-deciding recorded answers under ``new`` instead of ``old`` changes; ``policy diff --json``.

    Example:
        >>> answers = read_recorded("scored.jsonl")  # doctest: +SKIP
        >>> result = diff_policies(load_policy("default"), load_policy("strict"), answers)  # doctest: +SKIP
        >>> result.changed, result.transitions[0].change  # doctest: +SKIP
        (1843, 'allow->block')
    """

    kind: Literal["guardrail.policy-diff"] = "guardrail.policy-diff"
    source: str = Field(description="Where the recorded answers came from.")
    old: PolicyRef
    new: PolicyRef
    rows: int = Field(ge=0, description="Recorded answers re-decided.")
    changed: int = Field(ge=0, description="Answers whose applied decision or action changes.")
    unscored: int = Field(ge=0, description="Answers without scores (failed, or all in other languages).")
    not_rescorable_old: int = Field(
        ge=0, description="Answers with unscored text OLD would have scored (other: score)."
    )
    not_rescorable_new: int = Field(ge=0, description="The same for NEW.")
    disagree_recorded: int | None = Field(
        default=None, description="Answers whose recorded decision differs from OLD's (None: none recorded)."
    )
    engine_rows: int = Field(ge=0, description="Answers the engines decided (the rest were settled in bulk).")
    transitions: list[Transition]
    rules: list[RuleChange]


@dataclass(frozen=True, slots=True)
class _Rule:
    name: str
    action: str
    rank: int
    """Action strength, then severity: the engine's order of violations before their margins."""
    margin: Callable[[np.ndarray], np.ndarray]


class _Bulk:
    """One policy's rules as array margins, mirroring :class:`Engine` rule for rule."""

    def __init__(self, policy: Policy) -> None:
        self.policy = policy

        def rule(name: str, action: str, severity: str, margin: Callable[[np.ndarray], np.ndarray]) -> _Rule:
            rank = ACTION_STRENGTH[policy.action(action).type] * len(SeverityRank) + SeverityRank[severity]
            return _Rule(name, action, rank, margin)

        rules = []
        for dim, t in policy.thresholds.items():
            i = _INDEX[dim]
            if t.min is not None:
                rules.append(rule(f"thresholds.{dim}.min", t.action, t.severity, _floor(i, t.min)))
            if t.max is not None:
                rules.append(rule(f"thresholds.{dim}.max", t.action, t.severity, _ceiling(i, t.max)))
        forbidden = [(n, r) for n, r in policy.regions.items() if r.kind == "forbidden"]
        allowed = [(n, r) for n, r in policy.regions.items() if r.kind == "allowed"]
        self.rules = [*rules, *(rule(f"regions.{n}", r.action, r.severity, _region(r)) for n, r in forbidden)]
        self.allowed = [rule(f"regions.{n}", r.action, r.severity, _region(r)) for n, r in allowed]
        self.names = [r.name for r in (*self.rules, *self.allowed)]
        actions = sorted({r.action for r in (*self.rules, *self.allowed)})
        self.actions = actions
        self._action_ids = np.array([actions.index(r.action) for r in (*self.rules, *self.allowed)], dtype=np.int64)
        self._ranks = np.array([r.rank for r in (*self.rules, *self.allowed)], dtype=np.int64)

    def fired(self, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(n x rules fired, n ambiguous): which rules fire per answer, and where a margin is too near to tell."""
        n = len(scores)
        fired = np.zeros((n, len(self.names)), dtype=bool)
        ambiguous = np.zeros(n, dtype=bool)
        for col, rule in enumerate(self.rules):
            margin = rule.margin(scores)
            fired[:, col] = margin > 0
            ambiguous |= np.abs(margin) <= EPS
        if self.allowed:
            margins = np.column_stack([r.margin(scores) for r in self.allowed])
            nearest = margins.argmin(axis=1)  # the first of equals, as min() picks
            low = margins[np.arange(n), nearest]
            outside = low > 0
            fired[np.arange(n), len(self.rules) + nearest] = outside
            ambiguous |= np.abs(low) <= EPS
            if len(self.allowed) > 1:
                second = np.partition(margins, 1, axis=1)[:, 1]
                ambiguous |= outside & (second - low <= EPS)  # which region is nearest decides the action
        return fired, ambiguous

    def outcomes(self, fired: np.ndarray) -> np.ndarray:
        """The winning action per answer (index into ``actions``), -1 when none fired, -2 when margins decide.

        The engine ranks violations by action strength, then severity, then margin: when every
        violation of the top rank names one action, that action wins whatever the margins.
        """
        if not self.names:
            return np.full(len(fired), -1, dtype=np.int64)
        ranks = np.where(fired, self._ranks, -1)
        best = ranks.max(axis=1)
        top = fired & (self._ranks == best[:, None])
        low = np.where(top, self._action_ids, len(self.actions)).min(axis=1)
        high = np.where(top, self._action_ids, -1).max(axis=1)
        return np.where(best < 0, -1, np.where(low == high, low, -2))

    def outcome(self, action: int) -> tuple[str, str | None]:
        """(applied decision, action name) of a winning action index (-1: nothing fired)."""
        if action < 0:
            return "allow", None
        name = self.actions[action]
        kind = self.policy.action(name).type
        if kind == "allow":
            return "allow", None
        return ("log" if self.policy.mode == "shadow" else kind), name


def _floor(i: int, bound: float) -> Callable[[np.ndarray], np.ndarray]:
    return lambda s: bound - s[:, i]


def _ceiling(i: int, bound: float) -> Callable[[np.ndarray], np.ndarray]:
    return lambda s: s[:, i] - bound


def _outside(scores: np.ndarray, i: int, rng: Range) -> np.ndarray:
    """Signed distance outside one dimension's range (an open range never binds: -1)."""
    sides = []
    if rng.min is not None:
        sides.append(rng.min - scores[:, i])
    if rng.max is not None:
        sides.append(scores[:, i] - rng.max)
    if not sides:
        return np.full(len(scores), -1.0)
    return sides[0] if len(sides) == 1 else np.maximum(sides[0], sides[1])


def _region(region: Region) -> Callable[[np.ndarray], np.ndarray]:
    sign = -1.0 if region.kind == "forbidden" else 1.0
    if region.box is not None:
        box = [(_INDEX[d], r) for d, r in region.box.items()]
        return lambda s: sign * np.max(np.column_stack([_outside(s, i, r) for i, r in box]), axis=1)
    spec = region.distance
    assert spec is not None  # Region validation: a box or a distance
    dims = [_INDEX[d] for d in (spec.dimensions or VALUES)]
    ref = np.array([spec.reference.get(VALUES[i], 0.0) for i in dims])

    def distance(s: np.ndarray) -> np.ndarray:
        part = s[:, dims]
        if spec.metric == "l1":
            d = np.abs(part - ref).sum(axis=1)
        elif spec.metric == "l2":
            d = np.sqrt(((part - ref) ** 2).sum(axis=1))
        else:
            norms = np.sqrt((part**2).sum(axis=1)) * math.sqrt(float((ref**2).sum()))
            dot = part @ ref
            d = 1.0 - np.divide(dot, norms, out=np.zeros_like(dot), where=norms > 0)
        return sign * (d - spec.max)

    return distance


# -- deciding ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Side:
    """One policy of the pair: its engine, its bulk rules, and whether it re-reads unscored text."""

    engine: Engine
    bulk: _Bulk
    scores_other: bool

    def decide(self, vector: ValueVector | None, error: str | None, share: float) -> Verdict:
        violation = None
        if not math.isnan(share):
            message = f"{share:.0%} of the answer was recorded in a language the policy does not read"
            violation = language_violation(self.engine.policy.languages, share, message)
        extra = () if violation is None else (violation,)
        if vector is None and error is not None:
            return self.engine.fail(error, extra=extra)
        return self.engine.decide(vector, extra=extra)


def _verdict_outcome(verdict: Verdict) -> tuple[str, str | None]:
    return verdict.decision, verdict.action_name if verdict.decision != "allow" else None


def diff_policies(old: Policy, new: Policy, recorded: Recorded, *, examples: int = 5,
                  sources: tuple[str, str] | None = None, bulk: bool = True) -> PolicyDiff:  # fmt: skip
    """Re-decide every recorded answer under ``old`` and ``new`` and report what changes.

    ``examples``: ids kept per direction and per rule. ``sources``: how the two policies were
    named (default: their names). ``bulk=False`` decides every answer with the engines (slower;
    the result is the same).
    """
    if examples < 0:
        raise ValueError(f"examples must be >= 0, got {examples}")
    sides = [_Side(Engine(p), _Bulk(p), p.languages.other == "score") for p in (old, new)]
    scores, n = recorded.scores, len(recorded)
    scored = recorded.scored
    foreign = ~np.isnan(recorded.language)
    union = list(dict.fromkeys([*sides[0].bulk.names, *sides[1].bulk.names, LANGUAGE_RULE]))
    column = {name: i for i, name in enumerate(union)}
    table: dict[tuple[str, str | None], int] = {}  # outcome -> code, shared by both sides
    fired, codes, undecided = [], [], ~scored | foreign
    clean = np.where(scored[:, None], scores, 0.0)  # unscored rows go to the engines; keep NaN out of the arrays
    for side in sides:
        own, ambiguous = side.bulk.fired(clean)
        wide = np.zeros((n, len(union)), dtype=bool)
        wide[:, [column[name] for name in side.bulk.names]] = own
        winners = side.bulk.outcomes(own)
        lookup = np.array(
            [table.setdefault(side.bulk.outcome(a), len(table)) for a in range(-1, len(side.bulk.actions))]
        )
        fired.append(wide)
        codes.append(np.where(winners == -2, -1, lookup[winners + 1]))
        undecided |= ambiguous | (winners == -2)
    undecided |= codes[0] != codes[1]
    if not bulk:
        undecided[:] = True
    rows = np.flatnonzero(undecided)
    if not _bulk_agrees(sides, recorded, ~undecided, fired, codes, table, column):
        rows = np.arange(n)  # the array pass and the engines disagree: trust the engines, for every answer
    outcomes: list[list[tuple[str, str | None]]] = [[], []]
    for f in fired:
        f[rows] = False
    for row in rows.tolist():
        for s, verdict in enumerate(_decide_row(sides, recorded, row)):
            outcomes[s].append(_verdict_outcome(verdict))
            for violation in verdict.violations:
                if violation.rule not in column:  # a rule only the engine knows: give it a column
                    column[violation.rule] = len(union)
                    union.append(violation.rule)
                    fired = [np.column_stack([f, np.zeros(n, dtype=bool)]) for f in fired]
                fired[s][row, column[violation.rule]] = True
    transitions = _transitions(recorded.ids, rows, outcomes, examples)
    rules = _rule_changes(recorded.ids, union, column, fired, examples)
    named = sources or (old.name, new.name)
    return PolicyDiff(
        source=recorded.source,
        old=_ref(named[0], sides[0].engine),
        new=_ref(named[1], sides[1].engine),
        rows=n,
        changed=sum(t.rows for t in transitions),
        unscored=int((~scored).sum()),
        not_rescorable_old=int(foreign.sum()) if sides[0].scores_other else 0,
        not_rescorable_new=int(foreign.sum()) if sides[1].scores_other else 0,
        disagree_recorded=_disagreements(recorded, codes[0], table, rows, outcomes[0]),
        engine_rows=len(rows),
        transitions=transitions,
        rules=rules,
    )


def _transitions(ids: Sequence[str], rows: np.ndarray, outcomes: Sequence[Sequence[tuple[str, str | None]]],
                 examples: int) -> list[Transition]:  # fmt: skip
    """The changed outcomes grouped by direction, most answers first."""
    moves: dict[tuple[str, str], list[int]] = {}
    for row, before, after in zip(rows.tolist(), *outcomes):
        if before != after:
            key = (before[0], after[0]) if before[0] != after[0] else (_named(before), _named(after))
            moves.setdefault(key, []).append(row)
    return [
        Transition(change=f"{a}->{b}", before=a, after=b, rows=len(hits), examples=[ids[r] for r in hits[:examples]])
        for (a, b), hits in sorted(moves.items(), key=lambda kv: (-len(kv[1]), kv[0]))
    ]


def _rule_changes(ids: Sequence[str], union: Sequence[str], column: dict[str, int], fired: Sequence[np.ndarray],
                  examples: int) -> list[RuleChange]:  # fmt: skip
    """Each rule that fires on other answers under the new policy, most changes first."""
    rules = []
    for name in union:
        c = column[name]
        gained = np.flatnonzero(fired[1][:, c] & ~fired[0][:, c])
        lost = np.flatnonzero(fired[0][:, c] & ~fired[1][:, c])
        if len(gained) or len(lost):
            rules.append(RuleChange(rule=name, newly_fire=len(gained), no_longer_fire=len(lost),
                                    newly_fire_examples=[ids[r] for r in gained[:examples]],
                                    no_longer_fire_examples=[ids[r] for r in lost[:examples]]))  # fmt: skip
    return sorted(rules, key=lambda r: (-(r.newly_fire + r.no_longer_fire), r.rule))


def _decide_row(sides: Sequence[_Side], recorded: Recorded, row: int) -> list[Verdict]:
    scores = recorded.scores[row].tolist()
    # Checked in bulk when read: [-1, 1] floats, so the vector is built without checking each again.
    vector = None if math.isnan(scores[0]) else ValueVector._checked(scores)
    error, share = recorded.errors[row], float(recorded.language[row])
    return [side.decide(vector, error, share) for side in sides]


def _bulk_agrees(sides: Sequence[_Side], recorded: Recorded, settled: np.ndarray, fired: Sequence[np.ndarray],
                 codes: Sequence[np.ndarray], table: dict[tuple[str, str | None], int],
                 column: dict[str, int]) -> bool:  # fmt: skip
    """Whether the engines decide a spread sample of the answers settled in bulk as the array pass did."""
    candidates = np.flatnonzero(settled)
    if not len(candidates):
        return True
    sample = candidates[np.unique(np.linspace(0, len(candidates) - 1, min(SAMPLE, len(candidates))).astype(int))]
    for row in sample.tolist():
        for s, verdict in enumerate(_decide_row(sides, recorded, row)):
            rules = {column[v.rule] for v in verdict.violations if v.rule in column}
            if table.get(_verdict_outcome(verdict)) != codes[s][row] or rules != set(np.flatnonzero(fired[s][row])):
                return False
    return True


def _disagreements(recorded: Recorded, old_codes: np.ndarray, table: dict[tuple[str, str | None], int],
                   rows: np.ndarray, decided: Sequence[tuple[str, str | None]]) -> int | None:  # fmt: skip
    if all(d is None for d in recorded.decisions):
        return None
    decision_of = {code: outcome[0] for outcome, code in table.items()}
    by_engine = dict(zip(rows.tolist(), (d for d, _ in decided)))
    count = 0
    for row, recorded_decision in enumerate(recorded.decisions):
        if recorded_decision is None:
            continue
        mine = by_engine[row] if row in by_engine else decision_of[int(old_codes[row])]
        count += mine != recorded_decision
    return count


def _named(outcome: tuple[str, str | None]) -> str:
    decision, action = outcome
    return decision if action is None else f"{decision}({action})"


def _ref(source: str, engine: Engine) -> PolicyRef:
    policy = engine.policy
    return PolicyRef(source=source, name=policy.name, version=policy.version, hash=engine.policy_hash)


# -- entry points ------------------------------------------------------------------------------


def diff_sources(old: str, new: str, on: str, *, project: str | None = None, examples: int = 5) -> PolicyDiff:
    """``guardrail policy diff OLD NEW --on SOURCE``: load both policies, read the answers, compare.

    Raises:
        PolicyError: A policy does not load.
        AuditError: The recorded answers cannot be read.
    """
    policies = load_policy(old), load_policy(new)  # a bad policy fails before a large file is read
    return diff_policies(*policies, read_recorded(on, project), examples=examples, sources=(old, new))


def read_diff(path: Path) -> PolicyDiff:
    """Read a file written from ``guardrail policy diff --json``.

    Raises:
        AuditError: The file cannot be read or is not such a file (the message says what is wrong).
    """
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise AuditError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise AuditError(f"{path}: not UTF-8 text ({exc.reason})") from exc
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise AuditError(f"{path}:{exc.lineno}:{exc.colno}: invalid JSON: {exc.msg}") from exc
    if not isinstance(data, dict) or data.get("kind") != "guardrail.policy-diff":
        raise AuditError(f"{path}: not the output of `guardrail policy diff --json` (no kind 'guardrail.policy-diff')")
    try:
        return PolicyDiff.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = dotted(first["loc"]) or "(top)"
        raise AuditError(f"{path}: {where}: {first['msg']}") from exc


def tables(diff: PolicyDiff) -> list[Any]:
    """The diff as rich renderables for the terminal: a summary line, the directions, the rules."""
    from rich.table import Table
    from rich.text import Text

    def ids(values: Iterable[str]) -> str:
        return ", ".join(values) or "-"

    head = (f"{diff.rows:,} answers from {diff.source}: {diff.changed:,} change "
            f"({diff.changed / max(diff.rows, 1):.1%}) from {diff.old.source} ({diff.old.name} v{diff.old.version}) "
            f"to {diff.new.source} ({diff.new.name} v{diff.new.version})")  # fmt: skip
    out: list[Any] = [Text(head)]
    notes = []
    if diff.unscored:
        notes.append(f"{diff.unscored:,} without scores (decided by on_error, or by the language rule)")
    for side, count in (("old", diff.not_rescorable_old), ("new", diff.not_rescorable_new)):
        if count:
            notes.append(
                f"{count:,} not re-scorable under the {side} policy (other: score; their text was never scored)"
            )
    if diff.disagree_recorded:
        notes.append(f"{diff.disagree_recorded:,} recorded with another decision than the old policy gives them")
    out += [Text(f"  {note}", style="dim") for note in notes]
    if diff.transitions:
        moves = Table(title="decisions and actions that change", title_justify="left")
        moves.add_column("change", no_wrap=True)
        moves.add_column("answers", justify="right")
        moves.add_column("example ids", overflow="fold")
        for t in diff.transitions:
            moves.add_row(t.change, f"{t.rows:,}", ids(t.examples))
        out.append(moves)
    if diff.rules:
        rules = Table(title="rules that fire on other answers", title_justify="left")
        rules.add_column("rule", no_wrap=True)
        rules.add_column("newly fire", justify="right")
        rules.add_column("no longer fire", justify="right")
        rules.add_column("newly firing (ids)", overflow="fold")
        rules.add_column("no longer firing (ids)", overflow="fold")
        for r in diff.rules:
            rules.add_row(r.rule, f"{r.newly_fire:,}", f"{r.no_longer_fire:,}", ids(r.newly_fire_examples),
                          ids(r.no_longer_fire_examples))  # fmt: skip
        out.append(rules)
    if not diff.transitions and not diff.rules:
        out.append(Text("no answer is decided differently, and no rule fires on other answers"))
    return out
