"""waterbirds: CUB birds pasted on Places backgrounds (Sagawa et al. 2020), WILDS format.

Reads <data root>/waterbirds_v1.0/metadata.csv (WILDS; also the group_DRO folder names)
with columns img_id, img_filename, y, split, place: y = waterbird, a = place (water);
splits 0/1/2 = train/val/test. Training groups (y, a) have 3498/184/56/1057 examples.
"""

from __future__ import annotations

import polars as pl

import bench

FOLDERS = ("waterbirds_v1.0", "waterbirds", "waterbird_complete95_forest2water2")
HINT = (
    "get it with `bench datasets download waterbirds --data-root DIR`, or point --data-root "
    "(or $SPURBENCH_DATA) at the folder that holds it"
)


@bench.dataset
class Waterbirds(bench.Dataset):
    name = "waterbirds"
    description = "Waterbirds (WILDS): landbird/waterbird on land/water backgrounds"
    modality = "image"
    paper = "Sagawa et al. 2020"
    classes = "2 (landbird, waterbird)"
    groups = "4 (bird × place)"
    download_hint = "bench datasets download waterbirds (WILDS, ~1 GB)"
    wilds_name = "waterbirds"

    def load(self, options: bench.DatasetOptions) -> bench.DatasetSpec:
        folder = bench.find_data_dir(options, self.name, "metadata.csv", FOLDERS, HINT)
        path = folder / "metadata.csv"
        df = bench.read_csv_table(path, ["img_id", "img_filename", "y", "split", "place"])
        y = bench.int_column(df, "y", path, 2, id_col="img_id")
        a = bench.int_column(df, "place", path, 2, id_col="img_id")
        split = bench.split_column(df, "split", path, id_col="img_id")
        items = df["img_filename"].cast(pl.Utf8).to_list()
        bench.check_image_files(folder, items, path, "img_filename")
        md = pl.DataFrame({"id": df["img_id"].cast(pl.Utf8), "item": items, "y": y, "a": a,
                           "split": split})
        return bench.spec_from_source(
            path,
            name=self.name,
            metadata=md,
            class_names=["landbird", "waterbird"],
            attr_names=["land", "water"],
            item_kind="image",
            prompt_templates=["a photo of a {}.", "a photo of a {}, a type of bird."],
            root=str(folder),
        )

    def download(self, options: bench.DatasetOptions) -> str:
        return str(bench.wilds_download(self.wilds_name, bench.data_base(options), "metadata.csv"))
