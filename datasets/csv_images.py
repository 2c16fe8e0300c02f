"""csv: any folder of images becomes a benchmark through one metadata CSV.

The CSV has columns filename (relative to the image root, or absolute), y, a, split
(0/1/2 or train/val/test) and optionally id. Options (--dataset-opt KEY=VALUE):
metadata=FILE (default <data root>/metadata.csv), images=DIR (default: the CSV's folder),
classes=NAME,NAME,... and attributes=NAME,... (default: "class 0", ... up to the largest
label), prompts=TEMPLATE|TEMPLATE (default "a photo of a {}."), name=NAME (the dataset's
name in results and leaderboards, default csv).
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

import bench

KNOWN = ("metadata", "images", "classes", "attributes", "prompts", "name")


def _names(options: bench.DatasetOptions, key: str, prefix: str, values) -> list[str]:  # noqa: ANN001
    raw = options.extra.get(key)
    if raw:
        return [v.strip() for v in raw.split(",") if v.strip()]
    top = int(values.max()) if len(values) else 0
    return [f"{prefix} {k}" for k in range(max(top, 0) + 1)]


@bench.dataset
class CsvImages(bench.Dataset):
    name = "csv"
    description = "Your own images: a metadata CSV (filename, y, a, split) plus an image root"
    modality = "image"
    download_hint = "bring your own: --dataset-opt metadata=FILE (see docs/datasets.md)"
    options_help = "metadata=FILE, images=DIR, classes=A,B, attributes=A,B, prompts=T|T, name=NAME"

    def load(self, options: bench.DatasetOptions) -> bench.DatasetSpec:
        options.check_known(self.name, KNOWN)
        given = options.extra.get("metadata")
        path = Path(given) if given else bench.data_base(options) / "metadata.csv"
        if not path.is_file():
            raise bench.UserError(
                f"dataset 'csv': metadata file {path} not found; pass --dataset-opt "
                "metadata=FILE (columns filename, y, a, split) or --data-root DIR holding "
                "metadata.csv"
            )
        images = Path(options.extra.get("images") or path.parent)
        df = bench.read_csv_table(path, ["filename", "y", "a", "split"])
        id_col = "id" if "id" in df.columns else "filename"
        y0 = bench.int_column(df, "y", path, id_col=id_col)
        a0 = bench.int_column(df, "a", path, id_col=id_col)
        classes = _names(options, "classes", "class", y0)
        attrs = _names(options, "attributes", "attribute", a0)
        y = bench.int_column(df, "y", path, len(classes), id_col=id_col)
        a = bench.int_column(df, "a", path, len(attrs), id_col=id_col)
        split = bench.split_column(df, "split", path, id_col=id_col)
        items = df["filename"].cast(pl.Utf8).to_list()
        bench.check_image_files(images, items, path, "filename")
        prompts = options.extra.get("prompts", "a photo of a {}.")
        return bench.spec_from_source(
            path,
            name=options.extra.get("name", self.name),
            metadata=pl.DataFrame({"id": df[id_col].cast(pl.Utf8), "item": items, "y": y,
                                   "a": a, "split": split}),
            class_names=classes,
            attr_names=attrs,
            item_kind="image",
            prompt_templates=[t for t in prompts.split("|") if t.strip()],
            root=str(images),
        )
