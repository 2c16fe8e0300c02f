"""Metrics on hand-computed examples (DESIGN §7)."""

import pytest
import torch

from bench.report.metrics import compute


def masks_from_groups(g, n):
    return torch.stack([g == k for k in range(n)])


def test_hand_computed_example():
    # groups:       0  0  0  1  1  2  2  2  2  3
    g = torch.tensor([0, 0, 0, 1, 1, 2, 2, 2, 2, 3])
    y = torch.tensor([0, 0, 0, 0, 0, 1, 1, 1, 1, 1])
    pred = torch.tensor([0, 0, 1, 1, 0, 1, 1, 1, 0, 0])
    prior = torch.tensor([0.4, 0.1, 0.1, 0.4])
    m = compute(pred, y, masks_from_groups(g, 4), ["g0", "g1", "g2", "g3"], 2, prior)
    assert m.per_group == pytest.approx({"g0": 2 / 3, "g1": 1 / 2, "g2": 3 / 4, "g3": 0.0})
    assert m.wga == 0.0
    assert m.avg == pytest.approx(6 / 10)
    assert m.adj_avg == pytest.approx(0.4 * 2 / 3 + 0.1 * 1 / 2 + 0.1 * 3 / 4 + 0.4 * 0.0)
    # class 0: 3 of 5 right; class 1: 3 of 5 right
    assert m.worst_class == pytest.approx(3 / 5)
    assert m.per_class == pytest.approx({0: 3 / 5, 1: 3 / 5})


def test_empty_group_is_left_out_and_prior_renormalised():
    g = torch.tensor([0, 0, 1, 1])
    y = torch.tensor([0, 0, 1, 1])
    pred = torch.tensor([0, 1, 1, 1])
    prior = torch.tensor([0.5, 0.25, 0.25])  # group 2 has no example in this split
    m = compute(pred, y, masks_from_groups(g, 3), ["a", "b", "c"], 2, prior)
    assert set(m.per_group) == {"a", "b"}
    assert m.group_counts == {"a": 2, "b": 2, "c": 0}
    assert m.wga == pytest.approx(0.5)
    assert m.adj_avg == pytest.approx((0.5 * 0.5 + 0.25 * 1.0) / 0.75)


def test_overlapping_groups():
    y = torch.tensor([0, 1, 1, 0])
    pred = torch.tensor([0, 1, 0, 1])
    masks = torch.tensor(
        [
            [True, True, False, False],  # identity A
            [False, True, True, True],  # identity B, overlaps A on row 1
            [True, True, True, True],
        ]  # everyone
    )
    m = compute(pred, y, masks, ["A", "B", "all"], 2, torch.tensor([0.25, 0.5, 0.25]))
    assert m.per_group == pytest.approx({"A": 1.0, "B": 1 / 3, "all": 0.5})
    assert m.wga == pytest.approx(1 / 3)
    assert m.avg == pytest.approx(0.5)


def test_worst_class_ignores_absent_class():
    y = torch.tensor([0, 0, 2])
    pred = torch.tensor([0, 1, 2])
    m = compute(pred, y, torch.ones(1, 3, dtype=torch.bool), ["all"], 3, torch.tensor([1.0]))
    assert m.per_class == pytest.approx({0: 0.5, 2: 1.0})
    assert m.worst_class == pytest.approx(0.5)
