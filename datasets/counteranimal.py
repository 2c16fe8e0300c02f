"""counteranimal: 45 ImageNet animal classes photographed on common vs counter backgrounds
(Wang et al., NeurIPS 2024, "A Sober Look at the Robustness of CLIPs to Spurious Features").

Reads the authors' release, LAION-final/ (under <data root>/counteranimal/ or the data root
itself): one folder per class named "<ImageNet index> <name>", each holding a
common-<background>/ and a counter-<background>/ folder of images, and optionally
imagenet_names.txt ("<index>\\t<name>" per line). Evaluation only: every image is a test
row (the authors define no training or validation split). a = common 0 / counter 1 (the
background name is kept in metadata column `background`); evaluation groups are the
(class, common/counter) pairs present. Classes are the 45 animals in ImageNet-index order
(`label_space=dataset`, default) or the 1000 ImageNet classes of imagenet_names.txt, the
paper's "1 vs 1000" setup (`label_space=imagenet`). `extra_metrics` gives the common and
counter accuracies and the drop between them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl

import bench

URL = "https://drive.google.com/file/d/1SrPF0rgXKy_4z1kXsIYJt-2puM78LbAG/view?usp=sharing"
FOLDERS = ("counteranimal/LAION-final", "CounterAnimal/LAION-final", "LAION-final")
KINDS = ("common", "counter")
HINT = (f"download LAION-final from the authors' Google Drive link ({URL}; no direct URL), "
        "unpack it into DIR/counteranimal/ and pass --data-root DIR")


def _class_dirs(root: Path) -> list[Path]:
    return [p for p in root.iterdir() if p.is_dir() and p.name.split(" ", 1)[0].isdigit()]


def _find(base: Path) -> Path:
    candidates = [base / f for f in FOLDERS] + [base]
    for c in candidates:
        if c.is_dir() and _class_dirs(c):
            return c
    looked = ", ".join(str(c) for c in candidates)
    raise bench.UserError(
        f"dataset 'counteranimal' not found: looked for class folders like '291 lion' in "
        f"{looked}; {HINT}")


def _imagenet_names(root: Path) -> list[str]:
    path = root / "imagenet_names.txt"
    if not path.is_file():
        raise bench.UserError(
            f"{path}: file not found; label_space=imagenet needs the 1000 ImageNet class names, "
            "one '<index>\\t<name>' per line (0..999), or use label_space=dataset")
    names: dict[int, str] = {}
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        index, _, name = line.partition("\t")
        if not index.strip().isdigit() or not name.strip():
            raise bench.UserError(f"{path}: line {n} is {line!r}; expected '<index>\\t<name>'")
        names[int(index)] = name.strip()
    if sorted(names) != list(range(len(names))):
        raise bench.UserError(f"{path}: indices are not 0..{len(names) - 1} without gaps")
    return [names[k] for k in range(len(names))]


@bench.dataset
class CounterAnimal(bench.Dataset):
    name = "counteranimal"
    description = "CounterAnimal: 45 animal classes on common vs counter backgrounds (test only)"
    modality = "image"
    paper = "Wang et al. NeurIPS 2024, A Sober Look at the Robustness of CLIPs to Spurious Features"
    classes = "45 ImageNet animal classes (or the 1000 ImageNet classes)"
    groups = "90 (class × common/counter background)"
    download_hint = "manual: Google Drive link of the authors (see docs/datasets.md)"
    options_help = "label_space=dataset|imagenet"
    evaluation_only = True

    def load(self, options: bench.DatasetOptions) -> bench.DatasetSpec:
        options.check_known(self.name, ["label_space"])
        space = options.extra.get("label_space", "dataset")
        if space not in ("dataset", "imagenet"):
            raise bench.UserError(
                f"--dataset-opt label_space={space}: counteranimal takes dataset or imagenet")
        root = _find(bench.data_base(options))
        folders = sorted(_class_dirs(root), key=lambda p: int(p.name.split(" ", 1)[0]))
        rows: dict[str, list] = {"item": [], "imagenet": [], "a": [], "background": []}
        names: list[str] = []
        for folder in folders:
            index, _, label = folder.name.partition(" ")
            subs = {k: [p for p in folder.iterdir() if p.is_dir() and p.name.startswith(k + "-")]
                    for k in KINDS}
            bad = [k for k in KINDS if len(subs[k]) != 1]
            if bad:
                raise bench.UserError(
                    f"{folder}: expected one {bad[0]}-<background> folder, found "
                    f"{len(subs[bad[0]])}; re-extract LAION-final ({URL})")
            names.append(label.strip())
            for a, kind in enumerate(KINDS):
                sub = subs[kind][0]
                files = sorted(p.name for p in sub.iterdir()
                               if p.is_file() and not p.name.startswith("."))
                rows["item"] += [f"{folder.name}/{sub.name}/{f}" for f in files]
                rows["imagenet"] += [int(index)] * len(files)
                rows["a"] += [a] * len(files)
                rows["background"] += [sub.name.split("-", 1)[1]] * len(files)
        if space == "imagenet":
            class_names = _imagenet_names(root)
            outside = [i for i in rows["imagenet"] if i >= len(class_names)]
            if outside:
                raise bench.UserError(f"{root / 'imagenet_names.txt'}: has no class {outside[0]}")
            y = np.array(rows["imagenet"], dtype=np.int64)
        else:
            class_names = names
            order = {int(f.name.split(" ", 1)[0]): k for k, f in enumerate(folders)}
            y = np.array([order[i] for i in rows["imagenet"]], dtype=np.int64)
        a = np.array(rows["a"], dtype=np.int64)
        pair = y * 2 + a
        present = sorted(set(pair.tolist()))
        md = pl.DataFrame({"id": rows["item"], "item": rows["item"], "y": y, "a": a,
                           "split": ["test"] * len(y), "imagenet_index": rows["imagenet"],
                           "background": rows["background"]})
        return bench.spec_from_source(
            root,
            name=self.name,
            metadata=md,
            class_names=class_names,
            attr_names=list(KINDS),
            item_kind="image",
            prompt_templates=["a photo of a {}."],
            eval_groups=bench.EvalGroups(
                names=[f"y={class_names[p // 2]},a={KINDS[p % 2]}" for p in present],
                masks=np.stack([pair == p for p in present]) if present
                else np.zeros((0, len(y)), dtype=bool)),
            root=str(root),
            evaluation_only=True,
        )

    def extra_metrics(self, metadata: pl.DataFrame, pred: np.ndarray) -> dict[str, float]:
        """The paper's numbers: accuracy over all common images, over all counter images,
        and the drop from common to counter (percentage points)."""
        correct = np.asarray(pred) == metadata["y"].to_numpy()
        a = metadata["a"].to_numpy()
        common = 100 * float(correct[a == 0].mean()) if (a == 0).any() else float("nan")
        counter = 100 * float(correct[a == 1].mean()) if (a == 1).any() else float("nan")
        return {"common_acc": common, "counter_acc": counter, "drop": common - counter}
