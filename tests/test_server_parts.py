"""The server's parts without HTTP: the dynamic batcher and the conversation store."""

from __future__ import annotations

import threading
from collections.abc import Sequence

import pytest
from PIL import Image

from pixelreason.prompting import Turn
from pixelreason.server.batching import Batcher, QueueFullError
from pixelreason.server.conversations import (
    ConversationBusyError,
    ConversationStore,
    UnknownConversationError,
)


class Gate:
    """A run_batch that records batches and holds the worker until released."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.entered = threading.Event()
        self.release = threading.Event()

    def __call__(self, items: Sequence[int]) -> list[int | BaseException]:
        self.batches.append(list(items))
        self.entered.set()
        self.release.wait(10)
        if -1 in items:
            raise RuntimeError("bad item in batch")
        return [ValueError("odd") if item == 99 else item * 10 for item in items]


def test_waiting_jobs_run_together_up_to_the_batch_size() -> None:
    gate = Gate()
    batcher: Batcher[int, int] = Batcher(gate, max_batch_size=3, max_wait_s=0.05)
    first = batcher.submit(0)
    assert gate.entered.wait(5)
    rest = [batcher.submit(k) for k in range(1, 6)]
    gate.release.set()
    assert [f.result(5) for f in [first, *rest]] == [0, 10, 20, 30, 40, 50]
    assert gate.batches == [[0], [1, 2, 3], [4, 5]]
    assert batcher.batch_sizes == {1: 1, 3: 1, 2: 1}
    batcher.close()


def test_a_full_queue_refuses_and_cancelled_jobs_are_skipped() -> None:
    gate = Gate()
    batcher: Batcher[int, int] = Batcher(gate, max_batch_size=1, max_wait_s=0, max_queue=2)
    running = batcher.submit(1)
    assert gate.entered.wait(5)
    cancelled, kept = batcher.submit(2), batcher.submit(3)
    with pytest.raises(QueueFullError):
        batcher.submit(4)
    assert cancelled.cancel()
    gate.release.set()
    assert (running.result(5), kept.result(5)) == (10, 30)
    assert gate.batches == [[1], [3]]
    batcher.close()


def test_one_bad_item_fails_alone() -> None:
    gate = Gate()
    gate.release.set()
    batcher: Batcher[int, int] = Batcher(gate, max_batch_size=4, max_wait_s=0.2)
    futures = [batcher.submit(k) for k in (1, -1, 99, 2)]
    assert futures[0].result(5) == 10 and futures[3].result(5) == 20
    with pytest.raises(RuntimeError, match="bad item"):
        futures[1].result(5)
    with pytest.raises(ValueError, match="odd"):
        futures[2].result(5)
    batcher.close()
    with pytest.raises(RuntimeError, match="closed"):
        batcher.submit(5)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _store(**kwargs) -> tuple[ConversationStore, Clock]:
    clock = Clock()
    return ConversationStore(clock=clock, **kwargs), clock


def test_conversations_have_opaque_ids_expire_and_are_capped() -> None:
    store, clock = _store(max_conversations=2, ttl_s=60)
    image = Image.new("RGB", (4, 4))
    a = store.create(image, cache=None, history=[Turn("q", "a")])  # type: ignore[arg-type]
    b = store.create(image, cache=None, history=[])  # type: ignore[arg-type]
    assert len(a.id) >= 24 and a.id != b.id and "/" not in a.id
    clock.now = 30
    store.release(store.checkout(a.id))  # a is now the most recently used
    store.create(image, cache=None, history=[])  # type: ignore[arg-type]
    with pytest.raises(UnknownConversationError):
        store.checkout(b.id)  # evicted: least recently used
    clock.now = 30 + 61
    with pytest.raises(UnknownConversationError):
        store.checkout(a.id)  # expired
    assert len(store) == 0


def test_a_conversation_answers_one_request_at_a_time() -> None:
    store, _ = _store()
    conversation = store.create(Image.new("RGB", (4, 4)), cache=None, history=[])  # type: ignore[arg-type]
    held = store.checkout(conversation.id)
    with pytest.raises(ConversationBusyError):
        store.checkout(conversation.id)
    store.release(held, Turn("q", "a"))
    assert store.checkout(conversation.id).history == [Turn("q", "a")]
    assert store.delete(conversation.id) and not store.delete(conversation.id)
