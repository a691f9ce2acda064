from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import NONE, ONE, TWO, scene
from pycocotools import mask as coco_mask

from pixelreason import Segmenter
from pixelreason.api import boxes_from_masks, save_result
from pixelreason.errors import CheckpointError, InputError


@pytest.fixture
def segmenter(trained_dir: Path) -> Segmenter:
    return Segmenter.from_pretrained(trained_dir)


def test_segment_returns_text_masks_scores_boxes(segmenter: Segmenter) -> None:
    segmenter.set_image(scene()[0])
    result = segmenter.segment(TWO[0])
    assert result.text == TWO[1]
    assert result.masks.shape == (2, 48, 80) and result.masks.dtype == bool
    assert result.scores.shape == (2,) and result.boxes.shape == (2, 4)
    none = segmenter.segment(NONE[0])
    assert none.masks.shape == (0, 48, 80) and none.boxes.shape == (0, 4)


def test_cached_image_gives_results_identical_to_a_cold_run(trained_dir: Path) -> None:
    warm = Segmenter.from_pretrained(trained_dir)
    warm.set_image(scene()[0])
    warm.segment(ONE[0])  # the cache has served one query already
    cached = warm.segment(TWO[0])
    cold = Segmenter.from_pretrained(trained_dir)
    cold.set_image(scene()[0])
    fresh = cold.segment(TWO[0])
    assert cached.text == fresh.text
    np.testing.assert_array_equal(cached.masks, fresh.masks)
    np.testing.assert_array_equal(cached.scores, fresh.scores)


def test_set_image_encodes_once_per_image(segmenter: Segmenter, monkeypatch) -> None:
    calls = []
    original = segmenter.model.backbone.encode_image_layers

    def counting(pixels: torch.Tensor, layers=()) -> tuple:
        calls.append(pixels.shape)
        return original(pixels, layers)

    monkeypatch.setattr(segmenter.model.backbone, "encode_image_layers", counting)
    segmenter.set_image(scene()[0])
    for question in (ONE[0], TWO[0], NONE[0]):
        segmenter.segment(question)
    assert len(calls) == 1


def test_chat_keeps_the_conversation(segmenter: Segmenter) -> None:
    segmenter.set_image(scene()[0])
    first = segmenter.chat(ONE[0])
    second = segmenter.chat(TWO[0])
    assert [t.user for t in segmenter.history] == [ONE[0], TWO[0]]
    assert segmenter.history[0].assistant == first.text
    assert segmenter.history[1].assistant == second.text
    segmenter.reset()
    assert segmenter.history == []
    segmenter.set_image(scene()[0])
    assert segmenter.history == []


def test_bad_queries_and_missing_image(segmenter: Segmenter) -> None:
    with pytest.raises(InputError, match="no image"):
        segmenter.segment("where?")
    segmenter.set_image(scene()[0])
    with pytest.raises(InputError, match="empty"):
        segmenter.segment("  ")
    with pytest.raises(InputError, match="too long"):
        segmenter.segment("why " * 1000)
    with pytest.raises(InputError, match="reserved token"):
        segmenter.segment("is <SEG> a token?")


def test_unknown_model_names_are_refused() -> None:
    with pytest.raises(CheckpointError, match="unknown model"):
        Segmenter.from_pretrained("no-such-model")
    with pytest.raises(CheckpointError, match="not found"):
        Segmenter.from_pretrained("./no/such/dir")


def test_boxes_from_masks() -> None:
    masks = np.zeros((2, 6, 8), dtype=bool)
    masks[0, 1:4, 2:7] = True
    np.testing.assert_array_equal(boxes_from_masks(masks), [[2, 1, 7, 4], [0, 0, 0, 0]])


def test_saved_json_decodes_back_to_the_masks(segmenter: Segmenter, tmp_path: Path) -> None:
    image = scene()[0]
    segmenter.set_image(image)
    result = segmenter.segment(TWO[0])
    written = save_result(result, image, tmp_path)
    import json

    data = json.loads(written["json"].read_text())
    assert data["text"] == TWO[1] and len(data["targets"]) == 2
    for target, mask in zip(data["targets"], result.masks, strict=True):
        rle = {"size": target["mask_rle"]["size"], "counts": target["mask_rle"]["counts"].encode()}
        np.testing.assert_array_equal(coco_mask.decode(rle).astype(bool), mask)
        assert (tmp_path / target["mask_file"]).is_file()
    assert written["overlay"].is_file()
