"""Image encoding throughput (images/s): random-weight open_clip models on this machine.

`model`: the image tower alone on a batch of preprocessed images (what the hardware
allows). `pipeline`: bench's OpenClipEncoder on the embedded waterbirds-synth images
(PNG decode, preprocessing and a DataLoader included), features not cached.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from bench.data.dataset import DatasetOptions
from bench.encoders.openclip import OpenClipEncoder
from bench.plugins import registry

CONFIGS = Path(registry.__file__).with_name("model_configs")
TINY = "spurbench-tiny"
MODELS = ["ViT-B-32", TINY]


def _tiny_missing() -> str | None:
    if not (CONFIGS / f"{TINY}.json").exists():
        return f"the tests' tiny open_clip config {CONFIGS / (TINY + '.json')} is not there"
    return None


@pytest.mark.parametrize("model", MODELS)
def test_bench_encode_model(benchmark, record, model):
    import open_clip

    if model == TINY:
        if why := _tiny_missing():
            pytest.skip(why)
        open_clip.add_model_config(CONFIGS)
    torch.manual_seed(0)
    net = open_clip.create_model(model, pretrained=None).eval()
    size = net.visual.image_size
    size = size if isinstance(size, int) else size[0]
    batch = 32 if model != TINY else 256
    images = torch.randn(batch, 3, size, size)

    def encode() -> None:
        with torch.no_grad():
            net.encode_image(images)

    benchmark.pedantic(encode, rounds=3, warmup_rounds=1)
    rate = batch / benchmark.stats.stats.min
    benchmark.extra_info.update(images_per_s=round(rate, 1), batch=batch, image_size=size)
    record(path=f"encode model {model}", images_per_s=round(rate, 1), batch=batch)


@pytest.mark.parametrize("model", MODELS)
def test_bench_encode_pipeline(benchmark, record, tmp_path, model):
    if model == TINY and (why := _tiny_missing()):
        pytest.skip(why)
    registry.load_plugins([])
    n = {"n_train": "400", "n_val": "100", "n_test": "100"}
    if model != TINY:
        n = {"n_train": "48", "n_val": "16", "n_test": "16"}  # under 10 images/s on 2 cores
    spec = registry.get_dataset("waterbirds-synth").load(
        DatasetOptions(data_root=tmp_path, extra=n))
    encoder = OpenClipEncoder(model, "none", progress=False)
    encoder.encode(spec)  # loads the model; renders nothing new

    benchmark.pedantic(lambda: encoder.encode(spec), rounds=2, iterations=1)
    images = spec.metadata.height
    rate = images / benchmark.stats.stats.min
    benchmark.extra_info.update(images_per_s=round(rate, 1), images=images)
    record(path=f"encode pipeline {model}", images_per_s=round(rate, 1), images=images)
