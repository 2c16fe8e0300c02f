"""cvardro: CVaR distributionally robust optimisation at level α (Levy et al. 2020).

Per batch of B losses ℓ_1 ≥ … ≥ ℓ_B (sorted), the loss is the conditional value at
risk CVaR_α = sup over q ≤ 1/(αB), Σq = 1 of Σ q_i ℓ_i: weight 1/(αB) on the
⌊αB⌋ largest losses and the remaining mass 1 − ⌊αB⌋/(αB) on the next one. When αB is
an integer k this is the mean of the k largest losses. The weights are the best response
to the batch's losses, held fixed in the gradient (the reference code computes them
without gradient), so the rule is a bench.BatchRule and trains on the analytic engine.
No group labels: the worst-α fraction of each batch stands in for the unknown minority.
α = 1 is ERM.
"""

from __future__ import annotations

import math

import torch

import bench


def cvar_weights(ce: torch.Tensor, alpha: float) -> torch.Tensor:
    """CVaR_α's best-response weights over one batch's losses (they sum to 1); the
    largest ⌊αB⌋ losses get 1/(αB) each, the next one the rest (fast-dro's cutoff and
    surplus; ties are broken by torch.sort)."""
    m = ce.numel()
    size = alpha * m
    cutoff = min(m, int(math.floor(size + 1e-9)))
    w = torch.zeros_like(ce)
    order = torch.argsort(ce, descending=True)
    if cutoff >= m:
        return w.fill_(1.0 / m)
    w[order[:cutoff]] = 1.0 / size
    w[order[cutoff]] = max(0.0, 1.0 - cutoff / size)  # αB a hair below an integer: 0
    return w


class CVaRRule(bench.BatchRule):
    """CVaR_α over each batch's own losses (stateless)."""

    def __init__(self, alpha: float) -> None:
        if not 0.0 < alpha <= 1.0:
            raise bench.UserError(f"cvardro: alpha={alpha} must be in (0, 1]")
        self.alpha = float(alpha)

    def scale(self, ce: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        return cvar_weights(ce, self.alpha)


@bench.method
class CVaRDRO(bench.Method):
    name = "cvardro"
    description = "CVaR DRO: the mean of each batch's worst α fraction of losses"
    group_labels = frozenset()
    family = "robust optimisation"
    paper = "Levy et al. 2020, Large-Scale Methods for Distributionally Robust Optimization"

    def search_space(self) -> dict:
        space = bench.training_space()
        # SubpopBench: default 0.1, random 10^U(-2, 0)
        space["alpha"] = bench.Float(0.01, 1.0, 0.1, log=True)
        return space

    def train(self, train, val, ctx):
        cfg = bench.TrainConfig.from_params(ctx.params)
        hooks = bench.Hooks(batch_rule=CVaRRule(ctx.params["alpha"]))
        head = yield bench.Stage(ctx.make_head(), train, cfg, hooks)
        return bench.Predictor(head)
