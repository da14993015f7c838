"""Rule coverage of a policy's tests: which rules some case made fire, and which some case kept quiet.

The rules of a policy are its threshold bounds (``thresholds.<value>.min|max``), its regions
(``regions.<name>``), the language rule (``languages.other``, unless the policy scores every
language) and every action those rules name (``actions.<name>``). A rule is *covered* twice over:
once when some case made it fire, once when some case kept it quiet, so the coverage of a policy
is the share of those ``2 x rules`` outcomes its cases reached (OPA's ``--coverage``, for rules
instead of lines).

- A value rule fires or stays quiet as :meth:`Verdict.rules` says; a case with nothing scored
  leaves it untested.
- The language rule fires when the verdict carries its violation and is quiet otherwise.
- An action fires when it is the verdict's ``action_name`` (an ``allow`` action, which never is:
  when a rule naming it fired and nothing stronger decided), and is quiet in any other verdict.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple

from guardrail._policy.engine import LANGUAGE_RULE
from guardrail._policy.schema import Policy
from guardrail._verdict import Verdict

"""The language rule's name, as in a verdict's violations."""

RuleKind = Literal["threshold", "region", "language", "action"]


class Rule(NamedTuple):
    """One rule of a policy as coverage counts it."""

    name: str
    """``thresholds.security.min``, ``regions.hostile``, ``languages.other`` or ``actions.block``."""
    kind: RuleKind


def policy_rules(policy: Policy) -> tuple[Rule, ...]:
    """Every rule of ``policy`` in the order the policy lists them, then the actions they name."""
    rules: list[Rule] = []
    named: list[str] = []  # action names in order of first use
    for dim, threshold in policy.thresholds.items():
        for side, bound in (("min", threshold.min), ("max", threshold.max)):
            if bound is not None:
                rules.append(Rule(f"thresholds.{dim}.{side}", "threshold"))
                named.append(threshold.action)
    for name, region in policy.regions.items():
        rules.append(Rule(f"regions.{name}", "region"))
        named.append(region.action)
    if policy.languages.other != "score":
        rules.append(Rule(LANGUAGE_RULE, "language"))
        named.append(policy.languages.other)
    rules += [Rule(f"actions.{action}", "action") for action in dict.fromkeys(named)]
    return tuple(rules)


def outcomes(verdict: Verdict, rules: Iterable[Rule]) -> dict[str, bool]:
    """Each rule ``verdict`` tested: ``True`` when it fired, ``False`` when it stayed quiet (untested: absent)."""
    checks = {check.rule: check.fired for check in verdict.rules()}
    violated = {violation.rule for violation in verdict.violations}
    found: dict[str, bool] = {}
    for rule in rules:
        if rule.kind == "language":
            found[rule.name] = rule.name in violated
        elif rule.kind == "action":
            found[rule.name] = _action_fired(verdict, rule.name.removeprefix("actions."))
        elif rule.name in checks:
            found[rule.name] = checks[rule.name]
    return found


def _action_fired(verdict: Verdict, action: str) -> bool:
    if verdict.action_name is not None:
        return verdict.action_name == action
    # An allow action never becomes the verdict's action: it "fires" when a rule naming it did.
    return any(v.action == action for v in verdict.violations)


@dataclass(frozen=True, slots=True)
class RuleCoverage:
    """How the cases of a policy exercised one rule."""

    rule: str
    kind: RuleKind
    fired_by: tuple[str, ...]
    """The cases in which it fired, in run order."""
    quiet_in: tuple[str, ...]
    """The cases in which it was tested and stayed quiet."""

    @property
    def reached(self) -> int:
        """Outcomes reached: 0, 1 or 2 (fired in some case, quiet in some case)."""
        return bool(self.fired_by) + bool(self.quiet_in)

    def to_dict(self) -> dict[str, Any]:
        """JSON form, as in ``guardrail policy test --json``."""
        return {"rule": self.rule, "kind": self.kind, "fires": bool(self.fired_by), "quiet": bool(self.quiet_in),
                "fired_by": list(self.fired_by), "quiet_in": list(self.quiet_in)}  # fmt: skip


@dataclass(frozen=True, slots=True)
class Coverage:
    """Rule coverage of one policy by the cases of its test files."""

    policy: str
    version: str
    policy_hash: str
    files: tuple[str, ...]
    """The test files whose cases count."""
    rules: tuple[RuleCoverage, ...]

    @property
    def reached(self) -> int:
        """Outcomes reached over all rules."""
        return sum(r.reached for r in self.rules)

    @property
    def total(self) -> int:
        """Outcomes there are: two per rule."""
        return 2 * len(self.rules)

    @property
    def percent(self) -> float:
        """``reached / total`` in percent; 100 for a policy without rules."""
        return 100.0 * self.reached / self.total if self.total else 100.0

    def to_dict(self) -> dict[str, Any]:
        """JSON form, as in ``guardrail policy test --json``."""
        return {
            "policy": {"name": self.policy, "version": self.version, "hash": self.policy_hash},
            "files": list(self.files),
            "rules": [r.to_dict() for r in self.rules],
            "reached": self.reached,
            "total": self.total,
            "percent": round(self.percent, 1),
        }

    def render(self) -> list[str]:
        """The coverage table, one line per rule, then the percentage."""
        width = max([len("rule"), *(len(r.rule) for r in self.rules)])
        lines = [f"rule coverage of policy {self.policy} v{self.version} ({', '.join(self.files)})",
                 f"  {'rule':<{width}}  fires  quiet"]  # fmt: skip
        for r in self.rules:
            lines.append(f"  {r.rule:<{width}}  {_yes(r.fired_by):<5}  {_yes(r.quiet_in)}")
        lines.append(f"  coverage {self.percent:.1f} % ({self.reached} of {self.total} outcomes)")
        return lines


def _yes(cases: tuple[str, ...]) -> str:
    return "yes" if cases else "NO"


def coverage(policy: Policy, files: Sequence[str], verdicts: Sequence[tuple[str, Verdict]]) -> Coverage:
    """The rule coverage of ``policy`` by ``verdicts``, each ``(case name, verdict)``."""
    rules = policy_rules(policy)
    fired: dict[str, list[str]] = {r.name: [] for r in rules}
    quiet: dict[str, list[str]] = {r.name: [] for r in rules}
    for name, verdict in verdicts:
        for rule, hit in outcomes(verdict, rules).items():
            (fired if hit else quiet)[rule].append(name)
    covered = tuple(RuleCoverage(r.name, r.kind, tuple(fired[r.name]), tuple(quiet[r.name])) for r in rules)
    return Coverage(policy.name, policy.version, policy.content_hash(), tuple(files), covered)
