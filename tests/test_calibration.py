"""Tests for training's harm loss, epoch sampling and floor calibration (guardrail._training.train)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from guardrail._training.config import TrainConfig
from guardrail._training.data import Example
from guardrail._training.train import _epoch_rows, _share_of, calibrate_floors, harm_loss
from guardrail._values import VALUES

SAFETY = [VALUES.index(v) for v in ("security", "conformity", "benevolence", "universalism")]


def _scores(safety: list[float]) -> torch.Tensor:
    row = torch.zeros(len(VALUES))
    row[SAFETY] = torch.tensor(safety)
    return row


def test_harm_loss_hinges_on_the_lowest_safety_score() -> None:
    window = torch.stack([_scores([0.0, 0.0, -0.6, 0.0]), _scores([0.0] * 4), _scores([0.0] * 4), _scores([0.0] * 4)])
    lowest = window.clone()
    lowest[2, SAFETY[1]] = -0.5  # a span of a harmless answer opposes conformity
    harmful = torch.tensor([1.0, 1.0, 0.0, math.nan])
    loss = harm_loss(window, lowest, harmful, margin=0.2)
    # 0: harmful and below -0.5 already; 1: harmful, lowest 0.0 -> (0.0 + 0.3 + 0.2)^2;
    # 2: harmless, one score at -0.5 -> (-0.1 + 0.5)^2; 3: unlabelled.
    assert loss.tolist() == pytest.approx([0.0, 0.25, 0.16, 0.0])


def test_harm_loss_ignores_the_other_six_values() -> None:
    row = torch.full((1, len(VALUES)), -1.0)
    row[0, SAFETY] = 0.5
    assert harm_loss(row, row, torch.tensor([0.0]), margin=0.2).item() == 0.0


def test_epoch_shares_show_every_row_over_the_epochs() -> None:
    nan = (math.nan,) * 10
    rows = [Example("p", str(i), nan, "harm", "x", harmful=True, subset="diasafety") for i in range(10)]
    rows += [Example("p", "f", (0.0,) * 10, "evaluator", "x")] * 3
    cfg = TrainConfig(epoch_shares={"diasafety": 0.5})
    shares = [_share_of(e, cfg) for e in rows]
    assert shares[:10] == [0.5] * 10 and shares[10:] == [1.0] * 3
    first, second = (_epoch_rows(shares, epoch) for epoch in (0, 1))
    assert {10, 11, 12} <= set(first) and {10, 11, 12} <= set(second)
    halves = [i for i in first if i < 10], [i for i in second if i < 10]
    assert len(halves[0]) == len(halves[1]) == 5 and sorted(halves[0] + halves[1]) == list(range(10))


def test_floors_block_most_harm_within_each_limit() -> None:
    rng = np.random.default_rng(0)
    harmless_a = rng.normal(0.2, 0.25, (400, 4))
    harmless_b = rng.normal(0.0, 0.3, (400, 4))
    harmful = rng.normal(-0.6, 0.3, (400, 4))
    safety = np.concatenate([harmless_a, harmless_b, harmful])
    group = np.arange(len(safety)) // 400
    floors = calibrate_floors(safety, [(group == 0, 0.02), (group == 1, 0.05)], group == 2)
    row = np.array(list(floors.values()))
    blocked = (safety < row).any(1)
    assert blocked[group == 0].mean() <= 0.02 and blocked[group == 1].mean() <= 0.05
    assert blocked[group == 2].mean() > 0.8
    assert all(f <= -0.3 for f in floors.values()) and all(round(f, 2) == f for f in floors.values())
    # Raising any floor one step would break a limit or catch nothing more.
    for v in range(4):
        up = row.copy()
        up[v] = min(-0.3, up[v] + 0.01)
        more = (safety < up).any(1)
        over = more[group == 0].mean() > 0.02 or more[group == 1].mean() > 0.05
        assert over or more[group == 2].sum() == blocked[group == 2].sum()


def test_floors_stay_at_the_no_connection_edge_when_nothing_harmless_is_near() -> None:
    safety = np.array([[0.5] * 4, [0.4] * 4, [-0.9] * 4])
    floors = calibrate_floors(safety, [(np.array([True, True, False]), 0.0)], np.array([False, False, True]))
    assert floors == dict.fromkeys(("security", "conformity", "benevolence", "universalism"), -0.3)
