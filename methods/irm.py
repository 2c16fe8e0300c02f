"""irm: IRMv1 (Arjovsky et al. 2019), environments = the training attribute values.

Per batch, for each environment e present (the rows with attribute a = e):

    R_e(w)   = mean cross-entropy of the rows of e with logits scaled by a dummy w
    P_e      = (∂R_e/∂w at w = 1)²
    loss     = mean_e R_e(1) + λ_t · mean_e P_e,   divided by λ_t when λ_t > 1

with λ_t = λ after `anneal_iters` steps (batches) and 1 before, as the reference code
does (it also rescales the loss by λ to keep the gradients in range). For softmax
cross-entropy the derivative has a closed form, ∂R_e/∂w = mean_{i∈e}(Σ_c p_ic z_ic −
z_iy), which is what `irm_penalty` computes (a test holds it to autograd through a dummy
scale, the code's way).

Why: a classifier that is simultaneously optimal in every environment (P_e = 0 for all
e) cannot lean on a feature whose relation to the label differs between them.

Why the reference engine: the penalty is a function of a batch's logits that is not a
weighted cross-entropy; it goes through the `loss` hook.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

import bench


def scale_gradient(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """∂/∂w mean_i CE(w·z_i, y_i) at w = 1: mean_i (Σ_c softmax(z_i)_c z_ic − z_iy)."""
    expected = (logits.softmax(dim=1) * logits).sum(dim=1)
    return (expected - logits.gather(1, y[:, None]).squeeze(1)).mean()


def irm_penalty(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """IRMv1's penalty for one environment: the squared gradient of its risk with respect
    to a dummy scale on the logits, at scale 1."""
    return scale_gradient(logits, y) ** 2


class IRMLoss:
    """The `loss` hook: mean environment risk plus the annealed, rescaled penalty."""

    def __init__(self, env: torch.Tensor, penalty_weight: float, anneal_iters: int) -> None:
        self.env = env
        self.penalty_weight = penalty_weight
        self.anneal_iters = anneal_iters
        self.step = 0
        self.penalties: list[float] = []  # mean penalty per batch (inspected by the tests)

    def __call__(self, logits: torch.Tensor, y: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        env = self.env[idx]
        nll, penalty = [], []
        for e in torch.unique(env).tolist():
            rows = env == e
            nll.append(F.cross_entropy(logits[rows], y[rows]))
            penalty.append(irm_penalty(logits[rows], y[rows]))
        mean_nll, mean_penalty = torch.stack(nll).mean(), torch.stack(penalty).mean()
        weight = self.penalty_weight if self.step >= self.anneal_iters else 1.0
        self.step += 1
        self.penalties.append(float(mean_penalty.detach()))
        loss = mean_nll + weight * mean_penalty
        return loss / weight if weight > 1.0 else loss


@bench.method
class IRM(bench.Method):
    name = "irm"
    description = "IRMv1: per-environment risks plus the invariance penalty (envs = attribute)"
    group_labels = frozenset({"train"})
    family = "robust optimisation"
    paper = "Arjovsky et al. 2019, Invariant Risk Minimization (arXiv:1907.02893)"
    reference_engine = "the IRMv1 penalty (a squared gradient of each environment's risk)"

    def search_space(self) -> dict:
        space = bench.training_space()
        space["penalty_weight"] = bench.Float(1e-1, 1e6, 1e4, log=True)
        space["anneal_iters"] = bench.Int(0, 1000, 100)
        return space

    def train(self, train, val, ctx):
        p = ctx.params
        loss = IRMLoss(train.a, p["penalty_weight"], p["anneal_iters"])
        head = yield bench.Stage(ctx.make_head(), train, bench.TrainConfig.from_params(p),
                                 bench.Hooks(loss=loss))
        return bench.Predictor(head, info={"penalties": torch.tensor(loss.penalties)})
