"""Helpers for the tuning / resume / scale-out / tracking tests.

Tiny method plugins (written into a --plugins folder) so these tests do not depend on
the built-in methods, an MLflow server started once per test process, and readers for
what a run left in Optuna and MLflow.
"""

from __future__ import annotations

import atexit
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import optuna

TINY = ["--dataset-opt", "n_train=800", "--dataset-opt", "n_val=300", "--dataset-opt", "n_test=300"]

PLUGIN = '''
"""Test plugins: fast linear-head methods, a label-hungry one, and one that leaks a URL."""
import os
import time
from pathlib import Path

import bench


def _gate():
    """SPURTEST_GATE=DIR counts fits; the fit numbered SPURTEST_BLOCK_AT blocks (so a
    test can signal the process mid-trial) after writing DIR/blocking."""
    gate = os.environ.get("SPURTEST_GATE")
    if gate:
        folder = Path(gate)
        folder.mkdir(exist_ok=True)
        n = len(list(folder.glob("fit-*")))
        (folder / f"fit-{n}-{os.getpid()}").touch()
        if n == int(os.environ.get("SPURTEST_BLOCK_AT", "-1")):
            (folder / "blocking").write_text(str(os.getpid()))
            time.sleep(300)
    time.sleep(float(os.environ.get("SPURTEST_FIT_SLEEP", "0")))


class _Fast(bench.Method):
    description = "a linear head trained for a few epochs (test plugin)"

    def search_space(self):
        return {"lr": bench.Float(1e-3, 3e-1, 3e-2, log=True), "epochs": bench.Int(2, 4, 3)}

    def fit(self, train, val, ctx):
        _gate()
        head = ctx.make_head()
        cfg = bench.TrainConfig(epochs=ctx.params["epochs"], lr=ctx.params["lr"], batch_size=512)
        ctx.trainer.fit(head, train, cfg)
        return bench.Predictor(head)


@bench.method
class FastA(_Fast):
    name = "fasta"


@bench.method
class FastB(_Fast):
    name = "fastb"


@bench.method
class Hungry(_Fast):
    name = "hungry"
    description = "needs training group labels (test plugin)"
    group_labels = frozenset({"train"})


@bench.method
class Leaky(_Fast):
    name = "leaky"
    description = "fails with a message that holds a secret URL (test plugin)"

    def fit(self, train, val, ctx):
        url = os.environ.get("SPURTEST_LEAK", "")
        ctx.log.warning("connecting to %s", url)
        raise RuntimeError(f"cannot reach {url}")
'''


def plugin_dir(tmp_path_factory) -> Path:  # noqa: ANN001 - pytest's TempPathFactory
    """One plugin folder per test session: the registry refuses a method defined in two
    files, so every in-process run must load the same file."""
    folder = tmp_path_factory.getbasetemp() / "spurtest-plugins"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "spurtest_methods.py"
    if not path.exists():
        path.write_text(PLUGIN)
    return folder


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def bench_cmd(*args: str) -> list[str]:
    return [sys.executable, "-c", "from bench.cli import main; main()", *args]


def quiet_env(**extra: str) -> dict[str, str]:
    """The test process's environment for a `bench` subprocess, one torch thread each
    (the machine is small and shared), plus `extra`."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    env.pop("MLFLOW_TRACKING_URI", None)
    env.pop("SPURBENCH_STORAGE", None)
    return {**env, **extra}


# -- Optuna and MLflow readers --------------------------------------------------------
def studies(storage: str) -> dict[str, optuna.Study]:
    """The method studies of a storage (not the run records), by name."""
    names = optuna.get_all_study_names(storage)
    return {n: optuna.load_study(study_name=n, storage=storage)
            for n in names if not n.startswith("spurbench-run|")}


def study_for(storage: str, method: str) -> optuna.Study:
    (study,) = [s for n, s in studies(storage).items() if f"|{method}|" in n]
    return study


def mlflow_runs(uri: str, experiment: str = "spurbench/synthetic") -> list:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name(experiment)
    return [] if exp is None else list(client.search_runs([exp.experiment_id], max_results=5000))


# -- an MLflow server, once per test process ---------------------------------------------
_SERVER: dict[str, str] = {}


def mlflow_server() -> str:
    """Start `mlflow server` on loopback (SQLite backend, proxied artifacts) once; its URL."""
    if "url" in _SERVER:
        return _SERVER["url"]
    root = Path(tempfile.mkdtemp(prefix="spurbench-mlflow-"))
    port = free_port()
    mlflow = Path(sys.executable).with_name("mlflow")
    log = open(root / "server.log", "w")
    proc = subprocess.Popen(
        [str(mlflow), "server", "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",
         "--artifacts-destination", str(root / "artifacts"), "--host", "127.0.0.1",
         "--port", str(port), "--workers", "1"],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        env={**quiet_env(), "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
    )

    def stop() -> None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=20)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            os.killpg(proc.pid, signal.SIGKILL)
        shutil.rmtree(root, ignore_errors=True)

    atexit.register(stop)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"mlflow server exited: {(root / 'server.log').read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as r:
                if r.status == 200:
                    _SERVER["url"] = url
                    return url
        except OSError:
            time.sleep(0.3)
    raise RuntimeError(f"mlflow server did not start: {(root / 'server.log').read_text()[-2000:]}")
