"""One configuration, two classes, a linear head, on the CPU: a minibatch epoch in NumPy.

Why: at a Waterbirds-sized split a 128-row step is a few microseconds of arithmetic
(two 128 × D matrix-vector products) wrapped in about fifteen torch calls at 3–8 µs of
dispatch each; the same step as NumPy calls on views of the same memory costs about a
third. This is the case of every final-seed fit and of one-at-a-time tuning on a
two-class dataset, so it is most of a run's training time on a CPU.

The arithmetic is the analytic engine's two-class path (bench.engine.batched): with z
the logit difference (w₁−w₀)·x + (b₁−b₀), p₁ = σ(z) and ∇w₁ = −∇w₀ = Σ s·(p₁−y₁)·x. It
trains what the torch path trains up to floating-point rounding (NumPy's BLAS and
σ(z) = ½ + ½·tanh(z/2) round differently); the engine-equivalence tests hold both to
the autograd reference. Batch rules, loss weights, feature dropout, logit offsets and
anchors are the same calls the torch path makes, in the same order, so random streams
(dropout masks) and a rule's state (Group DRO's q) advance exactly as there.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import torch

from bench.engine.config import BatchRule


class BinaryCpuHead:
    """NumPy views of one stack's flat parameters and gradient ([W₀ | W₁ | b₀ | b₁])."""

    def __init__(self, theta: torch.Tensor, grad: torch.Tensor, dim: int,
                 offset: torch.Tensor | None) -> None:
        th, g = theta.numpy(), grad.numpy()
        self.w, self.b = th[: 2 * dim].reshape(2, dim), th[2 * dim :]
        self.gw, self.gb = g[: 2 * dim].reshape(2, dim), g[2 * dim :]
        self.offset = None if offset is None else offset.reshape(-1).numpy()
        self.gw1 = np.zeros(dim, np.float32)  # a batch's ∇w₁ while its blocks add up

    def logit_difference(self, xb: np.ndarray) -> np.ndarray:
        b = self.b if self.offset is None else self.b + self.offset
        z = xb @ (self.w[1] - self.w[0])
        z += b[1] - b[0]
        return z

    def add_block(self, xb: np.ndarray, y1: np.ndarray, scale: np.ndarray | None,
                  rule: tuple[BatchRule, np.ndarray] | None, first: bool) -> None:
        """This block's Σ s·(p₁−y₁)·x into ∇w₁ (replacing it at a batch's first block)."""
        z = self.logit_difference(xb)
        if rule is not None:  # CE = softplus(z) − y₁·z, the rule's input
            ce = np.logaddexp(np.float32(0), z) - z * y1
            scale = rule[0].scale_numpy(ce, rule[1])
        z *= 0.5  # σ(z) = ½ + ½·tanh(z/2): no overflow for any z
        np.tanh(z, out=z)
        z *= 0.5
        z += 0.5
        z -= y1
        z *= scale
        gb1 = z.sum(dtype=np.float32)
        if first:
            np.matmul(z, xb, out=self.gw1)
            self.gb[1] = gb1
        else:
            self.gw1 += z @ xb
            self.gb[1] += gb1

    def finish_batch(self) -> None:
        """The full gradient from ∇w₁: ∇w₀ = −∇w₁, ∇b₀ = −∇b₁."""
        self.gw[1] = self.gw1
        np.negative(self.gw1, out=self.gw[0])
        self.gb[0] = -self.gb[1]


def binary_cpu_epoch(head: BinaryCpuHead, step: Any, spans: list[tuple[int, int, list]],
                     items: Iterable[list[tuple[torch.Tensor, torch.Tensor]]],
                     scale: torch.Tensor | None, order: torch.Tensor,
                     rule: BatchRule | None, dropout: Any, batch: int, epoch_len: int) -> None:
    """One epoch over gathered spans (as the general block loop walks them): each block
    adds to its batch's gradient, `step()` runs at each batch's end.

    scale: the row scale in epoch order ([n] values, however shaped), or None with a
    rule; order: the epoch's example indices (the rule's `idx`); dropout: a
    bench.FeatureDropout with p > 0, or None."""
    sc = None if scale is None else scale.reshape(-1).numpy()
    ord_1d = order.reshape(-1).numpy()
    mask: np.ndarray | None = None
    for (g0, _, span), rows in zip(spans, items, strict=True):
        xg_t, ohg_t = rows[0]
        xg = xg_t.reshape(-1, xg_t.shape[-1]).numpy()
        y1g = ohg_t.reshape(-1, ohg_t.shape[-1])[:, 1].numpy()
        for start, end in span:
            a, b = start - g0, end - g0
            xb, y1 = xg[a:b], y1g[a:b]
            at = start % batch
            if dropout is not None:  # one mask per batch, drawn at its first block
                whole = at == 0 and end - start == min(batch, epoch_len - start)
                if whole:
                    xb = dropout.dropped(torch.from_numpy(xb)).numpy()
                else:
                    if at == 0:
                        rows_in_batch = min(batch, epoch_len - start)
                        mask = dropout.factor((rows_in_batch, xb.shape[1]), order.device).numpy()
                    assert mask is not None
                    xb = xb * mask[at : at + (end - start)]
            head.add_block(xb, y1, None if sc is None else sc[start:end],
                           None if rule is None else (rule, ord_1d[start:end]), at == 0)
            if end % batch == 0 or end == epoch_len:
                head.finish_batch()
                step()
