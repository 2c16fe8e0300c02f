"""Backbone sweeps: one run per encoder (features cached per encoder), a cross-encoder
board in the sweep folder and on publish, and compare across encoders of one method."""

from __future__ import annotations

import json

import pytest
from conftest import bench_cli

from bench.errors import UserError
from bench.report.publish import publish, read_runs
from bench.run.config import RunConfig
from bench.run.sweep import parse_encoders, run_sweep

ENCODERS = ["openclip:spurbench-tiny:none", "openclip:spurbench-tiny-rn:none"]


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("sweep")
    mp = pytest.MonkeyPatch()
    mp.setenv("SPURBENCH_CACHE", str(tmp / "cache"))
    mp.delenv("MLFLOW_TRACKING_URI", raising=False)
    try:
        cfg = RunConfig(dataset="waterbirds-synth", methods=["erm", "zeroshot"], trials=0,
                        seeds=2, params=["erm.epochs=3"], out=tmp / "sweep",
                        runs_dir=tmp / "runs", device="cpu", progress=False)
        return run_sweep(cfg, ENCODERS), tmp
    finally:
        mp.undo()


def test_one_run_and_one_feature_cache_per_encoder(sweep):
    result, tmp = sweep
    assert list(result.runs) == ENCODERS
    for encoder, run in result.runs.items():
        assert set(run.results["encoder"]) == {encoder}
    cached = sorted((tmp / "cache" / "features").glob("waterbirds-synth-*.npz"))
    assert len(cached) == 2, cached


def test_cross_encoder_board_lines_up_each_encoders_board(sweep):
    result, _ = sweep
    md = (result.sweep_dir / "across-encoders.md").read_text()
    assert all(f"`{e}` WGA / Avg" in md for e in ENCODERS)
    assert (result.sweep_dir / "across-encoders.png").exists()
    for encoder, board in result.boards.items():
        col = ENCODERS.index(encoder) + 2  # | Method | enc0 | enc1 |
        for row in board.ranked.iter_rows(named=True):
            line = next(x for x in md.splitlines() if x.startswith(f"| `{row['method']}` |"))
            cell = line.split("|")[col].strip()
            assert cell.startswith(f"{row['wga_mean']:.1f}"), (encoder, cell)


def test_publish_writes_per_encoder_boards_and_the_cross_board(sweep, tmp_path):
    result, _ = sweep
    done = publish(read_runs([result.sweep_dir]), tmp_path, plots=False)
    stems = {p.stem for p in done}
    assert "waterbirds-synth--across-encoders" in stems
    assert len([p for p in tmp_path.glob("*.json")
                if json.loads(p.read_text()).get("encoder") in ENCODERS]) == 2
    assert "across-encoders" in (tmp_path / "README.md").read_text()


def test_compare_across_encoders_needs_the_flag(sweep):
    result, _ = sweep
    a, b = (str(r.run_dir) for r in result.runs.values())
    r = bench_cli("compare", a, b)
    assert r.returncode == 2 and "--across-encoders" in r.stderr
    r = bench_cli("compare", a, b, "--across-encoders")
    assert r.returncode in (0, 1, 3), r.stderr
    assert "across encoders" in r.stdout


def test_encoder_list_errors():
    assert parse_encoders("identity") is None
    assert parse_encoders("a,b") == ["a", "b"]
    with pytest.raises(UserError, match="given twice"):
        parse_encoders("a,a")
