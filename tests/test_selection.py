"""Selection rules (DESIGN §7) on hand-made validation results, and the refusal of
methods that need group labels a setting withholds."""

from __future__ import annotations

import json

import optuna
import polars as pl
import pytest
import torch
from tuning_helpers import TINY, bench_cmd, plugin_dir, quiet_env, study_for

from bench.errors import UserError
from bench.report.metrics import compute
from bench.run.runner import Run, RunConfig
from bench.tuning.selection import RULES, check_allowed, get_rule, labels_used, select_score
from bench.tuning.space import Choice
from bench.tuning.study import open_study, tune

# Validation groups (y, a) and sizes; the classes are 340 vs 160 examples.
GROUPS = [(0, 0, 300), (0, 1, 40), (1, 0, 40), (1, 1, 120)]
# Per-group accuracy of three hand-made models. A: high average, poor minority groups;
# B: flat 0.8 (best worst group); C: best worst class, neither best average nor worst group.
MODELS = {"A": (1.0, 0.4, 0.4, 1.0), "B": (0.8, 0.8, 0.8, 0.8), "C": (0.88, 0.75, 0.75, 0.95)}
EXPECTED = {"worst-group": "B", "worst-class": "C", "average": "A"}


def hand_made(model: str):
    ys, preds, masks = [], [], []
    for g, ((y, _, n), acc) in enumerate(zip(GROUPS, MODELS[model], strict=True)):
        hits = round(acc * n)
        ys += [y] * n
        preds += [y] * hits + [1 - y] * (n - hits)
        masks.append(g)
    y = torch.tensor(ys)
    group = torch.repeat_interleave(torch.arange(4), torch.tensor([n for *_, n in GROUPS]))
    group_masks = torch.stack([group == g for g in range(4)])
    names = [f"y={y},a={a}" for y, a, _ in GROUPS]
    return compute(torch.tensor(preds), y, group_masks, names, 2, torch.full((4,), 0.25))


def test_metrics_of_the_hand_made_models():
    a, c = hand_made("A").as_dict(), hand_made("C").as_dict()
    assert a["avg"] == pytest.approx(452 / 500) and a["wga"] == pytest.approx(0.4)
    assert a["worst_class"] == pytest.approx(136 / 160)  # class 1: (16 + 120) / 160
    assert c["worst_class"] == pytest.approx(294 / 340) and c["wga"] == pytest.approx(0.75)


@pytest.mark.parametrize("rule", sorted(EXPECTED))
def test_each_rule_selects_its_model(rule):
    scores = {m: select_score(hand_made(m).as_dict(), get_rule(rule)) for m in MODELS}
    assert max(scores, key=scores.get) == EXPECTED[rule]


@pytest.mark.parametrize("rule", sorted(EXPECTED))
def test_tuning_keeps_the_trial_its_rule_prefers(tmp_path, rule):
    study = open_study(f"sqlite:///{tmp_path / 'o.db'}", rule, 0, first={"model": "A"})
    for model in ("B", "C"):
        study.enqueue_trial({"model": model})
    metrics = {m: hand_made(m).as_dict() for m in MODELS}
    out = tune(study, {"model": Choice(("A", "B", "C"), "A")}, {}, 3,
               lambda p, t: (select_score(metrics[p["model"]], get_rule(rule)), {}))
    assert sorted(t.params["model"] for t in study.get_trials()) == ["A", "B", "C"]
    assert out.best_params == {"model": EXPECTED[rule]}


def test_which_rules_withhold_which_labels():
    hungry = [frozenset({"train"}), frozenset({"val"}), frozenset({"train", "val"})]
    for needs in hungry:
        check_allowed("m", needs, RULES["worst-group"])
        for rule in ("worst-class", "average"):
            with pytest.raises(UserError, match=f"method 'm' needs group labels on .*'{rule}'"):
                check_allowed("m", needs, RULES[rule])
    for rule in RULES.values():
        check_allowed("erm", frozenset(), rule)
    assert labels_used(frozenset(), RULES["worst-group"]) == ["val"]  # selection reads them
    assert labels_used(frozenset({"train"}), RULES["worst-group"]) == ["train", "val"]
    assert labels_used(frozenset(), RULES["worst-class"]) == []
    # at fixed parameters (no trials) nothing is selected, so no validation labels are read
    assert labels_used(frozenset(), RULES["worst-group"], tuned=False) == []
    assert labels_used(frozenset({"val"}), RULES["worst-group"], tuned=False) == ["val"]
    with pytest.raises(UserError, match="did you mean 'worst-class'"):
        get_rule("worst-clas")


def test_a_lone_label_hungry_method_is_refused(tmp_path, tmp_path_factory):
    import subprocess

    r = subprocess.run(
        bench_cmd("run", "--methods", "hungry", "--selection", "worst-class", "--plugins",
                  str(plugin_dir(tmp_path_factory)), "--runs-dir", str(tmp_path / "runs"), *TINY),
        capture_output=True, text=True, env=quiet_env(), timeout=300,
    )
    assert r.returncode == 2, r.stderr
    assert "error: method 'hungry' needs group labels on train" in r.stderr
    assert "'worst-class' withholds" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_several_methods_skip_the_hungry_one_and_select_by_worst_class(tmp_path, tmp_path_factory):
    opts = dict(a.split("=") for a in TINY[1::2])
    cfg = RunConfig(methods=["fasta", "hungry"], selection="worst-class", trials=3, seeds=1,
                    dataset_opts=opts, plugins=[plugin_dir(tmp_path_factory)],
                    runs_dir=tmp_path, progress=False)
    result = Run(cfg).execute()
    table = result.results
    hungry = table.filter(pl.col("method") == "hungry").row(0, named=True)
    assert hungry["status"] == "skipped" and "'worst-class' withholds" in hungry["reason"]
    fasta = table.filter(pl.col("method") == "fasta").row(0, named=True)
    assert fasta["status"] == "ok" and fasta["selection"] == "worst-class"
    assert fasta["group_labels_used"] == ""
    md = (result.run_dir / "leaderboard.md").read_text()
    assert "`hungry` skipped" in md and "worst-class" in md
    # the kept parameters are those of the trial with the best validation worst-class accuracy
    study = study_for(f"sqlite:///{result.run_dir / 'optuna.db'}", "fasta")
    complete = [t for t in study.get_trials() if t.state == optuna.trial.TrialState.COMPLETE]
    best = max(complete, key=lambda t: t.user_attrs["val_worst_class"])
    assert best.value == best.user_attrs["val_worst_class"]
    assert {k: v for k, v in json.loads(fasta["params"]).items() if k in best.params} == best.params
