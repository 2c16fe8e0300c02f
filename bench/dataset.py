"""The dataset plugin contract: a name, whether it is embedded, where to get it, and load."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from bench.spec import DatasetSpec


@dataclass
class DatasetOptions:
    """What a loader may read: the data root, a seed for generated data, and `--dataset-opt`s."""

    data_root: Path | None = None
    seed: int = 0
    extra: dict[str, str] = field(default_factory=dict)

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
