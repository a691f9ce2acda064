"""SAM4MLLM's head end to end on tiny configs: text prompts in, SAM masks out, PQPP."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import NONE, ONE, TWO, scene, train, training_samples
from test_pretrained_components import _write_public_checkpoints
from transformers import SamModel

from pixelreason.api import Segmenter
from pixelreason.config import preset
from pixelreason.data.schema import SegSample
from pixelreason.models.backbone import Generation
from pixelreason.models.heads import HEADS
from pixelreason.models.heads.ppg import mask_value
from pixelreason.models.heads.pqpp import PointVotes, yes_probabilities
from pixelreason.models.heads.sam4mllm import Sam4MLLMSettings
from pixelreason.models.heads.text_prompts import (
    NO,
    NO_OBJECT,
    YES,
    box_to_grid,
    parse_prompts,
)
from pixelreason.models.segmenter import PixelReasonModel
from pixelreason.prompting import Turn
from pixelreason.tokenizer import bundled_tokenizer
from pixelreason.tokens import SEG_TOKEN
from pixelreason.train.losses import LossWeights


def fresh(seed: int = 0, **args: object) -> PixelReasonModel:
    torch.manual_seed(seed)
    config = preset("tiny-sam4mllm")
    config.head_args = {"groups": 8, **args}
    return PixelReasonModel.from_config(config)


@pytest.fixture(scope="module")
def trained() -> PixelReasonModel:
    """Overfit on ONE/TWO/NONE; one point group per mask keeps the text targets fixed."""
    model = fresh(groups=1, pqpp_rate=0.0)
    train(model, training_samples(), steps=150, lr=3e-3)
    return model


def _cache(model: PixelReasonModel):
    return model.encode_image(model.preprocessor.prepare_image(scene()[0]))


def _iou(predicted: np.ndarray, target: np.ndarray) -> float:
    return float((predicted & (target == 1)).sum() / (predicted | (target == 1)).sum())


def _force_generation(model: PixelReasonModel, monkeypatch, text: str) -> None:
    """Make `generate_batch` return `text` (then end of sequence) for every prompt."""
    tokenizer = model.preprocessor.tokenizer
    ids = tokenizer(" " + text, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    ids = torch.tensor(ids)

    def generate_batch(embeds, attention, **kwargs):
        hidden = torch.zeros((len(ids), model.backbone.hidden_size))
        return [Generation(ids, hidden) for _ in range(embeds.shape[0])]

    monkeypatch.setattr(model.backbone, "generate_batch", generate_batch)


def test_registered_without_new_tokens_or_layers_beyond_sam() -> None:
    model = fresh()
    assert HEADS["sam4mllm"] is type(model.head)
    assert model.head.special_tokens_for({}) == ()
    assert len(model.preprocessor.tokenizer) == len(bundled_tokenizer())  # nothing added
    assert all(name.startswith("sam.") for name, _ in model.head.named_parameters())
    with pytest.raises(ValueError, match="unknown SAM4MLLM head options"):
        Sam4MLLMSettings.from_args({"colour": 1})
    with pytest.raises(ValueError, match="pqpp_threshold"):
        Sam4MLLMSettings.from_args({"pqpp_threshold": 0.2})


def test_each_seg_marker_becomes_its_masks_prompt() -> None:
    model = fresh(pqpp_rate=0.0)
    image, red, blue = scene()
    sample = SegSample(image, [Turn(*TWO)], [red, blue])
    prepared = model.head.prepare_sample(sample, model.preprocessor.prepare_image(image))
    answer = prepared.turns[0].assistant
    assert SEG_TOKEN not in answer and len(prepared.masks) == 2
    blocks = parse_prompts(answer)
    for block, mask in zip(blocks, (red, blue), strict=True):
        ys, xs = np.nonzero(mask)
        assert block.box == box_to_grid((xs.min(), ys.min(), xs.max() + 1, ys.max() + 1), red.shape)
        assert block.labels == (1, 1, 0) and block.notes == ()
        values = [mask_value(mask, p) for p in block.points]
        assert values == [1, 1, 0]
    assert model.head.display_text(answer) == TWO[1]
    # Deterministic per sample, and a sample already in prompt form is left alone.
    again = model.head.prepare_sample(sample, model.preprocessor.prepare_image(image))
    assert again.turns == prepared.turns
    assert model.head.prepare_sample(prepared, None) is prepared  # type: ignore[arg-type]
    labels = model.preprocessor.encode(prepared.turns).labels.clamp(min=0)
    assert model.head.count_targets(labels[None]).tolist() == [2]


def test_a_mask_without_target_pixels_is_written_no_object_found() -> None:
    model = fresh(pqpp_rate=0.0)
    image, red, _ = scene()
    empty = np.zeros_like(red)
    sample = SegSample(image, [Turn(*TWO)], [empty, red])
    batch = model.collate([sample])
    answer = model.preprocessor.tokenizer.decode(batch.labels[0][batch.labels[0] >= 0])
    assert answer.startswith(f" They are {NO_OBJECT} and box(")
    assert len(batch.masks[0]) == 1 and torch.equal(batch.masks[0][0], torch.from_numpy(red))


def test_pqpp_training_questions_are_answered_from_the_mask() -> None:
    model = fresh(pqpp_rate=1.0)
    image, red, _ = scene()
    red[8:20, 18:30] = 0  # an L, so its box holds background
    inputs = model.preprocessor.prepare_image(image)
    answers = []
    for seed in range(24):
        model.head.settings = replace(model.head.settings, seed=seed)
        prepared = model.head.prepare_sample(SegSample(image, [Turn(*ONE)], [red]), inputs)
        assert len(prepared.turns) == 2
        question = prepared.turns[1]
        found = re.search(r"point \((\d+),(\d+)\)", question.user)
        assert found is not None
        point = (int(found[1]), int(found[2]))
        assert question.assistant == (YES if mask_value(red, point) == 1 else NO)
        answers.append(question.assistant)
    assert {YES, NO} <= set(answers)
    # The extra turn has no target, so the batch still has one mask.
    assert len(model.collate([SegSample(image, [Turn(*ONE)], [red])]).masks[0]) == 1


def test_teacher_forcing_gives_one_mask_per_box() -> None:
    model = fresh().eval()
    with torch.no_grad():
        out, prediction = model.teacher_forced(model.collate(training_samples()))
    assert [len(m) for m in prediction.logits] == [1, 2, 0]
    assert prediction.logits[1].shape == (2, 32, 32)
    assert [len(s) for s in prediction.scores] == [1, 2, 0]
    assert prediction.extras is not None and len(prediction.extras[1]["prompts"]) == 2


def test_a_few_steps_lower_the_loss() -> None:
    losses = train(fresh(), training_samples(), steps=25)
    assert losses[-1] < 0.5 * losses[0]


def test_the_mask_loss_trains_sam_and_never_the_llm() -> None:
    model = fresh().train()
    out = model(model.collate(training_samples()), LossWeights(text=0.0))
    out.loss.backward()
    assert out.num_masks == 3 and out.bce > 0
    decoder = model.head.sam.sam.mask_decoder
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in decoder.parameters())
    assert all(p.grad is None or not p.grad.any() for p in model.backbone.parameters())


def test_trained_model_answers_with_prompts_and_masks_land(trained: PixelReasonModel) -> None:
    cache = _cache(trained)
    _, red, blue = scene()
    for question, answer in (ONE, TWO, NONE):
        out = trained.answer(cache, [Turn(question)])
        assert out.text == answer
        count = answer.count(SEG_TOKEN)
        assert out.mask_logits.shape == (count, *red.shape) and out.scores.shape == (count,)
        if count:
            raw = out.extras["raw_text"]
            assert len([b for b in parse_prompts(raw) if b.has_box]) == count
            assert len(out.extras["prompts"]) == count
    out = trained.answer(cache, [Turn(TWO[0])])
    for predicted, target in zip((out.mask_logits > 0).numpy(), (red, blue), strict=True):
        assert _iou(predicted, target) > 0.5


def test_chat_history_keeps_the_written_prompts(trained: PixelReasonModel) -> None:
    segmenter = Segmenter(trained)
    segmenter.set_image(scene()[0])
    result = segmenter.chat(TWO[0])
    assert result.text == TWO[1] and result.masks.shape[0] == 2
    assert [p["box"] is not None for p in result.extras["prompts"]] == [True, True]
    history = segmenter.history[0].assistant
    assert history == result.extras["raw_text"] and history.count("box(") == 2
    second = segmenter.chat(ONE[0])  # replays the prompts as text (untrained for 2 turns)
    assert len(segmenter.history) == 2 and second.masks.shape[0] == second.text.count(SEG_TOKEN)


def test_generated_masks_equal_teacher_forced_masks(trained: PixelReasonModel) -> None:
    image, red, blue = scene()
    generated = trained.answer(_cache(trained), [Turn(TWO[0])])
    sample = SegSample(image, [Turn(TWO[0], generated.extras["raw_text"])], [red, blue])
    batch = trained.collate([sample])
    with torch.no_grad():
        _, prediction = trained.teacher_forced(batch)
    forced = trained.preprocessor.masks_to_image(prediction.logits[0], batch.images[0])
    torch.testing.assert_close(forced, generated.mask_logits, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize(
    ("text", "masks"),
    [
        ("It is box(100,166,374,583 in(2", 1),
        ("box(1,2,3) out(4,5) box(9,9,1,1) in(5,5) and No object found.", 1),
        ("box(5000,1,2,3) ))((,,in(1,1)" + " in(3,3)" * 40, 0),
        ("".join(chr(c) for c in range(33, 127)), 0),
        ("", 0),
    ],
)
def test_junk_output_never_crashes_answer(monkeypatch, text: str, masks: int) -> None:
    model = fresh().eval()
    _force_generation(model, monkeypatch, text)
    out = model.answer(_cache(model), [Turn("Where is it?")])
    assert out.mask_logits.shape == (masks, 48, 80) and out.scores.shape == (masks,)
    assert out.text.count(SEG_TOKEN) == masks
    assert json.dumps(out.extras)  # JSON-ready
    if masks == 0 and text:
        assert all(not p["box"] for p in out.extras["prompts"])


def test_special_tokens_inside_a_prompt_count_alike_in_masks_and_text(monkeypatch) -> None:
    model = fresh().eval()
    tokenizer = model.preprocessor.tokenizer
    pieces = [" It is box(1,2,3,4) in(5", ",6) and box(7,7,9,9", ") out(1,1) and box(1,1,2,2)"]
    ids = []
    specials = [tokenizer.pad_token_id, tokenizer.unk_token_id, None]
    for piece, special in zip(pieces, specials, strict=True):
        ids += tokenizer(piece, add_special_tokens=False)["input_ids"]
        ids += [special] if special is not None else []
    ids = torch.tensor([*ids, tokenizer.eos_token_id])

    def generate_batch(embeds, attention, **kwargs):
        return [Generation(ids, torch.zeros((len(ids), model.backbone.hidden_size)))]

    monkeypatch.setattr(model.backbone, "generate_batch", generate_batch)
    out = model.answer(_cache(model), [Turn("Where?")])
    # Padding is dropped (the point joins up); <unk> cuts the second box's point off.
    assert out.text == "It is <SEG> and <SEG><unk>) out(1,1) and <SEG>"
    assert len(out.mask_logits) == 3
    assert [len(p["points"]) for p in out.extras["prompts"]] == [1, 0, 0, 0]


def test_random_model_answers_never_crash() -> None:
    model = fresh().eval()
    cache = _cache(model)
    for question in ("Where is the red square?", "??", "Segment everything, box(1,2,3,4)"):
        out = model.answer(cache, [Turn(question)], max_new_tokens=40)
        raw = out.extras.get("raw_text", out.text)
        assert len(out.mask_logits) == sum(b.has_box for b in parse_prompts(raw))


def test_checkpoint_round_trip(trained: PixelReasonModel, tmp_path: Path) -> None:
    trained.save_pretrained(tmp_path / "m")
    loaded = PixelReasonModel.from_pretrained(tmp_path / "m")
    assert loaded.config.head == "sam4mllm" and loaded.head.settings == trained.head.settings
    a = trained.answer(_cache(trained), [Turn(TWO[0])])
    b = loaded.answer(_cache(loaded), [Turn(TWO[0])])
    assert a.text == b.text and a.extras == b.extras
    assert torch.equal(a.mask_logits, b.mask_logits)


def test_pqpp_asks_every_grid_point_in_one_forward_pass(monkeypatch) -> None:
    model = fresh(pqpp=True).eval()
    _force_generation(
        model, monkeypatch, "They are box(100,166,374,583) in(1,1) and box(575,416,924,916)."
    )
    calls: list[tuple[int, ...]] = []
    forward = model.backbone.forward

    def counting(embeds, attention):
        calls.append(tuple(embeds.shape))
        return forward(embeds, attention)

    monkeypatch.setattr(model.backbone, "forward", counting)
    out = model.answer(_cache(model), [Turn(TWO[0])])
    assert len(calls) == 1 and calls[0][0] == 2 * 25
    assert out.mask_logits.shape == (2, 48, 80) and out.text == TWO[1]
    votes = out.extras["pqpp"]
    assert [v["box"] for v in votes] == [[100, 166, 374, 583], [575, 416, 924, 916]]
    assert all(len(v["points"]) == len(v["p_yes"]) == 25 for v in votes)
    # At most the PPG shape (2 yes + 1 no) by default, each kept point with its vote's label.
    for vote in votes:
        assert sum(vote["labels"]) <= 2 and vote["labels"].count(0) <= 1
        for point, label in zip(vote["kept"], vote["labels"], strict=True):
            p = vote["p_yes"][vote["points"].index(point)]
            assert label == int(p >= 0.5)


def test_batched_yes_probabilities_equal_one_question_at_a_time() -> None:
    model = fresh().eval()
    cache = _cache(model)
    history = [Turn(ONE[0], "It is box(100,166,374,583).")]
    questions = ["Is the point (1,2) on the target in box(1,2,3,4)?", "Is (999,0) it?", "x"]
    together = yes_probabilities(model, cache, history, questions)
    alone = torch.cat([yes_probabilities(model, cache, history, [q]) for q in questions])
    assert together.shape == (3,) and ((together > 0) & (together < 1)).all()
    torch.testing.assert_close(together, alone, atol=1e-5, rtol=1e-4)


def test_pqpp_reads_the_first_token_that_tells_yes_from_no() -> None:
    """SentencePiece may spell " yes" and " no" with a shared first piece."""

    class Pieces:
        pad_token_id = 0

        def __call__(self, text: str, add_special_tokens: bool = False) -> dict:
            return {"input_ids": {" yes": [7, 8, 3], " no": [7, 9]}[text]}

        def get_vocab(self) -> dict[str, int]:
            return {}

    head = fresh().head
    head.bind_tokenizer(Pieces())  # type: ignore[arg-type]
    assert head.answer_prefix == (7,) and head.answer_ids == (8, 9)


def test_sam4mllm_on_public_format_checkpoints_keeps_the_pretrained_sam(tmp_path: Path) -> None:
    llava_dir, sam_dir = _write_public_checkpoints(tmp_path)
    model = PixelReasonModel.from_components(llava_dir, sam_dir, head="sam4mllm")
    reference = SamModel.from_pretrained(sam_dir)
    assert torch.equal(
        model.head.sam.sam.mask_decoder.iou_token.weight, reference.mask_decoder.iou_token.weight
    )
    out = model(model.collate(training_samples()))
    assert torch.isfinite(out.loss) and out.num_masks == 3


def test_votes_keep_confident_points_with_their_labels() -> None:
    votes = PointVotes(
        (0, 0, 9, 9), [(1, 1), (2, 2), (3, 3), (4, 4), (5, 5)], [0.99, 0.6, 0.1, 0.9, 0.2]
    )
    prompt = votes.prompt(0.75)
    assert prompt.points == ((1, 1), (3, 3), (4, 4), (5, 5)) and prompt.labels == (1, 0, 1, 0)
    limited = votes.prompt(0.75, max_inside=1, max_outside=1)
    assert limited.points == ((1, 1), (3, 3)) and limited.labels == (1, 0)
    assert votes.prompt(1.0).points == ()


def test_cli_segment_with_a_random_sam4mllm_model(example_png: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, "-m", "pixelreason.cli", "segment", str(example_png), ONE[0],
         "--out", str(out), "--model", "random:tiny-sam4mllm", "--max-new-tokens", "24"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    data = json.loads((out / "result.json").read_text())
    assert data["query"] == ONE[0] and (out / "overlay.png").is_file()
    assert len(data["targets"]) == len(list(out.glob("mask_*.png")))


def test_results_show_the_sam_prompt_behind_each_mask(
    trained: PixelReasonModel, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from pixelreason.api import save_result
    from pixelreason.cli import _print_prompts
    from pixelreason.viz import overlay

    image, red, blue = scene()
    segmenter = Segmenter(trained)
    segmenter.set_image(image)
    result = segmenter.segment(TWO[0])
    targets = result.to_dict()["targets"]
    assert len(targets) == 2
    for target, truth in zip(targets, (red, blue), strict=True):
        prompt = target["sam_prompt"]
        assert prompt["text"].startswith("box(")
        x0, y0, x1, y1 = prompt["box"]
        assert 0 <= x0 < x1 <= image.width and 0 <= y0 < y1 <= image.height
        # The learnt box covers most of its target.
        ys, xs = np.nonzero(truth)
        inside = (xs >= x0 - 1) & (xs < x1 + 1) & (ys >= y0 - 1) & (ys < y1 + 1)
        assert inside.mean() > 0.8
        assert all(0 <= x <= image.width and 0 <= y <= image.height for x, y, _ in prompt["points"])
    save_result(result, image, tmp_path)
    saved = json.loads((tmp_path / "result.json").read_text())
    assert saved["targets"][1]["sam_prompt"] == targets[1]["sam_prompt"]
    plain = overlay(image, result.masks, caption=result.text)
    drawn = overlay(image, result.masks, caption=result.text, prompts=result.extras["sam_prompts"])
    assert np.asarray(plain).shape == np.asarray(drawn).shape
    assert (np.asarray(plain) != np.asarray(drawn)).any()
    _print_prompts(result)
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(":")[0].strip() for line in lines] == ["target 1", "target 2"]
    assert all("box(" in line and "px" in line for line in lines)
