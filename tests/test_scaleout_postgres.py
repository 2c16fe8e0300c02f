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
from pathlib import Path

import pytest
from optuna.trial import TrialState
from tuning_helpers import (
    TINY,
    bench_cmd,
    free_port,
    mlflow_runs,
    mlflow_server,
    quiet_env,
    study_for,
)

from bench.tuning.study import SURPLUS, counts, heartbeat

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "postgres.sh"
PG_PASSWORD = "Pg-Sweep-Pw-3"
TRACKING_PW = "Mlflow-Sweep-Pw-5"
BUDGET = 8  # trials of one study, shared by four processes


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


BARRIER_PLUGIN = '''
"""A fast linear-head method whose first fit in each process waits until every process
of the sweep is inside a fit (SPURTEST_BARRIER=DIR, SPURTEST_BARRIER_N processes)."""
import os
import time
from pathlib import Path

import bench


def _barrier():
    folder = Path(os.environ["SPURTEST_BARRIER"])
    me = folder / f"in-{os.getpid()}"
    if me.exists():
        return
    me.touch()
    # no trial finishes before every process holds one, so none can take them all; the
    # deadline only turns a broken join into a failed assertion instead of a hang
    deadline = time.monotonic() + float(os.environ.get("SPURTEST_BARRIER_WAIT", "400"))
    while len(list(folder.glob("in-*"))) < int(os.environ["SPURTEST_BARRIER_N"]):
        if time.monotonic() > deadline:
            return
        time.sleep(0.1)


@bench.method
class SharedSweep(bench.Method):
    name = "sharedsweep"
    description = "a linear head; every process's first fit waits for the others (test plugin)"

    def search_space(self):
        return {"lr": bench.Float(1e-3, 3e-1, 3e-2, log=True), "epochs": bench.Int(2, 4, 3)}

    def fit(self, train, val, ctx):
        _barrier()
        head = ctx.make_head()
        cfg = bench.TrainConfig(epochs=ctx.params["epochs"], lr=ctx.params["lr"], batch_size=512)
        ctx.trainer.fit(head, train, cfg)
        return bench.Predictor(head)
'''
SHARED = "sharedsweep"


def test_three_workers_share_one_sweep(postgres, tmp_path):
    """Four processes, one study: every trial runs exactly once, and every process runs
    some. Participation does not depend on scheduling: each process's first fit blocks
    until all four are inside a fit, so no process can finish the budget alone."""
    url = postgres["url"]
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "spurtest_barrier.py").write_text(BARRIER_PLUGIN)
    barrier = tmp_path / "barrier"
    barrier.mkdir()
    tracking = mlflow_server().replace("http://", f"http://bench:{TRACKING_PW}@")
    env = quiet_env(SPURTEST_BARRIER=str(barrier), SPURTEST_BARRIER_N="4")
    workers = [
        subprocess.Popen(
            bench_cmd("worker", "--device", "cpu", "--wait", "300", "--no-progress",
                      "--plugins", str(plugins), "--runs-dir", str(tmp_path / f"worker{i}")),
            cwd=tmp_path, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            # secrets through the environment, as docs/scale-out.md recommends
            env={**env, "SPURBENCH_STORAGE": url, "MLFLOW_TRACKING_URI": tracking},
        )
        for i in range(3)
    ]
    coordinator = subprocess.Popen(
        bench_cmd("run", "--methods", SHARED, "--trials", str(BUDGET), "--seeds", "1",
                  "--storage", url, "--tracking-uri", tracking, "--no-progress",
                  "--plugins", str(plugins), "--runs-dir", str(tmp_path / "runs"), *TINY),
        cwd=tmp_path, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
    )
    processes = [coordinator, *workers]
    outputs = []
    for proc in processes:
        out, err = proc.communicate(timeout=900)
        outputs.append(out + err)
        assert proc.returncode == 0, err
    assert not any(s in text for text in outputs for s in (PG_PASSWORD, TRACKING_PW))
    for text in outputs[1:]:
        assert "joining run synthetic-" in text and "trials run here" in text
    pids = {str(p.pid) for p in processes}
    # every process reached the barrier (all joined the sweep) ...
    assert {p.name.removeprefix("in-") for p in barrier.iterdir()} == pids

    run_dir = (tmp_path / "runs" / "latest").resolve()
    parent_id = json.loads((run_dir / "state.json").read_text())["parent_run_id"]
    nested = [x for x in mlflow_runs(tracking)
              if x.data.tags.get("mlflow.parentRunId") == parent_id]
    trials = study_for(url, SHARED).get_trials()
    counted = [t for t in trials if counts(t)]
    # the trials add up to the budget: no more (no overrun), no fewer (no loss) ...
    assert len(counted) == BUDGET
    assert not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    # ... the rest are only admission races, never a lost or repeated trial
    assert all(SURPLUS in t.user_attrs for t in trials if not counts(t))
    assert len({json.dumps(t.params, sort_keys=True) for t in counted}) == BUDGET
    # ... and each was claimed by one of the four processes, every one of which ran some
    owners = [t.user_attrs[heartbeat.OWNER] for t in counted]
    assert {o.rpartition("/")[2] for o in owners} == pids
    # every counted trial is exactly one finished MLflow run on the server
    names = sorted(x.info.run_name for x in nested if x.data.tags["spurbench.kind"] == "trial"
                   and x.info.run_name.startswith(SHARED) and x.info.status == "FINISHED")
    assert names == sorted(f"{SHARED}/trial-{t.number}" for t in counted)
    finals = [x for x in nested if x.info.run_name == f"{SHARED}/seed-0"]
    assert len(finals) == 1 and finals[0].info.status == "FINISHED"  # seeds run once
    md = (run_dir / "leaderboard.md").read_text()
    assert f"`{SHARED}`" in md
