"""Backends: one class per way of reaching a model, each implementing ``Backend.generate``."""

from __future__ import annotations

from abc import ABC, abstractmethod

from stickerconv.llm.types import Completion, Request


class Backend(ABC):
    """The one method a backend implements; caching, retries, limits and accounting wrap it.

    ``generate`` raises TransientError for failures worth retrying and PermanentError for the
    rest; it must not retry by itself.
    """

    name: str  # "openai", "local", ...
    model: str
    accepts_images: bool = False
    # False for in-process models: a generation cannot be interrupted, so a timeout would only
    # start a retry that queues behind the still-running call; max_tokens bounds them instead.
    timeout_applies: bool = True

    @abstractmethod
    async def generate(self, request: Request, timeout: float) -> Completion:
        """Answer one request within ``timeout`` seconds."""

    async def aclose(self) -> None:
        """Release connections or model memory."""

    async def release_loop(self) -> None:
        """Drop what is bound to the running event loop (HTTP connections) before that loop ends; the
        backend stays usable from a later loop. ``asyncio.run`` callers call it on the way out."""
