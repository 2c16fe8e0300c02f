"""A password in --storage or --tracking-uri never leaves the process: not in stdout or
stderr (logs, warnings, errors), MLflow params and tags, the Optuna storage, results,
leaderboards or any file of the run directory."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import polars as pl
import pytest
from tuning_helpers import TINY, bench_cmd, mlflow_runs, mlflow_server, plugin_dir, quiet_env

from bench.errors import UserError
from bench.run.redact import redact, remember
from bench.run.runner import Run, RunConfig
from bench.run.worker import list_runs, tracking_uri_for

STORAGE_PW = "St0rage-Pw-91"
TRACKING_PW = "Track-Pw-47"


@pytest.mark.parametrize("text, masked", [
    ("postgresql://bench:s3cret@db:5432/x", "postgresql://bench:***@db:5432/x"),
    ("mysql://u:p@ss@h/db", "mysql://u:***@h/db"),  # an unescaped '@' in the password
    ("http://bench:tok@127.0.0.1:5000/api", "http://bench:***@127.0.0.1:5000/api"),
    ("redis://:pw12@cache:6379/0", "redis://:***@cache:6379/0"),
    ("sqlite:////tmp/o.db?password=abc&x=1", "sqlite:////tmp/o.db?password=***&x=1"),
    ("https://host/api?token=abc123", "https://host/api?token=***"),
    ("no secrets: user@host, a@b.c, http://host:5000", "no secrets: user@host, a@b.c, http://host:5000"),
])
def test_redact_masks_passwords_in_urls(text, masked):
    assert redact(text) == masked


def test_remembered_passwords_are_masked_outside_urls():
    remember("postgresql://bench:Rem%40mbered-7@db/x")
    assert redact("auth failed for Rem@mbered-7 (Rem%40mbered-7)") == "auth failed for *** (***)"


def files_under(*folders: Path) -> list[Path]:
    return [p for f in folders for p in f.rglob("*") if p.is_file()]


def test_passwords_never_leave_a_run(tmp_path, tmp_path_factory):
    server = mlflow_server()
    tracking = server.replace("http://", f"http://bench:{TRACKING_PW}@")
    storage = f"sqlite:///{tmp_path / 'studies' / 'optuna.db'}?password={STORAGE_PW}"
    (tmp_path / "studies").mkdir()
    # `leaky` fails every trial with an error message (and a log line) holding both URLs
    env = quiet_env(SPURTEST_LEAK=f"{storage} and {tracking}")
    args = ["run", "--methods", "fasta,leaky", "--trials", "2", "--seeds", "1",
            "--storage", storage, "--tracking-uri", tracking, "--runs-dir", str(tmp_path / "runs"),
            "--plugins", str(plugin_dir(tmp_path_factory)), *TINY]
    r = subprocess.run(bench_cmd(*args), cwd=tmp_path, capture_output=True, text=True, env=env,
                       timeout=600)
    assert r.returncode == 0, r.stderr
    secrets = (STORAGE_PW, TRACKING_PW)
    for stream in (r.stdout, r.stderr):
        assert not any(s in stream for s in secrets)
    assert "connecting to sqlite:///" in r.stderr and "password=***" in r.stderr  # the log line
    run_dir = (tmp_path / "runs" / "latest").resolve()

    # every file the run wrote (results, leaderboard, config, state, the Optuna DB), as bytes
    written = files_under(run_dir, tmp_path / "studies")
    assert {"results.parquet", "leaderboard.md", "config.json", "optuna.db"} <= {
        p.name for p in written}
    for path in written:
        data = path.read_bytes()
        assert not any(s.encode() in data for s in secrets), path
    config = json.loads((run_dir / "config.json").read_text())
    assert config["storage"].endswith("password=***")
    assert config["tracking_uri"] == server.replace("http://", "http://bench:***@")
    results = pl.read_parquet(run_dir / "results.parquet")
    leaky = results.filter(pl.col("method") == "leaky").row(0, named=True)
    assert leaky["status"] == "failed" and "password=***" in leaky["reason"]
    assert "`leaky` failed" in (run_dir / "leaderboard.md").read_text()
    (record,) = list_runs(storage)
    assert record["tracking_uri"] == config["tracking_uri"]

    # MLflow: params and tags of the parent and every nested run
    parent_id = json.loads((run_dir / "state.json").read_text())["parent_run_id"]
    runs = [x for x in mlflow_runs(server) if parent_id in (
        x.info.run_id, x.data.tags.get("mlflow.parentRunId"))]
    assert len(runs) == 1 + 2 + 1 + 2 + 1  # parent, fasta trials + seed, leaky trials + row
    for run in runs:
        for value in [*run.data.params.values(), *run.data.tags.values()]:
            assert not any(s in value for s in secrets), run.info.run_name
    reasons = [x.data.tags["spurbench.fail_reason"] for x in runs if x.info.run_name.startswith(
        "leaky/trial")]
    assert len(reasons) == 2 and all("password=***" in x for x in reasons)

    # a worker cannot take the tracking password from the storage: it is not there
    with pytest.raises(UserError, match="password is not stored") as info:
        tracking_uri_for(record, None)
    assert TRACKING_PW not in str(info.value)


def test_a_bad_storage_url_error_hides_its_password(tmp_path):
    url = f"postgresql://bench:{STORAGE_PW}@127.0.0.1:1/spurbench"
    with pytest.raises(UserError) as info:
        Run(RunConfig(methods=["erm"], storage=url, runs_dir=tmp_path, progress=False))
    message = str(info.value)
    assert message.startswith("--storage postgresql://bench:***@127.0.0.1:1/spurbench: cannot")
    assert STORAGE_PW not in message
