"""spawrious: 4 dog breeds photographed (generated) on 6 backgrounds (Lynch et al. 2023).

Reads the authors' folder layout, <data root>/spawrious224/{0,1}/<location>/<breed>/*.png
(the archives' `domain_adaptation_ds/` folder is not used), exactly as their
`spawrious/torch.py` builds a challenge (`--dataset-opt challenge=`, default m2m_hard):

- o2o (one-to-one): each breed's training images come from its own background, the first
  int(0.97 * 3168) images of folder 0 and int(0.87 * 3168) of folder 1, plus a filler
  background shared by every breed (the rest up to 3168 of each folder); its test images
  are every image of another background, from both folders.
- m2m (many-to-many): each breed takes 3168 images of each of two backgrounds from folder
  0; it is tested on every image of two other backgrounds.

"The first N images" is in sorted file-name order (the authors' os.listdir order is not
defined). Validation: the authors' example.py holds out a random 10% of the training set
(`val_fraction`); here per training group, with a fixed seed, so every group keeps
training examples. Groups are (breed, background): y = breed, a = background; training
groups (column g) are the combinations the challenge trains on, evaluation groups every
combination that occurs.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl

import bench

CLASSES = ["bulldog", "corgi", "dachshund", "labrador"]  # the authors' class_list order
LOCATIONS = ["desert", "jungle", "dirt", "mountain", "snow", "beach"]
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")  # the authors' filter, case-sensitive
# challenge: (training backgrounds, test backgrounds, filler), from _get_combinations;
# position i belongs to breed BREED_ORDER[i] (bulldog, dachshund, labrador, corgi).
CHALLENGES: dict[str, tuple[tuple[str, ...], tuple[str, ...], str | None]] = {
    "o2o_easy": (("desert", "jungle", "dirt", "snow"), ("dirt", "snow", "desert", "jungle"),
                 "beach"),
    "o2o_medium": (("mountain", "beach", "dirt", "jungle"), ("jungle", "dirt", "beach", "snow"),
                   "desert"),
    "o2o_hard": (("jungle", "mountain", "snow", "desert"), ("mountain", "snow", "desert", "jungle"),
                 "beach"),
    "m2m_easy": (("desert", "mountain", "dirt", "jungle"), ("dirt", "jungle", "mountain", "desert"),
                 None),
    "m2m_medium": (("beach", "snow", "mountain", "desert"), ("desert", "mountain", "beach", "snow"),
                   None),
    "m2m_hard": (("dirt", "jungle", "snow", "beach"), ("snow", "beach", "dirt", "jungle"), None),
}
BREED_ORDER = ("bulldog", "dachshund", "labrador", "corgi")
M2M_PAIRS = ((0, 1), (1, 0), (2, 3), (3, 2))  # breed i: backgrounds (group[p], group[q])
# the archives named in the authors' code (m2m challenges need the entire dataset)
URLS = {
    "entire_dataset": "https://www.dropbox.com/s/hofkueo8qvaqlp3/"
                      "spawrious224__entire_dataset.tar.gz?dl=1",
    "o2o_easy": "https://www.dropbox.com/s/kwhiv60ihxe3owy/spawrious224__o2o_easy.tar.gz?dl=1",
    "o2o_medium": "https://www.dropbox.com/s/x03gkhdwar5kht4/spawrious224__o2o_medium.tar.gz?dl=1",
    "o2o_hard": "https://www.dropbox.com/s/p1ry121m2gjj158/spawrious224__o2o_hard.tar.gz?dl=1",
}
KNOWN = ("challenge", "val_fraction")
DEFAULT_CHALLENGE = "m2m_hard"


def _archive(challenge: str) -> str:
    return challenge if challenge.startswith("o2o") else "entire_dataset"


def combinations(challenge: str, total: int) -> list[tuple[str, int, str, str, int | None]]:
    """(role, folder, background, breed, limit) in the authors' order; role train or test."""
    group, test, filler = CHALLENGES[challenge]
    out: list[tuple[str, int, str, str, int | None]] = []
    if challenge.startswith("m2m"):
        for i, breed in enumerate(BREED_ORDER):
            p, q = M2M_PAIRS[i]
            out += [("train", 0, group[p], breed, total), ("train", 0, group[q], breed, total)]
            out += [("test", 0, test[p], breed, None), ("test", 0, test[q], breed, None)]
        return out
    counts = (int(0.97 * total), int(0.87 * total))
    for i, breed in enumerate(BREED_ORDER):
        out += [("train", k, group[i], breed, counts[k]) for k in (0, 1)]
    for breed in BREED_ORDER:
        out += [("train", k, filler, breed, total - counts[k]) for k in (0, 1)]  # type: ignore[misc]
    for i, breed in enumerate(BREED_ORDER):
        out += [("test", k, test[i], breed, None) for k in (0, 1)]
    return out


def _images(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()
                  if p.is_file() and p.name.endswith(IMAGE_SUFFIXES))


def _root(base: Path) -> Path | None:
    return next((f for f in (base / "spawrious", base) if (f / "spawrious224").is_dir()), None)


def _check_folders(root: Path, challenge: str, total: int) -> None:
    """Every folder the challenge reads exists and holds images (the authors' check)."""
    for _, k, location, breed, _ in combinations(challenge, total):
        folder = root / "spawrious224" / str(k) / location / breed
        if not folder.is_dir() or not _images(folder):
            what = "is missing" if not folder.is_dir() else "holds no .png/.jpg images"
            raise bench.UserError(
                f"{folder} {what}; challenge {challenge} needs the "
                f"spawrious224__{_archive(challenge)} archive: `bench datasets download "
                f"spawrious --data-root DIR` (with --dataset-opt challenge={challenge}) "
                f"or by hand from {URLS[_archive(challenge)]}"
            )


def _split_val(groups: np.ndarray, fraction: float) -> np.ndarray:
    """A random `fraction` of each group, floor-rounded, so no group loses all its rows."""
    rng = np.random.RandomState(0)
    val = np.zeros(len(groups), dtype=bool)
    for g in np.unique(groups):
        rows = np.flatnonzero(groups == g)
        val[rng.permutation(rows)[: int(len(rows) * fraction)]] = True
    return val


@bench.dataset
class Spawrious(bench.Dataset):
    name = "spawrious"
    description = "Spawrious: 4 dog breeds on 6 backgrounds, o2o/m2m challenges (authors' layout)"
    modality = "image"
    paper = "Lynch et al. 2023, Spawrious"
    classes = "4 (bulldog, corgi, dachshund, labrador)"
    groups = "8 training (breed × background) per challenge"
    download_hint = "bench datasets download spawrious (Dropbox archives of the authors)"
    options_help = "challenge=o2o_easy|...|m2m_hard (default m2m_hard), val_fraction=F (0.1)"
    images_per_environment = 3168  # `total` in the authors' build_combination

    def _challenge(self, options: bench.DatasetOptions) -> str:
        options.check_known(self.name, KNOWN)
        challenge = options.extra.get("challenge", DEFAULT_CHALLENGE).strip().lower()
        if challenge not in CHALLENGES:
            raise bench.UserError(
                f"--dataset-opt challenge={challenge}: spawrious has {', '.join(CHALLENGES)}")
        return challenge

    def load(self, options: bench.DatasetOptions) -> bench.DatasetSpec:
        challenge = self._challenge(options)
        raw = options.extra.get("val_fraction", "0.1")
        try:
            fraction = float(raw)
        except ValueError:
            fraction = -1.0
        if not 0.0 < fraction < 1.0:
            raise bench.UserError(f"--dataset-opt val_fraction={raw}: expected a number in (0, 1)")
        base = bench.data_base(options)
        root = _root(base)
        if root is None:
            raise bench.UserError(
                f"dataset 'spawrious' not found: looked for {base / 'spawrious' / 'spawrious224'} "
                f"and {base / 'spawrious224'}; get it with `bench datasets download spawrious "
                "--data-root DIR` or from the authors' links (see docs/datasets.md)")
        total = self.images_per_environment
        _check_folders(root, challenge, total)
        items, y, a, role = [], [], [], []
        for kind, k, location, breed, limit in combinations(challenge, total):
            rel = f"spawrious224/{k}/{location}/{breed}"
            names = _images(root / rel)[:limit]
            items += [f"{rel}/{n}" for n in names]
            y += [CLASSES.index(breed)] * len(names)
            a += [LOCATIONS.index(location)] * len(names)
            role += [kind] * len(names)
        y_arr, a_arr = np.array(y), np.array(a)
        pair = y_arr * len(LOCATIONS) + a_arr
        train = np.array(role) == "train"
        train_pairs = sorted(set(pair[train].tolist()))
        present = sorted(set(pair.tolist()))
        split = np.where(train, "train", "test").astype(object)
        split[np.flatnonzero(train)[_split_val(pair[train], fraction)]] = "val"
        index = {p: i for i, p in enumerate(train_pairs)}
        first_of_class = {p // len(LOCATIONS): i for i, p in reversed(list(enumerate(train_pairs)))}
        # test-only combinations need some training-group value: their breed's first group
        g = [index.get(p, first_of_class[p // len(LOCATIONS)]) for p in pair.tolist()]

        def label(p: int) -> str:
            return f"y={CLASSES[p // len(LOCATIONS)]},a={LOCATIONS[p % len(LOCATIONS)]}"

        md = pl.DataFrame({"id": items, "item": items, "y": y_arr, "a": a_arr,
                           "split": split.tolist(), "g": g})
        return bench.spec_from_source(
            root / "spawrious224",
            name=self.name,
            metadata=md,
            class_names=list(CLASSES),
            attr_names=list(LOCATIONS),
            item_kind="image",
            prompt_templates=["a photo of a {}.", "a photo of a {}, a type of dog."],
            group_names=[label(p) for p in train_pairs],
            eval_groups=bench.EvalGroups(names=[label(p) for p in present],
                                         masks=np.stack([pair == p for p in present])),
            root=str(root),
            notes=f"challenge {challenge}",
        )

    def download(self, options: bench.DatasetOptions) -> str:
        challenge = self._challenge(options)
        archive = _archive(challenge)
        base = bench.data_base(options)
        bench.fetch_archive(URLS[archive], base, f"spawrious224__{archive}.tar.gz")
        root = _root(base)
        if root is None:
            raise bench.UserError(
                f"the archive from {URLS[archive]} left no spawrious224/ folder in {base}; "
                "download it by hand and unpack it there")
        _check_folders(root, challenge, self.images_per_environment)
        return str(root)
