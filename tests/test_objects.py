"""Object cuts: the contact band, cutting masks along it, and the segmenter's use of it."""

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
from pixelreason.data.schema import SegSample
from pixelreason.data.world.samples import generate_sample
from pixelreason.errors import CheckpointError
from pixelreason.eval.metrics import hungarian_multi_target_iou
from pixelreason.models.instances import split_duplicates, take_regions
from pixelreason.models.objects import (
    FILE_NAME,
    ObjectCuts,
    band_loss,
    contact_band,
    cut_regions,
    fit_world,
    foreign_pieces,
    needed_regions,
    world_batch,
)
from pixelreason.models.segmenter import Answer, PixelReasonModel
from pixelreason.prompting import Turn
from pixelreason.registry import BUNDLED_MODELS_DIR, load_model


def _touching() -> tuple[np.ndarray, np.ndarray]:
    """Two 10 x 10 squares side by side in a 20 x 30 frame, touching along one column."""
    left = np.zeros((20, 30), bool)
    left[5:15, 3:13] = True
    right = np.zeros((20, 30), bool)
    right[5:15, 13:23] = True
    return left, right


def test_contact_band_holds_the_pixels_where_objects_touch() -> None:
    left, right = _touching()
    band = contact_band([left, right])
    assert set(np.nonzero(band)[1].tolist()) == {12, 13}  # the last column of one, first of other
    assert band[5:15, 12].all() and band[5:15, 13].all()
    apart = np.roll(right, 3, axis=1)  # a gap of three columns
    assert not contact_band([left, apart]).any()
    with pytest.raises(ValueError):
        contact_band([])


def test_cut_regions_parts_touching_objects_and_gives_the_band_back() -> None:
    left, right = _touching()
    union = left | right
    pieces = cut_regions(union, contact_band([left, right]), 0.3)
    assert len(pieces) == 2
    assert {tuple(map(int, np.nonzero(p)[1][[0, -1]])) for p in pieces} == {(3, 12), (13, 22)}
    assert np.array_equal(pieces[0] | pieces[1], union) and not (pieces[0] & pieces[1]).any()
    # a cut that leaves one piece of any size (a crumb) keeps the mask's own components
    crumb = np.zeros_like(union)
    crumb[5:15, 20] = True
    assert len(cut_regions(union, crumb, 0.3)) == 1
    # a piece under the share of the largest is not an object
    small = left.copy()
    small[5:15, 3:11] = False  # two columns left of the left square
    assert len(cut_regions(small | right, contact_band([small, right]), 0.3)) == 1


def test_needed_regions_cut_only_where_the_regions_are_too_few() -> None:
    left, right = _touching()
    cuts = contact_band([left, right])
    union = left | right
    assert len(needed_regions(union, cuts, 1, 0.1)) == 1  # one region, one wanted
    assert len(needed_regions(union, cuts, 2, 0.1)) == 2
    assert len(needed_regions(union, None, 2, 0.1)) == 1  # no cuts: as it is
    assert needed_regions(np.zeros_like(union), cuts, 2, 0.1) == []


def test_take_regions_and_split_duplicates_use_the_cuts() -> None:
    left, right = _touching()
    cuts = contact_band([left, right])
    union = torch.as_tensor(left | right)
    found = torch.where(union, 5.0, -5.0)
    logits = torch.stack([found, found])  # two targets, both on both squares
    out, regions, _ = take_regions(logits, [0, 1], found, cuts=cuts)
    assert regions == (100, 100)
    masks = (out > 0).numpy()
    assert {tuple(np.nonzero(m)[1][[0, -1]].tolist()) for m in masks} == {(3, 12), (13, 22)}
    plain, regions, _ = take_regions(logits, [0, 1], found)
    assert regions == (200,)  # one region: both masks still cover both squares
    assert all(np.array_equal(m, (left | right)) for m in (plain > 0).numpy())
    split, groups = split_duplicates(logits, 0.5, cuts=cuts)
    assert len(groups) == 1 and groups[0].regions == (100, 100)
    assert not ((split[0] > 0) & (split[1] > 0)).any()
    assert split_duplicates(logits, 0.5)[1] == []


def test_foreign_pieces_drop_a_touching_object_of_another_colour() -> None:
    left, right = _touching()
    bins = np.where(left, 1, np.where(right, 2, 0))  # colour bin 1 left, 2 right
    log_probs = np.log(
        np.array([[0.1, 0.8, 0.1], [0.1, 0.1, 0.8]])  # label 0 is bin 1's, label 1 bin 2's
    )
    cuts = contact_band([left, right])
    kept = foreign_pieces(left | right, cuts, bins, log_probs, [0])
    assert kept is not None and np.array_equal(kept, left)
    assert np.array_equal(foreign_pieces(left | right, cuts, bins, log_probs, [1]), right)
    # both read as the target (every colour of its category): nothing dropped
    assert foreign_pieces(left | right, cuts, bins, log_probs, [0, 1]) is None
    assert foreign_pieces(left, cuts, bins, log_probs, [1]) is None  # one piece


def test_object_cuts_round_trip_and_refuse_bad_input(tmp_path: Path) -> None:
    torch.manual_seed(0)
    net = ObjectCuts(channels=4)
    net.save(tmp_path)
    again = ObjectCuts.load(tmp_path / FILE_NAME)
    assert again.channels == 4 and not again.training
    pixels = np.random.default_rng(0).integers(0, 256, (30, 45, 3), dtype=np.uint8)
    assert net.cut_map(pixels).shape == (30, 45)  # padded to multiples of 4 and cropped
    assert np.array_equal(net.cut_map(pixels), again.cut_map(pixels))
    with pytest.raises(ValueError, match="RGB"):
        net.cut_map(pixels[..., :2])
    (tmp_path / "bad.safetensors").write_bytes(b"not weights")
    with pytest.raises(CheckpointError, match="object cuts"):
        ObjectCuts.load(tmp_path / "bad.safetensors")


def test_object_cuts_learn_the_band_of_fixed_scenes() -> None:
    torch.manual_seed(0)
    pixels, band = world_batch(np.random.default_rng(3), 64, 4)
    assert pixels.shape == (4, 3, 64, 64) and band.shape == (4, 1, 64, 64)
    net = ObjectCuts(channels=8)
    optimiser = torch.optim.Adam(net.parameters(), 1e-2)
    first = band_loss(net(pixels), band).item()
    for _ in range(30):
        loss = band_loss(net(pixels), band)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    assert band_loss(net(pixels), band).item() < 0.7 * first


def test_fit_world_reports_its_history() -> None:
    net, history = fit_world(2, batch=2, size=64, channels=4, progress=False)
    assert [h["step"] for h in history] == [0, 1]
    assert all(np.isfinite(h["loss"]) and 0 <= h["precision"] <= 1 for h in history)
    with pytest.raises(ValueError):
        fit_world(0)


def test_fit_object_cuts_command_writes_the_net_and_sets_the_config(tmp_path: Path) -> None:
    directory = tmp_path / "model"
    shutil.copytree(BUNDLED_MODELS_DIR / "default", directory)
    (directory / FILE_NAME).unlink(missing_ok=True)
    config = json.loads((directory / "pixelreason.json").read_text())
    config["object_cuts"] = False
    (directory / "pixelreason.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError):  # an object_cuts config needs its network
        config["object_cuts"] = True
        (directory / "pixelreason.json").write_text(json.dumps(config))
        PixelReasonModel.from_pretrained(directory)
    assert main(["fit-object-cuts", str(directory), "--steps", "1", "--batch", "1"]) == 0
    assert ModelConfig.load(directory).object_cuts
    assert ObjectCuts.load(directory / FILE_NAME).channels == 24
    assert (directory / "object_cuts-history.json").is_file()
    assert main(["fit-object-cuts", str(directory), "--steps", "0"]) == 2
    model = PixelReasonModel.from_pretrained(directory)
    model.save_pretrained(tmp_path / "copy")
    assert (tmp_path / "copy" / FILE_NAME).is_file()


def test_bundled_default_has_object_cuts() -> None:
    model, _ = load_model("default")
    assert model.config.object_cuts and model.cut_net is not None


def _without_and_with_cuts(model: PixelReasonModel, sample: SegSample) -> tuple[Answer, Answer]:
    """The model's answers to the sample's query with object cuts off, then on."""
    cache = encode_image(model, sample.image)
    turns = [[Turn(sample.texts[0])]]
    model.config.object_cuts = False
    try:
        plain = model.answer_batch([cache], turns)[0]
    finally:
        model.config.object_cuts = True
    return plain, model.answer_batch([cache], turns)[0]


def test_bundled_default_drops_the_lamp_a_fish_mask_spilled_onto() -> None:
    """Seed 21, test 508: the answer's fish mask also covers the lamp the fish touches; cut
    along the band, the lamp's pieces read as no fish and go, and the mask is the fish."""
    model, _ = load_model("default")
    sample = generate_sample(21, "test", 508)
    plain, answer = _without_and_with_cuts(model, sample)
    target = sample.target_masks[0].astype(bool)
    before, after = (a.mask_logits[0].numpy() > 0 for a in (plain, answer))
    assert answer.text == plain.text == "The red fish <SEG>."
    assert answer.extras["spill_dropped"] == int(before.sum() - after.sum()) > 100
    assert (after & target).sum() / (after | target).sum() > 0.9
    assert (before & target).sum() / (before | target).sum() < 0.8


def test_bundled_default_parts_two_touching_mugs() -> None:
    """Seed 23, test 2268: two mugs touch, so the instance question's mask of the mugs is
    one region and both targets were both mugs; cut along the band, each is one mug."""
    model, _ = load_model("default")
    sample = generate_sample(23, "test", 2268)
    plain, answer = _without_and_with_cuts(model, sample)
    targets = [t.astype(np.uint8) for t in sample.target_masks]
    assert len(targets) == 2 and len(plain.scores) == len(answer.scores) == 2
    assert plain.text == "The yellow mug <SEG> and the yellow mug <SEG>."
    assert answer.text == "The black mug <SEG> and the yellow mug <SEG>."  # mask names
    assert len(answer.extras["instance_question"][0]["region_pixels"]) == 2
    assert hungarian_multi_target_iou(list(plain.mask_logits.numpy() > 0), targets) < 0.7
    assert hungarian_multi_target_iou(list(answer.mask_logits.numpy() > 0), targets) > 0.9
