"""The default `bench run` end to end: where the time goes.

Phases (wall time): encode (dataset and features: `Run.__init__`), tune
(`Run.tune_method`), final seeds (the rest of `Run.run_method`), report (the rest of
`Run.execute`: results table, leaderboard, MLflow parent). Work (exclusive time): numeric
(fitting heads, evaluating them), MLflow, Optuna, and the remainder, Python glue.
Process start-up (importing torch, mlflow, optuna) is measured on its own.
"""

from __future__ import annotations

import subprocess
import sys

import optuna
import pytest
from perfutil import WorkClock

from bench.run import fitting, tracking
from bench.run.runner import Run, RunConfig
from bench.tuning import heartbeat

PHASES = ["encode", "tune", "final seeds", "report"]


def _instrument(monkeypatch, work: WorkClock, phases: WorkClock) -> None:  # noqa: ANN001
    work.install(monkeypatch, "numeric", fitting.Fitter, ["fit_many"])
    work.install(monkeypatch, "numeric", fitting, ["evaluate"])
    work.install(
        monkeypatch,
        "mlflow",
        tracking.Tracker,
        [
            "__init__",
            "start_parent",
            "start_child",
            "end_child",
            "nested",
            "metric",
            "log",
            "artifact",
            "reconcile",
            "finish",
        ],
    )
    work.install(
        monkeypatch, "optuna", optuna.study.Study, ["ask", "tell", "get_trials", "enqueue_trial"]
    )
    work.install(
        monkeypatch,
        "optuna",
        optuna.trial.Trial,
        [
            "report",
            "should_prune",
            "set_user_attr",
            "suggest_float",
            "suggest_int",
            "suggest_categorical",
        ],
    )
    work.install(monkeypatch, "optuna", optuna, ["create_study", "load_study"])
    work.install(monkeypatch, "optuna", heartbeat, ["fail_stale"])
    work.install(monkeypatch, "optuna", heartbeat.Heartbeat, ["__enter__", "__exit__"])
    phases.install(monkeypatch, "encode", Run, ["__init__"])
    phases.install(monkeypatch, "report", Run, ["_execute"])
    phases.install(monkeypatch, "final seeds", Run, ["run_method"])
    phases.install(monkeypatch, "tune", Run, ["tune_method"])


def _measure(benchmark, monkeypatch, tmp_path, record, label: str, **cfg) -> None:  # noqa: ANN001
    work, phases = WorkClock(), WorkClock()
    _instrument(monkeypatch, work, phases)
    counter = iter(range(100))

    def once() -> None:
        Run(RunConfig(runs_dir=tmp_path / f"runs{next(counter)}", progress=False, **cfg)).execute()

    benchmark.pedantic(once, rounds=1, iterations=1)
    total = benchmark.stats.stats.min
    glue = total - sum(work.totals.values())
    info = {f"{p}_s": round(phases.totals.get(p, 0.0), 1) for p in PHASES}
    info.update(
        {f"{k}_share": f"{100 * v / total:.0f}%" for k, v in {**work.totals, "glue": glue}.items()}
    )
    benchmark.extra_info.update(info)
    record(path=label, best_ms=round(total * 1e3), **info)


def test_bench_run_default(benchmark, monkeypatch, tmp_path, record):
    """`bench run` with every default: all methods, synthetic, 8 trials, 3 seeds."""
    _measure(benchmark, monkeypatch, tmp_path, record, "bench run (defaults)")


@pytest.mark.parametrize("parallel", [1, 8])
def test_bench_run_batchable_methods(benchmark, monkeypatch, tmp_path, record, parallel):
    """erm and reweight (the methods with fit_batched), one trial at a time or 8 at once."""
    _measure(
        benchmark,
        monkeypatch,
        tmp_path,
        record,
        f"bench run -m erm,reweight --parallel-trials {parallel}",
        methods=["erm", "reweight"],
        parallel_trials=parallel,
    )


def test_bench_startup(benchmark, record):
    """Importing what `bench run` needs, in a fresh process (paid once per command)."""
    cmd = [sys.executable, "-c", "import bench.cli, bench.run.runner, mlflow, optuna"]
    benchmark.pedantic(lambda: subprocess.run(cmd, check=True), rounds=3, iterations=1)
    record(path="start-up imports", best_ms=round(benchmark.stats.stats.min * 1e3))
