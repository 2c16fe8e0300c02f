"""`--parallel-trials K`: tune with K trials at a time, trained as one batched computation.

Optuna is asked for K trials at once (study.ask), the method's `fit_batched` trains all
K heads in one pass over the features (bench.engine.batched), and each trial is then told its
result (study.tell) through the same objective as one-at-a-time tuning, so MLflow,
pruning, failure reasons and the budget work as in bench.tuning.study. Final seeds of a method
are trained the same way. A method that does not override `Method.fit_batched` is still
asked K trials at a time (the same tuning procedure for every method of a comparison)
but fitted one trial after another through the ordinary `Run.fit`.

Each configuration's head equals what one-at-a-time fitting gives (same seed, same
batches, up to floating-point rounding); the tuning differs only in that the sampler
proposes K trials before it sees their results.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import optuna
import torch
from optuna.trial import FrozenTrial, TrialState

from bench.engine.predictor import Predictor
from bench.errors import UserError
from bench.plugins.method import Method
from bench.tuning.space import suggest_all
from bench.tuning.space import tunable as tunable_params
from bench.tuning.study import (
    INTERRUPTED,
    SURPLUS,
    Objective,
    TuneOutcome,
    _admitted,
    after_tell,
    heartbeat,
    open_slots,
    outcome,
    outcome_of,
)

if TYPE_CHECKING:
    from bench.plugins.registry import MethodEntry
    from bench.tuning.space import Param

log = logging.getLogger("bench.tuning.study")


def batches(entry: MethodEntry) -> bool:
    """Whether the method trains several configurations in one computation."""
    cls = type(entry.create())
    return cls.engine().startswith("stages") or cls.fit_batched is not Method.fit_batched


class Prefit:
    """Heads fitted in one batch, handed out by `Run.fit` one configuration at a time,
    with the per-epoch validation scores to log once the trial's MLflow run exists."""

    def __init__(self, metric: str) -> None:
        self.metric = metric
        self.items: dict[tuple, tuple[Predictor | BaseException, list[tuple[int, float]]]] = {}

    @staticmethod
    def key(method: str, seed: int, trial: Any = None) -> tuple:
        return ("trial", method, trial.number) if trial is not None else ("seed", method, seed)

    def take(
        self, method: str, seed: int, trial: Any = None, log_to: Any = None
    ) -> Predictor | None:
        """The prefitted predictor (raising its exception if it failed), or None."""
        item = self.items.pop(self.key(method, seed, trial), None)
        if item is None:
            return None
        result, scores = item
        if log_to is not None and scores:  # one MLflow write for all epochs
            log_to[0].metrics_by_step(log_to[1], f"epoch_val_{self.metric}", scores)
        if isinstance(result, BaseException):
            raise result
        return result


def _fit_batch(run: Any, entry: MethodEntry, params: list[dict], seeds: list[int],
               trials: list[Any] | None) -> Prefit:
    """Fit every configuration with the method's fit_batched; per-epoch validation scores
    feed each trial's pruner as in `Run.fit`."""
    prefit = Prefit(run.rule.metric)
    train, val = run.lent_splits(entry)
    ctxs, scores = [], []
    for i, (p, seed) in enumerate(zip(params, seeds, strict=True)):
        ctx = run.context(entry, p, seed)
        history: list[tuple[int, float]] = []
        if trials is not None:
            ctx.trainer.reporter = _reporter(run, trials[i], history)
        ctxs.append(ctx)
        scores.append(history)
    try:
        results: list = entry.create().fit_batched(train, val, ctxs)
    except Exception as exc:  # noqa: BLE001 - every configuration fails with the reason
        if isinstance(exc, UserError) and trials is None:
            raise  # final seeds stop the run on a user mistake, as one by one; trials record it
        results = [exc] * len(ctxs)
    for i, seed in enumerate(seeds):
        trial = trials[i] if trials is not None else None
        prefit.items[Prefit.key(entry.name, seed, trial)] = (results[i], scores[i])
    return prefit


def _reporter(run: Any, trial: optuna.Trial, history: list) -> Callable:
    def report(epoch: int, head: torch.nn.Module) -> None:
        score = run.selection_score(Predictor(head))
        history.append((epoch, score))
        trial.report(score, epoch)
        if trial.should_prune():
            raise optuna.TrialPruned(f"pruned at epoch {epoch}")

    return report


def prefit_seeds(run: Any, entry: MethodEntry, params: dict[str, Any], seeds: list[int]) -> None:
    """Final seeds of a batched method in one computation; `Run.fit` hands them out."""
    if len(seeds) > 1 and batches(entry):
        run.prefit = _fit_batch(run, entry, [params] * len(seeds), seeds, None)


def tune_parallel(
    run: Any,
    entry: MethodEntry,
    study: optuna.Study,
    space: dict[str, Param],
    fixed: dict[str, Any],
    budget: int,
    objective: Objective,
    on_trial: Callable[[FrozenTrial], None] | None = None,
    wait: bool = True,
    seed: int = 0,
) -> TuneOutcome:
    """bench.tuning.study.tune with up to `run.cfg.parallel_trials` trials per round; every
    trial trains with `seed` (the tuning stream, see bench.tuning.seeding)."""
    width = run.cfg.parallel_trials
    tunable = tunable_params(space, fixed)
    defaults = run.plan(entry)[0]
    batched = batches(entry)
    logging.getLogger("optuna").setLevel(logging.ERROR)
    started = time.monotonic()
    for free, waiting in open_slots(study, budget, started, run.cfg.timeout, wait):
        asked = [study.ask() for _ in range(min(width, max(free, waiting, 1)))]
        with contextlib.ExitStack() as beats:
            for trial in asked:
                beats.enter_context(heartbeat.Heartbeat(study, trial))
            told = _round(run, entry, study, asked, tunable, fixed, defaults, budget, objective,
                          batched, seed)
            frozen = [(study.tell(t, v, state=s, skip_if_finished=True), s) for t, s, v in told]
        for f, state in frozen:
            after_tell(study, f, state, on_trial)
    return outcome(study, fixed)


def _round(run, entry, study, asked, tunable, fixed, defaults, budget, objective, batched, seed):  # noqa: ANN001, ANN202, E501
    """Fit one round of asked trials (in one batch when the method can) and decide each
    one's state; Ctrl-C tells what was decided and fails the rest as interrupted."""
    told: list[tuple[optuna.Trial, TrialState, float | None]] = []
    try:
        admitted = []
        for trial in asked:
            if _admitted(study, trial, budget):
                params = suggest_all(trial, tunable, fixed, defaults)
                admitted.append((trial, {**params, **fixed}))
            else:
                trial.set_user_attr(SURPLUS, True)
                told.append((trial, TrialState.FAIL, None))
        if batched and admitted:
            run.prefit = _fit_batch(
                run, entry, [{**defaults, **p} for _, p in admitted],
                [seed] * len(admitted),
                [t for t, _ in admitted],
            )
        for trial, params in admitted:
            try:
                told.append((trial, *outcome_of(trial, params, objective)))
            except optuna.exceptions.UpdateFinishedTrialError:
                told.append((trial, TrialState.FAIL, None))  # failed as dead by another process
    except KeyboardInterrupt:
        decided = {t.number for t, _, _ in told}
        for trial, state, value in told:
            study.tell(trial, value, state=state, skip_if_finished=True)
        for trial in asked:
            if trial.number not in decided:
                with contextlib.suppress(Exception):
                    trial.set_user_attr(INTERRUPTED, True)
                study.tell(trial, state=TrialState.FAIL, skip_if_finished=True)
        raise
    finally:
        run.prefit = None
    return told
