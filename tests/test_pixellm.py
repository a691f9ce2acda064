"""PixelLM's head: codebook tokens, one mask per codebook occurrence, no SAM anywhere."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import NONE, ONE, TWO, scene, train, training_samples

from pixelreason.config import preset
from pixelreason.data.schema import SegSample
from pixelreason.errors import CheckpointError
from pixelreason.models.heads.pixellm import PixelLMSettings
from pixelreason.models.segmenter import PixelReasonModel
from pixelreason.prompting import Turn
from pixelreason.tokens import SEG_TOKEN, codebook_tokens


def fresh_pixellm(seed: int = 0) -> PixelReasonModel:
    torch.manual_seed(seed)
    return PixelReasonModel.from_config(preset("tiny-pixellm"))


@pytest.fixture(scope="module")
def trained_pixellm() -> PixelReasonModel:
    model = fresh_pixellm()
    train(model, training_samples(), steps=150, lr=3e-3)
    return model


def test_codebook_tokens_are_single_ids_in_order() -> None:
    model = fresh_pixellm()
    tokens = codebook_tokens(2, 3)
    assert tokens[0] == "<SEG_0_0>" and tokens[-1] == "<SEG_1_2>" and len(set(tokens)) == 6
    ids = model.preprocessor.tokenizer(model.head.target_text, add_special_tokens=False)
    assert ids["input_ids"] == [model.head.token_ids[t] for t in tokens]
    assert SEG_TOKEN not in model.preprocessor.tokenizer.get_vocab()


def test_each_target_marker_becomes_one_codebook_occurrence() -> None:
    model = fresh_pixellm()
    encoded = model.preprocessor.encode([Turn(*TWO)])
    first = model.head.token_ids["<SEG_0_0>"]
    assert int((encoded.input_ids == first).sum()) == 2
    assert model.head.count_targets(encoded.input_ids[None]).tolist() == [2]
    answer_ids = encoded.labels[encoded.labels >= 0]
    assert model.preprocessor.decode(answer_ids) == TWO[1]


def test_incomplete_occurrences_make_no_mask() -> None:
    model = fresh_pixellm()
    ids = [model.head.token_ids[t] for t in codebook_tokens(2, 3)]
    rows = torch.tensor([ids + ids[:5] + ids, ids[1:] + [0] * 12])
    assert model.head.count_targets(rows).tolist() == [2, 0]


def test_one_mask_per_target_for_zero_one_and_many() -> None:
    model = fresh_pixellm().eval()
    image, red, blue = scene()
    third = np.zeros_like(red)
    third[0:6, 0:6] = 1
    three = ("Where are the shapes?", f"Here: {SEG_TOKEN}, {SEG_TOKEN} and {SEG_TOKEN}.")
    samples = [
        SegSample(image, [Turn(*NONE)], []),
        SegSample(image, [Turn(*ONE)], [red]),
        SegSample(image, [Turn(*three)], [red, blue, third]),
    ]
    with torch.no_grad():
        _, prediction = model.teacher_forced(model.collate(samples))
    assert [len(m) for m in prediction.logits] == [0, 1, 3]
    assert [len(s) for s in prediction.scores] == [0, 1, 3]
    size = 4 * model.backbone.grid_size
    assert prediction.logits[2].shape == (3, size, size)


def test_no_sam_in_the_pixellm_model() -> None:
    model = fresh_pixellm()
    assert model.config.sam is None and model.preprocessor.head_processor is None
    assert not any("sam" in name for name in model.state_dict())
    assert len(model.head.vision_layers) == 2 and model.head.vision_layers[-1] == 2


def test_settings_reject_bad_options() -> None:
    with pytest.raises(ValueError, match="unknown"):
        PixelLMSettings.from_args({"colour": 1})
    with pytest.raises(ValueError, match="layers"):
        PixelLMSettings.from_args({"groups": 2, "layers": [1]})
    assert PixelLMSettings.from_args({"groups": 3}).vision_layers(6) == (2, 4, 6)


def test_trained_pixellm_answers_and_masks_land(trained_pixellm: PixelReasonModel) -> None:
    image, red, blue = scene()
    cache = trained_pixellm.encode_image(trained_pixellm.preprocessor.prepare_image(image))
    for question, answer in (ONE, TWO, NONE):
        out = trained_pixellm.answer(cache, [Turn(question)])
        assert out.text == answer
        assert out.mask_logits.shape == (answer.count(SEG_TOKEN), *red.shape)
    masks = (trained_pixellm.answer(cache, [Turn(TWO[0])]).mask_logits > 0).numpy()
    for predicted, target in zip(masks, (red, blue), strict=True):
        iou = (predicted & (target == 1)).sum() / (predicted | (target == 1)).sum()
        assert iou > 0.5


def test_pixellm_round_trips_and_refuses_a_lisa_checkpoint(
    trained_pixellm: PixelReasonModel, trained_dir: Path, tmp_path: Path
) -> None:
    trained_pixellm.save_pretrained(tmp_path / "pixellm")
    loaded = PixelReasonModel.from_pretrained(tmp_path / "pixellm")
    batch = loaded.collate(training_samples())
    with torch.no_grad():
        a = trained_pixellm.teacher_forced(batch)[1].logits[1]
        b = loaded.teacher_forced(batch)[1].logits[1]
    torch.testing.assert_close(a, b)
    # A LISA checkpoint's weights under a PixelLM config are refused with one clear error.
    (tmp_path / "pixellm" / "model.safetensors").write_bytes(
        (trained_dir / "model.safetensors").read_bytes()
    )
    with pytest.raises(CheckpointError, match="do not match|lack"):
        PixelReasonModel.from_pretrained(tmp_path / "pixellm")
