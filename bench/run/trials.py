"""A tuning round of one method as bench.tuning.study.tune runs it: MLflow, fit, score.

Every admitted trial of a round gets its nested MLflow run before anything is fitted (a
Ctrl-C or a dead process leaves a run that `bench run` marks KILLED on resume); the
round's configurations are fitted together when the method batches (`--parallel-trials`),
one after another otherwise; each trial's outcome is handed back as soon as it is known.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import optuna

from bench.plugins.registry import MethodEntry
from bench.run.fitting import Fitted, Fitter, batches
from bench.run.tracking import KIND, STUDY, TRIAL, Tracker
from bench.tuning.study import Outcome


@dataclass
class TrialRounds:
    """The `rounds` of one method's study (see bench.tuning.study.tune)."""

    fitter: Fitter
    tracker: Tracker
    entry: MethodEntry
    defaults: dict[str, Any]
    seed: int  # every trial trains with the tuning seed (bench.tuning.seeding)
    study_name: str
    worker: str
    tags: dict[str, str]

    def __call__(self, batch: list[tuple[optuna.trial.Trial, dict[str, Any]]]) -> Iterator[Outcome]:
        chunks = [batch] if batches(self.entry) else [[one] for one in batch]
        for chunk in chunks:
            yield from self._chunk(chunk)

    def _chunk(self, chunk: list[tuple[optuna.trial.Trial, dict[str, Any]]]) -> Iterator[Outcome]:
        params = [{**self.defaults, **p} for _, p in chunk]
        ids = [self._start(trial, p) for (trial, _), p in zip(chunk, params, strict=True)]
        open_ids = list(ids)
        try:
            fits = self.fitter.fit_many(self.entry, params, [self.seed] * len(chunk),
                                        [t for t, _ in chunk])
            for run_id, fitted in zip(ids, fits, strict=True):
                result = self._finish(run_id, fitted)
                open_ids.remove(run_id)
                yield result
        except BaseException:  # Ctrl-C, or the loop stopped asking: nothing left half-open
            for run_id in open_ids:
                self.tracker.end_child(run_id, "KILLED", tags={"spurbench.state": "INTERRUPTED"})
            raise

    def _start(self, trial: optuna.trial.Trial, params: dict[str, Any]) -> str:
        return self.tracker.start_child(
            f"{self.entry.name}/trial-{trial.number}", params=params,
            tags={KIND: "trial", STUDY: self.study_name, TRIAL: str(trial.number),
                  "spurbench.method": self.entry.name, "spurbench.worker": self.worker,
                  **self.tags},
        )

    def _finish(self, run_id: str, fitted: Fitted) -> Outcome:
        """Log the trial's epochs and validation metrics; its outcome for the study."""
        curves = {f"epoch_val_{self.fitter.rule.metric}": fitted.scores}  # with the rest
        result = fitted.result
        if isinstance(result, optuna.TrialPruned):
            self.tracker.end_child(run_id, "FINISHED", tags={"spurbench.state": "PRUNED"},
                                   curves=curves)
            return result
        try:
            if isinstance(result, BaseException):
                raise result
            val = {k: v for k, v in self.fitter.selection_metrics(result).as_dict().items()
                   if math.isfinite(v)}
        except Exception as exc:  # noqa: BLE001 - the trial's failure, with its reason
            self.tracker.end_child(run_id, "FAILED", tags={
                "spurbench.state": "FAIL", "spurbench.fail_reason": f"{type(exc).__name__}: {exc}"},
                curves=curves)
            return exc
        score = float(val.get(self.fitter.rule.metric, math.nan))
        ok = math.isfinite(score)
        self.tracker.end_child(
            run_id, "FINISHED" if ok else "FAILED", {f"val_{k}": v for k, v in val.items()},
            {"spurbench.state": "COMPLETE" if ok else "FAIL", "spurbench.score": str(score)},
            curves=curves,
        )
        return score, {f"val_{k}": v for k, v in val.items()}
