"""OpenClipEncoder on the tiny random-weight model: ids, weights sources, features, prompts."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
import torch

from bench.data.spec import DatasetSpec
from bench.encoders.factory import default_encoder_for, get_encoder
from bench.encoders.openclip import TINY_MODEL, OpenClipEncoder
from bench.errors import UserError

TINY = f"openclip:{TINY_MODEL}:none"


def text_spec(templates: list[str] | None = None) -> DatasetSpec:
    md = pl.DataFrame({
        "id": list(range(6)),
        "item": ["you are great", "you are awful", "nice day", "terrible idea", "ok", "bad"],
        "y": [0, 1, 0, 1, 0, 1], "a": [0, 0, 1, 1, 0, 1],
        "split": ["train"] * 4 + ["val", "test"],
    })
    return DatasetSpec(name="texts", metadata=md, class_names=["kind", "rude"],
                       attr_names=["p", "q"], item_kind="text",
                       prompt_templates=templates or ["a {} comment.", "this is {}."])


def image_spec(folder) -> DatasetSpec:  # noqa: ANN001
    from PIL import Image

    rows = [("train", 0, 0), ("train", 0, 1), ("train", 1, 0), ("train", 1, 1),
            ("val", 0, 1), ("test", 1, 0), ("test", 0, 0)]
    rng = np.random.default_rng(0)
    for i in range(len(rows)):
        Image.fromarray(rng.integers(0, 255, (20, 24, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    md = pl.DataFrame({"id": list(range(len(rows))), "item": [f"{i}.png" for i in range(len(rows))],
                       "y": [r[1] for r in rows], "a": [r[2] for r in rows],
                       "split": [r[0] for r in rows]})
    return DatasetSpec(name="pics", metadata=md, class_names=["landbird", "waterbird"],
                       attr_names=["land", "water"], item_kind="image", root=str(folder))


@pytest.mark.parametrize("bad, message", [
    ("openclip:ViT-B-32", "expected openclip:MODEL:PRETRAINED"),
    ("openclip::none", "expected openclip:MODEL:PRETRAINED"),
    ("openclip:ViT-B-33:none", "unknown open_clip model 'ViT-B-33' (did you mean 'ViT-B-32'?)"),
    ("openclip:ViT-B-32:openia", "'openia' is not a pretrained tag of ViT-B-32 (tags: openai"),
    ("openclip:ViT-B-32:/no/such/weights.pt", "checkpoint file /no/such/weights.pt not found"),
])
def test_bad_encoder_ids(bad, message):
    with pytest.raises(UserError) as exc:
        get_encoder(bad)
    assert message in str(exc.value)


def test_missing_weights_offline_says_to_pass_a_checkpoint(monkeypatch, tmp_path):
    import huggingface_hub.constants

    import bench.encoders.openclip as oc

    monkeypatch.setattr(oc, "_hub_reachable", lambda timeout=3.0: False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))  # empty cache
    enc = get_encoder("openclip:RN50:openai", progress=False)
    assert enc.untrained is False and enc.weights_identity().startswith("tag:openai")
    with pytest.raises(UserError) as exc:
        enc.encode(text_spec())
    msg = str(exc.value)
    assert "openclip:RN50:openai" in msg and "'openai' weights of RN50" in msg
    assert "unreachable" in msg and "openclip:RN50:/path/to/weights" in msg


def test_random_weights_are_seeded_normalised_and_untrained():
    a = OpenClipEncoder.from_id(TINY, progress=False)
    b = OpenClipEncoder.from_id(TINY, progress=False, batch_size=2)
    ea, eb = a.encode(text_spec()), b.encode(text_spec())
    assert ea.untrained and ea.features.shape == (6, 32) and ea.features.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(ea.features, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(ea.features, eb.features, atol=1e-5)  # batching changes nothing
    assert ea.visual_projection is None  # encode_image output is already projected
    assert ea.logit_scale == pytest.approx(1 / 0.07, rel=1e-5)  # open_clip's initial scale


def test_class_text_is_the_renormalised_mean_of_normalised_template_embeddings():
    enc = OpenClipEncoder.from_id(TINY, progress=False)
    both = enc.class_text(text_spec(["a {} comment.", "this is {}."]))
    one = enc.class_text(text_spec(["a {} comment."]))
    two = enc.class_text(text_spec(["this is {}."]))
    expected = one + two  # each row is already unit length
    expected /= np.linalg.norm(expected, axis=1, keepdims=True)
    np.testing.assert_allclose(both, expected, atol=1e-5)
    assert both.shape == (2, 32)


def test_template_without_placeholder_is_refused():
    with pytest.raises(UserError, match="has no {} for the class"):
        OpenClipEncoder.from_id(TINY, progress=False).class_text(text_spec(["a comment."]))


def test_images_with_worker_processes_match_the_main_process(tmp_path):
    spec = image_spec(tmp_path)
    main = OpenClipEncoder.from_id(TINY, progress=False, workers=0, batch_size=3).encode(spec)
    pool = OpenClipEncoder.from_id(TINY, progress=False, workers=1, batch_size=3).encode(spec)
    assert main.features.shape == (7, 32)
    np.testing.assert_allclose(main.features, pool.features, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(main.features, axis=1), 1.0, atol=1e-5)
    assert len({tuple(np.round(r, 4)) for r in main.features}) == 7  # distinct images differ


def test_local_checkpoint_file_loads_those_weights(tmp_path):
    from safetensors.torch import save_model

    random = OpenClipEncoder.from_id(TINY, progress=False)
    random._load()
    with torch.no_grad():
        for p in random._model.parameters():
            p.add_(0.01)  # weights that differ from the seeded random ones
    path = tmp_path / "tiny.safetensors"
    save_model(random._model, str(path))
    from_file = get_encoder(f"openclip:{TINY_MODEL}:{path}", progress=False)
    assert from_file.untrained is False
    assert from_file.weights_identity().startswith(f"file:{path}")
    np.testing.assert_allclose(
        from_file.encode(text_spec()).features, random.encode(text_spec()).features, atol=1e-5
    )
    assert not np.allclose(
        from_file.encode(text_spec()).features,
        OpenClipEncoder.from_id(TINY, progress=False).encode(text_spec()).features, atol=1e-3,
    )


def test_cache_identity_names_weights_and_preprocessing(tmp_path):
    ident = OpenClipEncoder.from_id(TINY, progress=False).cache_identity()
    assert ident["weights"] == "random-init:seed=0" and ident["precision"] == "fp32"
    assert ident["model_config"]["embed_dim"] == 32
    tagged = get_encoder("openclip:ViT-B-32:openai").cache_identity()
    assert tagged["preprocess"]["quick_gelu"] is True and tagged["weights"] != ident["weights"]


def test_feature_datasets_are_refused():
    md = pl.DataFrame({"id": [0, 1, 2, 3, 4, 5], "item": [0, 1, 2, 3, 4, 5],
                       "y": [0, 0, 1, 1, 0, 1], "a": [0, 1, 0, 1, 0, 1],
                       "split": ["train"] * 4 + ["val", "test"]})
    spec = DatasetSpec(name="feats", metadata=md, class_names=["a", "b"], attr_names=["p", "q"],
                       features=np.zeros((6, 2), np.float32))
    with pytest.raises(UserError, match="holds features, not images or texts; use --encoder"):
        OpenClipEncoder.from_id(TINY, progress=False).encode(spec)


def test_default_encoder_follows_the_plugin():
    class Plugin:
        default_encoder = TINY

    spec = text_spec()
    assert default_encoder_for(spec, Plugin()) == TINY
    assert default_encoder_for(spec) == "openclip:ViT-B-32:openai"
