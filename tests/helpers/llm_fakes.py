"""A scripted backend for tests: answers (or failures) are queued in advance, calls are recorded."""

from __future__ import annotations

import asyncio
from collections import deque

from stickerconv.llm.backends import Backend
from stickerconv.llm.types import Completion, Request, Usage


class ScriptedBackend(Backend):
    """Plays back a queue of replies; an Exception instance in the queue is raised instead.

    With the queue empty it answers ``default`` (a str or a callable of the request)."""

    name = "scripted"

    def __init__(self, replies=(), default="ok", model="scripted-1", delay: float = 0.0):
        self.model, self.default, self.delay = model, default, delay
        self.replies = deque(replies)
        self.requests: list[Request] = []

    async def generate(self, request: Request, timeout: float) -> Completion:
        self.requests.append(request)
        if self.delay:
            await asyncio.sleep(self.delay)
        reply = self.replies.popleft() if self.replies else self.default
        if isinstance(reply, BaseException):
            raise reply
        text = reply(request) if callable(reply) else reply
        return Completion(text=text, usage=Usage(prompt_tokens=10, completion_tokens=len(text.split())))
