"""The knowledge adapter: a LoRA on the LLM that only the knowledge check's statements read."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from conftest import fresh_tiny, scene, training_samples
from peft import LoraConfig, inject_adapter_in_model
from safetensors.torch import load_file, save_file

from pixelreason.cli import main
from pixelreason.data.world.samples import generate_sample
from pixelreason.errors import CheckpointError, InputError
from pixelreason.models.adapter import ADAPTER_DIR, WEIGHTS_FILE, KnowledgeAdapter
from pixelreason.models.quantize import quantize_language_model
from pixelreason.models.segmenter import PixelReasonModel
from pixelreason.prompting import Turn
from pixelreason.registry import load_model
from pixelreason.train.lora import LoraSettings, language_model
from pixelreason.train.recipe import load_recipe
from pixelreason.train.trainer import FINAL_DIR, TrainConfig, prepare_for_training, train

TARGETS = ["q_proj", "v_proj", "down_proj"]


def _adapter(model: PixelReasonModel, std: float = 0.1, seed: int = 0) -> KnowledgeAdapter:
    """An adapter of `model`'s LLM on TARGETS, its B matrices drawn with `std` (0: a no-op)."""
    adapted = copy.deepcopy(language_model(model))
    inject_adapter_in_model(LoraConfig(r=4, lora_alpha=8, target_modules=TARGETS), adapted)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in adapted.named_parameters():
            if "lora_B" in name:
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * std)
    return KnowledgeAdapter.from_model(adapted), adapted


def _hidden(module: torch.nn.Module, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return module(input_ids=ids).last_hidden_state


def test_merged_adapter_computes_what_peft_computes_and_leaves_the_llm_as_it_was() -> None:
    model = fresh_tiny().eval()
    adapter, with_peft = _adapter(model)
    assert set(adapter.weights) and all("lora_" in name for name in adapter.weights)
    own = language_model(model)
    before = {name: tensor.clone() for name, tensor in own.state_dict().items()}
    merged = adapter.merged(own)
    ids = torch.randint(0, 50, (2, 9))
    assert torch.allclose(_hidden(merged, ids), _hidden(with_peft.eval(), ids), atol=1e-5)
    assert not torch.allclose(_hidden(merged, ids), _hidden(own, ids), atol=1e-3)
    assert all(torch.equal(before[k], v) for k, v in own.state_dict().items())
    assert not any(p.requires_grad for p in merged.parameters()) and not merged.training


def test_the_adapter_saves_beside_the_weights_and_loads_with_the_model(tmp_path: Path) -> None:
    model = fresh_tiny().eval()
    model.save_pretrained(tmp_path / "plain")
    adapter, _ = _adapter(model)
    model.set_knowledge_adapter(adapter)
    model.save_pretrained(tmp_path / "adapted")
    assert (tmp_path / "adapted" / ADAPTER_DIR / "adapter_config.json").is_file()
    # the weights file is the model's own: the adapter is not in it
    keys = set(load_file(tmp_path / "adapted" / "model.safetensors"))
    assert keys == set(load_file(tmp_path / "plain" / "model.safetensors"))
    loaded = PixelReasonModel.from_pretrained(tmp_path / "adapted")
    ids = torch.randint(0, 50, (1, 7))
    assert torch.allclose(
        _hidden(loaded.knowledge_language_model, ids),
        _hidden(model.knowledge_language_model, ids),
        atol=1e-6,
    )
    assert PixelReasonModel.from_pretrained(tmp_path / "plain").knowledge_language_model is None


def test_the_llm_reads_the_adapter_only_inside_the_block() -> None:
    model = fresh_tiny().eval()
    model.set_knowledge_adapter(_adapter(model)[0])
    language = model.backbone.model.model
    own = language.language_model
    ids = torch.randint(0, 50, (1, 7))
    with model._knowing():
        assert language.language_model is model.knowledge_language_model
        inside = _hidden(language.language_model, ids)
    assert language.language_model is own
    assert not torch.allclose(inside, _hidden(own, ids), atol=1e-3)
    with pytest.raises(RuntimeError), model._knowing():
        raise RuntimeError("a failed pass")
    assert language.language_model is own  # put back on an error too
    model.config.knowledge_adapter = False
    with model._knowing():
        assert language.language_model is own


def test_adapters_that_do_not_fit_are_refused(tmp_path: Path) -> None:
    model = fresh_tiny().eval()
    adapter, _ = _adapter(model)
    # an adapter of a wider LLM: its matrices have other shapes
    wider = {name: torch.zeros(t.shape[0] + 1, t.shape[1]) for name, t in adapter.weights.items()}
    with pytest.raises(CheckpointError, match="does not fit"):
        model.set_knowledge_adapter(KnowledgeAdapter(adapter.config, wider))
    short = KnowledgeAdapter(adapter.config, dict(list(adapter.weights.items())[1:]))
    with pytest.raises(CheckpointError, match="does not fit"):
        model.set_knowledge_adapter(short)
    adapter.save(tmp_path / "adapter")
    (tmp_path / "adapter" / WEIGHTS_FILE).write_bytes(b"not safetensors")
    with pytest.raises(CheckpointError, match="cannot read a LoRA adapter"):
        KnowledgeAdapter.load(tmp_path / "adapter")
    save_file({}, tmp_path / "adapter" / WEIGHTS_FILE)
    with pytest.raises(CheckpointError, match="holds no LoRA adapter"):
        KnowledgeAdapter.load(tmp_path / "adapter")


@pytest.fixture(scope="module")
def default_copy():
    model, _ = load_model("default")
    return model


def _answers(model: PixelReasonModel, indices) -> list:
    out = []
    for index in indices:
        sample = generate_sample(0, "zeroshot", index)
        cache = model.encode_image(model.preprocessor.prepare_image(sample.image))
        out.append(model.answer_batch([cache], [[Turn(sample.texts[0])]])[0])
    return out


def test_a_no_op_adapter_gives_the_answers_of_the_llm_alone(default_copy) -> None:
    """The statements read a no-op adapter's LLM, which reads each prompt whole rather than
    after the kept states: the answers and the checks' notes are those without it."""
    model = default_copy
    bundled = model.knowledge_adapter
    model.set_knowledge_adapter(_adapter(model, std=0.0)[0])
    try:
        model.config.knowledge_adapter = True
        on = _answers(model, range(6))
        model.config.knowledge_adapter = False
        off = _answers(model, range(6))
    finally:
        model.config.knowledge_adapter = True
        model.set_knowledge_adapter(bundled)
    assert any("knowledge_check" in a.extras or "knowledge_ranking" in a.extras for a in off)
    for a, b in zip(on, off, strict=True):
        assert a.text == b.text
        assert {k: v for k, v in a.extras.items() if k.startswith("knowledge")} == {
            k: v for k, v in b.extras.items() if k.startswith("knowledge")
        }
        assert torch.allclose(a.mask_logits, b.mask_logits, atol=1e-4)


def test_int8_makes_the_adapter_llm_int8_too(default_copy) -> None:
    model = copy.deepcopy(default_copy)
    model.set_knowledge_adapter(_adapter(model, std=0.01)[0])
    quantize_language_model(model)
    assert not any(type(m) is torch.nn.Linear for m in model.knowledge_language_model.modules())
    assert _answers(model, [0])[0].text
    with pytest.raises(CheckpointError):  # merged into int8 layers: refused, in words
        model.set_knowledge_adapter(_adapter(fresh_tiny())[0])


def test_training_can_save_the_adapter_alone(tmp_path: Path) -> None:
    samples = training_samples()
    config = TrainConfig(
        steps=2,
        batch_size=3,
        lr=1e-3,
        warmup_steps=1,
        log_every=1,
        save_every=2,
        lora=LoraSettings(r=4, alpha=8, dropout=0.0),
        save_adapter=True,
    )
    result = train(fresh_tiny(), lambda i: samples[i % 3], tmp_path, config)
    adapter = KnowledgeAdapter.load(result.final_dir)
    assert not (tmp_path / FINAL_DIR / "model.safetensors").exists()
    assert adapter.config.r == 4 and any("lora_B" in name for name in adapter.weights)
    assert any(
        tensor.abs().sum() > 0 for name, tensor in adapter.weights.items() if "lora_B" in name
    )
    fresh_tiny().set_knowledge_adapter(adapter)  # it fits the model it was trained on


def test_a_recipe_saves_an_adapter_only_with_lora(tmp_path: Path) -> None:
    recipe = tmp_path / "r.yaml"
    recipe.write_text("model: {preset: tiny}\ntrain: {steps: 1, save_adapter: true}\nout: x\n")
    with pytest.raises(InputError, match="save_adapter"):
        load_recipe(recipe)


def test_cli_refuses_the_adapter_flag_for_a_model_without_one(trained_dir, tmp_path, capsys):
    image = tmp_path / "i.png"
    scene()[0].save(image)
    argv = ["segment", str(image), "Where is the red square?", "--model", str(trained_dir)]
    assert main([*argv, "--knowledge-adapter", "--out", str(tmp_path / "o")]) != 0
    assert "no knowledge adapter" in capsys.readouterr().err
    assert main([*argv, "--no-knowledge-adapter", "--out", str(tmp_path / "o")]) == 0


@pytest.mark.parametrize(
    ("index", "wanted"),
    [(101, "bread loaf"), (105, "cat")],  # "... goes into a toaster.", "... chases mice."
)
def test_the_bundled_adapter_states_facts_the_llm_does_not(default_copy, index, wanted) -> None:
    """Zero-shot queries whose facts training showed only as text: with the ranking part off,
    the LLM's own statements leave the answer on another object, and the adapter's statement
    names the target, which the answer then grounds."""
    model = default_copy
    assert model.knowledge_language_model is not None  # the bundled default has one
    sample = generate_sample(0, "zeroshot", index)
    cache = model.encode_image(model.preprocessor.prepare_image(sample.image))
    answers = {}
    try:
        model.config.knowledge_ranking = False
        for on in (True, False):
            model.config.knowledge_adapter = on
            answers[on] = model.answer_batch([cache], [[Turn(sample.texts[0])]])[0]
    finally:
        model.config.knowledge_ranking = model.config.knowledge_adapter = True
    assert wanted not in answers[False].text
    assert wanted in answers[True].text
    assert answers[True].extras["knowledge_check"]["statement"].startswith(f"A {wanted}")


def test_training_the_llm_drops_the_adapter_and_training_the_rest_keeps_it() -> None:
    model = fresh_tiny()
    adapter, _ = _adapter(model)
    model.set_knowledge_adapter(adapter)
    prepare_for_training(model, TrainConfig(freeze=["backbone.model.model.language_model"]))
    assert model.knowledge_adapter is adapter
    prepare_for_training(model, TrainConfig())
    assert model.knowledge_adapter is None and model.knowledge_language_model is None


def test_the_absence_part_refuses_only_where_the_adapter_agrees(default_copy) -> None:
    """A fresh zero-shot query, "Find the thing that is often put on top of a cake.": the
    LLM's free statement names a class the image lacks, and alone it has the answer refuse;
    the adapter's LLM finds the strawberry about as likely, and the answer grounds it."""
    model = default_copy
    sample = generate_sample(1, "zeroshot", 212)
    cache = model.encode_image(model.preprocessor.prepare_image(sample.image))
    answers = {}
    try:
        for on in (True, False):
            model.config.knowledge_adapter = on
            answers[on] = model.answer_batch([cache], [[Turn(sample.texts[0])]])[0]
    finally:
        model.config.knowledge_adapter = True
    assert "absent" in answers[False].extras["knowledge_check"]
    assert "strawberry <SEG>" in answers[True].text
    assert "absent" not in answers[True].extras.get("knowledge_check", {})
