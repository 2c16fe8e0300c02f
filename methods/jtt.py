"""jtt: Just Train Twice (Liu et al. 2021).

Stage 1 trains an ERM head for T epochs (the identification model, taken from the run's
shared reference store so every JTT trial with the same settings reuses it; a linear
probe by default, since the prompt head's fixed text geometry makes a poor, slow-to-fit
identifier on frozen features); the error set E
is the training examples it misclassifies. Stage 2 trains a fresh head with the examples
in E up-weighted by λ_up — as loss weights (`weight`) or by sampling them λ_up times as
often (`upsample`, the paper's duplication, in expectation). Group labels are used only
for validation selection.
"""

from __future__ import annotations

import torch

import bench


@bench.method
class JTT(bench.Method):
    name = "jtt"
    description = "Just Train Twice: up-weight the errors of a briefly trained ERM head"
    group_labels = frozenset()
    paper = (
        "Liu et al. 2021, Just Train Twice: Improving Group Robustness without Training "
        "Group Information"
    )

    def search_space(self) -> dict:
        space = bench.training_space()
        space["id_epochs"] = bench.Int(1, 20, 1)
        space["lambda_up"] = bench.Float(1.0, 100.0, 20.0, log=True)
        space["id_lr"] = bench.Float(1e-3, 1e-1, 1e-2, log=True)
        space["id_head"] = bench.Choice(("linear", "auto"), "linear")
        space["upweight"] = bench.Choice(("weight", "upsample"), "weight")
        return space

    def fit(self, train, val, ctx):
        errors, weights, cfg, hooks = self._stage_two(train, ctx)
        head = ctx.make_head()
        ctx.trainer.fit(head, train, cfg, hooks)
        return bench.Predictor(head, info={"error_set": torch.nonzero(errors).flatten().cpu()})

    def fit_batched(self, train, val, ctxs):
        """Stage 1 per configuration (shared through the reference store), then every
        configuration's stage 2 in one pass over the features, each equal to `fit`'s."""
        stages = [self._stage_two(train, ctx) for ctx in ctxs]
        heads = [ctx.make_head() for ctx in ctxs]
        weights = torch.stack([w if h.weights is not None else torch.ones_like(w)
                               for _, w, _, h in stages])
        trained = bench.fit_batched(
            heads, train, [cfg for _, _, cfg, _ in stages], [ctx.trainer for ctx in ctxs],
            weights, samplers=[h.sampler for _, _, _, h in stages])
        return [h if isinstance(h, Exception) else
                bench.Predictor(h, info={"error_set": torch.nonzero(e).flatten().cpu()})
                for h, (e, _, _, _) in zip(trained, stages, strict=True)]

    @staticmethod
    def _stage_two(train, ctx):  # noqa: ANN001, ANN205
        """The identifier's error set, the up-weights and stage 2's config and hooks."""
        p = ctx.params
        id_cfg = bench.TrainConfig(epochs=p["id_epochs"], lr=p["id_lr"])
        head_kind = None if p["id_head"] == "auto" else p["id_head"]
        identifier = ctx.references.erm(ctx.seed, id_cfg, head_kind=head_kind)
        errors = identifier.predict(train.x) != train.y
        weights = torch.where(errors, float(p["lambda_up"]), 1.0)
        cfg = bench.TrainConfig.from_params(p)
        if p["upweight"] == "upsample":
            hooks = bench.Hooks(sampler=bench.Sampler.weighted(weights, cfg.batch_size))
        else:
            hooks = bench.Hooks(weights=weights)
        return errors, weights, cfg, hooks
