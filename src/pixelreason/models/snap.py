"""Region snap: a mask's edge follows the image's own edges.

A SAM mask decoder predicts at a quarter of its input's side (32 x 32 logits for the small
presets' 128-pixel input), so the upsampled mask's edge is smooth and misses the object's by a
few pixels: on ReasonWorld's val stream, half the wrong pixels of the default's fairly good
masks lie within 2 pixels of the true edge. Region snap splits the image into small regions of
near-uniform colour (Felzenszwalb and Huttenlocher's graph segmentation, from scikit-image; the
same for every question about the image, so it is kept with the image cache) and gives each
region the mean of the mask's probability over it: a region is in the mask where that mean
reaches `share`. The edges a region follows are the image's, so the mask's edge moves to the
nearest colour edge; a region larger than the object (a flat background) keeps its mean, low.

`ModelConfig.snap_scale` turns it on (Felzenszwalb's `scale`: larger gives larger regions) and
`ModelConfig.snap_share` sets the share. It is a post-processing step and learns nothing, so it
suits images whose objects differ from their surroundings in colour, as ReasonWorld's do.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

#: Regions are found on the image scaled down to at most this side (`thumbnail`) and scaled
#: up to the masks' size (nearest), so a large photo costs about what a 512-pixel one does.
MAX_SIDE = 512
#: Felzenszwalb's Gaussian pre-smoothing and smallest region (pixels at the working size):
#: no smoothing and small regions keep thin parts and sharp corners.
SIGMA = 0.0
MIN_SIZE = 5


def thumbnail(image: Image.Image) -> np.ndarray:
    """An RGB image as (h, w, 3) uint8 pixels, scaled down to at most `MAX_SIDE` a side: what
    `image_regions` reads, kept with the image cache."""
    side = max(image.width, image.height)
    if side > MAX_SIDE:
        size = (
            max(1, round(image.width * MAX_SIDE / side)),
            max(1, round(image.height * MAX_SIDE / side)),
        )
        image = image.resize(size, Image.Resampling.BILINEAR)
    return np.asarray(image.convert("RGB"), dtype=np.uint8)


def image_regions(pixels: np.ndarray, scale: float) -> np.ndarray:
    """(h, w) int32 region labels 0..R-1 of (h, w, 3) uint8 RGB pixels (`thumbnail`)."""
    from skimage.segmentation import felzenszwalb  # imported here: a slow import, rarely used

    if pixels.ndim != 3 or pixels.shape[2] != 3:
        raise ValueError(f"region snap needs (h, w, 3) RGB pixels, got {pixels.shape}")
    return felzenszwalb(pixels, scale=scale, sigma=SIGMA, min_size=MIN_SIZE).astype(np.int32)


def snap_logits(logits: torch.Tensor, regions: np.ndarray, share: float) -> torch.Tensor:
    """Mask logits (N, H, W) snapped to `regions` ((h, w) labels, scaled to (H, W) by nearest
    neighbour where they differ): each region's logit becomes logit(p) - logit(share), p the
    mean probability of its pixels, so that the mask (logit > 0) is the union of the regions
    whose mean probability reaches `share`."""
    if not 0.0 < share < 1.0:
        raise ValueError(f"snap share must be in (0, 1), got {share}")
    if not len(logits):
        return logits
    height, width = logits.shape[-2:]
    small_h, small_w = regions.shape
    # the same image, scaled: the aspect ratios agree up to a pixel's rounding of the regions
    if abs(small_h * width - small_w * height) > width + height:
        raise ValueError(f"mask size {(height, width)} does not fit regions {regions.shape}")
    if (small_h, small_w) != (height, width):
        rows = np.minimum(
            ((np.arange(height) + 0.5) * small_h / height).astype(np.int64), small_h - 1
        )
        cols = np.minimum(
            ((np.arange(width) + 0.5) * small_w / width).astype(np.int64), small_w - 1
        )
        regions = regions[rows[:, None], cols[None, :]]
    index = torch.as_tensor(regions.astype(np.int64), device=logits.device).reshape(-1)
    count = int(index.max()) + 1
    probs = torch.sigmoid(logits.float()).reshape(len(logits), -1)
    sums = probs.new_zeros(len(logits), count).index_add_(1, index, probs)
    sizes = torch.bincount(index, minlength=count).clamp_min(1).to(probs.dtype)
    mean = (sums / sizes).clamp(1e-6, 1 - 1e-6)
    snapped = torch.logit(mean) - float(np.log(share / (1 - share)))
    return snapped[:, index].reshape(logits.shape).to(logits.dtype)
