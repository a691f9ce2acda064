"""Region snap: a coarse mask's edge moves to the image's own colour edges."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from pixelreason.api import Segmenter
from pixelreason.data.world.samples import generate_sample
from pixelreason.models.snap import MAX_SIDE, image_regions, snap_logits, thumbnail


def _scene(size: int = 96) -> tuple[np.ndarray, np.ndarray]:
    """A red square and a blue disc on a noisy grey background, and the square's mask."""
    rng = np.random.default_rng(0)
    pixels = (128 + rng.normal(0, 6, (size, size, 3))).clip(0, 255).astype(np.uint8)
    square = np.zeros((size, size), bool)
    square[20:50, 24:58] = True
    pixels[square] = (200, 30, 30)
    yy, xx = np.mgrid[:size, :size]
    pixels[(yy - 70) ** 2 + (xx - 70) ** 2 < 12**2] = (30, 40, 210)
    return pixels, square


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / (a | b).sum())


def test_a_coarse_mask_snaps_to_the_object():
    pixels, square = _scene()
    # the decoder's kind of mask: a 4x coarser, blurred, shifted copy of the truth
    coarse = torch.as_tensor(square[::4, ::4], dtype=torch.float32)[None, None] * 8 - 4
    logits = torch.nn.functional.interpolate(coarse, size=square.shape, mode="bilinear")[0]
    logits = torch.roll(logits, shifts=(2, -2), dims=(1, 2))
    regions = image_regions(pixels, scale=300)
    assert regions.shape == square.shape and regions.dtype == np.int32
    # the square is a few regions of its own: none crosses its edge
    inside = set(np.unique(regions[square]).tolist())
    assert not inside & set(np.unique(regions[~square]).tolist())
    snapped = snap_logits(logits, regions, share=0.3)
    mask = snapped[0].numpy() > 0
    before, after = _iou(logits[0].numpy() > 0, square), _iou(mask, square)
    # the whole square, and only some specks of the noisy background beside it
    assert before < 0.8 and after > 0.9 and mask[square].all()
    # a region is in the mask exactly where its mean probability reaches the share
    probs = torch.sigmoid(logits[0]).numpy()
    for label in np.unique(regions)[:50]:
        where = regions == label
        assert (snapped[0].numpy()[where] > 0).all() == (probs[where].mean() >= 0.3)
        assert len(np.unique(snapped[0].numpy()[where])) == 1


def test_snap_checks_its_inputs_and_keeps_no_masks():
    regions = np.zeros((8, 8), np.int64)
    empty = torch.zeros((0, 8, 8))
    assert snap_logits(empty, regions, 0.3) is empty
    with pytest.raises(ValueError, match="share"):
        snap_logits(torch.zeros((1, 8, 8)), regions, 1.0)
    with pytest.raises(ValueError, match="mask size"):
        snap_logits(torch.zeros((1, 8, 32)), regions, 0.3)  # another image's shape
    with pytest.raises(ValueError, match="RGB pixels"):
        image_regions(np.zeros((8, 8), np.uint8), 300)


def test_large_images_are_segmented_small_and_scaled_back():
    pixels, square = _scene(size=96)
    big = Image.fromarray(pixels).resize((1152, 864), Image.Resampling.NEAREST)  # x12, x9
    small = thumbnail(big)
    assert small.shape == (384, MAX_SIDE, 3) and small.dtype == np.uint8
    regions = image_regions(small, scale=300)
    assert regions.shape == (384, MAX_SIDE)
    # a coarse mask of the square at full size snaps to the square at full size
    truth = np.kron(square, np.ones((9, 12), bool))
    coarse = torch.as_tensor(truth[::16, ::16], dtype=torch.float32)[None, None] * 8 - 4
    logits = torch.nn.functional.interpolate(coarse, size=truth.shape, mode="bilinear")[0]
    snapped = snap_logits(logits, regions, share=0.3)[0].numpy() > 0
    assert snapped.shape == truth.shape and snapped[truth].all() and _iou(snapped, truth) > 0.9
    assert thumbnail(Image.fromarray(pixels)).shape == pixels.shape  # small images as they are


def test_bundled_default_snaps_its_masks_once_per_image():
    segmenter = Segmenter.from_pretrained("default")
    assert segmenter.model.config.snap_scale == 300
    sample = generate_sample(1, "val", 7, kind="explicit")  # "Segment the green bottle."
    segmenter.set_image(sample.image)
    snapped = segmenter.segment(sample.texts[0])
    cache = segmenter._cache
    assert list(cache.regions) == [300] and cache.pixels is not None
    regions = cache.regions[300]
    segmenter.model.config.snap_scale = 0.0
    raw = segmenter.segment(sample.texts[0])
    assert snapped.text == raw.text and len(raw.masks) == 1
    truth = sample.target_masks[0].astype(bool)
    assert _iou(snapped.masks[0], truth) > _iou(raw.masks[0], truth) + 0.05
    assert _iou(snapped.masks[0], truth) > 0.95  # 0.84 unsnapped
    segmenter.model.config.snap_scale = 300.0
    segmenter.segment("Where is the bottle?")
    assert cache.regions[300] is regions  # found once, kept with the image
