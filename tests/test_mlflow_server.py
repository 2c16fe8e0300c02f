"""`bench run --tracking-uri http://...` against a real `mlflow server` on loopback."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from tuning_helpers import TINY, bench_cmd, mlflow_runs, mlflow_server, plugin_dir, quiet_env


def test_parent_nested_runs_metrics_and_artifacts_reach_the_server(tmp_path, tmp_path_factory):
    url = mlflow_server()
    r = subprocess.run(
        bench_cmd("run", "--methods", "fasta", "--trials", "2", "--seeds", "2", "--no-progress",
                  "--tracking-uri", url, "--plugins", str(plugin_dir(tmp_path_factory)),
                  "--runs-dir", str(tmp_path / "runs"), *TINY),
        cwd=tmp_path, capture_output=True, text=True, env=quiet_env(), timeout=600,
    )
    assert r.returncode == 0, r.stderr
    run_dir = (tmp_path / "runs" / "latest").resolve()
    assert not (run_dir / "mlflow.db").exists()  # everything went to the server
    parent_id = json.loads((run_dir / "state.json").read_text())["parent_run_id"]

    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=url)
    parent = client.get_run(parent_id)
    assert parent.info.status == "FINISHED" and parent.info.run_name == run_dir.name
    assert parent.data.params["selection"] == "worst-group" and parent.data.params["trials"] == "2"
    assert parent.data.tags["spurbench.dataset"] == "synthetic"
    assert parent.data.tags["spurbench.dataset_fingerprint"]
    nested = [x for x in mlflow_runs(url) if x.data.tags.get("mlflow.parentRunId") == parent_id]
    trials = sorted((x for x in nested if x.data.tags["spurbench.kind"] == "trial"),
                    key=lambda x: x.info.run_name)
    finals = sorted((x for x in nested if x.data.tags["spurbench.kind"] == "final"),
                    key=lambda x: x.info.run_name)
    assert [x.info.run_name for x in trials] == ["fasta/trial-0", "fasta/trial-1"]
    assert [x.info.run_name for x in finals] == ["fasta/seed-0", "fasta/seed-1"]
    assert all(x.info.status == "FINISHED" for x in nested)

    groups = ["y_landbird_a_land", "y_landbird_a_water", "y_waterbird_a_land",
              "y_waterbird_a_water"]
    for trial in trials:  # per-group validation metrics, and the per-epoch pruning signal
        assert {f"val_group/{g}" for g in groups} <= set(trial.data.metrics)
        assert trial.data.params["lr"] and trial.data.tags["spurbench.state"] == "COMPLETE"
        epochs = int(trial.data.params["epochs"])
        history = client.get_metric_history(trial.info.run_id, "epoch_val_wga")
        assert sorted(m.step for m in history) == list(range(epochs))
    results = {}
    for final in finals:  # per-group test metrics and a per-group table artifact
        assert {f"test_group/{g}" for g in groups} <= set(final.data.metrics)
        local = client.download_artifacts(final.info.run_id, "per_group.json", str(tmp_path))
        table = json.loads(Path(local).read_text())
        assert table["test"]["y=waterbird,a=land"] == final.data.metrics[
            "test_group/y_waterbird_a_land"]
        results[final.info.run_name] = final.data.metrics["test_wga"]
    assert [a.path for a in client.list_artifacts(parent_id)] == [
        "leaderboard.md", "results.parquet", "wga-vs-avg.png"]
    served = client.download_artifacts(parent_id, "leaderboard.md", str(tmp_path / "dl"))
    assert Path(served).read_text() == (run_dir / "leaderboard.md").read_text()
    import polars as pl

    table = pl.read_parquet(run_dir / "results.parquet").sort("seed")
    assert table["test_wga"].to_list() == [results["fasta/seed-0"], results["fasta/seed-1"]]
