"""Optuna tuning: one study per (dataset, encoder, method, selection), same budget for all.

TPE with a fixed seed; the method's defaults are the first trial; intermediate validation
scores feed a median pruner; a trial that raises or returns NaN is recorded as failed
with its reason and the study goes on. Re-running continues the study: the budget counts
finished trials (complete, pruned, failed), so nothing completed is redone.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import optuna

from bench.space import Param
from bench.redact import redact

FINISHED = (
    optuna.trial.TrialState.COMPLETE,
    optuna.trial.TrialState.PRUNED,
    optuna.trial.TrialState.FAIL,
)

# objective(params, trial) -> (score, extra metrics); it may call trial.report/should_prune
Objective = Callable[[dict[str, Any], optuna.trial.Trial], tuple[float, dict[str, float]]]


@dataclass
class TuneOutcome:
    best_params: dict[str, Any]
    finished: int
    completed: int
    failures: list[str]
    best_value: float | None


def open_study(storage: str, name: str, seed: int) -> optuna.Study:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.create_study(
        storage=storage,
        study_name=name,
        direction="maximize",
        sampler=optuna.samplers.TPESampler(seed=seed),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=4, n_warmup_steps=3),
        load_if_exists=True,
    )


def finished_trials(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    """Trials that count against the budget. A FAIL without a recorded reason was cut off
    (Ctrl-C, a killed worker) rather than failed by the method, so it is run again."""
    return [
        t
        for t in study.get_trials(deepcopy=False, states=FINISHED)
        if t.state != optuna.trial.TrialState.FAIL or "fail_reason" in t.user_attrs
    ]


def tune(
    study: optuna.Study,
    space: dict[str, Param],
    fixed: dict[str, Any],
    budget: int,
    objective: Objective,
    timeout: float | None = None,
    on_trial: Callable[[optuna.trial.FrozenTrial], None] | None = None,
) -> TuneOutcome:
    """Run trials until `budget` of them have finished (counting earlier runs)."""
    tunable = {k: p for k, p in space.items() if k not in fixed}
    if not finished_trials(study) and not study.get_trials(deepcopy=False):
        study.enqueue_trial({k: p.default for k, p in tunable.items()})

    def wrapped(trial: optuna.trial.Trial) -> float:
        params = {k: p.suggest(trial, k) for k, p in tunable.items()}
        params.update(fixed)
        try:
            score, extra = objective(params, trial)
        except optuna.TrialPruned:
            raise
        except Exception as exc:
            trial.set_user_attr("fail_reason", redact(f"{type(exc).__name__}: {exc}"))
            raise
        for k, v in extra.items():
            trial.set_user_attr(k, v)
        if not math.isfinite(score):
            trial.set_user_attr("fail_reason", f"objective returned {score}")
            raise FloatingPointError(f"objective returned {score}")
        return score

    def callback(st: optuna.Study, frozen: optuna.trial.FrozenTrial) -> None:
        if on_trial is not None:
            on_trial(frozen)
        if len(finished_trials(st)) >= budget:  # other workers may have filled the budget
            st.stop()

    remaining = budget - len(finished_trials(study))
    if remaining > 0:
        logging.getLogger("optuna").setLevel(logging.ERROR)
        study.optimize(
            wrapped,
            callbacks=[callback],
            n_trials=remaining,
            timeout=timeout,
            catch=(Exception,),
            gc_after_trial=False,
        )
    done = finished_trials(study)
    complete = [t for t in done if t.state == optuna.trial.TrialState.COMPLETE]
    failures = [
        f"trial {t.number}: {t.user_attrs.get('fail_reason', 'failed')}"
        for t in done
        if t.state == optuna.trial.TrialState.FAIL
    ]
    if complete:
        best = max(complete, key=lambda t: t.value if t.value is not None else -math.inf)
        params = {**best.params, **fixed}
        value = best.value
    else:
        params, value = {}, None
    return TuneOutcome(params, len(done), len(complete), failures, value)
