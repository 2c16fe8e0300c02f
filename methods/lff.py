"""lff: Learning from Failure (Nam et al. 2020), a biased and a debiased head in lockstep.

Per batch, with CE_b, CE_d the per-example cross-entropies of the biased and the
debiased head:

    biased head:    generalised cross-entropy GCE = (1 − p_y^q)/q, trained through its
                    gradient p_y^q · ∇CE (the reference code's form: CE · q · p_y^q, the
                    factor detached), so the head fits the easy (bias-aligned) examples
                    and gives up on the hard ones;
    EMA:            L_b[i] ← α·L_b[i] + (1 − α)·CE_b[i] (the first visit sets L_b[i] =
                    CE_b[i]), the same for L_d; α = 0.7 as in the code;
    normalisation:  L_b[i] / max_{j: y_j = y_i} L_b[j], the same for L_d (class-wise, as
                    in the code);
    weight:         W_i = L_b[i] / (L_b[i] + L_d[i] + 1e-8), detached;
    loss:           mean_i GCE_i + mean_i W_i · CE_d[i].

Why: what the GCE head finds hard is what the shortcut gets wrong; its relative
difficulty up-weights those examples for the debiased head, with no group labels.

Why one stage on the reference engine: W needs both heads' current losses at every step,
so the heads cannot train as two stages. The stage trains one module holding both heads
(training-mode forward: their logits side by side; eval mode: the debiased head's, which
is what the pruner and the predictor see) with a `loss` hook that splits them. One
AdamW over both heads equals the code's two optimisers: the heads share no parameters.
The GCE half alone would be a batch rule (scale_i = q·exp(−q·CE_i)/B); the coupling is
what needs the loss hook.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

import bench


class TwoHeads(nn.Module):
    """The biased and the debiased head trained as one module. In training mode the
    forward returns both heads' logits concatenated ([B, 2C]) for the LfF loss; in eval
    mode only the debiased head's, so validation and prediction see the debiased head."""

    def __init__(self, biased: nn.Module, debiased: nn.Module) -> None:
        super().__init__()
        self.biased = biased
        self.debiased = debiased

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        d = self.debiased(h)
        if not self.training:
            return d
        return torch.cat([self.biased(h), d], dim=1)


def relative_difficulty(loss_b: torch.Tensor, loss_d: torch.Tensor) -> torch.Tensor:
    """LfF's weight W = L_b / (L_b + L_d): near 1 where the biased head fails and the
    debiased one does not (the mechanism; the tests replace it with ones to ablate it)."""
    return loss_b / (loss_b + loss_d + 1e-8)


class LfFLoss:
    """The `loss` hook: GCE for the biased half, W-weighted CE for the debiased half, with
    the per-example loss EMAs kept over the whole training split."""

    def __init__(self, y: torch.Tensor, n_classes: int, q: float, alpha: float,
                 normalise: str) -> None:
        self.y = y
        self.n_classes = n_classes
        self.q = q
        self.alpha = alpha
        self.normalise = normalise
        n = len(y)
        self.ema_b = torch.zeros(n, device=y.device)
        self.ema_d = torch.zeros(n, device=y.device)
        self.seen = torch.zeros(n, device=y.device)

    def _update(self, ema: torch.Tensor, ce: torch.Tensor, idx: torch.Tensor) -> None:
        # the code's EMA: the first visit takes the loss as it is
        ema[idx] = self.alpha * ema[idx] + (1 - self.alpha * self.seen[idx]) * ce

    def _normalised(self, ema: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        if self.normalise == "none":
            return ema[idx]
        top = torch.zeros(self.n_classes, device=ema.device).scatter_reduce(
            0, self.y, ema, reduce="amax", include_self=True)
        return ema[idx] / top[self.y[idx]].clamp_min(1e-12)

    def weights(self, idx: torch.Tensor) -> torch.Tensor:
        """W for the examples `idx` from the current EMAs."""
        return relative_difficulty(self._normalised(self.ema_b, idx),
                                   self._normalised(self.ema_d, idx))

    def __call__(self, logits: torch.Tensor, y: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        c = self.n_classes
        logit_b, logit_d = logits[:, :c], logits[:, c:]
        ce_b = F.cross_entropy(logit_b, y, reduction="none")
        ce_d = F.cross_entropy(logit_d, y, reduction="none")
        with torch.no_grad():
            self._update(self.ema_b, ce_b.detach(), idx)
            self._update(self.ema_d, ce_d.detach(), idx)
            self.seen[idx] = 1.0
            w = self.weights(idx)
            gce_factor = self.q * torch.exp(-self.q * ce_b.detach())  # q · p_y^q
        return (gce_factor * ce_b).mean() + (w * ce_d).mean()


@bench.method
class LfF(bench.Method):
    name = "lff"
    description = "Learning from Failure: a GCE-trained biased head re-weights a debiased one"
    group_labels = frozenset()
    family = "group inference"
    paper = (
        "Nam et al. 2020, Learning from Failure: Training Debiased Classifier from "
        "Biased Classifier (NeurIPS)"
    )
    reference_engine = (
        "two heads trained in lockstep: the debiased head's weights come from both heads' "
        "current losses (a custom two-head module and a loss hook)"
    )

    def search_space(self) -> dict:
        space = bench.training_space()
        space["q"] = bench.Float(0.05, 0.95, 0.7)
        space["ema_alpha"] = bench.Float(0.0, 0.99, 0.7, tune=False)
        space["normalise"] = bench.Choice(("class_max", "none"), "class_max", tune=False)
        return space

    def train(self, train, val, ctx):
        p = ctx.params
        # linear heads (the paper's classifiers): GCE on a prompt head's 100·cos logits
        # saturates p_y and the weights invert the classes (synthetic: WGA 12 vs 67)
        biased, debiased = ctx.make_head("linear"), ctx.make_head("linear")
        loss = LfFLoss(train.y, train.n_classes, p["q"], p["ema_alpha"], p["normalise"])
        cfg = bench.TrainConfig.from_params(p)
        module = yield bench.Stage(TwoHeads(biased, debiased), train, cfg,
                                   bench.Hooks(loss=loss))
        every = torch.arange(len(train), device=train.y.device)
        return bench.Predictor(module.debiased, info={
            "weights": loss.weights(every).cpu(), "biased": bench.Predictor(module.biased)})
