"""From a DatasetSpec and an encoder to a FeatureStore, once per process.

The in-process memo is what makes the FeatureStore shared: every method, trial and seed
in a process asks here and gets the same device-resident tensors.
"""

from __future__ import annotations

from pathlib import Path

import torch

from bench.data.spec import DatasetSpec
from bench.data.store import FeatureStore
from bench.encoders.factory import Encoder

_STORES: dict[tuple[str, str, str], FeatureStore] = {}


def feature_store(
    spec: DatasetSpec, encoder: Encoder, device: torch.device, cache_dir: Path | None = None
) -> FeatureStore:
    key = (spec.fingerprint(), encoder.id, str(device))
    if key not in _STORES:
        encoded = (
            encoder.encode(spec) if cache_dir is None else _cached_encode(spec, encoder, cache_dir)
        )
        _STORES[key] = FeatureStore.build(
            spec,
            encoded.features,
            encoder.id,
            device,
            encoded.class_text,
            encoded.visual_projection,
            encoded.logit_scale,
            encoded.untrained,
            encoded.attr_text,
            encoded.class_attr_text,
        )
    return _STORES[key]


def _cached_encode(spec: DatasetSpec, encoder: Encoder, cache_dir: Path):  # noqa: ANN202
    if encoder.id == "identity":
        return encoder.encode(spec)
    from bench.data.cache import cached_encode

    return cached_encode(spec, encoder, cache_dir)


def clear_memo() -> None:
    _STORES.clear()
