"""reweight (RWG): groups count equally, by loss weights ∝ 1/n_g (default), by sampling
group-balanced batches with replacement (`by=sampling`, Idrissi et al.'s RWG, which
samples rather than weights), or by duplicating every group up to the largest group's
size (`by=upsample`: SpuCo's UpSampleERM; an epoch is G · max_g n_g examples)."""

from __future__ import annotations

import torch

import bench


def upsample_copies(g: torch.Tensor, n_groups: int, generator: torch.Generator) -> torch.Tensor:
    """Copies per example so every group reaches the largest group's size: each member
    max_n // n_g times, plus once more for max_n mod n_g members drawn at random (a
    group's random order repeated and cut at max_n, as SpuCo's UpSampleERM builds it)."""
    g_cpu = g.cpu()
    counts = torch.bincount(g_cpu, minlength=n_groups)
    max_n = int(counts.max())
    copies = torch.zeros(len(g_cpu), dtype=torch.long)
    for k in range(n_groups):
        members = torch.nonzero(g_cpu == k).flatten()
        if not len(members):
            continue
        copies[members] = max_n // len(members)
        extra = members[torch.randperm(len(members), generator=generator)[: max_n % len(members)]]
        copies[extra] += 1
    return copies.to(g.device)


@bench.method
class Reweight(bench.Method):
    name = "reweight"
    description = "Group-balanced training from training group labels (RWG)"
    group_labels = frozenset({"train"})
    family = "reweighting"
    paper = "Idrissi et al. 2022, Simple data balancing achieves competitive worst-group-accuracy"

    def search_space(self) -> dict:
        space = bench.training_space()
        space["by"] = bench.Choice(("loss", "sampling", "upsample"), "loss", tune=False)
        return space

    @staticmethod
    def hooks(train, cfg, p, generator=None) -> bench.Hooks:  # noqa: ANN001
        if p.get("by", "loss") == "upsample":
            copies = upsample_copies(train.g, train.n_groups, generator)
            return bench.Hooks(sampler=bench.Sampler.upsampled(copies, cfg.batch_size))
        if p.get("by", "loss") == "sampling":
            return bench.Hooks(
                sampler=bench.Sampler.group_balanced(train.g, train.n_groups, cfg.batch_size))
        return bench.Hooks(weights=bench.group_balanced_weights(train.g, train.n_groups))

    def train(self, train, val, ctx):
        cfg = bench.TrainConfig.from_params(ctx.params)
        hooks = self.hooks(train, cfg, ctx.params, ctx.generator)
        head = yield bench.Stage(ctx.make_head(), train, cfg, hooks)
        return bench.Predictor(head)
