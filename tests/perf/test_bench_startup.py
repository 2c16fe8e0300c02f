"""Start-up: `bench --help` and the listing commands against `python -c "import torch"`,
each a fresh process, best of several (targets: --help ≤ 0.25×, lists ≤ 0.6×)."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

TORCH = [sys.executable, "-c", "import torch"]
COMMANDS = {
    "bench --help": [sys.executable, "-m", "bench.cli", "--help"],
    "bench methods list": [sys.executable, "-m", "bench.cli", "methods", "list"],
    "bench datasets list": [sys.executable, "-m", "bench.cli", "datasets", "list"],
}


def _best(cmd: list[str], repeats: int = 5) -> float:
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True)
        best = min(best, time.perf_counter() - t0)
    return best


@pytest.mark.parametrize("label", list(COMMANDS))
def test_startup_ratio(benchmark, record, label):
    torch_s = _best(TORCH)
    benchmark.pedantic(lambda: subprocess.run(COMMANDS[label], check=True, capture_output=True),
                       rounds=5, iterations=1)
    own = benchmark.stats.stats.min
    record(path=label, best_ms=round(own * 1e3), import_torch_ms=round(torch_s * 1e3),
           ratio=round(own / torch_s, 2))
