"""One configuration on the CPU: a minibatch epoch as NumPy calls on the engine's memory.

Why: at the sizes these heads are trained at (a few thousand rows, a few hundred
features) a 128-row step is microseconds of arithmetic wrapped in fifteen or more torch
calls at 3–8 µs of dispatch each; the same step as NumPy calls on views of the same
tensors costs a third or less. One configuration at a time is every final-seed fit and
one-at-a-time tuning, so this is most of a run's training time on a CPU.

The arithmetic is the analytic engine's (bench.engine.batched): per block the gradient
of Σ s·CE in closed form, the optimizer step at each batch's end (the stack's own, so
one optimizer implementation). It trains what the torch path trains up to
floating-point rounding (NumPy's BLAS, and σ(z) = ½ + ½·tanh(z/2) for two classes,
round differently); the engine-equivalence tests hold both to the autograd reference.
Batch rules, loss weights, feature dropout, logit offsets and anchors are the same calls
the torch path makes, in the same order, so random streams (dropout masks) and a rule's
state (Group DRO's q) advance exactly as there.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch

from bench.engine.config import BatchRule

Rule = tuple[BatchRule, np.ndarray]  # a batch rule and the block's example indices
_blas: Any = None  # threadpoolctl's view of NumPy's BLAS, made at first use


@contextmanager
def one_blas_thread() -> Iterator[None]:
    """NumPy's BLAS on one thread: its fork-join per small product cost more than the
    product (the default dataset's prompt-head fit: 93 ms with two threads, 75 with one;
    SFR's 158 → 130). torch's own threads are left as they are."""
    global _blas
    if _blas is None:
        from threadpoolctl import ThreadpoolController

        _blas = ThreadpoolController().select(user_api="blas")
    with _blas.limit(limits=1):
        yield


# Below this many classes a row's max and sum are taken column by column. NumPy's
# reductions along a short last axis cost ~15 µs (max) and ~7 µs (sum) on a 512 × 2
# block, more than the products around them; column operations cost ~1 µs each. The
# values are NumPy's own: max is exact, and NumPy sums two to seven elements in order,
# as the columns do (tests/test_batched.py holds the two bit for bit).
COLUMN_REDUCE_CLASSES = 8


def _row_reduce(a: np.ndarray, op: np.ufunc) -> np.ndarray:
    """op.reduce(a, axis=1), column by column for a few columns (the same operations in
    the same order). One column keeps NumPy's reduction: its sum of −0 is +0."""
    if not 2 <= a.shape[1] < COLUMN_REDUCE_CLASSES:
        return op.reduce(a, axis=1)
    out = a[:, 0].copy()
    for c in range(1, a.shape[1]):
        op(out, a[:, c], out=out)
    return out


def row_max(a: np.ndarray) -> np.ndarray:
    """a.max(1), faster for a few columns."""
    return _row_reduce(a, np.maximum)


def row_sum(a: np.ndarray) -> np.ndarray:
    """a.sum(1), faster for a few columns."""
    return _row_reduce(a, np.add)


def _softmax(logits: np.ndarray) -> np.ndarray:
    """Row softmax, in place."""
    logits -= row_max(logits)[:, None]
    np.exp(logits, out=logits)
    logits /= row_sum(logits)[:, None]
    return logits


def _cross_entropy(logits: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Per-row CE = logsumexp − the true class's logit (a batch rule's input)."""
    top = row_max(logits)
    lse = np.log(row_sum(np.exp(logits - top[:, None]))) + top
    return lse - logits[np.arange(len(y)), y]


def _loss_gradient(logits: np.ndarray, y: np.ndarray, scale: np.ndarray | None,
                   rule: Rule | None) -> np.ndarray:
    """∂(Σ s·CE)/∂logits = s·(softmax − one-hot), in place of the logits; s from the
    batch rule when there is one."""
    if rule is not None:
        scale = rule[0].scale_numpy(_cross_entropy(logits, y), rule[1])
    assert scale is not None
    g = _softmax(logits)
    g[np.arange(len(y)), y] -= 1
    g *= scale[:, None]
    return g


class _Head:
    """A head's gradient on NumPy views of one stack's flat parameters and gradient."""

    def add_block(self, xb: np.ndarray, y: np.ndarray, scale: np.ndarray | None,
                  rule: Rule | None, first: bool) -> None:
        """This block's Σ s·∇CE into the gradient (replacing it at a batch's first block)."""
        raise NotImplementedError

    def finish_batch(self) -> None:
        """Complete the batch's gradient before the optimizer step."""


class BinaryLinearCpu(_Head):
    """Two classes: with z = (w₁−w₀)·x + (b₁−b₀), p₁ = σ(z) and ∇w₁ = −∇w₀ = Σ s·(p₁−y₁)·x,
    two matrix-vector products per block. Layout [W₀ | W₁ | b₀ | b₁]."""

    def __init__(self, theta: torch.Tensor, grad: torch.Tensor, dim: int,
                 offset: torch.Tensor | None) -> None:
        th, g = theta.numpy(), grad.numpy()
        self.w, self.b = th[: 2 * dim].reshape(2, dim), th[2 * dim :]
        self.gw, self.gb = g[: 2 * dim].reshape(2, dim), g[2 * dim :]
        self.offset = None if offset is None else offset.reshape(-1).numpy()
        self.gw1 = np.zeros(dim, np.float32)  # a batch's ∇w₁ while its blocks add up

    def add_block(self, xb: np.ndarray, y: np.ndarray, scale: np.ndarray | None,
                  rule: Rule | None, first: bool) -> None:
        b = self.b if self.offset is None else self.b + self.offset
        z = xb @ (self.w[1] - self.w[0])
        z += b[1] - b[0]
        y1 = y.astype(np.float32)
        if rule is not None:  # CE = softplus(z) − y₁·z
            scale = rule[0].scale_numpy(np.logaddexp(np.float32(0), z) - z * y1, rule[1])
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
        self.gw[1] = self.gw1
        np.negative(self.gw1, out=self.gw[0])
        self.gb[0] = -self.gb[1]


class LinearCpu(_Head):
    """C classes: logits = x Wᵀ + b, G = s·(softmax − onehot), ∇W = Gᵀ x, ∇b = Σ G.
    Layout [W (C × D) | b (C)]."""

    def __init__(self, theta: torch.Tensor, grad: torch.Tensor, classes: int, dim: int,
                 offset: torch.Tensor | None) -> None:
        th, g = theta.numpy(), grad.numpy()
        self.w, self.b = th[: classes * dim].reshape(classes, dim), th[classes * dim :]
        self.gw, self.gb = g[: classes * dim].reshape(classes, dim), g[classes * dim :]
        self.offset = None if offset is None else offset.reshape(-1).numpy()

    def add_block(self, xb: np.ndarray, y: np.ndarray, scale: np.ndarray | None,
                  rule: Rule | None, first: bool) -> None:
        logits = xb @ self.w.T
        logits += self.b if self.offset is None else self.b + self.offset
        g = _loss_gradient(logits, y, scale, rule)
        if first:
            np.matmul(g.T, xb, out=self.gw)
            np.sum(g, 0, out=self.gb)
        else:
            self.gw += g.T @ xb
            self.gb += g.sum(0)


class PromptCpu(_Head):
    """logits = s · normalize(P x) Tᵀ with T fixed; the gradient goes through the norm
    (the same formulas as the batched prompt head). Layout [P (E × D)]."""

    def __init__(self, theta: torch.Tensor, grad: torch.Tensor, text: torch.Tensor,
                 logit_scale: float, offset: torch.Tensor | None) -> None:
        e = text.shape[1]
        self.p = theta.numpy().reshape(e, -1)
        self.gp = grad.numpy().reshape(e, -1)
        self.t = text.numpy()
        self.s = np.float32(logit_scale)
        self.offset = None if offset is None else offset.reshape(-1).numpy()

    def add_block(self, xb: np.ndarray, y: np.ndarray, scale: np.ndarray | None,
                  rule: Rule | None, first: bool) -> None:
        u = xb @ self.p.T
        r = np.sqrt(np.einsum("ij,ij->i", u, u))[:, None]
        np.maximum(r, np.float32(1e-12), out=r)  # F.normalize's eps
        z = u / r
        logits = z @ self.t.T
        logits *= self.s
        if self.offset is not None:
            logits += self.offset
        g = _loss_gradient(logits, y, scale, rule)
        dz = g @ self.t
        dz *= self.s
        dz -= z * np.einsum("ij,ij->i", z, dz)[:, None]
        dz /= r
        if first:
            np.matmul(dz.T, xb, out=self.gp)
        else:
            self.gp += dz.T @ xb


def one_head_epoch(head: _Head, step: Callable[[], None], spans: list[tuple[int, int, list]],
                   rows: Iterable[torch.Tensor] | None, x: torch.Tensor,
                   scale: torch.Tensor | None, order: torch.Tensor, labels: torch.Tensor,
                   rule: BatchRule | None, dropout: Any, batch: int, epoch_len: int) -> None:
    """One epoch over the general block loop's spans and blocks: each block adds to its
    batch's gradient, `step()` runs at each batch's end.

    rows: each span's gathered rows, or None to read each block's rows from the stored
    features x by the epoch's order (the same rows, read right before their step);
    scale: the row scale in epoch order ([n] values, however shaped), or None with a
    rule; order: the epoch's example indices (the rule's `idx`); labels: the split's
    class of each example; dropout: a bench.FeatureDropout with p > 0, or None."""
    sc = None if scale is None else scale.reshape(-1).numpy()
    ord_1d = order.reshape(-1).numpy()
    y_epoch = labels.numpy()[ord_1d]
    xs = x.numpy()
    mask: np.ndarray | None = None
    for (g0, _, span), xg_t in zip(spans, [None] * len(spans) if rows is None else rows,
                                   strict=True):
        xg = None if xg_t is None else xg_t.reshape(-1, xg_t.shape[-1]).numpy()
        for start, end in span:
            xb = xs[ord_1d[start:end]] if xg is None else xg[start - g0 : end - g0]
            at = start % batch
            if dropout is not None:  # one mask per batch, drawn at its first block
                if at == 0 and end - start == min(batch, epoch_len - start):  # a whole batch
                    xb = dropout.dropped(torch.from_numpy(xb)).numpy()
                else:
                    if at == 0:
                        mask = dropout.factor((min(batch, epoch_len - start), xb.shape[1]),
                                              order.device).numpy()
                    assert mask is not None
                    xb = xb * mask[at : at + (end - start)]
            head.add_block(xb, y_epoch[start:end], None if sc is None else sc[start:end],
                           None if rule is None else (rule, ord_1d[start:end]), at == 0)
            if end % batch == 0 or end == epoch_len:
                head.finish_batch()
                step()
