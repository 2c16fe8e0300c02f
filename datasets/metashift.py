"""metashift: cats vs dogs, indoor vs outdoor (Liang & Zou 2022), SubpopBench's format.

Reads <data root>/metashift/metadata_metashift.csv (columns filename, y, a, split;
y: 0 dog / 1 cat, a: 0 outdoor / 1 indoor; split 0/1/2) with the images of
MetaShift-Cat-Dog-indoor-outdoor/ beside it. SubpopBench wrote absolute filenames; a
filename that does not exist as written is looked up by its part after
MetaShift-Cat-Dog-indoor-outdoor/. Without the CSV, the metadata is built from the four
image folders with SubpopBench's recipe (25% test, 10% val, RandomState(42)) over the
sorted file list, so it is reproducible but not SubpopBench's exact split.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import polars as pl

import bench

IMAGES = "MetaShift-Cat-Dog-indoor-outdoor"
FOLDERS_TO_GROUPS = {  # folder: (y, a)
    "train/cat/cat(indoor)": (1, 1),
    "train/dog/dog(outdoor)": (0, 0),
    "test/cat/cat(outdoor)": (1, 0),
    "test/dog/dog(indoor)": (0, 1),
}
HINT = (
    "there is no automatic download: get MetaShift-Cat-Dog-indoor-outdoor (see "
    "docs/datasets.md), put it in DIR/metashift and pass --data-root DIR"
)


def _relative(filename: str) -> str:
    if os.path.isabs(filename) and os.path.isfile(filename):
        return filename
    marker = IMAGES + "/"
    norm = filename.replace("\\", "/")
    if marker in norm:
        return IMAGES + "/" + norm.split(marker, 1)[1]
    return filename


def _generated(folder: Path) -> pl.DataFrame:
    rows = []
    for sub, (y, a) in FOLDERS_TO_GROUPS.items():
        for path in sorted((folder / IMAGES / sub).glob("*.jpg")):
            rows.append({"filename": f"{IMAGES}/{sub}/{path.name}", "y": y, "a": a})
    df = pl.DataFrame(rows, schema={"filename": pl.Utf8, "y": pl.Int64, "a": pl.Int64})
    rng = np.random.RandomState(42)
    n = df.height
    test = rng.choice(np.arange(n), size=int(n * 0.25), replace=False)
    val = rng.choice(np.setdiff1d(np.arange(n), test), size=int(n * 0.1), replace=False)
    split = np.zeros(n, dtype=np.int64)
    split[val], split[test] = 1, 2
    return df.with_columns(split=pl.Series(split))


@bench.dataset
class MetaShift(bench.Dataset):
    name = "metashift"
    description = "MetaShift cats vs dogs with indoor/outdoor context (SubpopBench format)"
    modality = "image"
    paper = "Liang & Zou 2022, MetaShift"
    classes = "2 (dog, cat)"
    groups = "4 (label × indoor/outdoor)"
    download_hint = "manual: MetaShift-Cat-Dog-indoor-outdoor into DATA/metashift"

    def load(self, options: bench.DatasetOptions) -> bench.DatasetSpec:
        base = bench.data_base(options)
        folder = next((f for f in (base / "metashift", base)
                       if (f / "metadata_metashift.csv").is_file() or (f / IMAGES).is_dir()), None)
        if folder is None:
            raise bench.UserError(
                f"dataset 'metashift' not found: looked for metadata_metashift.csv or {IMAGES}/ "
                f"in {base / 'metashift'} and {base}; {HINT}"
            )
        path = folder / "metadata_metashift.csv"
        if path.is_file():
            df = bench.read_csv_table(path, ["filename", "y", "a", "split"])
        else:
            path = folder / IMAGES
            df = _generated(folder)
        y = bench.int_column(df, "y", path, 2, id_col="filename")
        a = bench.int_column(df, "a", path, 2, id_col="filename")
        split = bench.split_column(df, "split", path, id_col="filename")
        items = [_relative(str(f)) for f in df["filename"].to_list()]
        bench.check_image_files(folder, items, path, "filename")
        md = pl.DataFrame({"id": items, "item": items, "y": y, "a": a, "split": split})
        return bench.spec_from_source(
            path,
            name=self.name,
            metadata=md,
            class_names=["dog", "cat"],
            attr_names=["outdoor", "indoor"],
            item_kind="image",
            prompt_templates=["a photo of a {}.", "a photo of the {}, a type of pet."],
            root=str(folder),
        )
