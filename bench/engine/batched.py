"""Batched training: K configurations of one method trained as one computation.

Why: a head on cached features is a thin matrix product, so an epoch costs one stream
of the feature matrix through memory plus per-step Python and dispatch overhead. Trained
one at a time, every configuration pays both. Stacked, one gathered block of rows
serves all K heads while it is in cache, and the per-step overhead is paid once.

The gradient is computed analytically (softmax − one-hot, then Gᵀ X; for the prompt
head through the normalisation), block by block, so each block of rows is read once
per step instead of once by the forward and again by autograd's backward. The update
is AdamW or SGD vectorised over configurations, with per-configuration lr and weight
decay, written to match torch.optim's formulas.

Contract: `fit_batched(heads, data, cfgs, trainers, ...)[k]` equals, up to
floating-point rounding, `trainers[k].fit(heads[k], data, cfgs[k], Hooks(...),
engine="autograd")` (and Trainer.fit's default engine is this function with K = 1):
same initial head, same batch order (drawn from trainers[k].generator), same loss and
update, same epochs, same per-epoch reporter calls. Configurations may differ in lr,
weight decay, optimizer, batch size and epochs. Batch order is drawn once for all
configurations whose generators are in the same state (tuning: every trial uses the
same seed); otherwise (final seeds) each configuration gets its own rows, still in
one batched computation. A configuration that diverges or is pruned is returned as
its exception; the others go on.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from bench.data.store import FeatureSplit
from bench.engine.config import BatchRule, NonFiniteLoss, TrainConfig, report_every
from bench.engine.cpu_workers import cpu_workers, one_thread, parallel_map, split
from bench.engine.heads import LinearHead, PromptHead
from bench.engine.one_head_cpu import (
    BinaryLinearCpu,
    LinearCpu,
    PromptCpu,
    one_blas_thread,
    one_head_epoch,
)
from bench.engine.samplers import Sampler

BLOCK_ROWS = 1024  # rows per gradient block (never more than a batch)
# rows gathered at once, on every CPU thread, before a span's thin steps run on one.
# Random rows are the expensive reads (memory latency, not bandwidth), and two threads
# keep twice the reads in flight. Measured on 2 cores against the previous design (8 MB
# spans gathered ahead on a worker thread while the steps ran), linear head, batch
# 128-1024: 2.9k x 384 rows 0.8x the time, 20k x 384 0.7-0.9x, CelebA's 163k x 768
# 0.55-0.8x; 2 MB beat 768 KB and 4 MB spans overall.
GATHER_BYTES = 2 << 20
# features up to which one small head on the CPU (NumPy steps) reads each block's rows
# straight from the stored features, right before its step, instead of from a span
# gathered beforehand on two threads (fewer passes over memory, no fork-join). Measured
# per epoch on 2 cores, SGD, binary linear head, inline vs spans: 4.8k x 384, batch 128:
# 1.9 vs 3.0 ms; 20k x 384: 6.7 vs 11.4; 80k x 384: 34 vs 45; 163k x 384, batch
# 256-1024: 76-89 vs 85-89; 163k x 768 (500 MB): batch 256 152 vs 154, batch 1024 167
# vs 144, where the spans' two threads of reads in flight win.
INLINE_GATHER_BYTES = 256 << 20
PROMPT_GROUP = 1536  # prompt heads per product: up to this many output columns
STEP_CHUNK = 1 << 17  # parameters per optimizer piece: its state stays in cache
# parameters up to which a CPU step runs as NumPy calls (one head's whole step, or a
# stack's optimizer update): beyond it the arithmetic, not dispatch, is the cost, and
# torch's threads win
NUMPY_STEP_MAX = 1 << 14
PARTIAL_BYTES = 256 << 20  # full-batch workers' partial gradients, all together, at most
BETAS, EPS = (0.9, 0.999), 1e-8  # torch.optim.AdamW defaults, which Trainer.fit uses


# -- stacked heads --------------------------------------------------------------------
def _softmax_(z: torch.Tensor) -> torch.Tensor:
    """Softmax over the last dim, in place: torch's kernel is slow for the few classes of a
    head (7× slower for 16 heads × 2 classes, measured), the same arithmetic in 4 ops."""
    z.sub_(z.amax(-1, keepdim=True)).exp_()
    return z.div_(z.sum(-1, keepdim=True))


class _Kind:
    """How a head kind lays its parameters out flat, and its loss gradient on a block."""

    def sizes(self) -> list[int]:  # per-configuration sizes of the flat segments
        raise NotImplementedError

    def read(self, head: nn.Module) -> list[torch.Tensor]:
        raise NotImplementedError

    def write(self, head: nn.Module, segs: list[torch.Tensor]) -> None:
        raise NotImplementedError

    def grad(self, segs: list[torch.Tensor], k: int, xb: torch.Tensor, oh: torch.Tensor,
             scale: torch.Tensor, out: list[torch.Tensor], accumulate: bool,
             shared: bool, offset: torch.Tensor | None = None) -> None:
        """Σ_i scale_i ∇CE_i over a block of rows, for all k configurations, into `out`.
        shared: xb [n, D] serves every configuration; else xb [k, n, D], own rows each.
        offset: [k, C] added to each configuration's logits before the loss (Hooks.
        logit_offset), so the gradient is that of CE(z + b): softmax(z + b) − one-hot."""
        raise NotImplementedError

    def on_cpu(self, stack: _Stack) -> Any:
        """This kind's NumPy gradient (bench.engine.one_head_cpu) over a one-head stack."""
        raise NotImplementedError

    def run_grad(self, segs: list[torch.Tensor], k: int, x: torch.Tensor, onehot: torch.Tensor,
                 scale: torch.Tensor, run: list[tuple[int, int]], out: list[torch.Tensor],
                 offset: torch.Tensor | None = None) -> None:
        """Σ over the stored rows of a run of blocks (full batch: x, onehot and the
        shared scale [n, K|1, 1] indexed by row), into `out`."""
        for start, end in run:
            self.grad(segs, k, x[start:end], onehot[start:end], scale[start:end], out,
                      start != run[0][0], True, offset)


class _Linear(_Kind):
    """logits = W h + b; flat layout [W of all K | b of all K] so W views as [K·C, D]."""

    def __init__(self, head: LinearHead) -> None:
        self.c, self.d = head.linear.weight.shape

    def sizes(self) -> list[int]:
        return [self.c * self.d, self.c]

    def read(self, head: nn.Module) -> list[torch.Tensor]:
        return [head.linear.weight.detach().reshape(-1), head.linear.bias.detach().reshape(-1)]

    def write(self, head: nn.Module, segs: list[torch.Tensor]) -> None:
        head.linear.weight.copy_(segs[0].view(self.c, self.d))
        head.linear.bias.copy_(segs[1])

    def on_cpu(self, stack: _Stack) -> Any:
        if self.c == 2:
            return BinaryLinearCpu(stack.theta, stack.grad, self.d, stack.offset)
        return LinearCpu(stack.theta, stack.grad, self.c, self.d, stack.offset)

    @staticmethod
    def _shifted(segs: list[torch.Tensor], offset: torch.Tensor | None) -> list[torch.Tensor]:
        """A logit offset is a bias the optimizer never sees: W h + (b + o) gives the
        logits, and the gradient in b is the same whatever b's value."""
        return segs if offset is None else [segs[0], segs[1] + offset.reshape(-1)]

    def grad(self, segs, k, xb, oh, scale, out, accumulate, shared,  # noqa: ANN001
             offset=None) -> None:  # noqa: ANN001
        """Σ_i scale_i ∇CE_i over the block into `out` (added to it when accumulating)."""
        c, d = self.c, self.d
        segs = self._shifted(segs, offset)
        if k == 1 and c == 2:  # own rows of one head (dropout) are its rows: [1, n, D]
            if not shared:
                xb, oh = xb[0], oh[0]
            sc = scale if isinstance(scale, _RuleScale) else scale.reshape(-1)
            self._binary_grad(segs, xb, oh, sc, out, accumulate)
            return
        if shared:  # xb [n, D]: one matrix product serves all K heads
            w, b = segs[0].view(k * c, d), segs[1].view(k * c)
            logits = torch.addmm(b, xb, w.t()).view(-1, k, c)
            if callable(scale):
                scale = scale(logits, 0, k)
            g = _softmax_(logits).sub_(oh.unsqueeze(1)).mul_(scale)
            g2 = g.view(-1, k * c)
            gw, gb = out[0].view(k * c, d), out[1].view(k * c)
            if accumulate:
                gw.addmm_(g2.t(), xb)
                gb.add_(g2.sum(0))
            else:
                torch.mm(g2.t(), xb, out=gw)
                torch.sum(g2, 0, out=gb)
            return
        w, b = segs[0].view(k, c, d), segs[1].view(k, c)  # xb [K, n, D]: own rows per head
        logits = torch.baddbmm(b.unsqueeze(1), xb, w.transpose(1, 2))
        if callable(scale):
            scale = scale(logits, 0, k)
        g = _softmax_(logits).sub_(oh).mul_(scale)
        gw, gb = out[0].view(k, c, d), out[1].view(k, c)
        if accumulate:
            gw.baddbmm_(g.transpose(1, 2), xb)
            gb.add_(g.sum(1))
        else:
            torch.bmm(g.transpose(1, 2), xb, out=gw)
            torch.sum(g, 1, out=gb)


    def run_grad(self, segs, k, x, onehot, scale, run, out, offset=None) -> None:  # noqa: ANN001
        segs = self._shifted(segs, offset)
        if k == 1 and self.c == 2:
            self._binary_run_grad(segs, x, onehot, scale, run, out)
        else:
            super().run_grad(segs, k, x, onehot, scale, run, out)

    def _binary_run_grad(self, segs, x, onehot, scale, run, out) -> None:  # noqa: ANN001
        """_binary_grad over a run of blocks, with the logit difference formed once and
        the gradient of w₁ summed in place: four operations per block."""
        w, b = segs[0].view(2, self.d), segs[1]
        wd, bd = w[1] - w[0], b[1] - b[0]
        gw1, gb1 = out[0].view(2, self.d)[1], out[1][1:]
        gw1.zero_()
        gb1.zero_()
        for start, end in run:
            xb = x[start:end]
            g = torch.addmv(bd, xb, wd).sigmoid_().sub_(onehot[start:end, 1])
            g.mul_(scale[start:end].view(-1))
            gw1.addmv_(xb.t(), g)
            gb1.add_(g.sum())
        torch.neg(gw1, out=out[0].view(2, self.d)[0])
        torch.neg(gb1, out=out[1][:1])

    def _binary_grad(self, segs, xb, oh, scale, out, accumulate) -> None:  # noqa: ANN001
        """Two classes, one head: the softmax depends only on the logit difference
        z = (w₁−w₀)·x + (b₁−b₀), p₁ = σ(z), and ∇w₁ = −∇w₀ = Σ s·(p₁−y₁)·x. Two
        matrix-vector products per block instead of two thin matrix products: the same
        gradient, about 1.5× faster on a CPU, which is what brings a full-batch epoch
        near the streaming bound. (On a CPU a single head's minibatch epoch runs the same
        arithmetic in NumPy: bench.engine.one_head_cpu.)"""
        w, b = segs[0].view(2, self.d), segs[1]
        z = torch.addmv(b[1] - b[0], xb, w[1] - w[0])
        y1 = oh[:, 1]
        if isinstance(scale, _RuleScale):  # CE = softplus(z) − y₁·z, z the logit difference
            ce = F.softplus(z).sub_(z * y1)
            scale = scale.from_ce(ce.unsqueeze(0), 0, 1)[0]
        g = z.sigmoid_().sub_(y1).mul_(scale)
        gw1, gb1 = torch.mv(xb.t(), g), g.sum()
        gw, gb = out[0].view(2, self.d), out[1]
        if accumulate:
            gw[1].add_(gw1)
            gw[0].sub_(gw1)
            gb[1].add_(gb1)
            gb[0].sub_(gb1)
        else:
            gw[1].copy_(gw1)
            torch.neg(gw1, out=gw[0])
            gb[1].copy_(gb1)
            gb[0].copy_(-gb1)


class _Prompt(_Kind):
    """logits = s · normalize(P h) Tᵀ with T fixed; the gradient goes through the norm."""

    def __init__(self, head: PromptHead) -> None:
        self.e, self.d = head.proj.shape
        self.text = head.text
        self.scale = head.logit_scale

    def sizes(self) -> list[int]:
        return [self.e * self.d]

    def read(self, head: nn.Module) -> list[torch.Tensor]:
        if not torch.equal(head.text, self.text) or head.logit_scale != self.scale:
            raise ValueError("batched prompt heads must share class text and logit scale")
        return [head.proj.detach().reshape(-1)]

    def write(self, head: nn.Module, segs: list[torch.Tensor]) -> None:
        head.proj.copy_(segs[0].view(self.e, self.d))

    def on_cpu(self, stack: _Stack) -> Any:
        return PromptCpu(stack.theta, stack.grad, self.text, self.scale, stack.offset)

    def grad(self, segs, k, xb, oh, scale, out, accumulate, shared,  # noqa: ANN001
             offset=None) -> None:  # noqa: ANN001
        """Compute-bound (a D×D' product per row): configurations go in groups whose
        products keep the shapes one head would have, which the GEMM runs fastest."""
        size, per = self.e * self.d, max(1, PROMPT_GROUP // self.e)
        for lo in range(0, k, per):
            hi = min(k, lo + per)
            p, o = segs[0][lo * size : hi * size], out[0][lo * size : hi * size]
            off = None if offset is None else offset[lo:hi]
            if callable(scale):  # a batch rule: the scale of configurations lo..hi
                sc = partial(_offset_rule, scale, lo, hi)
                self._grad(p, hi - lo, xb if shared else xb[lo:hi], oh if shared else oh[lo:hi],
                           sc, o, accumulate, shared, off)
            elif shared:
                sc = scale if scale.shape[1] == 1 else scale[:, lo:hi]
                self._grad(p, hi - lo, xb, oh, sc, o, accumulate, True, off)
            else:
                sc = scale if scale.shape[0] == 1 else scale[lo:hi]
                self._grad(p, hi - lo, xb[lo:hi], oh[lo:hi], sc, o, accumulate, False, off)

    def _grad(self, p, k, xb, oh, scale, out, accumulate, shared, offset=None) -> None:  # noqa: ANN001
        e, d, t, s = self.e, self.d, self.text, self.scale
        if shared:
            u = torch.mm(xb, p.view(k * e, d).t()).view(-1, k, e)
        else:
            u = torch.bmm(xb, p.view(k, e, d).transpose(1, 2))
        r = u.norm(dim=-1, keepdim=True).clamp_min_(1e-12)  # F.normalize's eps
        z = u / r
        logits = (z @ t.t()).mul_(s)
        if offset is not None:  # [k, C]: shared logits are [n, k, C], own rows [k, n, C]
            logits.add_(offset if shared else offset.unsqueeze(1))
        if callable(scale):
            scale = scale(logits)
        g = _softmax_(logits).sub_(oh if not shared else oh.unsqueeze(1)).mul_(scale)
        dz = (g @ t).mul_(s)
        du = dz.sub_(z * (z * dz).sum(-1, keepdim=True)).div_(r)
        if shared:
            gp = out.view(k * e, d)
            du2 = du.view(-1, k * e).t()
            gp.addmm_(du2, xb) if accumulate else torch.mm(du2, xb, out=gp)
        else:
            gp = out.view(k, e, d)
            dut = du.transpose(1, 2)
            gp.baddbmm_(dut, xb) if accumulate else torch.bmm(dut, xb, out=gp)


def _stack_offsets(offsets: list[torch.Tensor | None],
                   device: torch.device) -> torch.Tensor | None:
    """Per-configuration logit offsets as one [k, C] tensor (zeros where a configuration
    has none), or None when no configuration has one."""
    given = [o for o in offsets if o is not None]
    if not given:
        return None
    zero = torch.zeros_like(given[0].reshape(-1), dtype=torch.float32)
    return torch.stack([zero if o is None else o.reshape(-1).to(torch.float32)
                        for o in offsets]).to(device)


def _offset_rule(rule, lo: int, hi: int, logits: torch.Tensor):  # noqa: ANN001, ANN202
    return rule(logits, lo, hi)


class _RuleScale:
    """What a stack's gradient calls instead of a fixed row scale when its configurations
    have batch rules: each rule turns its rows' cross-entropies into weights. Called with
    the block's logits (any head), or with the cross-entropies directly (the two-class
    linear path, which never forms the logits)."""

    def __init__(self, rules: list[BatchRule], rows: torch.Tensor, oh: torch.Tensor,
                 shared: bool) -> None:
        self.rules, self.rows, self.oh, self.shared = rules, rows, oh, shared

    def from_ce(self, ce: torch.Tensor, lo: int, hi: int) -> torch.Tensor:
        """ce [k, n] of configurations lo..hi → their row weights [k, n]."""
        if hi - lo == 1:
            rows = self.rows if self.shared else self.rows[lo]
            return self.rules[lo].scale(ce[0], rows).to(ce.dtype)[None]
        return torch.stack([
            self.rules[lo + j].scale(ce[j], self.rows if self.shared else self.rows[lo + j])
            for j in range(hi - lo)
        ]).to(ce.dtype)

    def __call__(self, logits: torch.Tensor, lo: int, hi: int) -> torch.Tensor:
        z = logits.transpose(0, 1) if self.shared else logits  # [k, n, C]
        ohk = self.oh.unsqueeze(0) if self.shared else self.oh[lo:hi]
        # logaddexp for two classes: torch's logsumexp costs 3× as much on a few columns
        lse = torch.logaddexp(z[..., 0], z[..., 1]) if z.shape[-1] == 2 else z.logsumexp(-1)
        out = self.from_ce((lse - (z * ohk).sum(-1)).detach(), lo, hi)
        return out.t().unsqueeze(-1) if self.shared else out.unsqueeze(-1)


def _kind_of(heads: list[nn.Module]) -> _Kind:
    first = heads[0]
    for h in heads:
        if type(h) is not type(first):
            raise TypeError("batched training needs heads of one kind")
    if isinstance(first, LinearHead):
        return _Linear(first)
    if isinstance(first, PromptHead):
        return _Prompt(first)
    raise TypeError(
        f"batched training supports LinearHead and PromptHead, not {type(first).__name__}; "
        "train other heads with Trainer.fit"
    )


# -- a stack: configurations that step together ----------------------------------------
class _Stack:
    """Configurations with the same optimizer and batch size: flat parameters [K·P] and
    optimizer state, per-element lr and weight decay, one step counter; and where
    configurations have them, logit offsets [K, C] and anchors (flat, as theta) with
    per-element pull 2λ (Hooks.logit_offset, Hooks.anchor)."""

    def __init__(self, kind: _Kind, ks: list[int], heads: list[nn.Module],
                 cfgs: list[TrainConfig], batch: int, device: torch.device,
                 offsets: list[torch.Tensor | None] | None = None,
                 anchors: list[tuple[nn.Module, float] | None] | None = None) -> None:
        self.kind, self.ks, self.batch = kind, list(ks), batch
        self.sizes = kind.sizes()
        cfg = cfgs[ks[0]]
        self.adam = cfg.optimizer != "sgd"
        self.momentum = cfg.momentum
        self.t = 0
        per_head = [kind.read(heads[k]) for k in ks]
        self.theta = torch.cat([
            torch.stack([p[i] for p in per_head]).reshape(-1) for i in range(len(self.sizes))
        ]).to(device=device, dtype=torch.float32)
        self.grad = torch.zeros_like(self.theta)
        self.m = torch.zeros_like(self.theta)
        self.v = torch.zeros_like(self.theta) if self.adam else None
        self.lr_cfg = torch.tensor([cfgs[k].lr for k in ks], dtype=torch.float32)
        self.wd_cfg = torch.tensor([cfgs[k].weight_decay for k in ks], dtype=torch.float32)
        self.offset = _stack_offsets([offsets[k] for k in ks] if offsets else [], device)
        self.anchor, self.pull_cfg = None, None
        if anchors and any(anchors[k] is not None for k in ks):
            # a configuration without an anchor pulls with strength 0 toward its own start
            per_anchor = [per_head[i] if anchors[k] is None else kind.read(anchors[k][0])
                          for i, k in enumerate(ks)]
            self.anchor = torch.cat([
                torch.stack([p[i] for p in per_anchor]).reshape(-1)
                for i in range(len(self.sizes))
            ]).to(device=device, dtype=torch.float32)
            self.pull_cfg = torch.tensor(
                [0.0 if anchors[k] is None else 2.0 * float(anchors[k][1]) for k in ks],
                dtype=torch.float32)
        self._expand()

    def _expand(self) -> None:
        """Per-element lr and weight decay (or AdamW's decay factor), laid out as theta;
        and the parameter and gradient views the block loop reads."""
        dev = self.theta.device
        per_elem = lambda v: torch.cat([v.repeat_interleave(s) for s in self.sizes]).to(dev)  # noqa: E731
        self.lr = per_elem(self.lr_cfg)
        wd = per_elem(self.wd_cfg)
        self.decay = (1 - self.lr * wd) if self.adam else wd
        self.pull = None if self.pull_cfg is None else per_elem(self.pull_cfg)
        self.p, self.g = self.segs(self.theta), self.segs(self.grad)
        # a few thousand parameters on the CPU: the update as NumPy calls on the same
        # memory (torch's dispatch per call is most of such a step)
        small = dev.type == "cpu" and self.theta.numel() <= NUMPY_STEP_MAX
        self._np = None if not small else tuple(
            None if t is None else t.numpy()
            for t in (self.theta, self.grad, self.m, self.v, self.lr, self.decay))
        self._tmp = None if not small else np.empty(self.theta.numel(), np.float32)

    @property
    def k(self) -> int:
        return len(self.ks)

    @property
    def on_numpy(self) -> bool:
        """Small enough on the CPU that its steps run as NumPy calls (NUMPY_STEP_MAX)."""
        return self._np is not None

    def segs(self, flat: torch.Tensor) -> list[torch.Tensor]:
        out, off = [], 0
        for size in self.sizes:
            out.append(flat[off : off + self.k * size])
            off += self.k * size
        return out

    def rows(self, flat: torch.Tensor, k: int) -> list[torch.Tensor]:
        return [seg.view(self.k, -1)[k] for seg in self.segs(flat)]

    def finite(self) -> list[bool]:
        ok = torch.ones(self.k, dtype=torch.bool, device=self.theta.device)
        for seg in self.segs(self.theta):
            ok &= torch.isfinite(seg.view(self.k, -1)).all(1)
        return ok.tolist()

    def keep(self, keep: list[int]) -> None:
        """Drop configurations that finished: they cost nothing from here on."""
        idx = torch.tensor(keep, dtype=torch.long)
        didx = idx.to(self.theta.device)

        def sel(flat: torch.Tensor | None) -> torch.Tensor | None:
            if flat is None:
                return None
            return torch.cat([s.view(self.k, -1)[didx].reshape(-1) for s in self.segs(flat)])

        self.theta, self.grad, self.m, self.v, self.anchor = (
            sel(self.theta), sel(self.grad), sel(self.m), sel(self.v), sel(self.anchor)
        )
        self.ks = [self.ks[i] for i in keep]
        self.lr_cfg, self.wd_cfg = self.lr_cfg[idx], self.wd_cfg[idx]
        if self.pull_cfg is not None:
            self.pull_cfg = self.pull_cfg[idx]
        if self.offset is not None:
            self.offset = self.offset[didx]
        self._expand()

    def step(self) -> None:
        """One AdamW or SGD(momentum) step of every configuration, as torch.optim does it,
        in cache-sized pieces (K prompt heads' state is tens of MB: one pass per op over
        all of it would stream it from memory several times per step)."""
        self.t += 1
        if self.anchor is not None:  # ∇ λ‖θ − θ_anchor‖² = 2λ(θ − θ_anchor), at the pre-step θ
            self.grad.addcmul_(self.theta - self.anchor, self.pull)
        n = self.theta.numel()
        if self._np is not None:
            self._update_numpy(*self._np)
            return
        if n <= STEP_CHUNK:
            self._update(self.theta, self.grad, self.m, self.v, self.lr, self.decay)
            return
        for lo in range(0, n, STEP_CHUNK):
            s = slice(lo, min(n, lo + STEP_CHUNK))
            self._update(self.theta[s], self.grad[s], self.m[s],
                         None if self.v is None else self.v[s], self.lr[s], self.decay[s])

    def _update(self, th, g, m, v, lr, decay) -> None:  # noqa: ANN001
        if self.adam:
            b1, b2 = BETAS
            th.mul_(decay)
            m.lerp_(g, 1 - b1)
            v.mul_(b2).addcmul_(g, g, value=1 - b2)
            bc1, bc2 = 1 - b1**self.t, 1 - b2**self.t
            # θ −= lr/bc1 · m / (√v/√bc2 + ε), rearranged to save two passes
            denom = v.sqrt().add_(EPS * math.sqrt(bc2))
            th.addcdiv_(m * lr, denom, value=-math.sqrt(bc2) / bc1)
        else:
            d = g.addcmul(th, decay)
            m.mul_(self.momentum).add_(d)  # the first step leaves m = d, as torch does
            th.addcmul_(m, lr, value=-1)

    def _update_numpy(self, th, g, m, v, lr, decay) -> None:  # noqa: ANN001
        """_update's formulas, operation for operation, on NumPy views."""
        tmp = self._tmp
        if self.adam:
            b1, b2 = BETAS
            th *= decay
            np.subtract(g, m, out=tmp)
            tmp *= np.float32(1 - b1)
            m += tmp  # m.lerp_(g, 1 − β₁)
            v *= np.float32(b2)
            np.multiply(g, g, out=tmp)
            tmp *= np.float32(1 - b2)
            v += tmp
            bc1, bc2 = 1 - b1**self.t, 1 - b2**self.t
            denom = np.sqrt(v)
            denom += np.float32(EPS * math.sqrt(bc2))
            np.multiply(m, lr, out=tmp)
            tmp /= denom
            tmp *= np.float32(-math.sqrt(bc2) / bc1)
            th += tmp
        else:
            np.multiply(th, decay, out=tmp)
            tmp += g
            m *= np.float32(self.momentum)
            m += tmp
            np.multiply(m, lr, out=tmp)
            th -= tmp


# -- the loop --------------------------------------------------------------------------
@dataclass
class _Config:
    epochs: int
    batch: int
    sampler: Sampler
    generator: torch.Generator
    reporter: object


def _blocks(n: int, batches: set[int], block: int) -> list[tuple[int, int]]:
    """Row ranges that never cross any stack's batch boundary, at most `block` long."""
    cuts = {n}
    for b in batches:
        cuts.update(range(b, n, b))
    out, start = [], 0
    for end in sorted(cuts):
        while start < end:
            out.append((start, min(end, start + block)))
            start = out[-1][1]
    return out


def _spans(blocks: list[tuple[int, int]], rows: int) -> list[tuple[int, int, list]]:
    """Consecutive blocks grouped into gather spans of about `rows` rows: one random-row
    gather per span (random rows are the expensive reads), blocks then slice it."""
    spans: list[tuple[int, int, list]] = []
    for b in blocks:
        if spans and b[1] - spans[-1][0] <= rows:
            spans[-1] = (spans[-1][0], b[1], spans[-1][2] + [b])
        else:
            spans.append((b[0], b[1], [b]))
    return spans


def _draw_orders(cfgs: dict[int, _Config], device: torch.device) -> dict[int, torch.Tensor]:
    """Each configuration's epoch order from its own generator, drawn once per group of
    configurations whose generators are in the same state and whose samplers agree."""
    orders: dict[int, torch.Tensor] = {}
    leaders: dict[tuple, int] = {}
    for k, c in cfgs.items():
        w = c.sampler.weights
        key = (None if w is None else id(w), bytes(c.generator.get_state().numpy()))
        if key in leaders:
            lead = cfgs[leaders[key]]
            orders[k] = orders[leaders[key]]
            c.generator.set_state(lead.generator.get_state())
            continue
        leaders[key] = k
        orders[k] = torch.cat(c.sampler.epoch(c.generator, device))
    return orders


def _row_scale(w: torch.Tensor | None, order: torch.Tensor, batch: int) -> torch.Tensor:
    """Per position in the epoch: w_i / Σ_batch w (1/len(batch) unweighted), so the block
    sums give each batch's Σ w·CE / Σ w, as Trainer.fit's loss."""
    n = order.shape[-1]
    if w is None and batch >= n:  # one batch: the mean over all rows
        return torch.full((n,), 1.0 / n, device=order.device)
    which = torch.arange(n, device=order.device) // batch
    if w is None:
        lens = torch.bincount(which).to(torch.float32)
        return (1.0 / lens)[which]
    wo = w[order] if w.dim() == 1 else torch.gather(w, 1, order)
    sums = torch.zeros(*wo.shape[:-1], int(which[-1]) + 1, device=wo.device, dtype=wo.dtype)
    sums.index_add_(-1, which, wo)
    return wo / sums.clamp_min(1e-12)[..., which]


def _gather(x: torch.Tensor, idx: torch.Tensor, buf: torch.Tensor) -> torch.Tensor:
    """x[idx] written into `buf`: a fresh multi-MB tensor per gather is fresh pages for
    the OS to fault in: reusing one buffer measured 5–15% faster minibatch epochs."""
    flat = idx.reshape(-1)
    out = buf[: flat.numel()]
    torch.index_select(x, 0, flat, out=out)
    return out.view(*idx.shape, x.shape[1])


def _span_rows(x: torch.Tensor, onehot: torch.Tensor | None,
               spans: list[tuple[int, int, list]], buf: torch.Tensor, ords: list[torch.Tensor],
               shared: bool, stream: bool, j: int) -> list[tuple[torch.Tensor, Any]]:
    """Span j's rows and one-hot labels for each stack: the stored rows themselves when
    streaming, one gather shared by all stacks, or each stack's own rows ([K, rows, D]),
    gathered into `buf` (the previous span's steps are done by then). onehot None: the
    labels are not gathered (the NumPy path takes them by index)."""
    g0, g1, _ = spans[j]

    def labels(idx: Any) -> Any:
        return None if onehot is None else onehot[idx]

    if stream:
        return [(x[g0:g1], labels(slice(g0, g1)))] * len(ords)
    if shared:
        idx = ords[0][0, g0:g1]
        return [(_gather(x, idx, buf), labels(idx))] * len(ords)
    out, off = [], 0
    for o in ords:
        idx = o[:, g0:g1]
        out.append((_gather(x, idx, buf[off:]), labels(idx)))
        off += idx.numel()
    return out


def _masks(st: _Stack, drops: list[Any], start: int, end: int, n: int, dim: int,
           device: torch.device) -> torch.Tensor:
    """Dropout factors [K, end−start, D] for a block of a stack: each configuration draws
    one mask per batch (at its first block, as the reference draws one per forward) and
    blocks take their rows of it."""
    if start % st.batch == 0:  # a new batch
        rows = min(st.batch, n - start)
        st.masks = [None if d is None or d.p == 0 else d.factor((rows, dim), device)
                    for d in drops]
    lo, hi = start % st.batch, start % st.batch + (end - start)
    if len(st.masks) == 1 and st.masks[0] is not None:
        return st.masks[0][lo:hi].unsqueeze(0)
    ones = None
    out = []
    for m in st.masks:
        if m is None:
            ones = ones if ones is not None else torch.ones(end - start, dim, device=device)
            out.append(ones)
        else:
            out.append(m[lo:hi])
    return torch.stack(out)


def _dropped(st: _Stack, drops: list[Any], start: int, end: int, n: int, xb: torch.Tensor,
             device: torch.device) -> torch.Tensor:
    """A block's rows [K, rows, D] times each configuration's dropout factors. One
    configuration whose block is a whole batch draws and applies its mask in one go
    (FeatureDropout.dropped, the same values as multiplying by the factor)."""
    whole = start % st.batch == 0 and end - start == min(st.batch, n - start)
    if len(drops) == 1 and drops[0] is not None and drops[0].p > 0 and whole:
        return drops[0].dropped(xb[0]).unsqueeze(0)
    return xb * _masks(st, drops, start, end, n, xb.shape[-1], device)


def _gathered(produce: Callable[[int], Any], n: int, thin: bool) -> Iterator[Any]:
    """produce(0), …, produce(n−1): each span's row gather on every intra-op thread; with
    `thin`, the caller's steps between them on one (on 2 cores a fork-join per tiny
    operation costs more than the second core gives back)."""
    if not thin:
        yield from map(produce, range(n))
        return
    threads = torch.get_num_threads()
    with one_thread():
        for i in range(n):
            torch.set_num_threads(threads)
            try:
                item = produce(i)
            finally:
                torch.set_num_threads(1)
            yield item


def _shared_scale(sc: torch.Tensor, start: int, end: int) -> torch.Tensor:
    """Rows [start, end) of a shared row scale ([n] or [n, K]), shaped [n, K|1, 1]."""
    s = sc[start:end]
    return s.view(-1, 1, 1) if s.dim() == 1 else s.unsqueeze(-1)


def _stream_epoch(kind: _Kind, stacks: list[_Stack], x: torch.Tensor, onehot: torch.Tensor,
                  scales: list[torch.Tensor], blocks: list[tuple[int, int]],
                  workers: int) -> None:
    """A full-batch epoch with its rows split among CPU workers: each sums the gradient
    of its own contiguous blocks, the partial sums are added in worker order (the same
    rounding every run), then each stack takes its one step."""

    def part(run: list[tuple[int, int]]) -> list[torch.Tensor]:
        outs = [torch.empty_like(st.grad) for st in stacks]
        for st, sc, out in zip(stacks, scales, outs, strict=True):
            kind.run_grad(st.p, st.k, x, onehot, _shared_scale(sc, 0, len(sc)), run,
                          st.segs(out), st.offset)
        return outs

    # one partial gradient per worker: 16 prompt heads on 64 cores would be 2.4 GB
    grad_bytes = sum(st.grad.numel() * st.grad.element_size() for st in stacks)
    workers = max(1, min(workers, PARTIAL_BYTES // max(1, grad_bytes)))
    parts = parallel_map(part, split(blocks, workers))
    for i, st in enumerate(stacks):
        st.grad.copy_(parts[0][i])
        for p in parts[1:]:
            st.grad.add_(p[i])
        st.step()


@torch.no_grad()
@np.errstate(over="ignore", invalid="ignore")  # a diverging configuration is found by finite()
def fit_batched(
    heads: list[nn.Module],
    data: FeatureSplit,
    cfgs: list[TrainConfig],
    trainers: list[Any],  # bench.Trainer: its .generator (batch order) and .reporter
    weights: torch.Tensor | None = None,
    samplers: list[Sampler | None] | None = None,
    report: bool = True,
    block_rows: int = BLOCK_ROWS,
    rules: list[BatchRule] | None = None,
    callbacks: list[Callable[[int, nn.Module], torch.Tensor | None] | None] | None = None,
    dropouts: list[Any] | None = None,
    offsets: list[torch.Tensor | None] | None = None,
    anchors: list[tuple[nn.Module, float] | None] | None = None,
) -> list[nn.Module | Exception]:
    """Train heads[k] with cfgs[k] as trainers[k].fit would, all K in one computation.

    weights: per-example loss weights, [N] shared or [K, N] per configuration.
    samplers: per configuration, None for uniform batches of cfgs[k].batch_size.
    rules: per configuration, a BatchRule that weights each batch's rows from their own
    losses (then `weights` must be None, and every configuration has one batch size: a
    rule sees whole batches, so a block is exactly one batch).
    callbacks: per configuration, called with (epoch, head) before each epoch; returns
    that configuration's loss weights from then on (None: unchanged). SFR's re-weighting.
    dropouts: per configuration, a bench.FeatureDropout (or None): each batch's features
    are multiplied by its next mask, drawn per batch in batch order as Trainer.fit does.
    offsets: per configuration, a [C] logit offset (or None) added to the logits in
    training only: the loss is CE(z + b) (logit adjustment). anchors: per configuration,
    (anchor head, λ) or None: λ‖θ − θ_anchor‖² is added to every batch's loss (AFR's
    pull toward the ERM layer); the anchor is a head of the same kind.
    Returns the trained heads (in eval mode), or for a configuration that diverged or
    whose reporter raised (a pruned trial), that exception.
    """
    n_cfg = len(heads)
    if not (len(cfgs) == len(trainers) == n_cfg) or n_cfg == 0:
        raise ValueError("fit_batched needs one config and one trainer per head")
    samplers = samplers or [None] * n_cfg
    if weights is not None and weights.dim() == 2 and weights.shape[0] != n_cfg:
        raise ValueError(f"weights has {weights.shape[0]} rows for {n_cfg} configurations")
    kind = _kind_of(heads)
    x, n = data.x, len(data)
    samplers = [samplers[k] or Sampler.uniform(n, cfgs[k].batch_size) for k in range(n_cfg)]
    # examples per epoch: n, or a duplicated pool's size (JTT's and RWG's upsampling); one
    # computation trains configurations whose epochs are equally long
    lengths = {s.epoch_length for s in samplers}
    if len(lengths) > 1:
        raise ValueError(f"configurations with different epoch lengths {sorted(lengths)}")
    epoch_len = lengths.pop() if lengths else n
    if rules is not None:
        batches = {min(c.batch_size, epoch_len) for c in cfgs}
        if len(rules) != n_cfg or weights is not None or len(batches) != 1:
            raise ValueError("batch rules need one rule per configuration, no loss weights, "
                             "and one batch size for all configurations")
        block_rows = batches.pop()  # one block is one batch: the rule sees all its rows
    device = x.device
    onehot = F.one_hot(data.y, data.n_classes).to(x.dtype)
    results: list[nn.Module | Exception | None] = [None] * n_cfg
    live: dict[int, _Config] = {}
    for k in range(n_cfg):
        s = samplers[k]
        live[k] = _Config(cfgs[k].epochs, s.batch_size, s, trainers[k].generator,
                          trainers[k].reporter if report else None)
        heads[k].train()
    groups: dict[tuple, list[int]] = {}
    for k, c in live.items():
        opt = "sgd" if cfgs[k].optimizer == "sgd" else "adamw"
        groups.setdefault((opt, cfgs[k].momentum if opt == "sgd" else 0.0, c.batch), []).append(k)
    if any(extra is not None and len(extra) != n_cfg for extra in (offsets, anchors)):
        raise ValueError("offsets and anchors need one entry (or None) per configuration")
    stacks = [_Stack(kind, ks, heads, cfgs, key[2], device, offsets, anchors)
              for key, ks in groups.items()]
    blocks = _blocks(epoch_len, {s.batch for s in stacks}, block_rows)
    row_bytes = x.shape[1] * x.element_size()
    dropouts = dropouts or [None] * n_cfg
    dropping = any(d is not None and d.p > 0 for d in dropouts)
    callbacks = callbacks if callbacks and any(c is not None for c in callbacks) else None
    if callbacks is not None:  # per-configuration weights, replaced between epochs
        base = torch.ones(n, device=device) if weights is None else weights
        weights = (base.expand(n_cfg, n) if base.dim() == 1 else base).clone()
    workers = cpu_workers(device)
    # a rule sees its whole batch, masks follow batch order: no worker split of an epoch
    split_epochs = rules is None and not dropping
    buf = x.new_empty(0, x.shape[1])  # gathered rows, reused across spans and epochs

    def finish(k: int, outcome: nn.Module | Exception) -> None:
        results[k] = outcome
        del live[k]

    def write_back(stack: _Stack, i: int) -> nn.Module:
        head = heads[stack.ks[i]]
        kind.write(head, stack.rows(stack.theta, i))
        return head

    for k in [k for k, c in live.items() if c.epochs <= 0]:
        finish(k, heads[k].eval())
    epoch = 0
    while live:
        if callbacks is not None:
            for st in stacks:
                for i, k in enumerate(st.ks):
                    if callbacks[k] is not None:
                        new = callbacks[k](epoch, write_back(st, i))
                        heads[k].train()
                        if new is not None:
                            weights[k] = new
        orders = _draw_orders(live, device)
        # one batch per epoch (full-batch training): the row order only changes rounding,
        # so stream the rows in storage order instead of gathering them at random
        stream = not dropping and all(st.batch >= epoch_len for st in stacks) and all(
            c.sampler.weights is None and c.sampler.pool is None  # a permutation of all rows
            for c in live.values())
        if stream:
            ident = torch.arange(n, device=device)
            orders = {k: ident for k in orders}
        # dropout: every configuration multiplies its own rows by its own masks
        shared = len({id(o) for o in orders.values()}) == 1 and not dropping
        ords, scales = [], []
        for st in stacks:
            o = torch.stack([orders[k] for k in st.ks])
            w = weights if weights is None or weights.dim() == 1 else weights[st.ks]
            ords.append(o)
            sc = _row_scale(w, o[0] if shared and (w is None or w.dim() == 1) else o, st.batch)
            scales.append(sc.t() if shared and sc.dim() == 2 else sc)  # shared: [n, K]
        width = 1 if shared else sum(st.k for st in stacks)
        linear = isinstance(kind, _Linear)
        spans = _spans(blocks, max(1, GATHER_BYTES // (row_bytes * width)))
        need = max(g1 - g0 for g0, g1, _ in spans) * width
        if buf.shape[0] < need:
            buf = x.new_empty(need, x.shape[1])

        numpy_one = len(stacks) == 1 and stacks[0].on_numpy and stacks[0].k == 1
        rows_of = partial(_span_rows, x, None if numpy_one else onehot, spans, buf, ords,
                          shared, stream)
        # thin linear steps on one thread, each span's gather on all of them
        thin = linear and not stream and workers > 1
        if stream and workers > 1 and split_epochs:
            _stream_epoch(kind, stacks, x, onehot, scales, blocks, workers)
        elif numpy_one:  # one small head: NumPy calls
            st, k = stacks[0], stacks[0].ks[0]
            dropout = dropouts[k] if dropouts[k] is not None and dropouts[k].p > 0 else None
            inline = not stream and x.numel() * x.element_size() <= INLINE_GATHER_BYTES
            rows = None if inline else (r[0][0] for r in _gathered(rows_of, len(spans), thin))
            with one_blas_thread():
                one_head_epoch(kind.on_cpu(st), st.step, spans, rows, x,
                               None if rules else scales[0], ords[0], data.y,
                               rules[k] if rules else None, dropout, st.batch, epoch_len)
        else:
            items = _gathered(rows_of, len(spans), thin)
            for (g0, _, span), rows in zip(spans, items, strict=True):
                for start, end in span:
                    a, b = start - g0, end - g0
                    for st, o, sc, (xg, ohg) in zip(stacks, ords, scales, rows, strict=True):
                        xb, oh = xg.narrow(-2, a, b - a), ohg.narrow(-2, a, b - a)
                        if dropping:
                            xb = _dropped(st, [dropouts[k] for k in st.ks], start, end,
                                          epoch_len, xb, device)
                        if rules is not None:
                            idx = o[0, start:end] if shared else o[:, start:end]
                            s = _RuleScale([rules[k] for k in st.ks], idx, oh, shared)
                        elif shared:
                            s = _shared_scale(sc, start, end)
                        else:
                            s = (sc[:, start:end].unsqueeze(-1) if sc.dim() == 2
                                 else sc[start:end].view(1, -1, 1))
                        kind.grad(st.p, st.k, xb, oh, s, st.g, start % st.batch != 0, shared,
                                  st.offset)
                        if end % st.batch == 0 or end == epoch_len:
                            st.step()
        epoch += 1
        for st in stacks:
            drop = []
            for i, ok in enumerate(st.finite()):
                k = st.ks[i]
                if not ok:
                    finish(k, NonFiniteLoss(f"parameters became non-finite in epoch {epoch - 1}"))
                    drop.append(i)
                    continue
                cfg = live[k]
                due = epoch % report_every(cfg.epochs) == 0 or epoch == cfg.epochs
                if cfg.reporter is not None and due:  # the sequential trainer's cadence
                    head = write_back(st, i)
                    try:
                        cfg.reporter(epoch - 1, head)
                    except Exception as exc:  # e.g. optuna.TrialPruned: this one stops
                        finish(k, exc)
                        drop.append(i)
                        continue
                    head.train()
                if cfg.epochs <= epoch:
                    finish(k, write_back(st, i).eval())
                    drop.append(i)
            if drop:
                st.keep([i for i in range(st.k) if i not in drop])
        stacks = [st for st in stacks if st.k]
    return results  # type: ignore[return-value]
