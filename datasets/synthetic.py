"""synthetic: Gaussian "CLIP-space" features with a core and a spurious direction.

x = (2y-1)·μ_core·u + (2a-1)·μ_spu·v + σ·ε, with u ⟂ v random unit vectors in D dims and
ε ~ N(0, I). Training groups follow Waterbirds' counts (3498/184/56/1057, scaled), so
y and a agree 95% of the time in train; val and test are balanced by attribute within
each class. Class text embeddings lean towards the spurious direction, as CLIP's prompts
for "waterbird" lean towards "water": t_y = (2y-1)·(u + text_spurious·v) + noise.

Text is synthetic too, from one honest model: a prompt's embedding is the sum of the
directions of the concepts it names plus a little noise (0.2/√D per coordinate). A class
names its leaning class direction; an attribute value names the spurious direction,
t_a = (2a-1)·v + noise; a "class with attribute" prompt names both, t_y + t_a's direction
+ noise. These are what text-debiasing methods (orth-proj) project with; they are drawn
after the features and class text, so those are the same as before they existed.

Bayes ceiling: within one attribute value the two classes differ only along u, by
2·μ_core, with the same isotropic noise, so no classifier can make both of those groups
more accurate than Φ(μ_core/σ) at once; the core-only rule sign(u·x) reaches it on every
group. Hence the best achievable worst-group accuracy is exactly Φ(μ_core/σ).
"""

from __future__ import annotations

import math

import numpy as np
import polars as pl

import bench

WATERBIRDS_TRAIN = {(0, 0): 3498, (0, 1): 184, (1, 0): 56, (1, 1): 1057}
WATERBIRDS_TOTAL = sum(WATERBIRDS_TRAIN.values())


def _opt(options: bench.DatasetOptions, key: str, default: float, kind: type = float):
    raw = options.extra.get(key)
    if raw is None:
        return default
    try:
        value = kind(raw)
    except ValueError:
        raise bench.UserError(f"--dataset-opt {key}={raw}: expected a {kind.__name__}") from None
    if value <= 0 and key != "text_spurious":
        raise bench.UserError(f"--dataset-opt {key}={raw}: must be positive")
    return value


def normal_cdf(z: float) -> float:
    return 0.5 * (1.0 + math.erf(z / math.sqrt(2.0)))


@bench.dataset
class Synthetic(bench.Dataset):
    name = "synthetic"
    description = "Gaussian CLIP-space features, Waterbirds' group sizes, known Bayes ceiling"
    modality = "features"
    paper = "synthetic Gaussian features (spurbench), Waterbirds' group sizes"
    classes = "2 (landbird, waterbird)"
    groups = "4 (bird × place)"
    embedded = True
    options_help = (
        "n_train (4795), n_val (1200), n_test (4800), dim (64), core (1.2), spurious (2.5), "
        "noise (1.0), text_spurious (0.6)"
    )

    def load(self, options: bench.DatasetOptions) -> bench.DatasetSpec:
        n_train = _opt(options, "n_train", WATERBIRDS_TOTAL, int)
        n_val = _opt(options, "n_val", 1200, int)
        n_test = _opt(options, "n_test", 4800, int)
        dim = _opt(options, "dim", 64, int)
        mu_core = _opt(options, "core", 1.2)
        mu_spu = _opt(options, "spurious", 2.5)
        sigma = _opt(options, "noise", 1.0)
        text_spu = _opt(options, "text_spurious", 0.6)
        known = {"n_train", "n_val", "n_test", "dim", "core", "spurious", "noise", "text_spurious"}
        options.check_known(self.name, sorted(known))
        if dim < 2:
            raise bench.UserError("--dataset-opt dim: synthetic needs at least 2 dimensions")

        rng = np.random.default_rng(options.seed)
        basis, _ = np.linalg.qr(rng.standard_normal((dim, 2)))
        u, v = basis[:, 0], basis[:, 1]

        train_counts = {
            k: max(1, round(c * n_train / WATERBIRDS_TOTAL)) for k, c in WATERBIRDS_TRAIN.items()
        }
        p_y1 = (train_counts[(1, 0)] + train_counts[(1, 1)]) / sum(train_counts.values())

        def balanced(n: int) -> dict[tuple[int, int], int]:
            n1 = round(n * p_y1)
            n0 = n - n1
            return {(0, 0): n0 // 2, (0, 1): n0 - n0 // 2, (1, 0): n1 // 2, (1, 1): n1 - n1 // 2}

        rows_y, rows_a, rows_split = [], [], []
        for split, counts in (
            ("train", train_counts), ("val", balanced(n_val)), ("test", balanced(n_test))
        ):
            for (y, a), c in counts.items():
                rows_y += [y] * c
                rows_a += [a] * c
                rows_split += [split] * c
        y = np.array(rows_y)
        a = np.array(rows_a)
        x = (
            np.outer(2 * y - 1, u) * mu_core
            + np.outer(2 * a - 1, v) * mu_spu
            + sigma * rng.standard_normal((len(y), dim))
        ).astype(np.float32)
        text = np.stack([s * (u + text_spu * v) for s in (-1.0, 1.0)])
        text += 0.2 * rng.standard_normal(text.shape) / math.sqrt(dim)
        attr_dirs = np.stack([s * v for s in (-1.0, 1.0)])
        attr_text = attr_dirs + 0.2 * rng.standard_normal(attr_dirs.shape) / math.sqrt(dim)
        pair_text = (text[:, None, :] + attr_dirs[None, :, :]
                     + 0.2 * rng.standard_normal((2, 2, dim)) / math.sqrt(dim))
        md = pl.DataFrame(
            {
                "id": np.arange(len(y)),
                "item": np.arange(len(y)),
                "y": y,
                "a": a,
                "split": rows_split,
            }
        )
        return bench.DatasetSpec(
            name=self.name,
            metadata=md,
            class_names=["landbird", "waterbird"],
            attr_names=["land", "water"],
            item_kind="features",
            features=x,
            class_text_embeddings=text.astype(np.float32),
            attr_text_embeddings=attr_text.astype(np.float32),
            class_attr_text_embeddings=pair_text.astype(np.float32),
            bayes_wga=normal_cdf(mu_core / sigma),
            synthetic=True,
            notes="generated Gaussian data; not a real benchmark",
        )
