"""subsample (SUBG): train on a random group-balanced subsample (min_g n_g per group)."""

from __future__ import annotations

import torch

import bench


def balanced_subsample(g: torch.Tensor, n_groups: int, generator: torch.Generator) -> torch.Tensor:
    """Indices of min_g n_g examples drawn without replacement from every group."""
    g_cpu = g.cpu()
    n_min = int(torch.bincount(g_cpu, minlength=n_groups).min())
    picks = []
    for k in range(n_groups):
        members = torch.nonzero(g_cpu == k).flatten()
        picks.append(members[torch.randperm(len(members), generator=generator)[:n_min]])
    return torch.cat(picks).sort().values.to(g.device)


@bench.method
class Subsample(bench.Method):
    name = "subsample"
    description = "Train on a group-balanced random subsample (SUBG)"
    group_labels = frozenset({"train"})
    family = "reweighting"
    paper = "Idrissi et al. 2022, Simple data balancing achieves competitive worst-group-accuracy"

    def search_space(self) -> dict:
        space = bench.training_space(epochs=100, batch_size=128)
        space["epochs"] = bench.Int(20, 300, 100, log=True)
        return space

    def train(self, train, val, ctx):
        idx = balanced_subsample(train.g, train.n_groups, ctx.generator)
        cfg = bench.TrainConfig.from_params(ctx.params)
        head = yield bench.Stage(ctx.make_head(), train.subset(idx), cfg)
        return bench.Predictor(head, info={"subsample": idx})
