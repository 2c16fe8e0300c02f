"""Evaluation-only datasets run only the methods that need no training, and every
dataset's own metrics (Dataset.extra_metrics) reach the results and the board."""

from __future__ import annotations

import json

import fixtures_clip_datasets as fc
import polars as pl
import pytest

from bench.run.runner import RunConfig, run

TINY = "openclip:spurbench-tiny:none"


def _run(tmp_path, monkeypatch, dataset: str, methods: list[str], root):  # noqa: ANN001, ANN202
    monkeypatch.setenv("SPURBENCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return run(RunConfig(dataset=dataset, methods=methods, data_root=root, encoder=TINY,
                         trials=0, seeds=1, params=[f"{m}.epochs=5" for m in methods
                                                    if m not in ("zeroshot",)],
                         runs_dir=tmp_path / "runs", device="cpu", progress=False))


def test_evaluation_only_dataset_runs_training_free_methods(tmp_path, monkeypatch):
    fc.write_counteranimal(tmp_path / "data")
    result = _run(tmp_path, monkeypatch, "counteranimal", ["zeroshot", "erm"], tmp_path / "data")
    rows = {r["method"]: r for r in result.results.iter_rows(named=True)}
    assert rows["erm"]["status"] == "skipped" and "evaluation-only" in rows["erm"]["reason"]
    zs = rows["zeroshot"]
    assert zs["status"] == "ok" and zs["val_wga"] is None  # there is no validation split
    extra = json.loads(zs["test_extra"])
    # common / counter accuracy from the per-group accuracies and counts, independently
    acc, n = json.loads(zs["test_groups"]), json.loads(zs["test_group_counts"])
    for kind, key in (("common", "common_acc"), ("counter", "counter_acc")):
        gs = [g for g in acc if g.endswith(f"a={kind}")]
        want = 100 * sum(acc[g] * n[g] for g in gs) / sum(n[g] for g in gs)
        assert extra[key] == pytest.approx(want)
    assert extra["drop"] == pytest.approx(extra["common_acc"] - extra["counter_acc"])
    md = (result.run_dir / "leaderboard.md").read_text()
    assert "The dataset's own metrics" in md and "counter_acc" in md
    assert "nan" not in md.split("## Per-group")[0]


def test_extra_metrics_of_a_trained_method_reach_the_board(tmp_path, monkeypatch):
    fc.write_urbancars(tmp_path / "data")
    result = _run(tmp_path, monkeypatch, "urbancars", ["erm"], tmp_path / "data")
    row = result.results.filter(pl.col("method") == "erm").row(0, named=True)
    assert row["status"] == "ok", row["reason"]
    assert {"bg_gap", "coobj_gap", "bg_coobj_gap"} <= set(json.loads(row["test_extra"]))
    assert "bg_gap" in (result.run_dir / "leaderboard.md").read_text()
