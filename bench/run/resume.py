"""Picking a run up again: what a crash left behind, and what is kept.

Trials of dead processes are failed as interrupted (they do not count against the
budget) and their MLflow runs marked KILLED; a replicate whose final seeds began keeps
the parameters its tuning chose, so every seed of it uses the same ones.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import polars as pl

from bench.report.results import seed_row_path
from bench.run.tracking import Tracker
from bench.tuning.study import finished_trials, heartbeat, interrupted

log = logging.getLogger("bench.run")


@dataclass
class Recovered:
    trials: int = 0  # finished trials kept
    interrupted: int = 0  # trials of dead processes, failed now (they do not count)
    killed: int = 0  # MLflow runs of interrupted trials or seeds marked KILLED


def recover(studies: list[optuna.Study], tracker: Tracker) -> Recovered:
    """Fail the stale trials of `studies`, then reconcile MLflow with the studies."""
    found = Recovered()
    by_name = {}
    for study in studies:
        found.interrupted += len(heartbeat.fail_stale(study))
        found.trials += len(finished_trials(study))
        by_name[study.study_name] = study

    def trial_state(study_name: str, number: int) -> str | None:
        study = by_name.get(study_name)
        trials = study.get_trials(deepcopy=False) if study is not None else []
        match = [t for t in trials if t.number == number]
        if not match:
            return None
        return "INTERRUPTED" if interrupted(match[0]) else match[0].state.name

    found.killed = tracker.reconcile(trial_state) or 0
    if found.killed:
        log.info("marked %d MLflow runs of interrupted trials or seeds as KILLED", found.killed)
    return found


def report_resume(found: Recovered, run_dir: Path, console: Any = None) -> None:
    """One line on resume: what the run directory already held, so a user sees that
    nothing completed is redone (and what an interruption cost)."""
    rows_dir = run_dir / "rows"
    seeds = len([p for p in rows_dir.glob("*-seed*.parquet") if "-failed" not in p.name])
    if not (found.trials or seeds or found.interrupted):
        return
    line = (f"resuming {run_dir}: {found.trials} finished trial(s) and {seeds} "
            "final seed(s) kept")
    if found.interrupted:
        line += (f"; {found.interrupted} interrupted trial(s) do not count (new trials "
                 "fill the budget)")
    if found.killed:
        line += f"; {found.killed} MLflow run(s) of interrupted work marked KILLED"
    if console is not None:
        console.print(line, highlight=False, soft_wrap=True)
    else:
        log.warning(line)


def tuned_before(rows_dir: Path, method: str, seeds: list[int]) -> dict[str, Any] | None:
    """What tuning decided for a replicate whose seeds already started: once a seed ran,
    tuning of that replicate is closed, so every seed of it uses the same parameters
    (even after --timeout)."""
    for seed in seeds:
        path = seed_row_path(rows_dir, method, seed)
        if not path.exists():
            continue
        try:
            row = pl.read_parquet(path).row(0, named=True)
        except Exception:  # a torn file: results.read_rows removes it
            continue
        if row.get("method") == method and row.get("params"):
            return {"params": json.loads(row["params"]), "trials": int(row.get("trials") or 0),
                    "best_is_default": row.get("best_is_default")}
    return None
