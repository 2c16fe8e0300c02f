"""Scale-out on a real PostgreSQL: a `bench run` coordinator and three `bench worker`s
share one sweep. The database comes from the project's own scripts/postgres.sh, which
installs PostgreSQL with apt-get where it is missing; the test is skipped only where
that script reports PostgreSQL cannot be installed (exit code 3)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
from optuna.trial import TrialState
from tuning_helpers import (
    TINY,
    bench_cmd,
    free_port,
    mlflow_runs,
    mlflow_server,
    plugin_dir,
    quiet_env,
    study_for,
)

from bench import heartbeat
from bench.tuning import SURPLUS, counts

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "postgres.sh"
PG_PASSWORD = "Pg-Sweep-Pw-3"
TRACKING_PW = "Mlflow-Sweep-Pw-5"
METHODS = ("fasta",)  # one study, shared by four processes
BUDGET = 8


@pytest.fixture(scope="module")
def postgres():
    base = Path(tempfile.mkdtemp(prefix="spurbench-pg-"))
    base.chmod(0o711)  # the server runs as the postgres user and must reach its data dir
    port = free_port()
    data = base / "data"
    r = subprocess.run(["bash", str(SCRIPT), "start", str(data), str(port), "spurbench", "bench"],
                       capture_output=True, text=True, timeout=1200,
                       env={**os.environ, "POSTGRES_PASSWORD": PG_PASSWORD})
    if r.returncode == 3:
        shutil.rmtree(base, ignore_errors=True)
        pytest.skip(f"PostgreSQL cannot be installed on this machine: {r.stderr.strip()}")
    assert r.returncode == 0, r.stderr
    assert PG_PASSWORD not in r.stdout + r.stderr
    yield {"url": f"postgresql://bench:{PG_PASSWORD}@127.0.0.1:{port}/spurbench",
           "data": str(data), "port": str(port)}
    subprocess.run(["bash", str(SCRIPT), "stop", str(data)], capture_output=True, timeout=120)
    shutil.rmtree(base, ignore_errors=True)


def test_postgres_script_is_idempotent(postgres):
    again = subprocess.run(
        ["bash", str(SCRIPT), "start", postgres["data"], postgres["port"], "spurbench", "bench"],
        capture_output=True, text=True, timeout=300,
        env={**os.environ, "POSTGRES_PASSWORD": PG_PASSWORD},
    )
    assert again.returncode == 0, again.stderr
    assert again.stdout.strip() == f"postgresql://bench:***@127.0.0.1:{postgres['port']}/spurbench"
    import psycopg

    with psycopg.connect(host="127.0.0.1", port=postgres["port"], user="bench",
                         password=PG_PASSWORD, dbname="spurbench") as conn:
        assert conn.info.server_version > 0
    with pytest.raises(psycopg.OperationalError):  # TCP needs the password
        psycopg.connect(host="127.0.0.1", port=postgres["port"], user="bench",
                        password="wrong", dbname="spurbench")


def test_three_workers_share_one_sweep(postgres, tmp_path, tmp_path_factory):
    url = postgres["url"]
    plugins = str(plugin_dir(tmp_path_factory))
    tracking = mlflow_server().replace("http://", f"http://bench:{TRACKING_PW}@")
    env = quiet_env(SPURTEST_FIT_SLEEP="0.4")
    workers = [
        subprocess.Popen(
            bench_cmd("worker", "--device", "cpu", "--wait", "300", "--no-progress",
                      "--plugins", plugins, "--runs-dir", str(tmp_path / f"worker{i}")),
            cwd=tmp_path, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            # secrets through the environment, as docs/scale-out.md recommends
            env={**env, "SPURBENCH_STORAGE": url, "MLFLOW_TRACKING_URI": tracking},
        )
        for i in range(3)
    ]
    time.sleep(1)  # the workers start first and wait for the run to appear
    coordinator = subprocess.Popen(
        bench_cmd("run", "--methods", ",".join(METHODS), "--trials", str(BUDGET), "--seeds", "1",
                  "--storage", url, "--tracking-uri", tracking, "--no-progress",
                  "--plugins", plugins, "--runs-dir", str(tmp_path / "runs"), *TINY),
        cwd=tmp_path, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
    )
    outputs = []
    for proc in [coordinator, *workers]:
        out, err = proc.communicate(timeout=600)
        outputs.append(out + err)
        assert proc.returncode == 0, err
    assert not any(s in text for text in outputs for s in (PG_PASSWORD, TRACKING_PW))
    for text in outputs[1:]:
        assert "joining run synthetic-" in text and "trials run here" in text

    run_dir = (tmp_path / "runs" / "latest").resolve()
    parent_id = json.loads((run_dir / "state.json").read_text())["parent_run_id"]
    nested = [x for x in mlflow_runs(tracking)
              if x.data.tags.get("mlflow.parentRunId") == parent_id]
    owners = set()
    for method in METHODS:
        trials = study_for(url, method).get_trials()
        counted = [t for t in trials if counts(t)]
        # the trials add up to the budget: no more (no overrun), no fewer (no loss) ...
        assert len(counted) == BUDGET
        assert not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
        # ... the rest are only admission races, never a lost or repeated trial
        assert all(SURPLUS in t.user_attrs for t in trials if not counts(t))
        assert len({json.dumps(t.params, sort_keys=True) for t in counted}) == BUDGET
        owners |= {t.user_attrs[heartbeat.OWNER] for t in counted}
        # every counted trial is exactly one finished MLflow run on the server
        names = sorted(x.info.run_name for x in nested if x.data.tags["spurbench.kind"] == "trial"
                       and x.info.run_name.startswith(method) and x.info.status == "FINISHED")
        assert names == sorted(f"{method}/trial-{t.number}" for t in counted)
        finals = [x for x in nested if x.info.run_name == f"{method}/seed-0"]
        assert len(finals) == 1 and finals[0].info.status == "FINISHED"  # seeds run once
    assert len(owners) >= 2  # the sweep really was shared between processes
    md = (run_dir / "leaderboard.md").read_text()
    assert all(f"`{m}`" in md for m in METHODS)
