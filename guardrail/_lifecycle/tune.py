"""``guardrail policy tune``: bounds for a policy tuned from a deployment's own labelled answers.

From answers labelled acceptable / not acceptable, propose the floors and ceilings of a policy P so
that the whole child policy (every other rule of P kept) alters, that is blocks or rewrites, at most
a target share of the acceptable answers (the false-positive rate, FPR) and as many of the
unacceptable ones as it can (recall); then write the child, which ``extends`` P and moves only the
bounds that changed.

1. Read the examples and score those without recorded scores (:mod:`~guardrail._lifecycle.labelled`).
2. Search the bounds (:mod:`~guardrail._lifecycle.search`) within the budget of false positives.
3. Write the child, load it back with ``load_policy`` and decide every example with the real
   ``Engine``: the "after" rates are the written file's own.
4. Bootstrap intervals, before and after, overall and for each tuned bound alone, and the rates to
   expect on new answers (:mod:`~guardrail._lifecycle.rates`); warn when the examples are too few.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from guardrail._exceptions import DataError
from guardrail._lifecycle.labelled import ALTERS, altered, read_examples, score_examples
from guardrail._lifecycle.rates import Expected, Rate, bootstrap, new_answers
from guardrail._lifecycle.search import Side, altered_by, bound_specs, propose
from guardrail._policy.engine import Engine
from guardrail._policy.loader import load_policy, policy_files
from guardrail._policy.schema import Policy, Threshold
from guardrail._types import Scorer
from guardrail._values import NO_CONNECTION, VALUES

MIN_FLAGGED = 10
"""Fewest acceptable examples the target may let the policy alter before the FPR rests on a handful."""
MIN_UNACCEPTABLE = 30
"""Fewest unacceptable examples for a recall worth reading."""
WIDE_INTERVAL = 2.0
"""An FPR interval reaching past this many times the target is too wide to trust."""


# -- result ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Bound:
    """One tuned bound: P's value and the proposal, with the rates it alone gives before and after."""

    value: str
    side: Side
    action: str
    before: float | None
    """P's bound; ``None`` where P has none on this side."""
    after: float
    fpr_before: Rate | None
    recall_before: Rate | None
    fpr_after: Rate
    recall_after: Rate

    @property
    def rule(self) -> str:
        """The rule's name, as on verdicts: ``thresholds.security.min``."""
        return f"thresholds.{self.value}.{self.side}"

    @property
    def changed(self) -> bool:
        """Whether the child moves (or adds) this bound."""
        return self.before != self.after

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        return {
            "rule": self.rule, "value": self.value, "side": self.side, "action": self.action,
            "before": self.before, "after": self.after, "changed": self.changed,
            "alone": {
                "fpr_before": None if self.fpr_before is None else self.fpr_before.to_dict(),
                "fpr_after": self.fpr_after.to_dict(),
                "recall_before": None if self.recall_before is None else self.recall_before.to_dict(),
                "recall_after": self.recall_after.to_dict(),
            },
        }  # fmt: skip


@dataclass(frozen=True)
class Counts:
    """How many examples were read, and what became of them."""

    read: int
    acceptable: int
    unacceptable: int
    not_scored: int
    """Examples that could not be scored (a recorded error, a timeout, an answer over ``max_chars``): left out."""
    recorded: int
    """Used examples decided on their recorded scores."""
    scored: int
    """Used examples scored by the model in this run."""

    def to_dict(self) -> dict[str, int]:
        """JSON form."""
        return asdict(self)


@dataclass(frozen=True)
class Tuning:
    """What ``guardrail policy tune`` proposed, how it was measured, and where the child was written."""

    policy: str
    policy_version: str
    child: str
    output: Path
    examples: str
    target_fpr: float
    counts: Counts
    fpr_before: Rate
    recall_before: Rate
    fpr_after: Rate
    recall_after: Rate
    fpr_new: Expected
    """The FPR to expect on new answers like the examples (see :class:`Expected`)."""
    recall_new: Expected
    bounds: tuple[Bound, ...]
    notes: tuple[str, ...]
    """Bounds left as they are and why; how a shadow policy was measured."""
    warnings: tuple[str, ...]
    """Why the examples are too few to trust the proposal (empty: enough)."""
    not_scored: tuple[tuple[int, str], ...]
    """``(line, reason)`` of each example that could not be scored."""
    resamples: int
    seed: int
    allow_band: bool
    text: str
    """The child policy file as written."""

    @property
    def trusted(self) -> bool:
        """Whether the examples are enough to trust the rates (no warning)."""
        return not self.warnings

    def to_dict(self) -> dict[str, Any]:
        """JSON form, as ``guardrail policy tune --json`` prints it."""
        return {
            "policy": {"name": self.policy, "version": self.policy_version},
            "child": {"name": self.child, "output": str(self.output)},
            "examples": {"file": self.examples, **self.counts.to_dict()},
            "target_fpr": self.target_fpr,
            "before": {"fpr": self.fpr_before.to_dict(), "recall": self.recall_before.to_dict()},
            "after": {"fpr": self.fpr_after.to_dict(), "recall": self.recall_after.to_dict()},
            "new_answers": {"fpr": self.fpr_new.to_dict(), "recall": self.recall_new.to_dict()},
            "bounds": [b.to_dict() for b in self.bounds],
            "notes": list(self.notes),
            "warnings": list(self.warnings),
            "trusted": self.trusted,
            "not_scored": [{"line": line, "error": error} for line, error in self.not_scored],
            "bootstrap": {"resamples": self.resamples, "seed": self.seed, "interval": 0.95},
            "allow_band": self.allow_band,
        }


# -- tune ------------------------------------------------------------------------------------


def tune(
    policy: str | os.PathLike[str],
    examples: str | os.PathLike[str],
    target_fpr: float,
    *,
    output: str | os.PathLike[str] | None = None,
    values: Sequence[str] = (),
    ceilings: Sequence[str] = (),
    allow_band: bool = False,
    seed: int = 0,
    resamples: int = 1000,
    scorer: Scorer | None = None,
    model: str | os.PathLike[str] | None = None,
    device: str = "auto",
    progress: Callable[[int, int], None] | None = None,
) -> Tuning:
    """Propose bounds for ``policy`` that meet ``target_fpr`` on labelled ``examples`` with the best recall,
    and write the child policy.

    Args:
        policy: P, a shipped policy name or a YAML path; the child ``extends`` it.
        examples: JSONL of labelled answers (see :func:`read_examples`).
        target_fpr: Largest share of acceptable answers the child may alter, strictly between 0 and 1.
        output: Where to write the child (default ``<P>-tuned.yaml``: beside P's file, or in the
            working directory for a shipped name).
        values: Values to bound besides those P bounds (a floor each, or a ceiling if in ``ceilings``).
        ceilings: Values whose ceiling is tuned (added where P has none).
        allow_band: Let bounds move into the "no connection" band ``|s| <= 0.3`` (floors above -0.3,
            ceilings below +0.3); by default only a bound P already has there may stay.
        seed: Seed of the bootstrap resamples.
        resamples: Bootstrap resamples (at least 100).
        scorer: Scores the examples without recorded scores (default: the shipped model, or ``model``,
            loaded only when some example needs it).
        model: Model directory for the default scorer.
        device: Device of the default scorer.
        progress: Called with ``(done, total)`` after each batch the model scores.

    Raises:
        ValueError: A bad argument (target, resamples, an unknown value, an output that is P itself).
        PolicyError: P does not load.
        DataError: Bad example lines (``FILE:LINE`` each), examples of one label only, or a target the
            rules kept from P already exceed.
    """
    if not 0.0 < target_fpr < 1.0:
        raise ValueError(f"target_fpr must lie strictly between 0 and 1, got {target_fpr!r}")
    if resamples < 100:
        raise ValueError(f"resamples must be at least 100 for a 95 % interval, got {resamples}")
    source = os.fspath(policy)
    parent = load_policy(policy)
    specs = bound_specs(parent, values, ceilings, allow_band)
    path = Path(output) if output is not None else _default_output(policy)
    extends = _extends(policy, path)
    rows = read_examples(examples)

    def build() -> Scorer:
        """The scorer, built only when some example has no recorded scores."""
        if scorer is not None:
            return scorer
        from guardrail._scoring.scorer import TransformerScorer

        return TransformerScorer(model, device=device, runtime=parent.scorer.runtime)

    scored = score_examples(rows, parent, build, progress)
    bad = scored.unacceptable
    n_good, n_bad = int(np.count_nonzero(~bad)), int(np.count_nonzero(bad))
    if n_good == 0 or n_bad == 0:
        missing = "acceptable" if n_good == 0 else "not acceptable"
        raise DataError(f"{examples}: no {missing} example among the {len(bad)} scored: tuning needs both labels")
    tuned = [s for s in specs if parent.action(s.action).type in ALTERS]
    notes = [f"{s.value}.{s.side}: its action {s.action!r} ({parent.action(s.action).type}) alters nothing; "
             "left as it is" for s in specs if s not in tuned]  # fmt: skip
    if parent.mode == "shadow":
        notes.append(f"{parent.name} is a shadow policy: rates are what its rules would do if enforced")
    budget = math.floor(target_fpr * n_good + 1e-9)
    base = altered(Engine(_with(parent, {(s.value, s.side): s.off for s in tuned})), scored)
    if np.count_nonzero(base & ~bad) > budget:
        share = np.count_nonzero(base & ~bad) / n_good
        raise DataError(
            f"target FPR {target_fpr:.1%} cannot be met: the rules of {parent.name} that are not tuned already "
            f"alter {share:.1%} of the {n_good} acceptable examples"
        )
    proposal = propose(tuned, scored.matrix, bad, base, budget) if tuned else []

    changed = {(s.value, s.side): b for s, b in zip(tuned, proposal) if b != s.before}
    body = _body(parent, extends, changed, target_fpr, len(bad))
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(body, encoding="utf-8")
        child = load_policy(tmp)  # the rates below are the written file's own, decided by its engine
        after = altered(Engine(child), scored)
        columns = [scored.matrix[:, s.column] for s in tuned]
        assert np.array_equal(after, altered_by(tuned, columns, proposal, base)), "the engine disagrees with the search"
        flags = {"before": altered(Engine(parent), scored), "after": after}
        for spec, column, bound in zip(tuned, columns, proposal):
            flags[spec.rule] = spec.alters(column, bound)
            if spec.before is not None:
                flags[f"{spec.rule} before"] = spec.alters(column, spec.before)
        rates = bootstrap(flags, bad, resamples, seed)
        fpr_new, recall_new = new_answers(tuned, scored.matrix, bad, base, target_fpr, resamples, seed)
        counts = Counts(len(rows), n_good, n_bad, len(scored.not_scored), scored.recorded, scored.scored)
        result = Tuning(
            policy=parent.name, policy_version=parent.version, child=child.name, output=path,
            examples=os.fspath(examples), target_fpr=target_fpr, counts=counts,
            fpr_before=rates["before"][0], recall_before=rates["before"][1],
            fpr_after=rates["after"][0], recall_after=rates["after"][1], fpr_new=fpr_new, recall_new=recall_new,
            bounds=tuple(Bound(spec.value, spec.side, spec.action, spec.before, bound,
                               *rates.get(f"{spec.rule} before", (None, None)), *rates[spec.rule])
                         for spec, bound in zip(tuned, proposal)),
            notes=tuple(notes), warnings=tuple(_warnings(counts, target_fpr, rates["after"][0])),
            not_scored=scored.not_scored, resamples=resamples, seed=seed, allow_band=allow_band, text="",
        )  # fmt: skip
        result = replace(result, text=_header(result, source) + body)
        tmp.write_text(result.text, encoding="utf-8")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return result


def _with(policy: Policy, bounds: Mapping[tuple[str, Side], float]) -> Policy:
    """``policy`` with some bounds moved or added (a new threshold blocks, severity high): in memory, for the engine."""
    thresholds = dict(policy.thresholds)
    for (value, side), bound in bounds.items():
        current = thresholds.get(value)
        thresholds[value] = (Threshold(**{side: bound}) if current is None
                             else current.model_copy(update={side: bound}))  # fmt: skip
    return policy.model_copy(update={"thresholds": thresholds})


def _warnings(counts: Counts, target: float, fpr: Rate) -> list[str]:
    """Why the examples are too few to trust the proposal (its FPR on them: ``fpr``)."""
    found = []
    if counts.acceptable * target < MIN_FLAGGED:
        need = math.ceil(MIN_FLAGGED / target)
        found.append(f"only {counts.acceptable} acceptable examples: at a target of {target:.1%} the policy may "
                     f"alter {counts.acceptable * target:.1f} of them, so the FPR rests on a handful of answers "
                     f"(use at least {need})")  # fmt: skip
    if fpr.high > WIDE_INTERVAL * target:
        found.append(f"the FPR's 95 % interval reaches {fpr.high:.1%}, more than {WIDE_INTERVAL:g} "
                     f"times the target")  # fmt: skip
    if counts.unacceptable < MIN_UNACCEPTABLE:
        found.append(f"only {counts.unacceptable} not-acceptable examples: recall is measured on too few "
                     f"(use at least {MIN_UNACCEPTABLE})")  # fmt: skip
    return found


# -- the child file --------------------------------------------------------------------------


def _is_name(source: str | os.PathLike[str]) -> bool:
    """Whether ``source`` names a shipped policy rather than a file (as ``load_policy`` tells them apart)."""
    if not isinstance(source, str):
        return False
    seps = [s for s in (os.sep, os.altsep) if s]
    return not (any(s in source for s in seps) or source.endswith((".yaml", ".yml")) or Path(source).is_file())


def _default_output(policy: str | os.PathLike[str]) -> Path:
    if _is_name(policy):
        return Path(f"{os.fspath(policy)}-tuned.yaml")
    path = Path(policy)
    stem = path.stem if path.suffix in (".yaml", ".yml") else path.name
    return path.with_name(f"{stem}-tuned.yaml")


def _extends(policy: str | os.PathLike[str], output: Path) -> str:
    """What the child's ``extends`` says: a shipped name as it is, a file relative to the child's folder."""
    if _is_name(policy):
        return os.fspath(policy)
    target = policy_files(policy)[0]
    if output.resolve() == target:
        raise ValueError(f"output {os.fspath(output)!r} is the policy itself; write the child to another file")
    return Path(os.path.relpath(target, output.resolve().parent)).as_posix()


def _body(parent: Policy, extends: str, changed: Mapping[tuple[str, Side], float], target: float, n: int) -> str:
    lines = [
        f"name: {json.dumps(parent.name + '-tuned')}",
        'version: "1"',
        f"description: {json.dumps(f'{parent.name} with bounds tuned to FPR <= {target:.1%} on {n} labelled answers')}",
        f"extends: {json.dumps(extends)}",
    ]
    if changed:
        lines.append("thresholds:")
        for value in VALUES:
            sides = {side: b for (v, side), b in changed.items() if v == value}
            if sides:
                inner = ", ".join(f"{side}: {sides[side]!r}" for side in ("min", "max") if side in sides)
                lines.append(f"  {value}: {{{inner}}}")
    return "\n".join(lines) + "\n"


def _header(result: Tuning, source: str) -> str:
    """The comment block on top of the child: examples, target, rates before and after, warnings."""
    c = result.counts
    band = "allowed into" if result.allow_band else "kept out of"
    tuned = ", ".join(f"{b.value}.{b.side}" for b in result.bounds) or "none"
    rows = [("", "FPR", "recall"),
            (f"before ({result.policy})", str(result.fpr_before), str(result.recall_before)),
            (f"after ({result.child})", str(result.fpr_after), str(result.recall_after)),
            ("after, on new answers *", str(result.fpr_new), str(result.recall_new))]  # fmt: skip
    w0, w1 = max(len(r[0]) for r in rows), max(len(r[1]) for r in rows)
    lines = [
        f"{result.child}: {source} (v{result.policy_version}) with bounds proposed by `guardrail policy tune`.",
        "",
        f"Examples: {result.examples}, {c.read} read: {c.acceptable} acceptable and {c.unacceptable} not acceptable",
        f"  used ({c.recorded} on recorded scores, {c.scored} scored by the model); {c.not_scored} not scored, "
        "left out.",
        f"Target: FPR <= {result.target_fpr:.1%}. FPR: share of acceptable answers blocked or rewritten;",
        "  recall: share of not-acceptable answers blocked or rewritten.",
        f"Tuned: {tuned};",
        f"  bounds {band} the no-connection band |s| <= {NO_CONNECTION}.",
        f"Rates on these examples, 95 % bootstrap intervals ({result.resamples:,} resamples, seed {result.seed}):",
        *(f"  {a:<{w0}}  {b:<{w1}}  {r}".rstrip() for a, b, r in rows),
        f"  * expected on answers the search did not see: tuned again on {result.fpr_new.resamples:,} resamples, "
        "each measured",
        "    on the examples it left out (the rates above flatter the bounds chosen on them).",
    ]
    if result.bounds:
        lines.append("Each tuned bound alone (the share of examples it would alter by itself), before -> after:")
        for b in result.bounds:
            old = "none" if b.before is None else f"{b.before:+.5g}"
            fpr = "-" if b.fpr_before is None else f"{b.fpr_before.value:.1%}"
            recall = "-" if b.recall_before is None else f"{b.recall_before.value:.1%}"
            lines.append(f"  {b.value}.{b.side}: {old} -> {b.after:+.5g}{'' if b.changed else ' (kept)'}")
            lines.append(f"    FPR {fpr} -> {b.fpr_after}; recall {recall} -> {b.recall_after}")
    lines += [f"Note: {n}" for n in result.notes]
    lines += [f"WARNING: too small to trust: {w}" for w in result.warnings]
    return "".join(f"# {line}\n" if line else "#\n" for line in lines)


# -- report ----------------------------------------------------------------------------------


def tables(result: Tuning) -> list[Any]:
    """Rich renderables for the terminal: what was read, the rates before and after, each bound, notes."""
    from rich.markup import escape
    from rich.table import Table

    c = result.counts
    head = (
        f"[bold]{escape(result.child)}[/] -> {escape(str(result.output))} (extends {escape(result.policy)})\n"
        f"examples: {c.read} read, {c.acceptable} acceptable, {c.unacceptable} not acceptable, "
        f"{c.not_scored} not scored ({c.recorded} recorded, {c.scored} scored now); target FPR {result.target_fpr:.1%}"
    )
    rates = Table(title=f"rates, 95 % bootstrap intervals ({result.resamples:,} resamples)", show_edge=False)
    for column in ("policy", "FPR", "", "recall", ""):
        rates.add_column(column, justify="left" if column == "policy" else "right")
    for name, fpr, recall in ((result.policy, result.fpr_before, result.recall_before),
                              (result.child, result.fpr_after, result.recall_after)):  # fmt: skip
        colour = "green" if fpr.value <= result.target_fpr else "red"
        rates.add_row(escape(name), f"[{colour}]{fpr.value:.1%}[/]", f"[{fpr.low:.1%}, {fpr.high:.1%}]",
                      f"{recall.value:.1%}", f"[{recall.low:.1%}, {recall.high:.1%}]")  # fmt: skip
    rates.add_row("on new answers *", f"{result.fpr_new.value:.1%}",
                  f"[{result.fpr_new.low:.1%}, {result.fpr_new.high:.1%}]", f"{result.recall_new.value:.1%}",
                  f"[{result.recall_new.low:.1%}, {result.recall_new.high:.1%}]")  # fmt: skip
    found: list[Any] = [
        head,
        rates,
        f"* tuned again on {result.fpr_new.resamples:,} resamples, each measured on the examples it left out",
    ]
    if result.bounds:
        bounds = Table(title="each tuned bound alone, before -> after", show_edge=False)
        for column in ("bound", "before", "after", "FPR", "recall"):
            bounds.add_column(column, justify="left" if column == "bound" else "right")
        for b in result.bounds:
            fpr = "-" if b.fpr_before is None else f"{b.fpr_before.value:.1%}"
            recall = "-" if b.recall_before is None else f"{b.recall_before.value:.1%}"
            bounds.add_row(
                f"{b.value}.{b.side}" + ("" if b.changed else "\n(kept)"),
                "-" if b.before is None else f"{b.before:+.5g}",
                f"{b.after:+.5g}",
                f"{fpr} -> {b.fpr_after.value:.1%}\n[{b.fpr_after.low:.1%}, {b.fpr_after.high:.1%}]",
                f"{recall} -> {b.recall_after.value:.1%}\n[{b.recall_after.low:.1%}, {b.recall_after.high:.1%}]",
            )
        found.append(bounds)
    found += [f"note: {escape(note)}" for note in result.notes]
    return found
