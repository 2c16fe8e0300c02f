"""The conformance kit: checks any registered plugin (built-in or third-party) must pass.

    from bench.testing import check_method, check_dataset
    check_method("mine", plugins=[Path("my_plugins")])   # raises AssertionError with why
    check_dataset("mine-data", options={"path": "tiny.npz"})

`check_method` runs the method through the harness on tiny generated data (binary and
3-class): its search space is well formed (defaults inside their ranges, constraints
met), it fits at its defaults with short training, it reads only the group labels it
declares (the harness withholds the others, so a breach fails the fit), its predictions
are valid classes, the same seed gives the same model, and `fit_batched` (K
configurations at once) equals one `fit` per configuration. `check_dataset` loads a
dataset twice and checks its spec: splits, labels, groups and a stable fingerprint.
The test suite runs both over every built-in plugin; plugin authors run them in theirs.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench.data.dataset import DatasetOptions
from bench.data.store import LabelWithheld
from bench.plugins import registry
from bench.plugins.method import FAMILIES
from bench.tuning.space import Choice, Float, Int, violations

SHORT_EPOCHS = 3  # training in the kit is short: it checks contracts, not accuracy


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def tiny_features(path: Path, n_classes: int = 2, seed: int = 0, attr_text: bool = True
                  ) -> Path:
    """A small `features` dataset with a spurious attribute, class-text embeddings and
    (unless `attr_text` is False) attribute and paired class-with-attribute text, so text
    debiasing methods (orth-proj) are fitted by the kit rather than refused."""
    rng = np.random.default_rng(seed)
    n, dim = 360, 16
    y = rng.integers(0, n_classes, n)
    a = np.where(rng.random(n) < 0.8, y % 2, 1 - y % 2)
    core = rng.standard_normal((n_classes, dim))
    spur = rng.standard_normal(dim)
    x = core[y] + 1.5 * np.outer(a - 0.5, spur) + 0.8 * rng.standard_normal((n, dim))
    split = np.repeat([0, 1, 2], n // 3)
    idx = np.arange(n)
    for s in (0, 1, 2):  # every (y, a) group present in every split
        rows = idx[split == s][: n_classes * 2]
        y[rows] = np.arange(n_classes * 2) // 2
        a[rows] = np.arange(n_classes * 2) % 2
    x = x / np.linalg.norm(x, axis=1, keepdims=True)
    text = _unit(core)
    arrays = {"class_text": text.astype(np.float32)}
    if attr_text:  # drawn last: x, y, a are those of a file without them
        sign = np.array([-0.5, 0.5])  # a - 0.5, as x has it
        attr = _unit(sign[:, None] * spur + 0.1 * rng.standard_normal((2, dim)))
        pairs = _unit(core[:, None, :] + 1.5 * sign[None, :, None] * spur)  # [C, A, dim]
        arrays.update(attr_text=attr.astype(np.float32),
                      class_attr_text=pairs.astype(np.float32))
    np.savez(path, x=x.astype(np.float32), y=y, a=a, split=split, **arrays)
    return path


def check_space(name: str) -> None:
    """Defaults lie inside their ranges and meet the space's constraints."""
    entry = registry.get_method(name)
    space = entry.create().search_space()
    defaults: dict[str, Any] = {}
    for k, p in space.items():
        d = p.default
        defaults[k] = d
        if isinstance(p, Choice):
            assert d in p.choices, f"{name}.{k}: default {d!r} not among {p.choices}"
            continue
        assert isinstance(p, Float | Int), f"{name}.{k}: not a bench.Float, Int or Choice"
        assert p.low <= p.high, f"{name}.{k}: empty range [{p.low}, {p.high}]"
        if d is None:
            assert not p.tune, f"{name}.{k}: a tuned parameter needs a default"
            continue
        assert p.low <= d <= p.high, f"{name}.{k}: default {d} outside [{p.low}, {p.high}]"
        if p.log:
            assert p.low > 0, f"{name}.{k}: a log range must be positive"
    defaults.update(entry.fixed)
    bad = violations(space, defaults)
    assert not bad, f"{name}: its defaults break the space's constraints: {bad}"


def _short(params: dict[str, Any], space: dict) -> dict[str, Any]:
    """Defaults with fewer epochs (keeping warm-up style bounds below them)."""
    p = dict(params)
    if "epochs" in p and p["epochs"] is not None and p["epochs"] > SHORT_EPOCHS:
        p["epochs"] = SHORT_EPOCHS
        for k, spec in space.items():
            if isinstance(spec, Int) and spec.below == "epochs" and p.get(k) is not None:
                p[k] = min(p[k], SHORT_EPOCHS - 1)
    return p


def check_method(name: str, plugins: list[Path] | None = None, n_classes: tuple[int, ...] = (2, 3),
                 workdir: Path | None = None) -> None:
    """Run every check on `name` (see the module docstring); AssertionError says which."""
    from bench.run.runner import Run, RunConfig

    registry.load_plugins(list(plugins or []))
    check_space(name)
    entry = registry.get_method(name)
    assert entry.cls.family in FAMILIES, (
        f"{name}: family {entry.cls.family!r} is not one of {FAMILIES}")
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(workdir or tmp)
        for c in n_classes:
            data = tiny_features(base / f"tiny-{c}.npz", c)
            run = Run(RunConfig(
                dataset="features", dataset_opts={"path": str(data)}, methods=[name],
                trials=0, seeds=1, out=base / f"run-{name}-{c}", runs_dir=base,
                progress=False, plugins=list(plugins or []),
            ))
            why = run.why_not(entry)
            if why is not None:
                assert "cannot run" in why or "withholds" in why, f"{name}: unclear refusal {why}"
                continue
            _check_fits(run, entry, c)


def _check_fits(run: Any, entry: Any, n_classes: int) -> None:
    name = entry.name
    space = entry.create().search_space()
    params = _short({**{k: p.default for k, p in space.items()}, **entry.fixed}, space)
    val = run.store.splits["val"]
    try:
        first = run.fit(entry, params, 0)
        again = run.fit(entry, params, 0)
    except LabelWithheld as exc:
        raise AssertionError(
            f"{name} reads group labels it does not declare (group_labels="
            f"{sorted(entry.group_labels)}): {exc}") from None
    pred = first.predict(val.x)
    assert pred.dtype == torch.int64 and pred.shape == (len(val),), f"{name}: bad predictions"
    assert int(pred.min()) >= 0 and int(pred.max()) < n_classes, f"{name}: class out of range"
    logits = first.logits(val.x)
    assert torch.isfinite(logits).all(), f"{name}: non-finite logits on {n_classes} classes"
    torch.testing.assert_close(again.logits(val.x), logits, atol=1e-5, rtol=1e-5,
                               msg=f"{name}: the same seed gave another model")
    # K configurations at once equal one fit each
    seeds = (0, 1)
    train, lent_val = run.lent_splits(entry)
    one = [entry.create().fit(train, lent_val, run.context(entry, params, s)) for s in seeds]
    many = entry.create().fit_batched(train, lent_val,
                                      [run.context(entry, params, s) for s in seeds])
    for s, a, b in zip(seeds, one, many, strict=True):
        assert not isinstance(b, Exception), f"{name}: fit_batched failed for seed {s}: {b!r}"
        torch.testing.assert_close(b.logits(val.x), a.logits(val.x), atol=1e-4, rtol=1e-4,
                                   msg=f"{name}: fit_batched differs from fit (seed {s})")


def check_dataset(name: str, options: dict[str, str] | None = None,
                  data_root: Path | None = None, plugins: list[Path] | None = None) -> None:
    """Load a dataset twice; check its spec's splits, labels, groups and fingerprint."""
    registry.load_plugins(list(plugins or []))
    plugin = registry.get_dataset(name)
    opts = DatasetOptions(data_root=data_root, extra=dict(options or {}))
    spec = plugin.load(opts)
    assert plugin.description, f"dataset {name}: no description"
    assert spec.n_classes >= 2, f"dataset {name}: fewer than two classes"
    md = spec.metadata
    assert spec.evaluation_only == plugin.evaluation_only, (
        f"dataset {name}: the class says evaluation_only={plugin.evaluation_only}, its spec "
        f"{spec.evaluation_only}")
    splits = ("test",) if spec.evaluation_only else ("train", "val", "test")
    for split in splits:
        assert spec.split_mask(split).any(), f"dataset {name}: split {split} is empty"
    y = md["y"].to_numpy()
    assert y.min() >= 0 and y.max() < spec.n_classes, f"dataset {name}: y out of range"
    assert len(np.unique(y[spec.split_mask(splits[0])])) >= 2, (
        f"dataset {name}: one class in {splits[0]}")
    groups = spec.evaluation_groups()
    assert groups.masks.shape == (len(groups.names), md.height), f"dataset {name}: group masks"
    assert spec.fingerprint() == plugin.load(opts).fingerprint(), (
        f"dataset {name}: loading twice gave different data (fingerprint)")
