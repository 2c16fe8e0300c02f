"""Generated feature data for tests/test_mechanisms.py, one design per mechanism.

Every design is a Gaussian mixture in a small feature space: each (class y, attribute a)
group is one or more components, each component an isotropic Gaussian around a mean that
is written in a few named coordinates (0: the core direction, 1: the spurious direction)
and embedded by a random rotation of R^dim, so no method sees axis-aligned features.
Components are kept apart (`component`) so a test can tell a group's sub-clusters apart.
The files are `features` datasets (.npz with x, y, a, split; split 0/1/2 = train/val/test).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

Group = tuple[int, int]  # (y, a)
Component = tuple[float, list[float]]  # (share of the group, mean in the named coordinates)
Design = dict[Group, list[Component]]
Counts = dict[Group, int]


def counts(majority: int, minority: int) -> Counts:
    """Groups (0,0) and (1,1) get `majority` rows, (0,1) and (1,0) `minority`."""
    return {(0, 0): majority, (0, 1): minority, (1, 0): minority, (1, 1): majority}


def mixture(
    designs: tuple[Design, Design, Design],
    sizes: tuple[Counts, Counts, Counts],
    dim: int,
    seed: int,
) -> dict[str, np.ndarray]:
    """Rows of every split (train, val, test): group sizes from `sizes`, each group split
    over its components in proportion to their shares, unit noise in every dimension."""
    rng = np.random.default_rng(seed)
    rotation, _ = np.linalg.qr(rng.standard_normal((dim, dim)))
    xs, ys, as_, splits, comps = [], [], [], [], []
    for split, (design, size) in enumerate(zip(designs, sizes, strict=True)):
        for (y, a), n in size.items():
            shares = np.array([share for share, _ in design[(y, a)]])
            ns = np.floor(shares / shares.sum() * n).astype(int)
            ns[0] += n - ns.sum()
            for k, ((_, mean), m) in enumerate(zip(design[(y, a)], ns, strict=True)):
                centre = np.zeros(dim)
                centre[: len(mean)] = mean
                xs.append((centre + rng.standard_normal((m, dim))) @ rotation.T)
                ys.append(np.full(m, y))
                as_.append(np.full(m, a))
                splits.append(np.full(m, split))
                comps.append(np.full(m, k))
    return {
        "x": np.concatenate(xs).astype(np.float32),
        "y": np.concatenate(ys),
        "a": np.concatenate(as_),
        "split": np.concatenate(splits),
        "component": np.concatenate(comps),
    }


def save(data: dict[str, np.ndarray], path: Path) -> Path:
    np.savez(path, x=data["x"], y=data["y"], a=data["a"], split=data["split"])
    return path


def component_of(data: dict[str, np.ndarray], split: int) -> np.ndarray:
    """The component index of each row of one split, in the order the dataset keeps."""
    return data["component"][data["split"] == split]


def clean(core: float, spurious: float) -> Design:
    """One component per group: ±core on the core axis (by y), ±spurious on the spurious
    axis (by a)."""
    return {
        (y, a): [(1.0, [(2 * y - 1) * core, (2 * a - 1) * spurious])]
        for y in (0, 1)
        for a in (0, 1)
    }


def hard_group(dim: int = 16, seed: int = 0) -> dict[str, np.ndarray]:
    """Four equally sized groups that differ in difficulty, not in size (Group DRO).

    Classes sit at ∓2 on the core axis, except group (y=1, a=1), which is centred at 0:
    on the boundary that an equal weighting of the groups draws. No attribute direction,
    so one threshold serves every group and the groups compete for it. The minimax
    threshold (Φ(t+2) = Φ(−t)) is t = −1, where every group scores Φ(1) ≈ 84%; a
    group-balanced loss puts it nearer the class-0/class-1 midpoint and leaves the hard
    group near 75%.
    """
    design: Design = {
        (0, 0): [(1.0, [-2.0])],
        (0, 1): [(1.0, [-2.0])],
        (1, 0): [(1.0, [2.0])],
        (1, 1): [(1.0, [0.0])],
    }
    sizes = (counts(500, 500), counts(250, 250), counts(500, 500))
    return mixture((design, design, design), sizes, dim, seed)


def shortcut(dim: int = 32, seed: int = 0) -> dict[str, np.ndarray]:
    """A Waterbirds-like shortcut with unequal classes (JTT, DFR, reweight, subsample).

    Core margin 1, spurious margin 2.5, unit noise. In train and val, y == a for 95% of
    each class, and class 0 is three times class 1 (train 1425/75/25/475), so balancing
    the classes alone changes the weights (class 1 ×3) but leaves the shortcut: the
    minority group (y=1, a=0) is still outweighed 19:1 by (y=0, a=0). Validation keeps
    the training imbalance (DFR must balance it itself); test is balanced.
    """
    design = clean(core=1.0, spurious=2.5)
    train = {(0, 0): 1425, (0, 1): 75, (1, 0): 25, (1, 1): 475}
    val = {(0, 0): 1140, (0, 1): 60, (1, 0): 40, (1, 1): 760}
    test = counts(500, 500)
    return mixture((design, design, design), (train, val, test), dim, seed)


NOISE_SHARE = 0.3


def background_label_noise(
    share: float = NOISE_SHARE, dim: int = 32, seed: int = 0
) -> dict[str, np.ndarray]:
    """A shortcut whose training labels partly follow the background (SFR).

    Clean groups: core margin 1.5, spurious margin 2, unit noise; train 950/50/50/950,
    val and test balanced and clean. In train, a `share` of each majority group are
    examples of the *other* class labelled as the background suggests: component 1 of
    group (0,0) is drawn like (1,0) (a class-1 example on background 0, labelled 0), and
    component 1 of (1,1) like (0,1). Such an example is heterogeneity inside a group:
    the reference ERM head agrees with its label only through the shortcut, while a head
    trained with balanced groups disagrees with it; uniform group weights let it pull
    against the real minority group it overlaps.
    """
    core, spurious = 1.5, 2.0
    test = clean(core, spurious)
    train = dict(test)
    train[(0, 0)] = [(1 - share, [-core, -spurious]), (share, [core, -spurious])]
    train[(1, 1)] = [(1 - share, [core, spurious]), (share, [-core, spurious])]
    sizes = (counts(950, 50), counts(250, 250), counts(500, 500))
    return mixture((train, test, test), sizes, dim, seed)
