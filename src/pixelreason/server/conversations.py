"""Conversations kept in memory: an encoded image plus the turns so far, under an opaque id.

Ids are random tokens made here (never derived from client input, never used as paths). The
store is capped (least recently used conversations go first) and conversations idle longer
than `ttl_s` expire. A conversation serves one request at a time, so turns stay in order.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

from PIL import Image

from pixelreason.models.segmenter import ImageCache
from pixelreason.prompting import Turn


class UnknownConversationError(KeyError):
    """No such conversation: never created, expired or evicted."""


class ConversationBusyError(RuntimeError):
    """The conversation is answering another request."""


@dataclass
class Conversation:
    """An image (as sent, for overlays), its model encoding and the answered turns."""

    id: str
    image: Image.Image
    cache: ImageCache
    history: list[Turn] = field(default_factory=list)
    last_used: float = 0.0
    busy: bool = False


class ConversationStore:
    """Thread-safe map of conversation id -> `Conversation`, with a cap and expiry."""

    def __init__(
        self,
        max_conversations: int = 256,
        ttl_s: float = 1800.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_conversations < 1 or ttl_s <= 0:
            raise ValueError("max_conversations must be >= 1 and ttl_s > 0")
        self.max_conversations = max_conversations
        self.ttl_s = ttl_s
        self._clock = clock
        self._items: OrderedDict[str, Conversation] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        with self._lock:
            self._expire()
            return len(self._items)

    def create(self, image: Image.Image, cache: ImageCache, history: list[Turn]) -> Conversation:
        """Store a new conversation under a fresh id, evicting the least recently used if full."""
        with self._lock:
            self._expire()
            while len(self._items) >= self.max_conversations:
                self._items.popitem(last=False)
            conversation = Conversation(
                id=secrets.token_urlsafe(18),
                image=image,
                cache=cache,
                history=list(history),
                last_used=self._clock(),
            )
            self._items[conversation.id] = conversation
            return conversation

    def checkout(self, conversation_id: str) -> Conversation:
        """The conversation, marked busy until `release`; raises if unknown or busy."""
        with self._lock:
            self._expire()
            conversation = self._items.get(conversation_id)
            if conversation is None:
                raise UnknownConversationError(conversation_id)
            if conversation.busy:
                raise ConversationBusyError(conversation_id)
            conversation.busy = True
            conversation.last_used = self._clock()
            self._items.move_to_end(conversation_id)
            return conversation

    def release(self, conversation: Conversation, answered: Turn | None = None) -> None:
        """End a checkout, appending the answered turn if the request succeeded."""
        with self._lock:
            if answered is not None:
                conversation.history.append(answered)
            conversation.busy = False
            conversation.last_used = self._clock()

    def delete(self, conversation_id: str) -> bool:
        with self._lock:
            return self._items.pop(conversation_id, None) is not None

    def _expire(self) -> None:
        now = self._clock()
        for key in [k for k, c in self._items.items() if now - c.last_used > self.ttl_s]:
            if not self._items[key].busy:
                del self._items[key]
