"""Int8 weights for the LLM (`--int8`) and float16 decoding steps (half steps): what changes,
and that answers stay close."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import ONE, TWO, fresh_tiny, scene
from torch import nn
from torch.ao.nn.quantized import dynamic

from pixelreason.api import Segmenter
from pixelreason.cli import main
from pixelreason.errors import CheckpointError, InputError
from pixelreason.models.quantize import (
    STEP_ROWS,
    HalfStepLinear,
    half_steps,
    quantize_language_model,
)
from pixelreason.models.segmenter import PixelReasonModel


def _linears(module: nn.Module) -> int:
    return sum(type(m) is nn.Linear for m in module.modules())


def test_only_the_llm_linears_become_int8(trained_dir: Path) -> None:
    segmenter = Segmenter.from_pretrained(trained_dir, int8=True)
    model = segmenter.model
    language = model.backbone.model
    assert _linears(language.model.language_model) == 0 and type(language.lm_head) is not nn.Linear
    quantized = [m for m in language.modules() if isinstance(m, dynamic.Linear)]
    layers = language.config.text_config.num_hidden_layers
    assert len(quantized) == 7 * layers + 1
    assert _linears(model.head) > 0  # SAM and the probes keep float32
    assert "(int8 LLM)" in segmenter.description


@pytest.mark.parametrize("turn", [ONE, TWO])
@pytest.mark.parametrize("option, agreement", [("int8", 0.9), ("half_steps", 0.98)])
def test_smaller_weights_answer_as_float32_on_a_trained_model(
    trained_dir: Path, turn, option: str, agreement: float
) -> None:
    image = scene()[0]
    results = []
    for on in (False, True):
        options = {"half_steps": False, option: on}  # float32 throughout, then the option
        segmenter = Segmenter.from_pretrained(trained_dir, **options)
        segmenter.set_image(image)
        results.append(segmenter.segment(turn[0]))
    full, small = results
    assert small.text == full.text == turn[1]
    assert full.masks.shape == small.masks.shape and len(full.masks) == turn[1].count("<SEG>")
    for a, b in zip(full.masks, small.masks, strict=True):
        union = np.logical_or(a, b).sum()
        assert union > 0 and np.logical_and(a, b).sum() / union > agreement


def test_int8_logits_stay_close_to_float32() -> None:
    full = fresh_tiny().eval()
    small = quantize_language_model(fresh_tiny().eval())
    ids = torch.randint(0, 100, (2, 12))
    with torch.no_grad():
        a = full.backbone.model(input_ids=ids).logits
        b = small.backbone.model(input_ids=ids).logits
    assert not torch.equal(a, b)  # the weights really changed
    assert (a - b).abs().max() < 0.05 * a.abs().max()


def test_int8_model_is_not_saved(trained_dir: Path, tmp_path: Path) -> None:
    model = quantize_language_model(PixelReasonModel.from_pretrained(trained_dir))
    with pytest.raises(CheckpointError, match="int8"):
        model.save_pretrained(tmp_path / "m")
    assert not (tmp_path / "m").exists()


def test_int8_needs_the_cpu() -> None:
    with pytest.raises(InputError, match="CPU only"):
        quantize_language_model(fresh_tiny().to("meta"))


def test_cli_segment_int8(trained_dir: Path, example_png: Path, tmp_path: Path, capsys) -> None:
    args = ["segment", str(example_png), ONE[0], "--model", str(trained_dir), "--int8"]
    assert main([*args, "--out", str(tmp_path / "out")]) == 0
    assert capsys.readouterr().out.splitlines()[0] == ONE[1]
    assert len(json.loads((tmp_path / "out" / "result.json").read_text())["targets"]) == 1


def _half_linear(rows_in: int = 64, rows_out: int = 48) -> tuple[nn.Linear, HalfStepLinear]:
    torch.manual_seed(0)
    plain = nn.Linear(rows_in, rows_out)
    half = copy.deepcopy(plain)
    half.__class__ = HalfStepLinear
    return plain, half


def test_half_steps_round_few_rows_only() -> None:
    plain, half = _half_linear()
    with torch.no_grad():
        many = torch.randn(2, STEP_ROWS, 64)  # more rows than a step: float32 as before
        assert torch.equal(half(many), plain(many))
        few = torch.randn(2, 1, 64)
        a, b = plain(few), half(few)
    assert b.dtype == torch.float32 and not torch.equal(a, b)
    assert torch.allclose(a, b, rtol=0, atol=2e-3 * a.abs().max().item())


def test_half_steps_follow_the_weight_and_fall_back() -> None:
    plain, half = _half_linear()
    x = torch.randn(1, 64)
    with torch.no_grad():
        half(x)  # makes the copy
        for layer in (plain, half):
            layer.weight.mul_(-2.0)  # an in-place update, as an optimizer step makes
        a, b = plain(x), half(x)
        assert torch.allclose(a, b, atol=2e-3 * a.abs().max().item())
        for layer in (plain, half):
            layer.weight.mul_(1e4)  # the float16 product overflows: float32 instead
        big = 100 * x
        assert torch.equal(half(big), plain(big)) and torch.isfinite(half(big)).all()
    x.requires_grad_(True)  # with gradients: float32, and they flow
    out = half(x)
    assert torch.equal(out, plain(x))
    out.sum().backward()
    assert half.weight.grad is not None


def test_half_steps_change_the_llm_but_not_the_state_dict(trained_dir: Path, tmp_path: Path):
    model = PixelReasonModel.from_pretrained(trained_dir)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    language = model.backbone.model
    layers = language.config.text_config.num_hidden_layers
    assert half_steps(model) == 7 * layers
    assert _linears(language.model.language_model) == 0
    assert type(language.lm_head) is nn.Linear  # its scores pick the next token: float32
    assert _linears(model.head) > 0
    after = model.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    model.save_pretrained(tmp_path / "m")  # saves as a plain model
    again = PixelReasonModel.from_pretrained(tmp_path / "m")
    assert not any(isinstance(m, HalfStepLinear) for m in again.modules())


def test_half_steps_are_on_by_default_on_a_cpu_with_vector_units(trained_dir, monkeypatch):
    def count(**options) -> int:
        segmenter = Segmenter.from_pretrained(trained_dir, **options)
        return sum(isinstance(m, HalfStepLinear) for m in segmenter.model.modules())

    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX2")
    assert count() > 0
    assert count(half_steps=False) == 0
    assert count(int8=True) == 0
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "DEFAULT")
    assert count() == 0  # float16 products without vector units are slow
    assert count(half_steps=True) > 0


def test_cli_segment_without_half_steps(trained_dir, example_png, tmp_path, capsys) -> None:
    args = ["segment", str(example_png), ONE[0], "--model", str(trained_dir), "--no-half-steps"]
    assert main([*args, "--out", str(tmp_path / "out")]) == 0
    assert capsys.readouterr().out.splitlines()[0] == ONE[1]
