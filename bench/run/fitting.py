"""The numeric side of a run: lend a method its splits, fit configurations, score them.

Every fit of a run goes through `Fitter.fit_many`: one configuration, or K of them (trials
of one tuning round, the final seeds of a method) as one computation when the method's
training is described by stages (bench.engine.stages). It returns what it fitted — a
`Fitted` per configuration, the predictor or the exception that ended it, with the
per-epoch validation scores a trial reported — so nothing fitted is parked on the run
for a later call to pick up.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import optuna
import polars as pl
import torch

from bench.data.dataset import Dataset
from bench.data.spec import DatasetSpec
from bench.data.store import FeatureSplit, FeatureStore, lend
from bench.engine.heads import HeadFactory
from bench.engine.predictor import Predictor
from bench.engine.references import ReferenceStore
from bench.engine.trainer import Trainer
from bench.errors import UserError
from bench.plugins.method import Context, Method
from bench.plugins.registry import MethodEntry
from bench.report.metrics import Metrics, evaluate
from bench.tuning.seeding import derive_seed, generator
from bench.tuning.selection import SelectionRule, select_score


@dataclass
class Fitted:
    """One configuration's fit: the predictor, or the exception that ended it (diverged,
    pruned, failed), and the validation scores reported per epoch (trials only)."""

    result: Predictor | BaseException
    scores: list[tuple[int, float]] = field(default_factory=list)

    def predictor(self) -> Predictor:
        if isinstance(self.result, BaseException):
            raise self.result
        return self.result


def batches(entry: MethodEntry) -> bool:
    """Whether the method trains several configurations in one computation."""
    cls = type(entry.create())
    return cls.engine().startswith("stages") or cls.fit_batched is not Method.fit_batched


@dataclass
class Fitter:
    """What fitting and scoring need: the run's data, heads, references and selection."""

    spec: DatasetSpec
    plugin: Dataset
    store: FeatureStore
    heads: HeadFactory
    references: ReferenceStore
    rule: SelectionRule
    device: torch.device
    # when set, every fit draws from this method's seed stream (initialisation, batch
    # order, dropout masks): `bench gate` pairs two method names seed for seed
    stream: str = ""

    @property
    def label_free_reason(self) -> str:
        return f"selection '{self.rule.name}' uses no group labels"

    def lent_splits(self, entry: MethodEntry) -> tuple[FeatureSplit, FeatureSplit]:
        """Train and val as the method may see them: group and attribute labels only of
        the splits it declared, and only where the selection rule allows labels at all."""
        out = []
        for name in ("train", "val"):
            split = self.store.splits[name]
            if not self.rule.allows_group_labels:
                split = split.withhold(self.label_free_reason)
            elif name not in entry.group_labels:
                split = split.withhold(
                    f"method '{entry.name}' does not declare '{name}' in its group_labels")
            out.append(split)
        return out[0], out[1]

    def context(self, entry: MethodEntry, params: dict[str, Any], seed: int) -> Context:
        method = self.stream or entry.name
        gen = generator(self.spec.name, method, "seed", seed)
        torch.manual_seed(derive_seed(self.spec.name, method, "torch", seed))
        return Context(
            params=params, seed=seed, device=self.device, generator=gen,
            store=lend(self.store, *self.lent_splits(entry)),
            trainer=Trainer(self.device, gen), references=self.references, heads=self.heads,
            log=logging.getLogger(f"bench.plugins.method.{entry.name}"),
        )

    # -- fitting ---------------------------------------------------------------------------
    def fit_many(
        self, entry: MethodEntry, params: list[dict[str, Any]], seeds: list[int],
        trials: list[optuna.trial.Trial] | None = None,
    ) -> list[Fitted]:
        """Fit each (params, seed) — as one computation when the method batches and there
        is more than one — and return one `Fitted` each, in order. In tuning (`trials`),
        per-epoch validation scores feed each trial's pruner and a failure of any kind is
        handed back; outside tuning a user mistake (UserError) stops the run instead."""
        train, val = self.lent_splits(entry)
        ctxs, histories = [], []
        for i, (p, seed) in enumerate(zip(params, seeds, strict=True)):
            ctx = self.context(entry, p, seed)
            history: list[tuple[int, float]] = []
            if trials is not None:
                ctx.trainer.reporter = self._reporter(trials[i], history)
            ctxs.append(ctx)
            histories.append(history)
        method = entry.create()
        results: list[Predictor | BaseException] = []
        if len(ctxs) > 1 and batches(entry):
            try:
                results = list(method.fit_batched(train, val, ctxs))
            except Exception as exc:  # noqa: BLE001 - every configuration ends with it
                results = [exc] * len(ctxs)
        else:
            for ctx in ctxs:
                try:
                    results.append(method.fit(train, val, ctx))
                except Exception as exc:  # noqa: BLE001 - handed back per configuration
                    results.append(exc)
        mistakes = [r for r in results if isinstance(r, UserError)]
        if trials is None and mistakes:
            raise mistakes[0]
        return [Fitted(r, h) for r, h in zip(results, histories, strict=True)]

    def fit(self, entry: MethodEntry, params: dict[str, Any], seed: int) -> Predictor:
        """One configuration, outside tuning; raises what ended it."""
        (fitted,) = self.fit_many(entry, [params], [seed])
        return fitted.predictor()

    def _reporter(
        self, trial: optuna.trial.Trial, history: list[tuple[int, float]]
    ) -> Callable[[int, torch.nn.Module], None]:
        def report(epoch: int, head: torch.nn.Module) -> None:
            score = self.selection_score(Predictor(head))
            history.append((epoch, score))
            trial.report(score, epoch)
            if trial.should_prune():
                raise optuna.TrialPruned(f"pruned at epoch {epoch}")

        return report

    # -- scoring ---------------------------------------------------------------------------
    def selection_metrics(self, predictor: Predictor) -> Metrics:
        """Validation metrics as the selection rule sees them: a label-free rule sees the
        validation split without its group labels (so only label-free metrics)."""
        val = self.store.splits["val"]
        if not self.rule.val_group_labels:
            val = val.withhold(self.label_free_reason)
        return evaluate(predictor, val, self.store)

    def selection_score(self, predictor: Predictor) -> float:
        """The validation score the selection rule ranks by."""
        return select_score(self.selection_metrics(predictor).as_dict(), self.rule)

    def evaluate_splits(self, predictor: Predictor) -> tuple[Metrics | None, Metrics]:
        """Validation metrics (None on an evaluation-only dataset) and test metrics."""
        val = self.store.splits["val"]
        return (
            evaluate(predictor, val, self.store) if len(val) else None,
            evaluate(predictor, self.store.splits["test"], self.store),
        )

    def extra_metrics(self, predictor: Predictor) -> dict[str, float]:
        """The dataset's own metrics on the test split (Dataset.extra_metrics)."""
        if type(self.plugin).extra_metrics is Dataset.extra_metrics:
            return {}
        test = self.store.splits["test"]
        md = self.spec.metadata.filter(pl.Series(self.spec.split_mask("test")))
        pred = predictor.predict(test.x).cpu().numpy()
        return {k: float(v) for k, v in self.plugin.extra_metrics(md, pred).items()}
