"""afr: Automatic Feature Reweighting (Qiu et al., ICML 2023).

The training split is divided at random: a share `heldout` (the reference code's 20%)
is held out for reweighting, the rest trains an ERM linear head (stage 1). On the
held-out part, with p_i = p_ERM(y_i | x_i) from the frozen ERM head,
    w_i = β_{y_i} · exp(−γ p_i) / Z,   β_y = 1 / n_y  (class balancing),  Σ w = 1,
and stage 2 retrains the last layer, initialised from the ERM layer θ₀, on
    Σ_i w_i CE_i + λ ‖θ − θ₀‖²   (weight and bias),
full batch, plain SGD (no momentum, no weight decay), as the reference code does
(train_embeddings.py: get_exp_weights, rebalance_weights, take_step). Examples the ERM
head fits poorly — the minority groups, without group labels — get exponentially more
weight; the pull toward θ₀ keeps what ERM learned (Hooks.anchor). `class_balance=total`
(an option) instead scales each class's weights to the same total. Group labels of
validation are used only for selection.
"""

from __future__ import annotations

import copy

import torch

import bench


def afr_weights(p_true: torch.Tensor, y: torch.Tensor, n_classes: int, gamma: float,
                balance: str = "count") -> torch.Tensor:
    """exp(−γ p_i), class-balanced (`count`: × 1/n_y, the paper; `total`: every class's
    weights sum to the same), normalised to sum 1."""
    w = torch.exp(-gamma * p_true.to(torch.float32))
    counts = torch.bincount(y, minlength=n_classes).to(w.dtype)
    if balance == "count":
        w = w / counts.clamp_min(1)[y]
    elif balance == "total":
        totals = torch.zeros(n_classes, dtype=w.dtype, device=w.device).index_add_(0, y, w)
        w = w / totals.clamp_min(1e-30)[y]
    else:
        raise bench.UserError(f"afr: class_balance={balance!r}: expected 'count' or 'total'")
    return w / w.sum()


@bench.method
class AFR(bench.Method):
    name = "afr"
    description = "Automatic Feature Reweighting: retrain the ERM layer on held-out data, " \
                  "up-weighting what ERM fits poorly"
    group_labels = frozenset()
    family = "last-layer retraining"
    paper = ("Qiu et al. 2023, Simple and Fast Group Robustness by Automatic Feature "
             "Reweighting (ICML)")

    def __init__(self) -> None:
        self._splits: dict[tuple, tuple] = {}

    def search_space(self) -> dict:
        return {
            # the reference code's Waterbirds command: γ = 14, λ = 0.2 (CelebA: 1.8, 0)
            "gamma": bench.Float(0.5, 20.0, 14.0, log=True),
            "lambda": bench.Float(0.0, 1.0, 0.2),
            # stage 2: full batch, SGD without momentum or weight decay, constant lr
            "lr": bench.Float(1e-3, 1e-1, 0.02, log=True),
            "epochs": bench.Int(50, 1000, 500, log=True),
            "heldout": bench.Float(0.05, 0.5, 0.2, tune=False),
            "class_balance": bench.Choice(("count", "total"), "count", tune=False),
            # stage 1 (ERM on the rest): the `erm` defaults
            "erm_epochs": bench.Int(1, 100, 20, tune=False),
            "erm_lr": bench.Float(1e-4, 1e-1, 1e-2, log=True, tune=False),
        }

    def split(self, train: bench.FeatureSplit, share: float, generator: torch.Generator):
        """(ERM part, held-out part, held-out indices): a random division; configurations
        that draw the same division share one pair of splits, so they train together."""
        n = len(train)
        n_out = min(n - 1, max(1, round(share * n)))
        perm = torch.randperm(n, generator=generator).to(train.y.device)
        key = (id(train), bytes(perm.cpu().numpy()), n_out)
        if key not in self._splits:
            out = perm[n - n_out:].sort().values
            keep = perm[: n - n_out].sort().values
            self._splits[key] = (train, train.subset(keep), train.subset(out), out)
        return self._splits[key][1:]

    def train(self, train, val, ctx):
        p = ctx.params
        erm_part, rw_part, held = self.split(train, float(p["heldout"]), ctx.generator)
        erm_cfg = bench.TrainConfig(epochs=int(p["erm_epochs"]), lr=float(p["erm_lr"]))
        # AFR retrains the network's last layer: a linear classifier
        erm = yield bench.Stage(ctx.make_head("linear"), erm_part, erm_cfg, report=False)
        with torch.no_grad():
            probs = erm.eval()(rw_part.x).softmax(-1)
        p_true = probs.gather(1, rw_part.y[:, None]).squeeze(1)
        w = afr_weights(p_true, rw_part.y, train.n_classes, float(p["gamma"]),
                        p.get("class_balance", "count"))
        head = copy.deepcopy(erm)
        cfg = bench.TrainConfig(epochs=int(p["epochs"]), lr=float(p["lr"]), weight_decay=0.0,
                                batch_size=len(rw_part), optimizer="sgd", momentum=0.0)
        hooks = bench.Hooks(weights=w, anchor=erm, anchor_strength=float(p["lambda"]))
        head = yield bench.Stage(head, rw_part, cfg, hooks)
        return bench.Predictor(head, info={"weights": w, "heldout": held, "p_true": p_true,
                                           "erm": erm})
