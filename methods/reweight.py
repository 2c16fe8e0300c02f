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

    def fit(self, train, val, ctx):
        head = ctx.make_head()
        cfg = bench.TrainConfig.from_params(ctx.params)
        ctx.trainer.fit(head, train, cfg, self.hooks(train, cfg, ctx.params))
        return bench.Predictor(head)

    def fit_batched(self, train, val, ctxs):
        """All configurations in one pass over the features (same result as `fit` each)."""
        heads = [ctx.make_head() for ctx in ctxs]
        cfgs = [bench.TrainConfig.from_params(ctx.params) for ctx in ctxs]
        hooks = [self.hooks(train, c, ctx.params) for c, ctx in zip(cfgs, ctxs, strict=True)]
        if any(h.weights is None for h in hooks) and any(h.weights is not None for h in hooks):
            return super().fit_batched(train, val, ctxs)  # one weighting for a whole batch
        trained = bench.fit_batched(heads, train, cfgs, [ctx.trainer for ctx in ctxs],
                                    hooks[0].weights, samplers=[h.sampler for h in hooks])
        return [h if isinstance(h, Exception) else bench.Predictor(h) for h in trained]
