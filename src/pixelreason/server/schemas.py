"""Response bodies of the HTTP API (they make up the OpenAPI spec at /openapi.json)."""

from __future__ import annotations

from pydantic import BaseModel, Field


class ErrorBody(BaseModel):
    """Every 4xx/5xx answer: one sentence saying what was wrong."""

    error: str = Field(examples=["query is empty"])


class MaskRle(BaseModel):
    """COCO run-length encoding (column-major), as written by pycocotools."""

    size: list[int] = Field(description="[height, width]")
    counts: str = Field(description="compressed RLE string")


class SamPrompt(BaseModel):
    text: str = Field(description="the prompt as the answer wrote it, on the 0-999 grid")
    box: list[float] = Field(description="x0, y0, x1, y1 in pixels, far edges exclusive")
    points: list[list[float]] = Field(description="[x, y, label] in pixels; label 1 = inside")


class Target(BaseModel):
    index: int = Field(description="0-based, in the order the answer names the targets")
    score: float = Field(description="the mask decoder's predicted IoU, 0..1")
    box_xyxy: list[int] = Field(description="[x0, y0, x1, y1], x1/y1 exclusive")
    area: int = Field(description="mask pixels")
    mask_rle: MaskRle
    sam_prompt: SamPrompt | None = Field(
        None, description="SAM4MLLM models: the SAM prompt the answer wrote for this mask"
    )


class SegmentResponse(BaseModel):
    conversation_id: str = Field(
        description="pass back with the next question to continue this conversation"
    )
    turn: int = Field(description="1 for the first question about an image")
    text: str = Field(description="the answer; each <SEG> marks one target, in order")
    method: str
    width: int
    height: int
    targets: list[Target]
    overlay_png: str | None = Field(
        None, description="base64 PNG of the masks over the image, if overlay=true"
    )
    batch_size: int = Field(description="how many requests the model answered together")


class MethodList(BaseModel):
    model: str = Field(description="the loaded model's name or directory")
    description: str
    methods: list[str]
    default_method: str
    limits: dict[str, int | float]


class Example(BaseModel):
    name: str
    url: str


class ExampleList(BaseModel):
    examples: list[Example]


class Health(BaseModel):
    status: str
    model: str
    queued: int = Field(description="requests waiting for the model")
    conversations: int
    batch_sizes: dict[str, int] = Field(description="batch size -> batches run so far")
