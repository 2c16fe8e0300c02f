"""erm: empirical risk minimisation, mean cross-entropy on the training split."""

from __future__ import annotations

import bench


@bench.method
class ERM(bench.Method):
    name = "erm"
    description = "Empirical risk minimisation: mean cross-entropy, no group labels"
    group_labels = frozenset()
    family = "baseline"
    paper = "Vapnik 1992; the baseline of Sagawa et al. 2020"

    def search_space(self) -> dict:
        return bench.training_space()

    def train(self, train, val, ctx):
        head = yield bench.Stage(ctx.make_head(), train, bench.TrainConfig.from_params(ctx.params))
        return bench.Predictor(head)
