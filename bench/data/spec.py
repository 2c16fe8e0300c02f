"""The dataset data model: what every dataset plugin returns, whatever its source format."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np
import polars as pl

from bench.errors import UserError

SPLITS = ("train", "val", "test")
REQUIRED_COLUMNS = ("id", "item", "y", "a", "split")
# Chuang et al. 2023's paired prompts: "a picture of a landbird with water background"
DEFAULT_CLASS_ATTR_FORMAT = "{cls} with {attr}"


@dataclass
class EvalGroups:
    """Evaluation groups as boolean masks over all rows; groups may overlap (CivilComments)."""

    names: list[str]
    masks: np.ndarray  # bool [G, N], aligned with DatasetSpec.metadata rows


@dataclass
class DatasetSpec:
    """A dataset: polars metadata (id, item, y, a, split[, g]) plus what the encoders need.

    `item` is an image path, a text, or a row index into `features` for feature datasets.
    Training groups are column `g` when present, else the (y, a) pair y * n_attrs + a.
    Evaluation groups default to the (y, a) pairs; `eval_groups` overrides them.
    """

    name: str
    metadata: pl.DataFrame
    class_names: list[str]
    attr_names: list[str]
    item_kind: str = "features"  # features | image | text
    prompt_templates: list[str] = field(default_factory=lambda: ["a photo of a {}."])
    eval_groups: EvalGroups | None = None
    group_names: list[str] | None = None  # training-group names when column g is given
    features: np.ndarray | None = None  # [N, D] for item_kind == "features"
    class_text_embeddings: np.ndarray | None = None  # [C, D], prompt-ensembled, for prompt heads
    bayes_wga: float | None = None  # analytic ceiling on test worst-group accuracy, if known
    synthetic: bool = False  # True when the data itself is generated, not collected
    root: str | None = None  # where images live, for item_kind == "image"
    notes: str = ""
    # no training (or validation) split: only methods that need no training data run on it
    evaluation_only: bool = False
    # phrases naming each attribute value (None: the attribute names), embedded through the
    # same templates as class names; and how a class and an attribute phrase make one prompt
    attr_prompts: list[list[str]] | None = None
    class_attr_format: str = DEFAULT_CLASS_ATTR_FORMAT
    attr_text_embeddings: np.ndarray | None = None  # [A, D], prompt-ensembled attribute text
    class_attr_text_embeddings: np.ndarray | None = None  # [C, A, D], "class with attribute"
    _fingerprint: str | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.validate()

    @property
    def n_classes(self) -> int:
        return len(self.class_names)

    @property
    def n_attrs(self) -> int:
        return len(self.attr_names)

    @property
    def n_groups(self) -> int:
        return len(self.train_group_names())

    def attribute_phrases(self) -> list[list[str]]:
        """The phrase(s) naming each attribute value: `attr_prompts`, else the names."""
        if self.attr_prompts is not None:
            return [list(p) for p in self.attr_prompts]
        return [[name] for name in self.attr_names]

    def train_group_names(self) -> list[str]:
        if self.group_names is not None:
            return list(self.group_names)
        return [f"y={c},a={a}" for c in self.class_names for a in self.attr_names]

    def train_groups(self) -> np.ndarray:
        md = self.metadata
        if "g" in md.columns:
            return md["g"].to_numpy().astype(np.int64)
        return (md["y"].to_numpy() * self.n_attrs + md["a"].to_numpy()).astype(np.int64)

    def evaluation_groups(self) -> EvalGroups:
        if self.eval_groups is not None:
            return self.eval_groups
        g = self.metadata["y"].to_numpy() * self.n_attrs + self.metadata["a"].to_numpy()
        names = [f"y={c},a={a}" for c in self.class_names for a in self.attr_names]
        masks = np.stack([g == k for k in range(len(names))]) if names else np.zeros((0, len(g)))
        return EvalGroups(names=names, masks=masks.astype(bool))

    def split_mask(self, split: str) -> np.ndarray:
        return (self.metadata["split"] == split).to_numpy()

    def validate(self) -> None:
        md = self.metadata
        src = f"dataset '{self.name}'"
        missing = [c for c in REQUIRED_COLUMNS if c not in md.columns]
        if missing:
            raise UserError(f"{src}: metadata lacks column(s) {', '.join(missing)}")
        bad_split = md.filter(~pl.col("split").is_in(list(SPLITS)))
        if bad_split.height:
            raise UserError(
                f"{src}: column 'split' has value {bad_split['split'][0]!r} "
                f"(row id {bad_split['id'][0]}); expected train, val or test"
            )
        for col, n in (("y", self.n_classes), ("a", self.n_attrs)):
            bad = md.filter((pl.col(col) < 0) | (pl.col(col) >= n))
            if bad.height:
                raise UserError(
                    f"{src}: label {col}={bad[col][0]} out of range 0..{n - 1} "
                    f"(row id {bad['id'][0]})"
                )
        if "g" in md.columns:
            bad = md.filter((pl.col("g") < 0) | (pl.col("g") >= self.n_groups))
            if bad.height:
                raise UserError(
                    f"{src}: group g={bad['g'][0]} out of range (row id {bad['id'][0]})"
                )
        if self.evaluation_only:
            self._validate_evaluation_only(src)
            return
        for split in SPLITS:
            if not self.split_mask(split).any():
                raise UserError(f"{src}: split '{split}' is empty")
        train_classes = md.filter(pl.col("split") == "train")["y"].n_unique()
        if self.n_classes < 2 or train_classes < 2:
            raise UserError(
                f"{src}: the training split has {train_classes} class(es) of "
                f"{self.n_classes}; a classification benchmark needs at least two"
            )
        train_g = self.train_groups()[self.split_mask("train")]
        counts = np.bincount(train_g, minlength=self.n_groups)
        empty = [self.train_group_names()[k] for k in np.flatnonzero(counts == 0)]
        if empty:
            raise UserError(f"{src}: training group(s) {', '.join(empty)} have no examples")
        self._validate_text(src)
        if self.item_kind == "features":
            if self.features is None or len(self.features) != md.height:
                raise UserError(f"{src}: feature matrix does not match metadata rows")

    def _validate_evaluation_only(self, src: str) -> None:
        """An evaluation-only dataset: test rows only (a stray train row would be a loader
        bug, not data to train on), at least two classes among them."""
        if self.split_mask("train").any():
            raise UserError(f"{src}: an evaluation-only dataset has training rows")
        if not self.split_mask("test").any():
            raise UserError(f"{src}: split 'test' is empty")
        test_classes = self.metadata.filter(pl.col("split") == "test")["y"].n_unique()
        if self.n_classes < 2 or test_classes < 2:
            raise UserError(f"{src}: the test split has {test_classes} class(es); a "
                            "classification benchmark needs at least two")
        self._validate_text(src)
        if self.item_kind == "features":
            if self.features is None or len(self.features) != self.metadata.height:
                raise UserError(f"{src}: feature matrix does not match metadata rows")

    def _validate_text(self, src: str) -> None:
        if self.attr_prompts is not None:
            if len(self.attr_prompts) != self.n_attrs or not all(
                isinstance(p, list | tuple) and p and all(isinstance(t, str) and t for t in p)
                for p in self.attr_prompts
            ):
                raise UserError(
                    f"{src}: attr_prompts must give one non-empty list of phrases for each "
                    f"of the {self.n_attrs} attribute values"
                )
        if "{cls}" not in self.class_attr_format or "{attr}" not in self.class_attr_format:
            raise UserError(f"{src}: class_attr_format {self.class_attr_format!r} needs "
                            "{cls} and {attr}")
        for what, arr, lead in (
            ("attr_text_embeddings", self.attr_text_embeddings, (self.n_attrs,)),
            ("class_attr_text_embeddings", self.class_attr_text_embeddings,
             (self.n_classes, self.n_attrs)),
        ):
            if arr is not None and (arr.ndim != len(lead) + 1 or arr.shape[:-1] != lead):
                raise UserError(f"{src}: {what} has shape {arr.shape}; expected {lead} + (D,)")

    def absent_groups(self) -> dict[str, list[str]]:
        """Evaluation groups with no example in val or test, by split: their accuracy is
        undefined, so worst-group accuracy there is the minimum over the others."""
        groups = self.evaluation_groups()
        out = {}
        for split in ("val", "test"):
            mask = self.split_mask(split)
            empty = [n for n, m in zip(groups.names, groups.masks, strict=True)
                     if not (m & mask).any()]
            if empty:
                out[split] = empty
        return out

    def fingerprint(self) -> str:
        """Content hash of metadata (and features when embedded): keys caches and results.

        Computed once: a run asks for it many times, and hashing CivilComments-scale
        metadata is not free. A spec is not meant to change after loading."""
        if self._fingerprint is None:
            self._fingerprint = self._hash()
        return self._fingerprint

    def _hash(self) -> str:
        h = hashlib.sha256()
        h.update(self.name.encode())
        h.update(self.metadata.select(REQUIRED_COLUMNS).write_csv().encode())
        h.update(repr((self.class_names, self.attr_names, self.prompt_templates)).encode())
        if self.features is not None:
            h.update(np.ascontiguousarray(self.features, dtype=np.float32).tobytes())
        if self.class_text_embeddings is not None:
            h.update(np.ascontiguousarray(self.class_text_embeddings, dtype=np.float32).tobytes())
        # attribute text enters only when given, so specs without it keep their fingerprints
        if self.attr_prompts is not None or self.class_attr_format != DEFAULT_CLASS_ATTR_FORMAT:
            h.update(repr(("attr-text", self.attr_prompts, self.class_attr_format)).encode())
        for arr in (self.attr_text_embeddings, self.class_attr_text_embeddings):
            if arr is not None:
                h.update(b"attr-text")
                h.update(np.ascontiguousarray(arr, dtype=np.float32).tobytes())
        return h.hexdigest()[:16]
