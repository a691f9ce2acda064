"""Loading public-format checkpoints (LLaVA + SAM directories) through from_pretrained,
on tiny configs written here: the same code path as llava-hf/llava-1.5-7b-hf + sam-vit-huge."""

from __future__ import annotations

from pathlib import Path

import torch
from conftest import training_samples
from transformers import (
    LlavaConfig,
    LlavaForConditionalGeneration,
    SamConfig,
    SamModel,
)

from pixelreason.config import tiny
from pixelreason.models.segmenter import PixelReasonModel
from pixelreason.processing import default_backbone_processor, default_sam_processor
from pixelreason.tokenizer import bundled_tokenizer
from pixelreason.tokens import IMAGE_TOKEN, SEG_TOKEN


def _write_public_checkpoints(root: Path) -> tuple[Path, Path]:
    torch.manual_seed(0)
    config = tiny()
    tokenizer = bundled_tokenizer()
    llava_config = dict(config.llava)
    llava_config["text_config"] = {**llava_config["text_config"], "vocab_size": len(tokenizer)}
    llava_config["image_token_id"] = tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
    llava = LlavaForConditionalGeneration(LlavaConfig.from_dict(llava_config))
    llava.save_pretrained(root / "llava")
    tokenizer.save_pretrained(root / "llava")
    default_backbone_processor(config.backbone_image_size).save_pretrained(root / "llava")
    sam = SamModel(SamConfig.from_dict(config.sam))
    sam.save_pretrained(root / "sam")
    default_sam_processor(config.sam_image_size).save_pretrained(root / "sam")
    return root / "llava", root / "sam"


def test_from_components_adds_seg_and_keeps_pretrained_weights(tmp_path: Path) -> None:
    llava_dir, sam_dir = _write_public_checkpoints(tmp_path)
    model = PixelReasonModel.from_components(llava_dir, sam_dir)
    tokenizer = model.preprocessor.tokenizer
    assert SEG_TOKEN in tokenizer.get_vocab()
    assert model.backbone.model.get_input_embeddings().weight.shape[0] == len(tokenizer)
    reference = SamModel.from_pretrained(sam_dir)
    assert torch.equal(
        model.head.sam.sam.mask_decoder.iou_token.weight, reference.mask_decoder.iou_token.weight
    )
    out = model(model.collate(training_samples()))
    assert torch.isfinite(out.loss) and out.num_masks == 3
    model.save_pretrained(tmp_path / "ours")
    again = PixelReasonModel.from_pretrained(tmp_path / "ours")
    assert again.config.sam_image_size == model.config.sam_image_size
