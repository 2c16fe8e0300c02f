"""Real-dataset loaders on tiny fixtures in the official formats, and the image path end to
end: fixture folder → images → open_clip encoder → feature cache → methods → leaderboard."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import fixtures_formats as ff
import numpy as np
import polars as pl
import pytest
import torch
from typer.testing import CliRunner

from bench.data.dataset import DatasetOptions
from bench.plugins import registry

TINY = "openclip:spurbench-tiny:none"


@pytest.fixture(scope="module", autouse=True)
def _plugins():
    registry.load_plugins()


def load(plugin: str, root: Path, **extra: str):
    return registry.get_dataset(plugin).load(DatasetOptions(data_root=root, extra=dict(extra)))


def train_counts(spec) -> list[int]:
    g = spec.train_groups()[spec.split_mask("train")]
    return np.bincount(g, minlength=spec.n_groups).tolist()


def split_sizes(spec) -> list[int]:
    return [int(spec.split_mask(s).sum()) for s in ("train", "val", "test")]


def eval_counts(spec, split: str | None = None) -> list[int]:
    masks = spec.evaluation_groups().masks
    if split is not None:
        masks = masks[:, spec.split_mask(split)]
    return masks.sum(axis=1).tolist()


@pytest.mark.parametrize("folder", ["waterbirds_v1.0", "waterbird_complete95_forest2water2"])
def test_waterbirds_wilds_format(tmp_path, folder):
    ff.write_waterbirds(tmp_path, folder=folder)
    spec = load("waterbirds", tmp_path)
    assert spec.item_kind == "image" and spec.class_names == ["landbird", "waterbird"]
    assert train_counts(spec) == [6, 2, 1, 4]  # (landbird,land) (landbird,water) (water,land) ...
    assert split_sizes(spec) == [13, 8, 8]
    assert spec.evaluation_groups().names == [
        "y=landbird,a=land", "y=landbird,a=water", "y=waterbird,a=land", "y=waterbird,a=water"]
    assert eval_counts(spec, "test") == [2, 2, 2, 2]
    first = spec.metadata.row(0, named=True)
    assert (Path(spec.root) / first["item"]).is_file() and first["id"] == "1"


def test_celeba_wilds_format_and_attribute_options(tmp_path):
    ff.write_celeba(tmp_path)
    spec = load("celeba", tmp_path)
    assert spec.class_names == ["dark hair", "blond hair"] and spec.attr_names == ["female", "male"]
    assert train_counts(spec) == [2, 4, 3, 1]
    assert split_sizes(spec) == [10, 2, 3]
    smiling = load("celeba", tmp_path, attribute="Smiling")
    assert smiling.attr_names == ["not smiling", "smiling"]
    assert train_counts(smiling) == [3, 3, 2, 2]


def test_civilcomments_sixteen_overlapping_groups(tmp_path):
    ff.write_civilcomments(tmp_path)
    spec = load("civilcomments", tmp_path)
    assert spec.item_kind == "text"
    assert spec.metadata["item"][0] == 'comment 0, with "quotes"\nand a second line'
    groups = spec.evaluation_groups()
    assert len(groups.names) == 16
    assert groups.names[:4] == ["y=non-toxic,male", "y=toxic,male", "y=non-toxic,female",
                                "y=toxic,female"]
    # identity order: male female LGBTQ christian muslim other_religions black white
    assert eval_counts(spec) == [1, 2, 1, 1, 0, 1, 1, 0, 1, 0, 0, 1, 0, 2, 1, 0]
    assert eval_counts(spec, "test") == [0, 1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0, 1, 1, 0]
    assert int(groups.masks.sum()) > 0 and (groups.masks.sum(axis=0) > 1).any()  # overlapping
    assert spec.attr_names == ["no identity", "identity"]
    assert train_counts(spec) == [1, 2, 2, 1]
    assert split_sizes(spec) == [6, 3, 4]


def test_civilcomments_training_groups_are_configurable(tmp_path):
    ff.write_civilcomments(tmp_path)
    male = load("civilcomments", tmp_path, train_groups="male")
    assert male.attr_names == ["not male", "male"] and train_counts(male) == [2, 1, 2, 1]
    label = load("civilcomments", tmp_path, train_groups="label")
    assert label.n_groups == 2 and train_counts(label) == [3, 3]
    assert len(label.evaluation_groups().names) == 16  # evaluation never changes


def test_multinli_group_dro_format(tmp_path):
    ff.write_multinli(tmp_path)
    spec = load("multinli", tmp_path)
    assert spec.class_names == ["contradiction", "entailment", "neutral"]
    assert train_counts(spec) == [1, 2, 1, 1, 1, 1]
    assert split_sizes(spec) == [7, 3, 3]
    # metadata row 3 has index 4: the '-' row of the jsonl files is skipped, as group_DRO did
    assert spec.metadata["item"][3] == "premise 3 hypothesis 3 is never true"
    assert spec.metadata["item"][12] == "premise 12 hypothesis 12 is never true"


@pytest.mark.parametrize("with_csv", [True, False])
def test_metashift(tmp_path, with_csv):
    ff.write_metashift(tmp_path, with_csv=with_csv)
    spec = load("metashift", tmp_path)
    assert spec.class_names == ["dog", "cat"] and spec.attr_names == ["outdoor", "indoor"]
    assert eval_counts(spec) == [5, 3, 3, 4]  # dog-outdoor, dog-indoor, cat-outdoor, cat-indoor
    for item in spec.metadata["item"]:
        assert (Path(spec.root) / item).is_file()  # foreign absolute paths resolved locally
    if with_csv:
        assert train_counts(spec) == [3, 1, 1, 2] and split_sizes(spec) == [7, 4, 4]
    else:  # SubpopBench's recipe: int(0.25 n) test, int(0.1 n) val
        assert split_sizes(spec) == [11, 1, 3]


def test_csv_dataset_any_image_folder(tmp_path):
    rows = [("train", 0, 0), ("train", 0, 0), ("train", 0, 1), ("train", 1, 0), ("train", 1, 1),
            ("train", 1, 1), ("val", 0, 1), ("val", 1, 0), ("test", 0, 0), ("test", 1, 1)]
    meta = ff.write_csv_images(tmp_path / "mine", rows)
    spec = load("csv", tmp_path / "mine", classes="cat,dog", attributes="grass,sand",
                name="pets", prompts="a photo of a {}.|a {} outside.")
    assert spec.name == "pets" and spec.class_names == ["cat", "dog"]
    assert spec.prompt_templates == ["a photo of a {}.", "a {} outside."]
    assert train_counts(spec) == [2, 1, 1, 2] and split_sizes(spec) == [6, 2, 2]
    default = load("csv", tmp_path / "elsewhere", metadata=str(meta))
    assert default.class_names == ["class 0", "class 1"] and default.n_groups == 4


def test_features_dataset_npz_and_parquet(tmp_path):
    rng = np.random.default_rng(0)
    y = np.array([0, 0, 1, 1, 0, 1, 0, 1, 1])
    a = np.array([0, 1, 0, 1, 0, 1, 1, 0, 1])
    split = np.array(["train"] * 5 + ["val", "val", "test", "test"])
    x = rng.standard_normal((9, 5)).astype(np.float32)
    text = rng.standard_normal((2, 5)).astype(np.float32)
    npz = tmp_path / "emb.npz"
    np.savez(npz, x=x, y=y, a=a, split=split, class_text=text,
             class_names=np.array(["cat", "dog"]))
    spec = load("features", tmp_path, path=str(npz))
    assert spec.class_names == ["cat", "dog"] and spec.attr_names == ["attribute 0", "attribute 1"]
    np.testing.assert_array_equal(spec.features, x)
    np.testing.assert_array_equal(spec.class_text_embeddings, text)
    assert train_counts(spec) == [2, 1, 1, 1] and split_sizes(spec) == [5, 2, 2]
    parquet = tmp_path / "emb.parquet"
    pl.DataFrame({"x": x.tolist(), "y": y, "a": a, "split": [0] * 5 + [1, 1, 2, 2]}).write_parquet(
        parquet)
    from_parquet = registry.get_dataset("features").load(DatasetOptions(data_root=parquet))
    np.testing.assert_allclose(from_parquet.features, x)
    assert split_sizes(from_parquet) == [5, 2, 2] and from_parquet.class_text_embeddings is None


def test_download_uses_the_wilds_downloader(tmp_path, monkeypatch):
    import wilds

    from bench.cli import app

    calls = []

    class Fake:
        def __init__(self, root_dir: str) -> None:
            self.data_dir = str(ff.write_waterbirds(Path(root_dir)))

    def fake_get_dataset(dataset, root_dir, download):  # noqa: ANN001, ANN202
        calls.append((dataset, root_dir, download))
        return Fake(root_dir)

    monkeypatch.setattr(wilds, "get_dataset", fake_get_dataset)
    result = CliRunner().invoke(app, ["datasets", "download", "waterbirds",
                                      "--data-root", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert calls == [("waterbirds", str(tmp_path), True)]
    assert "'waterbirds' is ready in" in result.output
    embedded = CliRunner().invoke(app, ["datasets", "download", "colored-digits"])
    assert "embedded: nothing to download" in embedded.output


def test_waterbirds_end_to_end_through_encoder_and_cache(
    tmp_path, tmp_path_factory, monkeypatch, caplog
):
    """bench run on a WILDS fixture with the tiny random open_clip model; the second run
    reads the cache (no encoder call); a truncated cache file is detected and rebuilt.
    (--trials 0 and 5 epochs: this checks the data path, not tuning, and stays fast.)"""
    from bench.cli import app
    from bench.data.features import clear_memo
    from bench.encoders.openclip import OpenClipEncoder
    from bench.run.runner import Run, RunConfig

    data = tmp_path / "data"
    ff.write_waterbirds(data)
    cache = tmp_path / "cache"
    monkeypatch.setenv("SPURBENCH_CACHE", str(cache))
    calls = []
    real_encode = OpenClipEncoder.encode

    def counting(self, spec):  # noqa: ANN001, ANN202
        calls.append((spec.name, self.batch_size))
        return real_encode(self, spec)

    monkeypatch.setattr(OpenClipEncoder, "encode", counting)
    mlflow_uri = f"sqlite:///{tmp_path_factory.getbasetemp() / 'shared-mlflow.db'}"

    def run(out: str, *extra: str):  # noqa: ANN202
        clear_memo()  # a new process would start with an empty in-memory store
        return CliRunner().invoke(app, [
            "run", "--dataset", "waterbirds", "--data-root", str(data), "--encoder", TINY,
            "--methods", "erm", "--trials", "0", "--params", "erm.epochs=5", "--seeds", "1",
            "--out", str(tmp_path / out), "--tracking-uri", mlflow_uri, "--device", "cpu",
            "--no-progress", *extra,
        ])

    first = run("run1", "--encode-batch-size", "5", "--encode-workers", "0")
    assert first.exit_code == 0, first.output
    assert calls == [("waterbirds", 5)]
    results = pl.read_parquet(tmp_path / "run1" / "results.parquet")
    row = results.filter(pl.col("status") == "ok").row(0, named=True)
    assert row["encoder"] == TINY and row["untrained"] is True and row["dataset"] == "waterbirds"
    assert set(json.loads(row["test_groups"])) == {
        "y=landbird,a=land", "y=landbird,a=water", "y=waterbird,a=land", "y=waterbird,a=water"}
    assert "untrained" in (tmp_path / "run1" / "leaderboard.md").read_text()

    second = run("run2")
    assert second.exit_code == 0, second.output
    assert len(calls) == 1  # read from the cache
    second_row = pl.read_parquet(tmp_path / "run2" / "results.parquet").row(0, named=True)
    assert second_row["test_wga"] == pytest.approx(row["test_wga"])

    # A truncated cache file: detected, rebuilt with a warning, same features as before.
    (npz,) = (cache / "features").glob("waterbirds-*.npz")
    with np.load(npz, allow_pickle=False) as z:
        before = z["features"]
    npz.write_bytes(npz.read_bytes()[:-64])
    clear_memo()
    cfg = RunConfig(dataset="waterbirds", data_root=data, encoder=TINY, methods=["erm"],
                    device="cpu", progress=False, out=tmp_path / "run3")
    with caplog.at_level(logging.WARNING, logger="bench.data.cache"):
        rebuilt = Run(cfg).store
    assert len(calls) == 2 and "corrupt or stale" in caplog.text
    x = torch.cat([rebuilt.splits[s].x for s in ("train", "val", "test")]).numpy()
    np.testing.assert_allclose(np.sort(x, axis=0), np.sort(before, axis=0), atol=1e-6)
    with np.load(npz, allow_pickle=False) as z:
        np.testing.assert_allclose(z["features"], before, atol=1e-6)


def test_civilcomments_text_path_keeps_sixteen_groups_in_the_store(tmp_path, monkeypatch):
    """Texts go through the text tower; the overlapping groups reach the device store."""
    from bench.data.features import clear_memo
    from bench.run.runner import Run, RunConfig

    ff.write_civilcomments(tmp_path / "data")
    monkeypatch.setenv("SPURBENCH_CACHE", str(tmp_path / "cache"))
    clear_memo()
    store = Run(RunConfig(dataset="civilcomments", data_root=tmp_path / "data", encoder=TINY,
                          methods=["erm"], device="cpu", progress=False,
                          out=tmp_path / "run")).store
    assert store.dim == 32 and store.class_text.shape == (2, 32) and store.untrained
    assert len(store.eval_group_names) == 16
    test_masks = store.splits["test"].eval_masks
    assert test_masks.shape == (16, 4)
    assert test_masks.sum(dim=1).tolist() == [0, 1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0, 1, 1, 0]
