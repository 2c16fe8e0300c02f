"""Interrupting `bench run` mid-trial (SIGINT, SIGKILL) and re-running the same command.

The interrupted trial never counts, nothing completed is redone, Optuna and MLflow are
left consistent (interrupted runs marked as such), and the final leaderboard has every
method.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import pytest
from optuna.trial import TrialState
from tuning_helpers import TINY, bench_cmd, mlflow_runs, plugin_dir, quiet_env, study_for

from bench.tuning.study import INTERRUPTED, counts

METHODS = ("fasta", "fastb")
BUDGET = 4


def run_args(runs: Path, plugins: Path) -> list[str]:
    return ["run", "--methods", ",".join(METHODS), "--trials", str(BUDGET), "--seeds", "1",
            "--no-progress", "--runs-dir", str(runs), "--plugins", str(plugins), *TINY]


def whole_run(tmp_path: Path, plugins: Path, runs: str = "runs") -> subprocess.CompletedProcess:
    """The same command, left to finish (a resume when `runs` holds an earlier run)."""
    return subprocess.run(bench_cmd(*run_args(tmp_path / runs, plugins)), cwd=tmp_path,
                          capture_output=True, text=True, env=quiet_env(), timeout=600)


def interrupted_run(tmp_path: Path, plugins: Path, sig: signal.Signals, block_at: int) -> Path:
    """Start `bench run`, signal it while its fit number `block_at` runs; its run dir."""
    gate = tmp_path / f"gate-{sig.name}"
    proc = subprocess.Popen(
        bench_cmd(*run_args(tmp_path / "runs", plugins)), cwd=tmp_path, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        env=quiet_env(SPURTEST_GATE=str(gate), SPURTEST_BLOCK_AT=str(block_at)),
    )
    deadline = time.monotonic() + 300
    while not (gate / "blocking").exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"bench run did not reach fit {block_at}: {proc.communicate()[1]}")
        time.sleep(0.1)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    if sig in (signal.SIGINT, signal.SIGTERM):
        assert proc.returncode == (130 if sig == signal.SIGINT else 143), err
        assert ("interrupted" if sig == signal.SIGINT else "terminated (SIGTERM)") in err
        assert "re-run the same command to resume" in err and "Traceback" not in err
    else:
        assert proc.returncode == -signal.SIGKILL
    return (tmp_path / "runs" / "latest").resolve()


def completed(run_dir: Path) -> dict:
    """fasta's completed trials: number -> (params, value, completion time)."""
    study = study_for(f"sqlite:///{run_dir / 'optuna.db'}", "fasta")
    return {t.number: (t.params, t.value, t.datetime_complete)
            for t in study.get_trials() if t.state == TrialState.COMPLETE}


def state(run_dir: Path) -> tuple[list, dict, object]:
    """fasta's trial states, MLflow status by nested run name, and the parent run."""
    study = study_for(f"sqlite:///{run_dir / 'optuna.db'}", "fasta")
    runs = mlflow_runs(f"sqlite:///{run_dir / 'mlflow.db'}")
    (parent,) = [x for x in runs if "mlflow.parentRunId" not in x.data.tags]
    nested = {x.info.run_name: x for x in runs if x is not parent}
    return study.get_trials(), nested, parent


def test_sigint_then_sigkill_mid_trial_then_resume(tmp_path, tmp_path_factory):
    plugins = plugin_dir(tmp_path_factory)
    C, F, R = TrialState.COMPLETE, TrialState.FAIL, TrialState.RUNNING

    # 1. Ctrl-C during fasta's third trial: it fails as interrupted, MLflow says KILLED
    run_dir = interrupted_run(tmp_path, plugins, signal.SIGINT, block_at=2)
    trials, nested, parent = state(run_dir)
    assert [t.state for t in trials] == [C, C, F] and trials[2].user_attrs[INTERRUPTED] is True
    assert parent.info.status == "KILLED"
    assert {k: v.info.status for k, v in nested.items()} == {
        "fasta/trial-0": "FINISHED", "fasta/trial-1": "FINISHED", "fasta/trial-2": "KILLED"}
    first = completed(run_dir)

    # 2. the re-run continues; SIGKILL during its second trial leaves that trial RUNNING
    assert interrupted_run(tmp_path, plugins, signal.SIGKILL, block_at=1) == run_dir
    trials, nested, parent_after_kill = state(run_dir)
    assert [t.state for t in trials] == [C, C, F, C, R]
    assert nested["fasta/trial-4"].info.status == "RUNNING"
    assert parent_after_kill.info.run_id == parent.info.run_id
    second = completed(run_dir)
    assert {n: second[n] for n in first} == first

    # 3. the same command once more finishes everything
    r = whole_run(tmp_path, plugins)
    assert r.returncode == 0, r.stderr
    # resume says what it recovered: 3 finished trials kept (0, 1, 3), the SIGKILLed one
    # failed, its MLflow run marked KILLED
    assert "resuming" in r.stderr and "3 finished trial(s)" in r.stderr
    assert "1 interrupted trial(s) do not count" in r.stderr
    storage = f"sqlite:///{run_dir / 'optuna.db'}"
    trials, nested, parent_final = state(run_dir)
    assert parent_final.info.run_id == parent.info.run_id
    assert parent_final.info.status == "FINISHED"
    assert [t.number for t in trials if counts(t)] == [0, 1, 3, 5]
    assert [t.state for t in trials[:5]] == [C, C, F, C, F] and not counts(trials[4])
    for name in ("fasta/trial-2", "fasta/trial-4"):  # interrupted runs are marked as such
        assert nested[name].info.status == "KILLED"
        assert nested[name].data.tags["spurbench.state"] == "INTERRUPTED"
    final = completed(run_dir)
    assert {n: final[n] for n in second} == second  # nothing completed was redone
    runs = mlflow_runs(f"sqlite:///{run_dir / 'mlflow.db'}")
    for method in METHODS:
        study = study_for(storage, method)
        all_trials = study.get_trials()
        counted = [t for t in all_trials if counts(t)]
        assert len(counted) == BUDGET
        assert not [t for t in all_trials if t.state in (R, TrialState.WAITING)]
        assert len({json.dumps(t.params, sort_keys=True) for t in counted}) == BUDGET
        # one finished MLflow run per counted trial: none lost, none repeated
        names = sorted(x.info.run_name for x in runs if x.info.status == "FINISHED"
                       and x.data.tags.get("spurbench.kind") == "trial"
                       and x.info.run_name.startswith(method))
        assert names == sorted(f"{method}/trial-{t.number}" for t in counted)
    md = (run_dir / "leaderboard.md").read_text()
    assert all(f"`{m}`" in md for m in METHODS) and "| 2 | `" in md
    assert "skipped" not in md and "failed" not in md


def test_sigterm_ends_a_run_like_ctrl_c(tmp_path, tmp_path_factory):
    """What Docker, systemd, Slurm and Kubernetes send: the trial is interrupted (not
    counted), MLflow runs are KILLED, and the same command resumes."""
    plugins = plugin_dir(tmp_path_factory)
    C, F = TrialState.COMPLETE, TrialState.FAIL
    run_dir = interrupted_run(tmp_path, plugins, signal.SIGTERM, block_at=1)
    trials, nested, parent = state(run_dir)
    assert [t.state for t in trials] == [C, F] and trials[1].user_attrs[INTERRUPTED] is True
    assert parent.info.status == "KILLED" and nested["fasta/trial-1"].info.status == "KILLED"
    r = whole_run(tmp_path, plugins)
    assert r.returncode == 0, r.stderr
    trials, _, parent = state(run_dir)
    assert parent.info.status == "FINISHED" and sum(counts(t) for t in trials) == BUDGET


def test_an_interrupted_and_resumed_run_gives_the_uninterrupted_numbers(tmp_path,
                                                                       tmp_path_factory):
    """Ctrl-C during a TPE-drawn trial, then the same command: every results row
    (tuned parameters, validation and test metrics) equals a run never interrupted. A
    Ctrl-C is not part of (method, data, budget, seed)."""
    import polars as pl

    plugins = plugin_dir(tmp_path_factory)
    clean = whole_run(tmp_path, plugins, "clean")
    assert clean.returncode == 0, clean.stderr
    run_dir = interrupted_run(tmp_path, plugins, signal.SIGINT, block_at=2)
    again = whole_run(tmp_path, plugins)
    assert again.returncode == 0, again.stderr
    assert "2 finished trial(s)" in again.stderr  # fasta's trials 0 and 1 kept

    def numbers(folder: Path) -> pl.DataFrame:
        table = pl.read_parquet(folder / "results.parquet")
        keep = ["method", "seed", "params", "trials", "best_is_default"] + [
            c for c in table.columns if c.startswith(("val_", "test_"))]
        return table.select(keep).sort("method", "seed")

    resumed = numbers(run_dir)
    assert resumed.height == len(METHODS)
    assert resumed.equals(numbers((tmp_path / "clean" / "latest").resolve()))
