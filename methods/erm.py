"""erm: empirical risk minimisation, mean cross-entropy on the training split."""

from __future__ import annotations

import bench


@bench.method
class ERM(bench.Method):
    name = "erm"
    description = "Empirical risk minimisation: mean cross-entropy, no group labels"
    group_labels = frozenset()
    paper = "Vapnik 1992; the baseline of Sagawa et al. 2020"

    def search_space(self) -> dict:
        return bench.training_space()

    def fit(self, train, val, ctx):
        head = ctx.make_head()
        ctx.trainer.fit(head, train, bench.TrainConfig.from_params(ctx.params))
        return bench.Predictor(head)

    def fit_batched(self, train, val, ctxs):
        """All configurations in one pass over the features (same result as `fit` each)."""
        heads = [ctx.make_head() for ctx in ctxs]
        cfgs = [bench.TrainConfig.from_params(ctx.params) for ctx in ctxs]
        trained = bench.fit_batched(heads, train, cfgs, [ctx.trainer for ctx in ctxs])
        return [h if isinstance(h, Exception) else bench.Predictor(h) for h in trained]
