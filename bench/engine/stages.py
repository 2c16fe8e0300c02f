"""Stages, not loops: a method describes its training, the harness runs it.

A method's `train(train, val, ctx)` is a generator: it yields a `Stage` (a head, the data,
the optimisation settings, and the hooks that shape training: per-example weights, a
sampler, a batch rule, a callback between epochs, feature dropout), receives the trained
head back, and finally returns a Predictor. A multi-stage method yields several.

`run_stages` drives K configurations (other parameters or seeds) in lockstep: at each
step, stages that one computation can train together (the same data, built-in heads of
one kind, no arbitrary loss, and for batch rules one batch size) go through
bench.engine.batched.fit_batched as one stacked computation; any other stage (an arbitrary
`loss`, a custom head, longer-than-n epochs) runs on its own through Trainer.fit, which
picks the analytic or the reference (autograd) engine. Each configuration's result
equals what it gets alone (tests/test_batched.py, bench.testing).
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from bench.data.store import FeatureSplit
from bench.engine import batched
from bench.engine.config import Hooks, TrainConfig
from bench.engine.trainer import analytic

if TYPE_CHECKING:
    from bench.engine.predictor import Predictor

Context = Any  # bench.method.Context (not imported: the method contract imports this module)


@dataclass
class Stage:
    """One training stage: `head` is trained in place on `data` with `config`, shaped by
    `hooks`; `report` sends its per-epoch validation scores to the pruner (the final
    stage of a method; auxiliary stages set it False)."""

    head: nn.Module
    data: FeatureSplit
    config: TrainConfig
    hooks: Hooks = field(default_factory=Hooks)
    report: bool = True


Training = Generator[Stage, nn.Module, "Predictor"]


def _group_key(stage: Stage) -> tuple | None:
    """Stages with the same key train as one computation; None: this one trains alone."""
    h = stage.hooks
    if h.batch_rule is not None and h.weights is not None:
        return None  # refused by the trainer with its message
    if not analytic(stage.head, stage.data, h):
        return None
    epoch_len = len(stage.data) if h.sampler is None else h.sampler.epoch_length
    rule_batch = (min(stage.config.batch_size, epoch_len)
                  if h.batch_rule is not None else None)
    return (id(stage.data), type(stage.head), stage.report, h.batch_rule is not None,
            rule_batch, epoch_len)


def _train_together(stages: list[Stage], ctxs: list[Context]) -> list[nn.Module | Exception]:
    """One fit_batched call for stages that share a group key."""
    data = stages[0].data
    hooks = [s.hooks for s in stages]
    weights = None
    if any(h.weights is not None for h in hooks):
        ones = torch.ones(len(data), device=data.x.device)
        weights = torch.stack([ones if h.weights is None else h.weights for h in hooks])
    rules = [h.batch_rule for h in hooks] if hooks[0].batch_rule is not None else None
    callbacks = [h.epoch_callback() for h in hooks]
    return batched.fit_batched(
        [s.head for s in stages], data, [s.config for s in stages],
        [c.trainer for c in ctxs], weights, [h.sampler for h in hooks],
        report=stages[0].report, rules=rules,
        callbacks=callbacks if any(c is not None for c in callbacks) else None,
        dropouts=[h.dropout for h in hooks],
        offsets=[h.logit_offset for h in hooks]
        if any(h.logit_offset is not None for h in hooks) else None,
        anchors=[h.anchor_pair() for h in hooks]
        if any(h.anchor_pair() is not None for h in hooks) else None,
    )


def _train_alone(stage: Stage, ctx: Context) -> nn.Module | Exception:
    try:
        return ctx.trainer.fit(stage.head, stage.data, stage.config, stage.hooks,
                               report=stage.report)
    except Exception as exc:  # noqa: BLE001 - handed back per configuration
        return exc


def run_stages(method: Any, train: FeatureSplit, val: FeatureSplit,
               ctxs: list[Context]) -> list[Predictor | Exception]:
    """Drive `method.train` for every context; see the module docstring."""
    gens: dict[int, Training] = {}
    results: list[Any] = [None] * len(ctxs)
    sends: dict[int, nn.Module | None] = {}
    for k, ctx in enumerate(ctxs):
        gens[k] = method.train(train, val, ctx)
        sends[k] = None
    while gens:
        stages: dict[int, Stage] = {}
        for k in list(gens):
            try:
                stages[k] = gens[k].send(sends[k])
            except StopIteration as stop:
                results[k] = stop.value
                del gens[k]
            except Exception as exc:  # noqa: BLE001 - this configuration fails alone
                results[k] = exc
                del gens[k]
        groups: dict[tuple, list[int]] = {}
        for k, stage in stages.items():
            key = _group_key(stage)
            groups.setdefault(key if key is not None else ("alone", k), []).append(k)
        for ks in groups.values():
            if len(ks) == 1:
                outs = [_train_alone(stages[ks[0]], ctxs[ks[0]])]
            else:
                outs = _train_together([stages[k] for k in ks], [ctxs[k] for k in ks])
            for k, out in zip(ks, outs, strict=True):
                if isinstance(out, Exception):
                    results[k] = out
                    gens.pop(k).close()
                else:
                    sends[k] = out
    return results
