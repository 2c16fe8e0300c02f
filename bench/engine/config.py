"""What a training run is asked to do: the optimisation settings, the hooks by which a
method shapes training, and the error for a run that diverged. Shared by both training
engines (bench.engine.trainer's autograd reference and bench.engine.batched's analytic one)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from bench.engine.samplers import Sampler

LossFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
EpochFn = Callable[[int, nn.Module], None]


@dataclass
class TrainConfig:
    epochs: int = 20
    lr: float = 1e-2
    weight_decay: float = 1e-4
    batch_size: int = 256
    optimizer: str = "adamw"  # adamw | sgd
    momentum: float = 0.9

    @classmethod
    def from_params(cls, p: dict) -> TrainConfig:
        """The optimisation settings out of a trial's parameters (see bench.training_space)."""
        keys = ("epochs", "lr", "weight_decay", "batch_size", "optimizer")
        return cls(**{k: p[k] for k in keys if k in p})


class BatchRule:
    """Turns one batch's per-example losses into per-example loss weights (the batch's
    loss is Σ_i s_i · CE_i), with state that persists across batches: Group DRO's online
    q. Both engines call it once per batch with the batch's cross-entropies (no
    gradient) and the rows' example indices."""

    def scale(self, ce: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def scale_numpy(self, ce: np.ndarray, idx: np.ndarray) -> np.ndarray:
        """scale() for the CPU NumPy step (bench.engine.one_head_cpu): float32 [n] from
        ce [n] and idx [n]. Override it where a few NumPy calls beat torch's dispatch;
        it must give what scale() gives, up to rounding."""
        out = self.scale(torch.from_numpy(ce), torch.from_numpy(idx))
        return out.detach().to(torch.float32).numpy()


@dataclass
class Hooks:
    """How a method shapes training. All optional; the defaults give plain ERM.

    weights: per-example loss weights over the training split (loss = Σ w·CE / Σ w).
    sampler: how batches are drawn (default: uniform, without replacement).
    loss: (logits, y, idx) -> scalar, replacing the weighted cross-entropy.
    before_epoch: called with (epoch, head) before each epoch; may change `weights`.
    batch_rule: per-example weights from each batch's own losses (instead of `weights`).
    dropout: a bench.FeatureDropout applied to each batch's features (training only).
    logit_offset: [C] added to the logits in training only, so the loss is CE(z + b)
        (logit adjustment: b = τ·log π); the trained head predicts with plain logits.
    anchor, anchor_strength: a head of the same kind as the trained one; λ‖θ − θ_anchor‖²
        (λ = anchor_strength, over every trained parameter) is added to each batch's
        loss: an L2 pull toward the anchor instead of toward zero (AFR's ERM layer).
    """

    weights: torch.Tensor | None = None
    sampler: Sampler | None = None
    loss: LossFn | None = None
    before_epoch: EpochFn | None = None
    batch_rule: BatchRule | None = None
    dropout: nn.Module | None = None
    logit_offset: torch.Tensor | None = None
    anchor: nn.Module | None = None
    anchor_strength: float = 0.0

    def anchor_pair(self) -> tuple[nn.Module, float] | None:
        """(anchor, λ) as the analytic engine takes it; None when nothing pulls."""
        if self.anchor is None or self.anchor_strength == 0:
            return None
        return self.anchor, float(self.anchor_strength)

    def epoch_callback(self) -> Callable[[int, nn.Module], torch.Tensor | None] | None:
        """`before_epoch` as the analytic engine takes it: called, then the (possibly
        replaced) weights returned."""
        if self.before_epoch is None:
            return None

        def callback(epoch: int, head: nn.Module) -> torch.Tensor | None:
            self.before_epoch(epoch, head)
            return self.weights

        return callback


def report_every(epochs: int, reports: int = 5) -> int:
    """Validation reports per fit are capped (about 5): each one is a storage round trip
    for the pruner and MLflow, which at 20+ epochs cost more than the training itself."""
    return max(1, epochs // reports)



class NonFiniteLoss(RuntimeError):
    """Training diverged; the trial is recorded as failed with this reason."""
