"""Resolving a model name or directory to a loaded model."""

from __future__ import annotations

from pathlib import Path

import torch

from pixelreason.config import DEFAULT_MODEL, METHOD_MODELS, PRESETS, preset
from pixelreason.errors import CheckpointError, InputError
from pixelreason.models.segmenter import PixelReasonModel

#: Trained models shipped inside the package, by name.
BUNDLED_MODELS_DIR = Path(__file__).parent / "assets" / "models"
#: Preset used by "default" until trained default weights are bundled.
FALLBACK_PRESET = "tiny"


def bundled_models() -> dict[str, Path]:
    """Names of the trained models bundled with this installation."""
    if not BUNDLED_MODELS_DIR.is_dir():
        return {}
    return {p.name: p for p in sorted(BUNDLED_MODELS_DIR.iterdir()) if p.is_dir()}


def available_models() -> list[str]:
    return sorted({DEFAULT_MODEL, *bundled_models(), *(f"random:{p}" for p in PRESETS)})


def model_for_method(method: str) -> str:
    """The bundled model that implements `method`, or a clear error if none is bundled."""
    if method not in METHOD_MODELS:
        raise InputError(f"unknown method {method!r}; choose from {', '.join(METHOD_MODELS)}")
    name = METHOD_MODELS[method]
    if name != DEFAULT_MODEL and name not in bundled_models():
        raise CheckpointError(
            f"this installation bundles no trained {method} model yet; train one with "
            f"`pixelreason train recipes/{method}.yaml` and pass --model DIR"
        )
    return name


def load_model(
    name_or_path: str | Path | None = None,
    *,
    method: str | None = None,
    device: str | torch.device = "cpu",
    int8: bool = False,
    half_steps: bool | None = None,
) -> tuple[PixelReasonModel, str]:
    """Load a model and describe it in one line.

    Accepts a directory written by `save_pretrained`, the name of a bundled model, or
    `random:PRESET` for an untrained model (tests, training from scratch). `default` is the
    bundled default model, or, if this installation has none yet, a random tiny model.
    `method` (e.g. "pixellm") alone picks that method's bundled model; with a model it
    checks that the model implements that method. `int8`: the LLM's linear layers in int8,
    for inference on a CPU (`pixelreason.models.quantize`). `half_steps`: decoding steps
    multiply by float16 copies of the LLM's weights (`quantize.half_steps`); None: on where
    the model runs on a CPU with fast float16 products (`quantize.half_steps_pay`) without
    int8.
    """
    if name_or_path is None:
        name_or_path = model_for_method(method) if method else DEFAULT_MODEL
    model, description = _load(name_or_path, device)
    if method is not None and model.config.head != method:
        raise InputError(f"{description} implements the {model.config.head} method, not {method}")
    if int8:
        from pixelreason.models.quantize import quantize_language_model

        quantize_language_model(model)
        description += " (int8 LLM)"
    else:
        from pixelreason.models import quantize

        if half_steps is None:
            half_steps = torch.device(device).type == "cpu" and quantize.half_steps_pay()
        if half_steps:
            quantize.half_steps(model)
    return model, description


def _load(name_or_path: str | Path, device: str | torch.device) -> tuple[PixelReasonModel, str]:
    text = str(name_or_path)
    path = Path(text)
    if path.is_dir():
        return PixelReasonModel.from_pretrained(path, device=device), f"model from {path}"
    bundled = bundled_models()
    if text in bundled:
        return PixelReasonModel.from_pretrained(bundled[text], device=device), f"bundled {text}"
    if text == DEFAULT_MODEL:
        text = f"random:{FALLBACK_PRESET}"
    if text.startswith("random:"):
        config = preset(text.removeprefix("random:"))
        torch.manual_seed(0)  # the same untrained model every time
        model = PixelReasonModel.from_config(config).to(device).eval()
        return model, f"UNTRAINED randomly initialised '{config.preset}' preset (answers are noise)"
    if path.suffix or "/" in text or "\\" in text:
        raise CheckpointError(f"model directory not found: {text}")
    raise CheckpointError(
        f"unknown model {text!r}: give a model directory or one of {', '.join(available_models())}"
    )
