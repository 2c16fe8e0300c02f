"""The shared trainer: one loop for every method, shaped by hooks.

Methods never write their own loop. They set per-example loss weights, a sampler, a
loss over a batch, or a callback before each epoch (to re-weight, as SFR does), and call
`fit` once per stage (JTT calls it twice). The same hooks will drive a later
full-fine-tuning mode, where the batch comes from an image stream instead of a tensor.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from bench.samplers import Sampler
from bench.store import FeatureSplit

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


@dataclass
class Hooks:
    """How a method shapes training. All optional; the defaults give plain ERM.

    weights: per-example loss weights over the training split (loss = Σ w·CE / Σ w).
    sampler: how batches are drawn (default: uniform, without replacement).
    loss: (logits, y, idx) -> scalar, replacing the weighted cross-entropy.
    before_epoch: called with (epoch, head) before each epoch; may change `weights`.
    """

    weights: torch.Tensor | None = None
    sampler: Sampler | None = None
    loss: LossFn | None = None
    before_epoch: EpochFn | None = None


class NonFiniteLoss(RuntimeError):
    """Training diverged; the trial is recorded as failed with this reason."""


class Trainer:
    """Trains heads on device-resident features with index batches."""

    def __init__(self, device: torch.device, generator: torch.Generator) -> None:
        self.device = device
        self.generator = generator
        self.reporter: EpochFn | None = None  # set by the harness: val metrics for pruning

    def make_optimizer(self, head: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
        params = [p for p in head.parameters() if p.requires_grad]
        if cfg.optimizer == "sgd":
            return torch.optim.SGD(
                params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay
            )
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)

    def fit(
        self,
        head: nn.Module,
        data: FeatureSplit,
        cfg: TrainConfig,
        hooks: Hooks | None = None,
        report: bool = True,
    ) -> nn.Module:
        """Train `head` in place for cfg.epochs; `report=False` for auxiliary stages."""
        hooks = hooks or Hooks()
        opt = self.make_optimizer(head, cfg)
        sampler = hooks.sampler or Sampler.uniform(len(data), cfg.batch_size)
        head.train()
        for epoch in range(cfg.epochs):
            if hooks.before_epoch is not None:
                hooks.before_epoch(epoch, head)
                head.train()
            for idx in sampler.epoch(self.generator, self.device):
                logits = head(data.x[idx])
                if hooks.loss is not None:
                    loss = hooks.loss(logits, data.y[idx], idx)
                elif hooks.weights is not None:
                    w = hooks.weights[idx]
                    ce = F.cross_entropy(logits, data.y[idx], reduction="none")
                    loss = (w * ce).sum() / w.sum().clamp_min(1e-12)
                else:
                    loss = F.cross_entropy(logits, data.y[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            last = float(loss.detach())
            if not math.isfinite(last):
                raise NonFiniteLoss(f"loss became {last} in epoch {epoch}")
            if report and self.reporter is not None:
                self.reporter(epoch, head)
                head.train()
        head.eval()
        return head
