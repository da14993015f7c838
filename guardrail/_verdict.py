"""The outcome of one check: decision, scores, violations with margins, and the action to apply."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, NamedTuple

from guardrail._outputs import OutputPart
from guardrail._values import ValueVector

if TYPE_CHECKING:
    # Type only: a verdict carries the policy action it applies; the kernel never loads the policy wing.
    from guardrail._policy.schema import Action

Decision = Literal["allow", "log", "block", "rewrite"]


@dataclass(frozen=True, slots=True)
class Violation:
    """One broken rule, with the observed value, the bound it crossed and by how much.

    ``margin`` is always positive: how far past the bound the observation lies. For a
    threshold or a box, ``dimension`` names the value; for a distance region it is ``None``
    and ``observed``/``bound`` are distances.
    """

    rule: str
    """Where the rule lives in the policy, e.g. ``thresholds.benevolence.min`` or ``regions.hate``."""
    dimension: str | None
    observed: float
    bound: float
    margin: float
    action: str
    """Name of the policy action this rule triggers."""
    severity: str
    message: str
    """Human explanation, e.g. ``benevolence -0.62, below the floor -0.30 by 0.32``."""

    def to_dict(self) -> dict[str, Any]:
        """Return the JSON form used by the CLI and ``guardrail score``."""
        return {
            "rule": self.rule,
            "dimension": self.dimension,
            "observed": round(self.observed, 4),
            "bound": round(self.bound, 4),
            "margin": round(self.margin, 4),
            "action": self.action,
            "severity": self.severity,
            "message": self.message,
        }


class RuleCheck(NamedTuple):
    """One rule of the policy as evaluated for a verdict (:meth:`Verdict.rules`), in evaluation order.

    ``margin`` is signed: how far past its bound the observation lies, positive when the rule is
    violated, zero or negative when it holds (a bound itself is on the safe side).
    """

    rule: str
    """Where the rule lives in the policy (``thresholds.benevolence.min``, ``regions.hate``, ``languages.other``)."""
    dimension: str | None
    observed: float
    bound: float
    margin: float
    action: str
    fired: bool
    """Whether the rule is violated (for allowed regions: only the nearest, when outside them all)."""
    decided: bool
    """Whether this rule's violation decided the verdict (the first of its violations)."""

    def to_dict(self) -> dict[str, Any]:
        """JSON form, as in ``guardrail check --explain --json``."""
        out = self._asdict()
        for key in ("observed", "bound", "margin"):
            out[key] = round(out[key], 4)
        return out


@dataclass(frozen=True, slots=True)
class Rewrite:
    """How a ``rewrite`` decision was carried out: strategy, tries, and what was delivered."""

    strategy: str
    attempts: int
    accepted: bool
    final_decision: Decision
    """``rewrite`` when the rewritten answer was delivered, else the fallback action's type."""
    fallback: str | None
    """Name of the fallback action applied, ``None`` when the rewrite was accepted."""
    reason: str

    def to_dict(self) -> dict[str, Any]:
        """JSON form, as in ``Verdict.to_dict()``."""
        return {
            "strategy": self.strategy,
            "attempts": self.attempts,
            "accepted": self.accepted,
            "final_decision": self.final_decision,
            "fallback": self.fallback,
            "reason": self.reason,
        }


@dataclass(frozen=True, slots=True)
class Verdict:
    """What the guard decided about one response, and why.

    ``decision`` is what is applied. In shadow mode it is ``log`` whenever the rules asked for
    more, and ``intended`` keeps what they asked for. ``scores`` is ``None`` when scoring
    failed (``error`` says why; the policy's ``on_error`` chose the decision) or when nothing was
    left to score (all of the answer in languages the policy does not read: the
    ``languages.other`` violation says so).

    Example:
        >>> verdict = guard.check("Here is how to hurt them...")  # doctest: +SKIP
        >>> verdict.decision, verdict.scores.benevolence  # doctest: +SKIP
        ('block', -0.71)
    """

    decision: Decision
    intended: Decision
    scores: ValueVector | None
    violations: tuple[Violation, ...]
    action: Action | None
    """The winning action with its parameters (message, strategy...), ``None`` when allowed."""
    action_name: str | None
    policy_name: str
    policy_version: str
    policy_hash: str
    mode: str
    risk: float
    """Largest signed margin over the policy's rules: > 0 means some rule is violated."""
    latency_ms: float = 0.0
    error: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    output: str | None = None
    """The text delivered to the caller, set by ``Guard.enforce`` (``None`` from a bare check)."""
    rewrite: Rewrite | None = None
    """How a rewrite was carried out (``Guard.enforce`` with a rewrite decision)."""
    part: OutputPart | None = None
    """Which piece of an answer was checked (a choice, its reasoning, a tool call), when the caller said."""
    language: str | None = None
    """The answer's main language as detected (``en``, ``fr``...), ``None`` when too short to tell
    or not detected (a policy with ``languages.detect: false``)."""
    normalized: tuple[str, ...] = ()
    """Disguises undone before scoring (``base64``, ``homoglyphs``...): the scores are of the undone text."""
    form: Literal["decoded"] | None = None
    """``decoded`` when a decoded run (a base64 block...) scored on its own decided, not the whole answer."""
    decision_id: str | None = None
    """A unique id of this decision, on its span (``guardrail.decision_id``) and its decision-log line."""
    shadow: Verdict | None = None
    """The shadow candidate's verdict on the same scores (a policy's ``shadow:``), never applied."""
    _evaluator: Callable[[Verdict], tuple[RuleCheck, ...]] | None = field(default=None, repr=False, compare=False)

    @property
    def allowed(self) -> bool:
        """True when the response goes out unchanged (``allow`` or ``log``)."""
        return self.decision in ("allow", "log")

    @property
    def final_decision(self) -> Decision:
        """What was finally done: ``decision``, or for a rewrite what enforcing it ended in."""
        return self.rewrite.final_decision if self.rewrite is not None else self.decision

    @property
    def altered(self) -> bool:
        """True when the caller gets something other than the original answer."""
        return self.final_decision in ("block", "rewrite")

    @property
    def message(self) -> str | None:
        """The policy's text delivered instead of the response when blocked, else ``None``."""
        if self.decision == "block" and self.action is not None:
            return self.action.message
        if self.rewrite is not None and self.rewrite.final_decision == "block":
            return self.output
        return None

    @property
    def revision(self) -> str:
        """The revision of the policy this verdict was decided under: the first 12 hex digits of its hash."""
        return self.policy_hash[:12]

    @property
    def agrees(self) -> bool | None:
        """Whether the shadow candidate would decide the same (``None`` without one)."""
        return None if self.shadow is None else self.shadow.intended == self.intended

    def summary(self) -> str:
        """One line: the decision and each violation with its margin."""
        head = f"{self.decision} (policy {self.policy_name} v{self.policy_version})"
        if self.error:
            return f"{head}: scoring failed: {self.error}"
        if not self.violations:
            return head
        return head + ": " + "; ".join(v.message for v in self.violations)

    def rules(self) -> tuple[RuleCheck, ...]:
        """Every rule the policy evaluated for this verdict, in evaluation order, with its margin.

        Empty when nothing was scored by the policy's rules (a verdict built by hand, or one whose
        scoring failed: ``error`` says why and ``on_error`` decided).
        """
        return () if self._evaluator is None else self._evaluator(self)

    def explain(self) -> str:
        """The decision, then every rule evaluated: observed value, bound, margin, fired or not, which decided.

        Example:
            >>> print(guard.check(answer).explain())  # doctest: +SKIP
            block (policy default v1.2, revision 3f2a9c1b0d4e): decided by thresholds.benevolence.min
              thresholds.security.min      security     -0.12  floor -0.30  margin -0.18  quiet
              thresholds.benevolence.min   benevolence  -0.62  floor -0.36  margin +0.26  FIRED  decided -> block
        """
        rules = self.rules()
        decider = next((r.rule for r in rules if r.decided), self.violations[0].rule if self.violations else None)
        head = f"{self.decision} (policy {self.policy_name} v{self.policy_version}, revision {self.revision})"
        if self.error:
            lines = [f"{head}: scoring failed: {self.error}; on_error decided"]
        elif decider is not None:
            lines = [f"{head}: decided by {decider}"]
        else:
            lines = [f"{head}: no rule fired"]
        width = max((len(r.rule) for r in rules), default=0)
        for r in rules:
            kind = "ceiling" if r.rule.endswith(".max") else "floor" if r.rule.endswith(".min") else "bound"
            state = "FIRED" if r.fired else "quiet"
            tail = f"  decided -> {r.action}" if r.decided else f"  -> {r.action}" if r.fired else ""
            lines.append(f"  {r.rule:<{width}}  {r.dimension or '-':<14} {r.observed:+.3f}  {kind} {r.bound:+.3f}"
                         f"  margin {r.margin:+.3f}  {state}{tail}")  # fmt: skip
        if self.shadow is not None:
            shadow = self.shadow
            lines.append(f"  shadow {shadow.policy_name} v{shadow.policy_version} would {shadow.intended}"
                         f" ({'agrees' if self.agrees else 'disagrees'})")  # fmt: skip
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """Return the JSON form printed by ``guardrail check --json``."""
        return {
            "decision": self.decision,
            "intended": self.intended,
            "scores": None if self.scores is None else {k: round(v, 4) for k, v in self.scores.to_dict().items()},
            "violations": [v.to_dict() for v in self.violations],
            "action": None if self.action is None else {"name": self.action_name, **self.action.to_dict()},
            "policy": {"name": self.policy_name, "version": self.policy_version, "hash": self.policy_hash},
            "mode": self.mode,
            "risk": round(self.risk, 4),
            "latency_ms": round(self.latency_ms, 3),
            "error": self.error,
            "language": self.language,
            "normalized": list(self.normalized),
            **({"form": self.form} if self.form is not None else {}),
            **({"rewrite": self.rewrite.to_dict()} if self.rewrite is not None else {}),
            **({"part": self.part.to_dict()} if self.part is not None else {}),
            **({"decision_id": self.decision_id} if self.decision_id is not None else {}),
            **({"shadow": self._shadow_dict()} if self.shadow is not None else {}),
        }

    def _shadow_dict(self) -> dict[str, Any]:
        assert self.shadow is not None
        shadow = self.shadow
        return {
            "decision": shadow.intended,
            "agrees": self.agrees,
            "policy": {"name": shadow.policy_name, "version": shadow.policy_version, "hash": shadow.policy_hash},
            "violations": [v.rule for v in shadow.violations],
        }
