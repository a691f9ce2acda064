"""Shared fixtures: tiny models (random and briefly trained) and small synthetic samples."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pixelreason.config import tiny
from pixelreason.data.schema import SegSample
from pixelreason.models.segmenter import PixelReasonModel
from pixelreason.prompting import Turn

#: Questions and answers the trained fixture model learns: one, two and zero targets.
ONE = ("Where is the red square?", "It is <SEG>.")
TWO = ("Where are the squares?", "They are <SEG> and <SEG>.")
NONE = ("Where is the giraffe?", "There is no giraffe in this image.")


def scene() -> tuple[Image.Image, np.ndarray, np.ndarray]:
    """A 48x80 image with a red and a blue square, and their uint8 masks."""
    pixels = np.full((48, 80, 3), 40, dtype=np.uint8)
    red = np.zeros((48, 80), dtype=np.uint8)
    blue = np.zeros((48, 80), dtype=np.uint8)
    red[8:28, 8:30] = 1
    blue[20:44, 46:74] = 1
    pixels[red == 1] = (220, 30, 30)
    pixels[blue == 1] = (30, 60, 220)
    return Image.fromarray(pixels), red, blue


def training_samples() -> list[SegSample]:
    image, red, blue = scene()
    return [
        SegSample(image, [Turn(*ONE)], [red]),
        SegSample(image, [Turn(*TWO)], [red, blue]),
        SegSample(image, [Turn(*NONE)], []),
    ]


def fresh_tiny(seed: int = 0) -> PixelReasonModel:
    torch.manual_seed(seed)
    return PixelReasonModel.from_config(tiny())


def train(
    model: PixelReasonModel, samples: list[SegSample], steps: int, lr: float = 3e-3
) -> list[float]:
    batch = model.collate(samples)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    model.train()
    losses = []
    for _ in range(steps):
        out = model(batch)
        optimizer.zero_grad()
        out.loss.backward()
        optimizer.step()
        losses.append(out.loss.item())
    model.eval()
    return losses


@pytest.fixture
def tiny_model() -> PixelReasonModel:
    return fresh_tiny().eval()


@pytest.fixture(scope="session")
def trained_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny model overfit on ONE/TWO/NONE (seconds), saved with save_pretrained."""
    model = fresh_tiny()
    train(model, training_samples(), steps=400, lr=1e-3)
    directory = tmp_path_factory.mktemp("models") / "trained"
    model.save_pretrained(directory)
    return directory


@pytest.fixture(scope="session")
def example_png(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("images") / "scene.png"
    scene()[0].save(path)
    return path
