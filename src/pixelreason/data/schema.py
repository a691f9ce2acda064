"""The one sample type every dataset produces for training the mask models."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from pixelreason.prompting import Turn

#: Ground-truth mask value for pixels excluded from losses and metrics (ReasonSeg's "ignore").
IGNORE_VALUE = 255


@dataclass
class SegSample:
    """An image, a conversation whose answers are all given, and one mask per `<SEG>`.

    masks: uint8 (H, W) arrays with 0 background, 1 target, 255 ignore, in the order the
    `<SEG>` tokens appear across the conversation's answers.
    location: an optional location prompt in normalised image coordinates ([0, 1] of the
    width and height): a box (4,) x0, y0, x1, y1 or points (k, 2) x, y. Only heads with
    location placeholders read it (PixelLLM); others refuse such samples.
    semantic: an optional (H, W) int16 class map of the whole image (0 background, c + 1 for
    class c), which the auxiliary vision-probe loss reads (see `VisionProbe`); generated
    data has one, real datasets need not.
    """

    image: Image.Image
    turns: list[Turn]
    masks: list[np.ndarray] = field(default_factory=list)
    location: np.ndarray | None = None
    semantic: np.ndarray | None = None
