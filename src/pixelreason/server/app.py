"""The HTTP API and the web page: FastAPI routes over a `SegmentService`.

    GET  /                       the web page (static/index.html)
    POST /api/segment            image or conversation_id + query -> answer, masks (COCO RLE)
    GET  /api/models             the loaded model, its methods and the server's limits
    GET  /api/examples           bundled example images; GET /examples/{name} serves one
    GET  /api/health             liveness, queue length, batch sizes so far
    DELETE /api/conversations/{conversation_id}
    GET  /docs, /openapi.json    the OpenAPI spec

Every error is JSON `{"error": "..."}` with a 4xx status for bad input (400 bad field, 404
unknown conversation, 409 conversation busy, 413 too large, 415 not an accepted image type),
503 when the queue is full and 504 when an answer takes longer than the request timeout.
"""

from __future__ import annotations

import asyncio
import base64
import io
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from importlib import resources
from typing import Annotated, Any

from fastapi import FastAPI, File, Form, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.requests import Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from PIL import Image
from starlette.exceptions import HTTPException

from pixelreason import __version__
from pixelreason.api import Result, check_query
from pixelreason.errors import InputError, InputTooLargeError, PixelReasonError
from pixelreason.imaging import load_image
from pixelreason.prompting import Turn
from pixelreason.server.batching import QueueFullError
from pixelreason.server.conversations import (
    Conversation,
    ConversationBusyError,
    UnknownConversationError,
)
from pixelreason.server.schemas import (
    ErrorBody,
    Example,
    ExampleList,
    Health,
    MethodList,
    SegmentResponse,
)
from pixelreason.server.service import Job, Outcome, SegmentService
from pixelreason.server.uploads import (
    ACCEPTED_TYPES,
    BodyLimitMiddleware,
    UnsupportedImageTypeError,
    read_upload,
    sniff_image_type,
)
from pixelreason.viz import overlay as draw_overlay

logger = logging.getLogger(__name__)

#: Room for the form's text fields and multipart framing on top of the image itself.
FORM_OVERHEAD_BYTES = 64 * 1024
#: The page may talk only to this server; inline script and style live in the one file.
PAGE_POLICY = (
    "default-src 'self'; img-src 'self' data: blob:; style-src 'self' 'unsafe-inline'; "
    "script-src 'self' 'unsafe-inline'; connect-src 'self'; frame-ancestors 'none'"
)
ERRORS = {
    400: "bad field (empty or too long query, corrupt image, unknown method, ...)",
    404: "unknown or expired conversation_id",
    409: "the conversation is still answering its previous question",
    413: "upload or image too large",
    415: "not an accepted image type",
    503: "too many requests waiting; retry later",
    504: "no answer within the request timeout",
}


def _documented(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI entries for the error answers a route can give."""
    return {s: {"model": ErrorBody, "description": ERRORS[s]} for s in statuses}


def create_app(service: SegmentService) -> FastAPI:
    """The FastAPI application around `service` (which it closes on shutdown)."""

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        service.close()

    config = service.config
    app = FastAPI(
        title="pixelreason",
        version=__version__,
        description="Reasoning segmentation: ask an image a question, get an answer and one "
        "mask per target. Web page at `/`.",
        lifespan=lifespan,
    )
    app.add_middleware(BodyLimitMiddleware, max_bytes=config.max_upload_bytes + FORM_OVERHEAD_BYTES)
    _add_error_handlers(app)
    page = resources.files("pixelreason.server").joinpath("static/index.html").read_text()

    @app.get("/", include_in_schema=False)
    def index() -> HTMLResponse:
        return HTMLResponse(page, headers={"Content-Security-Policy": PAGE_POLICY})

    @app.post(
        "/api/segment",
        response_model=SegmentResponse,
        responses=_documented(400, 404, 409, 413, 415, 503, 504),
    )
    async def segment(
        query: Annotated[str, Form(description="the question or instruction")] = "",
        image: Annotated[
            UploadFile | None,
            File(description=f"starts a new conversation; {', '.join(ACCEPTED_TYPES)}"),
        ] = None,
        conversation_id: Annotated[
            str | None, Form(description="continues a conversation (instead of an image)")
        ] = None,
        method: Annotated[
            str | None, Form(description="segmentation method; see /api/models")
        ] = None,
        overlay: Annotated[
            bool, Form(description="also return the masks drawn over the image as a PNG")
        ] = False,
    ) -> dict[str, Any]:
        """Answer `query` about a new image or, with `conversation_id`, the next turn of a
        conversation. Requests arriving together are answered in one batch."""
        chosen = method or service.methods[0]
        if chosen not in service.methods:
            raise HTTPException(
                400, f"unknown method {chosen!r}; available: {', '.join(service.methods)}"
            )
        query = check_query(service.model, query)
        conversation_id = conversation_id or None
        if image is not None and conversation_id is not None:
            raise HTTPException(
                400, "send an image (new conversation) or a conversation_id, not both"
            )
        if image is None and conversation_id is None:
            raise HTTPException(400, "send an image, or the conversation_id of an earlier answer")
        if image is not None:
            data = await read_upload(image, config.max_upload_bytes)
            sniff_image_type(data[:16])
            rgb = await run_in_threadpool(
                load_image, data, max_pixels=config.max_pixels, formats=ACCEPTED_TYPES
            )
            outcome = await _answer(service, Job([Turn(query)], image=rgb))
            answered = Turn(query, outcome.result.extras["raw_text"])
            conversation = service.conversations.create(rgb, outcome.cache, [answered])
            reply = Reply(conversation.id, 1, rgb, outcome, chosen)
            return await run_in_threadpool(_body, reply, overlay)
        assert conversation_id is not None
        conversation = _checkout(service, conversation_id)
        answered = None
        try:
            if len(conversation.history) >= config.max_turns:
                raise HTTPException(
                    400, f"this conversation has {config.max_turns} turns; start a new one"
                )
            job = Job([*conversation.history, Turn(query)], cache=conversation.cache)
            outcome = await _answer(service, job)
            answered = Turn(query, outcome.result.extras["raw_text"])
            turn = len(conversation.history) + 1
        finally:
            service.conversations.release(conversation, answered)
        reply = Reply(conversation.id, turn, conversation.image, outcome, chosen)
        return await run_in_threadpool(_body, reply, overlay)

    @app.delete("/api/conversations/{conversation_id}", responses=_documented(404))
    def forget(conversation_id: str) -> dict[str, bool]:
        """Forget a conversation (its image and turns) before it expires."""
        if not service.conversations.delete(conversation_id):
            raise HTTPException(404, "unknown or expired conversation_id")
        return {"deleted": True}

    @app.get("/api/models", response_model=MethodList)
    def models() -> dict[str, Any]:
        """The loaded model, the methods it offers and the server's limits."""
        return {
            "model": service.model_name,
            "description": service.description,
            "methods": service.methods,
            "default_method": service.methods[0],
            "limits": config.limits(),
        }

    @app.get("/api/examples", response_model=ExampleList)
    def examples() -> dict[str, list[Example]]:
        """Example images bundled with this installation (may be empty)."""
        return {
            "examples": [Example(name=n, url=f"/examples/{n}") for n in sorted(service.examples)]
        }

    @app.get("/examples/{name}", responses={404: {"model": ErrorBody}})
    def example(name: str) -> Response:
        """One example image, by its name in /api/examples (nothing else is served)."""
        data = service.examples.get(name)
        if data is None:
            raise HTTPException(404, "no such example")
        return Response(data, media_type="image/png")

    @app.get("/api/health", response_model=Health)
    def health() -> dict[str, Any]:
        return {
            "status": "ok",
            "model": service.model_name,
            "queued": service.batcher.queued,
            "conversations": len(service.conversations),
            "batch_sizes": {str(k): v for k, v in sorted(service.batcher.batch_sizes.items())},
        }

    return app


async def _answer(service: SegmentService, job: Job) -> Outcome:
    """Queue `job` and wait for its answer, within the request timeout."""
    try:
        future = service.submit(job)
    except QueueFullError:
        raise HTTPException(
            503,
            "the server is busy: too many questions are waiting; try again shortly",
            headers={"Retry-After": "1"},
        ) from None
    timeout = service.config.request_timeout_s
    try:
        return await asyncio.wait_for(asyncio.wrap_future(future), timeout)
    except asyncio.TimeoutError:
        future.cancel()  # if it has not started, the worker skips it
        raise HTTPException(504, f"no answer within {timeout:g} s; try again later") from None
    except PixelReasonError:
        raise
    except Exception as exc:  # a bug or a model failure: log it, answer 500, keep serving
        logger.exception("the model failed on a request")
        raise HTTPException(500, f"internal error: {type(exc).__name__}: {exc}") from exc


def _checkout(service: SegmentService, conversation_id: str) -> Conversation:
    try:
        return service.conversations.checkout(conversation_id)
    except UnknownConversationError:
        raise HTTPException(
            404, "unknown or expired conversation_id: send the image again to start over"
        ) from None
    except ConversationBusyError:
        raise HTTPException(
            409, "this conversation is still answering its previous question"
        ) from None


@dataclass
class Reply:
    """What a segment response is made from."""

    conversation_id: str
    turn: int
    image: Image.Image
    outcome: Outcome
    method: str


def _body(reply: Reply, with_overlay: bool) -> dict[str, Any]:
    result, image = reply.outcome.result, reply.image
    return {
        **result.to_dict(),
        "conversation_id": reply.conversation_id,
        "turn": reply.turn,
        "method": reply.method,
        "width": image.width,
        "height": image.height,
        "overlay_png": _overlay_png(result, image) if with_overlay else None,
        "batch_size": reply.outcome.batch_size,
    }


def _overlay_png(result: Result, image: Image.Image) -> str:
    labels = [f"target {k + 1} (score {s:.2f})" for k, s in enumerate(result.scores)]
    picture = draw_overlay(
        image,
        result.masks,
        labels,
        caption=result.text,
        word_points=result.extras.get("word_points"),
        prompts=result.extras.get("sam_prompts"),
    )
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def _add_error_handlers(app: FastAPI) -> None:
    def error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
        return JSONResponse({"error": message}, status_code=status, headers=headers)

    @app.exception_handler(HTTPException)
    async def http_error(_: Request, exc: HTTPException) -> JSONResponse:
        return error(exc.status_code, str(exc.detail), exc.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        parts = [
            f"{'.'.join(str(p) for p in e.get('loc', ()) if p != 'body')}: {e.get('msg')}"
            for e in exc.errors()
        ]
        return error(400, "; ".join(parts) or "invalid request")

    @app.exception_handler(PixelReasonError)
    async def bad_input(_: Request, exc: PixelReasonError) -> JSONResponse:
        if isinstance(exc, InputTooLargeError):
            return error(413, str(exc))
        if isinstance(exc, UnsupportedImageTypeError):
            return error(415, str(exc))
        return error(400 if isinstance(exc, InputError) else 500, str(exc))

    @app.exception_handler(Exception)
    async def bug(_: Request, exc: Exception) -> JSONResponse:
        return error(500, f"internal error: {type(exc).__name__}: {exc}")
