"""PixelLLM's location prompt: a box or points in the image, as embeddings the LLM reads.

A box becomes two corner tokens and k points k point tokens, each a sine-cosine position
embedding through a linear layer plus a learned type embedding (SAM's prompt-encoder recipe).
A small feature extractor then gives a fixed number of embeddings: learnable queries attend to
the prompt tokens and to the image features the LLM sees, whose patch centres carry the same
position embedding, so "which patches lie in the box" is a plain attention match. The outputs
replace the prompt's location placeholders.

Departures from the paper, for size: one-way cross-attention blocks stand in for its two-way
transformer and learnable RoIAlign, and the image features are the backbone's projected
features rather than a separate SAM + EVA02 encoder.
"""

from __future__ import annotations

import math

import torch
from torch import nn

#: Whole-image box, the default location prompt (PixelLLM's (0, 0, H, W)).
WHOLE_IMAGE = (0.0, 0.0, 1.0, 1.0)
#: Token types: a box's top-left corner, its bottom-right corner, a point.
BOX_START, BOX_END, POINT = 0, 1, 2


def sine_cosine(coords: torch.Tensor, frequencies: int) -> torch.Tensor:
    """Fixed Fourier features of normalised coordinates (..., 2) -> (..., 4 * frequencies):
    sin and cos of 2^f * pi * c for f < frequencies, per coordinate."""
    scales = math.pi * 2.0 ** torch.arange(frequencies, device=coords.device, dtype=torch.float32)
    angles = coords.float()[..., None] * scales  # (..., 2, F)
    return torch.cat([angles.sin(), angles.cos()], dim=-1).flatten(-2)


def check_location(location: torch.Tensor) -> torch.Tensor:
    """A location prompt as float coordinates, refusing bad ones with a ValueError.

    A box (4,) x0, y0, x1, y1 with x0 <= x1 and y0 <= y1, or points (k, 2) x, y, k >= 1; all
    in [0, 1] (fractions of the image width and height).
    """
    location = torch.as_tensor(location, dtype=torch.float32)
    is_box = location.shape == (4,)
    is_points = location.ndim == 2 and location.shape[1] == 2 and location.shape[0] >= 1
    if not (is_box or is_points):
        raise ValueError(
            f"a location is a box (4,) or points (k, 2), got shape {tuple(location.shape)}"
        )
    if not bool(torch.isfinite(location).all()) or location.min() < 0 or location.max() > 1:
        raise ValueError("location coordinates must lie in [0, 1] (fractions of the image size)")
    if is_box and (location[2] < location[0] or location[3] < location[1]):
        raise ValueError(f"box {location.tolist()} has x1 < x0 or y1 < y0")
    return location


def location_tokens(location: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Coordinates (K, 2) and token types (K,) of a checked box (two corners) or points."""
    if location.ndim == 1:
        corners = location.view(2, 2)
        return corners, torch.tensor([BOX_START, BOX_END], device=location.device)
    return location, torch.full((len(location),), POINT, device=location.device)


class PromptBlock(nn.Module):
    """Pre-norm cross-attention from the queries to the keys, then an MLP, both residual."""

    def __init__(self, channels: int, heads: int) -> None:
        super().__init__()
        self.norm_query = nn.LayerNorm(channels)
        self.norm_keys = nn.LayerNorm(channels)
        self.attention = nn.MultiheadAttention(channels, heads, batch_first=True)
        self.norm_mlp = nn.LayerNorm(channels)
        self.mlp = nn.Sequential(
            nn.Linear(channels, 4 * channels), nn.GELU(), nn.Linear(4 * channels, channels)
        )

    def forward(self, queries: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
        """queries (B, Q, C), keys (B, K, C) -> (B, Q, C)."""
        keys = self.norm_keys(keys)
        attended, _ = self.attention(self.norm_query(queries), keys, keys, need_weights=False)
        queries = queries + attended
        return queries + self.mlp(self.norm_mlp(queries))


class LocationEncoder(nn.Module):
    """Location prompt + image features -> `num_tokens` embeddings in the LLM's hidden size."""

    def __init__(
        self,
        hidden_size: int,
        channels: int,
        num_tokens: int,
        *,
        frequencies: int = 12,
        heads: int = 4,
        layers: int = 2,
    ) -> None:
        super().__init__()
        self.frequencies = frequencies
        self.position = nn.Linear(4 * frequencies, channels)
        self.types = nn.Embedding(3, channels)
        self.image = nn.Linear(hidden_size, channels)
        self.queries = nn.Parameter(torch.randn(num_tokens, channels) * 0.02)
        self.blocks = nn.ModuleList(PromptBlock(channels, heads) for _ in range(layers))
        self.out = nn.Sequential(nn.LayerNorm(channels), nn.Linear(channels, hidden_size))

    @property
    def num_tokens(self) -> int:
        return int(self.queries.shape[0])

    def forward(self, location: torch.Tensor, image_features: torch.Tensor) -> torch.Tensor:
        """One prompt: location, a checked box (4,) or points (k, 2); image_features (N, D)
        with N = g * g patches in row-major order. Returns (num_tokens, D)."""
        coords, types = location_tokens(location)
        prompt = self.position(sine_cosine(coords, self.frequencies)) + self.types(types)
        image = self.image(image_features) + self.position(
            sine_cosine(
                patch_centres(image_features.shape[0], image_features.device), self.frequencies
            )
        )
        keys = torch.cat([prompt, image.to(prompt.dtype)])[None]
        queries = self.queries[None]
        for block in self.blocks:
            queries = block(queries, keys)
        return self.out(queries[0])


def patch_centres(count: int, device: torch.device | None = None) -> torch.Tensor:
    """Normalised (x, y) centres (count, 2) of a square grid of `count` patches, row-major."""
    grid = int(round(math.sqrt(count)))
    if grid * grid != count:
        raise ValueError(f"{count} image features are not a square grid of patches")
    steps = (torch.arange(grid, device=device, dtype=torch.float32) + 0.5) / grid
    ys, xs = torch.meshgrid(steps, steps, indexing="ij")
    return torch.stack([xs.flatten(), ys.flatten()], dim=-1)
