"""The category map: moving a single target's mask onto its category, the network's file,
its fit, and the segmenter's use of it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from pixelreason.api import encode_image
from pixelreason.cli import main
from pixelreason.config import ModelConfig
from pixelreason.data.world.samples import generate_sample
from pixelreason.errors import CheckpointError
from pixelreason.models.category_map import (
    FILE_NAME,
    CategoryMap,
    category_regions,
    class_loss,
    fit_world,
    world_batch,
)
from pixelreason.models.objects import FILE_NAME as CUTS_FILE
from pixelreason.models.objects import ObjectCuts
from pixelreason.models.segmenter import Answer, ImageCache, PixelReasonModel
from pixelreason.processing import ImageInputs
from pixelreason.prompting import Turn
from pixelreason.registry import BUNDLED_MODELS_DIR, load_model


def _map() -> np.ndarray:
    """A 20 x 30 map: a class-1 square (left), a class-2 square (middle), a second class-1
    square (right, smaller) and three stray class-1 pixels."""
    classes = np.zeros((20, 30), int)
    classes[2:10, 1:9] = 1
    classes[2:10, 11:19] = 2
    classes[12:17, 22:27] = 1
    classes[18, 0:3] = 1
    return classes


def test_category_regions_move_a_mask_that_lies_off_its_class() -> None:
    classes = _map()
    on_two = classes == 2
    regions = category_regions(on_two, classes, 1)
    assert [int(r.sum()) for r in regions] == [64, 25]  # largest first, strays left out
    assert regions[0][2:10, 1:9].all() and regions[1][12:17, 22:27].all()
    assert category_regions(np.zeros_like(on_two), classes, 1)  # an empty mask moves too


def test_category_regions_keep_a_mask_mostly_on_its_class_or_with_nowhere_to_go() -> None:
    classes = _map()
    mostly = classes == 1
    mostly[2:10, 9:12] = True  # 24 pixels off the class, 89 on it
    assert category_regions(mostly, classes, 1) == []
    assert category_regions(classes == 2, classes, 3) == []  # the map finds no class 3
    assert category_regions(classes == 2, classes, 1, keep_share=0.0) == []


def test_category_map_round_trip_and_refuse_other_files(tmp_path: Path) -> None:
    torch.manual_seed(0)
    net = CategoryMap(["leaf", "heart"], channels=4)
    net.save(tmp_path)
    again = CategoryMap.load(tmp_path / FILE_NAME)
    assert again.names == ("leaf", "heart") and again.outputs == 3 and not again.training
    pixels = np.random.default_rng(0).integers(0, 256, (30, 45, 3), dtype=np.uint8)
    found = net.class_map(pixels)
    assert found.shape == (30, 45) and found.min() >= 0 and found.max() <= 2
    assert np.array_equal(found, again.class_map(pixels))
    with pytest.raises(ValueError, match="RGB"):
        net.class_map(pixels[..., :2])
    ObjectCuts(channels=4).save(tmp_path)
    with pytest.raises(CheckpointError, match="object cuts network"):
        CategoryMap.load(tmp_path / CUTS_FILE)
    with pytest.raises(CheckpointError, match="category map network"):
        ObjectCuts.load(tmp_path / FILE_NAME)
    (tmp_path / "bad.safetensors").write_bytes(b"not weights")
    with pytest.raises(CheckpointError, match="category map"):
        CategoryMap.load(tmp_path / "bad.safetensors")
    with pytest.raises(ValueError):
        CategoryMap([])


def test_category_map_learns_the_classes_of_fixed_scenes() -> None:
    torch.manual_seed(0)
    pixels, classes = world_batch(np.random.default_rng(3), 64, 4)
    assert pixels.shape == (4, 3, 64, 64) and classes.shape == (4, 64, 64)
    assert classes.dtype == torch.int64 and int(classes.max()) > 0
    net = CategoryMap([str(k) for k in range(55)], channels=8)
    optimiser = torch.optim.Adam(net.parameters(), 1e-2)
    first = class_loss(net(pixels), classes).item()
    for _ in range(30):
        loss = class_loss(net(pixels), classes)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    assert class_loss(net(pixels), classes).item() < 0.5 * first


def test_fit_world_reports_its_history_and_snapshots() -> None:
    seen: list[int] = []
    net, history = fit_world(
        2, batch=2, size=64, channels=4, progress=False,
        snapshot=lambda model, h: seen.append(h[-1]["step"]),
    )  # fmt: skip
    assert [h["step"] for h in history] == seen == [0, 1]
    assert all(0 <= h["objects"] <= 1 and 0 <= h["background"] <= 1 for h in history)
    assert net.names[0] == "orange" and len(net.names) == 55
    with pytest.raises(ValueError):
        fit_world(0)


def test_fit_category_map_command_writes_the_net_and_sets_the_config(tmp_path: Path) -> None:
    directory = tmp_path / "model"
    shutil.copytree(BUNDLED_MODELS_DIR / "default", directory)
    (directory / FILE_NAME).unlink(missing_ok=True)
    config = json.loads((directory / "pixelreason.json").read_text())
    config["category_map"] = True
    (directory / "pixelreason.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="fit-category-map"):
        PixelReasonModel.from_pretrained(directory)
    config["category_map"] = False
    (directory / "pixelreason.json").write_text(json.dumps(config))
    assert main(["fit-category-map", str(directory), "--steps", "1", "--batch", "1"]) == 0
    assert ModelConfig.load(directory).category_map
    assert CategoryMap.load(directory / FILE_NAME).channels == 32
    assert (directory / "category_map-history.json").is_file()
    assert main(["fit-category-map", str(directory), "--steps", "0"]) == 2
    model = PixelReasonModel.from_pretrained(directory)
    assert model.category_net is not None
    model.save_pretrained(tmp_path / "copy")
    assert (tmp_path / "copy" / FILE_NAME).is_file()


def _answer(text: str, mask: np.ndarray) -> Answer:
    logits = torch.where(torch.as_tensor(mask), 4.0, -4.0)[None]
    return Answer(text, torch.zeros(1, dtype=torch.long), logits, torch.ones(1))


def test_segmenter_moves_a_mask_onto_the_category_its_answer_names() -> None:
    """Given its category map (set on the image's cache), the bundled default moves "the
    yellow leaf" off a heart onto the leaf whose pixels are yellow, and leaves alone a mask
    on a leaf, an answer that names no class, and answers with the map turned off."""
    model, _ = load_model("default")
    model.set_category_map(CategoryMap(["leaf", "heart"], channels=4))
    model.config.category_map = True
    pixels = np.full((20, 30, 3), 90, np.uint8)
    classes = _map()
    pixels[classes == 1] = (230, 50, 40)  # both leaves red,
    pixels[12:17, 22:27] = (240, 220, 40)  # but the small one yellow
    pixels[classes == 2] = (240, 220, 40)  # and the heart yellow
    cache = ImageCache(None, torch.zeros(1), None, pixels=pixels, classes=classes)  # type: ignore[arg-type]
    heart = classes == 2
    yellow = _answer("It is the yellow leaf <SEG>.", heart)
    model._move_to_category(cache, yellow)
    moved = yellow.mask_logits[0].numpy() > 0
    assert np.array_equal(moved, category_regions(heart, classes, 1)[1])
    assert yellow.extras["category_moved"] == 25
    red = _answer("It is the red leaf <SEG>.", heart)
    model._move_to_category(cache, red)
    assert np.array_equal(red.mask_logits[0].numpy() > 0, category_regions(heart, classes, 1)[0])
    for text, mask in [("It is the leaf <SEG>.", classes == 1), ("Sure, it is <SEG>.", heart)]:
        kept = _answer(text, mask)
        model._move_to_category(cache, kept)
        assert "category_moved" not in kept.extras
    model.config.category_map = False
    off = _answer("It is the yellow leaf <SEG>.", heart)
    model._move_to_category(cache, off)
    assert "category_moved" not in off.extras


def test_relation_candidates_are_the_map_regions_of_the_wanted_classes() -> None:
    model, _ = load_model("default")
    model.set_category_map(CategoryMap(["leaf", "heart"], channels=4))
    model.config.category_map = True
    classes = _map()
    image = ImageInputs(torch.zeros(3, 1, 1), None, (20, 30), None)
    cache = ImageCache(image, torch.zeros(1), None, pixels=np.zeros((20, 30, 3), np.uint8))
    cache.classes = classes
    labels = [names[0] for names in model.config.probe_labels]
    leaf, heart = labels.index("leaf"), labels.index("heart")
    found = model._mapped_candidates(cache, {leaf})
    assert [(c, int(region.sum())) for c, _, _, region in found] == [(leaf, 64), (leaf, 25)]
    assert all(np.array_equal(logits.numpy() > 0, region) for _, logits, _, region in found)
    anything = model._mapped_candidates(cache, set())  # no class wanted: all the map finds
    assert sorted({c for c, *_ in anything}) == sorted([leaf, heart]) and len(anything) == 3
    assert model._mapped_candidates(cache, {labels.index("cat")}) == []
    model.config.category_map = False
    assert model._mapped_candidates(cache, {leaf}) == []


def test_bundled_default_has_a_category_map() -> None:
    model, _ = load_model("default")
    assert model.config.category_map and model.category_net is not None
    assert model.category_net.names[0] == "orange" and len(model.category_net.names) == 55


def test_bundled_default_moves_the_leaf_mask_off_the_red_heart() -> None:
    """Seed 0, test 16: "Segment the object that grows on a branch." is answered "the red
    leaf", and its mask lay on the red heart; the map finds the small yellow leaf, the mask
    moves there, and mask names name its colour."""
    model, _ = load_model("default")
    sample = generate_sample(0, "test", 16)
    cache = encode_image(model, sample.image)
    turns = [[Turn(sample.texts[0])]]
    model.config.category_map = False
    try:
        plain = model.answer_batch([cache], turns)[0]
    finally:
        model.config.category_map = True
    answer = model.answer_batch([cache], turns)[0]
    target = sample.target_masks[0].astype(bool)
    before, after = (a.mask_logits[0].numpy() > 0 for a in (plain, answer))
    assert plain.text == "It is the red leaf <SEG>."
    assert answer.text == "It is the yellow leaf <SEG>." and "category_moved" in answer.extras
    assert (before & target).sum() == 0
    assert (after & target).sum() / (after | target).sum() > 0.9


def test_bundled_default_finds_a_requested_class_the_answer_missed() -> None:
    """Seed 0, test 327: "Where is the bird?" was answered with no class named, on the
    lemon; the map has a region of a bird, so the answer grounds it. Where the answer is
    given (the instance question asks for every bird), it stays as the model answers."""
    model, _ = load_model("default")
    sample = generate_sample(0, "test", 327)
    assert sample.texts[0] == "Where is the bird?"
    cache = encode_image(model, sample.image)
    turns = [[Turn(sample.texts[0])]]
    answer = model.answer_batch([cache], turns)[0]
    assert answer.text == "It is the yellow bird <SEG>."
    assert answer.extras["map_request"]["rejected"] == "Sure, the segmentation result is <SEG>."
    target = sample.target_masks[0].astype(bool)
    mask = answer.mask_logits[0].numpy() > 0
    assert (mask & target).sum() / (mask | target).sum() > 0.9
    given = model.answer_batch([cache], turns, starts=["It is <SEG>."])[0]
    assert "map_request" not in given.extras
    model.config.request_threshold = 0.0  # the request check off: no requests read
    assert "map_request" not in model.answer_batch([cache], turns)[0].extras


def test_category_map_option_needs_a_map(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    image = str(Path(__file__).resolve().parents[1] / "examples" / "world.png")
    args = ["segment", image, "Where is the cat?", "--out", str(tmp_path)]
    assert main([*args, "--model", "random:tiny", "--category-map"]) == 2
    assert "fit-category-map" in capsys.readouterr().err
