"""SAM (transformers `SamModel`) as a promptable mask decoder over a cached image embedding."""

from __future__ import annotations

import torch
from torch import nn
from transformers import SamConfig, SamModel


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
        """A randomly initialised SAM (training from scratch)."""
        if isinstance(config, dict):
            config = SamConfig.from_dict(config)
        return cls(SamModel(config))

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
        fixture's masks got worse (IoU 0.09 instead of > 0.5 after the same steps).
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
        return self.sam.vision_encoder(pixel_values).last_hidden_state

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
