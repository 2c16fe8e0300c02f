"""The embedded datasets: colored-digits (real digits, spurious colour) and waterbirds-synth
(rendered images through the encoder and cache) run offline on a fresh machine."""

from __future__ import annotations

import socket
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from PIL import Image
from typer.testing import CliRunner

from bench.data.dataset import DatasetOptions
from bench.errors import UserError
from bench.plugins import registry


@pytest.fixture(scope="module", autouse=True)
def _plugins():
    registry.load_plugins()


@pytest.fixture
def offline(monkeypatch):
    """No network: any attempt to open a connection fails the test loudly."""
    def refuse(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        raise AssertionError("a network connection was attempted")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


@pytest.fixture
def fresh(tmp_path, monkeypatch):
    cache = tmp_path / "fresh-cache"
    monkeypatch.setenv("SPURBENCH_CACHE", str(cache))
    return cache


def load(name: str, **extra: str):
    return registry.get_dataset(name).load(DatasetOptions(extra=dict(extra)))


def run_bench(tmp_path, tmp_path_factory, *args: str):  # noqa: ANN001, ANN202
    from bench.cli import app
    from bench.data.features import clear_memo

    clear_memo()
    uri = f"sqlite:///{tmp_path_factory.getbasetemp() / 'shared-mlflow.db'}"
    result = CliRunner().invoke(app, ["run", "--trials", "0", "--seeds", "1", "--no-progress",
                                      "--device", "cpu", "--tracking-uri", uri,
                                      "--out", str(tmp_path / "run"), *args])
    assert result.exit_code == 0, (result.output, result.exception)
    return pl.read_parquet(tmp_path / "run" / "results.parquet").filter(pl.col("status") == "ok")


def test_colored_digits_is_real_digits_with_a_spurious_colour():
    spec = load("colored-digits")
    md = spec.metadata
    assert md.height == 1797 and spec.features.shape == (1797, 192)
    assert [int(spec.split_mask(s).sum()) for s in ("train", "val", "test")] == [898, 359, 540]
    assert int(md["y"].sum()) == 182 + 181 + 179 + 174 + 180  # digits 5..9 in load_digits
    y, a = md["y"].to_numpy(), md["a"].to_numpy()
    agree = {s: float((y == a)[spec.split_mask(s)].mean()) for s in ("train", "val", "test")}
    assert agree["train"] > 0.92 and 0.4 < agree["val"] < 0.6 and 0.4 < agree["test"] < 0.6
    red, blue = spec.features[:, :64].sum(1), spec.features[:, 128:].sum(1)
    assert ((red > blue) == (a == 0)).all()  # the colour is drawn into the pixels
    assert spec.features.min() >= 0 and spec.features.max() <= 1
    np.testing.assert_array_equal(load("colored-digits").features, spec.features)  # seeded


def test_colored_digits_options():
    looser = load("colored-digits", correlation="0.6").metadata
    train = looser.filter(pl.col("split") == "train")
    assert 0.5 < float((train["y"] == train["a"]).mean()) < 0.7
    with pytest.raises(UserError, match="correlation=1.5: must be in"):
        load("colored-digits", correlation="1.5")
    with pytest.raises(UserError, match="colored-digits takes correlation"):
        load("colored-digits", n_train="3")


def test_erm_shows_a_worst_group_gap_on_colored_digits(tmp_path, tmp_path_factory, offline, fresh):
    rows = run_bench(tmp_path, tmp_path_factory, "--dataset", "colored-digits",
                     "--methods", "erm,reweight")
    by = {r["method"]: r for r in rows.iter_rows(named=True)}
    erm = by["erm"]
    assert erm["encoder"] == "identity" and erm["untrained"] is False
    assert erm["test_wga"] < erm["test_avg"] - 0.15  # colour shortcut fails minority groups
    assert by["reweight"]["test_wga"] > erm["test_wga"] + 0.15  # and balancing helps


def test_waterbirds_synth_renders_waterbirds_proportions(fresh):
    spec = load("waterbirds-synth", n_train="40", n_val="16", n_test="16", size="32")
    train = spec.train_groups()[spec.split_mask("train")]
    # 3498/184/56/1057 scaled to 40: 29.2, 1.5, 0.47 (at least 1), 8.8
    assert np.bincount(train, minlength=4).tolist() == [29, 2, 1, 9]
    val = spec.train_groups()[spec.split_mask("val")]
    assert np.bincount(val, minlength=4).tolist() == [6, 6, 2, 2]
    assert spec.synthetic and spec.item_kind == "image"
    root = Path(spec.root)
    assert root.is_relative_to(fresh / "datasets" / "waterbirds-synth")
    first = root / spec.metadata["item"][0]
    with Image.open(first) as img:
        assert img.size == (32, 32) and img.mode == "RGB"
    stamp = first.stat().st_mtime_ns
    again = load("waterbirds-synth", n_train="40", n_val="16", n_test="16", size="32")
    assert again.root == spec.root and first.stat().st_mtime_ns == stamp  # rendered once
    with pytest.raises(UserError, match="size=8: must be at least 16"):
        load("waterbirds-synth", size="8")


def test_water_backgrounds_are_bluer_than_land(fresh):
    spec = load("waterbirds-synth", n_train="40", n_val="16", n_test="16", size="32")
    blue_minus_green = []
    for item in spec.metadata["item"]:
        px = np.asarray(Image.open(Path(spec.root) / item), dtype=float)
        blue_minus_green.append(px[..., 2].mean() - px[..., 1].mean())
    water = spec.metadata["a"].to_numpy() == 1
    assert min(np.array(blue_minus_green)[water]) > max(np.array(blue_minus_green)[~water])


def test_waterbirds_synth_runs_offline_through_the_image_path(
    tmp_path, tmp_path_factory, offline, fresh
):
    rows = run_bench(tmp_path, tmp_path_factory, "--dataset", "waterbirds-synth",
                     "--methods", "erm", "--dataset-opt", "n_train=80", "--dataset-opt",
                     "n_val=24", "--dataset-opt", "n_test=24", "--dataset-opt", "size=32")
    row = rows.row(0, named=True)
    assert row["encoder"] == "openclip:spurbench-tiny:none"  # the plugin's default encoder
    assert row["untrained"] is True and row["synthetic"] is True
    assert 0.0 <= row["test_wga"] <= row["test_avg"] <= 1.0
    assert len(list((fresh / "features").glob("waterbirds-synth-*.npz"))) == 1
