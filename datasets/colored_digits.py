"""colored-digits: scikit-learn's bundled handwritten digits, coloured by a spurious attribute.

Real data that needs no download: the 1,797 8x8 digits of sklearn.datasets.load_digits.
y = the digit is 5-9 (vs 0-4); a = the colour the digit is drawn in (red or blue). In the
training split the colour agrees with y with probability `correlation` (default 0.95);
in val and test it is a fair coin, so a model that reads the colour fails the minority
groups. Splits are a seeded 50/20/30 permutation. The features are the coloured pixels
(3 x 8 x 8 = 192 values in [0, 1]), used as they are (encoder identity): fast and honest,
and a linear head can read both the strokes and the colour.
"""

from __future__ import annotations

import numpy as np
import polars as pl

import bench

COLOURS = np.array([[1.0, 0.5, 0.2], [0.2, 0.5, 1.0]], dtype=np.float32)  # red, blue (RGB)


@bench.dataset
class ColoredDigits(bench.Dataset):
    name = "colored-digits"
    description = "sklearn digits (real), y = digit >= 5, spurious colour; pixel features"
    modality = "image"
    paper = "Alvi et al. 2018-style colour shortcut on sklearn digits"
    classes = "2 (digit < 5, ≥ 5)"
    groups = "4 (label × colour)"
    embedded = True
    options_help = "correlation (0.95): P(colour agrees with label) in train"

    def load(self, options: bench.DatasetOptions) -> bench.DatasetSpec:
        from sklearn.datasets import load_digits

        options.check_known(self.name, ("correlation",))
        raw = options.extra.get("correlation", "0.95")
        try:
            corr = float(raw)
        except ValueError:
            raise bench.UserError(f"--dataset-opt correlation={raw}: expected a number") from None
        if not 0.5 <= corr < 1.0:
            raise bench.UserError(f"--dataset-opt correlation={raw}: must be in [0.5, 1)")
        digits = load_digits()
        pixels = (digits.images.reshape(len(digits.images), -1) / 16.0).astype(np.float32)
        y = (digits.target >= 5).astype(np.int64)
        n = len(y)
        rng = np.random.default_rng(options.seed)
        order = rng.permutation(n)
        n_train, n_val = n // 2, n // 5
        split = np.empty(n, dtype=object)
        split[order[:n_train]] = "train"
        split[order[n_train:n_train + n_val]] = "val"
        split[order[n_train + n_val:]] = "test"
        agree = rng.random(n) < corr
        a = np.where(split == "train", np.where(agree, y, 1 - y), rng.integers(0, 2, n))
        x = (COLOURS[a][:, :, None] * pixels[:, None, :]).reshape(n, -1)
        md = pl.DataFrame({"id": np.arange(n), "item": np.arange(n), "y": y, "a": a,
                           "split": split.tolist()})
        return bench.DatasetSpec(
            name=self.name,
            metadata=md,
            class_names=["digit 0-4", "digit 5-9"],
            attr_names=["red", "blue"],
            item_kind="features",
            features=np.ascontiguousarray(x, dtype=np.float32),
            prompt_templates=["a photo of a {}."],
            notes="real handwritten digits; the colour attribute is assigned by us",
        )
