"""The shared trainer: one loop for every method, shaped by hooks.

Methods never write their own loop. They set per-example loss weights, a sampler, a
loss over a batch, or a callback before each epoch (to re-weight, as SFR does), and call
`fit` once per stage (JTT calls it twice). The same hooks will drive a later
full-fine-tuning mode, where the batch comes from an image stream instead of a tensor.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn
from torch.nn import functional as F

from bench.data.store import FeatureSplit
from bench.engine import batched
from bench.engine.config import EpochFn, Hooks, NonFiniteLoss, TrainConfig, report_every
from bench.engine.cpu_workers import one_thread
from bench.engine.heads import LinearHead, PromptHead
from bench.engine.samplers import Sampler

__all__ = ["Hooks", "NonFiniteLoss", "TrainConfig", "Trainer", "report_every"]

SMALL_STEP = 1 << 20  # elements per batch below which one CPU thread is fastest


@contextmanager
def few_threads(device: torch.device, batch_elems: int) -> Iterator[None]:
    """Run thin minibatch steps on one CPU thread: for a 256×768 batch, OpenMP's fork/join
    costs more than the matmul, and on a busy machine it is many times slower (measured:
    0.56 ms vs 3.6 ms per prompt-head step on 2 loaded cores). GPU work is unaffected."""
    if device.type != "cpu" or batch_elems > SMALL_STEP or torch.get_num_threads() == 1:
        yield
        return
    with one_thread():
        yield


def analytic(head: nn.Module, data: FeatureSplit, hooks: Hooks) -> bool:
    """Whether bench.fit_batched computes exactly this training: a built-in head (not a
    subclass, whose forward may differ), every parameter trained, float32 features, the
    loss the weighted cross-entropy (weights fixed or from a batch rule). Epochs may be
    longer than n (a duplicated pool, as JTT's upsampling): the engine walks the pool."""
    return (
        type(head) in (LinearHead, PromptHead)
        and all(p.requires_grad for p in head.parameters())
        and data.x.dtype == torch.float32
        and hooks.loss is None
        and (hooks.anchor_pair() is None or type(hooks.anchor) is type(head))
    )


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
        engine: str = "auto",
    ) -> nn.Module:
        """Train `head` in place for cfg.epochs; `report=False` for auxiliary stages.

        engine "auto": a built-in linear or prompt head trained with weighted
        cross-entropy (weights fixed, replaced before an epoch, or from a batch rule;
        feature dropout allowed; no `loss` hook) goes through bench.fit_batched's
        analytic gradient, 2–5× faster on a CPU (docs/performance.md); anything else, or
        engine "autograd", through autograd and torch.optim. Both give the same head up to
        floating-point rounding (tests/test_batched.py holds them to it)."""
        hooks = hooks or Hooks()
        if hooks.batch_rule is not None and (hooks.weights is not None or hooks.loss):
            raise ValueError("a batch rule sets the loss weights: give no weights or loss")
        if engine not in ("auto", "autograd"):
            raise ValueError(f"engine {engine!r}: expected 'auto' or 'autograd'")
        if engine == "auto" and analytic(head, data, hooks):
            rules = None if hooks.batch_rule is None else [hooks.batch_rule]
            callbacks = None if hooks.before_epoch is None else [hooks.epoch_callback()]
            (out,) = batched.fit_batched(
                [head], data, [cfg], [self], hooks.weights, [hooks.sampler], report=report,
                rules=rules, callbacks=callbacks, dropouts=[hooks.dropout],
                offsets=[hooks.logit_offset], anchors=[hooks.anchor_pair()])
            if isinstance(out, Exception):  # divergence, or the reporter pruned the trial
                raise out
            return out
        sampler = hooks.sampler or Sampler.uniform(len(data), cfg.batch_size)
        rows = min(sampler.batch_size, len(data))
        with few_threads(self.device, rows * data.x.shape[1]):
            return self._fit(head, data, cfg, hooks, sampler, report)

    def _fit(
        self, head: nn.Module, data: FeatureSplit, cfg: TrainConfig, hooks: Hooks,
        sampler: Sampler, report: bool,
    ) -> nn.Module:
        opt = self.make_optimizer(head, cfg)
        every = report_every(cfg.epochs)
        pull = hooks.anchor_pair()
        if pull is not None:
            trained = [p for p in head.parameters() if p.requires_grad]
            anchor = [a.detach() for a, p in zip(pull[0].parameters(), head.parameters(),
                                                 strict=True) if p.requires_grad]
        head.train()
        for epoch in range(cfg.epochs):
            if hooks.before_epoch is not None:
                hooks.before_epoch(epoch, head)
                head.train()
            for idx in sampler.epoch(self.generator, self.device):
                xb = data.x[idx]
                if hooks.dropout is not None:
                    xb = xb * hooks.dropout.factor(xb.shape, xb.device)
                logits = head(xb)
                if hooks.logit_offset is not None:
                    logits = logits + hooks.logit_offset
                if hooks.loss is not None:
                    loss = hooks.loss(logits, data.y[idx], idx)
                elif hooks.batch_rule is not None:
                    ce = F.cross_entropy(logits, data.y[idx], reduction="none")
                    loss = (hooks.batch_rule.scale(ce.detach(), idx) * ce).sum()
                elif hooks.weights is not None:
                    w = hooks.weights[idx]
                    ce = F.cross_entropy(logits, data.y[idx], reduction="none")
                    loss = (w * ce).sum() / w.sum().clamp_min(1e-12)
                else:
                    loss = F.cross_entropy(logits, data.y[idx])
                if pull is not None:
                    loss = loss + pull[1] * sum(
                        (p - a).pow(2).sum() for p, a in zip(trained, anchor, strict=True))
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            last = float(loss.detach())
            if not math.isfinite(last):
                raise NonFiniteLoss(f"loss became {last} in epoch {epoch}")
            due = (epoch + 1) % every == 0 or epoch == cfg.epochs - 1
            if report and self.reporter is not None and due:
                self.reporter(epoch, head)
                head.train()
        head.eval()
        return head
