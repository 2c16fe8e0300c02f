"""FeatureStore: one device-resident copy of a dataset's features, shared in the process.

Every method, trial and seed in a process reads the same tensors ("shared device
loaders"); batches are index tensors into them, so no step copies data host → device.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from bench.data.spec import SPLITS, DatasetSpec


class LabelWithheld(RuntimeError):
    """A method read group or attribute labels of a split it did not declare (or that the
    selection rule withholds); the trial or seed fails with this reason."""


GROUP_FIELDS = ("a", "g", "eval_masks")  # what reveals the spurious attribute or the group


class FeatureSplit:
    """One split on the device: features, labels, training groups, evaluation-group masks.

    `withhold(...)` gives a view that shares the tensors but refuses `a`, `g`,
    `eval_masks` (and what derives from them): a method sees only the labels it declared,
    by construction rather than by convention.
    """

    def __init__(
        self, name: str, x: torch.Tensor, y: torch.Tensor, a: torch.Tensor, g: torch.Tensor,
        eval_masks: torch.Tensor, n_classes: int, n_groups: int, withheld: str | None = None,
    ) -> None:
        self.name = name
        self.x = x  # float32 [N, D]
        self.y = y  # int64 [N]
        self._a = a  # int64 [N], the attribute
        self._g = g  # int64 [N], training groups
        self._eval_masks = eval_masks  # bool [G_eval, N]
        self.n_classes = n_classes
        self.n_groups = n_groups
        self.withheld = withheld  # why group labels are withheld (None: readable)

    def _labels(self, field: str) -> torch.Tensor:
        if self.withheld is not None:
            raise LabelWithheld(
                f"read {self.name}.{field} (group/attribute labels of the {self.name} split), "
                f"which are withheld: {self.withheld}"
            )
        return getattr(self, f"_{field}")

    @property
    def a(self) -> torch.Tensor:
        return self._labels("a")

    @property
    def g(self) -> torch.Tensor:
        return self._labels("g")

    @property
    def eval_masks(self) -> torch.Tensor:
        return self._labels("eval_masks")

    @property
    def has_group_labels(self) -> bool:
        return self.withheld is None

    def withhold(self, reason: str) -> FeatureSplit:
        """A view of this split without readable group or attribute labels."""
        return FeatureSplit(self.name, self.x, self.y, self._a, self._g, self._eval_masks,
                            self.n_classes, self.n_groups, reason)

    def __len__(self) -> int:
        return len(self.y)

    def __repr__(self) -> str:
        return (f"FeatureSplit({self.name!r}, n={len(self)}, classes={self.n_classes}, "
                f"groups={self.n_groups}{', labels withheld' if self.withheld else ''})")

    def group_counts(self) -> torch.Tensor:
        return torch.bincount(self.g, minlength=self.n_groups)

    def subset(self, idx: torch.Tensor, name: str | None = None) -> FeatureSplit:
        return FeatureSplit(
            name or self.name, self.x[idx], self.y[idx], self._a[idx], self._g[idx],
            self._eval_masks[:, idx], self.n_classes, self.n_groups, self.withheld,
        )


@dataclass
class FeatureStore:
    """Features of every split of one (dataset, encoder) pair, resident on one device."""

    spec: DatasetSpec
    encoder_id: str
    device: torch.device
    splits: dict[str, FeatureSplit]
    eval_group_names: list[str]
    train_eval_prior: torch.Tensor  # π_g(train) over evaluation groups, for adjusted average
    class_text: torch.Tensor | None  # [C, D'] normalised class text embeddings, or None
    visual_projection: torch.Tensor | None  # [D', D] or None (identity)
    logit_scale: float = 100.0
    untrained: bool = False
    attr_text: torch.Tensor | None = None  # [A, D'] normalised attribute text, or None
    class_attr_text: torch.Tensor | None = None  # [C, A, D'] normalised "class with attr"

    @property
    def dim(self) -> int:
        return int(self.splits["train"].x.shape[1])

    @property
    def n_classes(self) -> int:
        return self.spec.n_classes

    @property
    def n_groups(self) -> int:
        return self.spec.n_groups

    @classmethod
    def build(
        cls,
        spec: DatasetSpec,
        features: np.ndarray,
        encoder_id: str,
        device: torch.device,
        class_text: np.ndarray | None = None,
        visual_projection: np.ndarray | None = None,
        logit_scale: float = 100.0,
        untrained: bool = False,
        attr_text: np.ndarray | None = None,
        class_attr_text: np.ndarray | None = None,
    ) -> FeatureStore:
        md = spec.metadata
        x_all = torch.as_tensor(np.ascontiguousarray(features, dtype=np.float32))
        y_all = torch.as_tensor(md["y"].to_numpy().astype(np.int64))
        a_all = torch.as_tensor(md["a"].to_numpy().astype(np.int64))
        g_all = torch.as_tensor(spec.train_groups())
        groups = spec.evaluation_groups()
        m_all = torch.as_tensor(groups.masks)
        splits = {}
        for s in SPLITS:
            idx = torch.as_tensor(np.flatnonzero(spec.split_mask(s)))
            splits[s] = FeatureSplit(
                s, x_all[idx].to(device), y_all[idx].to(device), a_all[idx].to(device),
                g_all[idx].to(device), m_all[:, idx].to(device), spec.n_classes, spec.n_groups,
            )
        train_counts = splits["train"].eval_masks.sum(dim=1).double()
        prior = train_counts / train_counts.sum().clamp_min(1)
        text, attr, pairs = (
            None if t is None else torch.nn.functional.normalize(
                torch.as_tensor(t, dtype=torch.float32), dim=-1
            ).to(device)
            for t in (class_text, attr_text, class_attr_text)
        )
        proj = None
        if visual_projection is not None:
            proj = torch.as_tensor(visual_projection, dtype=torch.float32).to(device)
        return cls(
            spec, encoder_id, device, splits, groups.names, prior.to(device), text, proj,
            logit_scale, untrained, attr, pairs,
        )


class _LentSplits(dict):
    """The splits lent to a method: train and val; the test split is never lent."""

    def __missing__(self, key: str) -> FeatureSplit:
        raise LabelWithheld(f"read split '{key}': methods are lent only train and val")


class _SpecWithoutLabels:
    """A DatasetSpec minus what holds labels of any split (metadata, groups, raw rows)."""

    _REFUSED = frozenset({"metadata", "train_groups", "evaluation_groups", "eval_groups",
                          "features", "split_mask"})

    def __init__(self, spec: DatasetSpec) -> None:
        object.__setattr__(self, "_spec", spec)

    def __getattr__(self, name: str) -> Any:
        if name in self._REFUSED:
            raise LabelWithheld(f"read the dataset's {name}: methods see data only through "
                                "the splits they are lent")
        return getattr(self._spec, name)


def lend(store: FeatureStore, train: FeatureSplit, val: FeatureSplit) -> FeatureStore:
    """The store as a method sees it: the given (possibly label-withheld) train and val
    splits, no test split, no raw metadata; training-group proportions only when the
    method may read training group labels."""
    return dataclasses.replace(
        store, spec=_SpecWithoutLabels(store.spec), splits=_LentSplits(train=train, val=val),
        train_eval_prior=store.train_eval_prior if train.has_group_labels else None,
    )
