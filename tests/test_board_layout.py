"""The board reads well everywhere: 80 columns, a why for every 0-trial method, the plot in
the run's leaderboard.md, and rank labels in the plot that never overlap."""

from __future__ import annotations

import io

import polars as pl
import pytest
from matplotlib.text import Text
from rich.console import Console

from bench.report.leaderboard import print_board
from bench.report.plots import wga_figure
from bench.run.runner import RunConfig, run

SMALL = {"n_train": "300", "n_val": "150", "n_test": "150"}


@pytest.fixture(scope="module")
def result(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("layout")
    mp = pytest.MonkeyPatch()
    mp.setenv("SPURBENCH_CACHE", str(tmp / "cache"))
    mp.delenv("MLFLOW_TRACKING_URI", raising=False)
    try:
        return run(RunConfig(
            dataset="synthetic", methods=["erm", "dfr", "sfr-groupweights"], dataset_opts=SMALL,
            trials=2, seeds=2, params=["erm.epochs=5", "sfr-groupweights.epochs=5"],
            runs_dir=tmp / "runs", device="cpu", progress=False,
        ))
    finally:
        mp.undo()


def test_board_fits_80_columns(result):
    buf = io.StringIO()
    print_board(result.board, Console(file=buf, width=80, force_terminal=True, color_system=None))
    lines = buf.getvalue().splitlines()
    assert max(len(line) for line in lines) <= 80
    text = buf.getvalue()
    for row in result.board.ranked.iter_rows(named=True):  # every value whole, on one line
        assert f"{row['wga_mean']:.1f}" in text and row["method"] in text


def test_zero_trial_methods_say_why(result):
    buf = io.StringIO()
    print_board(result.board, Console(file=buf, width=200))
    assert "dfr: 0 trials" in buf.getvalue() and "cross-validation" in buf.getvalue()
    md = (result.run_dir / "leaderboard.md").read_text()
    assert "`dfr`: 0 trials" in md


def test_run_markdown_embeds_its_plot(result):
    md = (result.run_dir / "leaderboard.md").read_text()
    assert "![Worst-group vs average accuracy](wga-vs-avg.png)" in md
    assert (result.run_dir / "wga-vs-avg.png").exists()


def test_rank_labels_never_overlap():
    """Twelve methods within half a point of each other: a fixed offset piles them up."""
    n = 12
    rows = [{"method": f"m{i}", "rank": i + 1, "wga_mean": 70 + 0.04 * i,
             "avg_mean": 80 + 0.03 * (i % 4), "wga_std": 0.1, "avg_std": 0.1}
            for i in range(n)]
    board = type("B", (), {})()
    board.ranked = pl.DataFrame(rows)
    board.meta = {"dataset": "x", "encoder": "identity", "selection": "worst-group",
                  "bayes_wga": None}
    fig = wga_figure(board)
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    (ax,) = fig.axes
    # the text's own box (an Annotation's extent would include its leader line)
    boxes = [Text.get_window_extent(t, renderer) for t in ax.texts]
    assert len(boxes) == n
    for i in range(n):
        for j in range(i + 1, n):
            assert not boxes[i].overlaps(boxes[j]), f"labels {i + 1} and {j + 1} overlap"

