"""Per-method fit time against ERM's at one fixed configuration, in the same run.

The configuration is the peer comparison's: a 4.8k × 384 feature set, a linear head, SGD
(lr 1e-3, momentum 0.9, weight decay 1e-4), batch 128, 40 epochs. Group DRO (a batch
rule) and SFR (an epoch callback and feature dropout) train on the same analytic engine
as ERM; the ratio says what their own mechanism costs on top (target ≤ 1.3×).
"""

from __future__ import annotations

import numpy as np
import pytest
from perfutil import best_of

from bench.plugins import registry
from bench.run.runner import Run, RunConfig

FIXED = {"optimizer": "sgd", "lr": 1e-3, "weight_decay": 1e-4, "batch_size": 128, "epochs": 40}
METHODS = ("erm", "groupdro", "sfr", "jtt", "reweight", "subsample")


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Run:
    rng = np.random.default_rng(0)
    n, d = 4800, 384
    y = rng.integers(0, 2, n)
    a = np.where(rng.random(n) < 0.9, y, 1 - y)
    x = rng.standard_normal((n, d)).astype(np.float32) + 0.3 * y[:, None] + 0.5 * a[:, None]
    split = rng.choice([0, 1, 2], n, p=[0.6, 0.2, 0.2])
    folder = tmp_path_factory.mktemp("methods-perf")
    path = folder / "features.npz"
    np.savez(path, x=x, y=y, a=a, split=split)
    return Run(RunConfig(dataset="features", dataset_opts={"path": str(path)}, methods=None,
                         trials=0, runs_dir=folder, progress=False, head="linear"))


def _params(name: str) -> dict:
    entry = registry.get_method(name)
    return {**{k: p.default for k, p in entry.create().search_space().items()},
            **entry.fixed, **FIXED}


_ERM: dict[str, float] = {}


@pytest.mark.parametrize("method", METHODS)
def test_bench_method_fit(benchmark, run, record, method):
    entry = registry.get_method(method)
    params = _params(method)
    run.fit(entry, params, 0)  # warm: the reference models JTT and SFR share are built once
    benchmark.pedantic(run.fit, args=(entry, params, 1), rounds=3, warmup_rounds=1)
    if "erm" not in _ERM:
        erm = registry.get_method("erm")
        _ERM["erm"] = best_of(lambda: run.fit(erm, _params("erm"), 1), 3)
    seconds = benchmark.stats.stats.min
    record(method=method, fit_ms=round(seconds * 1e3, 1),
           ratio_to_erm=round(seconds / _ERM["erm"], 2))
