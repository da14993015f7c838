"""Policy test files: answers with the decision a policy must reach on them, read with FILE:LINE errors.

A test file lies next to its policy, named ``<policy>_test.yaml`` (OPA's convention)::

    policy: default            # a shipped name or a path relative to this file; default: the file name without _test
    cases:
      - name: hateful answer is blocked
        prompt: What do you think about immigrants?
        response: Immigrants are parasites ...
        expect:
          decision: block                          # allow | log | block | rewrite
          fires: [thresholds.universalism.min]     # rules that must fire
          quiet: [thresholds.security.min]         # rules that must not fire
          scores: {universalism: {max: -0.5}}      # score ranges
        recorded:                                  # written by --record, read by --recorded
          scores: {self_direction: 0.01, ...}      # the ten scores, or null when nothing was scored
          language: {share: 0.8}                   # only when the languages.other rule fired
          digest: 3f2a9c1b0d4e                     # of the prompt and response that were scored

Files are read with the policy loader's safe reader (:func:`guardrail._policy.loader.read_yaml`)
and validated by pydantic (``extra="forbid"``); every problem is reported at once, each at its
``FILE:LINE:COL``, as one :class:`~guardrail._exceptions.PolicyTestError`. Rule names in ``fires``
and ``quiet`` are checked against the policy the file tests.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_core import ErrorDetails

from guardrail._exceptions import Issue, PolicyError, PolicySyntaxError, PolicyTestError, PolicyValidationError
from guardrail._lifecycle.coverage import policy_rules
from guardrail._policy.loader import dotted, issue_message, load_policy, read_yaml
from guardrail._policy.schema import Dimension, Policy, Range, Score
from guardrail._resources import TEST_SUFFIX
from guardrail._values import VALUES, ValueVector
from guardrail._verdict import Decision

KeyPath = tuple[str | int, ...]
_Pos = tuple[int, int]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Expect(_Model):
    """What a case's verdict must show."""

    decision: Decision = Field(description="The decision applied: allow, log, block or rewrite.")
    intended: Decision | None = Field(
        default=None, description="What the rules asked for, where it differs from the decision (shadow mode)."
    )
    fires: tuple[str, ...] = Field(default=(), description="Rules that must fire.")
    quiet: tuple[str, ...] = Field(default=(), description="Rules that must not fire.")
    scores: dict[Dimension, Range] = Field(default_factory=dict, description="Ranges the scores must lie in.")

    @model_validator(mode="after")
    def _fires_or_quiet(self) -> Expect:
        both = sorted(set(self.fires) & set(self.quiet))
        if both:
            raise ValueError(f"a rule cannot both fire and stay quiet: {', '.join(both)}")
        return self


class RecordedLanguage(_Model):
    """The language rule's violation as recorded: the share of the answer in languages the policy does not read."""

    share: float = Field(gt=0, le=1, description="Share of the answer's letters in other languages.")


class Recorded(_Model):
    """What the model made of a case, so ``--recorded`` can decide it again without the model."""

    scores: dict[Dimension, Score] | None = Field(description="The ten scores; null when nothing was scored.")
    language: RecordedLanguage | None = Field(default=None, description="Set when the language rule fired.")
    digest: str | None = Field(
        default=None, pattern=r"^[0-9a-f]{12}$", description="Of the prompt and response scored (see Case.digest)."
    )

    @field_validator("scores")
    @classmethod
    def _all_ten(cls, value: dict[str, float] | None) -> dict[str, float] | None:
        if value is not None and (missing := [name for name in VALUES if name not in value]):
            raise ValueError(f"recorded scores need all ten values; missing: {', '.join(missing)}")
        return value

    def vector(self) -> ValueVector | None:
        """The recorded scores as a vector (``None``: nothing was scored)."""
        return None if self.scores is None else ValueVector.from_dict(self.scores, strict=True)


class Case(_Model):
    """One answer and what the policy must decide on it."""

    name: str = Field(min_length=1, description="Unique within the file; names the case in the output.")
    prompt: str | None = Field(default=None, description="The prompt that produced the answer.")
    response: str = Field(min_length=1, description="The answer checked.")
    metadata: dict[str, Any] | None = Field(default=None, description="Request metadata passed to the check.")
    expect: Expect
    recorded: Recorded | None = Field(default=None, description="Written by --record.")

    @property
    def digest(self) -> str:
        """12 hex digits of SHA-256 over the prompt and response: tells a recording that no longer fits its answer."""
        text = json.dumps([self.prompt, self.response], ensure_ascii=False)
        return hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]


class PolicyTestFile(_Model):
    """A policy test file: the policy tested and its cases."""

    policy: str | None = Field(
        default=None, min_length=1, description="A shipped name or a path relative to this file; default: the "
        "file name without _test.",
    )  # fmt: skip
    cases: list[Case] = Field(min_length=1, description="The cases, run in order.")


@dataclass(frozen=True)
class PolicyTests:
    """One test file, read and checked, with the policy it tests."""

    path: Path
    file: str
    """The file as shown to the user."""
    spec: PolicyTestFile
    policy: Policy
    policy_file: str
    """The policy as shown to the user: a path, or a shipped name."""
    spots: Mapping[KeyPath, _Pos]
    """Where each key of the file sits (line, column), for located messages."""

    def line(self, index: int) -> int | None:
        """The line the case at ``index`` starts on."""
        spot = self.spots.get(("cases", index))
        return None if spot is None else spot[0]


def find_test_files(paths: Iterable[str | os.PathLike[str]]) -> list[tuple[Path, str]]:
    """The test files named by ``paths``, each ``(path, shown name)``: files as given, directories searched
    for every ``*_test.yaml`` inside (sorted).

    Raises:
        PolicyTestError: A path does not exist, or a directory holds no test file.
    """
    found: list[tuple[Path, str]] = []
    issues: list[Issue] = []
    for given in paths:
        path, shown = Path(given), os.fspath(given)
        if path.is_dir():
            inside = sorted(path.rglob(f"*{TEST_SUFFIX}.yaml"))
            if not inside:
                issues.append(Issue(shown, None, None, "", f"no *{TEST_SUFFIX}.yaml policy test files in this folder"))
            found += [(p, os.path.join(shown, os.fspath(p.relative_to(path)))) for p in inside]
        elif path.is_file():
            found.append((path, shown))
        else:
            issues.append(Issue(shown, None, None, "", "no such file or folder"))
    if issues:
        raise PolicyTestError(issues)
    return list(dict.fromkeys(found))  # a file named twice runs once


def load_tests(path: Path, file: str) -> PolicyTests:
    """Read, validate and resolve one test file.

    Raises:
        PolicyError: The file cannot be read or is malformed (a :class:`PolicyTestError` with every
            problem), or the policy it tests does not load (that policy's own error).
    """
    try:
        doc = read_yaml(path, file, "policy test file")
    except PolicySyntaxError as exc:
        raise PolicyTestError([exc.issue]) from exc
    spots = doc.spots
    if not isinstance(doc.data, Mapping):
        got = "an empty file" if doc.data is None else f"a {type(doc.data).__name__}"
        line, column = spots.get((), (None, None))
        raise PolicyTestError([Issue(file, line, column, "", f"the top level must be a mapping with cases, got {got}")])
    try:
        spec = PolicyTestFile.model_validate(doc.data)
    except ValidationError as exc:
        issues = {_issue(file, doc.data, spots, doc.keys, err): None for err in exc.errors()}
        raise PolicyTestError(sorted(issues, key=lambda i: (i.line or 0, i.column or 0))) from exc
    policy_file = _policy_source(path, file, spec, spots)
    try:
        policy = load_policy(Path(policy_file) if _is_path(policy_file) else policy_file)
    except PolicyError as exc:
        if spec.policy is None or isinstance(exc, (PolicySyntaxError, PolicyValidationError)):
            raise  # a broken policy: its own errors point into its own file
        line, column = spots.get(("policy",), (None, None))
        raise PolicyTestError([Issue(file, line, column, "policy", str(exc))]) from exc
    issues = _case_problems(file, spec, policy, spots)
    if issues:
        raise PolicyTestError(issues)
    return PolicyTests(path, file, spec, policy, policy_file, dict(spots))


def load_all(paths: Iterable[str | os.PathLike[str]]) -> list[PolicyTests]:
    """Every test file under ``paths``, each loaded; the problems of all of them are raised together.

    Raises:
        PolicyError: As :func:`find_test_files` and :func:`load_tests`, one error for every file.
    """
    loaded: list[PolicyTests] = []
    issues: list[Issue] = []
    for path, shown in find_test_files(paths):
        try:
            loaded.append(load_tests(path, shown))
        except (PolicyTestError, PolicyValidationError) as exc:
            issues += exc.issues
        except PolicySyntaxError as exc:
            issues.append(exc.issue)
        except PolicyError as exc:  # a policy not found or unreadable: its message names it
            issues.append(Issue(shown, None, None, "policy", str(exc)))
    if issues:
        raise PolicyTestError(issues)
    return loaded


def _is_path(source: str) -> bool:
    return os.sep in source or (os.altsep is not None and os.altsep in source) or source.endswith((".yaml", ".yml"))


def _policy_source(path: Path, file: str, spec: PolicyTestFile, spots: Mapping[KeyPath, _Pos]) -> str:
    """The policy a test file tests, as ``load_policy`` takes it: a shipped name, or a path shown relative to
    where the test file was named from."""
    if spec.policy is None:
        if not path.stem.endswith(TEST_SUFFIX) or path.stem == TEST_SUFFIX:
            line, column = spots.get((), (None, None))
            message = f"no 'policy' key, and the file is not named <policy>{TEST_SUFFIX}.yaml to tell which policy"
            raise PolicyTestError([Issue(file, line, column, "policy", message)])
        relative = path.stem.removesuffix(TEST_SUFFIX) + path.suffix
    elif _is_path(spec.policy) or (path.parent / spec.policy).is_file():
        relative = spec.policy
    else:
        return spec.policy  # a shipped name
    if os.path.isabs(relative):
        return relative
    return os.path.join(os.path.dirname(file), relative) or relative


def _case_problems(file: str, spec: PolicyTestFile, policy: Policy, spots: Mapping[KeyPath, _Pos]) -> list[Issue]:
    """Duplicate case names, and rules in ``fires``/``quiet`` that the policy does not have."""
    known = [r.name for r in policy_rules(policy) if r.kind != "action"]
    issues: list[Issue] = []
    seen: dict[str, int] = {}
    for n, case in enumerate(spec.cases):
        if case.name in seen:
            line, column = spots.get(("cases", n, "name"), (None, None))
            message = f"case name {case.name!r} is used twice (first by case {seen[case.name]})"
            issues.append(Issue(file, line, column, f"cases.{n}.name", message))
        seen.setdefault(case.name, n)
        for key in ("fires", "quiet"):
            for m, rule in enumerate(getattr(case.expect, key)):
                if rule not in known:
                    loc = ("cases", n, "expect", key, m)
                    line, column = spots.get(loc, (None, None))
                    message = (f"case {case.name!r}: policy {policy.name!r} has no rule {rule!r}; "
                               f"its rules: {', '.join(known) or 'none'}")  # fmt: skip
                    issues.append(Issue(file, line, column, dotted(loc), message))
    return issues


def _issue(
    file: str, data: Any, spots: Mapping[KeyPath, _Pos], keys: Mapping[KeyPath, _Pos], err: ErrorDetails
) -> Issue:
    """A pydantic error at the nearest located spot: the key itself for a key that should not be there."""
    raw = tuple(err["loc"])
    loc = tuple(seg for seg in raw if seg != "[key]")
    kind = err["type"]
    message = issue_message(err, loc, PolicyTestFile)
    by_key = kind == "extra_forbidden" or "[key]" in raw
    for size in range(len(loc), -1, -1):
        where = (keys if by_key else spots).get(loc[:size])
        if where is not None and _has(data, loc[:size]):
            return Issue(file, where[0], where[1], dotted(loc), message)
        by_key = False
    return Issue(file, None, None, dotted(loc), message)


def _has(data: Any, loc: KeyPath) -> bool:
    for seg in loc:
        in_list = isinstance(data, list) and isinstance(seg, int) and 0 <= seg < len(data)
        if not (in_list or (isinstance(data, Mapping) and seg in data)):
            return False
        data = data[seg]
    return True
