"""The request check: a query for one class by name is answered as the probes see the image."""

from __future__ import annotations

import numpy as np
import torch

from pixelreason.config import preset
from pixelreason.data.world.categories import class_labels, colour_labels
from pixelreason.data.world.samples import generate_sample
from pixelreason.models.presence import Request, mentioned_classes, refusal, requested_class
from pixelreason.models.segmenter import PixelReasonModel
from pixelreason.prompting import Turn
from pixelreason.registry import load_model

LABELS = [["orange", "oranges"], ["star", "stars"], ["mug", "mugs"], ["pizza slice", "slices"]]
COLOURS = ["orange orange", "red star", "orange star", "red mug", "light blue mug"]


def test_requested_class_is_the_one_class_an_explicit_description_names():
    assert requested_class("Segment the striped red mug.", LABELS, COLOURS) == Request(2, 3)
    assert requested_class("Where are the mugs?", LABELS, COLOURS) == Request(2, None)
    assert requested_class("Show me the light blue mug", LABELS, COLOURS) == Request(2, 4)
    # "orange" before a class name is a colour word; alone it is the fruit
    assert requested_class("the orange star", LABELS, COLOURS) == Request(1, 2)
    assert requested_class("Where is the orange?", LABELS, COLOURS) == Request(0, None)
    assert requested_class("Find the pizza slice.", LABELS, COLOURS) == Request(3, None)
    assert requested_class("The mug left of the star", LABELS, COLOURS) is None  # two classes
    assert requested_class("What holds hot drinks?", LABELS, COLOURS) is None  # none
    assert requested_class("Find what is drawn like stars.", LABELS, COLOURS) is None  # in passing
    # only the last sentence is the request
    assert requested_class("Find the mug. What is next to it?", LABELS, COLOURS) is None
    assert requested_class("I am thirsty. Show me the mug.", LABELS, COLOURS) == Request(2, None)


def test_refusals_repeat_the_request_in_its_own_words():
    labels = [*LABELS, ["scissors", "scissors"], ["fish", "fish"]]

    def refused(query: str) -> str:
        return refusal(requested_class(query, labels, COLOURS), labels)

    assert refused("Segment the striped red mug.") == "There is no striped red mug in this image."
    assert refused("Where are the mugs?") == "There are no mugs in this image."
    assert refused("Show me the black scissors") == "There are no black scissors in this image."
    assert refused("Where is the fish?") == "There is no fish in this image."
    assert refusal(Request(2), labels) == "There is no mug in this image."


def test_mentioned_classes_are_nouns_in_order():
    assert mentioned_classes("There is no orange star here, only an Orange.", LABELS) == [1, 0]
    assert mentioned_classes("There is no such object in this image.", LABELS) == []
    assert mentioned_classes("Two pizza slices and a mug", LABELS) == [3, 2]  # "slices" inside


def test_a_forced_prefix_continues_as_the_model_would_have():
    torch.manual_seed(0)
    model = PixelReasonModel.from_config(preset("tiny")).eval()
    embeds = torch.randn(2, 5, model.backbone.hidden_size)
    kwargs = dict(max_new_tokens=6, eos_token_id=10**6, pad_token_id=0)  # no early stop
    free = model.backbone.generate_batch(embeds, None, **kwargs)
    prefix = free[0].token_ids[:2].tolist()
    forced = model.backbone.generate_batch(embeds[:1], None, prefix=[prefix], **kwargs)[0]
    assert forced.token_ids.tolist()[:6] == free[0].token_ids.tolist()
    assert forced.hidden.shape == (8, model.backbone.hidden_size)
    torch.testing.assert_close(forced.hidden[:6], free[0].hidden, atol=1e-4, rtol=1e-4)
    other = [t for t in range(20) if t != prefix[0]][:2]
    forced = model.backbone.generate_batch(embeds, None, prefix=[other, other], **kwargs)
    assert all(g.token_ids.tolist()[:2] == other for g in forced)


def _ask(model: PixelReasonModel, index: int, **checks: float | bool):
    sample = generate_sample(0, "test", index)
    cache = model.encode_image(model.preprocessor.prepare_image(sample.image))
    return sample, model.answer_batch([cache], [[Turn(sample.texts[0])]], **checks)[0]


def test_bundled_default_answers_requests_as_its_probes_see_them():
    model, _ = load_model("default")
    assert model.config.request_threshold > 0
    assert model.config.probe_labels == class_labels()
    assert model.config.colour_probe_labels == colour_labels()
    # test 5 asks for a bottle that is not there: the LLM grounds something anyway
    # (mask names off: the unchecked answer as the LLM wrote it)
    sample, free = _ask(model, 5, request_threshold=0.0, mask_names=False)
    assert sample.kind == "absent" and len(free.scores) == 1
    sample, answer = _ask(model, 5)
    assert answer.text == "There is no bottle in this image." and len(answer.scores) == 0
    assert answer.extras["request_check"] == {"rejected": free.text, "was": "grounded"}
    # test 2 asks for a lemon that is there: the LLM refuses, the probe finds it
    sample, free = _ask(model, 2, request_threshold=0.0, mask_names=False)
    assert sample.kind == "explicit" and len(free.scores) == 0
    sample, answer = _ask(model, 2)
    assert answer.extras["request_check"]["was"] == "refused" and "lemon" in answer.text
    predicted, target = answer.mask_logits[0].numpy() > 0, sample.target_masks[0]
    assert np.logical_and(predicted, target).sum() / np.logical_or(predicted, target).sum() > 0.5
