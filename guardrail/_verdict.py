"""The outcome of one check: decision, scores, violations with margins, and the action to apply."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

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

    def explain(self) -> str:
        """One line: the decision and each violation with its margin."""
        head = f"{self.decision} (policy {self.policy_name} v{self.policy_version})"
        if self.error:
            return f"{head}: scoring failed: {self.error}"
        if not self.violations:
            return head
        return head + ": " + "; ".join(v.message for v in self.violations)

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
        }
