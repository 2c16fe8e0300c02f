"""The encoder contract: what every encoder (identity, open_clip, later others) returns."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bench.data.spec import DatasetSpec


@dataclass
class Encoded:
    features: np.ndarray  # [N, D] float32, rows aligned with spec.metadata
    class_text: np.ndarray | None = None  # [C, D'] prompt-ensembled class embeddings
    visual_projection: np.ndarray | None = None  # [D', D] or None
    logit_scale: float = 100.0
    untrained: bool = False
    # the same prompt ensembling over attribute phrases (spurious prompts) and over
    # "class with attribute" phrases (the paired prompts of Chuang et al. 2023)
    attr_text: np.ndarray | None = None  # [A, D']
    class_attr_text: np.ndarray | None = None  # [C, A, D']


class Encoder:
    id: str = ""
    untrained: bool = False

    def encode(self, spec: DatasetSpec) -> Encoded:
        raise NotImplementedError

    def cache_identity(self) -> dict[str, object]:
        """What, besides the data, decides this encoder's output: part of the cache key.

        Subclasses add their weights identity (tag, checkpoint size and mtime) and
        preprocessing; the id alone is enough only for encoders without weights.
        """
        return {"id": self.id}
