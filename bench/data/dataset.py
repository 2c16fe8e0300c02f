"""The dataset plugin contract: a name, whether it is embedded, where to get it, and load."""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from bench.errors import UserError

if TYPE_CHECKING:
    import numpy as np
    import polars as pl

    from bench.data.spec import DatasetSpec


@dataclass
class DatasetOptions:
    """What a loader may read: the data root, a seed for generated data, and `--dataset-opt`s."""

    data_root: Path | None = None
    seed: int = 0
    extra: dict[str, str] = field(default_factory=dict)

    def check_known(self, dataset: str, known: Iterable[str]) -> None:
        """Refuse a --dataset-opt the dataset does not take, naming the ones it does."""
        known = list(known)
        unknown = sorted(set(self.extra) - set(known))
        if unknown:
            raise UserError(f"--dataset-opt {unknown[0]}: {dataset} takes {', '.join(known)}")

    def root_for(self, folder: str) -> Path:
        """Where a dataset's folder is expected: --data-root, else $SPURBENCH_DATA, else ./data."""
        base = self.data_root or Path(os.environ.get("SPURBENCH_DATA", "data"))
        return Path(base) / folder


class Dataset:
    """Base class for dataset plugins: the whole contract, declared.

    name, description: what `bench datasets list` shows.
    embedded: True when the data ships with spurbench (no download, works offline).
    download_hint: where to get it when there is no automatic download.
    default_encoder: the encoder a run uses when --encoder is not given ("" = identity
    for feature datasets, else CLIP ViT-B/32 with OpenAI weights).
    options_help: the --dataset-opt keys it takes, for error messages and the docs.
    can_download: whether `download` fetches it (the WILDS downloader, the authors' URL).
    modality: "image", "text" or "features", for `bench datasets list`.
    paper: the dataset's paper, for `bench datasets list` and docs/datasets.md.
    classes, groups: what `bench datasets list` says about them ("" = set by your data).
    evaluation_only: the dataset has no training split (only its evaluation splits are
    loaded); only methods that need no training run on it.
    extra_metrics: the dataset's own metrics (e.g. a background gap) on one evaluation
    split, reported on the leaderboard beside worst-group accuracy.
    """

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    embedded: ClassVar[bool] = False
    download_hint: ClassVar[str] = ""
    default_encoder: ClassVar[str] = ""
    options_help: ClassVar[str] = ""
    modality: ClassVar[str] = "image"
    paper: ClassVar[str] = ""
    classes: ClassVar[str] = ""
    groups: ClassVar[str] = ""
    evaluation_only: ClassVar[bool] = False

    def extra_metrics(self, metadata: pl.DataFrame, pred: np.ndarray) -> dict[str, float]:
        """Metrics of this dataset's own protocol on one evaluation split: `metadata` is
        that split's rows of the spec's metadata (in order), `pred` the predicted classes.
        Values are percentages where they are accuracies; {} when the dataset has none."""
        return {}

    def load(self, options: DatasetOptions) -> DatasetSpec:
        raise NotImplementedError

    @classmethod
    def can_download(cls) -> bool:
        return cls.download is not Dataset.download

    def download(self, options: DatasetOptions) -> str:
        """Fetch the data under the data root; returns where it went."""
        raise UserError(f"dataset '{self.name}' has no automatic download; "
                        f"{self.download_hint or 'see docs/datasets.md'}")
