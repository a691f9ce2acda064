"""The Python API: load a model, set an image once, ask it questions.

    from pixelreason import Segmenter
    seg = Segmenter.from_pretrained("default")
    seg.set_image("kitchen.png")
    result = seg.segment("What here is rich in vitamin C?")
    result.text, result.masks, result.scores, result.boxes

The CLI and the HTTP server are thin wrappers around this module.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from pycocotools import mask as coco_mask

from pixelreason.errors import InputError
from pixelreason.imaging import load_image
from pixelreason.models.segmenter import Answer, ImageCache, PixelReasonModel
from pixelreason.models.snap import thumbnail
from pixelreason.processing import validate_query
from pixelreason.prompting import Turn
from pixelreason.registry import load_model
from pixelreason.utils.files import atomic_write_bytes
from pixelreason.viz import overlay


@dataclass
class Result:
    """An answer and its targets.

    masks: (N, H, W) bool at the image's size, one per target, in the order the answer names
    them; scores: (N,) the mask decoder's predicted IoU; boxes: (N, 4) int [x0, y0, x1, y1]
    (x1, y1 exclusive; all zero for an empty mask).
    """

    text: str
    masks: np.ndarray
    scores: np.ndarray
    boxes: np.ndarray
    extras: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_answer(cls, answer: Answer) -> Result:
        """Binarise a model `Answer`'s mask logits and box the masks."""
        masks = (answer.mask_logits > 0).numpy()
        return cls(
            text=answer.text,
            masks=masks,
            scores=answer.scores.numpy(),
            boxes=boxes_from_masks(masks),
            extras={
                "raw_text": answer.text,
                "num_tokens": int(answer.token_ids.numel()),
                **answer.extras,
            },
        )

    def rles(self) -> list[dict[str, Any]]:
        """COCO run-length encodings of the masks (`counts` as a UTF-8 string)."""
        encoded = []
        for mask in self.masks:
            rle = coco_mask.encode(np.asfortranarray(mask.astype(np.uint8)))
            encoded.append(
                {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode()}
            )
        return encoded

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: text, and per target its COCO RLE mask, box, area and score; with a
        SAM4MLLM model also the SAM prompt each mask came from (`sam_prompt`, in pixels)."""
        prompts = self.extras.get("sam_prompts") or []
        return {
            "text": self.text,
            "targets": [
                {
                    "index": index,
                    "score": float(self.scores[index]),
                    "box_xyxy": [int(v) for v in self.boxes[index]],
                    "area": int(self.masks[index].sum()),
                    "mask_rle": rle,
                    **({"sam_prompt": prompts[index]} if index < len(prompts) else {}),
                }
                for index, rle in enumerate(self.rles())
            ],
        }


def boxes_from_masks(masks: np.ndarray) -> np.ndarray:
    """Tight boxes (N, 4) [x0, y0, x1, y1] of masks (N, H, W), computed from COCO RLE."""
    if len(masks) == 0:
        return np.zeros((0, 4), dtype=np.int64)
    rles = coco_mask.encode(np.asfortranarray(masks.transpose(1, 2, 0).astype(np.uint8)))
    xywh = coco_mask.toBbox(rles).astype(np.int64)
    return np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], axis=1)


def check_query(model: PixelReasonModel, query: str) -> str:
    """A stripped, non-empty, not over-long query free of the model's reserved tokens."""
    query = validate_query(query)
    tokenizer = model.preprocessor.tokenizer
    reserved = [t for t in tokenizer.all_special_tokens if t and t in query]
    if reserved:
        raise InputError(f"query may not contain the reserved token {reserved[0]}")
    return query


def encode_image(model: PixelReasonModel, image: Image.Image) -> ImageCache:
    """Run both vision encoders on an RGB image (see `pixelreason.imaging.load_image`)."""
    return model.encode_image(model.preprocessor.prepare_image(image), thumbnail(image))


def answer_many(
    model: PixelReasonModel,
    requests: Sequence[tuple[ImageCache, Sequence[Turn]]],
    *,
    max_new_tokens: int | None = None,
) -> list[Result]:
    """Answer several conversations, each about its own encoded image, in one batched pass.

    Greedy answers equal those of `Segmenter.chat` one at a time; the HTTP server batches
    concurrent requests through here.
    """
    answers = model.answer_batch(
        [cache for cache, _ in requests],
        [turns for _, turns in requests],
        max_new_tokens=max_new_tokens,
    )
    return [Result.from_answer(answer) for answer in answers]


class Segmenter:
    """A loaded model plus the current image and conversation."""

    def __init__(self, model: PixelReasonModel, description: str = "") -> None:
        self.model = model.eval()
        self.description = description
        self._cache: ImageCache | None = None
        self._image: Image.Image | None = None
        self._history: list[Turn] = []

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | os.PathLike[str] | None = None,
        *,
        method: str | None = None,
        device: str = "cpu",
        int8: bool = False,
        half_steps: bool | None = None,
    ) -> Segmenter:
        """Load a model directory or bundled model name (see `pixelreason.registry`); with
        neither, the bundled default, or with `method` ("lisa", "pixellm", ...) that method's
        bundled model. `int8`: the LLM's linear layers in int8 (CPU only; faster decoding,
        answers close to but not the same as float32's). `half_steps`: decoding steps read
        float16 copies of the LLM's weights (`pixelreason.models.quantize.half_steps`; None:
        on where the model runs on a CPU with AVX2 or better, without int8)."""
        model, description = load_model(
            name_or_path, method=method, device=device, int8=int8, half_steps=half_steps
        )
        return cls(model, description)

    @property
    def image(self) -> Image.Image | None:
        return self._image

    @property
    def history(self) -> list[Turn]:
        return list(self._history)

    def set_image(self, image: str | os.PathLike[str] | bytes | Image.Image | np.ndarray) -> None:
        """Load and encode an image with both vision encoders; starts a new conversation."""
        rgb = load_image(image)
        self._cache = encode_image(self.model, rgb)
        self._image = rgb
        self._history = []

    def segment(
        self,
        query: str,
        *,
        max_new_tokens: int | None = None,
        location: Sequence[float] | np.ndarray | None = None,
    ) -> Result:
        """Answer one question about the current image, outside any conversation.

        `location`: a box (x0, y0, x1, y1) or points ((x, y), ...) in pixels of the image,
        for models that read a location prompt (PixelLLM: "What is in this box?").
        """
        return self._ask([Turn(self._check(query))], max_new_tokens, location)

    def chat(self, query: str, *, max_new_tokens: int | None = None) -> Result:
        """Answer the next turn of a conversation about the current image (kept in history)."""
        turn = Turn(self._check(query))
        result = self._ask([*self._history, turn], max_new_tokens)
        self._history.append(Turn(turn.user, result.extras["raw_text"]))
        return result

    def reset(self) -> None:
        """Forget the conversation, keep the image."""
        self._history = []

    def _check(self, query: str) -> str:
        return check_query(self.model, query)

    def _ask(
        self,
        turns: list[Turn],
        max_new_tokens: int | None,
        location: Sequence[float] | np.ndarray | None = None,
    ) -> Result:
        if self._cache is None:
            raise InputError("no image set: call set_image() first")
        normalised = None
        if location is not None:
            height, width = self._cache.image.original_size
            normalised = normalise_location(location, width, height)
        answer = self.model.answer(
            self._cache, turns, max_new_tokens=max_new_tokens, location=normalised
        )
        return Result.from_answer(answer)


def normalise_location(
    location: Sequence[float] | np.ndarray, width: int, height: int
) -> np.ndarray:
    """A box (4,) or points (k, 2) in pixels -> fractions of the image size, checked."""
    try:
        values = np.asarray(location, dtype=np.float32)
    except (TypeError, ValueError) as exc:
        raise InputError(f"a location must be numbers, got {location!r}") from exc
    if values.shape == (4,):
        scaled = values / np.array([width, height, width, height], dtype=np.float32)
    elif values.ndim == 2 and values.shape[1] == 2 and len(values):
        scaled = values / np.array([width, height], dtype=np.float32)
    else:
        raise InputError(f"a location is a box (4 numbers) or (x, y) points, got {values.shape}")
    if not np.isfinite(scaled).all() or scaled.min() < 0 or scaled.max() > 1:
        raise InputError(f"location {values.tolist()} lies outside the {width}x{height} image")
    if values.shape == (4,) and (values[2] < values[0] or values[3] < values[1]):
        raise InputError(f"box {values.tolist()} needs x0 <= x1 and y0 <= y1")
    return scaled


def save_result(
    result: Result,
    image: Image.Image,
    out_dir: str | os.PathLike[str],
    *,
    extra: dict[str, Any] | None = None,
) -> dict[str, Path]:
    """Write mask_K.png per target, overlay.png and result.json; return their paths.

    With per-word points (PixelLLM's `extras["word_points"]`), the overlay shows each word at
    its point and result.json lists them as [word, x, y] in pixels; with SAM prompts
    (SAM4MLLM's `extras["sam_prompts"]`) it draws each target's box and points.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    data = {**(extra or {}), **result.to_dict()}
    word_points = result.extras.get("word_points")
    if word_points:
        data["word_points"] = [list(entry) for entry in word_points]
    for index, mask in enumerate(result.masks):
        path = out / f"mask_{index}.png"
        Image.fromarray(mask.astype(np.uint8) * 255).save(path)
        data["targets"][index]["mask_file"] = path.name
        written[f"mask_{index}"] = path
    labels = [f"target {k + 1} (score {s:.2f})" for k, s in enumerate(result.scores)]
    overlay_path = out / "overlay.png"
    overlay(
        image,
        result.masks,
        labels,
        caption=result.text,
        word_points=word_points,
        prompts=result.extras.get("sam_prompts"),
    ).save(overlay_path)
    written["overlay"] = overlay_path
    json_path = out / "result.json"
    atomic_write_bytes(json_path, (json.dumps(data, indent=2) + "\n").encode())
    written["json"] = json_path
    return written


__all__ = [
    "Result",
    "Segmenter",
    "answer_many",
    "boxes_from_masks",
    "check_query",
    "encode_image",
    "normalise_location",
    "save_result",
]
