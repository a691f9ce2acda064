"""Special tokens, added to a tokenizer and found by id (never by hand-counted offsets)."""

from __future__ import annotations

import torch
from transformers import PreTrainedTokenizerBase

IMAGE_TOKEN = "<image>"
SEG_TOKEN = "<SEG>"


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


def predicting_positions(input_ids: torch.Tensor, token: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Positions whose hidden state predicts `token` as the next token.

    For input_ids (B, T) returns (batch_index, position), each (N,), ordered by batch then
    position: for every occurrence of `token` at (b, t) with t >= 1, the pair (b, t - 1). LISA
    reads the mask embedding from this state, which is also the one that emitted `<SEG>`
    during generation, so training and inference use the same quantity.
    """
    hits = input_ids[:, 1:] == token
    batch_index, position = hits.nonzero(as_tuple=True)
    return batch_index, position
