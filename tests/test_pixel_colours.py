"""Pixel colours: reading a mask's colour off the image, and colour requests."""

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
from pixelreason.data.world.categories import colour_labels
from pixelreason.data.world.samples import generate_sample
from pixelreason.data.world.scene import generate_scene
from pixelreason.errors import CheckpointError
from pixelreason.models.pixel_colours import FILE_NAME, PixelColours, colour_bins, fit_world
from pixelreason.models.segmenter import PixelReasonModel
from pixelreason.prompting import Turn
from pixelreason.registry import BUNDLED_MODELS_DIR, load_model

RED, GREEN, GREY = (200, 30, 30), (40, 170, 50), (128, 128, 128)


def _picture(left: tuple[int, int, int], right: tuple[int, int, int]) -> np.ndarray:
    """A 20 x 40 grey picture with a 10 x 10 square of `left` and one of `right`."""
    pixels = np.full((20, 40, 3), GREY, np.uint8)
    pixels[5:15, 5:15] = left
    pixels[5:15, 25:35] = right
    return pixels


def _squares() -> tuple[np.ndarray, np.ndarray]:
    left = np.zeros((20, 40), bool)
    left[5:15, 5:15] = True
    right = np.zeros((20, 40), bool)
    right[5:15, 25:35] = True
    return left, right


def test_colour_bins_quantise_each_channel_and_refuse_other_arrays() -> None:
    pixels = np.array([[[0, 0, 0], [255, 255, 255], [32, 0, 255]]], np.uint8)
    assert colour_bins(pixels, 8).tolist() == [[0, 511, 71]]  # (1 * 8 + 0) * 8 + 7
    with pytest.raises(ValueError, match="RGB"):
        colour_bins(pixels[..., :2])
    with pytest.raises(ValueError, match="RGB"):
        colour_bins(pixels.astype(np.uint16))


def test_reader_counts_labels_and_reads_each_mask() -> None:
    reader = PixelColours(["red cup", "green cup"])
    left, right = _squares()
    reader.add(_picture(RED, GREEN), [left, right], [0, 1])
    # a new picture with the colours swapped: each mask reads its own square's colour
    pixels = _picture(GREEN, RED)
    masks = torch.as_tensor(np.stack([left, right, np.zeros_like(left)])).float()
    read = reader.read(pixels, masks)
    assert read.shape == (3, 3)
    assert read[0].argmax() == 2 and read[1].argmax() == 1  # column 0 is the background
    assert read[0, 2] == 1.0 and read[0, 1] < 0.01
    assert read[2].tolist() == [0.0, 0.0, 0.0]  # an empty mask reads nothing
    # masks at another size than the pixels are scaled by nearest neighbour
    coarse = torch.nn.functional.interpolate(masks[:2, None], size=(10, 20), mode="nearest")
    assert reader.read(pixels, coarse[:, 0]).argmax(1).tolist() == [2, 1]


def test_background_pixels_in_a_mask_cost_every_label_alike() -> None:
    reader = PixelColours(["red cup", "green cup"])
    left, right = _squares()
    reader.add(_picture(RED, GREEN), [left, right], [0, 1])
    # a mask that takes in as much grey background as red square still reads red
    loose = np.zeros((20, 40), bool)
    loose[0:20, 2:18] = True
    read = reader.read(_picture(RED, GREEN), torch.as_tensor(loose)[None].float())
    assert read[0].argmax() == 1


def test_reader_round_trips_and_refuses_a_corrupt_file(tmp_path: Path) -> None:
    reader = PixelColours(["red cup", "green cup"], levels=4, mix=0.2)
    left, right = _squares()
    reader.add(_picture(RED, GREEN), [left, right], [0, 1])
    reader.save(tmp_path)
    loaded = PixelColours.load(tmp_path / FILE_NAME)
    assert loaded.labels == reader.labels and (loaded.levels, loaded.mix) == (4, 0.2)
    assert torch.equal(loaded.counts, reader.counts)
    assert torch.equal(loaded.background, reader.background)
    (tmp_path / FILE_NAME).write_bytes(b"not a safetensors file")
    with pytest.raises(CheckpointError, match="pixel colours"):
        PixelColours.load(tmp_path / FILE_NAME)
    with pytest.raises(ValueError, match="do not fit"):
        PixelColours(["red cup"], counts=torch.zeros(2, 64))


def test_reader_fitted_on_world_scenes_reads_unseen_objects() -> None:
    labels = colour_labels()
    reader = fit_world(labels, 300, seed=3, progress=False)
    rng = np.random.default_rng(12345)
    right = total = 0
    for _ in range(15):
        scene = generate_scene(rng)
        pixels = np.asarray(scene.image.convert("RGB"))
        for obj in scene.objects:
            if len(obj.category.colours) < 2 or not obj.mask.any():
                continue
            read = reader.read(pixels, torch.as_tensor(obj.mask)[None].float())[0]
            options = [f"{colour} {obj.category.name}" for colour in obj.category.colours]
            best = max(options, key=lambda label: float(read[labels.index(label) + 1]))
            right += best == f"{obj.colour} {obj.category.name}"
            total += 1
    assert total > 20
    assert right / total > 0.9


def test_bundled_default_reads_pixel_colours() -> None:
    model, _ = load_model("default")
    assert model.config.colour_pixels and model.config.colour_requests
    assert model.pixel_colours is not None
    assert model.pixel_colours.labels == model.config.colour_probe_labels
    with pytest.raises(CheckpointError, match="labels"):
        model.set_pixel_colours(PixelColours(["red cup"]))


@pytest.mark.parametrize(
    ("index", "query", "without", "with_requests"),
    [
        # the model grounds the other knife; the brown one is there
        (371, "Segment the brown knife.", "The red knife <SEG>.", "It is the brown knife <SEG>."),
        # the colour probe misses the red knife and the request check refuses it
        (
            560,
            "Please highlight the red knife.",
            "There is no red knife in this image.",
            "It is the red knife <SEG>.",
        ),
    ],
)
def test_bundled_default_colour_request_takes_the_asked_colour(
    index, query, without, with_requests
) -> None:
    model, _ = load_model("default")
    sample = generate_sample(0, "test", index)
    assert sample.texts[0] == query
    target = sample.target_masks[0].astype(bool)
    cache = encode_image(model, sample.image)
    model.config.colour_requests = False
    model.config.category_map = False  # whose requests would find the red knife too
    try:
        plain = model.answer_batch([cache], [[Turn(query)]])[0]
    finally:
        model.config.colour_requests = model.config.category_map = True
    asked = model.answer_batch([cache], [[Turn(query)]])[0]
    assert plain.text == without
    assert asked.text == with_requests
    # what the model said before (mask names then name its mask's colour in `plain`)
    assert asked.extras["colour_request"]["rejected"] != asked.text
    assert "colour_request" not in plain.extras
    mask = asked.mask_logits[0].numpy() > 0
    assert (mask & target).sum() / (mask | target).sum() > 0.7


def test_bundled_default_refuses_a_colour_no_instance_has() -> None:
    """ "Where are the red scissors?" of an image whose scissors are black and green: the LLM
    grounds scissors, and no region of the instance answer reads red, so the answer says that
    there are none."""
    model, _ = load_model("default")
    sample = generate_sample(0, "test", 53)
    assert sample.texts[0] == "Where are the red scissors?" and not sample.target_masks
    cache = encode_image(model, sample.image)
    answer = model.answer_batch([cache], [[Turn(sample.texts[0])]])[0]
    assert answer.text == "There are no red scissors in this image."
    assert len(answer.scores) == 0 and answer.mask_logits.shape[0] == 0
    assert answer.extras["colour_request"]["rejected"] == "The red scissors <SEG>."
    model.config.colour_requests = False
    try:
        plain = model.answer_batch([cache], [[Turn(sample.texts[0])]])[0]
    finally:
        model.config.colour_requests = True
    assert plain.text == "The black scissors <SEG>."  # mask names read what it grounds


def test_fit_colours_command_writes_the_reader_and_sets_the_config(tmp_path: Path) -> None:
    directory = tmp_path / "model"
    shutil.copytree(BUNDLED_MODELS_DIR / "default", directory)
    (directory / FILE_NAME).unlink()
    config = json.loads((directory / "pixelreason.json").read_text())
    config["colour_pixels"] = False
    (directory / "pixelreason.json").write_text(json.dumps(config))
    assert main(["fit-colours", str(directory), "--scenes", "3"]) == 0
    assert ModelConfig.load(directory).colour_pixels
    assert PixelColours.load(directory / FILE_NAME).counts.sum() > 0
    # a directory that is no model, or scenes out of range, exit 2 with one line
    assert main(["fit-colours", str(tmp_path / "none"), "--scenes", "3"]) == 2
    assert main(["fit-colours", str(directory), "--scenes", "0"]) == 2


def test_colour_pixels_without_the_reader_file_is_refused(tmp_path: Path) -> None:
    directory = tmp_path / "model"
    shutil.copytree(BUNDLED_MODELS_DIR / "default", directory)
    (directory / FILE_NAME).unlink()
    with pytest.raises(CheckpointError, match="fit-colours"):
        PixelReasonModel.from_pretrained(directory)


def test_save_pretrained_keeps_the_reader(tmp_path: Path) -> None:
    model, _ = load_model("default")
    model.save_pretrained(tmp_path / "copy")
    again = PixelReasonModel.from_pretrained(tmp_path / "copy")
    assert again.config.colour_pixels
    assert torch.equal(again.pixel_colours.counts, model.pixel_colours.counts)


def test_colour_pixels_option_needs_a_reader(capsys: pytest.CaptureFixture[str]) -> None:
    image = Path(__file__).parents[1] / "examples" / "world.png"
    argv = ["segment", str(image), "the red apple", "--model", "default-pixellm"]
    assert main([*argv, "--colour-pixels"]) == 2
    assert "fit-colours" in capsys.readouterr().err
