"""Upload limits, checked while bytes arrive and before anything is decoded.

Two layers: `BodyLimitMiddleware` refuses a request whose body (by Content-Length, or by
counting as it streams) exceeds the limit before the form is parsed, and `read_upload` reads
the image part in chunks and stops at the image limit. `sniff_image_type` then checks the
file's magic bytes against the accepted types, whatever name or content type the client gave.
"""

from __future__ import annotations

import json
from typing import Any

from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from pixelreason.errors import InputError, InputTooLargeError

#: Accepted upload types: PIL format name -> magic-byte test. TIFF is left out on purpose
#: (a large decoder surface for little benefit in a web upload).
IMAGE_SIGNATURES: dict[str, Any] = {
    "PNG": lambda head: head.startswith(b"\x89PNG\r\n\x1a\n"),
    "JPEG": lambda head: head.startswith(b"\xff\xd8\xff"),
    "GIF": lambda head: head[:6] in (b"GIF87a", b"GIF89a"),
    "BMP": lambda head: head.startswith(b"BM"),
    "WEBP": lambda head: head[:4] == b"RIFF" and head[8:12] == b"WEBP",
}
ACCEPTED_TYPES = tuple(IMAGE_SIGNATURES)
CHUNK_BYTES = 64 * 1024


class UnsupportedImageTypeError(InputError):
    """The upload is not one of `ACCEPTED_TYPES` (the server answers 415)."""


def sniff_image_type(head: bytes) -> str:
    """The accepted type whose magic bytes start `head`, or `UnsupportedImageTypeError`."""
    for name, matches in IMAGE_SIGNATURES.items():
        if matches(head):
            return name
    raise UnsupportedImageTypeError(
        f"unsupported image type: send {', '.join(ACCEPTED_TYPES[:-1])} or {ACCEPTED_TYPES[-1]}"
    )


async def read_upload(upload: UploadFile, max_bytes: int) -> bytes:
    """All bytes of an uploaded file, refusing (413) as soon as they pass `max_bytes`."""
    chunks, total = [], 0
    while chunk := await upload.read(CHUNK_BYTES):
        total += len(chunk)
        if total > max_bytes:
            raise InputTooLargeError(
                f"image file is too large: over {max_bytes:,} bytes (limit {max_bytes:,})"
            )
        chunks.append(chunk)
    if not total:
        raise InputError("the image file is empty")
    return b"".join(chunks)


class _BodyTooLargeError(HTTPException):
    """Raised from `receive`; an HTTPException so that form parsing passes it on unchanged."""

    def __init__(self, max_bytes: int) -> None:
        super().__init__(413, f"request body is too large (limit {max_bytes:,} bytes)")


class BodyLimitMiddleware:
    """Answer 413 to requests whose body exceeds `max_bytes`, before the app parses it."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._refuse(send)
            return
        received = 0
        started = False

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise _BodyTooLargeError(self.max_bytes)
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except _BodyTooLargeError:
            if not started:
                await self._refuse(send)

    async def _refuse(self, send: Send) -> None:
        body = json.dumps({"error": _BodyTooLargeError(self.max_bytes).detail}).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})
