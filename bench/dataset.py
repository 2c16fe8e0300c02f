"""The dataset plugin contract: a name, whether it is embedded, where to get it, and load."""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from bench.errors import UserError
from bench.spec import DatasetSpec


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
    """Base class for dataset plugins."""

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    embedded: ClassVar[bool] = False
    download_hint: ClassVar[str] = ""

    def load(self, options: DatasetOptions) -> DatasetSpec:
        raise NotImplementedError
