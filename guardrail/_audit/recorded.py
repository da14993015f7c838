"""Recorded answers read back for re-deciding: scores, failures and the language rule, column by column.

Sources, told apart by their content:

- a ``guardrail score`` output file: JSON lines holding ``scores`` (ten values or ``null``), ``error``
  and, when scored with ``--policy``, ``decision`` and ``violations``; the example id is the row's
  ``id`` field, else ``FILE:LINE``;
- any file of spans ``guardrail audit`` reads, or a Phoenix project (``http(s)://...`` with a project
  name); the example id is the check's ``guardrail.decision_id``, else its trace id.

Only what a decision needs is kept: the scores as one ``n x 10`` array (a row of NaN where nothing
was scored), the scoring error, and the share of the answer a recorded ``languages.other`` violation
found in other languages (NaN where there was none), since that text was never scored.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import chain
from operator import itemgetter
from pathlib import Path
from typing import Any

import numpy as np

from guardrail._audit.load import DECISIONS, Check, load
from guardrail._exceptions import AuditError
from guardrail._policy.engine import LANGUAGE_RULE
from guardrail._values import VALUES

_DIMENSIONS = frozenset(VALUES)
_NUMBERS = (int, float)
_FLOATS = frozenset({int, float, type(math.nan)})
_TEN = itemgetter(*VALUES)


@dataclass(frozen=True)
class Recorded:
    """Recorded answers from one source, in the order they were read.

    Example:
        >>> recorded = read_recorded("scored.jsonl")  # doctest: +SKIP
        >>> len(recorded), recorded.scores.shape  # doctest: +SKIP
        (100000, (100000, 10))
    """

    source: str
    ids: Sequence[str]
    """The example id of each answer."""
    scores: np.ndarray
    """``n x 10`` scores in ``VALUES`` order; a row of NaN where nothing was scored."""
    errors: Sequence[str | None]
    """Why scoring failed, per answer (``None``: it did not)."""
    language: np.ndarray
    """Per answer, the share of it a recorded ``languages.other`` violation found in another language; NaN: none."""
    decisions: Sequence[str | None]
    """The decision recorded with each answer (``None`` where none was recorded)."""

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def scored(self) -> np.ndarray:
        """Boolean mask of the answers that have scores."""
        return ~np.isnan(self.scores[:, 0])


def read_recorded(source: str, project: str | None = None) -> Recorded:
    """Read recorded answers from a ``guardrail score`` output, a span file or a Phoenix project.

    Raises:
        AuditError: The source is missing, unreadable or malformed (the message names the file and
            line), or it holds no recorded answers.
    """
    if source.startswith(("http://", "https://")):
        return _from_checks(load(source, project).checks, source)
    path = Path(source)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise AuditError(f"{source}: cannot read: {exc.strerror or exc}") from exc
    if not raw.strip():
        raise AuditError(f"{source}: the file is empty; expected `guardrail score` output rows or spans")
    first = _first_row(raw)
    if first is not None and ("scores" in first or "response" in first):
        if project:
            raise AuditError("--project goes with a Phoenix URL, not with a file")
        if "scores" not in first:
            line = raw[: len(raw) - len(raw.lstrip())].count(b"\n") + 1
            raise AuditError(
                f"{source}:{line}: field 'scores' is missing: score the answers with `guardrail score` first"
            )
        return _score_rows(raw, source)
    return _from_checks(load(source, project).checks, source)


def _first_row(raw: bytes) -> dict[str, Any] | None:
    """The first line as a JSON object, ``None`` when it is not one (then the file holds spans, or no JSON)."""
    first = raw.lstrip().split(b"\n", 1)[0]
    try:
        row = json.loads(first)
    except (ValueError, RecursionError):
        return None  # a span document over many lines, or no JSON at all: the span reader says which
    return row if isinstance(row, dict) else None


def _loads() -> Callable[[bytes], Any]:
    try:
        import orjson
    except ImportError:  # optional: about three times faster on large files
        return json.loads
    return orjson.loads


def _score_rows(raw: bytes, source: str) -> Recorded:
    loads = _loads()
    ids: list[str] = []
    lines: list[int] = []
    vectors: list[tuple[float, ...]] = []
    errors: list[str | None] = []
    shares: list[float] = []
    decisions: list[str | None] = []
    unscored = (math.nan,) * len(VALUES)
    ten = _TEN
    for number, line in enumerate(raw.split(b"\n"), 1):
        if not line or line.isspace():
            continue
        try:
            row = loads(line)
        except ValueError as exc:  # json's and orjson's decode errors both are ValueErrors
            raise AuditError(f"{source}:{number}: invalid JSON: {getattr(exc, 'msg', exc)}") from None
        except RecursionError:
            raise AuditError(f"{source}:{number}: JSON nested too deeply to be a scored row") from None
        if type(row) is not dict:
            raise AuditError(f"{source}:{number}: expected a JSON object (a `guardrail score` row)")
        scores = row.get("scores", _MISSING)
        error = row.get("error")
        if error is not None and type(error) is not str:
            raise AuditError(f"{source}:{number}: field 'error' must be a string or null")
        if scores is None:
            vectors.append(unscored)
        else:
            try:
                if type(scores) is not dict or len(scores) != len(VALUES):
                    raise KeyError
                vectors.append(ten(scores))  # ten keys, each one a value: exactly the ten values
            except KeyError:
                raise AuditError(f"{source}:{number}: {_bad_scores(scores)}") from None
        violations = row.get("violations")
        share = math.nan
        if violations:
            share = _language_share(violations, f"{source}:{number}")
        elif violations is not None and type(violations) is not list:
            raise AuditError(f"{source}:{number}: field 'violations' must be a list or null")
        if scores is None and error is None and share != share:
            # Nothing scored and nothing failed: the whole answer was in languages the policy does not read.
            share = 1.0
        decision = row.get("decision")
        if decision is not None and decision not in DECISIONS:
            raise AuditError(f"{source}:{number}: field 'decision' must be one of {', '.join(DECISIONS)} or null")
        ident = row.get("id")
        ids.append(f"{source}:{number}" if ident is None else str(ident))
        lines.append(number)
        errors.append(error)
        shares.append(share)
        decisions.append(decision)
    if not ids:
        raise AuditError(f"{source}: the file is empty; expected `guardrail score` rows or spans, one per line")
    # Checked in bulk, not per row: a type scan over every score, then one range test over the array.
    if not set(map(type, chain.from_iterable(vectors))) <= _FLOATS:
        row_at = next(n for n, v in enumerate(vectors) if not set(map(type, v)) <= _FLOATS)
        column = next(c for c, score in enumerate(vectors[row_at]) if type(score) not in _FLOATS)
        raise AuditError(
            f"{source}:{lines[row_at]}: scores.{VALUES[column]} is {vectors[row_at][column]!r}, not a number"
        )
    matrix = np.array(vectors, dtype=np.float64)
    has_scores = np.array([v is not unscored for v in vectors])
    bad = has_scores & ~((matrix >= -1.0) & (matrix <= 1.0)).all(axis=1)  # NaN fails both tests
    if bad.any():
        row_at = int(np.flatnonzero(bad)[0])
        column = int(np.flatnonzero(~((matrix[row_at] >= -1.0) & (matrix[row_at] <= 1.0)))[0])
        score = float(matrix[row_at, column])
        raise AuditError(f"{source}:{lines[row_at]}: scores.{VALUES[column]} is {score!r}, not a score in [-1, 1]")
    return Recorded(source, ids, matrix, errors, np.array(shares, dtype=np.float64), decisions)


_MISSING = object()


def _bad_scores(scores: Any) -> str:
    if scores is _MISSING:
        return "field 'scores' is missing (not a `guardrail score` output row)"
    if not isinstance(scores, dict):
        return f"field 'scores' must be an object of the ten value scores or null, got {type(scores).__name__}"
    unknown = sorted(k for k in scores if k not in _DIMENSIONS)
    if unknown:
        return f"field 'scores' has an unknown value {unknown[0]!r}; expected: {', '.join(VALUES)}"
    missing = [v for v in VALUES if v not in scores]
    return f"field 'scores' is missing {', '.join(missing)}"


def _language_share(violations: Any, where: str) -> float:
    """The margin of a ``languages.other`` violation among recorded ones (NaN when there is none)."""
    if type(violations) is not list:
        raise AuditError(f"{where}: field 'violations' must be a list or null")
    for n, violation in enumerate(violations):
        rule = violation.get("rule") if type(violation) is dict else violation
        if type(rule) is not str:
            raise AuditError(f"{where}: violations[{n}] must be an object with a string 'rule' (or a rule name)")
        if rule != LANGUAGE_RULE:
            continue
        margin = violation.get("margin", 1.0) if type(violation) is dict else 1.0
        if type(margin) not in _NUMBERS or not 0.0 < margin <= 1.0:
            raise AuditError(f"{where}: violations[{n}].margin of {LANGUAGE_RULE} must be a share in (0, 1]")
        return float(margin)
    return math.nan


def _from_checks(checks: Sequence[Check], source: str) -> Recorded:
    unscored = [math.nan] * len(VALUES)
    shares = []
    for check in checks:
        margins = [m for rule, m in check.violations if rule == LANGUAGE_RULE]
        if margins:
            # Spans written before margins were recorded carry none: count the answer as all foreign.
            shares.append(1.0 if margins[0] is None else min(max(margins[0], 0.0), 1.0))
        elif check.scores is None and check.error is None:
            shares.append(1.0)
        else:
            shares.append(math.nan)
    return Recorded(
        source=source,
        ids=[c.trace_id if c.decision_id is None else str(c.decision_id) for c in checks],
        scores=np.array([unscored if c.scores is None else c.scores for c in checks], dtype=np.float64).reshape(
            len(checks), len(VALUES)
        ),
        errors=[c.error if c.error is None else str(c.error) for c in checks],
        language=np.array(shares, dtype=np.float64),
        decisions=[c.decision if c.decision in DECISIONS else None for c in checks],
    )
