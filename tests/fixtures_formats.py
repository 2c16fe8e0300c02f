"""Tiny dataset folders in the official on-disk formats (WILDS, group_DRO, SubpopBench).

Each writer takes explicit rows or counts, so a test states the expected group counts by
hand instead of recomputing them with the loader's logic.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

# Waterbirds fixture: (split code, y, place) -> number of images.
WATERBIRDS_COUNTS = {
    (0, 0, 0): 6, (0, 0, 1): 2, (0, 1, 0): 1, (0, 1, 1): 4,
    (1, 0, 0): 2, (1, 0, 1): 2, (1, 1, 0): 2, (1, 1, 1): 2,
    (2, 0, 0): 2, (2, 0, 1): 2, (2, 1, 0): 2, (2, 1, 1): 2,
}
LAND, WATER = (70, 140, 50), (40, 90, 200)


def write_image(path: Path, colour: tuple[int, int, int], size: int = 16, seed: int = 0) -> None:
    """A small JPEG: a flat background colour plus a little noise and a grey square."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    pixels = np.clip(np.array(colour) + rng.integers(-20, 21, (size, size, 3)), 0, 255)
    pixels[size // 4: size // 2, size // 4: size // 2] = 128
    Image.fromarray(pixels.astype(np.uint8)).save(path)


def write_waterbirds(
    root: Path, counts: dict | None = None, folder: str = "waterbirds_v1.0"
) -> Path:
    """root/<folder>/metadata.csv (img_id,img_filename,y,split,place,place_filename) + images."""
    counts = WATERBIRDS_COUNTS if counts is None else counts
    base = Path(root) / folder
    lines = ["img_id,img_filename,y,split,place,place_filename"]
    k = 0
    for (split, y, place), n in counts.items():
        for _ in range(n):
            k += 1
            species = "001.Black_footed_Albatross" if y else "002.Laysan_Albatross"
            rel = f"{species}/{species}_{k:04d}.jpg"
            write_image(base / rel, WATER if place else LAND, seed=k)
            lines.append(f"{k},{rel},{y},{split},{place},/w/water_{k}.jpg")
    (base / "metadata.csv").write_text("\n".join(lines) + "\n")
    (base / "RELEASE_v1.0.txt").write_text("fixture\n")
    return base


# CelebA fixture rows: (image_id, Blond_Hair, Male, partition), attributes in -1/1.
CELEBA_ROWS = [
    ("000001.jpg", 1, -1, 0), ("000002.jpg", 1, -1, 0), ("000003.jpg", 1, -1, 0),
    ("000004.jpg", 1, 1, 0), ("000005.jpg", -1, -1, 0), ("000006.jpg", -1, -1, 0),
    ("000007.jpg", -1, 1, 0), ("000008.jpg", -1, 1, 0), ("000009.jpg", -1, 1, 0),
    ("000010.jpg", -1, 1, 0), ("000011.jpg", 1, 1, 1), ("000012.jpg", -1, -1, 1),
    ("000013.jpg", 1, -1, 2), ("000014.jpg", -1, 1, 2), ("000015.jpg", -1, -1, 2),
]


def write_celeba(root: Path, rows: list | None = None) -> Path:
    """root/celebA_v1.0/: list_attr_celeba.csv, list_eval_partition.csv, img_align_celeba/."""
    rows = CELEBA_ROWS if rows is None else rows
    base = Path(root) / "celebA_v1.0"
    base.mkdir(parents=True, exist_ok=True)
    attrs = ["image_id,5_o_Clock_Shadow,Blond_Hair,Male,Smiling"]
    parts = ["image_id,partition"]
    for i, (image_id, blond, male, partition) in enumerate(rows):
        attrs.append(f"{image_id},-1,{blond},{male},{1 if i % 2 else -1}")
        parts.append(f"{image_id},{partition}")
        write_image(base / "img_align_celeba" / image_id, (200, 170, 140), seed=i)
    (base / "list_attr_celeba.csv").write_text("\n".join(attrs) + "\n")
    (base / "list_eval_partition.csv").write_text("\n".join(parts) + "\n")
    return base


IDENTITIES = ("male", "female", "LGBTQ", "christian", "muslim", "other_religions", "black",
              "white")
# CivilComments fixture rows: (split, toxicity, {identity: score}).
CIVIL_ROWS = [
    ("train", 0.0, {"male": 0.6}),
    ("train", 0.9, {"male": 0.7, "black": 0.5}),
    ("train", 0.1, {}),
    ("train", 0.8, {}),
    ("train", 0.2, {"muslim": 1.0}),
    ("train", 0.6, {"white": 0.4}),  # 0.4 < 0.5: not a mention
    ("val", 0.0, {"female": 0.5}),
    ("val", 0.7, {"female": 1.0, "LGBTQ": 0.8}),
    ("val", 0.3, {}),
    ("test", 0.0, {"christian": 0.9, "white": 0.6}),
    ("test", 0.95, {"other_religions": 0.5}),
    ("test", 0.5, {"black": 0.55, "male": 0.5}),
    ("test", 0.49, {}),
]


def write_civilcomments(root: Path, rows: list | None = None) -> Path:
    """root/civilcomments_v1.0/all_data_with_identities.csv as WILDS ships it (pandas index)."""
    import csv

    rows = CIVIL_ROWS if rows is None else rows
    base = Path(root) / "civilcomments_v1.0"
    base.mkdir(parents=True, exist_ok=True)
    aux = ["identity_any", "severe_toxicity", "obscene", "threat", "insult", "identity_attack",
           "sexual_explicit"]
    with open(base / "all_data_with_identities.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["", "id", "comment_text", "split", "toxicity", *IDENTITIES, *aux])
        for i, (split, tox, ids) in enumerate(rows):
            text = f'comment {i}, with "quotes"\nand a second line'
            scores = [ids.get(k, 0.0) for k in IDENTITIES]
            w.writerow([i, 1000 + i, text, split, tox, *scores,
                        float(any(s >= 0.5 for s in scores)), 0, 0, 0, 0, 0, 0])
    return base


# MultiNLI fixture: (split code, gold label code, has negation) per metadata row.
MNLI_LABELS = ["contradiction", "entailment", "neutral"]
MNLI_ROWS = [
    (0, 0, 1), (0, 0, 0), (0, 1, 0), (0, 1, 1), (0, 2, 0), (0, 2, 1), (0, 0, 1),
    (1, 0, 0), (1, 1, 1), (1, 2, 0),
    (2, 0, 1), (2, 1, 0), (2, 2, 1),
]


def write_multinli(root: Path, rows: list | None = None) -> Path:
    """root/multinli/data/metadata_random.csv (pandas index = row in the concatenated jsonl
    files) + multinli_1.0_{train,dev_matched,dev_mismatched}.jsonl with one '-' row dropped."""
    rows = MNLI_ROWS if rows is None else rows
    base = Path(root) / "multinli" / "data"
    base.mkdir(parents=True, exist_ok=True)
    records = []
    for i, (_, y, neg) in enumerate(rows):
        records.append({"sentence1": f"premise {i}", "gold_label": MNLI_LABELS[y],
                        "sentence2": f"hypothesis {i}" + (" is never true" if neg else "")})
    records.insert(3, {"sentence1": "dropped", "sentence2": "no label", "gold_label": "-"})
    index = [i if i < 3 else i + 1 for i in range(len(rows))]  # skip the '-' row, as group_DRO
    thirds = [records[:6], records[6:10], records[10:]]
    names = ["multinli_1.0_train.jsonl", "multinli_1.0_dev_matched.jsonl",
             "multinli_1.0_dev_mismatched.jsonl"]
    for name, part in zip(names, thirds, strict=True):
        (base / name).write_text("".join(json.dumps(r) + "\n" for r in part))
    lines = [",gold_label,sentence2_has_negation,split"]
    lines += [f"{index[i]},{y},{neg},{split}" for i, (split, y, neg) in enumerate(rows)]
    (base / "metadata_random.csv").write_text("\n".join(lines) + "\n")
    return base


# MetaShift fixture: (folder, split code) per image; folder decides (y, a).
METASHIFT_ROWS = [
    ("train/cat/cat(indoor)", 0), ("train/cat/cat(indoor)", 0), ("train/cat/cat(indoor)", 1),
    ("train/cat/cat(indoor)", 2), ("train/dog/dog(outdoor)", 0), ("train/dog/dog(outdoor)", 0),
    ("train/dog/dog(outdoor)", 0), ("train/dog/dog(outdoor)", 1), ("train/dog/dog(outdoor)", 2),
    ("test/cat/cat(outdoor)", 0), ("test/cat/cat(outdoor)", 1), ("test/cat/cat(outdoor)", 2),
    ("test/dog/dog(indoor)", 0), ("test/dog/dog(indoor)", 1), ("test/dog/dog(indoor)", 2),
]
METASHIFT_GROUPS = {"train/cat/cat(indoor)": (1, 1), "train/dog/dog(outdoor)": (0, 0),
                    "test/cat/cat(outdoor)": (1, 0), "test/dog/dog(indoor)": (0, 1)}


def write_metashift(root: Path, rows: list | None = None, with_csv: bool = True) -> Path:
    """root/metashift/MetaShift-Cat-Dog-indoor-outdoor/<folders>/*.jpg and SubpopBench's
    metadata_metashift.csv, whose filenames are absolute paths from another machine."""
    rows = METASHIFT_ROWS if rows is None else rows
    base = Path(root) / "metashift"
    lines = ["filename,y,a,split"]
    for i, (folder, split) in enumerate(rows):
        rel = f"MetaShift-Cat-Dog-indoor-outdoor/{folder}/img{i:03d}.jpg"
        write_image(base / rel, (120, 110, 100), seed=i)
        y, a = METASHIFT_GROUPS[folder]
        lines.append(f"/home/someone/data/metashift/{rel},{y},{a},{split}")
    if with_csv:
        (base / "metadata_metashift.csv").write_text("\n".join(lines) + "\n")
    return base


def write_csv_images(root: Path, rows: list[tuple[str, int, int]]) -> Path:
    """root/metadata.csv (id, filename, split, y, a) + images/…; rows are (split, y, a)."""
    root = Path(root)
    lines = ["id,filename,split,y,a"]
    for i, (split, y, a) in enumerate(rows):
        rel = f"images/{i:03d}.png"
        write_image(root / rel, WATER if a else LAND, seed=i)
        lines.append(f"item{i},{rel},{split},{y},{a}")
    (root / "metadata.csv").write_text("\n".join(lines) + "\n")
    return root / "metadata.csv"
