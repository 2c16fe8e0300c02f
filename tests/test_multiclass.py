"""The test matrix: every built-in method on every embedded dataset and on generated 3- and
5-class data (the `features` dataset), at its defaults with one seed and a tiny budget.

Each (method, dataset) pair either fits and gives valid predictions (class indices, more
than one class predicted unless the method does not train), finite test metrics and an
accuracy for every evaluation group, or the method declares itself unsupported there
with a reason. Methods and embedded datasets come from the registry, so a new plugin
joins the matrix by existing.
"""

from __future__ import annotations

import math
import sys

import numpy as np
import pytest
import torch
from conftest import default_params, dfr_standardised
from sklearn.multiclass import OneVsRestClassifier

from bench.plugins import registry
from bench.run.runner import Run, RunConfig

registry.load_plugins()
METHODS = sorted(registry.methods())
EMBEDDED = sorted(name for name, cls in registry.datasets().items() if cls.embedded)
GENERATED = {"generated-3class": (3, 2), "generated-5class": (5, 5)}  # (classes, attributes)
DATASETS = EMBEDDED + sorted(GENERATED)
# Small sizes for the embedded datasets that take them (others run at their defaults).
SMALL = {
    "synthetic": {"n_train": "1200", "n_val": "400", "n_test": "800"},
    "waterbirds-synth": {"n_train": "80", "n_val": "40", "n_test": "40", "size": "32"},
}
# A smoke test of every pair, not of accuracy: few epochs, but at least MIN_STEPS optimizer
# steps (a split smaller than one batch takes one step an epoch), never above the default;
# a variant that fixes its epochs keeps them.
EPOCHS, MIN_STEPS = 3, 20
UNTRAINED = {"zeroshot"}  # methods that fit nothing, so may predict a single class


def write_generated(path, n_classes: int, n_attrs: int, seed: int = 0) -> None:  # noqa: ANN001
    """Gaussian features with a core direction per class and a spurious one per attribute.

    Each class's majority attribute is y % n_attrs: in train it has 150 examples of the
    class and every other attribute 8 (every group is present, but the attribute nearly
    predicts the class); val has 30 and 12 (so group-balanced subsamples differ), test 40
    of every group. The class text embeddings lean towards their class's majority
    attribute, as CLIP's prompts do.
    """
    rng = np.random.default_rng(seed)
    dim = 32
    basis, _ = np.linalg.qr(rng.standard_normal((dim, n_classes + n_attrs)))
    core, spurious = basis[:, :n_classes].T, basis[:, n_classes:].T
    ys, as_, splits = [], [], []
    for split, (major, minor) in (("train", (150, 8)), ("val", (30, 12)), ("test", (40, 40))):
        for y in range(n_classes):
            for a in range(n_attrs):
                n = major if a == y % n_attrs else minor
                ys += [y] * n
                as_ += [a] * n
                splits += [split] * n
    y, a = np.array(ys), np.array(as_)
    x = 1.5 * core[y] + 2.5 * spurious[a] + rng.standard_normal((len(y), dim))
    text = core + 0.5 * spurious[np.arange(n_classes) % n_attrs]
    np.savez(
        path, x=x.astype(np.float32), y=y, a=a, split=np.array(splits),
        class_text=text.astype(np.float32),
    )


@pytest.fixture(scope="module")
def runs(tmp_path_factory):  # noqa: ANN201
    """One Run per dataset, made when a test first needs it."""
    made: dict[str, Run] = {}

    def get(dataset: str) -> Run:
        if dataset not in made:
            out = tmp_path_factory.mktemp(f"matrix-{dataset}")
            if dataset in GENERATED:
                path = out / f"{dataset}.npz"
                write_generated(path, *GENERATED[dataset])
                name, opts = "features", {"path": str(path), "name": dataset}
            else:
                name, opts = dataset, SMALL.get(dataset, {})
            made[dataset] = Run(RunConfig(
                methods=None, trials=0, seeds=1, out=out / "run", runs_dir=out,
                progress=False, dataset=name, dataset_opts=opts,
            ))
        return made[dataset]

    return get


def quick_params(entry, n_train: int) -> dict:  # noqa: ANN001
    params = default_params(entry)
    if "epochs" in params and "epochs" not in entry.fixed:  # a variant's own value stands
        steps = math.ceil(n_train / int(params.get("batch_size", 256)))
        quick = max(EPOCHS, math.ceil(MIN_STEPS / steps))
        params["epochs"] = min(int(params["epochs"]), quick)
    return params


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("dataset", DATASETS)
def test_every_method_runs_on_every_dataset(runs, dataset, method):
    run = runs(dataset)
    store = run.store
    entry = registry.get_method(method)
    if dataset in GENERATED:
        assert store.n_classes == GENERATED[dataset][0] and store.class_text is not None
    why = entry.create().unsupported(store)
    if why is not None:  # declared, with a reason the run reports; never silently skipped
        assert isinstance(why, str) and why.strip(), f"{method} on {dataset}: empty reason"
        assert why in (run.why_not(entry) or "")
        return

    pred = run.fit(entry, quick_params(entry, len(store.splits["train"])), 0)
    test = store.splits["test"]
    labels = pred.predict(test.x)
    assert labels.shape == (len(test),)
    assert not labels.dtype.is_floating_point
    assert int(labels.min()) >= 0 and int(labels.max()) < store.n_classes
    logits = pred.logits(test.x)
    assert float(logits.std(0).max()) > 0, f"{method} on {dataset}: constant output"
    # waterbirds-synth here is 80 images through a random-weight encoder: a short fit may
    # honestly predict one class (measured: sfr, seed 0, both engines alike)
    if method not in UNTRAINED and dataset != "waterbirds-synth":
        assert len(torch.unique(labels)) > 1, f"{method} on {dataset}: predicts one class"

    _, metrics = run.evaluate_splits(pred)
    for key in ("wga", "avg", "adj_avg", "worst_class"):
        assert math.isfinite(getattr(metrics, key)), f"{method} on {dataset}: test {key}"
    # every evaluation group has test examples here, so each must have an accuracy
    groups = set(store.eval_group_names)
    assert all(metrics.group_counts[n] > 0 for n in groups)
    assert set(metrics.per_group) == groups
    assert all(0.0 <= v <= 1.0 for v in metrics.per_group.values())


@pytest.mark.parametrize("dataset", sorted(GENERATED))
def test_dfr_multiclass_logits_are_the_mean_one_vs_rest_decision_functions(runs, dataset):
    """DFR with three or more classes: refit each retrain as scikit-learn's one-vs-rest over
    the binary liblinear L1 model, on DFR's own balanced subsamples and C; the head's logits
    are the average of those models' per-class decision functions."""
    run = runs(dataset)
    entry = registry.get_method("dfr")
    dfr = sys.modules[entry.cls.__module__]
    pred = run.fit(entry, {**default_params(entry), "n_retrains": 3}, 0)
    info = pred.info
    xs, yv, xt = dfr_standardised(run)
    test = run.store.splits["test"]
    decisions = []
    for pick in info["picks"]:
        model = OneVsRestClassifier(dfr.l1_logistic(info["C"], info["seed"]))
        decisions.append(model.fit(xs[pick], yv[pick]).decision_function(xt))  # [N, C]
    expected = np.mean(decisions, axis=0)
    logits = pred.logits(test.x).cpu().numpy().astype(np.float64)
    assert logits.shape == (len(test), run.store.n_classes)
    np.testing.assert_allclose(logits, expected, rtol=1e-4, atol=1e-3)
    for d in decisions:  # a single retrain is not the average
        assert np.abs(d - expected).max() > 0.05
