"""Turning images and conversations into model inputs, and mask logits back into image masks.

One `Preprocessor` serves training, evaluation, the API and the server, so preprocessing is
written once. It owns the tokenizer, the backbone's image processor (CLIP-style square resize)
and the mask head's image processor (SAM-style longest-side resize + pad), if the head has one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image
from transformers import AutoImageProcessor, BaseImageProcessor, PreTrainedTokenizerBase
from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil
from transformers.models.sam.image_processing_pil_sam import SamImageProcessorPil

from pixelreason.errors import InputError
from pixelreason.prompting import MAX_QUERY_CHARS, Turn, conversation_pieces
from pixelreason.tokens import SEG_TOKEN

IGNORE_INDEX = -100
BACKBONE_PROCESSOR_DIR = "backbone_processor"
HEAD_PROCESSOR_DIR = "head_processor"


@dataclass
class ImageInputs:
    """One image, ready for both vision encoders.

    backbone_pixels: (3, S, S) for the LLaVA vision tower.
    head_pixels: (3, P, P) for the head's encoder (SAM), or None for heads without one.
    original_size: (H, W) of the user's image; masks are returned at this size.
    head_resized_size: (h, w) of the image inside the padded head input, before padding.
    """

    backbone_pixels: torch.Tensor
    head_pixels: torch.Tensor | None
    original_size: tuple[int, int]
    head_resized_size: tuple[int, int] | None


@dataclass
class EncodedText:
    """A tokenized conversation: input_ids and labels (T,), labels are IGNORE_INDEX off answers."""

    input_ids: torch.Tensor
    labels: torch.Tensor


def validate_query(query: str) -> str:
    """Strip a user message and refuse empty or over-long ones."""
    if not isinstance(query, str):
        raise InputError(f"query must be a string, got {type(query).__name__}")
    query = query.strip()
    if not query:
        raise InputError("query is empty")
    if len(query) > MAX_QUERY_CHARS:
        raise InputError(f"query is too long: {len(query)} characters (limit {MAX_QUERY_CHARS})")
    return query


def default_backbone_processor(image_size: int) -> BaseImageProcessor:
    """CLIP normalisation with a plain resize to a square (no crop: nothing is cut away)."""
    return CLIPImageProcessorPil(
        size={"height": image_size, "width": image_size}, do_center_crop=False
    )


def default_sam_processor(image_size: int) -> BaseImageProcessor:
    """SAM's longest-side resize and bottom-right padding, at `image_size`."""
    low_res = image_size // 4
    return SamImageProcessorPil(
        size={"longest_edge": image_size},
        pad_size={"height": image_size, "width": image_size},
        mask_size={"longest_edge": low_res},
        mask_pad_size={"height": low_res, "width": low_res},
    )


class Preprocessor:
    """Tokenizer + image processors for one model."""

    def __init__(
        self,
        tokenizer: PreTrainedTokenizerBase,
        backbone_processor: BaseImageProcessor,
        head_processor: BaseImageProcessor | None,
        *,
        image_token_id: int,
        num_image_tokens: int,
        system_prompt: str = "",
        target_text: str = SEG_TOKEN,
        prompt_token_ids: Sequence[int] = (),
    ) -> None:
        self.tokenizer = tokenizer
        self.backbone_processor = backbone_processor
        self.head_processor = head_processor
        self.image_token_id = image_token_id
        self.num_image_tokens = num_image_tokens
        self.system_prompt = system_prompt
        #: What one target marker (`<SEG>` in data) becomes in the token stream of this model.
        self.target_text = target_text
        #: Ids written right after the image features (a head's `prompt_tokens`, e.g.
        #: PixelLLM's location placeholders); empty for most heads.
        self.prompt_token_ids = tuple(int(i) for i in prompt_token_ids)
        if tokenizer.eos_token_id is None:
            raise ValueError("the tokenizer needs an end-of-sequence token")

    # -- images -------------------------------------------------------------------------------
    def prepare_image(self, image: Image.Image) -> ImageInputs:
        """Preprocess an RGB PIL image (see `pixelreason.imaging.load_image`) for both encoders."""
        backbone = self.backbone_processor(images=image, return_tensors="pt")["pixel_values"][0]
        head_pixels, resized = None, None
        if self.head_processor is not None:
            out = self.head_processor(images=image, return_tensors="pt")
            head_pixels = out["pixel_values"][0]
            resized = tuple(int(v) for v in out["reshaped_input_sizes"][0])
        return ImageInputs(
            backbone_pixels=backbone,
            head_pixels=head_pixels,
            original_size=(image.height, image.width),
            head_resized_size=resized,
        )

    def masks_to_image(self, logits: torch.Tensor, image: ImageInputs) -> torch.Tensor:
        """Map mask logits (N, h, w) in the head's input frame to (N, H, W) at the image's size.

        Differentiable, so training computes its mask loss at the ground truth's resolution.
        """
        if logits.shape[0] == 0:
            return logits.new_zeros((0, *image.original_size))
        if self.head_processor is not None and image.head_resized_size is not None:
            pad = self.head_processor.pad_size
            return self.head_processor.post_process_masks(
                [logits[:, None]],
                [image.original_size],
                [image.head_resized_size],
                binarize=False,
                pad_size={"height": pad["height"], "width": pad["width"]},
            )[0][:, 0]
        return F.interpolate(logits[:, None], image.original_size, mode="bilinear")[:, 0]

    # -- text ---------------------------------------------------------------------------------
    def encode(self, turns: Sequence[Turn], *, image: bool = True) -> EncodedText:
        """Tokenize a conversation; answers get labels, `<image>` expands to the feature count.

        Each piece is tokenized on its own so label boundaries are exact, and the single image
        placeholder is found by id and replaced by `num_image_tokens` copies of it, followed by
        the head's `prompt_token_ids` (unsupervised).
        """
        ids: list[int] = []
        labels: list[int] = []
        if self.tokenizer.bos_token_id is not None:
            ids.append(self.tokenizer.bos_token_id)
            labels.append(IGNORE_INDEX)
        pieces = conversation_pieces(turns, image=image, system_prompt=self.system_prompt)
        for piece in pieces:
            text = piece.text
            if piece.supervised and self.target_text != SEG_TOKEN:
                text = text.replace(SEG_TOKEN, self.target_text)
            piece_ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
            if piece.ends_turn:
                piece_ids = [*piece_ids, self.tokenizer.eos_token_id]
            ids.extend(piece_ids)
            labels.extend(piece_ids if piece.supervised else [IGNORE_INDEX] * len(piece_ids))
        input_ids = torch.tensor(ids, dtype=torch.long)
        label_ids = torch.tensor(labels, dtype=torch.long)
        placeholders = (input_ids == self.image_token_id).nonzero().flatten()
        expected = 1 if image else 0
        if len(placeholders) != expected:
            raise InputError(
                f"expected {expected} image placeholder(s) in the conversation, "
                f"found {len(placeholders)}"
            )
        if image:
            at = int(placeholders[0])
            repeat = torch.cat(
                [
                    torch.full((self.num_image_tokens,), self.image_token_id, dtype=torch.long),
                    torch.tensor(self.prompt_token_ids, dtype=torch.long),
                ]
            )
            ignore = torch.full((len(repeat),), IGNORE_INDEX, dtype=torch.long)
            input_ids = torch.cat([input_ids[:at], repeat, input_ids[at + 1 :]])
            label_ids = torch.cat([label_ids[:at], ignore, label_ids[at + 1 :]])
        return EncodedText(input_ids=input_ids, labels=label_ids)

    def decode(self, ids: Sequence[int] | torch.Tensor) -> str:
        """Text of generated ids, each target shown as `<SEG>`, end/pad tokens dropped."""
        ids = [int(i) for i in ids]
        drop = {self.tokenizer.eos_token_id, self.tokenizer.pad_token_id, self.image_token_id}
        kept = [i for i in ids if i not in drop]
        text = self.tokenizer.decode(kept, skip_special_tokens=False).strip()
        if self.target_text != SEG_TOKEN:
            text = text.replace(self.target_text, SEG_TOKEN)
        return text

    # -- persistence --------------------------------------------------------------------------
    def save_pretrained(self, directory: str | Path) -> None:
        directory = Path(directory)
        self.tokenizer.save_pretrained(directory)
        self.backbone_processor.save_pretrained(directory / BACKBONE_PROCESSOR_DIR)
        if self.head_processor is not None:
            self.head_processor.save_pretrained(directory / HEAD_PROCESSOR_DIR)


def load_image_processor(directory: str | Path) -> BaseImageProcessor:
    """Load a saved image processor without needing torchvision (PIL backend)."""
    return AutoImageProcessor.from_pretrained(directory, backend="pil")
