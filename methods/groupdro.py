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

import bench


class GroupDRORule(bench.BatchRule):
    """Group DRO's online q as a batch rule: weights q_g / n_g(batch) for a batch's rows,
    so Σ_i s_i·CE_i = Σ_g q_g ℓ_g; q persists across batches and epochs."""

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

    def scale(self, ce: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        gb = self.g[idx]
        counts = torch.bincount(gb, minlength=self.n_groups).to(ce.dtype)
        sums = torch.zeros(self.n_groups, dtype=ce.dtype, device=ce.device).index_add_(0, gb, ce)
        group_loss = sums / counts.clamp_min(1)
        # the exponentiated update, kept in log space so it never overflows
        step = self.eta * (group_loss + self.adjust)
        self.log_q = torch.where(counts > 0, self.log_q + step, self.log_q).log_softmax(0)
        return (self.log_q.exp() / counts.clamp_min(1))[gb]


@bench.method
class GroupDRO(bench.Method):
    name = "groupdro"
    description = "Group DRO: online minimax over training groups (Sagawa et al. 2020)"
    group_labels = frozenset({"train"})
    family = "robust optimisation"
    paper = "Sagawa et al. 2020, Distributionally Robust Neural Networks for Group Shifts"

    def search_space(self) -> dict:
        space = bench.training_space(weight_decay=1e-3)
        space["weight_decay"] = bench.Float(1e-5, 1.0, 1e-3, log=True)
        space["eta"] = bench.Float(1e-3, 1.0, 0.05, log=True)
        space["adjustment"] = bench.Float(0.0, 5.0, 0.0)
        space["sampling"] = bench.Choice(("uniform", "group"), "uniform", tune=False)
        return space

    def train(self, train, val, ctx):
        p = ctx.params
        head = ctx.make_head()
        rule = GroupDRORule(train.g, train.n_groups, p["eta"], p["adjustment"])
        cfg = bench.TrainConfig.from_params(p)
        sampler = None
        if p.get("sampling", "uniform") == "group":
            sampler = bench.Sampler.group_balanced(train.g, train.n_groups, cfg.batch_size)
        head = yield bench.Stage(head, train, cfg, bench.Hooks(batch_rule=rule, sampler=sampler))
        return bench.Predictor(head, info={"q": rule.q.cpu()})
