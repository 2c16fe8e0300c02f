"""The benchmark protocol: a result depends only on (method, data, budget, seed).

Seed streams (tuning vs final), sampler seeds independent of the other methods in a run,
sweep replicates, TPE's start-up sized to the budget, the defaults trial that always
runs, label budgets enforced on the splits a method receives, and a run directory that
belongs to one configuration.
"""

from __future__ import annotations

import json

import optuna
import polars as pl
import pytest
import torch
from conftest import SMALL, bench_cli
from optuna.trial import TrialState

from bench.data.store import LabelWithheld
from bench.errors import UserError
from bench.plugins import registry
from bench.run.fitting import Fitter
from bench.run.runner import Run, RunConfig, run
from bench.tuning.seeding import TUNING_SEED_BASE
from bench.tuning.space import Int, suggest_all, violations
from bench.tuning.study import DEFAULTS, TrialSeededTPE, open_study, startup_trials, tune

OPTS = {"n_train": "800", "n_val": "300", "n_test": "400"}
FAST = ["erm.epochs=5", "reweight.epochs=5"]


def small(tmp_path, name: str, **kw) -> RunConfig:
    base = dict(dataset_opts=OPTS, trials=3, seeds=2, out=tmp_path / name, runs_dir=tmp_path,
                progress=False, head="linear")
    return RunConfig(**{**base, **kw})


def rows_of(result, method: str) -> pl.DataFrame:
    keep = ["seed", "params", "test_wga", "test_avg", "val_wga", "best_is_default"]
    return result.results.filter(pl.col("method") == method).sort("seed").select(keep)


def test_a_methods_rows_do_not_depend_on_the_other_methods(tmp_path):
    alone = run(small(tmp_path, "alone", methods=["erm"], params=FAST[:1]))
    shared = run(small(tmp_path, "shared", methods=["erm", "reweight"], params=FAST))
    assert rows_of(alone, "erm").equals(rows_of(shared, "erm"))


def test_tuning_trials_and_final_seeds_use_disjoint_seed_streams(tmp_path, monkeypatch):
    seen: list[tuple[bool, int]] = []
    original = Fitter.fit_many

    def spy(self, entry, params, seeds, trials=None):
        seen.extend((trials is not None, s) for s in seeds)
        return original(self, entry, params, seeds, trials)

    monkeypatch.setattr(Fitter, "fit_many", spy)
    result = run(small(tmp_path, "r", methods=["erm"], params=FAST[:1], replicates=2))
    trial_seeds = {s for is_trial, s in seen if is_trial}
    final = {s for is_trial, s in seen if not is_trial}
    assert trial_seeds == {TUNING_SEED_BASE, TUNING_SEED_BASE + 1}  # one per replicate
    assert final == {0, 1, 2, 3}  # replicate 0: seeds 0, 1; replicate 1: seeds 2, 3
    rows = result.results.sort("seed")
    assert rows["replicate"].to_list() == [0, 0, 1, 1]


def test_replicates_tune_with_independent_sampler_seeds_and_the_board_says_so(tmp_path):
    result = run(small(tmp_path, "rep", methods=["erm"], params=FAST[:1], replicates=2))
    storage = f"sqlite:///{tmp_path / 'rep' / 'optuna.db'}"
    names = sorted(optuna.get_all_study_names(storage))
    studies = [optuna.load_study(study_name=n, storage=storage) for n in names if "|erm|" in n]
    assert len(studies) == 2
    draws = [[t.params for t in s.get_trials()][1:] for s in studies]  # trial 0: defaults
    assert draws[0] != draws[1]
    board = (tmp_path / "rep" / "leaderboard.md").read_text()
    assert "| 4 (2 sweeps) |" in board and "--replicates" in board
    assert result.board.ranked["replicates"].to_list() == [2]


def test_tpe_startup_is_sized_to_the_budget(tmp_path):
    assert [startup_trials(b) for b in (1, 8, 16, 40, 200)] == [2, 2, 4, 10, 10]
    study = open_study(f"sqlite:///{tmp_path / 's.db'}", "s", 1, first={"x": 1}, budget=8)
    assert isinstance(study.sampler, TrialSeededTPE) and study.sampler.n_startup_trials == 2


def _space_study(tmp_path, budget: int) -> optuna.Study:
    return open_study(f"sqlite:///{tmp_path / 'd.db'}", "d", 3, first={"n": 2}, budget=budget)


def test_an_interrupted_defaults_trial_is_queued_again_and_runs(tmp_path):
    space = {"n": Int(1, 5, 2)}
    study = _space_study(tmp_path, 4)
    calls = []

    def cut_first(params, trial):
        calls.append(params)
        if len(calls) == 1:
            raise KeyboardInterrupt  # e.g. Ctrl-C during the defaults trial
        return float(params["n"]), {}

    with pytest.raises(KeyboardInterrupt):
        tune(study, space, {}, 4, cut_first)
    out = tune(_space_study(tmp_path, 4), space, {}, 4, cut_first)
    done = [t for t in study.get_trials() if t.state == TrialState.COMPLETE]
    assert len(done) == 4
    assert [t.params for t in done if t.user_attrs.get(DEFAULTS)] == [{"n": 2}]
    assert out.best_is_default == (max(t.value for t in done) == 2.0)


def test_the_defaults_trial_keeps_a_slot_when_the_budget_fills(tmp_path):
    """Other trials leave one slot for the defaults while it has not run."""
    space = {"n": Int(1, 5, 2)}
    study = _space_study(tmp_path, 3)
    first = study.ask()  # the defaults trial, cut off by a dead process
    study.tell(first, state=TrialState.FAIL)
    out = tune(study, space, {}, 3, lambda p, t: (float(p["n"]), {}))
    complete = [t for t in study.get_trials() if t.state == TrialState.COMPLETE]
    assert out.finished == 3 and sum(bool(t.user_attrs.get(DEFAULTS)) for t in complete) == 1


def test_warmup_stays_below_epochs_when_sampled_and_when_fixed():
    space = {"epochs": Int(1, 4, 3), "warmup": Int(0, 10, 2, below="epochs")}
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(40):
        trial = study.ask()
        p = suggest_all(trial, space, {}, {})
        assert p["warmup"] < p["epochs"]
        study.tell(trial, 0.0)
    assert violations(space, {"epochs": 3, "warmup": 3}) == ["warmup=3 must be below epochs=3"]
    with pytest.raises(UserError, match="warmup=5 must be below epochs=5"):
        Run(RunConfig(methods=["sfr"], params=["sfr.epochs=5", "sfr.warmup=5"],
                      dataset_opts=OPTS, progress=False))


LEAKY = '''
import bench


@bench.method
class Peeks(bench.Method):
    name = "peeks"
    description = "declares no group labels, then reads them (test plugin)"

    def search_space(self):
        return {"epochs": bench.Int(2, 3, 2)}

    def fit(self, train, val, ctx):
        head = ctx.make_head()
        weights = bench.group_balanced_weights(train.g, train.n_groups)
        ctx.trainer.fit(head, train, bench.TrainConfig(epochs=2), bench.Hooks(weights=weights))
        return bench.Predictor(head)


@bench.method
class PeeksVal(Peeks):
    name = "peeks-val"
    description = "declares train labels, reads val's (test plugin)"
    group_labels = frozenset({"train"})

    def fit(self, train, val, ctx):
        val.a.sum()
        return super().fit(train, val, ctx)


@bench.method
class PeeksStore(Peeks):
    name = "peeks-store"
    description = "reads labels through the store (test plugin)"

    def fit(self, train, val, ctx):
        ctx.store.splits["test"]
        return super().fit(train, val, ctx)
'''


@pytest.fixture
def peeking_plugins(tmp_path_factory):
    folder = tmp_path_factory.getbasetemp() / "peeking-plugins"
    folder.mkdir(exist_ok=True)
    (folder / "peeks.py").write_text(LEAKY)
    registry.load_plugins([folder])
    return folder


@pytest.mark.parametrize(("method", "label"), [
    ("peeks", "train.g"), ("peeks-val", "val.a"), ("peeks-store", "split 'test'"),
])
def test_undeclared_labels_fail_the_trial_with_a_reason(tmp_path, peeking_plugins, method, label):
    cfg = small(tmp_path, method, methods=[method], plugins=[peeking_plugins], trials=2, seeds=1)
    rows = run(cfg).results
    (row,) = rows.rows(named=True)
    assert row["status"] == "failed" and label in row["reason"]
    assert "every trial failed" in row["reason"]


def test_a_declared_method_reads_its_labels_and_nothing_else(tmp_path):
    r = Run(small(tmp_path, "decl", methods=["reweight", "dfr", "erm"]))
    train, val = r.lent_splits(registry.get_method("reweight"))
    assert train.g.numel() and not val.has_group_labels
    train, val = r.lent_splits(registry.get_method("dfr"))
    assert val.g.numel() and not train.has_group_labels
    train, val = r.lent_splits(registry.get_method("erm"))
    with pytest.raises(LabelWithheld, match="train.g"):
        train.g  # noqa: B018
    with pytest.raises(LabelWithheld, match="metadata"):
        r.context(registry.get_method("erm"), {}, 0).store.spec.metadata  # noqa: B018


def test_label_free_selection_sees_no_validation_group_labels(tmp_path, monkeypatch):
    from bench.report import metrics

    seen = []
    original = metrics.evaluate

    def spy(predictor, split, store):
        seen.append(split.has_group_labels)
        return original(predictor, split, store)

    monkeypatch.setattr("bench.run.fitting.evaluate", spy)
    r = Run(small(tmp_path, "wc", methods=["erm"], selection="worst-class"))
    score = r.fitter.selection_score(r.fit(registry.get_method("erm"), {"epochs": 2}, 0))
    assert seen == [False] and 0 < score <= 1
    train, val = r.lent_splits(registry.get_method("erm"))
    assert not train.has_group_labels and not val.has_group_labels


def test_a_different_configuration_is_refused_in_an_existing_run_directory(tmp_path):
    out = tmp_path / "one"
    args = ["run", "--methods", "erm", "--trials", "1", "--seeds", "1", "--out", str(out),
            "--no-progress", "--params", "erm.epochs=5", *SMALL]
    first = bench_cli(*args)
    assert first.returncode == 0, first.stderr
    before = sorted(p.name for p in (out / "rows").iterdir())
    again = bench_cli(*[a if a != "1" else "2" for a in args])  # --trials 2 --seeds 2
    assert again.returncode == 2
    err = again.stderr.strip().splitlines()[-1]
    assert "belongs to another configuration" in err and "trials: 1 there, 2 now" in err
    assert sorted(p.name for p in (out / "rows").iterdir()) == before


def test_a_torn_state_file_is_set_aside_and_the_run_resumes(tmp_path):
    cfg = small(tmp_path, "torn", methods=["erm"], params=FAST[:1], trials=1, seeds=1)
    first = run(cfg)
    (tmp_path / "torn" / "state.json").write_text('{"parent_run_id": "ab')  # torn write
    again = run(cfg)
    assert (tmp_path / "torn" / "state.json.corrupt").exists()
    assert json.loads((tmp_path / "torn" / "state.json").read_text())["parent_run_id"]
    assert again.results["test_wga"].to_list() == first.results["test_wga"].to_list()


def test_results_record_the_head_a_method_trained(tmp_path):
    result = run(small(tmp_path, "heads", methods=["dfr", "erm"], head="auto", trials=0,
                       seeds=1, params=FAST[:1]))
    heads = dict(result.results.select("method", "head").iter_rows())
    assert heads == {"dfr": "linear", "erm": "prompt"}


def test_a_fit_does_not_depend_on_what_the_process_did_before(tmp_path):
    """The first sfr fit trains its ERM reference, the second finds it cached: same head
    (making a head never draws from the global stream that dropout masks use)."""
    from conftest import default_params

    r = Run(small(tmp_path, "order", methods=["sfr"]))
    entry = registry.get_method("sfr")
    params = {**default_params(entry), "epochs": 3, "warmup": 1}
    x = r.store.splits["val"].x
    first = r.fit(entry, params, 0).logits(x)
    assert r.references.trained == 1
    second = r.fit(entry, params, 0).logits(x)
    assert r.references.trained == 1 and torch.equal(first, second)


def test_exit_status_1_when_every_method_failed(tmp_path, tmp_path_factory):
    folder = tmp_path_factory.getbasetemp() / "peeking-plugins"
    folder.mkdir(exist_ok=True)
    (folder / "peeks.py").write_text(LEAKY)
    r = bench_cli("run", "--methods", "peeks", "--plugins", str(folder), "--trials", "1",
                  "--seeds", "1", "--out", str(tmp_path / "x"), "--no-progress", *SMALL)
    assert r.returncode == 1, r.stderr
    assert "no method produced a result" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.parametrize(("param", "why"), [
    ("erm.lr=-5", ">= 0"), ("erm.weight_decay=-1", ">= 0"), ("erm.epochs=0", ">= 1"),
])
def test_fixed_values_outside_their_domain_are_refused(param, why):
    from bench.run.config import parse_params

    registry.load_plugins()
    with pytest.raises(UserError, match=why):
        parse_params([param], {"erm": registry.get_method("erm")})
    assert parse_params(["erm.weight_decay=0", "erm.epochs=2"],
                        {"erm": registry.get_method("erm")}) == {
        "erm": {"weight_decay": 0.0, "epochs": 2}}
