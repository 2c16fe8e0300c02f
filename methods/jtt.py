"""jtt: Just Train Twice (Liu et al. 2021).

Stage 1 trains an ERM identification head for T epochs (from the run's shared reference
store, so every JTT trial with the same stage-1 settings reuses it); the error set E is
the training examples it misclassifies. Stage 2 trains a fresh head with the examples in
E up-weighted by λ_up. Group labels are used only for validation selection.

As in the paper, stage 1 uses stage 2's optimiser settings (optimizer, lr, weight decay,
batch size) for fewer epochs, unless `id_lr`, `id_weight_decay`, `id_optimizer` or
`id_batch_size` set its own. `upweight=upsample` is the reference code's duplication:
every example of E appears round(λ_up) times in each epoch, so an epoch is
n + (round(λ_up) − 1)·|E| examples long; `upweight=weight` (default) weights E's losses
by λ_up instead, at n examples per epoch.
"""

from __future__ import annotations

import dataclasses

import torch

import bench

SAME = "same"


@bench.method
class JTT(bench.Method):
    name = "jtt"
    description = "Just Train Twice: up-weight the errors of a briefly trained ERM head"
    group_labels = frozenset()
    family = "group inference"
    paper = (
        "Liu et al. 2021, Just Train Twice: Improving Group Robustness without Training "
        "Group Information"
    )

    def search_space(self) -> dict:
        space = bench.training_space()
        space["id_epochs"] = bench.Int(1, 20, 1)
        space["lambda_up"] = bench.Float(1.0, 100.0, 20.0, log=True)
        space["id_head"] = bench.Choice(("linear", "auto"), "linear")
        space["upweight"] = bench.Choice(("weight", "upsample"), "weight", tune=False)
        # stage 1's own optimiser settings; None / "same": stage 2's (the paper)
        space["id_lr"] = bench.Float(1e-5, 1e-1, None, log=True, tune=False)
        space["id_weight_decay"] = bench.Float(1e-6, 1.0, None, log=True, tune=False)
        space["id_optimizer"] = bench.Choice((SAME, "adamw", "sgd"), SAME, tune=False)
        space["id_batch_size"] = bench.Choice((SAME, 64, 128, 256, 512), SAME, tune=False)
        return space

    def train(self, train, val, ctx):
        """Stage 1 through the run's reference store (shared by every configuration with
        the same stage-1 settings), then stage 2 as a yielded stage."""
        errors, cfg, hooks = self._stage_two(train, ctx)
        head = yield bench.Stage(ctx.make_head(), train, cfg, hooks)
        return bench.Predictor(head, info={"error_set": torch.nonzero(errors).flatten().cpu()})

    @staticmethod
    def identification_config(p: dict) -> bench.TrainConfig:
        """Stage 1: stage 2's optimiser settings for id_epochs, unless set separately."""
        cfg = bench.TrainConfig.from_params(p)
        own = {
            "lr": p.get("id_lr"), "weight_decay": p.get("id_weight_decay"),
            "optimizer": p.get("id_optimizer"), "batch_size": p.get("id_batch_size"),
        }
        own = {k: v for k, v in own.items() if v is not None and v != SAME}
        return dataclasses.replace(cfg, epochs=p["id_epochs"], **own)

    @classmethod
    def _stage_two(cls, train, ctx):  # noqa: ANN001, ANN206
        """The identifier's error set, stage 2's config and hooks."""
        p = ctx.params
        head_kind = None if p["id_head"] == "auto" else p["id_head"]
        identifier = ctx.references.erm(ctx.seed, cls.identification_config(p),
                                        head_kind=head_kind)
        errors = identifier.predict(train.x) != train.y
        cfg = bench.TrainConfig.from_params(p)
        if p["upweight"] == "upsample":
            copies = torch.where(errors, max(1, round(float(p["lambda_up"]))), 1)
            hooks = bench.Hooks(sampler=bench.Sampler.upsampled(copies, cfg.batch_size))
        else:
            hooks = bench.Hooks(weights=torch.where(errors, float(p["lambda_up"]), 1.0))
        return errors, cfg, hooks
