"""civilcomments: toxicity of online comments (Borkan et al. 2019), WILDS format.

Reads <data root>/civilcomments_v1.0/all_data_with_identities.csv: comment_text, split
(train/val/test), toxicity (y = toxicity >= 0.5) and 8 identity columns (mentioned when
>= 0.5). Evaluation follows WILDS: 16 overlapping groups (identity mentioned, y) for the
8 identities; worst-group accuracy is the minimum over them. Training groups are
configurable with --dataset-opt train_groups=...: `any` (default; a = mentions any of
the 8 identities, 4 groups), one identity name (a = mentions it), or `label` (no
attribute: groups are the classes).
"""

from __future__ import annotations

import numpy as np
import polars as pl

import bench

FOLDERS = ("civilcomments_v1.0", "civilcomments")
FILE = "all_data_with_identities.csv"
IDENTITIES = ("male", "female", "LGBTQ", "christian", "muslim", "other_religions", "black",
              "white")
CLASSES = ["non-toxic", "toxic"]
HINT = (
    "get it with `bench datasets download civilcomments --data-root DIR`, or point "
    "--data-root (or $SPURBENCH_DATA) at the folder that holds it"
)


def _at_least_half(df: pl.DataFrame, col: str, path) -> np.ndarray:  # noqa: ANN001
    """WILDS' rule: a score >= 0.5 is a yes; an empty cell is a no (pandas NaN >= 0.5)."""
    values = df[col].cast(pl.Float64, strict=False)
    bad = values.is_null() & df[col].is_not_null()
    if bad.any():
        i = int(np.flatnonzero(bad.to_numpy())[0])
        raise bench.UserError(
            f"{path}: column '{col}' has {df[col][i]!r} at data row {i + 1}; expected a number"
        )
    return (values.fill_null(0.0).to_numpy() >= 0.5).astype(np.int64)


@bench.dataset
class CivilComments(bench.Dataset):
    name = "civilcomments"
    description = "CivilComments (WILDS): toxicity; 16 overlapping identity x label groups"
    modality = "text"
    paper = "Borkan et al. 2019; WILDS (Koh et al. 2021)"
    classes = "2 (non-toxic, toxic)"
    groups = "16 (label × identity, overlapping)"
    download_hint = "bench datasets download civilcomments (WILDS, ~90 MB)"
    wilds_name = "civilcomments"
    options_help = "train_groups: any (default) | label | one of " + ", ".join(IDENTITIES)

    def load(self, options: bench.DatasetOptions) -> bench.DatasetSpec:
        options.check_known(self.name, ("train_groups",))
        mode = options.extra.get("train_groups", "any")
        if mode not in ("any", "label", *IDENTITIES):
            raise bench.UserError(
                f"--dataset-opt train_groups={mode}: expected any, label or one of "
                + ", ".join(IDENTITIES)
            )
        folder = bench.find_data_dir(options, self.name, FILE, FOLDERS, HINT)
        path = folder / FILE
        df = bench.read_csv_table(path, ["comment_text", "split", "toxicity", *IDENTITIES],
                                  index_col=True)
        y = _at_least_half(df, "toxicity", path)
        mentions = np.stack([_at_least_half(df, c, path) for c in IDENTITIES])  # [8, N]
        if mode == "any":
            a, attr_names = mentions.max(axis=0), ["no identity", "identity"]
        elif mode == "label":
            a, attr_names = np.zeros_like(y), ["all"]
        else:
            a, attr_names = mentions[IDENTITIES.index(mode)], [f"not {mode}", mode]
        id_col = "id" if "id" in df.columns else "index" if "index" in df.columns else None
        ids = df[id_col].cast(pl.Utf8) if id_col else pl.Series(np.arange(df.height)).cast(pl.Utf8)
        split = bench.split_column(df, "split", path, id_col=id_col)
        text = df["comment_text"].cast(pl.Utf8).fill_null("")
        md = pl.DataFrame({"id": ids, "item": text, "y": y, "a": a, "split": split})
        names, masks = [], []
        for k, identity in enumerate(IDENTITIES):
            for c, cls in enumerate(CLASSES):
                names.append(f"y={cls},{identity}")
                masks.append((mentions[k] == 1) & (y == c))
        return bench.spec_from_source(
            path,
            name=self.name,
            metadata=md,
            class_names=CLASSES,
            attr_names=attr_names,
            item_kind="text",
            prompt_templates=["a {} comment.", "this comment is {}.", "{} text."],
            eval_groups=bench.EvalGroups(names=names, masks=np.stack(masks)),
        )

    def download(self, options: bench.DatasetOptions) -> str:
        return str(bench.wilds_download(self.wilds_name, bench.data_base(options), FILE))
