"""Build the bundled tokenizer (src/pixelreason/assets/tokenizer) from generated text.

    python scripts/build_tokenizer.py [--vocab-size 2048]

The corpus is the chat template and the text of pixelreason's own data generators, so the
merges fit the language our small models are trained on; byte-level BPE still encodes anything.
"""

from __future__ import annotations

import argparse

from pixelreason.prompting import tokenizer_corpus
from pixelreason.tokenizer import BUNDLED_TOKENIZER, train_tokenizer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vocab-size", type=int, default=2048)
    args = parser.parse_args()
    tokenizer = train_tokenizer(tokenizer_corpus(), vocab_size=args.vocab_size)
    tokenizer.save_pretrained(BUNDLED_TOKENIZER)
    print(f"wrote {BUNDLED_TOKENIZER} ({len(tokenizer)} tokens)")


if __name__ == "__main__":
    main()
