"""Tests for guardrail._evaluate: metric functions, and ``guardrail eval`` on the real data and model."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from guardrail._cli import app
from guardrail._evaluate import auroc, band, evaluate_examples, macro_f1, pearson
from guardrail._values import SAFETY_VALUES, VALUES

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


def test_evaluate_examples_on_one_class_leaves_auroc_out() -> None:
    from guardrail._data import Example
    from guardrail._engine import Engine
    from guardrail._policy import Policy
    from guardrail.testing import FakeScorer

    rows = [Example("p", f"r{i}", (0.0,) * 10, "trustworthy", f"f:{i}") for i in range(3)]
    engine = Engine(Policy(name="t", thresholds={"benevolence": {"min": -0.3}}))
    report = evaluate_examples(FakeScorer(), engine, [], rows)
    assert report["auroc_opposed"] is None  # nothing opposed: no ranking to measure
    assert report["n"] == {"evaluator_scores": 0, "trustworthy": 3, "clean": 0,
                           "opposed_benevolence_universalism": 0, "trustworthy_opposed": 0}  # fmt: skip


# -- guardrail eval on the real data and the shipped model ---------------------------------


@pytest.fixture(scope="module")
def report(data_dir: Path) -> dict[str, Any]:
    """One ``guardrail eval --json`` run per session (the held-out split, ~1,300 responses)."""
    result = CliRunner().invoke(app, ["eval", "--data", str(data_dir), "--json"])
    assert result.exit_code == 0, f"stdout: {result.stdout}\nstderr: {result.stderr}\n{result.exception!r}"
    data = json.loads(result.stdout)
    assert isinstance(data, dict)
    return data


def test_eval_report_shape(report: dict[str, Any]) -> None:
    assert list(report["pearson"]) == list(VALUES)
    assert list(report["macro_f1"]) == list(VALUES)
    for key in ("auroc_opposed", "allow_rate_clean", "block_rate_opposed"):
        assert 0.0 <= report[key] <= 1.0, key
    assert report["n"]["evaluator_scores"] == 921
    assert report["n"]["trustworthy"] > 0
    assert report["policy"] == {"name": "default", "version": "1.2"}


def test_eval_quality_floors(report: dict[str, Any]) -> None:
    safety = sum(report["pearson"][v] for v in SAFETY_VALUES) / len(SAFETY_VALUES)
    assert safety == pytest.approx(report["pearson_mean_safety"], abs=1e-3)
    assert safety >= 0.50, report["pearson"]
    assert report["auroc_opposed"] >= 0.70
    assert report["allow_rate_clean"] >= 0.95
