"""imagenet-bg: ImageNet-9 and its background variants (Xiao et al. 2020, "Noise or
Signal"), from the authors' two archives unpacked side by side.

Reads <data root>/original/{train,val}/<class>/ (the training archive original.tar.gz:
train is the training split, its val the validation split) and
<data root>/bg_challenge/<variant>/val/<class>/ (the test release
backgrounds_challenge_data.tar.gz) for each evaluated variant (`--dataset-opt variants=`,
default original,mixed_same,mixed_rand). Class folders are 00_dog ... 08_fish, as the
authors' ImageFolder reads them.

Groups: IN-9 has no spurious label in training; the authors measure background reliance
by accuracy per test variant. So a = the variant (original = 0 for every training and
validation image, then the evaluated variants in order; metadata column `variant` names
it), training groups are the 9 classes (column g), and evaluation groups are the variants
(`groups=variant`, default) or (class, variant) pairs (`groups=class_variant`).
`extra_metrics` gives each variant's accuracy and BG-Gap = mixed_same - mixed_rand.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl

import bench

CLASS_DIRS = ["00_dog", "01_bird", "02_wheeled vehicle", "03_reptile", "04_carnivore",
              "05_insect", "06_musical instrument", "07_primate", "08_fish"]
CLASSES = [d.split("_", 1)[1] for d in CLASS_DIRS]
VARIANTS = ("original", "mixed_same", "mixed_rand", "mixed_next", "only_fg", "no_fg",
            "only_bg_b", "only_bg_t")
DEFAULT_VARIANTS = "original,mixed_same,mixed_rand"
EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
TEST_URL = ("https://github.com/MadryLab/backgrounds_challenge/releases/download/data/"
            "backgrounds_challenge_data.tar.gz")
TRAIN_URL = "https://www.dropbox.com/s/0vv2qsc4ywb4z5v/original.tar.gz?dl=1"
KNOWN = ("variants", "groups")


def _images(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()
                  if p.is_file() and p.name.lower().endswith(EXTENSIONS))


def _variants(options: bench.DatasetOptions) -> list[str]:
    raw = options.extra.get("variants", DEFAULT_VARIANTS)
    chosen = [v.strip() for v in raw.split(",") if v.strip()]
    bad = [v for v in chosen if v not in VARIANTS]
    if bad or not chosen:
        raise bench.UserError(f"--dataset-opt variants={raw}: choose from {', '.join(VARIANTS)}")
    return list(dict.fromkeys(chosen))


def _root(base: Path) -> Path | None:
    return next((c for c in (base / "imagenet9", base)
                 if (c / "original" / "train").is_dir() or (c / "bg_challenge").is_dir()), None)


def _read(root: Path, sub: str, url: str) -> tuple[list[str], list[int]]:
    """Items and labels of one ImageFolder (sub/<class>/*), every class folder required."""
    items: list[str] = []
    labels: list[int] = []
    for y, cls in enumerate(CLASS_DIRS):
        folder = root / sub / cls
        if not folder.is_dir():
            raise bench.UserError(
                f"{folder} is missing (IN-9 has class folders {', '.join(CLASS_DIRS)}); unpack "
                f"{url.split('/')[-1].split('?')[0]} ({url}) into {root}, or run `bench datasets "
                "download imagenet-bg --data-root DIR`")
        names = _images(folder)
        items += [f"{sub}/{cls}/{n}" for n in names]
        labels += [y] * len(names)
    return items, labels


@bench.dataset
class ImageNetBackgrounds(bench.Dataset):
    name = "imagenet-bg"
    description = "ImageNet-9 backgrounds: train on original, test on mixed_same/mixed_rand too"
    modality = "image"
    paper = "Xiao et al. 2020, Noise or Signal: The Role of Image Backgrounds"
    classes = "9 (IN-9 superclasses)"
    groups = "test variants (original, mixed_same, mixed_rand)"
    download_hint = "bench datasets download imagenet-bg (the authors' release and Dropbox archive)"
    options_help = "variants=original,mixed_same,mixed_rand,..., groups=variant|class_variant"

    def load(self, options: bench.DatasetOptions) -> bench.DatasetSpec:
        options.check_known(self.name, KNOWN)
        variants = _variants(options)
        grouping = options.extra.get("groups", "variant")
        if grouping not in ("variant", "class_variant"):
            raise bench.UserError(
                f"--dataset-opt groups={grouping}: imagenet-bg takes variant or class_variant")
        base = bench.data_base(options)
        root = _root(base)
        if root is None:
            raise bench.UserError(
                f"dataset 'imagenet-bg' not found: looked for original/train and bg_challenge/ in "
                f"{base / 'imagenet9'} and {base}; get them with `bench datasets download "
                "imagenet-bg --data-root DIR` (see docs/datasets.md)")
        attrs = ["original"] + [v for v in variants if v != "original"]
        parts = [("original/train", "train", "original", TRAIN_URL),
                 ("original/val", "val", "original", TRAIN_URL)]
        parts += [(f"bg_challenge/{v}/val", "test", v, TEST_URL) for v in variants]
        cols: dict[str, list] = {"item": [], "y": [], "split": [], "variant": []}
        for sub, split, variant, url in parts:
            items, labels = _read(root, sub, url)
            cols["item"] += items
            cols["y"] += labels
            cols["split"] += [split] * len(items)
            cols["variant"] += [variant] * len(items)
        y = np.array(cols["y"], dtype=np.int64)
        a = np.array([attrs.index(v) for v in cols["variant"]], dtype=np.int64)
        md = pl.DataFrame({"id": cols["item"], "item": cols["item"], "y": y, "a": a,
                           "split": cols["split"], "g": y, "variant": cols["variant"]})
        if grouping == "variant":
            names = list(attrs)
            masks = np.stack([a == k for k in range(len(attrs))])
        else:
            names = [f"y={c},a={v}" for c in CLASSES for v in attrs]
            masks = np.stack([(y == c) & (a == k) for c in range(9) for k in range(len(attrs))])
        return bench.spec_from_source(
            root,
            name=self.name,
            metadata=md,
            class_names=list(CLASSES),
            attr_names=attrs,
            item_kind="image",
            prompt_templates=["a photo of a {}.", "a photo of the {}."],
            group_names=[f"y={c}" for c in CLASSES],
            eval_groups=bench.EvalGroups(names=names, masks=masks),
            root=str(root),
        )

    def extra_metrics(self, metadata: pl.DataFrame, pred: np.ndarray) -> dict[str, float]:
        """Accuracy on each variant present, and the paper's BG-Gap (mixed_same - mixed_rand)."""
        correct = np.asarray(pred) == metadata["y"].to_numpy()
        variant = np.array(metadata["variant"].to_list())
        out = {f"acc_{v}": 100 * float(correct[variant == v].mean())
               for v in dict.fromkeys(variant.tolist())}
        if "acc_mixed_same" in out and "acc_mixed_rand" in out:
            out["bg_gap"] = out["acc_mixed_same"] - out["acc_mixed_rand"]
        return out

    def download(self, options: bench.DatasetOptions) -> str:
        base = bench.data_base(options)
        if not (base / "bg_challenge").is_dir():
            bench.fetch_archive(TEST_URL, base, "backgrounds_challenge_data.tar.gz")
        if not (base / "original" / "train").is_dir():
            bench.fetch_archive(TRAIN_URL, base, "original.tar.gz")
        for sub, url in [("original/train", TRAIN_URL), ("original/val", TRAIN_URL)] + [
                (f"bg_challenge/{v}/val", TEST_URL) for v in _variants(options)]:
            _read(base, sub, url)  # judged by the files it left: every class folder there
        return str(base)
