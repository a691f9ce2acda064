"""scripts/average_models.py: a weight average of two models (WiSE-FT)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch
from conftest import fresh_tiny

from pixelreason.config import tiny
from pixelreason.models.segmenter import PixelReasonModel

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "average_models.py"


def _script():
    spec = importlib.util.spec_from_file_location("average_models", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_average_moves_each_weight_between_the_two_models() -> None:
    script = _script()
    base, tuned = fresh_tiny(0), fresh_tiny(1)
    before = {k: v.clone() for k, v in base.state_dict().items()}
    theirs = tuned.state_dict()
    changed = script.average(base, tuned, 0.25)
    assert changed > 0
    for name, tensor in base.state_dict().items():
        if tensor.is_floating_point():
            expected = 0.75 * before[name] + 0.25 * theirs[name]
            assert torch.allclose(tensor, expected, atol=1e-6), name
        else:
            assert torch.equal(tensor, before[name])
    with pytest.raises(ValueError, match="weight"):
        script.average(base, tuned, 1.5)


def test_average_refuses_models_of_another_architecture() -> None:
    script = _script()
    config = tiny()
    config.llava["text_config"]["intermediate_size"] *= 2
    with pytest.raises(ValueError, match="shape"):
        script.average(fresh_tiny(0), PixelReasonModel.from_config(config), 0.5)


def test_average_command_writes_a_model_and_refuses_a_missing_one(
    trained_dir: Path, tmp_path: Path
) -> None:
    script = _script()
    out = tmp_path / "avg"
    assert script.main([str(trained_dir), str(trained_dir), str(out)]) == 0
    a = PixelReasonModel.from_pretrained(trained_dir).state_dict()
    b = PixelReasonModel.from_pretrained(out).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)  # a model averaged with itself
    assert script.main([str(trained_dir), str(tmp_path / "none"), str(out)]) == 2
