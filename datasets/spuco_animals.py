"""spuco-animals and spuco-sun: the SpuCo benchmark's image datasets (Joshi et al. 2023),
in the on-disk layout of the `spuco` package.

spuco-animals reads <data root>/spuco_birds/{train,val,test}/{landbirds,waterbirds}/
{land,water}/* and spuco_dogs/{split}/{small_dogs,big_dogs}/{indoor,outdoor}/* (what the
authors' SpuCoBirds and SpuCoDogs archives unpack to). As in SpuCoAnimals, y = landbird 0,
waterbird 1, small dog 2, big dog 3 and a = the spurious label land 0, water 1, indoor 2,
outdoor 3; only 8 of the 16 (y, a) pairs exist, so the training and evaluation groups
are those 8 (column g). Splits are the folders.

spuco-sun reads the layout of SpuCo's SpuCoImageFolder, which SpuCoSun uses:
<data root>/{train,val,test}/<class>/<spurious>/*. Class and spurious folders are taken in
sorted order (numerically when the names are numbers; SpuCo takes os.listdir order). Groups
are the (class, spurious folder) pairs present. The SpuCoSun images themselves have no
published download.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl

import bench

SPLITS = ("train", "val", "test")
# (archive folder, class folders, spurious folders, URL) from spuco's spuco_birds/dogs.py
PARTS = (
    ("spuco_birds", ("landbirds", "waterbirds"), ("land", "water"),
     "https://ucla.box.com/shared/static/zrsx09ik7lqad1e389w06f1c4nbajo9z"),
    ("spuco_dogs", ("small_dogs", "big_dogs"), ("indoor", "outdoor"),
     "https://ucla.box.com/shared/static/u3dkllvq7a2py4x443pqul295wwd549e"),
)
ANIMAL_CLASSES = ["landbird", "waterbird", "small dog", "big dog"]
ANIMAL_ATTRS = ["land", "water", "indoor", "outdoor"]
SUN_FOLDERS = ("spuco_sun", "spucosun")


def _files(folder: Path) -> list[str]:
    """Every file of the folder (SpuCo lists them all, whatever the extension), sorted."""
    return sorted(p.name for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))


def _subdirs(folder: Path) -> list[str]:
    names = [p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")]
    numeric = all(n.isdigit() for n in names)
    return sorted(names, key=lambda n: (int(n), n) if numeric else (0, n))


def _groups(y: np.ndarray, a: np.ndarray, train: np.ndarray, n_attrs: int,
            class_names: list[str], attr_names: list[str]) -> dict:
    """Training groups = the (y, a) pairs with training rows; evaluation groups = all pairs
    present. A row of a pair never seen in training keeps its class's first group."""
    pair = y * n_attrs + a
    train_pairs = sorted(set(pair[train].tolist()))
    present = sorted(set(pair.tolist()))
    index = {p: i for i, p in enumerate(train_pairs)}
    first = {p // n_attrs: i for i, p in reversed(list(enumerate(train_pairs)))}
    g = np.array([index.get(p, first.get(p // n_attrs, 0)) for p in pair.tolist()])

    def label(p: int) -> str:
        return f"y={class_names[p // n_attrs]},a={attr_names[p % n_attrs]}"

    return {"g": g, "group_names": [label(p) for p in train_pairs],
            "eval_groups": bench.EvalGroups(names=[label(p) for p in present],
                                            masks=np.stack([pair == p for p in present]))}


def _animals_root(base: Path) -> Path:
    candidates = [base / "spuco", base]
    for c in candidates:
        if (c / "spuco_birds").is_dir() or (c / "spuco_dogs").is_dir():
            return c
    looked = ", ".join(str(c / p[0]) for c in candidates for p in PARTS)
    raise bench.UserError(
        f"dataset 'spuco-animals' not found: looked for {looked}; get it with `bench datasets "
        "download spuco-animals --data-root DIR` or from the URLs in docs/datasets.md")


def _animals_rows(root: Path) -> dict[str, list]:
    rows: dict[str, list] = {"item": [], "y": [], "a": [], "split": []}
    for part_index, (part, class_dirs, spur_dirs, url) in enumerate(PARTS):
        for split in SPLITS:
            for ci, cls in enumerate(class_dirs):
                for si, spur in enumerate(spur_dirs):
                    rel = f"{part}/{split}/{cls}/{spur}"
                    folder = root / rel
                    if not folder.is_dir() or not _files(folder):
                        what = "is missing" if not folder.is_dir() else "is empty"
                        raise bench.UserError(
                            f"{folder} {what}; unpack {part}.tar.gz ({url}) into {root}, or run "
                            "`bench datasets download spuco-animals --data-root DIR`")
                    names = _files(folder)
                    rows["item"] += [f"{rel}/{n}" for n in names]
                    rows["y"] += [2 * part_index + ci] * len(names)
                    rows["a"] += [2 * part_index + si] * len(names)
                    rows["split"] += [split] * len(names)
    return rows


@bench.dataset
class SpuCoAnimals(bench.Dataset):
    name = "spuco-animals"
    description = "SpuCoAnimals: land/water birds and small/big dogs on spurious backgrounds"
    modality = "image"
    paper = "Joshi et al. 2023, Towards Mitigating Spurious Correlations in the Wild (SpuCo)"
    classes = "4 (landbird, waterbird, small dog, big dog)"
    groups = "8 (class × its two backgrounds)"
    download_hint = "bench datasets download spuco-animals (the SpuCo archives, ~3 GB each)"

    def load(self, options: bench.DatasetOptions) -> bench.DatasetSpec:
        options.check_known(self.name, [])
        root = _animals_root(bench.data_base(options))
        rows = _animals_rows(root)
        y, a = np.array(rows["y"]), np.array(rows["a"])
        groups = _groups(y, a, np.array(rows["split"]) == "train", 4, ANIMAL_CLASSES,
                         ANIMAL_ATTRS)
        md = pl.DataFrame({"id": rows["item"], "item": rows["item"], "y": y, "a": a,
                           "split": rows["split"], "g": groups.pop("g")})
        return bench.spec_from_source(
            root,
            name=self.name,
            metadata=md,
            class_names=list(ANIMAL_CLASSES),
            attr_names=list(ANIMAL_ATTRS),
            item_kind="image",
            prompt_templates=["a photo of a {}.", "a photo of the {}, an animal."],
            root=str(root),
            **groups,
        )

    def download(self, options: bench.DatasetOptions) -> str:
        base = bench.data_base(options)
        for part, _, _, url in PARTS:
            if not (base / part).is_dir():
                bench.fetch_archive(url, base, f"{part}.tar.gz")
        _animals_rows(base)  # judged by the files it left: every folder there, none empty
        return str(base)


@bench.dataset
class SpuCoSun(bench.Dataset):
    name = "spuco-sun"
    description = "SpuCoSun: SUN397 scenes with generated spurious foregrounds (SpuCo layout)"
    modality = "image"
    paper = "Joshi et al. 2023, Towards Mitigating Spurious Correlations in the Wild (SpuCo)"
    download_hint = "no published download: point --data-root at a SpuCoSun copy (train/val/test)"
    options_help = "classes=NAME,NAME,... (class names for prompts, in folder order)"

    def load(self, options: bench.DatasetOptions) -> bench.DatasetSpec:
        options.check_known(self.name, ["classes"])
        base = bench.data_base(options)
        candidates = [base / f for f in SUN_FOLDERS] + [base]
        root = next((c for c in candidates if (c / "train").is_dir()), None)
        if root is None:
            looked = ", ".join(str(c / "train") for c in candidates)
            raise bench.UserError(
                f"dataset 'spuco-sun' not found: looked for {looked}; SpuCoSun has no published "
                "download: point --data-root at a copy laid out as train|val|test/<class>/"
                "<spurious>/ (see docs/datasets.md)")
        class_dirs = _subdirs(root / "train")
        rows: dict[str, list] = {"item": [], "y": [], "a": [], "split": []}
        n_attrs = 0
        for split in SPLITS:
            if not (root / split).is_dir():
                raise bench.UserError(f"{root / split} is missing; SpuCoSun has train, val and "
                                      "test folders, each <class>/<spurious>/<images>")
            found = _subdirs(root / split)
            if found != class_dirs:
                raise bench.UserError(
                    f"{root / split}: class folders {found} differ from train's {class_dirs}")
            for ci, cls in enumerate(class_dirs):
                spur_dirs = _subdirs(root / split / cls)
                n_attrs = max(n_attrs, len(spur_dirs))
                for si, spur in enumerate(spur_dirs):
                    rel = f"{split}/{cls}/{spur}"
                    names = _files(root / rel)
                    rows["item"] += [f"{rel}/{n}" for n in names]
                    rows["y"] += [ci] * len(names)
                    rows["a"] += [si] * len(names)
                    rows["split"] += [split] * len(names)
        if not rows["item"]:
            raise bench.UserError(f"{root}: no images under train|val|test/<class>/<spurious>/")
        given = options.extra.get("classes")
        names = [c.strip() for c in given.split(",")] if given else list(class_dirs)
        if len(names) != len(class_dirs):
            raise bench.UserError(
                f"--dataset-opt classes: {len(names)} name(s) for the {len(class_dirs)} class "
                f"folders of {root / 'train'} ({', '.join(class_dirs)})")
        attrs = [f"spurious {k}" for k in range(max(n_attrs, 1))]
        y, a = np.array(rows["y"], dtype=np.int64), np.array(rows["a"], dtype=np.int64)
        groups = _groups(y, a, np.array(rows["split"]) == "train", len(attrs), names, attrs)
        md = pl.DataFrame({"id": rows["item"], "item": rows["item"], "y": y, "a": a,
                           "split": rows["split"], "g": groups.pop("g")})
        return bench.spec_from_source(
            root, name=self.name, metadata=md, class_names=names, attr_names=attrs,
            item_kind="image", prompt_templates=["a photo of a {}."], root=str(root), **groups,
        )
