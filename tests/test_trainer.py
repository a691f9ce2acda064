"""Training loop: falling loss, exact resume after a crash, LoRA's trainable set and merge."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import fresh_tiny, training_samples

from pixelreason.config import preset
from pixelreason.data.schema import SegSample
from pixelreason.errors import InputError
from pixelreason.models.segmenter import PixelReasonModel
from pixelreason.train.lora import LoraSettings, apply_lora, has_lora, merge_lora
from pixelreason.train.losses import LossWeights
from pixelreason.train.recipe import build_model
from pixelreason.train.trainer import CHECKPOINT_DIR, FINAL_DIR, TrainConfig, train

SAMPLES = training_samples()


def sample(index: int) -> SegSample:
    return SAMPLES[index % len(SAMPLES)]


def _config(**overrides: object) -> TrainConfig:
    base = dict(steps=6, batch_size=3, lr=2e-3, warmup_steps=1, log_every=1, save_every=2)
    return TrainConfig(**{**base, **overrides})


def test_training_loss_falls_and_writes_model_history_and_curve(tmp_path: Path) -> None:
    result = train(fresh_tiny(), sample, tmp_path, _config(steps=30, save_every=10, lr=6e-3))
    losses = [h["loss"] for h in result.history if "loss" in h]
    assert losses[-1] < 0.5 * losses[0]
    assert all(0.0 <= h["data_share"] <= 1.0 for h in result.history if "loss" in h)
    assert (tmp_path / "curve.png").stat().st_size > 0
    assert len(json.loads((tmp_path / "history.json").read_text())) == 30
    assert PixelReasonModel.from_pretrained(tmp_path / FINAL_DIR).config.preset == "tiny"


def test_resume_after_a_crash_equals_an_uninterrupted_run(tmp_path: Path) -> None:
    straight = fresh_tiny()
    train(straight, sample, tmp_path / "a", _config())

    def crashing(index: int) -> SegSample:
        if index >= 4 * 3:  # the first sample of step 5: steps 1-4 done, checkpoint at 4
            raise KeyboardInterrupt
        return sample(index)

    with pytest.raises(KeyboardInterrupt):
        train(fresh_tiny(), crashing, tmp_path / "b", _config())
    assert (tmp_path / "b" / CHECKPOINT_DIR).is_dir()
    resumed = fresh_tiny(seed=1)  # different init: everything must come from the checkpoint
    result = train(resumed, sample, tmp_path / "b", _config())
    assert [h["step"] for h in result.history] == [1, 2, 3, 4, 5, 6]
    for (name, a), b in zip(
        straight.state_dict().items(), resumed.state_dict().values(), strict=True
    ):
        assert torch.allclose(a, b, atol=1e-6), name


@pytest.mark.filterwarnings("ignore:This DataLoader will create")  # 2 workers on fewer cores
def test_worker_processes_feed_the_same_batches_in_the_same_order(tmp_path: Path) -> None:
    inline, fed = fresh_tiny(), fresh_tiny()
    a = train(inline, sample, tmp_path / "a", _config(steps=3))
    b = train(fed, sample, tmp_path / "b", _config(steps=3, num_workers=2))
    assert [h["loss"] for h in a.history] == pytest.approx([h["loss"] for h in b.history])
    for (name, x), y in zip(inline.state_dict().items(), fed.state_dict().values(), strict=True):
        assert torch.allclose(x, y, atol=1e-6), name


def test_lora_trains_lisa_set_and_merges_exactly() -> None:
    model = fresh_tiny()
    apply_lora(model, LoraSettings(r=4, alpha=8, dropout=0.0))
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert any("lora_A" in n for n in trainable)
    assert any("embed_tokens" in n for n in trainable) and any("lm_head" in n for n in trainable)
    assert any("mask_decoder" in n for n in trainable) and any("projector" in n for n in trainable)
    assert not any("vision_tower" in n or "vision_encoder" in n for n in trainable)
    assert not any("q_proj.base_layer" in n for n in trainable)
    for name, parameter in model.named_parameters():  # make the adapters non-trivial
        if "lora_B" in name:
            torch.nn.init.normal_(parameter, std=0.1)
    model.eval()
    batch = model.collate(training_samples())
    with torch.no_grad():
        before = model(batch).loss
        assert merge_lora(model) == 4  # q and v in 2 layers
        after = model(batch).loss
    assert not has_lora(model)
    assert torch.allclose(before, after, atol=1e-5)


def test_trainer_logs_a_head_loss_beside_the_shared_ones(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = PixelReasonModel.from_config(preset("tiny-pixelllm"))
    config = _config(steps=2, save_every=2, loss=LossWeights(point=1.0))
    result = train(model, sample, tmp_path, config)
    rows = [h for h in result.history if "loss" in h]
    assert len(rows) == 2 and all(h["point"] > 0 for h in rows)


def test_recipe_init_warm_starts_a_new_head_from_a_trained_model(tmp_path: Path) -> None:
    torch.manual_seed(0)
    source = PixelReasonModel.from_config(preset("tiny"))  # LISA: adds <SEG>
    source.save_pretrained(tmp_path / "lisa")
    model = build_model({"preset": "tiny-pixelllm", "seed": 1, "init": str(tmp_path / "lisa")})
    theirs, ours = source.state_dict(), model.state_dict()
    shared = [k for k in ours if k in theirs and theirs[k].shape == ours[k].shape]
    assert len(shared) > 50
    for key in shared:
        assert torch.equal(ours[key], theirs[key]), key
    assert any(k.startswith("head.sam.") for k in shared)  # SAM comes along with the backbone
    # Embedding rows move by token, not by index: shared tokens copied, head tokens left fresh.
    own_vocab = model.preprocessor.tokenizer.get_vocab()
    their_vocab = source.preprocessor.tokenizer.get_vocab()
    ours_emb = model.backbone.model.get_input_embeddings().weight
    theirs_emb = source.backbone.model.get_input_embeddings().weight
    common = [t for t in own_vocab if t in their_vocab]
    assert len(common) == len(their_vocab)  # <SEG> included: PixelLLM's head adds it too
    for token in common:
        assert torch.equal(ours_emb[own_vocab[token]], theirs_emb[their_vocab[token]]), token
    fresh = [own_vocab[t] for t in own_vocab if t not in their_vocab]
    assert fresh  # the location placeholder
    assert not any(torch.equal(ours_emb[i], row) for i in fresh for row in theirs_emb)
    # The PixelLLM head's own modules (location MLP, prompt encoder) keep their random init.
    head_only = [k for k in ours if k.startswith("head.") and k not in theirs]
    assert head_only


def test_recipe_init_skip_keeps_named_modules_fresh(tmp_path: Path) -> None:
    torch.manual_seed(0)
    source = PixelReasonModel.from_config(preset("tiny"))
    source.save_pretrained(tmp_path / "src")
    skip = ["backbone.model.model.vision_tower", "backbone.model.model.multi_modal_projector"]
    model = build_model(
        {"preset": "tiny", "seed": 1, "init": str(tmp_path / "src"), "init_skip": skip}
    )
    theirs, ours = source.state_dict(), model.state_dict()
    for key in ours:
        same = torch.equal(ours[key], theirs[key])
        if key.startswith(tuple(skip)) and ours[key].numel() > 1 and ours[key].std() > 0:
            assert not same, key  # random init differs from the source's
        elif not key.startswith(tuple(skip)):
            assert same, key
    with pytest.raises(InputError, match="init_skip"):
        build_model({"preset": "tiny", "init": str(tmp_path / "src"), "init_skip": "vision"})


def test_recipe_init_parts_take_named_modules_from_another_model(tmp_path: Path) -> None:
    # The main model gives everything, the second only the vision tower and the projector.
    for seed, name in ((0, "main"), (5, "tower")):
        torch.manual_seed(seed)
        PixelReasonModel.from_config(preset("tiny")).save_pretrained(tmp_path / name)
    main = PixelReasonModel.from_pretrained(tmp_path / "main").state_dict()
    tower = PixelReasonModel.from_pretrained(tmp_path / "tower").state_dict()
    parts = ["backbone.model.model.vision_tower", "backbone.model.model.multi_modal_projector"]
    spec = {
        "preset": "tiny",
        "seed": 1,
        "init": str(tmp_path / "main"),
        "init_parts": {prefix: str(tmp_path / "tower") for prefix in parts},
    }
    ours = build_model(spec).state_dict()
    moved = 0
    for key, value in ours.items():
        source = tower if key.startswith(tuple(parts)) else main
        assert torch.equal(value, source[key]), key
        if key.startswith(tuple(parts)) and not torch.equal(main[key], tower[key]):
            moved += 1
    assert moved > 10
    with pytest.raises(InputError, match="init_parts must map"):
        build_model({**spec, "init_parts": ["backbone"]})
    with pytest.raises(InputError, match="no weights under 'backbone.nothing'"):
        build_model({**spec, "init_parts": {"backbone.nothing": str(tmp_path / "tower")}})
    small = PixelReasonModel.from_config(preset("small"))
    small.save_pretrained(tmp_path / "small")
    with pytest.raises(InputError, match="do not match"):
        build_model({**spec, "init_parts": {parts[0]: str(tmp_path / "small")}})
