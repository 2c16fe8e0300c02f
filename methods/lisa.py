"""lisa: LISA, selective mixup on features (Yao et al. 2022).

Per batch, with probability p_sel the batch is mixed *intra-label* (each row i with a
partner j of the same label and another attribute), else *intra-attribute* (a partner
of the same attribute and another label). Per row, λ ~ Beta(α, α):

    x̃ = λ·x_i + (1 − λ)·x_j,   ỹ = λ·onehot(y_i) + (1 − λ)·onehot(y_j)
    loss = mean_i −Σ_c ỹ_c log softmax(head(x̃))_c

Why: intra-label pairs interpolate across the spurious attribute at a fixed label, and
intra-attribute pairs interpolate the label at a fixed attribute, so along both kinds of
segment only the core feature predicts the (soft) label.

As in the authors' code, a partner is drawn from the same batch and batches are
group-balanced (`sampling=group`: the code draws each batch from one loader per group);
`sampling=uniform` draws plain batches. A row with no eligible partner in its batch is
kept unmixed (the code's group loaders always provide one). With more than two classes
or attributes the partner is uniform over every eligible row (SubpopBench picks one
random pair of attribute values, or of labels, per batch). `pairing=random` is plain
mixup (partners uniform over the batch, attributes ignored): the ablation.

Why the reference engine: the head is trained on mixed inputs with soft targets, which
the weighted cross-entropy of the analytic engine cannot express; the `loss` hook runs the
head on the mixed batch (the plain batch's logits are not used).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

import bench


def partners(y: torch.Tensor, a: torch.Tensor, mode: str,
             generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """For each row of a batch, a partner row index drawn uniformly among the eligible
    rows, and whether one existed. mode: "label" (same y, other a), "attribute" (same a,
    other y) or "random" (any other row)."""
    same_y = y[:, None] == y[None, :]
    same_a = a[:, None] == a[None, :]
    if mode == "label":
        eligible = same_y & ~same_a
    elif mode == "attribute":
        eligible = same_a & ~same_y
    else:
        eligible = ~torch.eye(len(y), dtype=torch.bool, device=y.device)
    noise = torch.rand(eligible.shape, generator=generator, device="cpu").to(y.device)
    score = torch.where(eligible, noise, torch.full_like(noise, -1.0))
    j = score.argmax(dim=1)
    found = eligible.any(dim=1)
    return torch.where(found, j, torch.arange(len(y), device=y.device)), found


class LisaLoss:
    """The `loss` hook: mixes the batch as LISA does and scores the head on it."""

    def __init__(self, head: nn.Module, x: torch.Tensor, a: torch.Tensor, n_classes: int,
                 p_sel: float, alpha: float, pairing: str, seed: int) -> None:
        self.head, self.x, self.a = head, x, a
        self.n_classes = n_classes
        self.p_sel, self.alpha, self.pairing = p_sel, alpha, pairing
        self.gen = torch.Generator().manual_seed(seed)
        self.rng = np.random.default_rng(seed)
        self.modes: list[str] = []  # which mix each batch got (inspected by the tests)

    def __call__(self, logits: torch.Tensor, y: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        if self.pairing == "random":
            mode = "random"
        else:
            mode = "label" if self.rng.random() < self.p_sel else "attribute"
        self.modes.append(mode)
        j, found = partners(y, self.a[idx], mode, self.gen)
        lam = torch.as_tensor(self.rng.beta(self.alpha, self.alpha, len(y)),
                              dtype=torch.float32, device=y.device)
        lam = torch.where(found, lam, torch.ones_like(lam))[:, None]
        xb = self.x[idx]
        mixed = lam * xb + (1 - lam) * xb[j]
        onehot = F.one_hot(y, self.n_classes).to(torch.float32)
        target = lam * onehot + (1 - lam) * onehot[j]
        return -(target * F.log_softmax(self.head(mixed), dim=1)).sum(dim=1).mean()


@bench.method
class LISA(bench.Method):
    name = "lisa"
    description = "LISA: selective mixup within a label across attributes, or vice versa"
    group_labels = frozenset({"train"})
    family = "robust optimisation"
    paper = (
        "Yao et al. 2022, Improving Out-of-Distribution Robustness via Selective "
        "Augmentation (ICML)"
    )
    reference_engine = "mixed inputs with soft (mixed one-hot) targets, through a loss hook"

    def search_space(self) -> dict:
        space = bench.training_space()
        space["p_sel"] = bench.Float(0.0, 1.0, 0.5)
        space["mix_alpha"] = bench.Float(0.1, 10.0, 2.0, log=True)
        space["sampling"] = bench.Choice(("group", "uniform"), "group", tune=False)
        space["pairing"] = bench.Choice(("selective", "random"), "selective", tune=False)
        return space

    def train(self, train, val, ctx):
        p = ctx.params
        head = ctx.make_head()
        cfg = bench.TrainConfig.from_params(p)
        seed = int(torch.randint(0, 2**62, (1,), generator=ctx.generator))
        loss = LisaLoss(head, train.x, train.a, train.n_classes, p["p_sel"], p["mix_alpha"],
                        p["pairing"], seed)
        sampler = None
        if p["sampling"] == "group":
            sampler = bench.Sampler.group_balanced(train.g, train.n_groups, cfg.batch_size)
        head = yield bench.Stage(head, train, cfg, bench.Hooks(loss=loss, sampler=sampler))
        return bench.Predictor(head, info={"modes": loss.modes})
