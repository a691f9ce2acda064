"""The project's own byte-level BPE tokenizer, for models trained from scratch.

Public checkpoints bring their own tokenizer; presets use the one bundled in
`pixelreason/assets/tokenizer`, built by `scripts/build_tokenizer.py` from text we generate.
Byte-level BPE can encode any string, so no user query is ever out of vocabulary.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from pixelreason.tokens import IMAGE_TOKEN

BUNDLED_TOKENIZER = Path(__file__).parent / "assets" / "tokenizer"
PAD, BOS, EOS, UNK = "<pad>", "<s>", "</s>", "<unk>"


def train_tokenizer(corpus: Iterable[str], vocab_size: int) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE on `corpus` and wrap it as a transformers fast tokenizer."""
    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[PAD, BOS, EOS, UNK, IMAGE_TOKEN],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    core.train_from_iterator(corpus, trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=core,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        unk_token=UNK,
        extra_special_tokens={"image_token": IMAGE_TOKEN},
        padding_side="right",
        model_max_length=4096,
    )


def bundled_tokenizer() -> PreTrainedTokenizerFast:
    """The tokenizer shipped with the package (used by every preset)."""
    return PreTrainedTokenizerFast.from_pretrained(BUNDLED_TOKENIZER)
