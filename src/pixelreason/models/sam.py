"""SAM (transformers `SamModel`) as a promptable mask decoder over a cached image embedding."""

from __future__ import annotations

import torch
from torch import nn
from transformers import SamConfig, SamModel

from pixelreason.config import ENCODER_KEY

#: SAM image encoders (the config's `ENCODER_KEY`): "vit" (SAM's own) or "conv"
#: (`ConvImageEncoder`, for SAMs trained from scratch on small data).
ENCODERS = ("vit", "conv")


class _Residual(nn.Module):
    """Two 3x3 convolutions (GroupNorm, GELU) with a skip connection."""

    def __init__(self, channels: int, dilation: int = 1) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels, channels, 3, padding=dilation, dilation=dilation, bias=False),
            nn.GroupNorm(8, channels),
            nn.GELU(),
            nn.Conv2d(channels, channels, 3, padding=dilation, dilation=dilation, bias=False),
            nn.GroupNorm(8, channels),
        )
        self.act = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(x + self.body(x))


class ConvImageEncoder(nn.Module):
    """A small convolutional image encoder in place of SAM's ViT: stride `stride` (4 or 8),
    `out_channels` channels, receptive field about 60 px (dilated residual blocks).

    SAM's ViT-H is pretrained on a billion masks; a ViT trained from scratch on our few
    thousand scenes learns masks slowly (teacher-forced IoU about 0.2 after 8000 steps), while
    convolutions see edges and colour regions from the start. SAM's prompt encoder and mask
    decoder are unchanged: they get a (B, C, P/stride, P/stride) embedding either way.
    """

    def __init__(self, out_channels: int, stride: int = 4, width: int = 32) -> None:
        super().__init__()
        if stride not in (4, 8):
            raise ValueError(f"ConvImageEncoder stride must be 4 or 8, got {stride}")
        layers: list[nn.Module] = [
            nn.Conv2d(3, width, 3, stride=2, padding=1, bias=False),
            nn.GroupNorm(8, width),
            nn.GELU(),
            _Residual(width),
        ]
        channels = width
        for _ in range(2 if stride == 8 else 1):
            layers += [
                nn.Conv2d(channels, 2 * channels, 3, stride=2, padding=1, bias=False),
                nn.GroupNorm(8, 2 * channels),
                nn.GELU(),
            ]
            channels *= 2
        layers += [_Residual(channels), _Residual(channels, dilation=2)]
        layers += [_Residual(channels, dilation=4)]
        self.body = nn.Sequential(*layers)
        self.neck = nn.Conv2d(channels, out_channels, 1)
        self.norm = nn.GroupNorm(1, out_channels)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.norm(self.neck(self.body(pixel_values)))


class SamDecoder(nn.Module):
    """SAM's image encoder, prompt encoder and mask decoder, callable piece by piece.

    Heads encode an image once (`encode_image`) and then decode any number of prompts against
    that embedding: sparse embeddings from an LLM (LISA) or points and boxes (SAM4MLLM, PixelLLM).
    """

    def __init__(self, sam: SamModel) -> None:
        super().__init__()
        self.sam = sam

    @classmethod
    def from_config(cls, config: dict | SamConfig) -> SamDecoder:
        """A randomly initialised SAM (training from scratch). A dict config may name its image
        encoder under `ENCODER_KEY`: "conv" puts a `ConvImageEncoder` in place of the ViT,
        with the stride of the prompt encoder's `patch_size`."""
        encoder = "vit"
        if isinstance(config, dict):
            config = dict(config)
            encoder = config.pop(ENCODER_KEY, "vit")
            config = SamConfig.from_dict(config)
        if encoder not in ENCODERS:
            raise ValueError(f"unknown SAM image encoder {encoder!r}; choose from {ENCODERS}")
        sam = SamModel(config)
        if encoder == "vit":
            return cls(sam)
        prompt = config.prompt_encoder_config
        sam.vision_encoder = ConvImageEncoder(prompt.hidden_size, stride=prompt.patch_size)
        decoder = cls(sam)
        # A conv-encoded SAM is always trained from scratch on a fine grid (32 cells for 128 px
        # at stride 4), where transformers' high-frequency draw aliases (see below).
        decoder.redraw_position_features()
        return decoder

    def redraw_position_features(self, std: float = 1.0) -> None:
        """Give a from-scratch SAM the random Fourier position features of SAM's own init;
        heads that prompt SAM with points and boxes (PixelLLM, SAM4MLLM) call this.

        transformers draws them with std hidden_size / 2 (16 for `tiny`, 48 for `small`),
        harmless when pretrained weights replace them; from scratch, such frequencies alias on
        our 8-16 cell embedding grids, so a prompt's position hardly matches the image's and
        SAM learns to follow prompts slowly (tiny model, 100 steps on the test scene: mask IoU
        0.94 / 0.58 with the default, 0.995 / 0.997 with std 1). The one tensor is shared by
        the prompt encoder and the image-wide position embedding; it is saved with the
        weights, so loading a checkpoint restores whatever it was trained with. The LISA head,
        whose prompts are LLM states, keeps transformers' draw: with std 1 the trained test
        fixture's masks got worse (IoU 0.09 instead of > 0.5 after the same steps), unless its
        SAM has the conv encoder (`from_config` redraws those).
        """
        with torch.no_grad():
            self.sam.shared_image_embedding.positional_embedding.normal_(0.0, std)

    @property
    def prompt_dim(self) -> int:
        return int(self.sam.config.mask_decoder_config.hidden_size)

    @property
    def image_size(self) -> int:
        return int(self.sam.config.prompt_encoder_config.image_size)

    def encode_image(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """pixel_values (B, 3, P, P) -> image embeddings (B, C, P/16, P/16) for ViT-B..H."""
        out = self.sam.vision_encoder(pixel_values)
        return out if isinstance(out, torch.Tensor) else out.last_hidden_state

    def prompt(
        self,
        points: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        boxes: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Sparse embeddings (N, K, C) for N prompts of points (N, k, 2) with labels (N, k)
        (1 inside, 0 outside) and/or boxes (N, 4), coordinates in the padded input frame."""
        sparse, _ = self.sam.prompt_encoder(
            input_points=None if points is None else points[:, None],
            input_labels=None if labels is None else labels[:, None],
            input_boxes=None if boxes is None else boxes[:, None],
            input_masks=None,
        )
        return sparse[:, 0]

    def decode(
        self, image_embeddings: torch.Tensor, sparse: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One mask per prompt.

        image_embeddings: (N, C, h, w), the embedding of the image each prompt refers to.
        sparse: (N, K, C) prompt embeddings. Returns logits (N, 4h, 4w) in the padded input
        frame and SAM's predicted IoU (N,).
        """
        count = sparse.shape[0]
        if count == 0:
            size = 4 * image_embeddings.shape[-1]
            return sparse.new_zeros((0, size, size)), sparse.new_zeros((0,))
        positional = self.sam.get_image_wide_positional_embeddings().to(image_embeddings.dtype)
        _, dense = self.sam.prompt_encoder(None, None, None, None)
        logits, iou = self.sam.mask_decoder(
            image_embeddings=image_embeddings,
            image_positional_embeddings=positional.expand(count, -1, -1, -1),
            sparse_prompt_embeddings=sparse[:, None].to(image_embeddings.dtype),
            dense_prompt_embeddings=dense.expand(count, -1, -1, -1).to(image_embeddings.dtype),
            multimask_output=False,
        )
        return logits[:, 0, 0], iou[:, 0, 0]
