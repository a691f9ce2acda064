"""The model behind the server: limits, a batching worker and the conversations.

Everything here is synchronous and free of HTTP; `pixelreason.server.app` maps it to routes
and status codes. The worker thread is the only one that runs the model: it encodes the images
of new conversations and answers a whole batch with one `pixelreason.api.answer_many` call.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import cast

from PIL import Image

from pixelreason.api import Result, answer_many, encode_image
from pixelreason.errors import InputError
from pixelreason.models.segmenter import ImageCache, PixelReasonModel
from pixelreason.prompting import MAX_QUERY_CHARS, Turn
from pixelreason.server.batching import Batcher
from pixelreason.server.conversations import ConversationStore

#: Bundled example images, present when running from a source checkout.
EXAMPLES_DIR = Path(__file__).resolve().parents[3] / "examples"


@dataclass
class ServerConfig:
    """Every limit of the server; defaults suit one trusted machine (`pixelreason serve`)."""

    max_batch_size: int = 8
    batch_wait_ms: float = 10.0
    max_queue: int = 64
    request_timeout_s: float = 60.0
    max_upload_bytes: int = 16 * 1024 * 1024
    max_pixels: int = 40_000_000
    max_conversations: int = 256
    conversation_ttl_s: float = 1800.0
    max_turns: int = 16
    max_new_tokens: int | None = None
    #: Folder whose *.png files are offered as examples (read once, at start-up).
    examples_dir: Path | None = EXAMPLES_DIR

    def __post_init__(self) -> None:
        positive = {
            "max_batch_size": self.max_batch_size,
            "max_queue": self.max_queue,
            "request_timeout_s": self.request_timeout_s,
            "max_upload_bytes": self.max_upload_bytes,
            "max_pixels": self.max_pixels,
            "max_conversations": self.max_conversations,
            "conversation_ttl_s": self.conversation_ttl_s,
            "max_turns": self.max_turns,
        }
        for name, value in positive.items():
            if value <= 0:
                raise InputError(f"{name} must be positive, got {value}")
        if self.batch_wait_ms < 0:
            raise InputError(f"batch_wait_ms must be >= 0, got {self.batch_wait_ms}")
        if self.max_new_tokens is not None and self.max_new_tokens <= 0:
            raise InputError(f"max_new_tokens must be positive, got {self.max_new_tokens}")

    def limits(self) -> dict[str, int | float]:
        """The limits a client may want to know (shown by /api/models)."""
        public = asdict(self)
        keep = ("max_upload_bytes", "max_pixels", "max_turns", "request_timeout_s")
        return {**{k: public[k] for k in keep}, "max_query_chars": MAX_QUERY_CHARS}


@dataclass
class Job:
    """One question: the conversation's turns, and its encoded image or the image to encode."""

    turns: list[Turn]
    cache: ImageCache | None = None
    image: Image.Image | None = None


@dataclass
class Outcome:
    """A job's answer, the encoded image (kept for later turns) and the batch size it ran in."""

    result: Result
    cache: ImageCache
    batch_size: int


class SegmentService:
    """A loaded model served through a `Batcher`, plus conversations and example images."""

    def __init__(
        self,
        model: PixelReasonModel,
        description: str,
        config: ServerConfig | None = None,
        *,
        model_name: str = "",
    ) -> None:
        self.model = model.eval()
        self.description = description
        self.model_name = model_name or description
        self.config = config or ServerConfig()
        self.conversations = ConversationStore(
            self.config.max_conversations, self.config.conversation_ttl_s
        )
        self.examples = load_examples(self.config.examples_dir)
        self.batcher: Batcher[Job, Outcome] = Batcher(
            self._run_batch,
            max_batch_size=self.config.max_batch_size,
            max_wait_s=self.config.batch_wait_ms / 1000,
            max_queue=self.config.max_queue,
        )

    @property
    def methods(self) -> list[str]:
        """Segmentation methods this server can run: for now the loaded model's head."""
        return [self.model.head.name]

    def submit(self, job: Job) -> Future[Outcome]:
        """Queue a job for the worker; raises `QueueFullError` when the queue is full."""
        return self.batcher.submit(job)

    def close(self) -> None:
        self.batcher.close()

    def _run_batch(self, jobs: Sequence[Job]) -> list[Outcome | BaseException]:
        outputs: list[Outcome | BaseException | None] = [None] * len(jobs)
        ready: list[tuple[int, ImageCache, list[Turn]]] = []
        for index, job in enumerate(jobs):
            try:
                cache = job.cache if job.cache is not None else encode_image(self.model, job.image)
            except Exception as exc:  # one image that fails to encode fails alone
                outputs[index] = exc
                continue
            ready.append((index, cache, job.turns))
        if ready:
            results = answer_many(
                self.model,
                [(cache, turns) for _, cache, turns in ready],
                max_new_tokens=self.config.max_new_tokens,
            )
            for (index, cache, _), result in zip(ready, results, strict=True):
                outputs[index] = Outcome(result, cache, batch_size=len(ready))
        return cast("list[Outcome | BaseException]", outputs)


def load_examples(directory: Path | None) -> dict[str, bytes]:
    """Example PNGs by file name, read once: requests pick from this whitelist by name."""
    if directory is None or not directory.is_dir():
        return {}
    return {path.name: path.read_bytes() for path in sorted(directory.glob("*.png"))}
