"""Loaders of Spawrious, UrbanCars, SpuCoAnimals/SpuCoSun, ImageNet-9 backgrounds and
CounterAnimal on tiny fixtures in the authors' layouts: groups, counts, options, extra
metrics on hand-computed predictions, one-line errors, and downloads without network."""

from __future__ import annotations

import io
import sys
import urllib.error
import urllib.request
from pathlib import Path

import fixtures_clip_datasets as fc
import numpy as np
import polars as pl
import pytest

from bench.data.dataset import DatasetOptions
from bench.errors import UserError
from bench.plugins import registry


@pytest.fixture(scope="module", autouse=True)
def _plugins():
    registry.load_dir(registry.builtin_plugin_dirs()[1])  # datasets only: fast, independent


def plugin(name: str):
    return registry.get_dataset(name)


def load(name: str, root: Path, **extra: str):
    return plugin(name).load(DatasetOptions(data_root=root, extra=dict(extra)))


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


def combos(spec, split: str) -> set[tuple[str, str]]:
    md = spec.metadata.filter(pl.col("split") == split)
    pairs = zip(md["y"], md["a"], strict=True)
    return {(spec.class_names[y], spec.attr_names[a]) for y, a in pairs}


@pytest.fixture
def bench_main(monkeypatch, capsys, tmp_path):
    """The real entry point in-process; returns (exit code, stderr on one line)."""
    from bench.cli import main

    monkeypatch.setenv("SPURBENCH_CACHE", str(tmp_path / "cache"))

    def invoke(*args: str) -> tuple[int, str]:
        monkeypatch.setattr(sys, "argv", ["bench", *args])
        with pytest.raises(SystemExit) as exc:
            main()
        err = capsys.readouterr().err
        assert "Traceback" not in err
        return exc.value.code, " ".join(err.split())

    return invoke


def run_args(dataset: str, root: Path, tmp_path: Path, *opts: str) -> list[str]:
    extra = [x for o in opts for x in ("--dataset-opt", o)]
    return ["run", "--dataset", dataset, "--data-root", str(root), "--methods", "erm",
            "--trials", "0", "--seeds", "1", "--runs-dir", str(tmp_path / "runs"),
            "--device", "cpu", "--no-progress", *extra]


def fake_urlopen(monkeypatch, archives: dict[str, bytes] | None = None) -> list[str]:
    """urlopen serving fixture archives by URL, or failing like a machine without network."""
    calls: list[str] = []

    def urlopen(url, timeout=None):  # noqa: ANN001, ANN202
        calls.append(url)
        if archives is None or url not in archives:
            raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")
        return io.BytesIO(archives[url])

    monkeypatch.setattr(urllib.request, "urlopen", urlopen)
    return calls


# --- Spawrious -----------------------------------------------------------------------

# Hand-copied from the authors' _get_combinations/build_combination: breed -> (training
# backgrounds, test backgrounds).
SPAWRIOUS = {
    "o2o_easy": {"bulldog": ({"desert", "beach"}, {"dirt"}),
                 "dachshund": ({"jungle", "beach"}, {"snow"}),
                 "labrador": ({"dirt", "beach"}, {"desert"}),
                 "corgi": ({"snow", "beach"}, {"jungle"})},
    "o2o_medium": {"bulldog": ({"mountain", "desert"}, {"jungle"}),
                   "dachshund": ({"beach", "desert"}, {"dirt"}),
                   "labrador": ({"dirt", "desert"}, {"beach"}),
                   "corgi": ({"jungle", "desert"}, {"snow"})},
    "o2o_hard": {"bulldog": ({"jungle", "beach"}, {"mountain"}),
                 "dachshund": ({"mountain", "beach"}, {"snow"}),
                 "labrador": ({"snow", "beach"}, {"desert"}),
                 "corgi": ({"desert", "beach"}, {"jungle"})},
    "m2m_easy": {"bulldog": ({"desert", "mountain"}, {"dirt", "jungle"}),
                 "dachshund": ({"mountain", "desert"}, {"jungle", "dirt"}),
                 "labrador": ({"dirt", "jungle"}, {"mountain", "desert"}),
                 "corgi": ({"jungle", "dirt"}, {"desert", "mountain"})},
    "m2m_medium": {"bulldog": ({"beach", "snow"}, {"desert", "mountain"}),
                   "dachshund": ({"snow", "beach"}, {"mountain", "desert"}),
                   "labrador": ({"mountain", "desert"}, {"beach", "snow"}),
                   "corgi": ({"desert", "mountain"}, {"snow", "beach"})},
    "m2m_hard": {"bulldog": ({"dirt", "jungle"}, {"snow", "beach"}),
                 "dachshund": ({"jungle", "dirt"}, {"beach", "snow"}),
                 "labrador": ({"snow", "beach"}, {"dirt", "jungle"}),
                 "corgi": ({"beach", "snow"}, {"jungle", "dirt"})},
}


@pytest.fixture(scope="module")
def spawrious_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("spawrious")
    fc.write_spawrious(root)  # 10 images in each of the 48 folders
    return root


@pytest.mark.parametrize("challenge", list(SPAWRIOUS))
def test_spawrious_challenges_follow_the_authors_combinations(spawrious_root, challenge):
    spec = load("spawrious", spawrious_root, challenge=challenge)
    assert spec.class_names == ["bulldog", "corgi", "dachshund", "labrador"]
    assert spec.attr_names == ["desert", "jungle", "dirt", "mountain", "snow", "beach"]
    expected_train = {(b, loc) for b, (tr, _) in SPAWRIOUS[challenge].items() for loc in tr}
    expected_test = {(b, loc) for b, (_, te) in SPAWRIOUS[challenge].items() for loc in te}
    assert combos(spec, "train") == combos(spec, "val") == expected_train
    assert combos(spec, "test") == expected_test
    assert spec.n_groups == 8
    assert {tuple(n[2:].split(",a=")) for n in spec.train_group_names()} == expected_train
    assert len(spec.evaluation_groups().names) == len(expected_train | expected_test)
    folders = {item.split("/")[1] for item in spec.metadata["item"]}
    if challenge.startswith("o2o"):  # o2o reads folders 0 and 1, 10 images each
        assert folders == {"0", "1"} and split_sizes(spec) == [144, 16, 80]
        assert train_counts(spec) == [18] * 8  # 20 per group, 10% (2) to validation
    else:  # m2m reads folder 0 only
        assert folders == {"0"} and split_sizes(spec) == [72, 8, 80]
        assert train_counts(spec) == [9] * 8


def test_spawrious_default_is_m2m_hard_and_images_are_the_first_n_sorted(tmp_path, monkeypatch):
    fc.write_spawrious(tmp_path, extra={(0, "dirt", "bulldog"): 12})
    default = load("spawrious", tmp_path)
    assert default.fingerprint() == load("spawrious", tmp_path, challenge="m2m_hard").fingerprint()
    monkeypatch.setattr(plugin("spawrious").__class__, "images_per_environment", 10)
    o2o = load("spawrious", tmp_path, challenge="o2o_easy")
    md = o2o.metadata.with_columns(folder=pl.col("item").str.split("/").list.get(1))
    per = md.group_by("y", "a", "folder").len().sort("y", "a", "folder")
    bulldog = per.filter(pl.col("y") == 0)
    # int(0.97 * 10) = 9 and int(0.87 * 10) = 8 of desert; the filler the rest up to 10
    assert bulldog.filter(pl.col("a") == 0)["len"].to_list() == [9, 8]
    assert bulldog.filter(pl.col("a") == 5)["len"].to_list() == [1, 2]
    assert bulldog.filter(pl.col("a") == 2)["len"].to_list() == [12, 10]  # test: all, no limit
    first = sorted(i for i in md.filter((pl.col("y") == 0) & (pl.col("a") == 0)
                                        & (pl.col("folder") == "0"))["item"])
    assert [Path(i).name for i in first] == [f"{k:05d}.png" for k in range(9)]
    m2m = load("spawrious", tmp_path)  # 12 bulldog/dirt images, at most 10 taken
    assert int(((m2m.metadata["y"] == 0) & (m2m.metadata["a"] == 2)).sum()) == 10
    assert not any(i.endswith(".txt") for i in m2m.metadata["item"])


def test_spawrious_val_fraction_option(spawrious_root):
    spec = load("spawrious", spawrious_root, challenge="o2o_easy", val_fraction="0.5")
    assert split_sizes(spec) == [80, 80, 80]


def test_spawrious_errors(spawrious_root, tmp_path, bench_main):
    with pytest.raises(UserError, match=r"--dataset-opt colour: spawrious takes challenge"):
        load("spawrious", spawrious_root, colour="red")
    with pytest.raises(UserError, match=r"challenge=o2o_impossible: spawrious has o2o_easy"):
        load("spawrious", spawrious_root, challenge="o2o_impossible")
    with pytest.raises(UserError, match=r"val_fraction=1.5: expected a number in \(0, 1\)"):
        load("spawrious", spawrious_root, val_fraction="1.5")
    fc.write_spawrious(tmp_path, n=1)
    gone = tmp_path / "spawrious224" / "1" / "dirt" / "labrador"
    for f in gone.iterdir():
        f.unlink()
    gone.rmdir()
    code, err = bench_main(*run_args("spawrious", tmp_path, tmp_path, "challenge=o2o_easy"))
    assert code == 2
    assert f"{gone} is missing; challenge o2o_easy needs the spawrious224__o2o_easy archive" in err
    assert "o2o_easy.tar.gz?dl=1" in err
    code, err = bench_main(*run_args("spawrious", tmp_path / "nothing", tmp_path))
    assert code == 2 and "dataset 'spawrious' not found" in err


def test_spawrious_download(tmp_path, monkeypatch, bench_main):
    from typer.testing import CliRunner

    from bench.cli import app

    calls = fake_urlopen(monkeypatch)
    code, err = bench_main("datasets", "download", "spawrious", "--data-root", str(tmp_path))
    url = "https://www.dropbox.com/s/hofkueo8qvaqlp3/spawrious224__entire_dataset.tar.gz?dl=1"
    assert code == 2 and calls == [url]
    assert f"download of {url} into {tmp_path} failed (URLError:" in err
    assert not list(tmp_path.iterdir())  # no partial file left behind
    source = fc.write_spawrious(tmp_path / "src", n=10)
    fake_urlopen(monkeypatch, {url: fc.tar_gz_of(source, "spawrious224")})
    data = tmp_path / "data"
    result = CliRunner().invoke(app, ["datasets", "download", "spawrious", "--data-root",
                                      str(data)])
    assert result.exit_code == 0, result.output
    assert (data / "spawrious224" / "0" / "snow" / "corgi" / "00009.png").is_file()
    assert not (data / "spawrious224__entire_dataset.tar.gz").exists()
    # an archive without what the challenge needs is a failed download, whatever it returned
    fake_urlopen(monkeypatch, {url: fc.tar_gz_of(source / "0" / "snow", "spawrious224/0/snow")})
    with pytest.raises(UserError, match=r"spawrious224/0/dirt/bulldog is missing"):
        plugin("spawrious").download(DatasetOptions(data_root=tmp_path / "other"))


# --- UrbanCars -----------------------------------------------------------------------


def test_urbancars_groups_and_group_label_option(tmp_path):
    fc.write_urbancars(tmp_path)
    spec = load("urbancars", tmp_path)
    assert spec.class_names == ["urban car", "country car"]
    assert spec.attr_names == ["bg=urban,co=urban", "bg=urban,co=country",
                               "bg=country,co=urban", "bg=country,co=country"]
    assert train_counts(spec) == [4, 2, 2, 1, 1, 2, 2, 4]
    assert split_sizes(spec) == [18, 8, 8]
    assert spec.evaluation_groups().names[:2] == ["y=urban,bg=urban,co=urban",
                                                  "y=urban,bg=urban,co=country"]
    assert eval_counts(spec, "test") == [1] * 8
    bg = load("urbancars", tmp_path, group_label="bg")
    assert bg.attr_names == ["bg=urban", "bg=country"] and train_counts(bg) == [6, 3, 3, 6]
    co = load("urbancars", tmp_path, group_label="co_occur_obj")
    assert co.attr_names == ["co=urban", "co=country"] and train_counts(co) == [6, 3, 3, 6]
    assert len(bg.evaluation_groups().names) == 8  # evaluation never changes


def test_urbancars_extra_metrics_follow_the_authors_weighting():
    # two images per (y, bg, co) cell; accuracy per cell chosen by hand:
    # both shortcuts present 1 and 1; bg absent .5 and 0; co absent 1 and .5; both absent 0, 0
    acc = {(0, 1, 1): 1.0, (1, 1, 1): 1.0, (0, 0, 1): 0.5, (1, 0, 1): 0.0,
           (0, 1, 0): 1.0, (1, 1, 0): 0.5, (0, 0, 0): 0.0, (1, 0, 0): 0.0}
    rows, pred = [], []
    for (o, bg_present, co_present), p in acc.items():
        b, c = (o if bg_present else 1 - o), (o if co_present else 1 - o)
        for k in range(2):
            rows.append({"y": o, "bg": b, "co": c})
            pred.append(o if k < 2 * p else 1 - o)
    out = plugin("urbancars").extra_metrics(pl.DataFrame(rows), np.array(pred))
    # ID = 1 * .95 * .95 + .25 * .05 * .95 + .75 * .95 * .05 + 0 * .05 * .05 = .95
    assert out["id_acc"] == pytest.approx(95.0)
    assert out["bg_gap"] == pytest.approx(25.0 - 95.0)
    assert out["coobj_gap"] == pytest.approx(75.0 - 95.0)
    assert out["bg_coobj_gap"] == pytest.approx(0.0 - 95.0)


def test_urbancars_errors(tmp_path, bench_main):
    fc.write_urbancars(tmp_path)
    with pytest.raises(UserError, match=r"group_label=colour: urbancars takes both, bg"):
        load("urbancars", tmp_path, group_label="colour")
    with pytest.raises(UserError, match=r"--dataset-opt ratio: urbancars takes group_label"):
        load("urbancars", tmp_path, ratio="0.9")
    gone = tmp_path / "urbancars" / fc.URBAN_SUB["test"] / "obj-country_bg-urban_co_occur_obj-urban"
    for f in gone.iterdir():
        f.unlink()
    gone.rmdir()
    code, err = bench_main(*run_args("urbancars", tmp_path, tmp_path))
    assert code == 2 and f"{gone} is missing (one of the 8 folders of each split)" in err
    code, err = bench_main(*run_args("urbancars", tmp_path / "none", tmp_path))
    assert code == 2 and "dataset 'urbancars' not found" in err and "create_urbancars.sh" in err
    assert not plugin("urbancars").can_download()


# --- SpuCo ---------------------------------------------------------------------------


def test_spuco_animals_eight_groups(tmp_path):
    fc.write_spuco_animals(tmp_path)
    spec = load("spuco-animals", tmp_path)
    assert spec.class_names == ["landbird", "waterbird", "small dog", "big dog"]
    assert spec.attr_names == ["land", "water", "indoor", "outdoor"]
    assert spec.train_group_names() == [
        "y=landbird,a=land", "y=landbird,a=water", "y=waterbird,a=land", "y=waterbird,a=water",
        "y=small dog,a=indoor", "y=small dog,a=outdoor", "y=big dog,a=indoor",
        "y=big dog,a=outdoor"]
    assert train_counts(spec) == [3, 1, 1, 3, 3, 1, 1, 3]
    assert split_sizes(spec) == [16, 8, 8]
    assert spec.evaluation_groups().names == spec.train_group_names()
    assert eval_counts(spec, "val") == [1] * 8
    assert spec.metadata["item"][0].startswith("spuco_birds/train/landbirds/land/")


def test_spuco_animals_errors_and_download(tmp_path, monkeypatch, bench_main):
    fc.write_spuco_animals(tmp_path / "data")
    empty = tmp_path / "data" / "spuco_dogs" / "val" / "big_dogs" / "indoor"
    for f in empty.iterdir():
        f.unlink()
    code, err = bench_main(*run_args("spuco-animals", tmp_path / "data", tmp_path))
    assert code == 2 and f"{empty} is empty; unpack spuco_dogs.tar.gz (https://ucla.box.com" in err
    with pytest.raises(UserError, match=r"--dataset-opt x: spuco-animals takes $"):
        load("spuco-animals", tmp_path / "data", x="1")
    calls = fake_urlopen(monkeypatch)
    with pytest.raises(UserError, match=r"download of https://ucla.box.com/shared/static/zrsx"):
        plugin("spuco-animals").download(DatasetOptions(data_root=tmp_path / "dl"))
    assert len(calls) == 1
    src = fc.write_spuco_animals(tmp_path / "src")
    birds, dogs = (part[3] for part in _spuco_parts())
    fake_urlopen(monkeypatch, {birds: fc.tar_gz_of(src / "spuco_birds", "spuco_birds"),
                               dogs: fc.tar_gz_of(src / "spuco_dogs", "spuco_dogs")})
    where = plugin("spuco-animals").download(DatasetOptions(data_root=tmp_path / "dl"))
    assert where == str(tmp_path / "dl")
    assert split_sizes(load("spuco-animals", tmp_path / "dl")) == [16, 8, 8]


def _spuco_parts() -> tuple:
    return sys.modules[type(plugin("spuco-animals")).__module__].PARTS


def test_spuco_sun_image_folder_layout(tmp_path):
    fc.write_spuco_sun(tmp_path)
    spec = load("spuco-sun", tmp_path)
    assert spec.class_names == ["0", "1"] and spec.attr_names == ["spurious 0", "spurious 1"]
    assert train_counts(spec) == [3, 1, 1, 3] and split_sizes(spec) == [8, 4, 4]
    named = load("spuco-sun", tmp_path, classes="forest,beach")
    assert named.class_names == ["forest", "beach"]
    assert named.evaluation_groups().names[0] == "y=forest,a=spurious 0"
    with pytest.raises(UserError, match=r"classes: 1 name\(s\) for the 2 class folders"):
        load("spuco-sun", tmp_path, classes="forest")
    (tmp_path / "spuco_sun" / "val" / "2" / "0").mkdir(parents=True)
    with pytest.raises(UserError, match=r"spuco_sun/val: class folders \['0', '1', '2'\] differ"):
        load("spuco-sun", tmp_path)
    assert not plugin("spuco-sun").can_download()


# --- ImageNet-9 backgrounds ----------------------------------------------------------


def test_imagenet_bg_variants_as_attribute(tmp_path):
    fc.write_imagenet_bg(tmp_path)
    spec = load("imagenet-bg", tmp_path)
    assert spec.class_names == ["dog", "bird", "wheeled vehicle", "reptile", "carnivore",
                                "insect", "musical instrument", "primate", "fish"]
    assert spec.attr_names == ["original", "mixed_same", "mixed_rand"]
    assert split_sizes(spec) == [18, 9, 27]
    assert spec.n_groups == 9 and train_counts(spec) == [2] * 9  # classes: no training attribute
    assert spec.evaluation_groups().names == ["original", "mixed_same", "mixed_rand"]
    assert eval_counts(spec, "test") == [9, 9, 9] and eval_counts(spec, "val") == [9, 0, 0]
    test = spec.metadata.filter(pl.col("split") == "test")
    assert test["variant"].unique(maintain_order=True).to_list() == ["original", "mixed_same",
                                                                    "mixed_rand"]
    assert spec.metadata["item"][0] == "original/train/00_dog/00000.JPEG"
    more = load("imagenet-bg", tmp_path, variants="mixed_rand,only_fg", groups="class_variant")
    assert more.attr_names == ["original", "mixed_rand", "only_fg"]
    assert split_sizes(more) == [18, 9, 18]
    assert len(more.evaluation_groups().names) == 27
    assert more.evaluation_groups().names[:2] == ["y=dog,a=original", "y=dog,a=mixed_rand"]


def test_imagenet_bg_extra_metrics_bg_gap():
    md = pl.DataFrame({"y": [0] * 12, "variant": ["original"] * 4 + ["mixed_same"] * 4
                       + ["mixed_rand"] * 4})
    pred = np.array([0, 0, 0, 0] + [0, 0, 0, 1] + [0, 1, 1, 1])
    out = plugin("imagenet-bg").extra_metrics(md, pred)
    assert out == pytest.approx({"acc_original": 100.0, "acc_mixed_same": 75.0,
                                 "acc_mixed_rand": 25.0, "bg_gap": 50.0})
    only = plugin("imagenet-bg").extra_metrics(md.head(4), pred[:4])
    assert only == {"acc_original": 100.0}


def test_imagenet_bg_errors_and_download(tmp_path, monkeypatch, bench_main):
    fc.write_imagenet_bg(tmp_path / "data")
    with pytest.raises(UserError, match=r"variants=mixed_random: choose from original"):
        load("imagenet-bg", tmp_path / "data", variants="mixed_random")
    with pytest.raises(UserError, match=r"groups=pairs: imagenet-bg takes variant or"):
        load("imagenet-bg", tmp_path / "data", groups="pairs")
    gone = tmp_path / "data" / "bg_challenge" / "mixed_rand" / "val" / "05_insect"
    for f in gone.iterdir():
        f.unlink()
    gone.rmdir()
    code, err = bench_main(*run_args("imagenet-bg", tmp_path / "data", tmp_path))
    assert code == 2 and f"{gone} is missing (IN-9 has class folders 00_dog" in err
    assert "backgrounds_challenge_data.tar.gz (https://github.com/MadryLab" in err
    module = sys.modules[type(plugin("imagenet-bg")).__module__]
    calls = fake_urlopen(monkeypatch)
    code, err = bench_main("datasets", "download", "imagenet-bg", "--data-root",
                           str(tmp_path / "dl"))
    assert code == 2 and calls == [module.TEST_URL] and module.TEST_URL in err
    src = fc.write_imagenet_bg(tmp_path / "src")
    fake_urlopen(monkeypatch, {
        module.TEST_URL: fc.tar_gz_of(src / "bg_challenge", "bg_challenge"),
        module.TRAIN_URL: fc.tar_gz_of(src / "original", "original")})
    assert plugin("imagenet-bg").download(DatasetOptions(data_root=tmp_path / "dl"))
    assert split_sizes(load("imagenet-bg", tmp_path / "dl")) == [18, 9, 27]


# --- CounterAnimal -------------------------------------------------------------------


def test_counteranimal_is_evaluation_only_with_its_own_metrics():
    ca = plugin("counteranimal")
    assert ca.evaluation_only and not ca.can_download()
    md = pl.DataFrame({"y": [0] * 8, "a": [0] * 4 + [1] * 4})
    out = ca.extra_metrics(md, np.array([0, 0, 0, 1, 0, 1, 1, 1]))
    assert out == pytest.approx({"common_acc": 75.0, "counter_acc": 25.0, "drop": 50.0})


def test_counteranimal_groups_and_label_spaces(tmp_path):
    fc.write_counteranimal(tmp_path)
    spec = load("counteranimal", tmp_path)
    assert spec.class_names == ["black swan", "lion", "ice bear"]  # ImageNet-index order
    assert spec.attr_names == ["common", "counter"]
    assert split_sizes(spec) == [0, 0, 11]
    assert spec.evaluation_groups().names[:2] == ["y=black swan,a=common",
                                                  "y=black swan,a=counter"]
    assert eval_counts(spec) == [2, 2, 3, 1, 2, 1]
    assert set(spec.metadata["background"]) == {"grass", "snow", "water"}
    imagenet = load("counteranimal", tmp_path, label_space="imagenet")
    assert imagenet.n_classes == 1000 and imagenet.class_names[291] == "lion"
    assert sorted(set(imagenet.metadata["y"])) == [100, 291, 296]


def test_counteranimal_errors(tmp_path, bench_main):
    code, err = bench_main(*run_args("counteranimal", tmp_path / "none", tmp_path))
    assert code == 2 and "dataset 'counteranimal' not found" in err
    assert "drive.google.com" in err
    base = fc.write_counteranimal(tmp_path, names_file=False)
    with pytest.raises(UserError, match=r"label_space=all: counteranimal takes dataset or"):
        load("counteranimal", tmp_path, label_space="all")
    with pytest.raises(UserError, match=r"imagenet_names.txt: file not found"):
        load("counteranimal", tmp_path, label_space="imagenet")
    (base / "imagenet_names.txt").write_text("0\ttench\nlion\n")
    with pytest.raises(UserError, match=r"imagenet_names.txt: line 2 is 'lion'"):
        load("counteranimal", tmp_path, label_space="imagenet")
    (base / "291 lion" / "common-sand").mkdir()
    code, err = bench_main(*run_args("counteranimal", tmp_path, tmp_path))
    assert code == 2 and f"{base / '291 lion'}: expected one common-<background> folder" in err
    with pytest.raises(UserError, match=r"no automatic download"):
        plugin("counteranimal").download(DatasetOptions(data_root=tmp_path))


# --- the conformance kit -------------------------------------------------------------


@pytest.mark.parametrize("name, writer, options", [
    ("spawrious", fc.write_spawrious, {"challenge": "o2o_hard"}),
    ("urbancars", fc.write_urbancars, {}),
    ("spuco-animals", fc.write_spuco_animals, {}),
    ("spuco-sun", fc.write_spuco_sun, {}),
    ("imagenet-bg", fc.write_imagenet_bg, {}),
    ("counteranimal", fc.write_counteranimal, {}),
])
def test_conformance_kit(tmp_path, name, writer, options):
    from bench.testing import check_dataset

    writer(tmp_path)
    check_dataset(name, options=options, data_root=tmp_path)
