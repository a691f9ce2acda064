"""The LISA-head model end to end on tiny configs."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import NONE, ONE, TWO, fresh_tiny, scene, train, training_samples
from PIL import Image

from pixelreason.config import PRESETS, preset
from pixelreason.data.schema import SegSample
from pixelreason.errors import CheckpointError, InputError
from pixelreason.models.segmenter import WEIGHTS_NAME, PixelReasonModel
from pixelreason.prompting import Turn
from pixelreason.tokens import SEG_TOKEN
from pixelreason.train.losses import (
    LossWeights,
    mask_bce,
    mask_dice,
    mask_iou,
    score_mse,
    target_overlap,
)
from pixelreason.utils.files import atomic_write_bytes


def _ask(model: PixelReasonModel, question: str):
    image = scene()[0]
    cache = model.encode_image(model.preprocessor.prepare_image(image))
    return model.answer(cache, [Turn(question)])


def test_one_batch_overfits_with_falling_loss() -> None:
    losses = train(fresh_tiny(), training_samples(), steps=40)
    assert losses[-1] < 0.3 * losses[0]
    assert np.mean(losses[-5:]) < np.mean(losses[:5])


def test_score_loss_teaches_sams_iou_head_the_iou_its_masks_reach() -> None:
    model, samples = fresh_tiny(), training_samples()
    batch = model.collate(samples)
    assert "score" not in model(batch).head  # off unless a recipe weighs it
    train(model, samples, steps=30)  # masks first, then their scores alone
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    misses = []
    for _ in range(30):
        out = model(batch, LossWeights(text=0.0, mask=0.0, score=1.0))
        misses.append(out.head["score"])
        optimizer.zero_grad()
        out.loss.backward()
        optimizer.step()
    assert misses[-1] < 0.1 * misses[0]
    model.eval()
    with torch.no_grad():
        _, prediction = model.teacher_forced(batch)
    for logits, scores, image, target in zip(
        prediction.logits, prediction.scores, batch.images, batch.masks, strict=True
    ):
        full = model.preprocessor.masks_to_image(logits, image) > 0
        truth, valid = target == 1, target != 255
        reached = (full & truth & valid).sum((1, 2)) / ((full | truth) & valid).sum((1, 2))
        assert torch.allclose(scores, reached.float(), atol=0.1)


def test_batched_mask_losses_equal_the_mean_of_per_item_losses() -> None:
    """Items are scored in groups of equal image geometry; the result must not depend on it."""
    model = fresh_tiny()
    image, red, blue = scene()
    small = image.resize((40, 24))
    small_red = np.asarray(Image.fromarray(red).resize((40, 24), Image.NEAREST))
    samples = [*training_samples(), SegSample(small, [Turn(*ONE)], [small_red])]
    samples[1].masks[1] = samples[1].masks[1].copy()
    samples[1].masks[1][0, :10] = 255  # ignore pixels
    batch = model.collate(samples)
    weights = LossWeights(refine=1.0, score=1.0)
    out = model(batch, weights)
    with torch.no_grad():
        _, prediction = model.teacher_forced(batch)
    bce, dice, score, refine = [], [], [], []
    for logits, scores, item, target in zip(
        prediction.logits, prediction.scores, batch.images, batch.masks, strict=True
    ):
        if logits.shape[0] == 0:
            continue
        full = model.preprocessor.masks_to_image(logits, item)
        valid, truth = target != 255, target == 1
        bce += mask_bce(full, truth, valid).tolist()
        dice += mask_dice(full, truth, valid).tolist()
        score += score_mse(scores, mask_iou(full, truth, valid)).tolist()
        if logits.shape[0] > 1:
            refine.append(float(target_overlap(full, valid.all(0))))
    assert out.num_masks == len(bce) == 4
    assert out.bce == pytest.approx(np.mean(bce), rel=1e-5)
    assert out.dice == pytest.approx(np.mean(dice), rel=1e-5)
    assert out.head["score"] == pytest.approx(np.mean(score), rel=1e-5)
    assert out.refine == pytest.approx(np.mean(refine), rel=1e-5)


def test_generation_gives_one_mask_per_seg_at_image_size(trained_dir: Path) -> None:
    model = PixelReasonModel.from_pretrained(trained_dir)
    height, width = scene()[1].shape
    for question, answer in (ONE, TWO, NONE):
        out = _ask(model, question)
        assert out.text == answer
        count = answer.count(SEG_TOKEN)
        assert out.mask_logits.shape == (count, height, width)
        assert out.scores.shape == (count,)


def test_trained_masks_land_on_their_targets(trained_dir: Path) -> None:
    model = PixelReasonModel.from_pretrained(trained_dir)
    _, red, blue = scene()
    masks = (_ask(model, TWO[0]).mask_logits > 0).numpy()
    for predicted, target in zip(masks, (red, blue), strict=True):
        iou = (predicted & (target == 1)).sum() / (predicted | (target == 1)).sum()
        assert iou > 0.5


def test_generated_masks_equal_teacher_forced_masks(trained_dir: Path) -> None:
    """Generation reads <SEG> states from `generate`; training from one forward pass."""
    model = PixelReasonModel.from_pretrained(trained_dir)
    image, red, blue = scene()
    generated = _ask(model, TWO[0])
    from pixelreason.data.schema import SegSample

    batch = model.collate([SegSample(image, [Turn(TWO[0], generated.text)], [red, blue])])
    with torch.no_grad():
        _, prediction = model.teacher_forced(batch)
        forced = model.preprocessor.masks_to_image(prediction.logits[0], batch.images[0])
    assert torch.allclose(forced, generated.mask_logits, atol=1e-4)


def test_save_load_round_trip_gives_identical_outputs(trained_dir: Path, tmp_path: Path) -> None:
    first = PixelReasonModel.from_pretrained(trained_dir)
    first.save_pretrained(tmp_path / "copy")
    second = PixelReasonModel.from_pretrained(tmp_path / "copy")
    a, b = _ask(first, TWO[0]), _ask(second, TWO[0])
    assert a.text == b.text
    assert torch.equal(a.mask_logits, b.mask_logits)
    assert (
        second.preprocessor.tokenizer.convert_tokens_to_ids(SEG_TOKEN)
        == len(second.preprocessor.tokenizer) - 1
    )
    for name in ("pixelreason.json", WEIGHTS_NAME, "tokenizer.json"):
        assert (tmp_path / "copy" / name).is_file()


def test_save_overwrites_atomically(trained_dir: Path, tmp_path: Path) -> None:
    model = PixelReasonModel.from_pretrained(trained_dir)
    model.save_pretrained(tmp_path / "m")
    model.save_pretrained(tmp_path / "m")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]


def test_saved_model_gets_the_modes_of_the_users_umask(trained_dir: Path, tmp_path: Path) -> None:
    """Atomic writes stage in private temporary files and directories (0600, 0700); what
    they become is readable as a plain write would leave it (umask 022 here)."""
    model = PixelReasonModel.from_pretrained(trained_dir)
    model.save_pretrained(tmp_path / "m")
    umask = os.umask(0o022)
    os.umask(umask)
    assert stat.S_IMODE((tmp_path / "m").stat().st_mode) == 0o777 & ~umask
    for name in ("pixelreason.json", WEIGHTS_NAME):
        assert stat.S_IMODE((tmp_path / "m" / name).stat().st_mode) == 0o666 & ~umask
    atomic_write_bytes(tmp_path / "note.txt", b"x")
    assert stat.S_IMODE((tmp_path / "note.txt").stat().st_mode) == 0o666 & ~umask


def test_checkpoint_that_does_not_match_its_config_is_refused(
    trained_dir: Path, tmp_path: Path
) -> None:
    model = PixelReasonModel.from_pretrained(trained_dir)
    model.save_pretrained(tmp_path / "bad")
    config_path = tmp_path / "bad" / "pixelreason.json"
    config = json.loads(config_path.read_text())
    config["llava"]["text_config"]["intermediate_size"] *= 2
    config_path.write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="do not match the model config"):
        PixelReasonModel.from_pretrained(tmp_path / "bad")


def test_corrupt_or_missing_checkpoint_files_are_refused(trained_dir: Path, tmp_path: Path) -> None:
    model = PixelReasonModel.from_pretrained(trained_dir)
    model.save_pretrained(tmp_path / "m")
    (tmp_path / "m" / WEIGHTS_NAME).write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="corrupt weights"):
        PixelReasonModel.from_pretrained(tmp_path / "m")
    (tmp_path / "m" / WEIGHTS_NAME).unlink()
    with pytest.raises(CheckpointError, match="missing weights"):
        PixelReasonModel.from_pretrained(tmp_path / "m")
    (tmp_path / "m" / "pixelreason.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="corrupt"):
        PixelReasonModel.from_pretrained(tmp_path / "m")
    with pytest.raises(CheckpointError, match="not found"):
        PixelReasonModel.from_pretrained(tmp_path / "nowhere")


def test_mask_count_must_match_seg_count(tiny_model: PixelReasonModel) -> None:
    from pixelreason.data.schema import SegSample

    image, red, _ = scene()
    with pytest.raises(InputError, match="2 targets but 1 masks"):
        tiny_model.collate([SegSample(image, [Turn(*TWO)], [red])])


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_builds_and_trains_one_step(name: str) -> None:
    """Registered presets must all work (timm-style), so none can rot."""
    torch.manual_seed(0)
    model = PixelReasonModel.from_config(preset(name))
    batch = model.collate(training_samples()[:2])
    out = model(batch, LossWeights(point=1.0))
    out.loss.backward()
    assert torch.isfinite(out.loss) and out.num_masks == 3
    # The head's loss reaches its first layer reading LLM states (PixelLLM: the point loss,
    # its SAM being prompted from the ground truth in training; SAM4MLLM's head reads none,
    # its SAM decoder's mask token learns).
    first = {
        "lisa": lambda head: head.projector[0],
        "pixellm": lambda head: head.fuse[0],
        "pixelllm": lambda head: head.locator[0],
        "sam4mllm": lambda head: head.sam.sam.mask_decoder.mask_tokens,
    }[model.config.head](model.head)
    assert float(first.weight.grad.abs().sum()) > 0


def test_padding_in_a_batch_changes_no_real_output() -> None:
    """Teacher forcing uses causal attention without a padding mask: exact for right padding."""
    model = fresh_tiny().eval()
    short, long = training_samples()[:2]
    assert len(short.turns[0].assistant) != len(long.turns[0].assistant)
    with torch.no_grad():
        together = model.teacher_forced(model.collate([short, long]))
        alone = [model.teacher_forced(model.collate([s])) for s in (short, long)]
    for row, (out, prediction) in enumerate(alone):
        length = out.logits.shape[1]
        torch.testing.assert_close(together[0].logits[row, :length], out.logits[0])
        torch.testing.assert_close(together[1].logits[row], prediction.logits[0])
