"""Special tokens, added to a tokenizer and found by id (never by hand-counted offsets)."""

from __future__ import annotations

from transformers import PreTrainedTokenizerBase

IMAGE_TOKEN = "<image>"
SEG_TOKEN = "<SEG>"
#: PixelLLM's location-prompt placeholder: its embedding is the encoded box or points.
LOCATION_TOKEN = "<LOC>"


def add_special_tokens(tokenizer: PreTrainedTokenizerBase, tokens: list[str]) -> int:
    """Add `tokens` to the tokenizer as atomic special tokens; return how many were new."""
    missing = [t for t in tokens if t not in tokenizer.get_vocab()]
    if not missing:
        return 0
    return tokenizer.add_special_tokens({"additional_special_tokens": missing})


def token_id(tokenizer: PreTrainedTokenizerBase, token: str) -> int:
    """The id of a single special token, or a clear error if the tokenizer lacks it."""
    vocab = tokenizer.get_vocab()
    if token not in vocab:
        raise KeyError(f"tokenizer has no token {token!r}")
    return int(vocab[token])


def codebook_tokens(groups: int, per_group: int) -> tuple[str, ...]:
    """PixelLM's segmentation codebook: `<SEG_l_n>` for group l (one vision scale) and token n,
    in the order one target's codebook occurrence is written."""
    return tuple(f"<SEG_{g}_{n}>" for g in range(groups) for n in range(per_group))
