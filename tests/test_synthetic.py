"""The embedded `synthetic` dataset: Waterbirds' proportions and an honest Bayes ceiling."""

import math

import numpy as np
import pytest

from bench.data.dataset import DatasetOptions
from bench.errors import UserError
from bench.plugins import registry


def load(**opts):
    registry.load_plugins()
    return registry.get_dataset("synthetic").load(
        DatasetOptions(extra={k: str(v) for k, v in opts.items()})
    )


def counts(spec, split):
    md = spec.metadata.filter(spec.metadata["split"] == split)
    return {(y, a): int(((md["y"] == y) & (md["a"] == a)).sum()) for y in (0, 1) for a in (0, 1)}


def test_train_groups_follow_waterbirds():
    spec = load()
    assert counts(spec, "train") == {(0, 0): 3498, (0, 1): 184, (1, 0): 56, (1, 1): 1057}
    half = load(n_train=2398)
    c = counts(half, "train")
    assert c == {(0, 0): 1749, (0, 1): 92, (1, 0): 28, (1, 1): 529}  # 1057 * 0.5001 = 528.6


def test_val_and_test_balanced_by_attribute_within_class():
    spec = load()
    for split in ("val", "test"):
        c = counts(spec, split)
        assert abs(c[(0, 0)] - c[(0, 1)]) <= 1 and abs(c[(1, 0)] - c[(1, 1)]) <= 1


def test_bayes_ceiling_is_reached_by_the_core_rule_and_not_by_erm_like_rules():
    spec = load(n_test=40000, core=1.0, noise=1.3)
    assert spec.bayes_wga == pytest.approx(0.5 * (1 + math.erf((1.0 / 1.3) / math.sqrt(2))))
    md = spec.metadata
    test = (md["split"] == "test").to_numpy()
    x, y, a = spec.features[test], md["y"].to_numpy()[test], md["a"].to_numpy()[test]
    # recover the core direction from the class means within each attribute value
    u = np.mean(
        [x[(y == 1) & (a == k)].mean(0) - x[(y == 0) & (a == k)].mean(0) for k in (0, 1)], 0
    )
    u /= np.linalg.norm(u)
    pred = (x @ u > 0).astype(int)
    accs = [float((pred == y)[(y == yy) & (a == aa)].mean()) for yy in (0, 1) for aa in (0, 1)]
    # 10,000 examples per group: sampling std ≈ 0.004
    assert min(accs) == pytest.approx(spec.bayes_wga, abs=0.02)
    # a rule that also uses the spurious direction does worse on its worst group
    v = np.mean(
        [x[(y == yy) & (a == 1)].mean(0) - x[(y == yy) & (a == 0)].mean(0) for yy in (0, 1)], 0
    )
    pred2 = (x @ (u + 0.3 * v / np.linalg.norm(v)) > 0).astype(int)
    worst2 = min(
        float((pred2 == y)[(y == yy) & (a == aa)].mean()) for yy in (0, 1) for aa in (0, 1)
    )
    assert worst2 < spec.bayes_wga - 0.03


def test_options_are_checked():
    with pytest.raises(UserError, match="--dataset-opt noise=zero"):
        load(noise="zero")
    with pytest.raises(UserError, match="--dataset-opt size"):
        load(size=3)


def test_same_seed_same_data_and_fingerprint():
    a, b = load(), load()
    assert np.array_equal(a.features, b.features)
    assert a.fingerprint() == b.fingerprint()
    assert load(core=1.3).fingerprint() != a.fingerprint()
