"""groupdro: online group DRO (Sagawa et al. 2020), q persists across batches.

Per batch: ℓ_g = mean cross-entropy of the batch's examples in group g;
q_g ← q_g · exp(η · (ℓ_g + C/√n_g)) for the groups present in the batch; q ← q / Σq;
loss = Σ_g q_g ℓ_g. Groups absent from a batch keep their q (our choice; the reference
code adds the bare adjustment C/√n_g for them too, which only matters when C > 0).

Batches are uniform by default; `sampling=group` draws group-balanced batches (with
replacement), as the reference code's commands do (`--reweight_groups`).
"""

from __future__ import annotations

import math

import torch
from torch.nn import functional as F

import bench


class GroupDROLoss:
    """The loss hook, holding q across batches and epochs."""

    def __init__(self, g: torch.Tensor, n_groups: int, eta: float, adjustment: float) -> None:
        self.g = g
        self.n_groups = n_groups
        self.eta = eta
        counts = torch.bincount(g, minlength=n_groups).to(torch.float32)
        self.adjust = adjustment / counts.clamp_min(1).sqrt()
        self.log_q = torch.full((n_groups,), -math.log(n_groups), device=g.device)

    @property
    def q(self) -> torch.Tensor:
        return self.log_q.softmax(0)

    def __call__(self, logits: torch.Tensor, y: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        ce = F.cross_entropy(logits, y, reduction="none")
        gb = self.g[idx]
        onehot = F.one_hot(gb, self.n_groups).to(ce.dtype)  # [B, G]
        counts = onehot.sum(0)
        group_loss = (onehot * ce[:, None]).sum(0) / counts.clamp_min(1)
        present = counts > 0
        with torch.no_grad():  # the exponentiated update, kept in log space so it never overflows
            step = self.eta * (group_loss.detach() + self.adjust)
            self.log_q = torch.where(present, self.log_q + step, self.log_q)
            self.log_q = self.log_q - self.log_q.logsumexp(0)
        return (self.q * group_loss).sum()


@bench.method
class GroupDRO(bench.Method):
    name = "groupdro"
    description = "Group DRO: online minimax over training groups (Sagawa et al. 2020)"
    group_labels = frozenset({"train"})
    paper = "Sagawa et al. 2020, Distributionally Robust Neural Networks for Group Shifts"

    def search_space(self) -> dict:
        space = bench.training_space(weight_decay=1e-3)
        space["weight_decay"] = bench.Float(1e-5, 1.0, 1e-3, log=True)
        space["eta"] = bench.Float(1e-3, 1.0, 0.05, log=True)
        space["adjustment"] = bench.Float(0.0, 5.0, 0.0)
        space["sampling"] = bench.Choice(("uniform", "group"), "uniform", tune=False)
        return space

    def fit(self, train, val, ctx):
        p = ctx.params
        head = ctx.make_head()
        loss = GroupDROLoss(train.g, train.n_groups, p["eta"], p["adjustment"])
        cfg = bench.TrainConfig.from_params(p)
        sampler = None
        if p.get("sampling", "uniform") == "group":
            sampler = bench.Sampler.group_balanced(train.g, train.n_groups, cfg.batch_size)
        ctx.trainer.fit(head, train, cfg, bench.Hooks(loss=loss, sampler=sampler))
        return bench.Predictor(head, info={"q": loss.q.cpu()})
