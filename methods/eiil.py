"""eiil: Environment Inference for Invariant Learning (Creager et al. 2021), then Group DRO.

Step 1, environment inference (EI), from an ERM reference head with logits z (fixed):
a soft assignment q_i = σ(w_i) of each training example to environment A (1 − q_i: B)
maximises the IRMv1 violation of the reference head,

    max_w  ½ [ (∂/∂s mean_i q_i·CE(s·z_i, y_i))² + (∂/∂s mean_i (1 − q_i)·CE(s·z_i, y_i))² ]

at s = 1, where ∂/∂s CE(s·z_i, y_i) = Σ_c p_ic z_ic − z_iy (the means run over all n
examples, as in the code). As the reference code does: w₀ ~ N(0, 1), Adam at lr 1e-3 for
10 000 full-batch steps, then the hard split q_i > ½.

Step 2, Group DRO (bench.GroupDRORule, as `groupdro`) over the inferred groups
(label × inferred environment), which is what the paper runs on Waterbirds.

Why: the reference head's scale gradient is negative where it is confidently right and
positive where it is wrong; the split that makes it most non-invariant separates the
examples the shortcut serves from those it fails, which is what a group label would.
No group labels are read.
"""

from __future__ import annotations

import dataclasses

import torch

import bench


def scale_gradients(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """∂/∂s CE(s·z_i, y_i) at s = 1 for every example: Σ_c p_ic z_ic − z_iy."""
    expected = (logits.softmax(dim=1) * logits).sum(dim=1)
    return expected - logits.gather(1, y[:, None]).squeeze(1)


def violation_gradient(w: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    """∂/∂w of −½[(mean q·g)² + (mean (1 − q)·g)²], q = σ(w), g the scale gradients:
    −(m_A − m_B)·g_i·q_i(1 − q_i)/n (a test holds it to autograd)."""
    q = w.sigmoid()
    m_a = (q * grad).mean()
    m_b = grad.mean() - m_a
    return (m_b - m_a) / len(w) * grad * q * (1 - q)


def infer_environments(logits: torch.Tensor, y: torch.Tensor, steps: int, lr: float,
                       generator: torch.Generator) -> torch.Tensor:
    """EIIL's soft assignment q ∈ (0, 1)ⁿ to environment A (see the module docstring):
    torch.optim.Adam's update (β = 0.9, 0.999, ε = 1e-8) written out, with the analytic
    gradient, because 10 000 autograd steps cost seconds per fit on a CPU. The tests
    replace this function (random or single environment) to ablate it."""
    grad = scale_gradients(logits.detach().double(), y)
    w = torch.randn(len(y), generator=generator, device="cpu", dtype=torch.float64)
    w = w.to(grad.device)
    m, v = torch.zeros_like(w), torch.zeros_like(w)
    b1, b2, eps = 0.9, 0.999, 1e-8
    for t in range(1, steps + 1):
        g = violation_gradient(w, grad)
        m.mul_(b1).add_(g, alpha=1 - b1)
        v.mul_(b2).addcmul_(g, g, value=1 - b2)
        denom = (v / (1 - b2**t)).sqrt_().add_(eps)
        w.addcdiv_(m, denom, value=-lr / (1 - b1**t))
    return w.sigmoid().to(torch.float32)


@bench.method
class EIIL(bench.Method):
    name = "eiil"
    description = "EIIL: infer environments that break an ERM head's invariance, then Group DRO"
    group_labels = frozenset()
    family = "group inference"
    paper = "Creager et al. 2021, Environment Inference for Invariant Learning (ICML)"

    def search_space(self) -> dict:
        space = bench.GroupDRORule.space()  # Group DRO's own, then the inference's
        space["ref_epochs"] = bench.Int(1, 40, 20)
        space["ei_steps"] = bench.Int(100, 20000, 10000, log=True, tune=False)
        space["ei_lr"] = bench.Float(1e-4, 1e-1, 1e-3, log=True, tune=False)
        # the reference head's own optimiser settings; None / "same": the run's erm
        # defaults (bench.TrainConfig), so every configuration shares one reference
        space["ref_lr"] = bench.Float(1e-5, 1e-1, None, log=True, tune=False)
        space["ref_weight_decay"] = bench.Float(1e-6, 1.0, None, log=True, tune=False)
        return space

    @staticmethod
    def reference_config(p: dict) -> bench.TrainConfig:
        """The reference ERM head: ERM's default settings for `ref_epochs`, unless set."""
        own = {"lr": p.get("ref_lr"), "weight_decay": p.get("ref_weight_decay")}
        own = {k: v for k, v in own.items() if v is not None}
        return dataclasses.replace(bench.TrainConfig(), epochs=p["ref_epochs"], **own)

    def train(self, train, val, ctx):
        p = ctx.params
        ref = ctx.references.erm(ctx.seed, self.reference_config(p))
        soft = infer_environments(ref.logits(train.x), train.y, p["ei_steps"], p["ei_lr"],
                                  ctx.generator)
        env = (soft > 0.5).long()
        groups = train.y * 2 + env
        n_groups = 2 * train.n_classes
        rule = bench.GroupDRORule(groups, n_groups, p["eta"], p["adjustment"])
        cfg = bench.TrainConfig.from_params(p)
        sampler = None
        if p["sampling"] == "group":
            sampler = bench.Sampler.group_balanced(groups, n_groups, cfg.batch_size)
        head = yield bench.Stage(ctx.make_head(), train, cfg,
                                 bench.Hooks(batch_rule=rule, sampler=sampler))
        return bench.Predictor(head, info={"env": env.cpu(), "soft_env": soft.cpu(),
                                           "q": rule.q.cpu()})
