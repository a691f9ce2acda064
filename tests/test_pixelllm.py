"""PixelLLM's head: per-token points beside the vocabulary head, the location prompt, and
masks from SAM prompted by a target's predicted point and box."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import NONE, ONE, TWO, fresh_tiny, scene, training_samples
from PIL import Image

from pixelreason.cli import main
from pixelreason.config import preset
from pixelreason.data.mixing import MixConfig, WorldMixture
from pixelreason.data.schema import SegSample
from pixelreason.data.world import KINDS, caption_sample, generate_sample
from pixelreason.data.world.captions import describe
from pixelreason.data.world.scene import generate_scene
from pixelreason.errors import InputError
from pixelreason.grounding import interior_point, mask_location, name_owners, token_texts
from pixelreason.models.heads.pixelllm import PixelLLMSettings
from pixelreason.models.location import check_location, patch_centres, sine_cosine
from pixelreason.models.segmenter import PixelReasonModel
from pixelreason.prompting import Turn
from pixelreason.tokens import LOCATION_TOKEN, SEG_TOKEN
from pixelreason.train.losses import LossWeights, location_l1
from pixelreason.train.recipe import load_recipe
from pixelreason.viz import overlay

WEIGHTS = LossWeights(point=2.0)


def fresh_pixelllm(seed: int = 0) -> PixelReasonModel:
    torch.manual_seed(seed)
    return PixelReasonModel.from_config(preset("tiny-pixelllm"))


def fit(model: PixelReasonModel, samples: list[SegSample], steps: int) -> list[float]:
    batch = model.collate(samples)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    losses = []
    for _ in range(steps):
        out = model(batch, WEIGHTS)
        optimizer.zero_grad()
        out.loss.backward()
        optimizer.step()
        losses.append(out.loss.item())
    model.eval()
    return losses


@pytest.fixture(scope="module")
def trained_pixelllm() -> PixelReasonModel:
    model = fresh_pixelllm()
    fit(model, training_samples(), steps=120)
    return model


def _cache(model: PixelReasonModel):
    return model.encode_image(model.preprocessor.prepare_image(scene()[0]))


# -- which words name a target, and where it is -----------------------------------------------
def test_name_owners_take_the_words_before_each_marker() -> None:
    texts = [" The", " striped", " red", " mug", " ", "<SEG>", ",", " because", " it", " is"]
    markers = [t == "<SEG>" for t in texts]
    owners = name_owners(texts, markers, [True] * len(texts))
    assert owners == [-1, 0, 0, 0, -1, 0, -1, -1, -1, -1]
    texts = [" They", " are", " ", "<SEG>", " and", " ", "<SEG>", "."]
    owners = name_owners(texts, [t == "<SEG>" for t in texts], [True] * len(texts))
    assert owners == [-1, -1, -1, 0, -1, -1, 1, -1]
    # Sub-word tokens join their word; tokens outside the answer are never taken (the
    # answer's first token starts a word).
    texts = [" sc", "iss", "ors", " ", "<SEG>"]
    markers = [False] * 4 + [True]
    assert name_owners(texts, markers, [True] * 5) == [0, 0, 0, -1, 0]
    assert name_owners(texts, markers, [False] + [True] * 4) == [-1, 0, 0, -1, 0]


def test_token_texts_rebuild_the_decoded_text() -> None:
    model = fresh_pixelllm()
    tokenizer = model.preprocessor.tokenizer
    answer = f" The spotted blue scissors {SEG_TOKEN}, because they cut paper."
    ids = tokenizer(answer, add_special_tokens=False)["input_ids"]
    texts = token_texts(tokenizer, ids)
    assert len(texts) == len(ids) and "".join(texts) == tokenizer.decode(ids) == answer
    assert SEG_TOKEN in texts


def test_reasonworld_names_are_exactly_the_located_words() -> None:
    """For every query kind and for captions, the tokens given the last target's point decode
    to that target's name (plus its marker)."""
    model = fresh_pixelllm()
    tokenizer = model.preprocessor.tokenizer
    seg = model.head.token_ids[SEG_TOKEN]
    checked = 0
    for world in [generate_sample(5, "train", i, kind=k) for k in KINDS for i in range(4)]:
        turns = [Turn(user, assistant) for user, assistant in world.conversation]
        labels = model.preprocessor.encode(turns).labels.tolist()
        owners = model.head.owners(labels, [i >= 0 for i in labels])
        first = max(owners) + 1 - len(world.target_names)  # the last answer's first target
        for rank, name in enumerate(world.target_names, start=first):
            ids = [i for i, o in zip(labels, owners, strict=True) if o == rank]
            assert ids[-1] == seg
            assert tokenizer.decode(ids[:-1]).strip() == name
            checked += 1
    assert checked > 30
    rng = np.random.default_rng(0)
    for _ in range(5):
        sample = caption_sample(rng, size=64)
        labels = model.preprocessor.encode(sample.turns).labels.tolist()
        owners = model.head.owners(labels, [i >= 0 for i in labels])
        ids = [i for i, o in zip(labels, owners, strict=True) if o == 0]
        words = tokenizer.decode(ids).replace(SEG_TOKEN, "").strip()
        assert sample.turns[0].assistant.startswith(("The ", "It is the ", "That is", "I see"))
        assert f"the {words} {SEG_TOKEN}".lower() in sample.turns[0].assistant.lower()


def test_interior_point_lies_inside_even_for_rings_and_big_masks() -> None:
    ring = np.zeros((60, 60), dtype=bool)
    ring[10:50, 10:50] = True
    ring[20:40, 20:40] = False  # the centroid (30, 30) is in the hole
    x, y = interior_point(ring)
    assert ring[int(y), int(x)]
    square = np.zeros((40, 50), dtype=bool)
    square[10:31, 20:41] = True
    assert interior_point(square) == (30.5, 20.5)
    assert interior_point(np.zeros((5, 5), dtype=bool)) is None
    big = np.zeros((900, 700), dtype=bool)
    big[100:800, 50:650] = True
    big[400:500, 300:400] = False
    x, y = interior_point(big)
    assert big[int(y), int(x)]


def test_mask_location_is_normalised_and_ignores_255() -> None:
    mask = np.zeros((40, 80), dtype=np.uint8)
    mask[10:30, 20:60] = 1
    mask[0:5, 0:5] = 255
    point, box = mask_location(mask)
    np.testing.assert_allclose(box, [0.25, 0.25, 0.75, 0.75])
    assert 0.25 < point[0] < 0.75 and 0.25 < point[1] < 0.75
    assert mask_location(np.zeros((4, 4), dtype=np.uint8)) is None


# -- the point head -----------------------------------------------------------------------------
def test_point_targets_cover_target_words_and_markers_only() -> None:
    model = fresh_pixelllm()
    image, red, blue = scene()
    answer = f"The red square {SEG_TOKEN} and the blue square {SEG_TOKEN}."
    batch = model.collate([SegSample(image, [Turn("Where?", answer)], [red, blue])])
    located = batch.targets["located"][0]
    ids = batch.input_ids[0][located]
    tokenizer = model.preprocessor.tokenizer
    assert tokenizer.decode(ids) == f" red square{SEG_TOKEN} blue square{SEG_TOKEN}"
    first = int((ids == model.head.token_ids[SEG_TOKEN]).nonzero()[0]) + 1  # red's tokens
    points, boxes = batch.targets["points"][0][located], batch.targets["boxes"][0][located]
    for target, rows in ((red, slice(0, first)), (blue, slice(first, None))):
        point, box = mask_location(target)
        torch.testing.assert_close(points[rows], torch.from_numpy(point).expand_as(points[rows]))
        torch.testing.assert_close(boxes[rows], torch.from_numpy(box).expand_as(boxes[rows]))
    assert not batch.targets["located"][0][~(batch.labels[0] >= 0)].any()


def test_point_head_shapes_and_l1_ignores_unlocated_tokens() -> None:
    model = fresh_pixelllm()
    states = torch.randn(2, 7, model.backbone.hidden_size)
    locations = model.head.locate(states)
    assert locations.shape == (2, 7, 6)
    assert float(locations.detach().min()) >= 0 and float(locations.detach().max()) <= 1
    target = torch.rand(2, 7, 6)
    located = torch.zeros(2, 7, dtype=torch.bool)
    located[0, 2] = located[1, 5] = True
    loss = location_l1(locations, target, located)
    expected = (locations - target).abs()[located].mean()
    torch.testing.assert_close(loss, expected)
    changed = locations.clone()
    changed[~located] = 0.5  # predictions at tokens without a target do not matter
    torch.testing.assert_close(location_l1(changed, target, located), loss)
    nothing = location_l1(locations, target, torch.zeros_like(located))
    assert float(nothing.detach()) == 0.0 and nothing.requires_grad


def test_point_loss_is_logged_and_weighted_by_loss_weights() -> None:
    model = fresh_pixelllm().eval()
    batch = model.collate(training_samples())
    with torch.no_grad():
        plain = model(batch)
        weighted = model(batch, LossWeights(point=3.0))
    assert plain.head["point"] > 0 and plain.head["point"] == weighted.head["point"]
    torch.testing.assert_close(
        weighted.loss - plain.loss, torch.tensor(3.0 * plain.head["point"]), rtol=1e-4, atol=1e-4
    )
    assert LossWeights().point == 0.0
    lisa = fresh_tiny().eval()
    with torch.no_grad():
        assert lisa(lisa.collate(training_samples())).head == {}


def test_generation_is_identical_with_and_without_the_point_head() -> None:
    model = fresh_pixelllm().eval()
    cache = _cache(model)
    turns = [Turn(TWO[0])]
    answer = model.answer(cache, turns, max_new_tokens=12)
    # The same prompt through the backbone alone gives the same tokens.
    prompt = model.preprocessor.encode(turns).input_ids[None]
    embeds = model.backbone.embed(prompt, cache.features)
    embeds = model.head.embed_prompt(prompt, embeds, cache.features, [None])
    tokenizer = model.preprocessor.tokenizer
    alone = model.backbone.generate(
        embeds,
        max_new_tokens=12,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    assert torch.equal(answer.token_ids, alone.token_ids)
    # Another point head changes the points, never the words.
    with torch.no_grad():
        for parameter in model.head.locator.parameters():
            parameter.add_(torch.randn_like(parameter))
    again = model.answer(cache, turns, max_new_tokens=12)
    assert torch.equal(again.token_ids, answer.token_ids) and again.text == answer.text
    assert [w for w, _, _ in again.extras["word_points"]] == [
        w for w, _, _ in answer.extras["word_points"]
    ]
    assert again.extras["word_points"] != answer.extras["word_points"]


def test_batched_answers_equal_single_answers(trained_pixelllm: PixelReasonModel) -> None:
    """Left padding moves the placeholders; each row still finds its own, by id."""
    cache = _cache(trained_pixelllm)
    box = torch.tensor([0.5, 0.4, 0.95, 0.95])
    requests = [([Turn(ONE[0])], None), ([Turn(TWO[0])], box), ([Turn(NONE[0])], None)]
    batched = trained_pixelllm.answer_batch(
        [cache] * 3, [turns for turns, _ in requests], locations=[loc for _, loc in requests]
    )
    for (turns, location), together in zip(requests, batched, strict=True):
        alone = trained_pixelllm.answer(cache, turns, location=location)
        assert torch.equal(alone.token_ids, together.token_ids)
        for (w1, x1, y1), (w2, x2, y2) in zip(
            alone.extras["word_points"], together.extras["word_points"], strict=True
        ):
            assert w1 == w2 and abs(x1 - x2) < 0.5 and abs(y1 - y2) < 0.5
        torch.testing.assert_close(alone.mask_logits, together.mask_logits, atol=1e-3, rtol=1e-3)


# -- location prompt ----------------------------------------------------------------------------
def test_location_encoder_shapes_and_distinct_boxes() -> None:
    model = fresh_pixelllm().eval()
    features = _cache(model).features[0]
    encoder = model.head.prompt_encoder
    with torch.no_grad():
        a = encoder(check_location(torch.tensor([0.1, 0.1, 0.4, 0.5])), features)
        b = encoder(check_location(torch.tensor([0.5, 0.4, 0.9, 0.9])), features)
        points = encoder(
            check_location(torch.tensor([[0.2, 0.3], [0.6, 0.7], [0.5, 0.5]])), features
        )
    assert a.shape == b.shape == points.shape == (2, model.backbone.hidden_size)
    assert not torch.allclose(a, b, atol=1e-4) and not torch.allclose(a, points, atol=1e-4)
    assert sine_cosine(torch.rand(5, 2), 12).shape == (5, 48)
    assert patch_centres(16)[5].tolist() == [0.375, 0.375]


@pytest.mark.parametrize(
    "bad", [[0.5, 0.5, 0.2, 0.9], [0.1, 0.1, 1.5, 0.9], [0.1, 0.2, 0.3], [[0.1, 0.2, 0.3]]]
)
def test_bad_locations_are_refused(bad: list) -> None:
    with pytest.raises(ValueError):
        check_location(torch.tensor(bad))


def test_placeholders_follow_the_image_and_are_replaced() -> None:
    model = fresh_pixelllm().eval()
    encoded = model.preprocessor.encode([Turn(ONE[0])])
    ids = encoded.input_ids
    loc = model.head.token_ids[LOCATION_TOKEN]
    image_positions = (ids == model.backbone.image_token_id).nonzero().flatten()
    assert (ids == loc).nonzero().flatten().tolist() == [
        int(image_positions[-1]) + 1,
        int(image_positions[-1]) + 2,
    ]
    cache = _cache(model)
    with torch.no_grad():
        embeds = model.backbone.embed(ids[None], cache.features)
        box = torch.tensor([0.1, 0.2, 0.5, 0.6])
        replaced = model.head.embed_prompt(ids[None], embeds, cache.features, [box])
        default = model.head.embed_prompt(ids[None], embeds, cache.features, [None])
        whole = model.head.embed_prompt(
            ids[None], embeds, cache.features, [torch.tensor([0.0, 0.0, 1.0, 1.0])]
        )
        expected = model.head.prompt_encoder(box, cache.features[0])
    is_loc = ids == loc
    torch.testing.assert_close(replaced[0][is_loc], expected)
    torch.testing.assert_close(replaced[0][~is_loc], embeds[0][~is_loc])
    torch.testing.assert_close(default, whole)
    assert not torch.allclose(default[0][is_loc], replaced[0][is_loc])
    # The location reaches the answer (through the LLM), and only heads with placeholders
    # accept one.
    answer = model.answer(cache, [Turn("What is in this box?")], location=box, max_new_tokens=4)
    assert answer.token_ids.numel() > 0
    lisa = fresh_tiny().eval()
    image = scene()[0]
    with pytest.raises(InputError, match="location"):
        lisa.collate([SegSample(image, [Turn(*NONE)], [], location=np.array([0, 0, 1, 1.0]))])
    with pytest.raises(InputError, match="location"):
        lisa.answer(_cache(lisa), [Turn(NONE[0])], location=box)


def test_caption_source_is_off_by_default_and_collates() -> None:
    assert "caption" not in MixConfig().rates
    mixture = WorldMixture(MixConfig(rates={"caption": 1}, image_size=64))
    samples = [mixture(i) for i in range(6)]
    assert all(s.location is not None and len(s.masks) == 1 for s in samples)
    boxes = [s.location for s in samples if s.location.shape == (4,)]
    assert boxes and all(b.min() >= 0 and b.max() <= 1 for b in boxes)
    model = fresh_pixelllm()
    batch = model.collate(samples)
    assert batch.targets["located"].sum(1).min() >= 2  # a name word and the marker each
    for location, sample in zip(batch.locations, samples, strict=True):
        assert torch.equal(location, torch.from_numpy(sample.location))
    # The answer names the object in the box, with all its attributes.
    boxed = 0
    for seed in range(8):
        sample = caption_sample(np.random.default_rng(seed), size=64)
        objects = generate_scene(np.random.default_rng(seed), size=64).objects
        if sample.location.shape != (4,):
            continue
        box = tuple(int(round(v * 64)) for v in sample.location)
        inside = next(o for o in objects if o.bbox == box)
        expected = f"the {describe(inside)} {SEG_TOKEN}."
        assert sample.turns[0].assistant.lower().endswith(expected.lower())
        assert np.array_equal(sample.masks[0], inside.mask.astype(np.uint8))
        boxed += 1
    assert boxed >= 3


# -- training, masks, checkpoints ---------------------------------------------------------------
def test_settings_reject_bad_options() -> None:
    with pytest.raises(ValueError, match="unknown"):
        PixelLLMSettings.from_args({"colour": 1})
    with pytest.raises(ValueError, match="invalid"):
        PixelLLMSettings.from_args({"location_tokens": 0})


def test_a_few_steps_lower_every_loss_part() -> None:
    model = fresh_pixelllm()
    losses = fit(model, training_samples(), steps=25)
    assert np.mean(losses[-5:]) < 0.5 * np.mean(losses[:5])


def test_pixelllm_recipe_parses_with_captions_and_point_loss() -> None:
    recipe = load_recipe(Path(__file__).parents[1] / "recipes" / "pixelllm.yaml")
    assert recipe.model["preset"] == "small-pixelllm"
    assert recipe.train.loss.point > 0 and recipe.data.rates["caption"] > 0


def test_trained_pixelllm_answers_points_and_masks_land(
    trained_pixelllm: PixelReasonModel,
) -> None:
    cache = _cache(trained_pixelllm)
    _, red, blue = scene()
    for question, answer in (ONE, TWO, NONE):
        out = trained_pixelllm.answer(cache, [Turn(question)])
        assert out.text == answer
        assert out.mask_logits.shape == (answer.count(SEG_TOKEN), *red.shape)
        words = [w for w, _, _ in out.extras["word_points"]]
        assert "".join(words) == answer.replace(" ", "")  # one point per token of the answer
    out = trained_pixelllm.answer(cache, [Turn(TWO[0])])
    markers = [(x, y) for w, x, y in out.extras["word_points"] if w == SEG_TOKEN]
    for (x, y), target, predicted in zip(markers, (red, blue), out.mask_logits > 0, strict=True):
        assert target[int(y), int(x)] == 1  # the marker's point lies on its target
        predicted = predicted.numpy()
        iou = (predicted & (target == 1)).sum() / (predicted | (target == 1)).sum()
        assert iou > 0.7


def test_pixelllm_round_trips_through_save_and_load(
    trained_pixelllm: PixelReasonModel, tmp_path: Path
) -> None:
    trained_pixelllm.save_pretrained(tmp_path / "pixelllm")
    loaded = PixelReasonModel.from_pretrained(tmp_path / "pixelllm")
    assert loaded.config.head == "pixelllm" and loaded.preprocessor.prompt_token_ids
    cache_a, cache_b = _cache(trained_pixelllm), _cache(loaded)
    a = trained_pixelllm.answer(cache_a, [Turn(TWO[0])])
    b = loaded.answer(cache_b, [Turn(TWO[0])])
    assert a.text == b.text and a.extras == b.extras
    torch.testing.assert_close(a.mask_logits, b.mask_logits)


# -- CLI and overlay ----------------------------------------------------------------------------
def test_overlay_draws_word_points() -> None:
    image = scene()[0]
    masks = np.zeros((0, *image.size[::-1]), dtype=bool)
    plain = np.asarray(overlay(image, masks, caption="a red square"))
    words = np.asarray(
        overlay(image, masks, caption="a red square", word_points=[("red", 19.0, 18.0)])
    )
    assert plain.shape == words.shape
    changed = np.argwhere((plain != words).any(-1))
    assert len(changed) and changed[:, 0].max() < image.height  # only inside the picture


def test_segment_command_with_an_untrained_pixelllm(example_png: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    code = main(
        [
            "segment",
            str(example_png),
            TWO[0],
            "--out",
            str(out),
            "--model",
            "random:tiny-pixelllm",
            "--max-new-tokens",
            "6",
        ]
    )
    assert code == 0
    data = json.loads((out / "result.json").read_text())
    assert len(data["word_points"]) >= 1
    word, x, y = data["word_points"][0]
    assert isinstance(word, str) and 0 <= x <= 80 and 0 <= y <= 48
    assert Image.open(out / "overlay.png").size[0] >= 80


def test_segment_box_prompt_and_other_heads(
    example_png: Path, trained_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = ["segment", str(example_png), "What is in this box?", "--max-new-tokens", "4"]
    pixelllm = ["--model", "random:tiny-pixelllm"]
    assert main([*base, *pixelllm, "--box", "8,8,30,28", "--out", str(tmp_path / "a")]) == 0
    assert json.loads((tmp_path / "a" / "result.json").read_text())["word_points"]
    # Other heads: no word points, and no location prompt.
    assert main([*base, "--model", str(trained_dir), "--out", str(tmp_path / "b")]) == 0
    assert "word_points" not in json.loads((tmp_path / "b" / "result.json").read_text())
    capsys.readouterr()
    for argv, message in (
        ([*base, "--model", str(trained_dir), "--box", "8,8,30,28"], "cannot read a location"),
        ([*base, *pixelllm, "--box", "8,8,30"], "four comma-separated"),
        ([*base, *pixelllm, "--box", "8,8,300,28"], "outside the 80x48 image"),
    ):
        assert main([*argv, "--out", str(tmp_path / "c")]) == 2
        assert message in capsys.readouterr().err
