"""--config files, --preset and --params '*.NAME': settings in a file, flags on top."""

from __future__ import annotations

import json

import polars as pl
import pytest
from conftest import bench_cli

from bench.errors import UserError
from bench.plugins import registry
from bench.run import config_file
from bench.run.config import parse_params

registry.load_plugins()


@pytest.mark.parametrize("name", sorted(config_file.presets()))
def test_every_preset_is_valid_and_cites_its_source(name):
    doc = config_file.load(config_file.preset_path(name))
    assert doc.get("source") and doc.get("description"), f"{name}: cite the source"
    entries = {m: registry.get_method(m) for m in doc["methods"]}
    parse_params(doc["params"], entries)  # every value parses against the method's space


def test_the_seed_papers_have_presets():
    assert {"dfr-paper", "jtt-paper", "groupdro-paper", "cfr-paper"} <= set(config_file.presets())


def test_wildcard_sets_every_method_that_has_the_parameter_and_loses_to_a_specific_one():
    entries = {m: registry.get_method(m) for m in ("erm", "jtt", "dfr")}
    fixed = parse_params(["jtt.lr=0.5", "*.lr=0.01"], entries)
    assert fixed["erm"]["lr"] == 0.01 and fixed["jtt"]["lr"] == 0.5
    assert "dfr" not in fixed  # DFR has no lr
    with pytest.raises(UserError, match="no method"):
        parse_params(["*.nope=1"], entries)


def test_unknown_setting_and_bad_toml_name_the_file(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('dataset = "synthetic"\ntrails = 3\n')
    with pytest.raises(UserError, match=r"bad.toml.*'trails'.*did you mean 'trials'"):
        config_file.load(bad)
    bad.write_text("dataset = \n")
    with pytest.raises(UserError, match="not valid TOML"):
        config_file.load(bad)
    bad.write_text('seeds = "three"\n')
    with pytest.raises(UserError, match="'seeds'.*wrong type"):
        config_file.load(bad)


def test_flags_override_the_file(tmp_path):
    cfg = tmp_path / "run.toml"
    cfg.write_text(
        'methods = ["erm", "reweight"]\ntrials = 0\nseeds = 1\n'
        '[dataset_opts]\nn_train = 300\nn_val = 150\nn_test = 150\n'
        '[params."*"]\nepochs = 2\nlr = 0.05\n[params.reweight]\nlr = 0.02\n')
    r = bench_cli("run", "--config", str(cfg), "--seeds", "2", "--methods", "erm",
                  "--out", str(tmp_path / "run"), "--no-progress",
                  env={"SPURBENCH_CACHE": str(tmp_path / "cache")})
    assert r.returncode == 0, r.stderr
    rows = pl.read_parquet(tmp_path / "run" / "results.parquet")
    assert set(rows["method"]) == {"erm"}  # --methods beat the file's list
    assert rows.height == 2  # --seeds 2 beat seeds = 1
    params = json.loads(rows["params"][0])
    assert params["epochs"] == 2 and params["lr"] == 0.05  # from the file


def test_config_errors_are_one_line_exit_2(tmp_path):
    r = bench_cli("run", "--config", str(tmp_path / "missing.toml"))
    assert r.returncode == 2 and "missing.toml: no such file" in r.stderr
    r = bench_cli("run", "--preset", "jtt-papr")
    assert r.returncode == 2 and "did you mean 'jtt-paper'" in r.stderr


def test_the_file_alone_sets_the_run(tmp_path, monkeypatch):
    """No flags beside --config: every setting comes from the file (typer's own click
    copy reports parameter sources with another enum; defaults must not count as given)."""
    import sys

    import bench.cli as cli

    cfg = tmp_path / "run.toml"
    cfg.write_text('methods = ["erm", "jtt"]\nseeds = 5\ntrials = 0\n')
    seen = {}
    monkeypatch.setattr(cli, "_run", lambda **kw: seen.update(kw))
    monkeypatch.setattr(sys, "argv", ["bench", "run", "--config", str(cfg)])
    with pytest.raises(SystemExit) as exit_:
        cli.main()
    assert exit_.value.code in (0, None)
    assert seen["methods"] == "erm,jtt" and seen["seeds"] == 5 and seen["trials"] == 0
