"""Batched generation (left padding, one `generate` call) answers exactly as one at a time."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import NONE, ONE, TWO, scene
from PIL import Image

from pixelreason.data.world.samples import generate_sample
from pixelreason.models.segmenter import Answer, ImageCache, PixelReasonModel, _pad_prompts
from pixelreason.prompting import Turn
from pixelreason.registry import load_model


def _load(name: str) -> tuple[PixelReasonModel, str]:
    """A model in float32 throughout: these tests compare two ways of computing the same
    thing, and half steps (on by default on a CPU) round only calls on few rows, which
    batching and kept states change."""
    return load_model(name, half_steps=False)


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
    model, _ = _load("random:tiny")
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
    model, _ = _load("random:tiny")
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
    model, _ = _load("random:tiny")
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


def test_pad_prompts_keeps_the_shared_start_in_front() -> None:
    prompts = [torch.tensor([7, 8, 1, 2]), torch.tensor([7, 8, 3, 4, 5, 6])]
    ids, mask = _pad_prompts(prompts, pad_id=0, shared=2)
    assert ids.tolist() == [[7, 8, 0, 0, 1, 2], [7, 8, 3, 4, 5, 6]]
    assert mask.tolist() == [[1, 1, 0, 0, 1, 1], [1, 1, 1, 1, 1, 1]]
    ids, mask = _pad_prompts(prompts, pad_id=0)
    assert ids.tolist() == [[0, 0, 7, 8, 1, 2], [7, 8, 3, 4, 5, 6]]
    assert mask.tolist() == [[0, 0, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1]]


def _padded_after_starts(
    starts: list[torch.Tensor], ends: list[torch.Tensor]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Prompts (1, S + E_i, D) as a batch laid out as `_pad_prompts` lays out ids: each start
    (one length S), then the padding, then each end."""
    kept, length = starts[0].shape[1], starts[0].shape[1] + max(e.shape[1] for e in ends)
    padded = torch.zeros(len(starts), length, starts[0].shape[-1])
    mask = torch.zeros(len(starts), length, dtype=torch.long)
    for row, (start, end) in enumerate(zip(starts, ends, strict=True)):
        padded[row, :kept], mask[row, :kept] = start[0], 1
        padded[row, length - end.shape[1] :], mask[row, length - end.shape[1] :] = end[0], 1
    return padded, mask


def test_generation_from_prefix_states_equals_reading_the_whole_prompt() -> None:
    """Rows of different lengths, padded after a shared start whose states are given."""
    model, _ = _load("random:tiny")
    backbone = model.backbone
    options = {"max_new_tokens": 8, "eos_token_id": 2, "pad_token_id": 0}
    starts = [torch.randn(1, 6, backbone.hidden_size) for _ in range(2)]
    ends = [torch.randn(1, length, backbone.hidden_size) for length in (3, 5)]
    single = [
        backbone.generate(torch.cat([s, e], 1), **options)
        for s, e in zip(starts, ends, strict=True)
    ]
    padded, mask = _padded_after_starts(starts, ends)
    past = backbone.prefix_states(torch.cat(starts))  # one pass for all rows
    kept = [[k.clone() for pair in states for k in pair] for states in past]
    batched = backbone.generate_batch(padded, mask, past=past, **options)
    for one, many in zip(single, batched, strict=True):
        assert many.token_ids.tolist() == one.token_ids.tolist()
        torch.testing.assert_close(many.hidden, one.hidden, atol=1e-4, rtol=1e-4)
    again = backbone.generate_batch(padded, mask, past=past, **options)  # states unchanged
    for states, copies in zip(past, kept, strict=True):
        now = [k for pair in states for k in pair]
        assert all(torch.equal(k, c) for k, c in zip(now, copies, strict=True))
    assert [g.token_ids.tolist() for g in again] == [g.token_ids.tolist() for g in batched]


def test_passes_after_prefix_states_equal_reading_the_whole_prompt() -> None:
    """The teacher-forced pass and the continuation scorer, given a shared start's states,
    read only what follows it and give what reading everything gives."""
    model, _ = _load("random:tiny")
    backbone = model.backbone
    starts = torch.randn(2, 6, backbone.hidden_size)
    ends = torch.randn(2, 4, backbone.hidden_size)
    whole = backbone(torch.cat([starts, ends], 1), None)
    past = backbone.prefix_states(starts)
    after = backbone(ends, None, past)
    assert after.hidden.shape[1] == 4
    torch.testing.assert_close(after.hidden, whole.hidden[:, 6:], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(after.logits, whole.logits[:, 6:], atol=1e-4, rtol=1e-4)
    with pytest.raises(ValueError, match="no attention mask"):
        backbone(ends, torch.ones(2, 4, dtype=torch.long), past)
    texts = [torch.tensor([5, 9, 3]), torch.tensor([7])]
    read = backbone.continuation_logprobs(torch.cat([starts[0], ends[0]]), texts)
    assert backbone.continuation_logprobs(ends[0], texts, past[0]) == pytest.approx(read, abs=1e-4)
    assert backbone(ends, None, past).hidden.shape == after.hidden.shape  # past left as it was
    options = {"max_new_tokens": 3, "eos_token_id": 2, "pad_token_id": 0}
    prompt = torch.cat([starts, ends], 1)
    (generation, _) = backbone.generate_batch(prompt, None, keep_prompt_states=True, **options)
    layers = backbone.model.config.text_config.num_hidden_layers
    assert [keys.shape[2] for keys, _ in generation.prompt_states] == [9] * layers  # but the last
    last = backbone(prompt[:1, -1:], None, [generation.prompt_states])
    torch.testing.assert_close(last.hidden[0], whole.hidden[0, -1:], atol=1e-4, rtol=1e-4)
    with pytest.raises(ValueError, match="without a forced prefix"):
        backbone.generate_batch(prompt, None, keep_prompt_states=True, prefix=[[5], [6]], **options)


@pytest.mark.parametrize("name", ["random:tiny", "random:tiny-pixelllm"])
def test_answers_from_kept_image_states_equal_answers_without(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The image's part of the prompt is read once and kept with its cache; answers are
    those of reading every prompt whole."""
    model, _ = _load(name)
    caches = _caches(model, _images())
    first = model.answer_batch(caches, CONVERSATIONS)
    assert all(len(cache.prefix_states) == 1 for cache in caches)
    calls: list[int] = []
    reads = model.backbone.prefix_states
    monkeypatch.setattr(
        model.backbone, "prefix_states", lambda e: calls.extend([1] * len(e)) or reads(e)
    )
    kept = model.answer_batch(caches, CONVERSATIONS)
    assert calls == []  # the second question about each image reuses its states
    model.kept_states_bytes = 0  # read for each question, kept with no image
    uncached = _caches(model, _images())
    assert model.answer_batch(uncached, CONVERSATIONS)[0].text == first[0].text
    assert all(not cache.prefix_states for cache in uncached) and len(calls) == 3
    model.reuse_states = False
    whole = model.answer_batch(_caches(model, _images()), CONVERSATIONS)
    for one, two, three in zip(first, kept, whole, strict=True):
        _assert_same(three, one)
        _assert_same(three, two)


def test_image_prefix_stops_where_prompts_differ_or_a_placeholder_comes_first() -> None:
    model, _ = _load("random:tiny-pixelllm")
    image = model.backbone.image_token_id
    location = model.head.token_ids["<LOC>"]
    prompt = torch.tensor([1, 5, image, image, location, 9, 10])
    assert model._image_prefix([prompt, torch.tensor([1, 5, image, image, 11])]) == 4
    assert model._image_prefix([prompt, torch.tensor([1, 6, image, image, 11])]) == 0
    assert model._image_prefix([prompt, torch.tensor([1, 5, image, image])]) == 0  # no text
    assert model._image_prefix([torch.tensor([1, location, image, 9])]) == 0
    assert model._image_prefix([torch.tensor([1, 5, 9])]) == 0  # no image


def test_rows_with_forced_starts_of_different_lengths_equal_each_forced_alone() -> None:
    model, _ = _load("random:tiny")
    backbone = model.backbone
    options = {"max_new_tokens": 5, "eos_token_id": 10**6, "pad_token_id": 0}
    starts = [torch.randn(1, 4, backbone.hidden_size) for _ in range(3)]
    ends = [torch.randn(1, length, backbone.hidden_size) for length in (2, 4, 3)]
    forced = [[7, 8, 9], [], [11]]
    single = [
        backbone.generate(torch.cat([s, e], 1), **options)
        for s, e in zip(starts, ends, strict=True)
    ]
    padded, mask = _padded_after_starts(starts, ends)
    past = backbone.prefix_states(torch.cat(starts))  # one pass for all rows
    batched = backbone.generate_batch(padded, mask, past=past, prefix=forced, **options)
    for row, (ids, many) in enumerate(zip(forced, batched, strict=True)):
        alone = backbone.generate_batch(
            torch.cat([starts[row], ends[row]], 1), None, prefix=[ids], **options
        )[0]
        assert many.token_ids.tolist()[: len(ids)] == ids
        assert many.token_ids.tolist() == alone.token_ids.tolist()
        assert many.hidden.shape == (len(ids) + 5, backbone.hidden_size)
        torch.testing.assert_close(many.hidden, alone.hidden, atol=1e-4, rtol=1e-4)
    assert batched[1].token_ids.tolist() == single[1].token_ids.tolist()
    with pytest.raises(ValueError, match="2 prefixes for 3"):
        backbone.generate_batch(padded, mask, prefix=forced[:2], **options)


def test_checks_from_kept_prompt_states_answer_as_reading_every_prompt_whole() -> None:
    """The bundled default's checks (colour, presence, knowledge, request, group members, the
    ranking part) start their passes and decodings from the answer's prompt states, here in
    one padded batch: the same answers as reading every prompt whole."""
    model, _ = _load("default")
    samples = [generate_sample(0, "val", i) for i in (0, 1, 2, 13, 78)]
    samples += [generate_sample(0, "zeroshot", i) for i in (105, 113)]
    images = [sample.image for sample in samples]
    turns = [[Turn(sample.texts[0])] for sample in samples]
    kept = model.answer_batch(_caches(model, images), turns)
    checks = [
        "colour_check",
        "presence_check",
        "knowledge_check",
        "request_check",
        "group_members",
        "knowledge_ranking",
    ]
    fired = {key for answer in kept for key in answer.extras}
    assert set(checks) <= fired
    model.reuse_states = False
    whole = model.answer_batch(_caches(model, images), turns)
    for one, two in zip(whole, kept, strict=True):
        _assert_same(one, two)
        assert one.extras.keys() == two.extras.keys()


def test_the_cache_goes_by_this_transformers_name() -> None:
    """transformers 5.24 renamed `past_key_values` to `cache` (the old name warns, and goes
    in 5.40): every pass that hands the LLM a cache uses the name this version takes."""
    model, _ = _load("random:tiny")
    backbone = model.backbone
    options = {"max_new_tokens": 3, "eos_token_id": 2, "pad_token_id": 0}
    starts, ends = torch.randn(2, 6, backbone.hidden_size), torch.randn(2, 4, backbone.hidden_size)
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*past_key_values.*")
        past = backbone.prefix_states(starts)
        backbone(ends, None, past)
        backbone.continuation_logprobs(ends[0], [torch.tensor([5, 9])], past[0])
        prompt = torch.cat([starts, ends], 1)
        (kept, _) = backbone.generate_batch(prompt, None, keep_prompt_states=True, **options)
        backbone.generate_batch(ends, None, past=past, **options)
    assert len(kept.prompt_states) == model.backbone.config.text_config.num_hidden_layers
