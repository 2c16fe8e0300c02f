"""Encoders turn a DatasetSpec into a feature matrix (and class and attribute text).

`identity` serves datasets that already are features. `openclip:MODEL:PRETRAINED` is
resolved by bench.encoders.openclip (image and text towers of any open_clip model).
"""

from __future__ import annotations

import numpy as np

from bench.data.dataset import Dataset
from bench.data.spec import DatasetSpec
from bench.encoders.base import Encoded, Encoder
from bench.errors import UserError

__all__ = ["Encoded", "Encoder", "IdentityEncoder", "default_encoder_for", "get_encoder"]


class IdentityEncoder(Encoder):
    """For feature datasets: the features are used as they are."""

    id = "identity"

    def encode(self, spec: DatasetSpec) -> Encoded:
        if spec.item_kind != "features" or spec.features is None:
            raise UserError(
                f"--encoder identity: dataset '{spec.name}' holds {spec.item_kind}, not features; "
                "use --encoder openclip:MODEL:PRETRAINED"
            )
        return Encoded(
            np.asarray(spec.features, dtype=np.float32), spec.class_text_embeddings,
            attr_text=spec.attr_text_embeddings, class_attr_text=spec.class_attr_text_embeddings,
        )


def default_encoder_for(spec: DatasetSpec, plugin: Dataset | None = None) -> str:
    """The plugin's `default_encoder` when it declares one (embedded image datasets name an
    encoder that runs offline), identity for features, else CLIP ViT-B/32 (OpenAI weights)."""
    declared = plugin.default_encoder if plugin is not None else ""
    if declared:
        return str(declared)
    return "identity" if spec.item_kind == "features" else "openclip:ViT-B-32:openai"


def get_encoder(encoder_id: str, **options: object) -> Encoder:
    if encoder_id == "identity":
        return IdentityEncoder()
    if encoder_id.startswith("openclip:"):
        from bench.encoders.openclip import OpenClipEncoder

        return OpenClipEncoder.from_id(encoder_id, **options)
    raise UserError(
        f"--encoder {encoder_id}: expected 'identity' or 'openclip:MODEL:PRETRAINED'"
    )
