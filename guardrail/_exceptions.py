"""Errors raised by value-guardrail.

::

    GuardrailError                 root: catches everything below
    ├── PolicyError
    │   ├── PolicyNotFoundError    a policy name or path that does not exist
    │   ├── PolicySyntaxError      YAML did not parse: .file .line .column
    │   ├── PolicyValidationError  .issues = [Issue(file, line, column, path, message), ...]
    │   └── PolicyTestError        a policy test file (``*_test.yaml``) that cannot be run: .issues
    ├── ScorerError
    │   ├── ModelLoadError         model directory missing, unreadable or inconsistent
    │   └── ScoringTimeout         scoring took longer than the policy's ``timeout_ms``
    ├── DataError                  training / evaluation data missing or malformed
    ├── AuditError                 an audit source (span file, Phoenix) missing, unreachable or unreadable
    └── GuardrailViolation         an outcome, not a fault: carries .verdict
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from guardrail._verdict import Verdict


class GuardrailError(Exception):
    """Root of every error this package raises."""


class PolicyError(GuardrailError):
    """A policy could not be loaded."""


class PolicyNotFoundError(PolicyError):
    """A policy named by ``extends`` or by the user does not exist."""


@dataclass(frozen=True)
class Issue:
    """One problem in a policy file, located where YAML knows the position."""

    file: str
    line: int | None
    column: int | None
    path: str
    message: str

    def __str__(self) -> str:
        where = self.file
        if self.line is not None:
            where += f":{self.line}"
            if self.column is not None:
                where += f":{self.column}"
        path = f"  {self.path}" if self.path else ""
        return f"{where}{path}  {self.message}"


class PolicySyntaxError(PolicyError):
    """The YAML of a policy file did not parse."""

    def __init__(self, file: str, line: int | None, column: int | None, message: str) -> None:
        self.file, self.line, self.column = file, line, column
        self.issue = Issue(file, line, column, "", message)
        super().__init__(str(self.issue))


class PolicyValidationError(PolicyError):
    """A policy parsed but broke the schema; ``issues`` lists every problem."""

    def __init__(self, issues: list[Issue]) -> None:
        self.issues = issues
        super().__init__("\n".join(str(i) for i in issues))


class PolicyTestError(PolicyError):
    """A policy test file is malformed or cannot be run as asked; ``issues`` lists every problem."""

    def __init__(self, issues: list[Issue]) -> None:
        self.issues = issues
        super().__init__("\n".join(str(i) for i in issues))


class ScorerError(GuardrailError):
    """The scorer could not produce scores."""


class ModelLoadError(ScorerError):
    """A model directory is missing, unreadable or inconsistent."""


class ScoringTimeout(ScorerError):
    """Scoring took longer than the policy's ``timeout_ms``."""


class DataError(GuardrailError):
    """Training or evaluation data is missing or malformed."""


class AuditError(GuardrailError):
    """``guardrail audit`` could not read its source: a span file or a Phoenix project."""


class GuardrailViolation(GuardrailError):
    """A response was blocked and the caller asked for an exception; ``verdict`` says why."""

    def __init__(self, verdict: Verdict) -> None:
        self.verdict = verdict
        super().__init__(verdict.summary())
