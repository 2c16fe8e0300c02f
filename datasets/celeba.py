"""celeba: CelebA faces (Liu et al. 2015) as a spurious-correlation benchmark, WILDS format.

Reads <data root>/celebA_v1.0/: list_attr_celeba.csv (image_id + 40 attributes in -1/1),
list_eval_partition.csv (image_id, partition 0/1/2 = official train/val/test) and images
in img_align_celeba/. y = Blond_Hair, a = Male (the group_DRO / WILDS setting); both are
options: --dataset-opt target=ATTR --dataset-opt attribute=ATTR.
"""

from __future__ import annotations

import numpy as np
import polars as pl

import bench

FOLDERS = ("celebA_v1.0", "celeba", "celebA")
HINT = (
    "get it with `bench datasets download celeba --data-root DIR`, or point --data-root "
    "(or $SPURBENCH_DATA) at the folder that holds it"
)
NAMES = {"Blond_Hair": ["dark hair", "blond hair"], "Male": ["female", "male"]}


def _names(attr: str) -> list[str]:
    words = attr.replace("_", " ").lower()
    return NAMES.get(attr, [f"not {words}", words])


@bench.dataset
class CelebA(bench.Dataset):
    name = "celeba"
    description = "CelebA (WILDS): blond vs dark hair, spuriously correlated with gender"
    modality = "image"
    paper = "Liu et al. 2015; groups of Sagawa et al. 2020"
    classes = "2 (hair: dark, blond)"
    groups = "4 (hair × male)"
    download_hint = "bench datasets download celeba (WILDS, ~1.3 GB)"
    wilds_name = "celebA"

    def load(self, options: bench.DatasetOptions) -> bench.DatasetSpec:
        options.check_known(self.name, ("target", "attribute"))
        target = options.extra.get("target", "Blond_Hair")
        attribute = options.extra.get("attribute", "Male")
        folder = bench.find_data_dir(options, self.name, "list_attr_celeba.csv", FOLDERS, HINT)
        attrs_path = folder / "list_attr_celeba.csv"
        parts_path = folder / "list_eval_partition.csv"
        attrs = bench.read_csv_table(attrs_path, ["image_id", target, attribute])
        parts = bench.read_csv_table(parts_path, ["image_id", "partition"])
        df = attrs.join(parts.select("image_id", "partition"), on="image_id", how="left",
                        maintain_order="left")
        no_split = df.filter(pl.col("partition").is_null())
        if no_split.height:
            raise bench.UserError(
                f"{parts_path}: no partition for {no_split.height} image(s) of {attrs_path}; "
                f"first: {no_split['image_id'][0]}"
            )
        ys, as_ = [], []
        for col, out in ((target, ys), (attribute, as_)):
            raw = bench.int_column(df, col, attrs_path, id_col="image_id")
            bad = np.flatnonzero((raw != 1) & (raw != -1) & (raw != 0))
            if bad.size:
                raise bench.UserError(
                    f"{attrs_path}: label {col}={raw[bad[0]]} out of range (-1/1) at data row "
                    f"{bad[0] + 1} (image_id {df['image_id'][int(bad[0])]})"
                )
            out.append((raw == 1).astype(np.int64))
        split = bench.split_column(df, "partition", parts_path, id_col="image_id")
        images = folder / "img_align_celeba"
        if (images / "img_align_celeba").is_dir():  # the Kaggle archive nests the folder
            images = images / "img_align_celeba"
        items = df["image_id"].cast(pl.Utf8).to_list()
        bench.check_image_files(images, items, attrs_path, "image_id")
        md = pl.DataFrame({"id": items, "item": items, "y": ys[0], "a": as_[0], "split": split})
        return bench.spec_from_source(
            attrs_path,
            name=self.name,
            metadata=md,
            class_names=_names(target),
            attr_names=_names(attribute),
            item_kind="image",
            prompt_templates=["a photo of a celebrity with {}.", "a photo of a person with {}."]
            if target == "Blond_Hair" else ["a photo of a person: {}."],
            root=str(images),
        )

    def download(self, options: bench.DatasetOptions) -> str:
        root = bench.data_base(options)
        return str(bench.wilds_download(self.wilds_name, root, "list_attr_celeba.csv"))
