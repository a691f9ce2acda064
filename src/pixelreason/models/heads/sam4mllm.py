"""SAM4MLLM's head: the LLM writes SAM's prompts as plain text; no new tokens, no new layers.

Each target in an answer is written as `box(x0,y0,x1,y1) in(x,y) in(x,y) out(x,y)` on a
0-999 grid (see `text_prompts`), or "No object found.". The head parses the text (generated,
or teacher forced in training), prompts SAM with each box and its points on the image's cached
embedding, and returns one mask per parsed box. The LLM learns only from its text loss.

Training targets (`prepare_sample`): each `<SEG>` of the data becomes its mask's prompt text,
chosen by PPG (`ppg.select_point_group`: K groups of 2 inside + 1 outside point, the best by
SAM's IoU with the mask); with probability `pqpp_rate` a PQPP round-2 turn is appended (a grid
point of one target's box, answered yes/no from the mask). See `pixelreason.models.pqpp` for
PQPP at inference.

Departure from the paper: SAM4MLLM freezes a pretrained SAM. No pretrained SAM can be
downloaded here, so this head's SAM starts from scratch and is trained jointly, from the
prompts the answers carry (derived from the ground-truth masks), with the usual BCE + DICE mask
loss. Early in training PPG therefore ranks candidates with a poor SAM; the box, and that every
point lies on the right side of the mask, hold regardless.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, fields, replace
from typing import Any, ClassVar

import numpy as np
import torch
from transformers import PreTrainedTokenizerBase

from pixelreason.data.schema import IGNORE_VALUE, SegSample
from pixelreason.models.heads.base import HeadInputs, MaskPrediction, SamHead, unit_scores
from pixelreason.models.heads.ppg import PromptFrame, mask_value, select_point_group
from pixelreason.models.heads.pqpp import pqpp_answer
from pixelreason.models.heads.text_prompts import (
    NO,
    NO_OBJECT,
    YES,
    TextPrompt,
    parse_prompts,
    point_question,
    replace_prompts,
)
from pixelreason.models.sam import SamDecoder
from pixelreason.processing import ImageInputs
from pixelreason.prompting import Turn
from pixelreason.tokens import IMAGE_TOKEN, SEG_TOKEN


@dataclass(frozen=True)
class Sam4MLLMSettings:
    """Head options (`head_args`); defaults are the paper's where it gives them."""

    #: PPG: candidate point groups per mask (K); 1 takes one random group without SAM.
    groups: int = 64
    #: Points per group inside (n1) and outside (n2) the mask.
    positives: int = 2
    negatives: int = 1
    #: Share of training samples with a target that get one PQPP yes/no point question.
    pqpp_rate: float = 0.25
    #: PQPP at inference: grid side inside each box, and the confidence a point needs.
    pqpp_grid: int = 5
    pqpp_threshold: float = 0.75
    #: Keep every confident PQPP point (the paper, with a pretrained SAM). False keeps the
    #: most confident n1 yes and n2 no points: prompts shaped like the PPG prompts that this
    #: head's SAM, trained from scratch, has learnt from.
    pqpp_all_points: bool = False
    #: Refine every answer with PQPP (a second, batched pass of yes/no questions).
    pqpp: bool = False
    #: Seed of the per-sample draws (points, PQPP questions).
    seed: int = 0

    @classmethod
    def from_args(cls, args: dict[str, Any]) -> Sam4MLLMSettings:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(args) - known)
        if unknown:
            raise ValueError(f"unknown SAM4MLLM head options {unknown}; known: {sorted(known)}")
        settings = cls(**args)
        if settings.groups < 1 or settings.positives < 1 or settings.negatives < 0:
            raise ValueError("PPG needs groups >= 1, positives >= 1 and negatives >= 0")
        if not 0.0 <= settings.pqpp_rate <= 1.0 or not 0.5 <= settings.pqpp_threshold <= 1.0:
            raise ValueError("pqpp_rate must lie in [0, 1] and pqpp_threshold in [0.5, 1]")
        if settings.pqpp_grid < 1:
            raise ValueError("pqpp_grid must be at least 1")
        return settings


class Sam4MLLMHead(SamHead):
    """Text prompts -> SAM (box + points) on the cached image embedding, one mask per box."""

    name: ClassVar[str] = "sam4mllm"

    def __init__(self, sam: SamDecoder, settings: Sam4MLLMSettings) -> None:
        super().__init__()
        self.sam = sam
        self.settings = settings
        #: Refine answers with PQPP; starts from the `pqpp` option, may be switched any time.
        self.pqpp = settings.pqpp

    @classmethod
    def build(
        cls,
        backbone: Any,
        sam_config: dict[str, Any] | None,
        args: dict[str, Any],
        *,
        sam: SamDecoder | None = None,
    ) -> Sam4MLLMHead:
        settings = Sam4MLLMSettings.from_args(args)
        sam = cls.sam_for(sam, sam_config, prompted=True)
        return cls(sam, settings)

    def bind_tokenizer(self, tokenizer: PreTrainedTokenizerBase) -> None:
        super().bind_tokenizer(tokenizer)
        self.tokenizer = tokenizer
        # As in `Preprocessor.decode`: padding and the image token are never text.
        vocab = tokenizer.get_vocab()
        self.silent = frozenset(
            int(i) for i in (tokenizer.pad_token_id, vocab.get(IMAGE_TOKEN)) if i is not None
        )
        # An answer piece is " " + answer. PQPP reads the first token where the two answers
        # differ, after the tokens they share (e.g. a lone "▁" with SentencePiece).
        yes = tokenizer(" " + YES, add_special_tokens=False)["input_ids"]
        no = tokenizer(" " + NO, add_special_tokens=False)["input_ids"]
        shared = 0
        while shared < min(len(yes), len(no)) and yes[shared] == no[shared]:
            shared += 1
        if shared == min(len(yes), len(no)):
            raise ValueError(f"the tokenizer spells {YES!r} and {NO!r} alike")
        #: Ids both PQPP answers start with, and the ids of the token that tells them apart.
        self.answer_prefix = tuple(int(i) for i in yes[:shared])
        self.answer_ids = (int(yes[shared]), int(no[shared]))

    # -- text ---------------------------------------------------------------------------------
    def texts(self, token_ids: torch.Tensor, valid: torch.Tensor) -> list[str]:
        """The stretches of answer text in one row of ids (L,), split at invalid positions and
        ends of turns, so a prompt never spans two answers. Decoded as `Preprocessor.decode`
        does, so `display_text` finds the same prompts in the answer text."""
        runs: list[list[int]] = [[]]
        for token, ok in zip(token_ids.tolist(), valid.tolist(), strict=True):
            if not ok or token == self.tokenizer.eos_token_id:
                if runs[-1]:
                    runs.append([])
            elif token not in self.silent:
                runs[-1].append(token)
        return [self.tokenizer.decode(run, skip_special_tokens=False) for run in runs if run]

    def prompts(self, token_ids: torch.Tensor, valid: torch.Tensor) -> list[TextPrompt]:
        """Every prompt block written in one row of ids, in order (see `parse_prompts`)."""
        return [block for text in self.texts(token_ids, valid) for block in parse_prompts(text)]

    def count_targets(self, token_ids: torch.Tensor) -> torch.Tensor:
        # Padding marks what is not answer text (labels off the answers are padded).
        valid = token_ids != self.tokenizer.pad_token_id
        counts = [
            sum(p.has_box for p in self.prompts(row, ok))
            for row, ok in zip(token_ids, valid, strict=True)
        ]
        return torch.tensor(counts, dtype=torch.long)

    def display_text(self, text: str) -> str:
        return replace_prompts(text, SEG_TOKEN)

    def follow_up(
        self, model: Any, caches: Sequence[Any], turns_list: Sequence[Any], answers: list[Any]
    ) -> list[Any]:
        """With `pqpp` on, redo each answer's masks by PQPP (see `heads.pqpp`)."""
        if not self.pqpp:
            return answers
        return [
            pqpp_answer(
                model,
                cache,
                turns,
                answer,
                grid=self.settings.pqpp_grid,
                threshold=self.settings.pqpp_threshold,
                max_inside=None if self.settings.pqpp_all_points else self.settings.positives,
                max_outside=None if self.settings.pqpp_all_points else self.settings.negatives,
            )
            for cache, turns, answer in zip(caches, turns_list, answers, strict=True)
        ]

    # -- training targets ---------------------------------------------------------------------
    def prepare_sample(self, sample: SegSample, image: ImageInputs) -> SegSample:
        """Write the k-th `<SEG>` of the answers as mask k's PPG prompt ("No object found."
        for a mask without target pixels, which then leaves the mask list), and maybe append a
        PQPP point question. Samples whose markers and masks disagree are left for the caller
        to report."""
        answers = [turn.assistant or "" for turn in sample.turns]
        markers = sum(answer.count(SEG_TOKEN) for answer in answers)
        if markers == 0 or markers != len(sample.masks):
            return sample
        generator = torch.Generator().manual_seed(self._sample_seed(sample))
        frame = PromptFrame.of(image)
        embedding = None
        texts, kept, prompts = [], [], []
        for mask in sample.masks:
            if self.settings.groups > 1 and embedding is None and (mask == 1).any():
                embedding = self._embed(image)
            choice = select_point_group(
                self.sam,
                embedding,
                mask,
                frame,
                generator,
                groups=self.settings.groups,
                positives=self.settings.positives,
                negatives=self.settings.negatives,
            )
            if choice is None:
                texts.append(NO_OBJECT)
                continue
            texts.append(choice.prompt.to_text())
            kept.append(mask)
            prompts.append((choice.prompt, mask))
        pieces = iter(texts)
        turns = [
            Turn(turn.user, _fill(turn.assistant, pieces)) if turn.assistant else turn
            for turn in sample.turns
        ]
        if prompts and float(torch.rand((), generator=generator)) < self.settings.pqpp_rate:
            prompt, mask = prompts[int(torch.randint(len(prompts), (), generator=generator))]
            question = self._point_question(prompt, mask, generator)
            if question is not None:
                turns.append(question)
        return replace(sample, turns=turns, masks=kept)

    def _sample_seed(self, sample: SegSample) -> int:
        digest = hashlib.blake2b(str(self.settings.seed).encode(), digest_size=8)
        for turn in sample.turns:
            digest.update(f"{turn.user}\x00{turn.assistant}\x00".encode())
        for mask in sample.masks:
            digest.update(np.ascontiguousarray(mask).tobytes())
        return int.from_bytes(digest.digest(), "little") & (2**63 - 1)

    def _embed(self, image: ImageInputs) -> torch.Tensor:
        if image.head_pixels is None:
            raise ValueError("the SAM4MLLM head needs SAM pixels")
        device = next(self.sam.parameters()).device
        with torch.no_grad():
            return self.sam.encode_image(image.head_pixels[None].to(device))

    def _point_question(
        self, prompt: TextPrompt, mask: np.ndarray, generator: torch.Generator
    ) -> Turn | None:
        """A PQPP round-2 turn: a random grid cell of the prompt's box, answered from the mask
        at that cell's centre (None if it fell on ignored pixels)."""
        assert prompt.box is not None
        x0, y0, x1, y1 = prompt.box
        x = x0 + int(torch.randint(x1 - x0 + 1, (), generator=generator))
        y = y0 + int(torch.randint(y1 - y0 + 1, (), generator=generator))
        value = mask_value(mask, (x, y))
        if value == IGNORE_VALUE:
            return None
        return Turn(point_question((x, y), prompt.box), YES if value == 1 else NO)

    # -- masks --------------------------------------------------------------------------------
    def decode_prompts(
        self,
        prompts: Sequence[TextPrompt],
        embeddings: torch.Tensor,
        frames: Sequence[PromptFrame],
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One SAM call for N prompts with boxes: embeddings (N, C, h, w) of each prompt's
        image -> logits (N, 4h, 4w) in SAM's input frame and SAM's predicted IoU (N,).

        Prompts with fewer points are padded with SAM's "not a point" label (-1)."""
        device = embeddings.device
        if not prompts:
            empty = embeddings.new_zeros((0, 1, self.sam.prompt_dim))
            return self.sam.decode(embeddings[:0], empty)
        boxes = torch.stack(
            [
                frame.boxes(torch.tensor(prompt.box, device=device))
                for prompt, frame in zip(prompts, frames, strict=True)
            ]
        )
        width = max(len(p.points) for p in prompts)
        points = labels = None
        if width:
            grid = torch.zeros((len(prompts), width, 2), dtype=torch.long, device=device)
            labels = torch.full((len(prompts), width), -1, dtype=torch.long, device=device)
            for row, prompt in enumerate(prompts):
                if prompt.points:
                    grid[row, : len(prompt.points)] = torch.tensor(prompt.points, device=device)
                    labels[row, : len(prompt.labels)] = torch.tensor(prompt.labels, device=device)
            points = torch.stack([f.points(g) for f, g in zip(frames, grid, strict=True)])
        sparse = self.sam.prompt(points, labels, boxes)
        return self.sam.decode(embeddings, sparse)

    def forward(self, inputs: HeadInputs) -> MaskPrediction:
        if inputs.images is None:
            raise ValueError("the SAM4MLLM head needs the images' geometry (HeadInputs.images)")
        targets, rows, frames, extras = [], [], [], []
        for row, (ids, valid) in enumerate(zip(inputs.token_ids, inputs.valid, strict=True)):
            blocks = self.prompts(ids, valid)
            size = inputs.images[row].original_size
            extras.append(
                {
                    "prompts": [block.to_dict() for block in blocks],
                    # One per mask, in order: what SAM was given, in image pixels.
                    "sam_prompts": [b.to_pixels(size) for b in blocks if b.has_box],
                }
            )
            frame = PromptFrame.of(inputs.images[row])
            for block in blocks:
                if block.has_box:
                    targets.append(block)
                    rows.append(row)
                    frames.append(frame)
        index = torch.tensor(rows, dtype=torch.long, device=inputs.context.device)
        logits, iou = self.decode_prompts(targets, inputs.context[index], frames)
        counts = torch.bincount(index, minlength=inputs.token_ids.shape[0]).tolist()
        return MaskPrediction(
            logits=list(logits.split(counts)),
            scores=list(unit_scores(iou).split(counts)),
            extras=extras,
        )


def _fill(answer: str, pieces: Any) -> str:
    """`answer` with each `<SEG>` replaced by the next of `pieces`."""
    first, *rest = answer.split(SEG_TOKEN)
    return first + "".join(next(pieces) + part for part in rest)


__all__ = ["Sam4MLLMHead", "Sam4MLLMSettings"]
