"""crt: classifier re-training with class-balanced sampling (Kang et al. 2020).

cRT decouples representation from classifier: stage 1 learns features and a classifier
with instance-balanced sampling (plain ERM); stage 2 freezes the features, re-initialises
the linear classifier and trains it for a few epochs with class-balanced sampling (a
class uniformly at random, then an example of it: examples drawn with replacement
∝ 1/n_y), which removes the classifier's bias toward frequent classes.

On frozen features the representation is the encoder's, trained by neither stage, and
re-initialising discards everything stage 1's classifier learned; so "re-training the
classifier" is training a fresh linear head on the frozen features with class-balanced
sampling, and stage 1 (the run's shared ERM reference head) is trained only where
`init=erm` starts stage 2 from it instead (an option; SubpopBench's CRT re-initialises
too, as the paper does). Class labels only: no group labels.
"""

from __future__ import annotations

import copy

import bench


def class_balanced_sampler(train: bench.FeatureSplit, batch_size: int) -> bench.Sampler | None:
    """Class-balanced batches with replacement (the mechanism; the tests replace it)."""
    return bench.Sampler.group_balanced(train.y, train.n_classes, batch_size)


@bench.method
class CRT(bench.Method):
    name = "crt"
    description = "Classifier re-training: a fresh linear head with class-balanced sampling"
    group_labels = frozenset()
    family = "last-layer retraining"
    paper = ("Kang et al. 2020, Decoupling Representation and Classifier for Long-Tailed "
             "Recognition (ICLR)")

    def search_space(self) -> dict:
        # stage 2 is short in the paper (10 epochs)
        space = bench.training_space(epochs=10)
        space["init"] = bench.Choice(("fresh", "erm"), "fresh", tune=False)
        return space

    def train(self, train, val, ctx):
        cfg = bench.TrainConfig.from_params(ctx.params)
        if ctx.params.get("init", "fresh") == "erm":
            stage1 = ctx.references.erm(ctx.seed, head_kind="linear")
            head = copy.deepcopy(stage1.module)
            for p in head.parameters():
                p.requires_grad_(True)
        else:
            head = ctx.make_head("linear")  # cRT's classifier is linear
        hooks = bench.Hooks(sampler=class_balanced_sampler(train, cfg.batch_size))
        head = yield bench.Stage(head, train, cfg, hooks)
        return bench.Predictor(head)
