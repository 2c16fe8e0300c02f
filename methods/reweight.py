"""reweight (RWG): groups count equally, by loss weights ∝ 1/n_g (default) or by
sampling group-balanced batches with replacement (`by=sampling`, Idrissi et al.'s RWG,
which samples rather than weights)."""

from __future__ import annotations

import bench


@bench.method
class Reweight(bench.Method):
    name = "reweight"
    description = "Group-balanced training from training group labels (RWG)"
    group_labels = frozenset({"train"})
    paper = "Idrissi et al. 2022, Simple data balancing achieves competitive worst-group-accuracy"

    def search_space(self) -> dict:
        space = bench.training_space()
        space["by"] = bench.Choice(("loss", "sampling"), "loss", tune=False)
        return space

    @staticmethod
    def hooks(train, cfg, p) -> bench.Hooks:  # noqa: ANN001
        if p.get("by", "loss") == "sampling":
            return bench.Hooks(
                sampler=bench.Sampler.group_balanced(train.g, train.n_groups, cfg.batch_size))
        return bench.Hooks(weights=bench.group_balanced_weights(train.g, train.n_groups))

    def train(self, train, val, ctx):
        cfg = bench.TrainConfig.from_params(ctx.params)
        head = yield bench.Stage(ctx.make_head(), train, cfg, self.hooks(train, cfg, ctx.params))
        return bench.Predictor(head)
