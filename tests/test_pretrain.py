"""Encoder pretraining (`task: pretrain`) and frozen parameters, on the tiny preset."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from pixelreason.cli import main
from pixelreason.errors import InputError
from pixelreason.models.segmenter import PixelReasonModel
from pixelreason.train.losses import LossWeights
from pixelreason.train.pretrain import ScenePretraining, SceneStream
from pixelreason.train.recipe import build_model, load_recipe
from pixelreason.train.trainer import TrainConfig, prepare_for_training

TINY = {"preset": "tiny", "seed": 0, "probe_classes": 56, "vision_feature_norm": True}
ENCODERS = ("backbone.model.model.vision_tower", "head.sam.sam.vision_encoder")


def _pretraining() -> ScenePretraining:
    return ScenePretraining(build_model(dict(TINY)))


def test_scene_stream_is_deterministic_and_carries_class_maps() -> None:
    stream = SceneStream(seed=3, image_size=64)
    first, again, other = stream(5), stream(5), stream(6)
    assert first.semantic is not None and first.semantic.shape == (64, 64)
    assert (first.semantic == again.semantic).all()
    assert not (first.semantic == other.semantic).all()
    assert first.turns == [] and first.masks == []


def test_pretraining_fits_probe_and_concept_masks_on_one_batch() -> None:
    torch.manual_seed(0)
    wrapper = _pretraining()
    batch = wrapper.collate([SceneStream(0, 64)(i) for i in range(4)])
    weights = LossWeights(probe=1.0, mask=1.0, bce=2.0, dice=1.0)
    optimizer = torch.optim.AdamW(wrapper.parameters(), lr=3e-3)
    first = wrapper(batch, weights)
    for _ in range(130):
        output = wrapper(batch, weights)
        optimizer.zero_grad()
        output.loss.backward()
        optimizer.step()
    assert output.num_masks > 0 and first.num_masks > 0
    assert output.head["probe"] < 0.6 * first.head["probe"]
    # DICE falls late: the decoder first learns that most pixels are background.
    assert output.dice < 0.85 * first.dice and output.bce < 0.5 * first.bce


def test_a_zero_weight_skips_that_encoder() -> None:
    wrapper = _pretraining()
    batch = wrapper.collate([SceneStream(0, 64)(i) for i in range(2)])
    wrapper(batch, LossWeights(probe=1.0, mask=0.0)).loss.backward()
    tower = wrapper.model.backbone.model.model.vision_tower
    sam = wrapper.model.head.sam.sam.vision_encoder
    assert any(p.grad is not None for p in tower.parameters())
    assert all(p.grad is None for p in sam.parameters())
    assert all(
        p.grad is None for p in wrapper.model.backbone.model.model.language_model.parameters()
    )


def test_measure_reports_probe_accuracy_and_concept_iou() -> None:
    wrapper = _pretraining()
    scores = wrapper.measure([SceneStream(1, 64)(i) for i in range(5)], batch_size=2)
    assert set(scores) == {"probe_acc", "presence_auc", "concept_iou"}
    assert all(0.0 <= v <= 1.0 for v in scores.values())
    assert wrapper.training  # measuring leaves the mode as it was


def test_pretraining_needs_the_probe() -> None:
    with pytest.raises(InputError, match="probe_classes"):
        ScenePretraining(build_model({"preset": "tiny"}))


def test_pretrain_recipe_trains_the_encoders_only_then_a_stage_starts_from_it(
    tmp_path: Path,
) -> None:
    spec = "{preset: tiny, seed: 0, probe_classes: 56, vision_feature_norm: true}"
    first, second = tmp_path / "pre.yaml", tmp_path / "seg.yaml"
    first.write_text(
        f"model: {spec}\ntask: pretrain\ndata: {{image_size: 64}}\nval: {{samples: 3}}\n"
        "train: {steps: 3, batch_size: 2, log_every: 1, eval_every: 3, "
        "loss: {probe: 1.0, mask: 1.0}}\n"
        f"out: {tmp_path / 'pre'}\n"
    )
    second.write_text(
        f"model: {{preset: tiny, seed: 1, probe_classes: 56, vision_feature_norm: true, "
        f"init: {tmp_path / 'pre' / 'model'}}}\n"
        "data: {image_size: 64}\n"
        "train: {steps: 2, batch_size: 2, log_every: 1, freeze: "
        f"[{', '.join(ENCODERS)}]}}\nout: {tmp_path / 'seg'}\n"
    )
    assert main(["train", str(first), str(second)]) == 0
    fresh = build_model(dict(TINY)).state_dict()
    pre = PixelReasonModel.from_pretrained(tmp_path / "pre" / "model").state_dict()
    seg = PixelReasonModel.from_pretrained(tmp_path / "seg" / "model").state_dict()
    for name, value in pre.items():
        moved = not torch.equal(value, fresh[name])
        if name.startswith("backbone.model.model.language_model"):
            assert not moved, name  # the LLM is not part of pretraining
        if name.startswith(ENCODERS):
            assert torch.equal(value, seg[name]), name  # frozen in the second stage
    assert any(not torch.equal(pre[n], fresh[n]) for n in pre if n.startswith(ENCODERS[0]))
    assert any(not torch.equal(pre[n], fresh[n]) for n in pre if n.startswith(ENCODERS[1]))
    assert any(not torch.equal(pre[n], seg[n]) for n in pre if "language_model" in n)
    history = (tmp_path / "pre" / "history.json").read_text()
    assert "val_probe_acc" in history and "val_concept_iou" in history


def test_recipe_rejects_an_unknown_task_and_bad_freeze_lists(tmp_path: Path) -> None:
    path = tmp_path / "r.yaml"
    path.write_text("model: {preset: tiny}\ntask: pretrian\n")
    with pytest.raises(InputError, match="task must be one of"):
        load_recipe(path)
    path.write_text("model: {preset: tiny}\ntask: pretrain\ntrain: {lora: {r: 4}}\n")
    with pytest.raises(InputError, match="drop train.lora"):
        load_recipe(path)
    path.write_text("model: {preset: tiny}\ntrain: {freeze: backbone}\n")
    with pytest.raises(InputError, match="freeze must be a list"):
        load_recipe(path)
    model = build_model({"preset": "tiny"})
    with pytest.raises(InputError, match="no parameter name starts with 'nothing.here'"):
        prepare_for_training(model, TrainConfig(freeze=["nothing.here"]))
