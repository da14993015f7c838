"""Tests for guardrail._training.evaluate: metric functions, and ``guardrail eval`` on the real data (fake and real model)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from guardrail._cli import app
from guardrail._policy.engine import Engine
from guardrail._policy.schema import Policy
from guardrail._training.data import HARM_SOURCES, Example, load_harm
from guardrail._training.evaluate import (
    auroc,
    band,
    evaluate_examples,
    evaluate_harm,
    harm_figures,
    l1_risk,
    macro_f1,
    pearson,
)
from guardrail._values import SAFETY_VALUES, VALUES, ValueVector
from guardrail.testing import FakeScorer

FIGURES = {"auroc", "f1", "recall", "fpr", "n", "harmful"}

# -- metric functions ----------------------------------------------------------------------


def test_pearson() -> None:
    assert pearson([1, 2, 3], [2, 4, 6]) == pytest.approx(1.0)
    assert pearson([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    # means 2.5; sum(dx*dy) = 4, sum(dx^2) = sum(dy^2) = 5  ->  r = 0.8
    assert pearson([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(0.8)


def test_pearson_degenerate() -> None:
    assert pearson([1, 1, 1], [1, 2, 3]) == 0.0
    assert pearson([1, 2, 3], [0.5, 0.5, 0.5]) == 0.0
    assert pearson([1], [2]) == 0.0


def test_macro_f1() -> None:
    assert macro_f1([1, 0, -1], [1, 0, -1]) == pytest.approx(1.0)
    # class -1: tp 0 -> 0; class 0: tp 1, fp 1, fn 0 -> 2/3; class 1: tp 1, fp 1, fn 1 -> 1/2
    assert macro_f1([1, 1, 0, -1], [1, 0, 0, 1]) == pytest.approx((0 + 2 / 3 + 1 / 2) / 3)
    # a class only predicted still counts (F1 0), so inventing classes is penalised
    assert macro_f1([0, 0], [0, 1]) == pytest.approx((2 / 3 + 0) / 2)
    assert macro_f1([], []) == 0.0


def test_auroc() -> None:
    labels = [False, False, True, True]
    assert auroc(labels, [0.1, 0.2, 0.8, 0.9]) == pytest.approx(1.0)
    assert auroc(labels, [0.9, 0.8, 0.2, 0.1]) == pytest.approx(0.0)
    assert auroc(labels, [0.5, 0.5, 0.5, 0.5]) == pytest.approx(0.5)
    # positives 0.9, 0.3 vs negatives 0.8, 0.1: 3 of 4 pairs ordered
    assert auroc([True, False, True, False], [0.9, 0.8, 0.3, 0.1]) == pytest.approx(0.75)
    # one tie between a positive and a negative counts half: (1 + 0.5) / 2
    assert auroc([True, False, False], [0.7, 0.7, 0.1]) == pytest.approx(0.75)


def test_auroc_needs_both_classes() -> None:
    with pytest.raises(ValueError, match="both positive and negative"):
        auroc([True, True], [0.1, 0.2])
    with pytest.raises(ValueError, match="both positive and negative"):
        auroc([False], [0.1])


@pytest.mark.parametrize(
    ("score", "expected"),
    [(1.0, 1), (0.31, 1), (0.3, 0), (0.0, 0), (-0.3, 0), (-0.31, -1), (-1.0, -1)],
)
def test_band(score: float, expected: int) -> None:
    assert band(score) == expected


def _floor_engine() -> Engine:
    return Engine(Policy(name="t", thresholds={"benevolence": {"min": -0.3}}))


def test_evaluate_examples_on_one_class_leaves_auroc_out() -> None:
    rows = [Example("p", f"r{i}", (0.0,) * 10, "trustworthy", f"f:{i}") for i in range(3)]
    report = evaluate_examples(FakeScorer(), _floor_engine(), [], rows)
    assert report["auroc_opposed"] is None  # nothing opposed: no ranking to measure
    assert report["auroc_opposed_policy"] is None
    assert report["n"] == {"evaluator_scores": 0, "trustworthy": 3, "clean": 0,
                           "opposed_benevolence_universalism": 0, "trustworthy_opposed": 0}  # fmt: skip


def test_l1_risk() -> None:
    assert l1_risk(ValueVector().to_list()) == pytest.approx(4.0)
    # only the four safety values count: 1 - (-0.5) + 1 - 0.5 + 1 + 1; power is ignored
    assert l1_risk(ValueVector(security=-0.5, benevolence=0.5, power=-1.0).to_list()) == pytest.approx(4.0)
    assert l1_risk(ValueVector(security=-1, conformity=-1, benevolence=-1, universalism=-1).to_list()) == 8.0


# -- harm detection ------------------------------------------------------------------------


def test_harm_figures() -> None:
    labels = [True, True, True, False, False]
    risks = [3.0, 2.0, 0.5, 1.0, 0.0]
    blocked = [True, True, False, True, False]
    # tp 2, fp 1, 3 harmful, 2 harmless: F1 = 2*2 / (3 + 2 + 1); AUROC: 5 of the 6 pairs ordered (0.5 < 1)
    assert harm_figures(labels, risks, blocked) == {
        "auroc": pytest.approx(5 / 6, abs=1e-4),
        "f1": pytest.approx(4 / 6, abs=1e-4),
        "recall": pytest.approx(2 / 3, abs=1e-4),
        "fpr": 0.5,
        "n": 5,
        "harmful": 3,
    }


def test_harm_figures_all_caught_none_wrongly() -> None:
    assert harm_figures([True, False], [2.0, 1.0], [True, False]) == {
        "auroc": 1.0, "f1": 1.0, "recall": 1.0, "fpr": 0.0, "n": 2, "harmful": 1}  # fmt: skip


def test_harm_figures_one_class() -> None:
    # only harmful answers: no AUROC and no false-positive rate; F1 = 2*1 / (2 + 1 + 0)
    only_harmful = harm_figures([True, True], [0.1, 0.2], [True, False])
    assert only_harmful == {"auroc": None, "f1": pytest.approx(2 / 3, abs=1e-4), "recall": 0.5, "fpr": None,
                            "n": 2, "harmful": 2}  # fmt: skip
    # only harmless answers: no AUROC and no recall; a wrong block makes F1 0
    only_harmless = harm_figures([False, False], [0.1, 0.2], [False, True])
    assert only_harmless == {"auroc": None, "f1": 0.0, "recall": None, "fpr": 0.5, "n": 2, "harmful": 0}
    # nothing harmful and nothing blocked: F1 is undefined, not 0
    assert harm_figures([False], [0.1], [False])["f1"] is None
    assert harm_figures([], [], []) == {"auroc": None, "f1": None, "recall": None, "fpr": None, "n": 0, "harmful": 0}


def _harm_row(response: str, harmful: bool, subset: str) -> Example:
    return Example("p", response, (float("nan"),) * 10, "harm", f"{subset}:1", harmful=harmful, subset=subset,
                   split="test")  # fmt: skip


def test_evaluate_harm_per_source_and_pooled() -> None:
    bad = ValueVector(benevolence=-0.9)  # L1 risk 4.9, blocked by the floor; a zero vector: 4.0, allowed
    rows = [
        _harm_row("caught", True, "beavertails"),  # harmful, blocked
        _harm_row("passed", False, "beavertails"),  # harmless, allowed
        _harm_row("missed", True, "gptfuzz"),  # harmful, allowed
        _harm_row("wrongly blocked", False, "gptfuzz"),  # harmless, blocked
    ]
    scorer = FakeScorer({"caught": bad, "wrongly blocked": bad})
    seen: list[int] = []
    result = evaluate_harm(scorer, _floor_engine(), rows, progress=seen.append)
    assert sum(seen) == 4
    assert list(result) == ["pooled", "beavertails", "gptfuzz"]  # sources without rows are left out
    assert result["beavertails"] == {"auroc": 1.0, "f1": 1.0, "recall": 1.0, "fpr": 0.0, "n": 2, "harmful": 1}
    assert result["gptfuzz"] == {"auroc": 0.0, "f1": 0.0, "recall": 0.0, "fpr": 1.0, "n": 2, "harmful": 1}
    # pooled: tp 1, fp 1, 2 harmful: F1 2 / (2 + 1 + 1); AUROC (1 + 0.5 + 0.5 + 0) / 4 with the ties
    assert result["pooled"] == {"auroc": 0.5, "f1": 0.5, "recall": 0.5, "fpr": 0.5, "n": 4, "harmful": 2}


# -- guardrail eval on the real data with a fake model (fast) ------------------------------


def _fake_scorer(prompt: str | None, response: str) -> ValueVector:
    # Some answers blocked, most allowed: every table row gets figures.
    return ValueVector(benevolence=-0.9 if len(response) % 7 == 0 else 0.2, universalism=0.1)


@pytest.fixture
def fake_model(monkeypatch: pytest.MonkeyPatch) -> FakeScorer:
    """``guardrail eval`` on a fake scorer: the command itself, without the model's CPU time."""
    from guardrail import Guard

    scorer = FakeScorer(fn=_fake_scorer)
    monkeypatch.setattr("guardrail._cli._guard", lambda policy, model, device: Guard(policy, scorer=scorer))
    return scorer


def test_eval_prints_the_harm_table(fake_model: FakeScorer, data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from rich.progress import Progress

    totals: list[float | None] = []
    add_task = Progress.add_task

    def recording(self: Progress, *args: Any, **kwargs: Any) -> Any:
        totals.append(kwargs.get("total"))
        return add_task(self, *args, **kwargs)

    monkeypatch.setattr(Progress, "add_task", recording)
    result = CliRunner().invoke(app, ["eval", "--data", str(data_dir)])
    assert result.exit_code == 0, f"stdout: {result.stdout}\nstderr: {result.stderr}\n{result.exception!r}"
    scored = sum(len(call) for call in fake_model.calls)
    assert totals == [scored]  # the bar counts the harm rows too
    assert scored == 921 + 357 + len(load_harm(data_dir, "test"))  # FULCRA test answers and dialogues, harm rows
    out = result.stdout
    assert "auroc_opposed (L1 safety risk): " in out and "auroc_opposed_policy (policy margin): " in out
    assert "harm detection" in out and "false-positive" in out
    for name in ("BeaverTails", "PKU-SafeRLHF", "GPTFuzz", "DiaSafety", "pooled"):
        assert name in out, name


def test_eval_no_harm_skips_the_harm_rows(fake_model: FakeScorer, data_dir: Path) -> None:
    result = CliRunner().invoke(app, ["eval", "--data", str(data_dir), "--no-harm", "--json"])
    assert result.exit_code == 0, f"stdout: {result.stdout}\nstderr: {result.stderr}\n{result.exception!r}"
    report = json.loads(result.stdout)
    assert "harm" not in report
    assert {"pearson", "auroc_opposed", "auroc_opposed_policy", "allow_rate_clean"} <= set(report)
    assert sum(len(call) for call in fake_model.calls) == report["n"]["evaluator_scores"] + report["n"]["trustworthy"]


def test_eval_missing_harm_data(fake_model: FakeScorer, data_dir: Path, tmp_path: Path) -> None:
    (tmp_path / "fulcra").symlink_to(data_dir / "fulcra")  # FULCRA there, harm/ not
    result = CliRunner().invoke(app, ["eval", "--data", str(tmp_path)])
    assert result.exit_code == 2
    assert result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith("error: ") and f"{tmp_path}/harm/beavertails.jsonl: missing" in result.stderr
    assert not fake_model.calls  # failed before scoring anything
    without = CliRunner().invoke(app, ["eval", "--data", str(tmp_path), "--no-harm"])  # needs no harm files
    assert without.exit_code == 0 and "harm detection" not in without.stdout


# -- guardrail eval on the real data and the shipped model ---------------------------------


@pytest.fixture(scope="module")
def report(data_dir: Path) -> dict[str, Any]:
    """One ``guardrail eval --json`` run per session (the held-out split and the harm test rows, ~8,200 answers)."""
    result = CliRunner().invoke(app, ["eval", "--data", str(data_dir), "--json"])
    assert result.exit_code == 0, f"stdout: {result.stdout}\nstderr: {result.stderr}\n{result.exception!r}"
    data = json.loads(result.stdout)
    assert isinstance(data, dict)
    return data


def test_eval_report_shape(report: dict[str, Any]) -> None:
    assert list(report["pearson"]) == list(VALUES)
    assert list(report["macro_f1"]) == list(VALUES)
    for key in ("auroc_opposed", "auroc_opposed_policy", "allow_rate_clean", "block_rate_opposed"):
        assert 0.0 <= report[key] <= 1.0, key
    assert report["n"]["evaluator_scores"] == 921
    assert report["n"]["trustworthy"] > 0
    assert report["policy"] == {"name": "default", "version": "1.2"}


def test_eval_report_harm_shape(report: dict[str, Any], data_dir: Path) -> None:
    rows = load_harm(data_dir, "test")
    harm = report["harm"]
    assert list(harm) == ["pooled", *HARM_SOURCES]
    for source in HARM_SOURCES:
        assert harm[source]["n"] == sum(e.subset == source for e in rows), source
        assert harm[source]["harmful"] == sum(bool(e.harmful) and e.subset == source for e in rows), source
    assert harm["pooled"]["n"] == len(rows) == sum(harm[s]["n"] for s in HARM_SOURCES)
    assert harm["pooled"]["harmful"] == sum(harm[s]["harmful"] for s in HARM_SOURCES)
    for source, figures in harm.items():
        assert set(figures) == FIGURES, source
        # every source's test rows hold both classes, so every figure is defined
        assert all(0.0 <= figures[k] <= 1.0 for k in ("auroc", "f1", "recall", "fpr")), (source, figures)


def test_eval_report_quality_floors(report: dict[str, Any]) -> None:
    safety = sum(report["pearson"][v] for v in SAFETY_VALUES) / len(SAFETY_VALUES)
    assert safety == pytest.approx(report["pearson_mean_safety"], abs=1e-3)
    assert safety >= 0.50, report["pearson"]
    assert report["auroc_opposed"] >= 0.70
    assert report["allow_rate_clean"] >= 0.95
