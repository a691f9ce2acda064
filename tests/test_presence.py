"""The presence check: answers may ground only classes the vision probe finds in the image."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from pixelreason.api import encode_image
from pixelreason.config import preset
from pixelreason.data.world.categories import CATEGORIES, class_labels
from pixelreason.data.world.samples import generate_sample
from pixelreason.errors import CheckpointError
from pixelreason.models import segmenter
from pixelreason.models.presence import (
    NOTHING_FOUND,
    BannedSequences,
    ban_list,
    class_presence,
    named_classes,
    written_before,
)
from pixelreason.models.segmenter import PixelReasonModel
from pixelreason.prompting import Turn
from pixelreason.registry import load_model
from pixelreason.tokenizer import bundled_tokenizer
from pixelreason.train.recipe import preset_config


def test_banned_sequences_forbid_single_tokens_everywhere_and_longer_ones_after_their_prefix():
    scores = torch.zeros(2, 10)
    processor = BannedSequences([[[3], [5, 7]], [[5, 8]]])
    out = processor(torch.tensor([[1, 5], [2, 4]]), scores.clone())
    assert out[0, 3] == -float("inf") and out[0, 7] == -float("inf")  # 5 came last: 7 banned
    assert torch.isfinite(out[1]).all()  # row 1 did not just write 5; its own list only
    out = processor(torch.tensor([[1, 2], [4, 5]]), scores.clone())
    assert torch.isfinite(out[0, 7]) and out[0, 3] == -float("inf")
    assert out[1, 8] == -float("inf") and torch.isfinite(out[1, 3])
    with pytest.raises(ValueError, match="ban lists"):
        processor(torch.zeros(3, 1, dtype=torch.long), torch.zeros(3, 10))


def test_banned_sequences_see_the_tokens_written_before_generation():
    """A forced prefix is not in `generate`'s ids; a ban that straddles it still holds."""
    processor = BannedSequences([[[5, 7]], [[5, 7]]], written=[[1, 5], [5, 1]])
    out = processor(torch.zeros(2, 0, dtype=torch.long), torch.zeros(2, 10))
    assert out[0, 7] == -float("inf") and torch.isfinite(out[1]).all()


def test_written_before_stops_at_the_first_banned_completion():
    assert written_before([4, 5, 7, 9, 3], [[3], [5, 7]]) == [4, 5]
    assert written_before([4, 3, 5, 7], [[5, 7], [3]]) == [4]
    assert written_before([3, 4], [[3]]) == []
    assert written_before([4, 5, 9], [[5, 7]]) == []  # none: decode from the start


@pytest.mark.parametrize("index", [9, 15, 18, 20])
def test_presence_check_keeps_the_words_before_the_first_banned_one(index: int) -> None:
    """Decoding again from the answer's first banned word gives the answer decoding again
    from the start gives (test samples whose answers the check changes)."""
    model, _ = load_model("default")
    sample = generate_sample(0, "test", index)
    cache = model.encode_image(model.preprocessor.prepare_image(sample.image))
    turns = [[Turn(sample.texts[0])]]
    alone = {"relations": False}  # sample 9 asks a relation, answered without the check
    kept = model.answer_batch([cache], turns, **alone)[0]
    assert "presence_check" in kept.extras
    model.reuse_states = False
    whole = model.answer_batch([cache], turns, **alone)[0]
    assert kept.text == whole.text and kept.extras == whole.extras
    assert torch.equal(kept.mask_logits > 0, whole.mask_logits > 0)
    torch.testing.assert_close(kept.mask_logits, whole.mask_logits, atol=1e-3, rtol=1e-3)


def test_named_classes_are_the_names_right_before_a_target():
    labels = [["orange", "oranges"], ["cat", "cats"], ["trash can", "trash cans"]]
    assert named_classes("The striped orange cat <SEG>.", labels) == [1]
    assert named_classes("Oranges <SEG> and the Trash Can <SEG>", labels) == [0, 2]
    assert named_classes("There is no cat here.", labels) == []
    assert named_classes("the bobcat <SEG>", labels) == []  # whole words only


def test_ban_list_bans_a_distinct_first_word_alone_and_else_the_whole_name():
    tokenizer = bundled_tokenizer()
    labels = [["trash can"], ["trash bag"], ["cup"]]

    def ids(text: str) -> list[int]:
        return tokenizer.encode(text, add_special_tokens=False)

    alone = ban_list(tokenizer, labels, absent=[0], present=[2])
    assert ids(" trash")[:1] in alone and ids(" trash can") not in alone
    # a first word of several tokens ("Trash" here) is never banned alone: the whole name is
    assert len(ids("Trash")) > 1 and ids("Trash can") in alone
    shared = ban_list(tokenizer, labels, absent=[0], present=[1])  # "trash" starts a present name
    assert ids(" trash can") in shared and ids(" trash")[:1] not in shared


def test_generate_batch_never_writes_a_banned_token():
    torch.manual_seed(0)
    model = PixelReasonModel.from_config(preset("tiny")).eval()
    embeds = torch.randn(2, 5, model.backbone.hidden_size)
    tokenizer = model.preprocessor.tokenizer
    kwargs = dict(max_new_tokens=6, eos_token_id=tokenizer.eos_token_id, pad_token_id=0)
    free = model.backbone.generate_batch(embeds, None, **kwargs)
    first = [int(g.token_ids[0]) for g in free]
    banned = model.backbone.generate_batch(embeds, None, banned=[[[t]] for t in first], **kwargs)
    for token, generation in zip(first, banned, strict=True):
        assert token not in generation.token_ids.tolist()


def test_probe_labels_must_match_the_probe():
    config = dataclasses.replace(preset("tiny"), probe_classes=3, probe_labels=[["cat"]])
    with pytest.raises(CheckpointError, match="probe_labels"):
        PixelReasonModel.from_config(config)
    config.probe_labels = [["cat"], ["dog"]]
    model = PixelReasonModel.from_config(config)
    features = torch.randn(2, 16, model.backbone.hidden_size)
    presence = class_presence(model.probe, features)
    assert presence.shape == (2, 2) and bool(((presence > 0) & (presence <= 1)).all())


def test_recipes_with_reasonworld_probes_get_the_category_names():
    config = preset_config({"preset": "tiny", "probe_classes": len(CATEGORIES) + 1})
    assert config.probe_labels == class_labels()
    assert config.probe_labels[0][0] == CATEGORIES[0].name
    assert preset_config({"preset": "tiny"}).probe_labels == []


def test_bundled_default_redecodes_answers_that_ground_absent_categories():
    model, _ = load_model("default")
    assert model.config.presence_threshold > 0 and len(model.config.probe_labels) == 55
    labels = model.config.probe_labels
    checked = 0
    for index in range(30):
        sample = generate_sample(0, "test", index)
        cache = model.encode_image(model.preprocessor.prepare_image(sample.image))
        turns = [Turn(sample.conversation[0][0])]
        # the model's own answers: relations (sample 15 asks one) would answer without it,
        # and whether they find sample 15's teapot without the check is a near tie
        answer = model.answer_batch([cache], [turns], relations=False)[0]
        if "presence_check" not in answer.extras:
            continue
        checked += 1
        absent = answer.extras["presence_check"]["absent"]
        free = model.answer_batch([cache], [turns], presence_threshold=0.0, relations=False)[0]
        assert free.text == answer.extras["presence_check"]["rejected"] != answer.text
        context = cache.context if model.config.presence_mask_head else None
        presence = class_presence(model.probe, cache.features, context)[0]
        for name in absent:
            index_of = next(i for i, names in enumerate(labels) if names[0] == name)
            assert presence[index_of] < model.config.presence_threshold
            assert index_of in named_classes(free.text, labels)
            assert index_of not in named_classes(answer.text, labels)
        if checked == 2:
            break
    assert checked == 2  # the check fires on some of the first test queries


def test_bundled_default_says_so_when_nothing_is_left_to_ground():
    """Without the absent class the LLM may ground nothing; its answer is then the plain
    `NOTHING_FOUND`, not the words it trails off into ("The blue blue blue ...")."""
    model, _ = load_model("default")
    said = 0
    for index in (20, 33, 41):  # test queries where the check leaves nothing to ground
        sample = generate_sample(0, "test", index)
        cache = model.encode_image(model.preprocessor.prepare_image(sample.image))
        answer = model.answer(cache, [Turn(sample.texts[0])])
        if "presence_check" not in answer.extras or len(answer.scores):
            continue
        said += 1
        assert answer.text == NOTHING_FOUND
        assert answer.extras["presence_check"]["rejected"] != NOTHING_FOUND
    assert said >= 2


def test_bundled_default_keeps_an_answer_one_probe_part_reads(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """ "Only one of these things grows on a branch.": the answer grounds the leaf, whose
    presence (the probe parts' mean) is under the threshold; without it the LLM grounds
    nothing, but one probe part reads the leaf at `RESCUE_PRESENCE` or more, so the answer
    stays. With the floor out of reach it says that nothing is found."""
    model, _ = load_model("default")
    sample = generate_sample(0, "test", 342)
    assert "grows on a branch" in sample.texts[0]
    cache = encode_image(model, sample.image)
    turns = [[Turn(sample.texts[0])]]
    leaf = [names[0] for names in model.config.probe_labels].index("leaf")
    presence = class_presence(model.probe, cache.features, cache.context)[0, leaf]
    strongest = model.probe.strongest(cache.features, cache.context)[0, leaf]
    assert presence < model.config.presence_threshold <= strongest * 2
    assert strongest >= segmenter.RESCUE_PRESENCE
    answer = model.answer_batch([cache], turns)[0]
    assert answer.text == "Sure, the green leaf <SEG>."
    assert answer.extras["presence_rescue"]["absent"] == ["leaf"]
    target = sample.target_masks[0].astype(bool)
    mask = answer.mask_logits[0].numpy() > 0
    assert (mask & target).sum() / (mask | target).sum() > 0.6
    monkeypatch.setattr(segmenter, "RESCUE_PRESENCE", 1.0)
    refused = model.answer_batch([cache], turns)[0]
    assert refused.text == NOTHING_FOUND
    assert refused.extras["presence_check"]["absent"] == ["leaf"]
