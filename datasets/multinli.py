"""multinli: MultiNLI with negation words as the spurious attribute, group_DRO format.

Reads <data root>/multinli/data/metadata_random.csv (Sagawa et al. 2020; pandas-written:
an unnamed index column, gold_label 0/1/2 = contradiction/entailment/neutral,
sentence2_has_negation, split 0/1/2) and the texts from the MultiNLI 1.0 release in the
same folder: multinli_1.0_{train,dev_matched,dev_mismatched}.jsonl. group_DRO's script
concatenated those three files in that order, so the index column is the row number in
that concatenation; each row's gold label is checked against the text file's.
The text encoded is "premise hypothesis" (CLIP's text tower truncates at 77 tokens).
"""

from __future__ import annotations

import polars as pl

import bench

FOLDERS = ("multinli/data", "multinli", "multinli_1.0")
TEXT_FILES = ("multinli_1.0_train.jsonl", "multinli_1.0_dev_matched.jsonl",
              "multinli_1.0_dev_mismatched.jsonl")
CLASSES = ["contradiction", "entailment", "neutral"]
HINT = (
    "there is no automatic download: put group_DRO's dataset_metadata/multinli/"
    "metadata_random.csv and the MultiNLI 1.0 jsonl files (https://cims.nyu.edu/~sbowman/"
    "multinli/) in DIR/multinli/data and pass --data-root DIR (or set $SPURBENCH_DATA)"
)


def _read_texts(folder) -> pl.DataFrame:  # noqa: ANN001
    frames = []
    for name in TEXT_FILES:
        path = folder / name
        if not path.is_file():
            raise bench.UserError(f"dataset 'multinli': text file {path} not found; {HINT}")
        try:
            frames.append(pl.read_ndjson(path).select("sentence1", "sentence2", "gold_label"))
        except (pl.exceptions.PolarsError, OSError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise bench.UserError(
                f"{path}: cannot read sentence1/sentence2/gold_label: {first}"
            ) from None
    return pl.concat(frames)


@bench.dataset
class MultiNLI(bench.Dataset):
    name = "multinli"
    description = "MultiNLI (group_DRO): entailment labels vs negation words in the hypothesis"
    modality = "text"
    paper = "Williams et al. 2018; groups of Sagawa et al. 2020"
    classes = "3 (contradiction, entailment, neutral)"
    groups = "6 (label × negation)"
    download_hint = (
        "manual: group_DRO metadata_random.csv + MultiNLI 1.0 jsonl (see docs/datasets.md)"
    )

    def load(self, options: bench.DatasetOptions) -> bench.DatasetSpec:
        folder = bench.find_data_dir(options, self.name, "metadata_random.csv", FOLDERS, HINT)
        path = folder / "metadata_random.csv"
        df = bench.read_csv_table(path, ["index", "gold_label", "sentence2_has_negation", "split"],
                                  index_col=True)
        y = bench.int_column(df, "gold_label", path, 3, id_col="index")
        a = bench.int_column(df, "sentence2_has_negation", path, 2, id_col="index")
        split = bench.split_column(df, "split", path, id_col="index")
        index = bench.int_column(df, "index", path)
        texts = _read_texts(folder)
        beyond = index >= texts.height
        if beyond.any():
            raise bench.UserError(
                f"{path}: index {int(index[beyond][0])} is beyond the {texts.height} rows of "
                f"{', '.join(TEXT_FILES)}"
            )
        rows = texts[index.tolist()]
        labels = rows["gold_label"].to_list()
        for i, (label, code) in enumerate(zip(labels, y.tolist(), strict=True)):
            if label != CLASSES[code]:
                raise bench.UserError(
                    f"{path}: data row {i + 1} (index {index[i]}) says gold_label={code} "
                    f"({CLASSES[code]}) but the text files say {label!r}: metadata and texts "
                    "are from different releases"
                )
        text = (rows["sentence1"].fill_null("") + " " + rows["sentence2"].fill_null("")).to_list()
        md = pl.DataFrame({"id": index, "item": text, "y": y, "a": a, "split": split})
        return bench.spec_from_source(
            path,
            name=self.name,
            metadata=md,
            class_names=CLASSES,
            attr_names=["no negation", "negation"],
            item_kind="text",
            prompt_templates=["the second sentence is a {} of the first.", "{}."],
        )
