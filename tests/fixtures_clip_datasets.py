"""Tiny folders in the authors' on-disk layouts of Spawrious, UrbanCars, SpuCoAnimals,
SpuCoSun, ImageNet-9 backgrounds and CounterAnimal, with 4x4 images.

Each writer takes explicit counts, so a test states the expected numbers by hand instead of
recomputing them with the loader's logic.
"""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import numpy as np
from PIL import Image


def tiny_image(path: Path, seed: int = 0) -> None:
    """A 4x4 image in the format its suffix names (PNG, JPEG)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (4, 4, 3), dtype=np.uint8)
    fmt = "PNG" if path.suffix.lower() == ".png" else "JPEG"
    Image.fromarray(pixels).save(path, format=fmt)


def _fill(folder: Path, n: int, suffix: str, start: int = 0) -> None:
    for k in range(n):
        tiny_image(folder / f"{start + k:05d}{suffix}", seed=start + k)


def write_spawrious(root: Path, n: int = 10, extra: dict | None = None) -> Path:
    """root/spawrious224/{0,1}/<location>/<breed>/*.png: n images in every one of the 48
    folders (6 locations x 4 breeds x 2), plus `extra` {(folder, location, breed): n}."""
    base = Path(root) / "spawrious224"
    counts = {(k, loc, breed): n for k in (0, 1)
              for loc in ("desert", "jungle", "dirt", "mountain", "snow", "beach")
              for breed in ("bulldog", "corgi", "dachshund", "labrador")}
    counts.update(extra or {})
    for (k, loc, breed), m in counts.items():
        _fill(base / str(k) / loc / breed, m, ".png")
    (base / str(0) / "desert" / "bulldog" / "notes.txt").write_text("not an image\n")
    return base


# UrbanCars fixture: (split, obj, bg, co) -> images; 0 = urban, 1 = country.
URBANCARS_COUNTS = {
    **{("train", o, b, c): (4 if (b == o and c == o) else 2 if (b == o or c == o) else 1)
       for o in (0, 1) for b in (0, 1) for c in (0, 1)},
    **{(s, o, b, c): 1 for s in ("val", "test") for o in (0, 1) for b in (0, 1) for c in (0, 1)},
}
URBAN_SUB = {"train": "bg-0.95_co_occur_obj-0.95/train", "val": "bg-0.5_co_occur_obj-0.5/val",
             "test": "bg-0.5_co_occur_obj-0.5/test"}


def write_urbancars(root: Path, counts: dict | None = None) -> Path:
    """root/urbancars/<ratio folder>/<split>/obj-X_bg-Y_co_occur_obj-Z/*.jpg."""
    counts = URBANCARS_COUNTS if counts is None else counts
    base = Path(root) / "urbancars"
    names = ("urban", "country")
    for i, ((split, o, b, c), m) in enumerate(counts.items()):
        folder = base / URBAN_SUB[split] / f"obj-{names[o]}_bg-{names[b]}_co_occur_obj-{names[c]}"
        folder.mkdir(parents=True, exist_ok=True)
        _fill(folder, m, ".jpg", start=100 * i)
    return base


def write_spuco_animals(root: Path, majority: int = 3, minority: int = 1) -> Path:
    """root/spuco_birds/<split>/{landbirds,waterbirds}/{land,water}/ and spuco_dogs/...;
    majority groups (landbird-land, waterbird-water, small-indoor, big-outdoor) get
    `majority` images in train, minority ones `minority`; val and test 1 each."""
    root = Path(root)
    parts = (("spuco_birds", ("landbirds", "waterbirds"), ("land", "water")),
             ("spuco_dogs", ("small_dogs", "big_dogs"), ("indoor", "outdoor")))
    k = 0
    for part, classes, spurious in parts:
        for split in ("train", "val", "test"):
            for ci, cls in enumerate(classes):
                for si, spur in enumerate(spurious):
                    m = (majority if ci == si else minority) if split == "train" else 1
                    _fill(root / part / split / cls / spur, m, ".JPEG", start=k)
                    k += m
    return root


def write_spuco_sun(root: Path, counts: dict[str, list[list[int]]] | None = None) -> Path:
    """root/spuco_sun/<split>/<class>/<spurious>/*.png; counts[split][class][spurious]."""
    counts = counts or {"train": [[3, 1], [1, 3]], "val": [[1, 1], [1, 1]],
                        "test": [[1, 1], [1, 1]]}
    base = Path(root) / "spuco_sun"
    k = 0
    for split, per_class in counts.items():
        for ci, per_spur in enumerate(per_class):
            for si, m in enumerate(per_spur):
                folder = base / split / str(ci) / str(si)
                folder.mkdir(parents=True, exist_ok=True)
                _fill(folder, m, ".png", start=k)
                k += m
    return base


IN9_CLASSES = ["00_dog", "01_bird", "02_wheeled vehicle", "03_reptile", "04_carnivore",
               "05_insect", "06_musical instrument", "07_primate", "08_fish"]


def write_imagenet_bg(root: Path, train: int = 2, val: int = 1, test: int = 1,
                      variants: tuple[str, ...] = ("original", "mixed_same", "mixed_rand",
                                                   "only_fg")) -> Path:
    """root/original/{train,val}/<class>/*.JPEG and root/bg_challenge/<variant>/val/<class>/."""
    root = Path(root)
    k = 0
    subs = [("original/train", train), ("original/val", val)]
    subs += [(f"bg_challenge/{v}/val", test) for v in variants]
    for sub, m in subs:
        for cls in IN9_CLASSES:
            _fill(root / sub / cls, m, ".JPEG", start=k)
            k += m
    return root


# CounterAnimal fixture: (folder name, common background, counter background, n common,
# n counter); ImageNet indices out of order on purpose.
COUNTERANIMAL_CLASSES = [
    ("291 lion", "grass", "snow", 3, 1),
    ("100 black swan", "water", "grass", 2, 2),
    ("296 ice bear", "snow", "grass", 2, 1),
]


def write_counteranimal(root: Path, classes: list | None = None, names_file: bool = True) -> Path:
    """root/counteranimal/LAION-final/<index name>/{common,counter}-<bg>/*.jpg (+ the
    1000-line imagenet_names.txt)."""
    base = Path(root) / "counteranimal" / "LAION-final"
    k = 0
    for folder, common, counter, n_common, n_counter in classes or COUNTERANIMAL_CLASSES:
        _fill(base / folder / f"common-{common}", n_common, ".jpg", start=k)
        _fill(base / folder / f"counter-{counter}", n_counter, ".jpg", start=k + 50)
        k += 100
    if names_file:
        lines = [f"{i}\timagenet class {i}" for i in range(1000)]
        lines[291], lines[100], lines[296] = "291\tlion", "100\tblack swan", "296\tice bear"
        (base / "imagenet_names.txt").write_text("\n".join(lines) + "\n")
    return base


def tar_gz_of(folder: Path, arcname: str) -> bytes:
    """The bytes of a .tar.gz holding `folder` as `arcname` (a fixture 'download')."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        tar.add(folder, arcname=arcname)
    return buf.getvalue()
