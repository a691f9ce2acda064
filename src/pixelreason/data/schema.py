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
    """

    image: Image.Image
    turns: list[Turn]
    masks: list[np.ndarray] = field(default_factory=list)
