"""Shared pieces of the performance suites: data at benchmark scale, the streaming bound,
and a summary table of ratios printed (and saved) at the end of the session.

Every timing is read against the machine in the same run: the bound is the time to
stream the same feature matrix once through memory (`x.sum()`), measured right before
and after the workload, best of several. Minimums, not means: on a shared machine other
processes only ever add time, so the minimum is the best estimate of what the code costs.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import pytest
from perfutil import ROWS, SCALES, Split


@pytest.fixture(scope="session")
def scale_data() -> Callable[[str], Split]:
    cache: dict[str, Split] = {}

    def get(name: str) -> Split:
        if name not in cache:
            cache.clear()  # keep one large matrix resident at a time
            cache[name] = Split(SCALES[name])
        return cache[name]

    return get


@pytest.fixture
def record(request: pytest.FixtureRequest) -> Callable[..., dict]:
    """record(**fields): one row of the summary table for this test."""

    def add(**fields: object) -> dict:
        row = {"case": request.node.name, **fields}
        ROWS.append(row)
        return row

    return add


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Plain `pytest` (testpaths = tests) must not spend minutes here: these run only
    with --benchmark-only (`tox -e perf`)."""
    if config.getoption("benchmark_only", False):
        return
    skip = pytest.mark.skip(reason="performance suite: tox -e perf, or pytest tests/perf "
                                   "--benchmark-only")
    for item in items:
        if Path(str(item.fspath)).parent == Path(__file__).parent:
            item.add_marker(skip)


_LOAD_AT_START = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")


def _machine_line() -> str:
    import platform

    import torch

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return (f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
            f"{os.cpu_count()} CPUs ({platform.processor() or platform.machine()}), "
            f"GPU: {'yes' if torch.cuda.is_available() else 'none'}; load average "
            f"{_LOAD_AT_START:.1f} at start, {load:.1f} at end (other processes)")


def pytest_terminal_summary(terminalreporter) -> None:  # noqa: ANN001
    if not ROWS:
        return
    keys: list[str] = []
    for row in ROWS:
        keys += [k for k in row if k not in keys]
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    lines += ["| " + " | ".join(str(r.get(k, "")) for k in keys) + " |" for r in ROWS]
    terminalreporter.write_sep("=", "spurbench performance: ratios to the streaming bound")
    lines.insert(0, _machine_line() + "\n")
    for line in lines:
        terminalreporter.write_line(line)
    root = terminalreporter.config.rootpath
    out = Path(os.environ.get("SPURBENCH_PERF_OUT", root / ".benchmarks"))
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.md").write_text("\n".join(lines) + "\n")
    (out / "summary.json").write_text(json.dumps(ROWS, indent=1, default=str))
    terminalreporter.write_line(f"saved {out / 'summary.md'} and summary.json")
