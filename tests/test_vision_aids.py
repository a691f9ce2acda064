"""The from-scratch vision aids: conv SAM encoder, conv vision stem, vision probes, class maps."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from conftest import scene, training_samples

from pixelreason.config import tiny
from pixelreason.data.mixing import MixConfig, WorldMixture
from pixelreason.data.world import CATEGORIES, generate_sample, generate_scene
from pixelreason.models.backbone import ConvStem
from pixelreason.models.sam import ConvImageEncoder
from pixelreason.models.segmenter import PixelReasonModel
from pixelreason.train.losses import LossWeights


def aided_tiny(seed: int = 0) -> PixelReasonModel:
    config = tiny()
    config.sam["image_encoder"] = "conv"
    config.sam["prompt_encoder_config"]["patch_size"] = 4
    config.probe_classes = 3
    config.vision_stem = "conv"
    torch.manual_seed(seed)
    return PixelReasonModel.from_config(config)


def test_semantic_map_labels_each_visible_object_with_its_category() -> None:
    scene_ = generate_scene(np.random.default_rng(3), size=96)
    labels = scene_.semantic_map()
    assert labels.shape == (96, 96) and labels.dtype == np.int16
    for obj in scene_.objects:
        index = [c.name for c in CATEGORIES].index(obj.category.name)
        assert (labels[obj.mask] == index + 1).all()
    covered = np.logical_or.reduce([o.mask for o in scene_.objects])
    assert (labels[~covered] == 0).all()


def test_every_training_source_carries_the_scene_class_map() -> None:
    rates = {"sem_seg": 1, "refer": 1, "text_qa": 1, "reason": 1, "caption": 1}
    mixture = WorldMixture(MixConfig(rates=rates, image_size=64))
    sources = set()
    for index in range(40):
        sample = mixture(index)
        sources.add(mixture.source_of(index))
        assert sample.semantic is not None and sample.semantic.shape == (64, 64)
        for mask in sample.masks:  # every target lies on labelled (object) pixels
            assert (sample.semantic[mask == 1] > 0).all()
    assert sources == set(rates)
    assert generate_sample(0, "val", 0, size=64).semantic.shape == (64, 64)


def test_conv_stem_keeps_the_patch_grid() -> None:
    stem = ConvStem(hidden=32, patch_size=8)
    assert stem(torch.zeros(2, 3, 32, 32)).shape == (2, 32, 4, 4)
    assert stem.weight.dtype == torch.float32
    with pytest.raises(ValueError, match="power-of-two"):
        ConvStem(hidden=32, patch_size=6)


@pytest.mark.parametrize("stride", [4, 8])
def test_conv_sam_encoder_gives_the_prompt_encoder_grid(stride: int) -> None:
    encoder = ConvImageEncoder(out_channels=24, stride=stride)
    assert encoder(torch.zeros(1, 3, 64, 64)).shape == (1, 24, 64 // stride, 64 // stride)


def test_aided_model_trains_saves_and_loads(tmp_path) -> None:
    model = aided_tiny()
    assert isinstance(model.head.sam.sam.vision_encoder, ConvImageEncoder)
    samples = training_samples()
    image, red, blue = scene()
    labels = (red + 2 * blue).astype(np.int16)
    for sample in samples:
        sample.semantic = labels
    batch = model.collate(samples)
    out = model(batch, LossWeights(probe=1.0))
    assert out.head["probe"] > 0
    out.loss.backward()
    assert model.probe.head.weight.grad.abs().sum() > 0
    assert model.probe.backbone.weight.grad.abs().sum() > 0
    # Masks come back at the image size from the 16x16 (stride 4) embedding.
    _, prediction = model.teacher_forced(batch)
    assert prediction.logits[0].shape[-1] == 64
    model.save_pretrained(tmp_path / "m")
    loaded = PixelReasonModel.from_pretrained(tmp_path / "m")
    assert isinstance(loaded.backbone.model.model.vision_tower.embeddings.patch_embedding, ConvStem)
    model.eval()
    with torch.no_grad():
        first = model(batch, LossWeights(probe=1.0))
        second = loaded(batch, LossWeights(probe=1.0))
    assert first.loss.item() == pytest.approx(second.loss.item(), rel=1e-5)


def test_backbone_only_probe_leaves_the_mask_encoder_alone() -> None:
    config = tiny()
    config.probe_classes, config.probe_mask_head = 3, False
    model = PixelReasonModel.from_config(config)
    assert model.probe.head is None
    samples = training_samples()
    _, red, blue = scene()
    for sample in samples:
        sample.semantic = (red + 2 * blue).astype(np.int16)
    out = model(model.collate(samples), LossWeights(text=0.0, mask=0.0, probe=1.0))
    out.loss.backward()
    assert model.probe.backbone.weight.grad.abs().sum() > 0
    sam_encoder = model.head.sam.sam.vision_encoder
    assert all(p.grad is None or not p.grad.any() for p in sam_encoder.parameters())


def test_probe_loss_falls_when_trained_alone() -> None:
    model = aided_tiny()
    samples = copy.deepcopy(training_samples())
    image, red, blue = scene()
    for sample in samples:
        sample.semantic = (red + 2 * blue).astype(np.int16)
    batch = model.collate(samples)
    weights = LossWeights(text=0.0, mask=0.0, probe=1.0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(30):
        out = model(batch, weights)
        optimizer.zero_grad()
        out.loss.backward()
        optimizer.step()
        losses.append(out.head["probe"])
    assert losses[-1] < 0.5 * losses[0]


def test_batches_without_class_maps_skip_the_probe() -> None:
    model = aided_tiny()
    out = model(model.collate(training_samples()), LossWeights(probe=1.0))
    assert "probe" not in out.head


def test_recipes_override_preset_fields(tmp_path) -> None:
    from pixelreason.errors import InputError
    from pixelreason.train.recipe import build_model

    model = build_model({"preset": "tiny", "vision_stem": "conv", "probe_classes": 4})
    assert model.config.vision_stem == "conv" and model.probe.classes == 4
    with pytest.raises(InputError, match="unknown preset overrides"):
        build_model({"preset": "tiny", "colour": "red"})


def test_vision_feature_norm_bounds_the_llm_image_features(tmp_path) -> None:
    """With the norm on, blowing up the tower's residual stream leaves the projector's input
    unit-scale (the failure `normalise_vision_features` guards against); saved and loaded
    models keep it, and the state dict keeps LLaVA's names."""
    config = tiny()
    torch.manual_seed(0)
    plain = PixelReasonModel.from_config(copy.deepcopy(config))
    config.vision_feature_norm = True
    torch.manual_seed(0)
    normed = PixelReasonModel.from_config(config)
    assert list(normed.state_dict()) == list(plain.state_dict())
    pixels = torch.rand(2, 3, config.backbone_image_size, config.backbone_image_size)
    seen = {}
    for name, model in (("plain", plain), ("normed", normed)):
        projector = model.backbone.model.model.multi_modal_projector
        hook = projector.register_forward_pre_hook(lambda _m, a, n=name: seen.__setitem__(n, a[0]))
        with torch.no_grad():
            for layer in model.backbone.model.model.vision_tower.encoder.layers:
                layer.mlp.fc2.bias.add_(1000.0)  # a runaway residual stream
            model.backbone.encode_image(pixels)
        hook.remove()
    assert seen["plain"].abs().mean() > 100
    # The norm's pre-hook runs before ours is registered, so ours sees its output.
    assert seen["normed"].pow(2).mean(-1).sqrt().max() < 2.0
    normed.save_pretrained(tmp_path / "m")
    loaded = PixelReasonModel.from_pretrained(tmp_path / "m")
    assert loaded.config.vision_feature_norm
    with torch.no_grad():
        assert torch.allclose(
            loaded.backbone.encode_image(pixels), normed.backbone.encode_image(pixels), atol=1e-5
        )
