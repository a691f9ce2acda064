"""The knowledge check: the LLM states in words what the query asks about, and the answer
follows what it states.

Our small LLMs learn a fact in the form they are taught it. ReasonWorld's zero-shot split asks
for facts that training shows only as text question answering ("What is squeezed to make
lemonade?" -> "A lemon is squeezed to make lemonade."), never as a segmentation query. Asked
"Find the thing that is squeezed to make lemonade." the bundled default names the right object
in 0.13 of those answers; yet given the same prompt and the first word of a text answer ("A"),
it goes on "A lemon is squeezed to make lemonade." for most of them. The facts are there; the
segmentation answer does not reach them.

So after greedy decoding, each answer that grounds one target is checked against a *statement*:
the same prompt continued from `ModelConfig.knowledge_start` (" A" for ReasonWorld models),
with the target token and the classes the vision probe does not find banned (so it names an
object of this image). The statement's first class (`stated_class`) replaces the answer's
where

- the statement restates the query: at least `RESTATED` of its words after the class name
  (`restated_share`, small words aside) are words of the query, so it is an answer to this
  question and not some other fact about an object ("A cup sits on a saucer." for "What here
  sits on a saucer?", but not "A cup is made of glass." for "the cup left of the plant");
- the LLM finds the statement clearly likelier with its own class than with the answer's: the
  log-probability of " A {stated} {rest}" exceeds that of " A {answered} {rest}" by
  `MARGIN` nats, in one teacher-forced pass.

The answer is then decoded again with every other class's names banned, and kept where it
grounds the stated class.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

from transformers import PreTrainedTokenizerBase

from pixelreason.models.presence import _mentions, _spellings

#: Share of a statement's words after its class name that must be words of the query.
RESTATED = 0.5
#: Nats by which the statement must be likelier with its own class than with the answer's.
MARGIN = 2.0
#: Most tokens of a statement after its first words: a fact takes about ten.
STATEMENT_TOKENS = 16
#: Words left out when comparing a statement with the query.
SMALL_WORDS = frozenset({"a", "an", "the", "is", "are"})

_WORD = re.compile(r"[a-z]+")


def stated_class(text: str, labels: Sequence[Sequence[str]]) -> tuple[int, str] | None:
    """The first probe class a statement names as a noun and the statement's text after that
    name ("A lemon tastes very sour." -> (lemon, " tastes very sour.")), or None."""
    mentions = _mentions(text.lower(), labels)
    if not mentions:
        return None
    _, end, index = mentions[0]
    return index, text[end:]


def restated_share(rest: str, query: str, labels: Sequence[Sequence[str]] = ()) -> float:
    """Share of the words of `rest` that are words of `query`, in any case, leaving out small
    words and the words of the class names in `labels` (a statement that only names objects
    restates nothing: "A bread loaf bread loaf."); 0 where `rest` has no other words."""
    names = {w for names in labels for name in names for w in _WORD.findall(name.lower())}
    words = [w for w in _WORD.findall(rest.lower()) if w not in SMALL_WORDS | names]
    if not words:
        return 0.0
    asked = set(_WORD.findall(query.lower()))
    return sum(w in asked for w in words) / len(words)


def first_tokens(
    tokenizer: PreTrainedTokenizerBase, labels: Sequence[Sequence[str]], classes: Iterable[int]
) -> set[int]:
    """The first token of each name of `classes`, in running text and at a sentence's start:
    a statement whose first word after its start is one of them names one of those classes."""
    return {ids[0] for k in classes for name in labels[k] for ids in _spellings(tokenizer, name)}
