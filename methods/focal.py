"""focal: focal loss FL = (1 − p_y)^γ · CE (Lin et al. 2017), mean over the batch.

With p = p_y = exp(−CE), FL depends on the logits only through p, so its gradient is
the cross-entropy gradient times a per-example factor:
    ∇_z FL = w · ∇_z CE,   w = (1 − p)^γ − γ (1 − p)^(γ−1) · p · log p.
The batch loss's gradient is Σ_i (w_i / B) ∇CE_i: a bench.BatchRule with scale
w_i / B (w detached), so focal trains on the analytic engine and its gradient is the
true focal gradient, not the "(1 − p)^γ-weighted CE" shortcut (which drops the second
term). γ = 0 is ERM. No class-balancing α (the detection paper's α_t = 0.25 weighs
foreground against background; SubpopBench's Focal has none either).
"""

from __future__ import annotations

import torch

import bench


def focal_factor(ce: torch.Tensor, gamma: float) -> torch.Tensor:
    """w = (1 − p)^γ − γ (1 − p)^(γ−1) p log p, with p = exp(−CE): dFL/dz = w · dCE/dz.
    Where p rounds to 1 the second term's limit is 0 (for every γ ≥ 0)."""
    p = torch.exp(-ce)
    q = -torch.expm1(-ce)  # 1 − p, accurate for confident examples
    safe = q > 0
    q_safe = torch.where(safe, q, torch.ones_like(q))
    second = gamma * q_safe.pow(gamma - 1.0) * p * ce  # −γ(1−p)^(γ−1) p log p, log p = −ce
    return q.pow(gamma) + torch.where(safe, second, torch.zeros_like(second))


class FocalRule(bench.BatchRule):
    """Mean focal loss as per-example weights on the cross-entropy gradient."""

    def __init__(self, gamma: float) -> None:
        if gamma < 0:
            raise bench.UserError(f"focal: gamma={gamma} must be >= 0")
        self.gamma = float(gamma)

    def scale(self, ce: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        return focal_factor(ce, self.gamma) / ce.numel()


@bench.method
class Focal(bench.Method):
    name = "focal"
    description = "Focal loss: down-weights well-classified examples by (1 - p_y)^gamma"
    group_labels = frozenset()
    family = "reweighting"
    paper = "Lin et al. 2017, Focal Loss for Dense Object Detection"

    def search_space(self) -> dict:
        space = bench.training_space()
        # the paper's γ = 2; SubpopBench searches 0.5·10^U(0, 1)
        space["gamma"] = bench.Float(0.5, 5.0, 2.0, log=True)
        return space

    def train(self, train, val, ctx):
        cfg = bench.TrainConfig.from_params(ctx.params)
        hooks = bench.Hooks(batch_rule=FocalRule(ctx.params["gamma"]))
        head = yield bench.Stage(ctx.make_head(), train, cfg, hooks)
        return bench.Predictor(head)
