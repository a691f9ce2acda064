"""PixelLM's head: a segmentation codebook read by a lightweight pixel decoder, no SAM.

Each target in an answer is written as one *codebook occurrence*: the L x N tokens
`<SEG_0_0> ... <SEG_{L-1}_{N-1}>` (L groups, N tokens per group). Group l is tied to one scale of
the vision tower, the patch features of one of L layers (the last being what the LLM sees).
The LLM states of a group's N tokens are fused by a linear projection into one query, and the
pixel decoder turns the L queries and the L feature maps into one mask.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from pixelreason.models.heads.base import HeadInputs, MaskHead, MaskPrediction
from pixelreason.tokens import codebook_tokens


@dataclass(frozen=True)
class PixelLMSettings:
    """Head options (`head_args`); PixelLM's reference uses 2 groups x 3 tokens."""

    groups: int = 2
    tokens_per_group: int = 3
    #: Vision hidden-state index per group, shallow to deep; default: evenly spaced, ending
    #: at the last layer.
    layers: tuple[int, ...] | None = None
    #: Channels of the pixel decoder.
    channels: int = 64

    @classmethod
    def from_args(cls, args: dict[str, Any]) -> PixelLMSettings:
        unknown = sorted(set(args) - {"groups", "tokens_per_group", "layers", "channels"})
        if unknown:
            raise ValueError(f"unknown PixelLM head options {unknown}")
        layers = args.get("layers")
        settings = cls(**{**args, "layers": None if layers is None else tuple(layers)})
        if settings.groups < 1 or settings.tokens_per_group < 1:
            raise ValueError("the PixelLM codebook needs at least one group and one token")
        if settings.layers is not None and len(settings.layers) != settings.groups:
            raise ValueError(f"{settings.groups} groups need as many layers, got {layers}")
        return settings

    def vision_layers(self, num_layers: int) -> tuple[int, ...]:
        if self.layers is not None:
            return self.layers
        step = max(num_layers // self.groups, 1)
        return tuple(num_layers - step * (self.groups - 1 - g) for g in range(self.groups))


class LayerNorm2d(nn.Module):
    """LayerNorm over the channels of a (B, C, H, W) map."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class PixelDecoder(nn.Module):
    """Queries (T, L, C) x feature maps (T, L, C, g, g) -> mask logits (T, 4g, 4g).

    Coarse to fine over the scales, deepest first: the running map adds scale l's features,
    is modulated by query l (FiLM) and refined by a residual 3x3 conv block; two transposed
    convs upsample 4x, and a per-target vector from all queries reads out the mask (a dot
    product per pixel, as in SAM's hypernetwork read-out).
    """

    def __init__(self, channels: int, groups: int) -> None:
        super().__init__()
        self.film = nn.ModuleList(nn.Linear(channels, 2 * channels) for _ in range(groups))
        self.blocks = nn.ModuleList(
            nn.Sequential(
                nn.Conv2d(channels, channels, 3, padding=1),
                LayerNorm2d(channels),
                nn.GELU(),
                nn.Conv2d(channels, channels, 3, padding=1),
            )
            for _ in range(groups)
        )
        self.upscale = nn.Sequential(
            nn.ConvTranspose2d(channels, channels // 2, 2, stride=2),
            LayerNorm2d(channels // 2),
            nn.GELU(),
            nn.ConvTranspose2d(channels // 2, channels // 4, 2, stride=2),
            nn.GELU(),
        )
        self.readout = nn.Sequential(
            nn.Linear(groups * channels, channels),
            nn.GELU(),
            nn.Linear(channels, channels // 4),
        )

    def forward(self, queries: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        x = torch.zeros_like(features[:, 0])
        for level in reversed(range(queries.shape[1])):
            x = x + features[:, level]
            scale, shift = self.film[level](queries[:, level]).chunk(2, dim=-1)
            x = x * (1 + scale[..., None, None]) + shift[..., None, None]
            x = x + self.blocks[level](x)
        upscaled = self.upscale(x)
        weights = self.readout(queries.flatten(1))
        return torch.einsum("tc,tchw->thw", weights, upscaled)


class PixelLMHead(MaskHead):
    """Codebook occurrences -> fused queries -> SAM-free pixel decoder, one mask per target."""

    name: ClassVar[str] = "pixellm"

    def __init__(
        self, hidden_size: int, vision_size: int, num_vision_layers: int, settings: PixelLMSettings
    ) -> None:
        super().__init__()
        self.settings = settings
        self.vision_layers = settings.vision_layers(num_vision_layers)
        groups, per_group, channels = settings.groups, settings.tokens_per_group, settings.channels
        self.codebook = codebook_tokens(groups, per_group)
        # Within a group the N token states are fused by one linear projection.
        self.fuse = nn.ModuleList(
            nn.Linear(per_group * hidden_size, channels) for _ in range(groups)
        )
        self.scales = nn.ModuleList(
            nn.Sequential(nn.LayerNorm(vision_size), nn.Linear(vision_size, channels))
            for _ in range(groups)
        )
        self.decoder = PixelDecoder(channels, groups)

    @classmethod
    def build(
        cls,
        backbone: Any,
        sam_config: dict[str, Any] | None,
        args: dict[str, Any],
        *,
        sam: Any = None,
    ) -> PixelLMHead:
        settings = PixelLMSettings.from_args(args)
        num_layers = backbone.vision_num_layers
        for layer in settings.vision_layers(num_layers):
            if not -num_layers - 1 <= layer <= num_layers:
                raise ValueError(f"vision layer {layer} outside the tower's {num_layers} layers")
        return cls(backbone.hidden_size, backbone.vision_hidden_size, num_layers, settings)

    @classmethod
    def special_tokens_for(cls, args: dict[str, Any]) -> tuple[str, ...]:
        settings = PixelLMSettings.from_args(args)
        return codebook_tokens(settings.groups, settings.tokens_per_group)

    @property
    def tokens(self) -> tuple[str, ...]:
        return self.codebook

    @property
    def target_text(self) -> str:
        return "".join(self.codebook)

    def encode_image(
        self,
        head_pixels: torch.Tensor | None,
        image_features: torch.Tensor,
        vision_states: list[torch.Tensor],
    ) -> torch.Tensor:
        """Per-scale feature maps (B, L, C, g, g) from the vision tower's patch features."""
        maps = []
        for project, states in zip(self.scales, vision_states, strict=True):
            grid = int(round(states.shape[1] ** 0.5))
            projected = project(states)  # (B, g*g, C)
            maps.append(projected.transpose(1, 2).reshape(states.shape[0], -1, grid, grid))
        return torch.stack(maps, dim=1)

    def _occurrences(self, token_ids: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """(K, 2) [row, start] of every complete codebook occurrence, in reading order."""
        ids = torch.tensor([self.token_ids[t] for t in self.codebook], device=token_ids.device)
        length = len(ids)
        if token_ids.shape[1] < length:
            return token_ids.new_zeros((0, 2))
        windows = token_ids.unfold(1, length, 1)  # (B, L - length + 1, length)
        ok = (windows == ids).all(-1) & valid.unfold(1, length, 1).all(-1)
        return ok.nonzero()

    def count_targets(self, token_ids: torch.Tensor) -> torch.Tensor:
        found = self._occurrences(token_ids, torch.ones_like(token_ids, dtype=torch.bool))
        return torch.bincount(found[:, 0], minlength=token_ids.shape[0])

    def forward(self, inputs: HeadInputs) -> MaskPrediction:
        found = self._occurrences(inputs.token_ids, inputs.valid)
        rows, starts = found[:, 0], found[:, 1]
        groups, per_group = self.settings.groups, self.settings.tokens_per_group
        offsets = torch.arange(groups * per_group, device=starts.device)
        states = inputs.states[rows[:, None], starts[:, None] + offsets]  # (K, L*N, D)
        states = states.view(len(found), groups, per_group * states.shape[-1])
        queries = torch.stack([fuse(states[:, g]) for g, fuse in enumerate(self.fuse)], dim=1)
        logits = self.decoder(queries, inputs.context[rows])
        # Score: mean confidence over the pixels the mask claims (no learned IoU head).
        probs = torch.sigmoid(logits.detach())
        claimed = probs > 0.5
        scores = (probs * claimed).flatten(1).sum(1) / claimed.flatten(1).sum(1).clamp(min=1)
        counts = torch.bincount(rows, minlength=inputs.token_ids.shape[0]).tolist()
        return MaskPrediction(logits=list(logits.split(counts)), scores=list(scores.split(counts)))
