"""Device-side samplers: uniform epochs are permutations; balanced ones equalise groups."""

import torch

from bench.engine.samplers import Sampler, group_balanced_weights


def test_uniform_epoch_is_a_permutation():
    s = Sampler.uniform(1000, 64)
    batches = s.epoch(torch.Generator().manual_seed(0), torch.device("cpu"))
    assert all(len(b) <= 64 for b in batches)
    assert torch.equal(torch.cat(batches).sort().values, torch.arange(1000))


def test_group_balanced_frequencies():
    # Waterbirds-like imbalance: 3498/184/56/1057
    g = torch.cat([torch.full((n,), k) for k, n in enumerate((3498, 184, 56, 1057))])
    s = Sampler.group_balanced(g, 4, 256)
    gen = torch.Generator().manual_seed(1)
    drawn = torch.cat([torch.cat(s.epoch(gen, torch.device("cpu"))) for _ in range(10)])
    freq = torch.bincount(g[drawn], minlength=4).double() / len(drawn)
    # n = 47,950 draws; the std of a frequency of 1/4 is sqrt(.25*.75/n) ≈ 0.002: 0.01 is 5 std
    assert torch.allclose(freq, torch.full((4,), 0.25, dtype=torch.float64), atol=0.01)
    # the unbalanced data would give 0.73 / 0.04 / 0.01 / 0.22: the check is not vacuous
    assert freq.min() > 0.2


def test_weighted_frequencies_follow_weights():
    w = torch.tensor([1.0, 3.0, 0.0, 4.0])
    s = Sampler.weighted(w, 100)
    drawn = torch.cat(
        [
            torch.cat(s.epoch(torch.Generator().manual_seed(i), torch.device("cpu")))
            for i in range(5000)
        ]
    )
    freq = torch.bincount(drawn, minlength=4).double() / len(drawn)
    assert freq[2] == 0
    assert torch.allclose(
        freq, torch.tensor([1 / 8, 3 / 8, 0.0, 4 / 8], dtype=torch.float64), atol=0.01
    )


def test_group_balanced_weights_equal_totals():
    g = torch.tensor([0, 0, 0, 1, 2, 2])
    w = group_balanced_weights(g, 3)
    totals = torch.zeros(3).index_add_(0, g, w)
    assert torch.allclose(totals, torch.ones(3))
