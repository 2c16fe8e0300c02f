"""reweight (RWG): each training example's loss weighted ∝ 1/n_g, so groups count equally."""

from __future__ import annotations

import bench


@bench.method
class Reweight(bench.Method):
    name = "reweight"
    description = "Loss weights 1/n_g from training group labels (RWG)"
    group_labels = frozenset({"train"})
    paper = "Idrissi et al. 2022, Simple data balancing achieves competitive worst-group-accuracy"

    def search_space(self) -> dict:
        return bench.training_space()

    def fit(self, train, val, ctx):
        head = ctx.make_head()
        weights = bench.group_balanced_weights(train.g, train.n_groups)
        ctx.trainer.fit(head, train, bench.TrainConfig.from_params(ctx.params),
                        bench.Hooks(weights=weights))
        return bench.Predictor(head)

    def fit_batched(self, train, val, ctxs):
        """All configurations in one pass over the features (same result as `fit` each)."""
        heads = [ctx.make_head() for ctx in ctxs]
        cfgs = [bench.TrainConfig.from_params(ctx.params) for ctx in ctxs]
        weights = bench.group_balanced_weights(train.g, train.n_groups)
        trained = bench.fit_batched(heads, train, cfgs, [ctx.trainer for ctx in ctxs], weights)
        return [h if isinstance(h, Exception) else bench.Predictor(h) for h in trained]
