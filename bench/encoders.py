"""Encoders turn a DatasetSpec into a feature matrix (and class text embeddings).

`identity` serves datasets that already are features. `openclip:MODEL:PRETRAINED` is
resolved by bench.openclip_encoder (image and text towers of any open_clip model).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bench.errors import UserError
from bench.spec import DatasetSpec


@dataclass
class Encoded:
    features: np.ndarray  # [N, D] float32, rows aligned with spec.metadata
    class_text: np.ndarray | None = None  # [C, D'] prompt-ensembled class embeddings
    visual_projection: np.ndarray | None = None  # [D', D] or None
    logit_scale: float = 100.0
    untrained: bool = False


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


class IdentityEncoder(Encoder):
    """For feature datasets: the features are used as they are."""

    id = "identity"

    def encode(self, spec: DatasetSpec) -> Encoded:
        if spec.item_kind != "features" or spec.features is None:
            raise UserError(
                f"--encoder identity: dataset '{spec.name}' holds {spec.item_kind}, not features; "
                "use --encoder openclip:MODEL:PRETRAINED"
            )
        return Encoded(np.asarray(spec.features, dtype=np.float32), spec.class_text_embeddings)


def default_encoder_for(spec: DatasetSpec, plugin: object = None) -> str:
    """The plugin's `default_encoder` when it declares one (embedded image datasets name an
    encoder that runs offline), identity for features, else CLIP ViT-B/32 (OpenAI weights)."""
    declared = getattr(plugin, "default_encoder", None)
    if declared:
        return str(declared)
    return "identity" if spec.item_kind == "features" else "openclip:ViT-B-32:openai"


def get_encoder(encoder_id: str, **options: object) -> Encoder:
    if encoder_id == "identity":
        return IdentityEncoder()
    if encoder_id.startswith("openclip:"):
        from bench.openclip_encoder import OpenClipEncoder

        return OpenClipEncoder.from_id(encoder_id, **options)
    raise UserError(
        f"--encoder {encoder_id}: expected 'identity' or 'openclip:MODEL:PRETRAINED'"
    )
