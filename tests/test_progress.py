"""Off a terminal, progress is one flushed line per finished trial or seed with an ETA."""

from __future__ import annotations

import io

from conftest import bench_cli
from rich.console import Console

from bench.run.progress import LineProgress, make_progress


def test_off_terminal_progress_is_one_line_per_unit_with_eta():
    buf = io.StringIO()
    progress = make_progress(Console(file=buf, force_terminal=False), "trials+seeds")
    assert isinstance(progress, LineProgress)
    task = progress.add_task("erm", total=4)
    for done in range(1, 5):
        progress.update(task, completed=done)
        lines = buf.getvalue().splitlines()
        assert len(lines) == done, "each finished unit is written at once, not at the end"
    assert lines[0].startswith("erm: 1/4 trials+seeds") and "ETA" in lines[0]
    assert lines[-1].endswith("done")
    progress.update(task, completed=4)  # no news, no line
    assert len(buf.getvalue().splitlines()) == 4


def test_terminal_gets_live_bars():
    progress = make_progress(Console(file=io.StringIO(), force_terminal=True), "trials")
    assert not isinstance(progress, LineProgress)


def test_a_piped_run_reports_as_it_goes(tmp_path):
    r = bench_cli("run", "--methods", "erm", "--dataset", "synthetic", "--trials", "2",
                  "--seeds", "1", "--out", str(tmp_path / "run"), "--dataset-opt", "n_train=300",
                  "--dataset-opt", "n_val=150", "--dataset-opt", "n_test=150")
    assert r.returncode == 0, r.stderr
    assert "erm: 1/3 trials+seeds" in r.stderr and "erm: 3/3 trials+seeds" in r.stderr
