"""The parity suite's shared state: one Suite per session, its table written at the end.

Results go to $PARITY_RESULTS (default: <tmp>/spurbench-parity): parity.md (the table)
and parity.json (every seed's numbers, which `run_parity.py --from-json` turns into
docs/parity.md without training again). $PARITY_SEEDS sets the seeds per side (≥ 5;
default parity_lib.DEFAULT_SEEDS, times a pair's seed_factor).
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import pytest
from parity_features import SETS
from parity_lib import DEFAULT_SEEDS, Suite, write_results

_SUITES: list[Suite] = []


def results_dir() -> Path:
    return Path(os.environ.get("PARITY_RESULTS")
                or Path(tempfile.gettempdir()) / "spurbench-parity")


def seeds() -> int:
    n = int(os.environ.get("PARITY_SEEDS", str(DEFAULT_SEEDS)))
    if n < 5:
        raise pytest.UsageError(f"PARITY_SEEDS={n}: the parity suite needs at least 5 seeds")
    return n


@pytest.fixture(scope="session")
def suite(tmp_path_factory):  # noqa: ANN001, ANN201
    base = tmp_path_factory.mktemp("parity")
    s = Suite(data_dir=base / "data", work_dir=base / "runs", seeds=seeds())
    _SUITES.append(s)
    yield s
    if s.outcomes:
        write_results(s, list(SETS), results_dir())


def pytest_terminal_summary(terminalreporter) -> None:  # noqa: ANN001
    for s in _SUITES:
        if not s.outcomes:
            continue
        out = results_dir()
        terminalreporter.section("peer parity (ours vs SpuCo)")
        terminalreporter.write((out / "parity.md").read_text())
        terminalreporter.write_line(f"written to {out / 'parity.md'} and parity.json")
        json.loads((out / "parity.json").read_text())  # written whole, readable
