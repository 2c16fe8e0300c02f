"""resample: group-balanced sampling with replacement (SubpopBench's ReSample).

Each epoch draws n training examples with replacement, example i with probability
∝ 1/n_{g(i)}, so every group is drawn equally often in expectation; the loss is the
plain mean cross-entropy of each batch. The balance comes from what the batches hold,
not from loss weights: the gradient's variance differs from `reweight`'s loss weights
(minority examples recur instead of weighing more), which is why both are benchmarked.
It is the same training as `reweight --params reweight.by=sampling`, under its own name
and seed streams, as SubpopBench and SpuCo list it.
"""

from __future__ import annotations

import bench


def balanced_sampler(train: bench.FeatureSplit, batch_size: int) -> bench.Sampler | None:
    """Group-balanced batches with replacement (the mechanism; the tests replace it)."""
    return bench.Sampler.group_balanced(train.g, train.n_groups, batch_size)


@bench.method
class ReSample(bench.Method):
    name = "resample"
    description = "Group-balanced sampling with replacement (SubpopBench ReSample)"
    group_labels = frozenset({"train"})
    family = "reweighting"
    paper = ("Yang et al. 2023, Change is Hard: A Closer Look at Subpopulation Shift "
             "(ReSample; Idrissi et al. 2022's SUBG/RWG family)")

    def search_space(self) -> dict:
        return bench.training_space()

    def train(self, train, val, ctx):
        cfg = bench.TrainConfig.from_params(ctx.params)
        hooks = bench.Hooks(sampler=balanced_sampler(train, cfg.batch_size))
        head = yield bench.Stage(ctx.make_head(), train, cfg, hooks)
        return bench.Predictor(head)
