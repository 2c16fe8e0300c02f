"""FeatureStore: one device-resident copy of a dataset's features, shared in the process.

Every method, trial and seed in a process reads the same tensors ("shared device
loaders"); batches are index tensors into them, so no step copies data host → device.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from bench.spec import SPLITS, DatasetSpec


@dataclass
class FeatureSplit:
    """One split on the device: features, labels, training groups, evaluation-group masks."""

    name: str
    x: torch.Tensor  # float32 [N, D]
    y: torch.Tensor  # int64 [N]
    a: torch.Tensor  # int64 [N]
    g: torch.Tensor  # int64 [N], training groups
    eval_masks: torch.Tensor  # bool [G_eval, N]
    n_classes: int
    n_groups: int

    def __len__(self) -> int:
        return len(self.y)

    def group_counts(self) -> torch.Tensor:
        return torch.bincount(self.g, minlength=self.n_groups)

    def subset(self, idx: torch.Tensor, name: str | None = None) -> FeatureSplit:
        return FeatureSplit(
            name or self.name, self.x[idx], self.y[idx], self.a[idx], self.g[idx],
            self.eval_masks[:, idx], self.n_classes, self.n_groups,
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
        text = None
        if class_text is not None:
            text = torch.nn.functional.normalize(
                torch.as_tensor(class_text, dtype=torch.float32), dim=1
            ).to(device)
        proj = None
        if visual_projection is not None:
            proj = torch.as_tensor(visual_projection, dtype=torch.float32).to(device)
        return cls(
            spec, encoder_id, device, splits, groups.names, prior.to(device), text, proj,
            logit_scale, untrained,
        )
