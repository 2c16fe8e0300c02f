"""An error before any work leaves no half-made run directory (no empty optuna.db, no
lock), and never touches a run directory that existed before."""

from __future__ import annotations

import pytest
from conftest import bench_cli


@pytest.mark.parametrize("args", [
    ["--encoder", "foo"],
    ["--storage", "bogus://x"],
    ["--dataset", "waterbirds-synth", "--encoder", "openclip:nonexistent:none"],
])
def test_early_error_leaves_no_run_directory(tmp_path, args):
    runs = tmp_path / "runs"
    r = bench_cli("run", "--methods", "erm", "--runs-dir", str(runs), "--no-progress", *args,
                  env={"SPURBENCH_CACHE": str(tmp_path / "cache")})
    assert r.returncode == 2, r.stderr
    assert not runs.exists(), sorted(p.name for p in runs.rglob("*"))


def test_early_error_keeps_an_existing_run_directory(tmp_path):
    out = tmp_path / "existing"
    out.mkdir()
    (out / "keep.txt").write_text("a user's file")
    r = bench_cli("run", "--methods", "erm", "--out", str(out), "--encoder", "foo",
                  "--no-progress")
    assert r.returncode == 2, r.stderr
    assert (out / "keep.txt").read_text() == "a user's file"
