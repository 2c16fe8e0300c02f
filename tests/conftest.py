"""Shared test helpers: small runs of the real harness, CLI invocation, plugin files."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import bench._openmp  # noqa: F401  (the OpenMP setting `bench` itself gets, before torch)

SMALL = [
    "--dataset-opt",
    "n_train=1200",
    "--dataset-opt",
    "n_val=400",
    "--dataset-opt",
    "n_test=800",
]


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("SPURBENCH_CACHE", str(tmp_path_factory.getbasetemp() / "feature-cache"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("SPURBENCH_STORAGE", raising=False)


def bench_cli(*args: str, cwd: Path | None = None, timeout: float = 600, env: dict | None = None):
    """Run the real `bench` entry point in a subprocess (exit codes and stderr as a user sees)."""
    return subprocess.run(
        [sys.executable, "-c", "from bench.cli import main; main()", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


def default_params(entry) -> dict:
    params = {k: p.default for k, p in entry.create().search_space().items()}
    params.update(entry.fixed)
    return params


def dfr_standardised(run):  # noqa: ANN001, ANN201
    """Validation features standardised as DFR does (validation statistics), its labels,
    and the test features on the same scale: (xs, yv, xt), float64 numpy."""
    val, test = run.store.splits["val"], run.store.splits["test"]
    xv = val.x.cpu().numpy().astype("float64")
    mean, scale = xv.mean(0), xv.std(0) + 1e-8
    xt = (test.x.cpu().numpy().astype("float64") - mean) / scale
    return (xv - mean) / scale, val.y.cpu().numpy(), xt
