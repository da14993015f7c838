"""Labelled examples for ``guardrail policy tune``: read from JSONL, scored as the guard scores them.

A line holds an answer, optionally its prompt, one label (``label``: "acceptable" / "not acceptable";
``acceptable`` or ``harmful``: true / false, the ``shared/data/harm`` schema) and optionally the
``scores`` and ``error`` that ``guardrail score`` records. Answers without scores are scored through
``Guard(P, scorer).check_many``, so normalisation and the language rule apply as in production;
recorded ones are read by the guard's own :class:`~guardrail._guard.reading.Reader` for the language
rule. Scores are rounded to the decimals ``guardrail score`` records, so a recorded file and the
model give the same proposal. An answer the guard reads in more than one form (a decoded base64 run
scored on its own) is tuned on the scores of the form that decided, the ones ``guardrail score``
records.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from guardrail._exceptions import DataError, ScorerError
from guardrail._guard.guard import Guard
from guardrail._guard.reading import Reader
from guardrail._policy.engine import Engine
from guardrail._policy.schema import Policy
from guardrail._types import Scorer
from guardrail._validate import clean_text
from guardrail._values import VALUES, ValueVector
from guardrail._verdict import Verdict, Violation

LABELS: Mapping[str, str] = {
    "label": '"acceptable" or "not acceptable"',
    "acceptable": "true or false",
    "harmful": "true or false",
}
"""The label fields an example may carry (exactly one), with the values each takes."""

DECIMALS = 4
"""Decimals of a recorded score (as ``guardrail score`` writes them); model scores are rounded alike."""
ALTERS = frozenset({"block", "rewrite"})
"""Decisions that alter an answer: what the false-positive rate and the recall count."""

_BATCH = 64
_SHOWN_ISSUES = 20


class Example(NamedTuple):
    """One labelled answer as read from the file.

    ``recorded`` says whether the line carried a ``scores`` field; ``scores`` is its vector
    (``None`` for ``"scores": null``) and ``error`` the recorded reason it could not be scored.
    """

    line: int
    response: str
    prompt: str | None
    unacceptable: bool
    recorded: bool = False
    scores: ValueVector | None = None
    error: str | None = None


def read_examples(path: str | os.PathLike[str]) -> list[Example]:
    """Read labelled examples from a JSONL file, one object a line (blank lines are skipped).

    Each line holds ``response`` (a string), optionally ``prompt`` (a string or null), and one label:
    ``label`` ("acceptable" / "not acceptable"), ``acceptable`` (true/false) or ``harmful``
    (true/false). ``scores`` (ten values, as ``guardrail score`` writes them: ``{value: score}`` or a
    list in the fixed order) and ``error`` are used when present.

    Raises:
        DataError: the file cannot be read, holds no example, or has bad lines (every one is listed
            as ``FILE:LINE: problem``).
    """
    name = os.fspath(path)
    try:
        with open(name, encoding="utf-8") as handle:
            lines = handle.read().splitlines()
    except OSError as exc:
        raise DataError(f"{name}: cannot read the examples: {exc.strerror}") from exc
    except UnicodeDecodeError as exc:
        raise DataError(f"{name}: not UTF-8 text ({exc.reason})") from exc
    examples: list[Example] = []
    issues: list[str] = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            examples.append(_example(number, line))
        except ValueError as exc:
            issues.append(f"{name}:{number}: {exc}")
    if issues:
        shown = issues[:_SHOWN_ISSUES]
        if len(issues) > len(shown):
            shown.append(f"... and {len(issues) - len(shown)} more bad lines")
        raise DataError("\n".join(shown))
    if not examples:
        raise DataError(f"{name}: no examples (the file is empty)")
    return examples


def _example(number: int, line: str) -> Example:
    try:
        row = json.loads(line)
    except json.JSONDecodeError as exc:
        raise ValueError(f"invalid JSON: {exc.msg} (column {exc.colno})") from None
    if not isinstance(row, dict):
        raise ValueError(f"expected a JSON object, got {type(row).__name__}")
    if not isinstance(row.get("response"), str):
        raise ValueError("field 'response' must be a string" + ("" if "response" in row else " (missing)"))
    prompt = row.get("prompt")
    if prompt is not None and not isinstance(prompt, str):
        raise ValueError(f"field 'prompt' must be a string or null, got {prompt!r}")
    given = [key for key in LABELS if key in row]
    if not given:
        choices = "; ".join(f"'{key}' ({values})" for key, values in LABELS.items())
        raise ValueError(f"no label: give one of {choices}")
    if len(given) > 1:
        raise ValueError(f"more than one label field ({', '.join(given)}): give exactly one")
    key, value = given[0], row[given[0]]
    if key == "label":
        if value not in ("acceptable", "not acceptable"):
            raise ValueError(f'field \'label\' must be "acceptable" or "not acceptable", got {value!r}')
        unacceptable = value == "not acceptable"
    else:
        if not isinstance(value, bool):
            raise ValueError(f"field {key!r} must be true or false, got {value!r}")
        unacceptable = value if key == "harmful" else not value
    error = row.get("error")
    if error is not None and not isinstance(error, str):
        raise ValueError(f"field 'error' must be a string or null, got {error!r}")
    scores = _recorded(row["scores"]) if "scores" in row else None
    return Example(number, row["response"], prompt, unacceptable, "scores" in row, scores, error or None)


def _recorded(value: object) -> ValueVector | None:
    """A recorded score vector: ``{value: score}`` with all ten values, or ten numbers in the fixed order."""
    if value is None:
        return None
    try:
        if isinstance(value, Mapping):
            return ValueVector.from_dict(value, strict=True)
        if isinstance(value, list):
            return ValueVector.from_sequence(value)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"field 'scores': {exc}") from None
    raise ValueError(f"field 'scores' must be ten scores ({{value: score}} or a list) or null, got {value!r}")


@dataclass(frozen=True)
class Labelled:
    """The examples that could be decided, as the engine and the search see them: one entry (one
    matrix row) per example, in file order."""

    vectors: tuple[ValueVector | None, ...]
    extras: tuple[tuple[Violation, ...], ...]
    """Violations outside the value space (the language rule), decided beside every policy's own."""
    unacceptable: np.ndarray
    matrix: np.ndarray
    """One row of ten scores per example; NaN where nothing of the answer was scored."""
    not_scored: tuple[tuple[int, str], ...]
    recorded: int
    scored: int


def score_examples(
    examples: Sequence[Example],
    policy: Policy,
    scorer: Callable[[], Scorer],
    progress: Callable[[int, int], None] | None,
) -> Labelled:
    """Each example's vector and language violation: recorded ones read as the guard reads them, the rest
    scored through the guard; examples that could not be scored are set aside with their reason."""
    reader = Reader(policy)
    outcome: dict[int, tuple[ValueVector | None, tuple[Violation, ...]]] = {}
    failed: dict[int, str] = {}
    todo: list[int] = []
    for n, example in enumerate(examples):
        if example.error is not None:
            failed[n] = example.error
        elif not example.recorded:
            todo.append(n)
        else:
            try:
                reading = reader.read(clean_text(example.response))
            except ScorerError as exc:  # the language detector failed: as the guard does, not scored
                failed[n] = str(exc)
                continue
            if example.scores is None and reading.forms:
                todo.append(n)  # recorded as unscored, yet this policy reads some of it: score it now
            else:
                extra = () if reading.violation is None else (reading.violation,)
                outcome[n] = (_rounded(example.scores), extra)
    if todo:
        # A tuning run decides nothing for real traffic: no decision log, no shadow candidate.
        guard = Guard(policy.model_copy(update={"decision_log": None, "shadow": None}), scorer())
        for start in range(0, len(todo), _BATCH):
            batch = todo[start : start + _BATCH]
            verdicts = guard.check_many([examples[n].response for n in batch], [examples[n].prompt for n in batch],
                                        timeout_ms=policy.timeout_ms * len(batch))  # fmt: skip
            for n, verdict in zip(batch, verdicts):
                if verdict.error is not None:
                    failed[n] = verdict.error
                else:
                    outcome[n] = (_rounded(verdict.scores), _outside(verdict))
            if progress is not None:
                progress(min(start + _BATCH, len(todo)), len(todo))
    kept = sorted(outcome)
    by_model = set(todo)
    vectors = tuple(outcome[n][0] for n in kept)
    matrix = np.array([v.to_list() if v is not None else [np.nan] * len(VALUES) for v in vectors], dtype=float)
    return Labelled(
        vectors=vectors,
        extras=tuple(outcome[n][1] for n in kept),
        unacceptable=np.array([examples[n].unacceptable for n in kept], dtype=bool),
        matrix=matrix.reshape(len(kept), len(VALUES)),
        not_scored=tuple((examples[n].line, failed[n]) for n in sorted(failed)),
        recorded=sum(1 for n in kept if n not in by_model),
        scored=sum(1 for n in kept if n in by_model),
    )


def _rounded(vector: ValueVector | None) -> ValueVector | None:
    if vector is None:
        return None
    return ValueVector.from_sequence(round(s, DECIMALS) for s in vector.to_list())


def _outside(verdict: Verdict) -> tuple[Violation, ...]:
    """A verdict's violations of rules outside the value space (the language rule)."""
    return tuple(v for v in verdict.violations if not v.rule.startswith(("thresholds.", "regions.")))


def altered(engine: Engine, scored: Labelled) -> np.ndarray:
    """Whether ``engine``'s policy would alter each example (block or rewrite, as enforced even in shadow mode)."""
    return np.array([engine.decide(v, extra=e).intended in ALTERS for v, e in zip(scored.vectors, scored.extras)],
                    dtype=bool)  # fmt: skip
