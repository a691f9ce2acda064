"""Model names: bundled models, presets and picking a method's bundled model (`--method`)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from pixelreason import registry
from pixelreason.cli import main
from pixelreason.config import METHOD_MODELS, preset
from pixelreason.errors import CheckpointError, InputError
from pixelreason.models.segmenter import PixelReasonModel


@pytest.fixture
def bundle(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A bundled-models folder holding a tiny PixelLM-head model as `default-pixellm`."""
    torch.manual_seed(0)
    PixelReasonModel.from_config(preset("tiny-pixellm")).save_pretrained(
        tmp_path / "default-pixellm"
    )
    monkeypatch.setattr(registry, "BUNDLED_MODELS_DIR", tmp_path)
    return tmp_path


def test_method_alone_loads_that_methods_bundled_model(bundle: Path) -> None:
    model, description = registry.load_model(method="pixellm")
    assert model.config.head == "pixellm" and description == "bundled default-pixellm"
    assert "default-pixellm" in registry.available_models()


def test_method_without_a_bundled_model_says_how_to_get_one(bundle: Path) -> None:
    with pytest.raises(CheckpointError, match="recipes/sam4mllm.yaml"):
        registry.load_model(method="sam4mllm")


def test_method_must_match_the_given_model(bundle: Path) -> None:
    model, _ = registry.load_model("random:tiny", method="lisa")
    assert model.config.head == "lisa"
    with pytest.raises(InputError, match="implements the lisa method, not pixellm"):
        registry.load_model("random:tiny", method="pixellm")
    with pytest.raises(InputError, match="unknown method"):
        registry.load_model(method="nope")


def test_every_method_names_a_registered_head() -> None:
    from pixelreason.models.heads import HEADS

    assert set(METHOD_MODELS) <= set(HEADS) | {"pixelllm"}
    assert METHOD_MODELS["lisa"] == registry.DEFAULT_MODEL


def test_cli_method_mismatch_is_one_line_exit_2(
    bundle: Path, example_png: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["segment", str(example_png), "q", "--model", "random:tiny", "--method", "pixellm"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "not pixellm" in err
    code = main(["segment", str(example_png), "q", "--method", "pixellm", "--out", str(tmp_path)])
    assert code == 0 and (tmp_path / "result.json").is_file()
