"""urbancars: urban vs country cars with two shortcuts, background and a co-occurring
object (Li et al., CVPR 2023, "A Whac-A-Mole Dilemma"), in the authors' generated layout.

Reads <data root>/urbancars/bg-0.95_co_occur_obj-0.95/train/ and
bg-0.5_co_occur_obj-0.5/{val,test}/, each with the eight folders
obj-{urban,country}_bg-{urban,country}_co_occur_obj-{urban,country}/*.jpg that the authors'
gen_urbancars.py writes and their dataset/urbancars.py reads. y = car type; the two
shortcut labels are kept as metadata columns bg and co. a is the authors' `group_label`
(`--dataset-opt group_label=`): both (default) = bg * 2 + co, 4 values, so the training
groups are the 8 (y, bg, co) cells; bg or co_occur_obj = that shortcut alone. Evaluation
groups are always the 8 cells. `extra_metrics` gives the paper's in-distribution accuracy
and its BG, CoObj and BG+CoObj gaps, weighted as the authors' base_trainer does.
"""

from __future__ import annotations

import numpy as np
import polars as pl

import bench

NAMES = ["urban", "country"]  # obj_name_list = bg_name_list = co_occur_obj_name_list
FOLDERS = {"train": "bg-0.95_co_occur_obj-0.95/train", "val": "bg-0.5_co_occur_obj-0.5/val",
           "test": "bg-0.5_co_occur_obj-0.5/test"}
TRAIN_RATIO = 0.95  # the authors' --bg_ratio and --co_occur_obj_ratio defaults
GROUP_LABELS = ("both", "bg", "co_occur_obj")
HINT = (
    "UrbanCars has no download: generate it with the authors' "
    "scripts/prepare_dataset_models/create_urbancars.sh "
    "(github.com/facebookresearch/Whac-A-Mole), then pass --data-root DIR holding urbancars/"
)


def _cells() -> list[tuple[int, int, int]]:
    return [(o, b, c) for o in range(2) for b in range(2) for c in range(2)]


def _folder_name(o: int, b: int, c: int) -> str:
    return f"obj-{NAMES[o]}_bg-{NAMES[b]}_co_occur_obj-{NAMES[c]}"


def _attrs(group_label: str) -> list[str]:
    if group_label == "both":
        return [f"bg={b},co={c}" for b in NAMES for c in NAMES]
    prefix = "bg" if group_label == "bg" else "co"
    return [f"{prefix}={n}" for n in NAMES]


@bench.dataset
class UrbanCars(bench.Dataset):
    name = "urbancars"
    description = "UrbanCars: urban/country cars with background and co-occurring-object shortcuts"
    modality = "image"
    paper = "Li et al. CVPR 2023, A Whac-A-Mole Dilemma"
    classes = "2 (urban car, country car)"
    groups = "8 (car type × background × co-occurring object)"
    download_hint = "generate it with the authors' create_urbancars.sh (see docs/datasets.md)"
    options_help = "group_label=both|bg|co_occur_obj"

    def load(self, options: bench.DatasetOptions) -> bench.DatasetSpec:
        options.check_known(self.name, ["group_label"])
        group_label = options.extra.get("group_label", "both")
        if group_label not in GROUP_LABELS:
            raise bench.UserError(
                f"--dataset-opt group_label={group_label}: urbancars takes "
                f"{', '.join(GROUP_LABELS)}")
        base = bench.data_base(options)
        candidates = [base / "urbancars", base]
        root = next((c for c in candidates if (c / FOLDERS["train"]).is_dir()), None)
        if root is None:
            looked = ", ".join(str(c / FOLDERS["train"]) for c in candidates)
            raise bench.UserError(f"dataset 'urbancars' not found: looked for {looked}; {HINT}")
        rows: dict[str, list] = {k: [] for k in ("item", "y", "bg", "co", "split")}
        for split, sub in FOLDERS.items():
            for o, b, c in _cells():
                rel = f"{sub}/{_folder_name(o, b, c)}"
                folder = root / rel
                if not folder.is_dir():
                    raise bench.UserError(f"{folder} is missing (one of the 8 folders of each "
                                          f"split); regenerate {sub} with the authors' "
                                          "gen_urbancars.py, see docs/datasets.md")
                names = sorted(p.name for p in folder.glob("*.jpg"))
                rows["item"] += [f"{rel}/{n}" for n in names]
                for key, value in (("y", o), ("bg", b), ("co", c), ("split", split)):
                    rows[key] += [value] * len(names)
        bg, co = np.array(rows["bg"]), np.array(rows["co"])
        a = {"both": bg * 2 + co, "bg": bg, "co_occur_obj": co}[group_label]
        y = np.array(rows["y"])
        cell = y * 4 + bg * 2 + co
        md = pl.DataFrame({"id": rows["item"], "item": rows["item"], "y": y, "a": a,
                           "split": rows["split"], "bg": bg, "co": co})
        names = [f"y={NAMES[o]},bg={NAMES[b]},co={NAMES[c]}" for o, b, c in _cells()]
        return bench.spec_from_source(
            root,
            name=self.name,
            metadata=md,
            class_names=["urban car", "country car"],
            attr_names=_attrs(group_label),
            item_kind="image",
            prompt_templates=["a photo of an {}.", "a photo of a car, an {}."],
            eval_groups=bench.EvalGroups(names=names,
                                         masks=np.stack([cell == k for k in range(8)])),
            root=str(root),
        )

    def extra_metrics(self, metadata: pl.DataFrame, pred: np.ndarray) -> dict[str, float]:
        """The authors' _eval_split: the accuracy of each (bg, co) shortcut state, absent
        (the attribute disagrees with y) or present, is the mean of its two class cells;
        in-distribution accuracy weights the four states by their training frequency
        (0.95 present, 0.05 absent, per shortcut); each gap is a conflicting state minus it."""
        y = metadata["y"].to_numpy()
        bg, co = metadata["bg"].to_numpy(), metadata["co"].to_numpy()
        correct = np.asarray(pred) == y
        state: dict[tuple[int, int], float] = {}
        for bg_present in (0, 1):
            for co_present in (0, 1):
                accs = []
                for o in range(2):
                    b = o if bg_present else 1 - o
                    c = o if co_present else 1 - o
                    mask = (y == o) & (bg == b) & (co == c)
                    if mask.any():
                        accs.append(correct[mask].mean())
                state[bg_present, co_present] = float(np.mean(accs)) if accs else float("nan")
        ratio = {0: 1 - TRAIN_RATIO, 1: TRAIN_RATIO}
        id_acc = sum(state[b, c] * ratio[b] * ratio[c] for b in (0, 1) for c in (0, 1))
        return {
            "id_acc": 100 * id_acc,
            "bg_gap": 100 * (state[0, 1] - id_acc),
            "coobj_gap": 100 * (state[1, 0] - id_acc),
            "bg_coobj_gap": 100 * (state[0, 0] - id_acc),
        }

