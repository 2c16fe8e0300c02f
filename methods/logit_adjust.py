"""logit-adjust: logit adjustment by class priors (Menon et al., ICLR 2021).

π_c is class c's share of the training labels. `form=loss` (default) trains with the
logit-adjusted loss CE(z + τ·log π, y) — every logit z_c shifted by τ·log π_c, the
engines' Hooks.logit_offset — and predicts with the plain logits z: rare classes must
win by a margin in training, so their region grows at prediction. `form=posthoc`
trains plain ERM and predicts with z − τ·log π. Both are Fisher-consistent for the
balanced error at τ = 1 (the paper's default). Labels only: no group labels.
"""

from __future__ import annotations

import torch
from torch import nn

import bench


def log_prior(y: torch.Tensor, n_classes: int) -> torch.Tensor:
    """log π_c over the training labels (a class absent from training gets the log of
    half an example's share, so its offset stays finite)."""
    counts = torch.bincount(y, minlength=n_classes).to(torch.float32)
    return (counts.clamp_min(0.5) / counts.sum()).log()


class Shifted(nn.Module):
    """A trained head whose logits are shifted by a fixed vector (the post-hoc form)."""

    def __init__(self, head: nn.Module, shift: torch.Tensor) -> None:
        super().__init__()
        self.head = head
        self.register_buffer("shift", shift.detach().clone())

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.head(h) + self.shift


@bench.method
class LogitAdjust(bench.Method):
    name = "logit-adjust"
    description = "Logit adjustment: CE on logits shifted by tau * log class prior"
    group_labels = frozenset()
    family = "reweighting"
    paper = "Menon et al. 2021, Long-tail learning via logit adjustment (ICLR)"

    def search_space(self) -> dict:
        space = bench.training_space()
        space["tau"] = bench.Float(0.0, 3.0, 1.0)
        space["form"] = bench.Choice(("loss", "posthoc"), "loss", tune=False)
        return space

    def train(self, train, val, ctx):
        p = ctx.params
        cfg = bench.TrainConfig.from_params(p)
        offset = float(p["tau"]) * log_prior(train.y, train.n_classes).to(train.x.device)
        if p.get("form", "loss") == "posthoc":
            head = yield bench.Stage(ctx.make_head(), train, cfg)
            return bench.Predictor(Shifted(head, -offset).eval(), info={"offset": offset})
        head = yield bench.Stage(ctx.make_head(), train, cfg,
                                 bench.Hooks(logit_offset=offset))
        return bench.Predictor(head, info={"offset": offset})
