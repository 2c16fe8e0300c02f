"""sfr: Shifted Feature Reweighting (seed paper, ICLR 2025 submission 781, withdrawn).

Only the abstract and reviews are public; this is our reconstruction (docs/methods/sfr.md
says which part comes from where). Two ingredients on a frozen backbone:

1. Feature dropout with rate p on the image feature before the head (training only),
   against representation collapse on majority groups.
2. Disagreement-based instance weights: after `warmup` epochs and every `update_every`
   epochs, d_i = disagreement between a reference model (the run's shared ERM head, or
   zero-shot) and the current head on training example i; s_i = φ(d_i); with group
   normalisation w_i = N/(G·n_g) · s_i / mean_{j∈g} s_j, so each group carries the
   group-balanced total while instances within a group get distinct weights.
   Loss = Σ w_i·CE_i / Σ w_i (the shared trainer's weighted loss).
"""

from __future__ import annotations

import torch
from torch import nn

import bench

EPS = 1e-3  # ε of the inverse score; CFR's code uses 1e-10 (the `sfr-cfr` variant)


def disagreement(p_ref: torch.Tensor, p: torch.Tensor, y: torch.Tensor, kind: str) -> torch.Tensor:
    """Per-example disagreement between reference and current class probabilities."""
    if kind == "tv":
        return 0.5 * (p_ref - p).abs().sum(dim=1)
    if kind == "kl":
        return (p_ref * (p_ref.clamp_min(1e-12).log() - p.clamp_min(1e-12).log())).sum(dim=1)
    if kind == "label":
        return (p_ref.gather(1, y[:, None]) - p.gather(1, y[:, None])).abs().flatten()
    raise ValueError(f"unknown disagreement '{kind}'")


def instance_scores(
    d: torch.Tensor,
    mode: str,
    c: float = 1.0,
    lo: float = 0.1,
    hi: float = 10.0,
    alpha: float = 1.0,
    offset: float = 0.0,
    eps: float = EPS,
) -> torch.Tensor:
    """s_i = φ(d_i): `inverse` clip(c/(d+ε), lo, hi) + offset (CFR's formula is c = 0.25,
    ε = 1e-10, lo = 0.8, hi = 2, offset 1), `proportional` 1+α·d, `none` 1."""
    if mode == "inverse":
        return (c / (d + eps)).clamp(lo, hi) + offset
    if mode == "proportional":
        return 1.0 + alpha * d
    if mode == "none":
        return torch.ones_like(d)
    raise ValueError(f"unknown weighting '{mode}'")


def group_normalise(s: torch.Tensor, g: torch.Tensor, n_groups: int) -> torch.Tensor:
    """w_i = N/(G·n_g) · s_i / mean_{j∈g} s_j: every group's total weight is N/G."""
    counts = torch.bincount(g, minlength=n_groups).to(s.dtype)
    sums = torch.zeros(n_groups, dtype=s.dtype, device=s.device).index_add_(0, g, s)
    means = sums / counts.clamp_min(1)
    n_present = int((counts > 0).sum())
    return len(s) / (n_present * counts[g]) * s / means[g]


def weights_from(s: torch.Tensor, train: bench.FeatureSplit, normalise: bool) -> torch.Tensor:
    """Group-normalised scores, or the bare scores (which reads no group labels)."""
    return group_normalise(s, train.g, train.n_groups) if normalise else s


@bench.method
class SFR(bench.Method):
    name = "sfr"
    description = "Shifted Feature Reweighting: feature dropout + disagreement instance weights"
    group_labels = frozenset({"train"})
    family = "reweighting"
    paper = "Robust Multi-modal Learning with Shifted Feature Reweighting (ICLR 2025 submission)"

    def search_space(self) -> dict:
        space = bench.training_space()
        space.update(
            dropout=bench.Float(0.0, 0.8, 0.3),
            disagreement=bench.Choice(("tv", "kl", "label"), "tv"),
            weighting=bench.Choice(("inverse", "proportional", "none"), "inverse"),
            c=bench.Float(0.01, 1.0, 0.1, log=True),
            clip_lo=bench.Float(0.01, 1.0, 0.1, log=True),
            clip_hi=bench.Float(1.0, 100.0, 10.0, log=True),
            alpha=bench.Float(0.1, 20.0, 2.0, log=True),
            group_norm=bench.Choice((True, False), True),
            reference=bench.Choice(("erm", "zeroshot"), "erm"),
            warmup=bench.Int(0, 10, 2, below="epochs"),  # at least one weight update
            update_every=bench.Int(1, 5, 1),
            offset=bench.Float(0.0, 2.0, 0.0, tune=False),
            eps=bench.Float(1e-10, 1e-1, EPS, log=True, tune=False),
        )
        return space

    def train(self, train, val, ctx):
        p = ctx.params
        if p["reference"] == "zeroshot" and ctx.store.class_text is None:
            raise bench.UserError("sfr reference=zeroshot needs class text embeddings")
        reference = (
            ctx.references.zeroshot()
            if p["reference"] == "zeroshot"
            else ctx.references.erm(ctx.seed)
        )
        p_ref = reference.probs(train.x)
        dropout = bench.FeatureDropout(p["dropout"], ctx.generator)
        model = ctx.make_head()
        ones = torch.ones(len(train), device=train.x.device)
        if p["warmup"] >= p["epochs"]:
            raise bench.UserError(
                f"sfr: warmup={p['warmup']} must be below epochs={p['epochs']}, else the "
                "instance weights never update (that is sfr-groupweights)")
        hooks = bench.Hooks(weights=weights_from(ones, train, p["group_norm"]), dropout=dropout)
        current = bench.Predictor(model)
        history = []

        def reweight(epoch: int, _head: nn.Module) -> None:
            if epoch < p["warmup"] or (epoch - p["warmup"]) % p["update_every"]:
                return
            d = disagreement(p_ref, current.probs(train.x), train.y, p["disagreement"])
            s = instance_scores(d, p["weighting"], p["c"], p["clip_lo"], p["clip_hi"], p["alpha"],
                                p.get("offset", 0.0), p.get("eps", EPS))
            hooks.weights = weights_from(s, train, p["group_norm"])
            history.append(epoch)

        hooks.before_epoch = reweight
        model = yield bench.Stage(model, train, bench.TrainConfig.from_params(p), hooks)
        return bench.Predictor(model, info={"weights": hooks.weights, "updates": history,
                                            "dropout": dropout})


bench.variant("sfr-nodropout", SFR, {"dropout": 0.0}, "SFR without feature dropout (ablation)")
bench.variant(
    "sfr-noweights",
    SFR,
    {"weighting": "none", "group_norm": False},
    "SFR with feature dropout only, no reweighting (ablation)",
    group_labels=frozenset(),
)
bench.variant(
    "sfr-groupweights",
    SFR,
    {"weighting": "none", "group_norm": True},
    "SFR with uniform group-balanced weights + dropout (ablation)",
)
bench.variant(
    "sfr-cfr",
    SFR,
    {"dropout": 0.1, "weighting": "inverse", "c": 0.25, "eps": 1e-10, "clip_lo": 0.8,
     "clip_hi": 2.0, "offset": 1.0, "optimizer": "sgd", "lr": 1e-4, "weight_decay": 1e-5,
     "batch_size": 128, "epochs": 100},
    "SFR at CFR's published defaults: dropout 0.1, clip(0.25/(d+1e-10), 0.8, 2) + 1, SGD",
)
