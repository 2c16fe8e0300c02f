"""Publishing into a folder that already holds a board merges: the run's methods replace
their rows, the others keep theirs and their provenance; incomparable boards are refused
(exit 2) unless --replace."""

from __future__ import annotations

import json

import polars as pl
import pytest
from conftest import bench_cli

from bench.errors import UserError
from bench.report.publish import publish
from bench.run.runner import RunConfig, run

SMALL = {"n_train": "300", "n_val": "150", "n_test": "150"}


@pytest.fixture(scope="module")
def table(tmp_path_factory) -> pl.DataFrame:
    tmp = tmp_path_factory.mktemp("merge")
    mp = pytest.MonkeyPatch()
    mp.setenv("SPURBENCH_CACHE", str(tmp / "cache"))
    mp.delenv("MLFLOW_TRACKING_URI", raising=False)
    try:
        result = run(RunConfig(
            dataset="synthetic", methods=["erm", "reweight"], dataset_opts=SMALL, trials=0,
            seeds=1, params=["erm.epochs=2", "reweight.epochs=2"], runs_dir=tmp / "runs",
            device="cpu", progress=False,
        ))
    finally:
        mp.undo()
    return pl.read_parquet(result.run_dir / "results.parquet")


def _board(folder) -> dict:
    (path,) = folder.glob("*.json")
    return json.loads(path.read_text())


def _methods(doc: dict) -> dict[str, str]:
    return {m["method"]: m["per_seed"][0]["run"] for m in doc["methods"]}


def test_publishing_a_second_run_keeps_the_first_runs_methods(table, tmp_path):
    erm = table.filter(pl.col("method") == "erm")
    other = table.filter(pl.col("method") == "reweight")
    other = other.with_columns(pl.lit("run-two").alias("run"))
    publish(erm, tmp_path, plots=False)
    first_run = _methods(_board(tmp_path))["erm"]
    done = publish(other, tmp_path, plots=False)
    assert _methods(_board(tmp_path)) == {"erm": first_run, "reweight": "run-two"}
    assert any("erm kept from the published board" in d for d in done[0].dropped)


def test_republishing_a_method_replaces_its_rows(table, tmp_path):
    publish(table, tmp_path, plots=False)
    again = table.filter(pl.col("method") == "erm").with_columns(pl.lit("run-three").alias("run"))
    publish(again, tmp_path, plots=False)
    runs = _methods(_board(tmp_path))
    assert runs["erm"] == "run-three" and runs["reweight"] != "run-three"


def test_incomparable_board_is_refused_unless_replace(table, tmp_path):
    publish(table, tmp_path, plots=False)
    moved = table.with_columns(pl.lit("0" * 16).alias("dataset_fingerprint"))
    with pytest.raises(UserError, match="dataset_fingerprint.*--replace"):
        publish(moved, tmp_path, plots=False)
    publish(moved, tmp_path, plots=False, replace=True)
    assert _board(tmp_path)["dataset_fingerprint"] == "0" * 16


def test_cli_refusal_is_one_line_exit_2(table, tmp_path):
    publish(table, tmp_path / "boards", plots=False)
    src = tmp_path / "moved.parquet"
    table.with_columns(pl.lit("f" * 16).alias("dataset_fingerprint")).write_parquet(src)
    r = bench_cli("leaderboard", "publish", "--from", str(src), "--to", str(tmp_path / "boards"),
                  "--no-plots")
    assert r.returncode == 2, r.stderr
    assert r.stderr.startswith("error:") and "Traceback" not in r.stderr
    r = bench_cli("leaderboard", "publish", "--from", str(src), "--to", str(tmp_path / "boards"),
                  "--no-plots", "--replace")
    assert r.returncode == 0, r.stderr
