"""Int8 weights for the LLM (`--int8`): what changes, and that answers stay close."""

from __future__ import annotations

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
from pixelreason.models.quantize import quantize_language_model
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
def test_int8_answers_match_float32_on_a_trained_model(trained_dir: Path, turn) -> None:
    image = scene()[0]
    results = []
    for int8 in (False, True):
        segmenter = Segmenter.from_pretrained(trained_dir, int8=int8)
        segmenter.set_image(image)
        results.append(segmenter.segment(turn[0]))
    full, small = results
    assert small.text == full.text == turn[1]
    assert full.masks.shape == small.masks.shape and len(full.masks) == turn[1].count("<SEG>")
    for a, b in zip(full.masks, small.masks, strict=True):
        union = np.logical_or(a, b).sum()
        assert union > 0 and np.logical_and(a, b).sum() / union > 0.9


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
