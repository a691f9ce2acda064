"""The chat template (LLaVA-1.5 style), written once and used by training and inference."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from pixelreason.tokens import IMAGE_TOKEN, SEG_TOKEN

#: Longest user message accepted, in characters.
MAX_QUERY_CHARS = 2000


@dataclass(frozen=True)
class Turn:
    """One exchange; `assistant` is None for the turn the model must answer."""

    user: str
    assistant: str | None = None


@dataclass(frozen=True)
class Piece:
    """A span of the prompt; `supervised` spans are the assistant's words (they carry labels)."""

    text: str
    supervised: bool
    #: Whether the tokenizer's end-of-sequence id follows this piece.
    ends_turn: bool = False


def conversation_pieces(
    turns: Sequence[Turn], *, image: bool, system_prompt: str = ""
) -> list[Piece]:
    """Lay out a conversation as pieces: `USER: <image>\\n{q} ASSISTANT: {a}</s>USER: ...`.

    The image placeholder appears once, in the first user turn. Every turn but the last must
    have an answer; a last turn without one ends the prompt at `ASSISTANT:` for generation.
    """
    if not turns:
        raise ValueError("a conversation needs at least one turn")
    pieces: list[Piece] = []
    if system_prompt:
        pieces.append(Piece(system_prompt + " ", supervised=False))
    for index, turn in enumerate(turns):
        prefix = f"{IMAGE_TOKEN}\n" if image and index == 0 else ""
        pieces.append(Piece(f"USER: {prefix}{turn.user} ASSISTANT:", supervised=False))
        if turn.assistant is not None:
            pieces.append(Piece(" " + turn.assistant, supervised=True, ends_turn=True))
        elif index != len(turns) - 1:
            raise ValueError(f"turn {index} has no answer but is not the last turn")
    return pieces


def tokenizer_corpus() -> Iterator[str]:
    """Text the bundled tokenizer is trained on: the template and everyday object language."""
    questions = [
        "Can you segment the {} in this image?",
        "Please segment the {}.",
        "What is the {} in this picture? Please output a segmentation mask.",
        "Where is the {}?",
        "Which object here is a {}?",
    ]
    answers = ["It is {}.", "Sure, it is {}.", "The {} is here.", "There is no {} in this image."]
    words = (
        "orange apple banana lemon strawberry pear grape cherry carrot tomato mug cup bottle "
        "glass plate bowl fork spoon knife scissors hammer saw wrench screwdriver pencil pen "
        "book key umbrella ball plant tree flower leaf fish bird cat dog shoe hat sock shirt "
        "car boat bus bicycle house clock lamp candle phone battery glasses chair table bed "
        "red green blue yellow purple pink brown black white gray striped dotted plain big "
        "small biggest smallest left right top bottom middle next to behind in front of above "
        "below because used to cut paper rich in vitamin C lives in water made of metal wood "
        "would you use where should I put the leftovers what here is something that all the"
    ).split()
    for question in questions:
        for answer in answers:
            for word in words:
                turn = Turn(question.format(word), answer.format(f"{word} {SEG_TOKEN}"))
                yield "".join(p.text for p in conversation_pieces([turn], image=True))
