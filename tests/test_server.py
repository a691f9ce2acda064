"""The HTTP API through FastAPI's TestClient: golden path, conversations, batching, every bad
input (4xx JSON, never a dead process), a full queue (503) and a timeout (504)."""

from __future__ import annotations

import base64
import io
import struct
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import ONE, TWO, scene
from fastapi.testclient import TestClient
from PIL import Image
from pycocotools import mask as coco_mask

from pixelreason import Segmenter
from pixelreason.models.segmenter import PixelReasonModel
from pixelreason.prompting import MAX_QUERY_CHARS
from pixelreason.registry import load_model
from pixelreason.server import SegmentService, ServerConfig, create_app
from pixelreason.server import app as app_module
from pixelreason.server import service as service_module
from pixelreason.server.app import FORM_OVERHEAD_BYTES


@pytest.fixture(scope="module")
def random_model() -> PixelReasonModel:
    return load_model("random:tiny")[0]


@contextmanager
def serving(
    model: PixelReasonModel, **settings: Any
) -> Iterator[tuple[TestClient, SegmentService]]:
    service = SegmentService(model, "test model", ServerConfig(**settings), model_name="test")
    with TestClient(create_app(service)) as client:
        yield client, service


def png_bytes(image: Image.Image | None = None, format: str = "PNG", **options: Any) -> bytes:
    buffer = io.BytesIO()
    (image or scene()[0]).save(buffer, format=format, **options)
    return buffer.getvalue()


def ask(client: TestClient, query: str, image: bytes | None = None, **fields: Any) -> Any:
    files = {"image": ("upload.bin", image, "application/octet-stream")} if image else None
    return client.post("/api/segment", data={"query": query, **fields}, files=files)


def decode(rle: dict[str, Any]) -> np.ndarray:
    return coco_mask.decode({"size": rle["size"], "counts": rle["counts"].encode()}).astype(bool)


def test_answer_matches_the_python_api(trained_dir: Path) -> None:
    model = PixelReasonModel.from_pretrained(trained_dir)
    reference = Segmenter(model)
    reference.set_image(scene()[0])
    expected = reference.segment(TWO[0])
    with serving(model) as (client, _):
        response = ask(client, TWO[0], png_bytes(), overlay="true")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["text"] == expected.text == TWO[1]
    assert (body["width"], body["height"], body["turn"], body["method"]) == (80, 48, 1, "lisa")
    assert len(body["targets"]) == 2
    for target, mask, box, score in zip(
        body["targets"], expected.masks, expected.boxes, expected.scores, strict=True
    ):
        np.testing.assert_array_equal(decode(target["mask_rle"]), mask)
        assert target["box_xyxy"] == box.tolist() and target["area"] == int(mask.sum())
        assert target["score"] == pytest.approx(float(score), abs=1e-6)
    overlay = Image.open(io.BytesIO(base64.b64decode(body["overlay_png"])))
    assert overlay.format == "PNG" and overlay.width >= 80


def test_conversation_continues_like_segmenter_chat(random_model: PixelReasonModel) -> None:
    reference = Segmenter(random_model)
    reference.set_image(scene()[0])
    expected = [reference.chat(ONE[0]).text, reference.chat(TWO[0]).text]
    with serving(random_model) as (client, service):
        first = ask(client, ONE[0], png_bytes()).json()
        second = ask(client, TWO[0], conversation_id=first["conversation_id"]).json()
        assert [first["text"], second["text"]] == expected
        assert second["conversation_id"] == first["conversation_id"]
        assert (first["turn"], second["turn"], second["overlay_png"]) == (1, 2, None)
        assert client.get("/api/health").json()["conversations"] == 1
        gone = client.delete(f"/api/conversations/{first['conversation_id']}")
        assert gone.json() == {"deleted": True}
        again = ask(client, ONE[0], conversation_id=first["conversation_id"])
        assert again.status_code == 404 and "conversation_id" in again.json()["error"]


def test_conversation_turn_limit(random_model: PixelReasonModel) -> None:
    with serving(random_model, max_turns=2) as (client, _):
        conversation = ask(client, "one", png_bytes()).json()["conversation_id"]
        assert ask(client, "two", conversation_id=conversation).status_code == 200
        refused = ask(client, "three", conversation_id=conversation)
        assert refused.status_code == 400 and "2 turns" in refused.json()["error"]


@pytest.mark.parametrize(
    ("format", "options"),
    [("JPEG", {}), ("WEBP", {}), ("BMP", {}), ("GIF", {})],
)
def test_accepted_image_types(random_model: PixelReasonModel, format: str, options: dict) -> None:
    with serving(random_model) as (client, _):
        response = ask(client, "where?", png_bytes(format=format, **options))
    assert response.status_code == 200, response.text
    assert (response.json()["width"], response.json()["height"]) == (80, 48)


def test_animated_gif_gives_its_first_frame(random_model: PixelReasonModel) -> None:
    frames = [Image.new("RGB", (40, 30), c) for c in ("red", "blue")]
    buffer = io.BytesIO()
    frames[0].save(buffer, format="GIF", save_all=True, append_images=frames[1:])
    with serving(random_model) as (client, service):
        response = ask(client, "where?", buffer.getvalue())
        assert response.status_code == 200, response.text
        (conversation,) = service.conversations._items.values()
    assert conversation.image.getpixel((5, 5))[0] > 200  # red, the first frame


def _png_header_only(width: int, height: int) -> bytes:
    """A tiny PNG that claims width x height pixels: a decompression bomb's header."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + chunk(b"IEND", b"")
    )


def _tiff() -> bytes:
    return png_bytes(format="TIFF")


BAD_INPUTS: list[tuple[str, Callable[[], dict[str, Any]], int, str]] = [
    ("empty query", lambda: {"query": "   ", "image": png_bytes()}, 400, "query is empty"),
    (
        "long query",
        lambda: {"query": "why " * MAX_QUERY_CHARS, "image": png_bytes()},
        400,
        "query is too long",
    ),
    ("missing query", lambda: {"image": png_bytes()}, 400, "query is empty"),
    ("reserved token", lambda: {"query": "a <SEG>", "image": png_bytes()}, 400, "reserved"),
    ("no image", lambda: {"query": "where?"}, 400, "send an image"),
    (
        "image and conversation",
        lambda: {"query": "where?", "image": png_bytes(), "conversation_id": "abc"},
        400,
        "not both",
    ),
    ("text file", lambda: {"query": "where?", "image": b"hello, world"}, 415, "unsupported"),
    ("tiff", lambda: {"query": "where?", "image": _tiff()}, 415, "unsupported image type"),
    (
        "corrupt",
        lambda: {"query": "where?", "image": b"\x89PNG\r\n\x1a\n" + b"\x00" * 100},
        400,
        "cannot read image",
    ),
    (
        "truncated",
        lambda: {"query": "where?", "image": png_bytes()[:60]},
        400,
        "cannot read image",
    ),
    ("empty file", lambda: {"query": "where?", "image": b""}, 400, "empty"),
    (
        "bomb",
        lambda: {"query": "where?", "image": _png_header_only(30_000, 30_000)},
        413,
        "too large",
    ),
    (
        "unknown conversation",
        lambda: {"query": "where?", "conversation_id": "../../etc/passwd"},
        404,
        "unknown or expired",
    ),
    (
        "unknown method",
        lambda: {"query": "where?", "image": png_bytes(), "method": "pixellm"},
        400,
        "available: lisa",
    ),
    (
        "bad overlay flag",
        lambda: {"query": "where?", "image": png_bytes(), "overlay": "maybe"},
        400,
        "overlay",
    ),
]


@pytest.mark.parametrize(
    ("fields", "status", "message"), [b[1:] for b in BAD_INPUTS], ids=[b[0] for b in BAD_INPUTS]
)
def test_bad_input_gets_a_clear_json_error(
    random_model: PixelReasonModel, fields: Callable[[], dict[str, Any]], status: int, message: str
) -> None:
    values = fields()
    image = values.pop("image", None)
    with serving(random_model) as (client, _):
        files = {"image": ("x.png", image, "image/png")} if image is not None else None
        response = client.post("/api/segment", data=values, files=files)
        assert response.status_code == status, response.text
        assert list(response.json()) == ["error"] and message in response.json()["error"]
        assert ask(client, "still alive?", png_bytes()).status_code == 200


def test_uploads_over_the_limit_are_refused_before_decoding(
    random_model: PixelReasonModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    decoded = []
    original = app_module.load_image
    monkeypatch.setattr(
        app_module, "load_image", lambda *a, **k: decoded.append(1) or original(*a, **k)
    )
    with serving(random_model, max_upload_bytes=2_000) as (client, _):
        noise = np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)
        big = png_bytes(Image.fromarray(noise))  # ~12 kB: over the image limit, under the body's
        response = ask(client, "where?", big)
        assert response.status_code == 413 and "too large" in response.json()["error"]
        huge = b"\x89PNG" + b"\0" * (FORM_OVERHEAD_BYTES + 10_000)  # over the body limit too
        response = ask(client, "where?", huge)
        assert response.status_code == 413 and "body is too large" in response.json()["error"]
        assert decoded == []


def test_bodies_without_a_length_are_counted_as_they_stream(random_model: PixelReasonModel) -> None:
    boundary = "xyz"
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="a.png"\r\n'
        "Content-Type: image/png\r\n\r\n"
    ).encode()

    def chunks() -> Iterator[bytes]:
        yield head
        for _ in range(40):
            yield b"\0" * 10_000

    with serving(random_model, max_upload_bytes=1_000) as (client, _):
        response = client.post(
            "/api/segment",
            content=chunks(),
            headers={"content-type": f"multipart/form-data; boundary={boundary}"},
        )
        assert response.status_code == 413, response.text
        assert "too large" in response.json()["error"]


@contextmanager
def blocked_model(monkeypatch: pytest.MonkeyPatch) -> Iterator[threading.Event]:
    """Hold the worker inside the model until the yielded event is set."""
    entered, release = threading.Event(), threading.Event()
    original = service_module.answer_many

    def slow(*args: Any, **kwargs: Any) -> Any:
        entered.set()
        release.wait(30)
        return original(*args, **kwargs)

    monkeypatch.setattr(service_module, "answer_many", slow)
    try:
        yield entered
    finally:
        release.set()
        monkeypatch.setattr(service_module, "answer_many", original)
    release.set()


def _wait_until(condition: Callable[[], bool], seconds: float = 20) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.01)


def test_full_queue_answers_503_and_work_resumes(
    random_model: PixelReasonModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = {"max_batch_size": 1, "max_queue": 1, "batch_wait_ms": 0}
    with serving(random_model, **settings) as (client, service), ThreadPoolExecutor(2) as pool:
        with blocked_model(monkeypatch) as entered:
            running = pool.submit(ask, client, "first", png_bytes())
            entered.wait(20)
            waiting = pool.submit(ask, client, "second", png_bytes())
            _wait_until(lambda: service.batcher.queued == 1)
            refused = ask(client, "third", png_bytes())
            assert refused.status_code == 503
            assert "busy" in refused.json()["error"] and refused.headers["retry-after"] == "1"
        assert running.result().status_code == 200
        assert waiting.result().status_code == 200


def test_slow_answer_times_out_with_504_and_is_skipped(
    random_model: PixelReasonModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = {"max_batch_size": 1, "batch_wait_ms": 0, "request_timeout_s": 0.5}
    with serving(random_model, **settings) as (client, service), ThreadPoolExecutor(1) as pool:
        with blocked_model(monkeypatch) as entered:
            running = pool.submit(ask, client, "first", png_bytes())
            entered.wait(20)
            late = ask(client, "second", png_bytes())
            assert late.status_code == 504 and "no answer within" in late.json()["error"]
        assert running.result().status_code == 504
        _wait_until(lambda: sum(service.batcher.batch_sizes.values()) == 1)
        assert ask(client, "third", png_bytes()).status_code == 200  # the second never ran
        assert dict(service.batcher.batch_sizes) == {1: 2}


def test_requests_arriving_together_share_a_batch(
    random_model: PixelReasonModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    with serving(random_model, max_batch_size=4, batch_wait_ms=50) as (client, service):
        with ThreadPoolExecutor(4) as pool, blocked_model(monkeypatch) as entered:
            first = pool.submit(ask, client, "first", png_bytes())
            entered.wait(20)
            rest = [pool.submit(ask, client, f"question {k}", png_bytes()) for k in range(3)]
            _wait_until(lambda: service.batcher.queued == 3)
        sizes = [first.result().json()["batch_size"]] + [
            r.result().json()["batch_size"] for r in rest
        ]
    assert sizes == [1, 3, 3, 3]
    assert dict(service.batcher.batch_sizes) == {1: 1, 3: 1}


def test_a_failing_model_call_gives_500_and_the_server_keeps_serving(
    random_model: PixelReasonModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = service_module.answer_many
    calls = []

    def flaky(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("simulated failure")
        return original(*args, **kwargs)

    monkeypatch.setattr(service_module, "answer_many", flaky)
    with serving(random_model) as (client, _):
        response = client.post(
            "/api/segment",
            data={"query": "where?"},
            files={"image": ("a.png", png_bytes(), "image/png")},
        )
        assert response.status_code == 500
        assert "simulated failure" in response.json()["error"]
        assert ask(client, "where?", png_bytes()).status_code == 200


def test_models_health_examples_and_openapi(random_model: PixelReasonModel, tmp_path: Path) -> None:
    (tmp_path / "street.png").write_bytes(png_bytes())
    (tmp_path / "notes.txt").write_text("not an example")
    with serving(random_model, examples_dir=tmp_path) as (client, _):
        models = client.get("/api/models").json()
        assert models["methods"] == ["lisa"] and models["default_method"] == "lisa"
        assert models["limits"]["max_query_chars"] == MAX_QUERY_CHARS
        assert client.get("/api/health").json()["status"] == "ok"
        assert client.get("/api/examples").json() == {
            "examples": [{"name": "street.png", "url": "/examples/street.png"}]
        }
        example = client.get("/examples/street.png")
        assert example.status_code == 200 and example.content == png_bytes()
        for name in ("notes.txt", "..%2Fpyproject.toml", "%2E%2E%2F%2E%2E%2Fetc%2Fpasswd"):
            missing = client.get(f"/examples/{name}")
            assert missing.status_code == 404 and "error" in missing.json()
        spec = client.get("/openapi.json").json()
        assert {"/api/segment", "/api/models", "/api/health"} <= set(spec["paths"])
        page = client.get("/")
        assert page.status_code == 200 and "<canvas" in page.text
        assert "default-src 'self'" in page.headers["content-security-policy"]
        assert client.get("/no/such/page").json() == {"error": "Not Found"}


def test_serve_help_explains_and_bad_settings_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    from pixelreason.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["serve", "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    assert "/api/segment" in text and "127.0.0.1" in text and "--max-batch-size" in text
    assert main(["serve", "--model", "random:tiny", "--max-queue", "0"]) == 2
    assert capsys.readouterr().err.strip() == "error: max_queue must be positive, got 0"
