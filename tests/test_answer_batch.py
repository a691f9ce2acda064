"""Batched generation (left padding, one `generate` call) answers exactly as one at a time."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import NONE, ONE, TWO, scene
from PIL import Image

from pixelreason.models.segmenter import Answer, ImageCache, PixelReasonModel
from pixelreason.prompting import Turn
from pixelreason.registry import load_model


def _images() -> list[Image.Image]:
    image = scene()[0]
    noise = np.random.default_rng(1).integers(0, 255, (30, 50, 3), dtype=np.uint8)
    return [image, image.transpose(Image.Transpose.FLIP_LEFT_RIGHT), Image.fromarray(noise)]


def _caches(model: PixelReasonModel, images: list[Image.Image]) -> list[ImageCache]:
    return [model.encode_image(model.preprocessor.prepare_image(image)) for image in images]


def _assert_same(single: Answer, batched: Answer) -> None:
    assert batched.token_ids.tolist() == single.token_ids.tolist()
    assert batched.text == single.text
    assert batched.mask_logits.shape == single.mask_logits.shape
    torch.testing.assert_close(batched.mask_logits, single.mask_logits, atol=1e-4, rtol=1e-4)
    assert torch.equal(batched.mask_logits > 0, single.mask_logits > 0)
    torch.testing.assert_close(batched.scores, single.scores, atol=1e-5, rtol=1e-5)


# Prompts of different lengths, so the batch needs left padding; the last is a second turn.
CONVERSATIONS = [
    [Turn("Where is the red square?")],
    [Turn("What could you cut paper with, if you had to pick one thing in this picture?")],
    [Turn("hi", "It is <SEG>."), Turn("and the other one?")],
]


def test_random_model_batched_answers_equal_single_answers() -> None:
    model, _ = load_model("random:tiny")
    caches = _caches(model, _images())
    single = [
        model.answer(cache, turns) for cache, turns in zip(caches, CONVERSATIONS, strict=True)
    ]
    batched = model.answer_batch(caches, CONVERSATIONS)
    assert len(batched) == 3
    for one, many in zip(single, batched, strict=True):
        _assert_same(one, many)


def test_batched_generation_returns_the_states_single_generation_returns() -> None:
    """The states the head reads masks from, not only the tokens, survive left padding."""
    model, _ = load_model("random:tiny")
    tokenizer = model.preprocessor.tokenizer
    options = {
        "max_new_tokens": 8,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
    }
    embeds = [torch.randn(1, length, model.backbone.hidden_size) for length in (5, 9, 7)]
    single = [model.backbone.generate(e, **options) for e in embeds]
    padded = torch.zeros(3, 9, model.backbone.hidden_size)
    mask = torch.zeros(3, 9, dtype=torch.long)
    for row, e in enumerate(embeds):
        padded[row, 9 - e.shape[1] :] = e[0]
        mask[row, 9 - e.shape[1] :] = 1
    batched = model.backbone.generate_batch(padded, mask, **options)
    for one, many in zip(single, batched, strict=True):
        assert many.token_ids.tolist() == one.token_ids.tolist()
        torch.testing.assert_close(many.hidden, one.hidden, atol=1e-4, rtol=1e-4)


def test_trained_model_batched_answers_equal_single_answers(trained_dir: Path) -> None:
    """Answers of different lengths (two, one and no targets) finish at different steps."""
    model = PixelReasonModel.from_pretrained(trained_dir)
    images = [scene()[0], scene()[0].transpose(Image.Transpose.FLIP_LEFT_RIGHT), scene()[0]]
    conversations = [[Turn(TWO[0])], [Turn(ONE[0])], [Turn(*ONE), Turn(NONE[0])]]
    caches = _caches(model, images)
    single = [
        model.answer(cache, turns) for cache, turns in zip(caches, conversations, strict=True)
    ]
    batched = model.answer_batch(caches, conversations)
    assert [a.text for a in single[:2]] == [TWO[1], ONE[1]]
    assert [len(a.mask_logits) for a in batched[:2]] == [2, 1]
    for one, many in zip(single, batched, strict=True):
        _assert_same(one, many)


def test_answer_batch_refuses_mismatched_lengths_and_right_padding() -> None:
    model, _ = load_model("random:tiny")
    cache = _caches(model, _images()[:1])[0]
    with pytest.raises(ValueError, match="2 images for 1"):
        model.answer_batch([cache, cache], CONVERSATIONS[:1])
    assert model.answer_batch([], []) == []
    embeds = torch.zeros(1, 4, model.backbone.hidden_size)
    with pytest.raises(ValueError, match="left-padded"):
        model.backbone.generate_batch(
            embeds,
            torch.tensor([[1, 1, 1, 0]]),
            max_new_tokens=2,
            eos_token_id=2,
            pad_token_id=0,
        )
