"""Run policy test files: decide every case, compare with what it expects, and measure rule coverage.

Three ways to get each case's verdict (``guardrail policy test``):

- ``model`` (default): a :class:`~guardrail.Guard` on the given scorer checks the answer, as in production.
- ``recorded``: no model; :meth:`Engine.decide` on the case's recorded scores, with the language
  rule's violation made again from its recorded share under the policy's *current* ``languages``
  settings. Fast and deterministic: for CI, and for policy edits between model runs.
- ``record``: as ``model``, then each case's ``recorded`` block is written back into its file.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from guardrail._exceptions import Issue, PolicyTestError
from guardrail._guard.guard import Guard
from guardrail._lifecycle.cases import Case, PolicyTests, Recorded
from guardrail._lifecycle.coverage import LANGUAGE_RULE, Coverage, Rule, coverage, outcomes, policy_rules
from guardrail._lifecycle.recording import recording, write_recordings
from guardrail._policy.engine import Engine, language_violation
from guardrail._policy.schema import Policy
from guardrail._types import Scorer
from guardrail._verdict import Verdict

Mode = Literal["model", "recorded", "record"]

_SOURCE = {"model": "scored by the model", "record": "scored by the model, recorded", "recorded": "recorded scores"}


@dataclass(frozen=True)
class CaseResult:
    """One case's verdict and every way it differs from what the case expects (none: it passed)."""

    file: str
    line: int | None
    name: str
    problems: tuple[str, ...]
    verdict: Verdict

    @property
    def passed(self) -> bool:
        """True when the verdict is what the case expects."""
        return not self.problems

    def to_dict(self) -> dict[str, Any]:
        """JSON form, as in ``guardrail policy test --json``."""
        v = self.verdict
        return {
            "file": self.file,
            "line": self.line,
            "name": self.name,
            "passed": self.passed,
            "problems": list(self.problems),
            "decision": v.decision,
            "intended": v.intended,
            "action": v.action_name,
            "fired": [x.rule for x in v.violations],
            "scores": None if v.scores is None else {k: round(s, 4) for k, s in v.scores.to_dict().items()},
            "error": v.error,
        }


@dataclass(frozen=True)
class Report:
    """What a run of policy test files found: each case's result and each policy's rule coverage."""

    mode: Mode
    files: tuple[str, ...]
    results: tuple[CaseResult, ...]
    coverage: tuple[Coverage, ...]
    seconds: float
    recorded: tuple[str, ...] = ()
    """Files whose recordings were written (``record``)."""

    @property
    def failed(self) -> int:
        """Cases that did not pass."""
        return sum(not r.passed for r in self.results)

    @property
    def percent(self) -> float:
        """Rule coverage over every policy tested, in percent."""
        total = sum(c.total for c in self.coverage)
        return 100.0 * sum(c.reached for c in self.coverage) / total if total else 100.0

    def exit_code(self, fail_under: float | None = None) -> int:
        """1 when a case failed or coverage is below ``fail_under`` percent, else 0."""
        return 1 if self.failed or (fail_under is not None and self.percent < fail_under) else 0

    def to_dict(self, fail_under: float | None = None) -> dict[str, Any]:
        """One JSON object: ``cases``, ``summary`` and ``coverage``."""
        return {
            "cases": [r.to_dict() for r in self.results],
            "summary": {
                "files": len(self.files),
                "cases": len(self.results),
                "passed": len(self.results) - self.failed,
                "failed": self.failed,
                "mode": self.mode,
                "coverage": round(self.percent, 1),
                "fail_under": fail_under,
                "ok": self.exit_code(fail_under) == 0,
                "seconds": round(self.seconds, 3),
                "recorded": list(self.recorded),
            },
            "coverage": [c.to_dict() for c in self.coverage],
        }

    def render(self, fail_under: float | None = None) -> str:
        """Text for a terminal: pass/fail per case (a failing one with its verdict explained), the
        coverage tables, then one summary line."""
        lines: list[str] = []
        for file in self.files:
            lines.append(file)
            for r in (r for r in self.results if r.file == file):
                if r.passed:
                    lines.append(f"  ok    {r.name}")
                    continue
                where = f"{r.file}:{r.line}" if r.line is not None else r.file
                lines.append(f"  FAIL  {r.name}  ({where})")
                lines += [f"          {problem}" for problem in r.problems]
                lines += [f"          {line}" for line in r.verdict.explain().splitlines()]
        if self.recorded:
            lines.append(f"recorded scores into {', '.join(self.recorded)}")
        for table in self.coverage:
            lines += ["", *table.render()]
        passed = len(self.results) - self.failed
        files = f"{len(self.files)} file{'s' if len(self.files) != 1 else ''}"
        summary = (f"{len(self.results)} cases in {files}: {passed} passed, {self.failed} failed; "
                   f"rule coverage {self.percent:.1f} % ({_SOURCE[self.mode]}, {self.seconds:.1f} s)")  # fmt: skip
        lines += ["", summary]
        if fail_under is not None and self.percent < fail_under:
            lines.append(f"rule coverage {self.percent:.1f} % is below --fail-under {fail_under:g}")
        return "\n".join(lines)


def run_tests(suites: Sequence[PolicyTests], scorer: Scorer | None = None, *, mode: Mode = "model") -> Report:
    """Run every case of ``suites`` and measure each policy's rule coverage.

    Args:
        suites: Loaded test files (:func:`~guardrail._lifecycle.cases.load_all`).
        scorer: The scorer the guards check with; required unless ``mode`` is ``recorded``.
        mode: ``model``, ``recorded`` or ``record`` (see the module docs).

    Raises:
        PolicyTestError: ``recorded`` with a case that has no recording, or one whose answer changed
            since it was recorded; or a recording that cannot be written.
        ValueError: No scorer for a mode that needs one.
    """
    if mode == "recorded":
        _check_recordings(suites)
    elif scorer is None:
        raise ValueError(f"mode {mode!r} needs a scorer")
    started = time.perf_counter()
    results: list[CaseResult] = []
    decided: dict[tuple[str, str], tuple[Policy, list[str], list[tuple[str, Verdict]]]] = {}
    written: list[str] = []
    for suite in suites:
        policy, cases = suite.policy, suite.spec.cases
        engine = Engine(policy)
        if mode == "recorded":
            verdicts = [replay(engine, policy, _recorded(case)) for case in cases]
        else:
            assert scorer is not None
            verdicts = _checked(suite, scorer)
        if mode == "record":
            recordings = {n: _faithful(engine, policy, case, v) for n, (case, v) in enumerate(zip(cases, verdicts))
                          if v.error is None}  # fmt: skip
            write_recordings(suite, recordings)
            written.append(suite.file)
        rules = policy_rules(policy)
        for n, (case, verdict) in enumerate(zip(cases, verdicts)):
            problems = tuple(expectation_problems(case, verdict, rules))
            results.append(CaseResult(suite.file, suite.line(n), case.name, problems, verdict))
        _, files, seen = decided.setdefault((policy.name, engine.policy_hash), (policy, [], []))
        files.append(suite.file)
        seen += [(f"{suite.file}: {case.name}", verdict) for case, verdict in zip(cases, verdicts)]
    tables = tuple(coverage(policy, files, seen) for policy, files, seen in decided.values())
    return Report(mode, tuple(s.file for s in suites), tuple(results), tables, time.perf_counter() - started,
                  tuple(written))  # fmt: skip


def replay(engine: Engine, policy: Policy, recorded: Recorded) -> Verdict:
    """The verdict ``engine`` reaches on a recording: its scores, and its language share judged by ``policy``'s
    current ``languages.other`` action and severity (nothing, when the policy now scores every language)."""
    violation = None
    if recorded.language is not None:
        share = recorded.language.share
        message = (f"{share:.0%} of the answer is in languages the policy does not read "
                   f"(supported: {', '.join(policy.languages.supported)}; recorded)")  # fmt: skip
        violation = language_violation(policy.languages, share, message)
    return engine.decide(recorded.vector(), extra=() if violation is None else (violation,))


def expectation_problems(case: Case, verdict: Verdict, rules: Sequence[Rule]) -> list[str]:
    """Every way ``verdict`` differs from what ``case`` expects, one sentence each."""
    expect = case.expect
    problems = []
    if verdict.error is not None:
        problems.append(f"scoring failed: {verdict.error}")
    if verdict.decision != expect.decision:
        problems.append(f"decision is {verdict.decision}, expected {expect.decision}")
    if expect.intended is not None and verdict.intended != expect.intended:
        problems.append(f"intended decision is {verdict.intended}, expected {expect.intended}")
    tested = outcomes(verdict, rules)
    margins = {check.rule: check.margin for check in verdict.rules()}
    for rule in expect.fires:
        if not tested.get(rule, False):
            why = f"margin {margins[rule]:+.3f}" if rule in margins else "nothing was scored"
            why = "no text in another language" if rule == LANGUAGE_RULE else why
            problems.append(f"{rule} should fire, but stayed quiet ({why})")
    for rule in expect.quiet:
        if tested.get(rule, False):
            why = f"margin {margins[rule]:+.3f}" if rule in margins else "violated"
            problems.append(f"{rule} should stay quiet, but fired ({why})")
    for dim, bounds in expect.scores.items():
        if verdict.scores is None:
            problems.append(f"{dim} should lie in [{bounds.low:+.2f}, {bounds.high:+.2f}], but nothing was scored")
        elif not bounds.low <= verdict.scores[dim] <= bounds.high:
            score = verdict.scores[dim]
            problems.append(f"{dim} is {score:+.3f}, expected within [{bounds.low:+.2f}, {bounds.high:+.2f}]")
    return problems


def _checked(suite: PolicyTests, scorer: Scorer) -> list[Verdict]:
    """Each case's verdict from a guard on ``scorer``, cases with the same metadata checked in one batch."""
    # A test run must not append its made-up answers to a deployment's decision log.
    policy = suite.policy.model_copy(update={"decision_log": None})
    guard = Guard(policy, scorer)
    cases = suite.spec.cases
    batches: dict[str, list[int]] = {}
    for n, case in enumerate(cases):
        batches.setdefault(json.dumps(case.metadata, sort_keys=True, default=str), []).append(n)
    verdicts: dict[int, Verdict] = {}
    for numbers in batches.values():
        metadata = cases[numbers[0]].metadata
        checked = guard.check_many([cases[n].response for n in numbers], [cases[n].prompt for n in numbers],
                                   metadata, timeout_ms=policy.timeout_ms * len(numbers))  # fmt: skip
        verdicts.update(zip(numbers, checked))
    return [verdicts[n] for n in range(len(cases))]


def _faithful(engine: Engine, policy: Policy, case: Case, verdict: Verdict) -> Recorded:
    """The recording of ``verdict``, with as many digits as it takes for ``--recorded`` to decide it the same."""
    rules = policy_rules(policy)
    want = _signature(verdict, rules)
    for digits in (4, 6):
        kept = recording(case, verdict, digits)
        if _signature(replay(engine, policy, kept), rules) == want:
            return kept
    return recording(case, verdict, None)  # a score on a bound: keep every digit


def _recorded(case: Case) -> Recorded:
    assert case.recorded is not None  # checked by _check_recordings before the run
    return case.recorded


def _signature(verdict: Verdict, rules: Sequence[Rule]) -> tuple[object, ...]:
    return verdict.decision, verdict.intended, verdict.action_name, sorted(outcomes(verdict, rules).items())


def _check_recordings(suites: Sequence[PolicyTests]) -> None:
    """Refuse ``recorded`` mode for a case without a recording, or one recorded for another answer."""
    issues: list[Issue] = []
    for suite in suites:
        for n, case in enumerate(suite.spec.cases):
            line, column = suite.spots.get(("cases", n), (None, None))
            if case.recorded is None:
                message = f"case {case.name!r} has no recorded scores; run: guardrail policy test --record {suite.file}"
            elif case.recorded.digest is not None and case.recorded.digest != case.digest:
                message = (f"case {case.name!r}: its prompt or response changed since it was recorded; "
                           f"run: guardrail policy test --record {suite.file}")  # fmt: skip
            else:
                continue
            issues.append(Issue(suite.file, line, column, f"cases.{n}", message))
    if issues:
        raise PolicyTestError(issues)
