"""Build the bundled tokenizer (src/pixelreason/assets/tokenizer) from generated text.

    python scripts/build_tokenizer.py [--vocab-size 2048] [--world-samples 6000]

The corpus is the chat template, everyday object language and the conversations of the
ReasonWorld training mixture (train split and text QA only, never val/test/zeroshot queries),
so the merges fit the language our small models are trained on; byte-level BPE still encodes
anything.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator

from tqdm.auto import tqdm

from pixelreason.data.mixing import MixConfig, WorldMixture
from pixelreason.prompting import conversation_pieces, tokenizer_corpus
from pixelreason.tokenizer import BUNDLED_TOKENIZER, train_tokenizer


def world_corpus(count: int) -> Iterator[str]:
    """Conversations of the default training mixture, as the model will see them."""
    mixture = WorldMixture(MixConfig(rates={"sem_seg": 1, "refer": 1, "text_qa": 1, "reason": 2}))
    for index in tqdm(range(count), desc="world text", unit="sample"):
        sample = mixture(index)
        yield "".join(p.text for p in conversation_pieces(sample.turns, image=True))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vocab-size", type=int, default=2048)
    parser.add_argument("--world-samples", type=int, default=6000)
    args = parser.parse_args()
    corpus = [*tokenizer_corpus(), *world_corpus(args.world_samples)]
    tokenizer = train_tokenizer(corpus, vocab_size=args.vocab_size)
    tokenizer.save_pretrained(BUNDLED_TOKENIZER)
    print(f"wrote {BUNDLED_TOKENIZER} ({len(tokenizer)} tokens)")


if __name__ == "__main__":
    main()
