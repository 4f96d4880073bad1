"""Retries with backoff, and the limits that keep a run inside a provider's quotas.

Both are per ChatModel stack and shared by every concurrent call through it, so a thousand agent
calls in flight still honour one requests-per-minute and tokens-per-minute budget.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from pydantic import BaseModel, ConfigDict, Field


class RetryPolicy(BaseModel):
    """Exponential backoff with full jitter; a server's Retry-After is honoured but never beyond the budget."""

    model_config = ConfigDict(extra="forbid")
    max_attempts: int = Field(6, ge=1)
    base_delay: float = Field(0.5, ge=0.0)  # seconds before the 2nd attempt (before jitter)
    max_delay: float = Field(30.0, ge=0.0)  # cap of one wait
    total_budget: float = Field(120.0, gt=0.0)  # seconds from the first attempt after which no retry starts
    timeout: float = Field(60.0, gt=0.0)  # seconds one attempt may take

    def delay(self, attempt: int, retry_after: float | None, rng: random.Random) -> float:
        """Wait before attempt ``attempt + 1`` (attempt counts from 1)."""
        backoff = rng.uniform(0, min(self.max_delay, self.base_delay * 2 ** (attempt - 1)))
        if retry_after is not None:
            return min(self.max_delay, max(retry_after, backoff))
        return backoff


class Limits(BaseModel):
    """How many calls may run at once, and per-minute request and token budgets (None = unlimited)."""

    model_config = ConfigDict(extra="forbid")
    concurrency: int = Field(4, ge=1)
    rpm: int | None = Field(None, ge=1)
    tpm: int | None = Field(None, ge=1)


@dataclass
class RateLimiter:
    """Sliding one-minute windows over requests and tokens, plus a concurrency semaphore."""

    limits: Limits
    clock: Callable[[], float] = time.monotonic
    _requests: deque = field(default_factory=deque)  # start times
    _tokens: deque = field(default_factory=deque)  # (time, tokens)
    _lock: asyncio.Lock | None = None
    _semaphore: asyncio.Semaphore | None = None
    _loop: asyncio.AbstractEventLoop | None = None

    def _ensure(self) -> None:
        loop = asyncio.get_running_loop()
        if self._loop is not loop:  # asyncio primitives belong to one loop; complete_sync makes a new one each time
            self._loop, self._lock = loop, asyncio.Lock()
            self._semaphore = asyncio.Semaphore(self.limits.concurrency)

    async def acquire(self, tokens: int) -> None:
        """Wait for a concurrency slot and for room in the per-minute windows."""
        self._ensure()
        await self._semaphore.acquire()
        try:
            async with self._lock:
                while (wait := self._wait_needed(tokens)) > 0:
                    await asyncio.sleep(wait)
                now = self.clock()
                self._requests.append(now)
                self._tokens.append((now, tokens))
        except BaseException:
            self._semaphore.release()
            raise

    def release(self, estimated: int, actual: int | None) -> None:
        """Free the slot; correct the token window with the real count when it is known."""
        if actual is not None and self._tokens:
            for i in range(len(self._tokens) - 1, -1, -1):
                t, n = self._tokens[i]
                if n == estimated:
                    self._tokens[i] = (t, actual)
                    break
        self._semaphore.release()

    def _wait_needed(self, tokens: int) -> float:
        now = self.clock()
        while self._requests and now - self._requests[0] >= 60:
            self._requests.popleft()
        while self._tokens and now - self._tokens[0][0] >= 60:
            self._tokens.popleft()
        waits = [0.0]
        if self.limits.rpm is not None and len(self._requests) >= self.limits.rpm:
            waits.append(60 - (now - self._requests[0]))
        if self.limits.tpm is not None and self._tokens:
            used = sum(n for _, n in self._tokens)
            if used + tokens > self.limits.tpm:
                waits.append(60 - (now - self._tokens[0][0]))
        return max(waits)
