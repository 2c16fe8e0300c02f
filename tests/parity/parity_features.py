"""Generated feature sets for the peer parity suite (no encoder, no download).

Each set imitates a frozen CLIP embedding of a spurious-correlation benchmark: examples
of class y with spurious attribute a are drawn as

    x = m + core · c_y + spur · s_a + L · z_low + noise · z,    z_low ~ N(0, I_r), z ~ N(0, I_D)

with c_y and s_a orthonormal prototype directions (one per class and per attribute),
m a shared mean offset (embeddings of one domain share a large common component), L a
rank-r nuisance subspace of higher variance (anisotropic, as real embeddings are), and
isotropic noise. The spurious prototypes sit further apart than the class prototypes
(spur > core), so the attribute is the easier cue; the training split is dominated by
the aligned groups (Waterbirds-like proportions), validation and test are closer to
balanced, as in Waterbirds. Everything comes from a fixed numpy seed per set; the
suite reports each set's fingerprint (a hash of the arrays) beside its table.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

# Waterbirds (Sagawa et al. 2020) group shares, groups (y, a) in order (0,0),(0,1),(1,0),(1,1)
WATERBIRDS_TRAIN = (3498, 184, 56, 1057)
WATERBIRDS_VAL = (467, 466, 133, 133)
WATERBIRDS_TEST = (2255, 2255, 642, 642)


@dataclass(frozen=True)
class FeatureSet:
    """One generated set: its shape, signal strengths and group sizes per split."""

    name: str
    seed: int
    dim: int
    n_classes: int
    n_attrs: int
    core: float  # distance scale of the class prototypes
    spur: float  # distance scale of the spurious-attribute prototypes (> core)
    noise: float  # isotropic noise per coordinate
    nuisance_rank: int
    nuisance_scale: float
    offset: float  # norm of the shared mean offset
    # group sizes per split, groups ordered (y, a) row-major: (0,0), (0,1), ..., (C-1, A-1)
    train: tuple[int, ...]
    val: tuple[int, ...]
    test: tuple[int, ...]

    @property
    def description(self) -> str:
        return (
            f"D={self.dim}, {self.n_classes} classes × {self.n_attrs} attributes, "
            f"train/val/test {sum(self.train)}/{sum(self.val)}/{sum(self.test)}, "
            f"smallest training group {min(self.train)} "
            f"({100 * min(self.train) / sum(self.train):.1f}%)"
        )


def _scaled(counts: tuple[int, ...], total: int) -> tuple[int, ...]:
    """Group sizes with the shares of `counts` and about `total` examples (each ≥ 1)."""
    s = sum(counts)
    return tuple(max(1, round(c * total / s)) for c in counts)


def _aligned(n_classes: int, total: int, aligned: float, floor: int) -> tuple[int, ...]:
    """C×C groups: a share `aligned` on the diagonal (a = y), the rest spread evenly over
    the off-diagonal groups, each at least `floor`."""
    diag = aligned * total / n_classes
    off = max(floor, round((1 - aligned) * total / (n_classes * (n_classes - 1))))
    return tuple(round(diag) if y == a else off
                 for y in range(n_classes) for a in range(n_classes))


SETS: tuple[FeatureSet, ...] = (
    # Waterbirds' group sizes (its smallest group is 1.2% of training), a small embedding
    FeatureSet(
        name="wb-d64", seed=20240601, dim=64, n_classes=2, n_attrs=2,
        core=1.6, spur=3.0, noise=1.0, nuisance_rank=8, nuisance_scale=2.0, offset=6.0,
        train=WATERBIRDS_TRAIN, val=_scaled(WATERBIRDS_VAL, 1200),
        test=_scaled(WATERBIRDS_TEST, 2400),
    ),
    # wider, a weaker class signal and a stronger attribute, milder imbalance (4% minority)
    FeatureSet(
        name="mild-d256", seed=20240602, dim=256, n_classes=2, n_attrs=2,
        core=1.4, spur=3.5, noise=1.0, nuisance_rank=16, nuisance_scale=2.0, offset=10.0,
        train=(2800, 200, 160, 840), val=_scaled(WATERBIRDS_VAL, 1200),
        test=_scaled(WATERBIRDS_TEST, 2400),
    ),
    # three classes, three attributes, 85% of training examples with a = y
    FeatureSet(
        name="mc3-d128", seed=20240603, dim=128, n_classes=3, n_attrs=3,
        core=1.8, spur=3.0, noise=1.0, nuisance_rank=8, nuisance_scale=2.0, offset=8.0,
        train=_aligned(3, 3600, 0.85, 80), val=_aligned(3, 1200, 0.5, 60),
        test=_aligned(3, 2400, 0.5, 120),
    ),
)


def by_name(name: str) -> FeatureSet:
    for s in SETS:
        if s.name == name:
            return s
    raise KeyError(f"no parity feature set {name!r}; have {', '.join(s.name for s in SETS)}")


def generate(spec: FeatureSet) -> dict[str, np.ndarray]:
    """The arrays of the `features` dataset's .npz: x [N, D] float32, y, a, split."""
    rng = np.random.default_rng(spec.seed)
    d, c, k, r = spec.dim, spec.n_classes, spec.n_attrs, spec.nuisance_rank
    basis, _ = np.linalg.qr(rng.standard_normal((d, d)))
    # disjoint orthonormal directions: classes, attributes, offset, nuisance subspace
    class_dirs = basis[:, :c].T
    attr_dirs = basis[:, c:c + k].T
    offset = spec.offset * basis[:, c + k]
    nuisance = spec.nuisance_scale * basis[:, c + k + 1:c + k + 1 + r]
    xs, ys, as_, splits = [], [], [], []
    for split_id, counts in enumerate((spec.train, spec.val, spec.test)):
        if len(counts) != c * k:
            raise ValueError(f"{spec.name}: {len(counts)} group sizes for {c}×{k} groups")
        for gi, n in enumerate(counts):
            y, a = divmod(gi, k)
            mean = offset + spec.core * class_dirs[y] + spec.spur * attr_dirs[a]
            x = (mean + rng.standard_normal((n, r)) @ nuisance.T
                 + spec.noise * rng.standard_normal((n, d)))
            xs.append(x)
            ys.append(np.full(n, y))
            as_.append(np.full(n, a))
            splits.append(np.full(n, split_id))
    order = rng.permutation(sum(len(v) for v in ys))  # interleave groups and splits
    return {
        "x": np.concatenate(xs).astype(np.float32)[order],
        "y": np.concatenate(ys).astype(np.int64)[order],
        "a": np.concatenate(as_).astype(np.int64)[order],
        "split": np.concatenate(splits).astype(np.int64)[order],
    }


def fingerprint(arrays: dict[str, np.ndarray]) -> str:
    h = hashlib.sha256()
    for key in ("x", "y", "a", "split"):
        h.update(np.ascontiguousarray(arrays[key]).tobytes())
    return h.hexdigest()[:16]


def write(spec: FeatureSet, directory: Path) -> Path:
    """Write the set as `<name>.npz` under `directory` (the `features` dataset's format)."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{spec.name}.npz"
    np.savez(path, **generate(spec))
    return path
