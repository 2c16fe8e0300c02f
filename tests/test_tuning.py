"""bench.tuning.study and bench.tuning.heartbeat on real Optuna storages with toy objectives.

Budget accounting (failures count, interruptions do not), defaults first, pruning,
--timeout, Ctrl-C, stale trials of dead processes, per-trial seeding, and several
processes' worth of tuners sharing one study without overrunning its budget.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import threading
import time

import optuna
import pytest
from optuna.trial import TrialState

from bench.errors import UserError
from bench.tuning.space import Float, Int
from bench.tuning.study import (
    FAIL_REASON,
    INTERRUPTED,
    SURPLUS,
    counts,
    finished_trials,
    heartbeat,
    open_storage,
    open_study,
    tune,
)

SPACE = {"x": Float(-3.0, 3.0, 0.5), "n": Int(1, 5, 2)}
FIRST = {"x": 0.5, "n": 2}


def score(params: dict) -> float:
    return -((params["x"] - 1.0) ** 2) + 0.01 * params["n"]


def study_at(tmp_path, name: str = "s", seed: int = 7) -> optuna.Study:
    return open_study(f"sqlite:///{tmp_path / 'optuna.db'}", name, seed, first=FIRST)


def test_failures_count_with_reason_and_the_study_goes_on(tmp_path):
    study = study_at(tmp_path)
    calls = []

    def objective(params, trial):
        calls.append(trial.number)
        if trial.number == 1:
            raise ValueError("boom at postgresql://u:hunter22@db/x")
        if trial.number == 2:
            return math.nan, {}
        return score(params), {"val_wga": 0.5}

    out = tune(study, SPACE, {}, 6, objective)
    trials = study.get_trials()
    assert len(calls) == 6 and out.finished == 6 and out.completed == 4
    assert trials[0].params == FIRST  # the defaults are the first trial
    assert trials[1].state == TrialState.FAIL and "boom" in trials[1].user_attrs[FAIL_REASON]
    assert "hunter22" not in trials[1].user_attrs[FAIL_REASON]
    assert trials[2].user_attrs[FAIL_REASON] == "objective returned nan"
    assert [f.split(":")[0] for f in out.failures] == ["trial 1", "trial 2"]
    best = max((t for t in trials if t.state == TrialState.COMPLETE), key=lambda t: t.value)
    assert out.best_params == best.params and out.best_value == best.value
    # re-running continues the study and redoes nothing
    assert tune(study, SPACE, {}, 6, objective).finished == 6 and len(calls) == 6


def test_pruned_trials_count_and_fixed_params_are_applied(tmp_path):
    study = study_at(tmp_path)

    def objective(params, trial):
        assert params["n"] == 3  # fixed, not tuned
        for step in range(6):  # a good x climbs fast, a bad one is pruned by the median
            trial.report(score(params) * (step + 1), step)
            if trial.should_prune():
                raise optuna.TrialPruned()
        return score(params), {}

    out = tune(study, {"x": SPACE["x"]}, {"n": 3}, 14, objective)
    states = [t.state for t in study.get_trials()]
    assert out.finished == 14 and states.count(TrialState.PRUNED) >= 1
    assert all("n" not in t.params for t in study.get_trials())
    assert out.best_params["n"] == 3


def test_timeout_stops_starting_trials(tmp_path):
    study = study_at(tmp_path)

    def objective(params, trial):
        time.sleep(0.3)
        return score(params), {}

    out = tune(study, SPACE, {}, 50, objective, timeout=0.5)
    assert 1 <= out.finished < 50 and out.best_params


def test_ctrl_c_fails_the_trial_uncounted_and_resume_fills_the_budget(tmp_path):
    study = study_at(tmp_path)

    def interrupting(params, trial):
        if trial.number == 2:
            raise KeyboardInterrupt
        return score(params), {}

    with pytest.raises(KeyboardInterrupt):
        tune(study, SPACE, {}, 5, interrupting)
    cut = study.get_trials()[2]
    assert cut.state == TrialState.FAIL and cut.user_attrs[INTERRUPTED] is True
    assert not counts(cut) and len(finished_trials(study)) == 2
    assert not study.get_trials(states=(TrialState.RUNNING,))

    resumed = study_at(tmp_path)  # a fresh process would open the study again
    out = tune(resumed, SPACE, {}, 5, lambda p, t: (score(p), {}))
    numbers = [t.number for t in finished_trials(resumed)]
    assert out.finished == 5 and numbers == [0, 1, 3, 4, 5]
    params = [tuple(sorted(t.params.items())) for t in finished_trials(resumed)]
    assert len(set(params)) == 5  # a resumed sampler does not redraw earlier trials


def test_trial_params_depend_on_seed_and_place_only(tmp_path):
    def draws(name: str, seed: int) -> list:
        study = open_study(f"sqlite:///{tmp_path / 'd.db'}", name, seed)
        tune(study, SPACE, {}, 4, lambda p, t: (score(p), {}))
        return [t.params for t in study.get_trials()]

    assert draws("a", 1) == draws("b", 1)
    assert draws("c", 2) != draws("a", 1)


@pytest.mark.parametrize("cut", [0, 2, 6])  # the defaults, a start-up draw, a TPE draw
def test_a_resumed_study_proposes_what_an_uninterrupted_one_does(tmp_path, cut):
    """A trial cut off by Ctrl-C takes no place in the study: the trial asked in its
    stead draws what it would have drawn, so after a resume the finished trials'
    parameters, in order, their scores and the chosen best equal an uninterrupted
    study's. (Seeding by trial number made the replacement a different draw: a Ctrl-C
    changed the tuned result.)"""
    budget = 10

    def objective(params, trial):
        return score(params), {}

    (tmp_path / "whole").mkdir()
    whole = study_at(tmp_path / "whole")
    expected = tune(whole, SPACE, {}, budget, objective)

    def interrupting(params, trial):
        if trial.number == cut:
            raise KeyboardInterrupt
        return objective(params, trial)

    (tmp_path / "cut").mkdir()
    with pytest.raises(KeyboardInterrupt):
        tune(study_at(tmp_path / "cut"), SPACE, {}, budget, interrupting)
    resumed = study_at(tmp_path / "cut")  # a new process: a new sampler
    got = tune(resumed, SPACE, {}, budget, objective)

    def finished(study):
        return [(t.params, t.value) for t in finished_trials(study)]

    assert len(finished(resumed)) == budget
    assert finished(resumed) == finished(whole)
    assert got.best_params == expected.best_params and got.best_value == expected.best_value
    assert len(resumed.get_trials()) == budget + 1  # the cut one stays, failed, uncounted


def test_a_dead_process_trial_is_failed_at_once_and_rerun(tmp_path):
    study = study_at(tmp_path)
    tune(study, SPACE, {}, 2, lambda p, t: (score(p), {}))
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    orphan = study.ask()  # what a SIGKILLed `bench run` leaves behind
    orphan.set_user_attr(heartbeat.OWNER, f"{heartbeat.machine_id()}/{dead.stdout.strip()}")
    orphan.set_user_attr(heartbeat.BEAT, time.time())
    out = tune(study_at(tmp_path), SPACE, {}, 4, lambda p, t: (score(p), {}))
    assert out.finished == 4
    assert study.get_trials()[orphan.number].state == TrialState.FAIL
    assert [t.number for t in finished_trials(study)] == [0, 1, 3, 4]


def test_another_machine_trial_is_failed_only_after_its_heartbeat_stops(tmp_path, monkeypatch):
    monkeypatch.setenv("SPURBENCH_HEARTBEAT", "0.1")  # grace: 6 beats = 0.6 s
    study = study_at(tmp_path)
    tune(study, SPACE, {}, 1, lambda p, t: (score(p), {}))
    live = study.ask()
    live.set_user_attr(heartbeat.OWNER, "elsewhere|boot|pid:[1]/4242")
    live.set_user_attr(heartbeat.BEAT, time.time())
    # a worker does not wait for a live trial of another machine: it takes the free slots
    out = tune(study, SPACE, {}, 3, lambda p, t: (score(p), {}), wait=False)
    assert out.finished == 2 and study.get_trials()[live.number].state == TrialState.RUNNING
    time.sleep(0.8)  # the other machine died: its beats stop
    out = tune(study, SPACE, {}, 3, lambda p, t: (score(p), {}))
    assert out.finished == 3 and study.get_trials()[live.number].state == TrialState.FAIL


def test_the_heartbeat_keeps_a_long_trial_alive(tmp_path, monkeypatch):
    monkeypatch.setenv("SPURBENCH_HEARTBEAT", "0.05")  # grace 0.3 s
    study = study_at(tmp_path)
    seen = []

    def slow(params, trial):
        time.sleep(0.8)  # longer than the grace: only the beats keep it alive
        beat = study.get_trials()[trial.number].user_attrs[heartbeat.BEAT]
        seen.append((time.time() - beat, heartbeat.is_stale(study, study.get_trials()[trial.number],
                                                             time.time() + 60)))
        return score(params), {}

    tune(study, SPACE, {}, 1, slow)
    (age, stale_in_a_minute), = seen
    assert age < 0.3 and stale_in_a_minute is False  # own, active trial: never stale
    assert finished_trials(study)[0].state == TrialState.COMPLETE


def test_workers_sharing_a_journal_study_fill_the_budget_exactly(tmp_path):
    url = f"journal:{tmp_path / 'journal.log'}"
    budget, errors = 12, []

    def worker(wait: bool) -> None:
        try:
            study = open_study(url, "shared", 3, first=FIRST)

            def objective(params, trial):
                time.sleep(0.05)
                return score(params), {}

            tune(study, SPACE, {}, budget, objective, wait=wait)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i == 0,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors
    study = optuna.load_study(study_name="shared", storage=open_storage(url))
    trials = study.get_trials()
    counted = [t for t in trials if counts(t)]
    assert len(counted) == budget and all(t.state == TrialState.COMPLETE for t in counted)
    assert not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    others = [t for t in trials if not counts(t)]
    assert all(SURPLUS in t.user_attrs for t in others)  # only races, never a lost trial
    # the defaults run exactly once; which trial number they get is a race between workers
    assert sum(t.params == FIRST for t in trials) == 1


def test_bad_storage_urls_are_user_errors_without_the_password():
    with pytest.raises(UserError) as info:
        open_storage("postgresql://bench:hunter22@127.0.0.1:1/spurbench")
    assert "hunter22" not in str(info.value) and "--storage" in str(info.value)
    with pytest.raises(UserError, match="journal"):
        open_storage("journal:")


# -- the worker handshake -------------------------------------------------------------------
def publish(storage: str, key: str, status: str = "running", **extra) -> dict:
    from bench.run.record import RECORD_ATTR, record_study

    record = {"key": key, "status": status, "updated": key, "tracking_uri": "sqlite:////x.db",
              **extra}
    record_study(storage, key).set_user_attr(RECORD_ATTR, record)
    return record


def test_a_worker_finds_the_one_running_run_or_says_why_not(tmp_path):
    from bench.run.worker import find_run

    storage = f"sqlite:///{tmp_path / 'o.db'}"
    with pytest.raises(UserError, match=r"no running run after waiting 0s \(known: none\)"):
        find_run(storage, None, 0)
    publish(storage, "synthetic-aaa", status="finished")
    publish(storage, "synthetic-bbb")
    assert find_run(storage, None, 0)["key"] == "synthetic-bbb"
    assert find_run(storage, "synthetic-aaa", 0)["status"] == "finished"
    publish(storage, "synthetic-ccc")
    with pytest.raises(UserError, match="2 running runs; pick one with --run"):
        find_run(storage, None, 0)
    with pytest.raises(UserError, match="no run 'nope'.*synthetic-aaa \\(finished\\)"):
        find_run(storage, "nope", 0.2)


def test_a_worker_logs_where_the_coordinator_logs(tmp_path, monkeypatch):
    from bench.run.worker import tracking_uri_for

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    served = {"key": "k", "tracking_uri": "http://mlflow:5000"}
    assert tracking_uri_for(served, None) == "http://mlflow:5000"
    with pytest.raises(UserError, match="a worker must log to the coordinator's MLflow"):
        tracking_uri_for(served, "http://elsewhere:5000")
    secret = {"key": "k", "tracking_uri": "http://bench:***@mlflow:5000"}
    with pytest.raises(UserError, match="password is not stored"):
        tracking_uri_for(secret, None)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://bench:pw-9a@mlflow:5000")
    assert tracking_uri_for(secret, None) == "http://bench:pw-9a@mlflow:5000"
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    local = {"key": "k", "tracking_uri": f"sqlite:///{tmp_path / 'absent' / 'mlflow.db'}"}
    with pytest.raises(UserError, match="cannot reach; start `bench run` with --tracking-uri"):
        tracking_uri_for(local, None)


def test_bench_worker_cli(tmp_path):
    from typer.testing import CliRunner

    from bench.cli import app

    runner = CliRunner()
    help_text = runner.invoke(app, ["worker", "--help"]).output
    assert "Example:" in help_text and "--device" in help_text
    result = runner.invoke(app, ["worker", "--storage", f"sqlite:///{tmp_path / 'o.db'}",
                                 "--wait", "0", "--no-progress"])
    assert isinstance(result.exception, UserError)
    assert "start `bench run --storage URL ...` first" in str(result.exception)


@pytest.mark.parametrize("width", [1, 3])
def test_pruner_snapshot_decides_as_optunas_median_pruner(tmp_path, width):
    """The pruner reads completed trials once per tell; every decision, and so every
    trial's state, equals what Optuna's MedianPruner (reading them each time) gives."""
    from bench.tuning.study import SnapshotMedianPruner

    def objective(params, trial):
        for step in range(6):  # curves that cross: the median at a step moves
            trial.report(score(params) + 0.3 * math.sin(step + params["x"]), step)
            if trial.should_prune():
                raise optuna.TrialPruned()
        return score(params), {}

    states = {}
    for plain in (False, True):
        (tmp_path / str(plain)).mkdir()
        study = study_at(tmp_path / str(plain), seed=11)
        assert isinstance(study.pruner, SnapshotMedianPruner)
        if plain:
            study.pruner = optuna.pruners.MedianPruner(n_startup_trials=4, n_warmup_steps=3)
        tune(study, SPACE, {}, 16, objective, width=width)
        states[plain] = [(t.number, t.state, t.value) for t in study.get_trials()]
    assert states[False] == states[True]
    assert any(s == TrialState.PRUNED for _, s, _ in states[True])  # the pruner acted


@pytest.mark.parametrize("width", [1, 3])
def test_tpe_reads_the_trials_once_per_trial_and_draws_what_fresh_reads_draw(tmp_path,
                                                                             monkeypatch, width):
    """TrialSeededTPE hands TPE a view of the study whose trial lists are read once per
    trial; every trial's parameters equal those drawn with a fresh read per parameter
    (TPE's own way), past the start-up draws too, with fewer reads of the storage."""
    from bench.tuning.study import TrialSeededTPE

    reads = {}
    params = {}
    real = optuna.Study._get_trials
    for fresh in (False, True):
        count = [0]

        def counted(self, *a, count=count, **kw):  # noqa: ANN001, ANN002, ANN003, ANN202
            count[0] += 1
            return real(self, *a, **kw)

        monkeypatch.setattr(optuna.Study, "_get_trials", counted)
        if fresh:
            monkeypatch.setattr(TrialSeededTPE, "_seen", lambda self, study, trial: study)
        (tmp_path / str(fresh)).mkdir()
        study = study_at(tmp_path / str(fresh), seed=5)
        space = {**SPACE, "y": Float(-1.0, 1.0, 0.1), "k": Int(1, 9, 3)}
        tune(study, space, {}, 16, lambda p, t: (score(p) - p["y"] ** 2 + 0.01 * p["k"], {}),
             width=width)
        params[fresh] = [t.params for t in study.get_trials()]
        reads[fresh] = count[0]
    assert params[False] == params[True]
    assert len(params[True]) == 16 and len({json.dumps(p, sort_keys=True)
                                            for p in params[True]}) > 8
    assert reads[False] < reads[True] - 16  # at least one read saved per trial
