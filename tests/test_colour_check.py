"""The colour probe (`task: colour-probe`) and the colour check at inference."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from pixelreason.cli import main
from pixelreason.data.world import CATEGORIES, generate_scene
from pixelreason.data.world.categories import colour_labels
from pixelreason.data.world.samples import generate_sample
from pixelreason.errors import CheckpointError, InputError
from pixelreason.models.presence import (
    ColourSlot,
    class_presence,
    colour_slots,
    foreign_colour,
    recolour,
)
from pixelreason.models.segmenter import PixelReasonModel
from pixelreason.prompting import Turn
from pixelreason.registry import load_model
from pixelreason.tokenizer import bundled_tokenizer
from pixelreason.tokens import SEG_TOKEN
from pixelreason.train.pretrain import ScenePretraining, SceneStream
from pixelreason.train.recipe import build_model, preset_config


def test_colour_labels_and_colour_map_name_each_visible_object() -> None:
    labels = colour_labels()
    assert len(labels) == sum(len(c.colours) for c in CATEGORIES) == len(set(labels))
    assert "red apple" in labels and "green apple" in labels
    scene = generate_scene(np.random.default_rng(4), size=96)
    colours, classes = scene.colour_map(), scene.semantic_map()
    assert colours.shape == classes.shape == (96, 96)
    assert ((colours == 0) == (classes == 0)).all()  # the same pixels are background
    for obj in scene.objects:
        if obj.mask.any():
            label = labels.index(f"{obj.colour} {obj.category.name}") + 1
            assert (colours[obj.mask] == label).all()


def test_colour_slots_find_colour_and_category_right_before_a_target() -> None:
    tokenizer = bundled_tokenizer()
    labels = ["red mug", "blue mug", "green mug", "red trash can", "grey trash can"]
    target = 9999

    def ids(text: str) -> list[int]:
        return tokenizer.encode(text, add_special_tokens=False)

    answer = ids("The striped red mug ") + [target] + ids(" and the grey trash can") + [target]
    assert len(ids("The striped red mug ")) == len(ids("The striped red mug")) + 1  # a blank
    slots = colour_slots(answer, tokenizer, labels, target)
    assert [s.label for s in slots] == [0, 4]
    assert answer[slots[0].position] == ids(" red")[0]
    assert slots[0].others == {ids(" blue")[0]: 1, ids(" green")[0]: 2}
    assert colour_slots(ids("The red mug is here."), tokenizer, labels, target) == []
    # not found: pick among the category's colours that are
    slot = slots[0]
    assert recolour([slot], [0.01, 0.5, 0.05, 0, 0], 0.1) == (slot, [ids(" blue")[0]])
    assert recolour([slot], [0.2, 0.5, 0.5, 0, 0], 0.1) is None  # red mug found: kept
    assert recolour([slot], [0.01, 0.02, 0.05, 0, 0], 0.1) is None  # no mug found at all
    other = ColourSlot(3, 4, {7: 3})
    assert recolour([slot, other], [0.5, 0, 0, 0.3, 0.0], 0.1) == (other, [7])


def test_foreign_colour_finds_a_colour_the_category_never_has() -> None:
    tokenizer = bundled_tokenizer()
    labels = ["red mug", "blue mug", "yellow lemon"]
    target = 9999

    def ids(text: str) -> list[int]:
        return tokenizer.encode(text, add_special_tokens=False)

    answer = ids("The blue mug ") + [target] + ids(" and the red lemon") + [target]
    position, own = foreign_colour(answer, tokenizer, labels, target)
    assert answer[position] == ids(" red")[0] and answer[position + 1 :][:1] == ids(" lemon")
    assert own == {ids(" yellow")[0]: 2}
    # a colour its category has, or no target after it, is no foreign colour
    assert foreign_colour(ids("The blue mug ") + [target], tokenizer, labels, target) is None
    assert foreign_colour(ids("The red lemon is sour."), tokenizer, labels, target) is None
    # "yellow" is a colour word (some category has it), wrong for a mug
    position, own = foreign_colour(ids("the yellow mug") + [target], tokenizer, labels, target)
    assert own == {ids(" red")[0]: 0, ids(" blue")[0]: 1}


@pytest.mark.parametrize(
    ("index", "rejected", "text"),
    [
        # a lemon comes in one colour: answers name it alone
        (9, "The red lemon <SEG>.", "The lemon <SEG>."),
        # a cat comes in several: the one the colour probe finds most
        (56, "The blue cat <SEG>.", "The orange cat <SEG>."),
    ],
)
def test_bundled_default_drops_or_replaces_a_colour_the_category_never_has(
    index: int, rejected: str, text: str
) -> None:
    """Zero-shot queries: where the LLM grounds "the red lemon", the mask of the colour it
    wrote is not the lemon's; with the colour word fixed, the states after it are read again
    and the mask finds the lemon."""
    model, _ = load_model("default")
    sample = generate_sample(0, "zeroshot", index)
    target = sample.target_masks[0].astype(bool)
    cache = model.encode_image(model.preprocessor.prepare_image(sample.image))
    turns = [Turn(sample.texts[0])]
    answer = model.answer_batch([cache], [turns], mask_names=False)[0]
    unchecked = model.answer_batch([cache], [turns], colour_threshold=0.0, mask_names=False)[0]
    assert unchecked.text == rejected == answer.extras["colour_check"]["rejected"]
    assert answer.text == text

    def iou(found) -> float:
        mask = found.mask_logits[0].numpy() > 0
        return (mask & target).sum() / (mask | target).sum()

    assert iou(unchecked) < 0.1 and iou(answer) > 0.7


@pytest.mark.parametrize("head", [False, True])
def test_colour_probe_recipe_fits_the_probe_alone(tmp_path: Path, head: bool) -> None:
    """Only `colour_probe.*` moves; with `colour_mask_head`, its SAM-grid part too, fitted with
    the presence loss as well."""
    spec = {"preset": "tiny", "seed": 0, "probe_classes": 56, "colour_probe": True}
    if head:
        spec["colour_mask_head"] = True
    loss = "{probe: 1.0, presence: 1.0, mask: 0.0}" if head else "{probe: 1.0, mask: 0.0}"
    recipe = tmp_path / "colour.yaml"
    recipe.write_text(
        f"model: {json.dumps(spec)}\ntask: colour-probe\ndata: {{image_size: 64}}\n"
        "val: {samples: 2}\ntrain: {steps: 3, batch_size: 2, lr: 0.01, log_every: 1, "
        f"eval_every: 3, loss: {loss}}}\nout: {tmp_path / 'run'}\n"
    )
    assert main(["train", str(recipe)]) == 0
    config = preset_config({"preset": "tiny", "probe_classes": 56, "colour_probe": True})
    assert config.colour_probe_labels == colour_labels()
    torch.manual_seed(0)
    fresh = build_model(spec)
    fitted = PixelReasonModel.from_pretrained(tmp_path / "run" / "model")
    assert fitted.config.colour_probe_labels == colour_labels()
    assert fitted.config.colour_mask_head == head
    before, after = fresh.state_dict(), fitted.state_dict()
    for name, value in after.items():
        moved = not torch.equal(value, before[name])
        assert moved == name.startswith("colour_probe."), name
    assert any(name.startswith("colour_probe.head.") for name in after) == head
    history = (tmp_path / "run" / "history.json").read_text()
    assert "val_probe_acc" in history and "val_presence_auc" in history


def test_colour_probe_task_needs_a_colour_probe_and_no_masks(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="colour_probe: true"):
        ScenePretraining(build_model({"preset": "tiny", "probe_classes": 56}), colour=True)
    with pytest.raises(CheckpointError, match="colour_mask_head"):
        build_model({"preset": "tiny", "probe_classes": 56, "colour_mask_head": True})
    with pytest.raises(InputError, match="colour_probe must be true or false"):
        preset_config({"preset": "tiny", "colour_probe": "yes"})
    recipe = tmp_path / "bad.yaml"
    recipe.write_text(
        "model: {preset: tiny, colour_probe: true}\ntask: colour-probe\n"
        "train: {steps: 1, loss: {probe: 1.0, mask: 1.0}}\n"
        f"out: {tmp_path / 'run'}\n"
    )
    assert main(["train", str(recipe)]) != 0
    stream = SceneStream(seed=2, image_size=64, colour=True)
    assert int(stream(0).semantic.max()) > len(CATEGORIES)  # pair ids go past the categories


def test_bundled_default_recolours_answers_to_a_colour_the_probe_finds() -> None:
    model, _ = load_model("default")
    threshold = model.config.colour_threshold
    assert threshold > 0 and model.config.colour_probe_labels == colour_labels()
    labels = model.config.colour_probe_labels
    target = model.preprocessor.tokenizer.convert_tokens_to_ids(SEG_TOKEN)
    checked = 0
    for index in range(40):
        sample = generate_sample(0, "test", index)
        cache = model.encode_image(model.preprocessor.prepare_image(sample.image))
        turns = [Turn(sample.conversation[0][0])]
        # the colour check alone: mask colours, after it, would name colours too
        answer = model.answer_batch([cache], [turns], mask_names=False)[0]
        if "colour_check" not in answer.extras:
            continue
        checked += 1
        unchecked = model.answer_batch([cache], [turns], colour_threshold=0.0, mask_names=False)[0]
        assert unchecked.text == answer.extras["colour_check"]["rejected"] != answer.text
        changed = [
            (old, new)
            for old, new in zip(unchecked.text.split(), answer.text.split(), strict=True)
            if old != new
        ]
        assert len(changed) == 1  # one colour word replaced, the rest as the LLM wrote it
        context = cache.context if model.config.colour_mask_head else None
        presence = class_presence(model.colour_probe, cache.features, context)[0].tolist()
        rejected = labels.index(answer.extras["colour_check"]["absent"])
        assert presence[rejected] < threshold
        ids = answer.token_ids.tolist()
        grounded = [
            s.label for s in colour_slots(ids, model.preprocessor.tokenizer, labels, target)
        ]
        assert any(presence[label] >= threshold for label in grounded)
        if checked == 2:
            break
    assert checked == 2  # the check fires on some of the first test queries
