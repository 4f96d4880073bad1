"""ChatModel: the one object every caller uses to talk to an LLM.

It wraps a backend with, in order: the cache (or replay), the rate limiter, retries with backoff,
structured-output validation, and the ledger. Callers never reimplement any of these.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Sequence
from typing import Literal

from stickerconv.llm.backends import Backend
from stickerconv.llm.policy import Limits, RateLimiter, RetryPolicy
from stickerconv.llm.store import LLMStore, PriceTable, cost_of
from stickerconv.llm.structured import Schema, json_schema_of, parse_structured
from stickerconv.llm.types import (
    ChatResult,
    Completion,
    LLMError,
    Message,
    ReplayMissError,
    Request,
    RetryBudgetExhausted,
    Settings,
    StructuredOutput,
    StructuredOutputError,
    TransientError,
    Usage,
)

log = logging.getLogger(__name__)
CacheMode = Literal["use", "replay", "refresh", "off"]
CACHE_MODES: tuple[str, ...] = ("use", "replay", "refresh", "off")


class ChatModel:
    """An LLM with caching, replay, retries, rate limits and a cost ledger around it.

    ``cache`` modes: ``use`` reads and writes the cache; ``replay`` only reads it and raises
    ReplayMissError on a miss (deterministic, free re-runs and tests); ``refresh`` always calls the
    backend and overwrites; ``off`` neither reads nor writes (the ledger still records calls).
    """

    def __init__(
        self,
        backend: Backend,
        *,
        store: LLMStore | None = None,
        cache: CacheMode = "use",
        role: str = "default",
        settings: Settings | None = None,
        retry: RetryPolicy | None = None,
        limiter: RateLimiter | None = None,
        prices: PriceTable | None = None,
        seed: int = 0,
        structured_output: StructuredOutput = "auto",
    ):
        if cache not in CACHE_MODES:
            raise ValueError(f"unknown cache mode {cache!r}; choose from {', '.join(CACHE_MODES)}")
        if cache != "off" and store is None:
            store = LLMStore(":memory:")
        self.backend, self.store, self.cache, self.role = backend, store, cache, role
        self.settings = settings or Settings()
        self.retry = retry or RetryPolicy()
        self.limiter = limiter or RateLimiter(Limits())
        self.prices = prices or {}
        self.structured_output = structured_output  # how schemas reach the server; "auto" lets the backend learn
        self._rng = random.Random(seed)

    @property
    def model(self) -> str:
        return self.backend.model

    async def complete(
        self, messages: Sequence[Message], schema: Schema | None = None, *, settings: Settings | None = None
    ) -> ChatResult:
        """Answer ``messages``. With ``schema`` (a pydantic model or a JSON schema dict), ``result.parsed``
        holds the validated answer."""
        if not messages:
            raise ValueError("no messages to send")
        if any(m.has_images for m in messages) and not self.backend.accepts_images:
            raise LLMError(
                f"{self.backend.name}:{self.model} does not accept images; choose a vision model "
                "(e.g. --llm openai:gpt-4o-mini, or a LLaVA/Qwen-VL model behind an OpenAI-compatible server)"
            )
        request = Request(
            backend=self.backend.name,
            model=self.model,
            messages=list(messages),
            settings=settings or self.settings,
            json_schema=json_schema_of(schema) if schema is not None else None,
            structured_output=self.structured_output,
        )
        key = request.key()
        start = time.perf_counter()
        if self.cache in ("use", "replay"):
            hit = self.store.get(key)
            if hit is not None:
                try:
                    return self._result(request, key, hit, schema, start, cached=True, attempts=0)
                except StructuredOutputError:
                    if self.cache == "replay":
                        raise
                    log.warning("cached answer %s no longer validates; asking the backend again", key)
            elif self.cache == "replay":
                preview = messages[-1].text[:80]
                raise ReplayMissError(
                    f"replay: no cached answer for request {key} ({self.backend.name}:{self.model}, "
                    f"last message {preview!r}); run once with the cache in 'use' mode to record it"
                )
        completion, attempts = await self._call_with_retries(request, schema)
        if self.cache in ("use", "refresh"):
            self.store.put(request, key, completion)
        return self._result(request, key, completion, schema, start, cached=False, attempts=attempts)

    def complete_sync(self, messages: Sequence[Message], schema: Schema | None = None, **kw) -> ChatResult:
        """``complete`` for code without an event loop (the CLI, scripts)."""
        return asyncio.run(self.complete(messages, schema, **kw))

    async def _call_with_retries(self, request: Request, schema: Schema | None) -> tuple[Completion, int]:
        policy, started = self.retry, time.monotonic()
        estimate = _estimate_tokens(request)
        attempt, invalid, sent = 0, 0, request
        while True:
            attempt += 1
            await self.limiter.acquire(estimate)
            actual = None
            try:
                call = self.backend.generate(sent, policy.timeout)
                grace = min(5.0, policy.timeout)  # the backend's own timeout should fire first; this is a backstop
                completion = await (
                    asyncio.wait_for(call, policy.timeout + grace) if self.backend.timeout_applies else call
                )
                actual = completion.usage.total_tokens or None
                if schema is not None:
                    parse_structured(completion.text, schema)  # validate before accepting (and caching)
                return completion, attempt
            except (TransientError, TimeoutError) as exc:
                error = exc if isinstance(exc, TransientError) else TransientError(f"no answer in {policy.timeout}s")
                elapsed = time.monotonic() - started
                wait = policy.delay(attempt, error.retry_after, self._rng)
                if attempt >= policy.max_attempts or elapsed + wait > policy.total_budget:
                    self._record_failure(request, attempt, error)
                    raise RetryBudgetExhausted(
                        f"{self.backend.name}:{self.model}: gave up after {attempt} attempt(s) in {elapsed:.1f}s; "
                        f"last error: {error}",
                        error,
                        attempt,
                    ) from error
                log.info("attempt %d failed (%s); retrying in %.2fs", attempt, error, wait)
                if isinstance(error, StructuredOutputError):
                    invalid += 1  # counted apart from other failures, so a server fault does not change the seed
                    sent = _resample(request, invalid)
                await asyncio.sleep(wait)
            except LLMError as exc:
                self._record_failure(request, attempt, exc)
                raise
            finally:
                self.limiter.release(estimate, actual)

    def _result(self, request, key, completion, schema, start, *, cached: bool, attempts: int) -> ChatResult:
        parsed = parse_structured(completion.text, schema) if schema is not None else None
        cost = 0.0 if cached else cost_of(self.prices, request.backend, request.model, completion.usage)
        result = ChatResult(
            text=completion.text,
            parsed=parsed,
            usage=completion.usage,
            backend=request.backend,
            model=request.model,
            role=self.role,
            key=key,
            cached=cached,
            attempts=attempts,
            latency_s=time.perf_counter() - start,
            cost_usd=cost,
            structured_mode=None if cached else completion.structured_mode,
        )
        if self.store is not None:
            self.store.record(
                role=self.role,
                backend=request.backend,
                model=request.model,
                key=key,
                usage=completion.usage,
                cost_usd=cost,
                latency_s=result.latency_s,
                cached=cached,
                attempts=attempts,
                structured_mode=result.structured_mode,
            )
        return result

    def _record_failure(self, request: Request, attempts: int, error: BaseException) -> None:
        if self.store is not None:
            self.store.record(
                role=self.role,
                backend=request.backend,
                model=request.model,
                key=request.key(),
                usage=Usage(),
                cost_usd=None,
                latency_s=0.0,
                cached=False,
                attempts=attempts,
                error=f"{type(error).__name__}: {error}"[:500],
            )

    async def aclose(self) -> None:
        await self.backend.aclose()


def _resample(request: Request, invalid: int) -> Request:
    """The request for a retry after the ``invalid``-th invalid structured answer: asking greedy decoding the
    same question again gives the same wrong answer, so sample (temperature >= 0.3) with a new seed. The seed
    depends only on how many answers were invalid, so a run hit by transient faults (429, 5xx, timeouts)
    resamples exactly as an undisturbed run does."""
    settings = request.settings.model_copy(
        update={"seed": (request.settings.seed or 0) + invalid, "temperature": max(request.settings.temperature, 0.3)}
    )
    return request.model_copy(update={"settings": settings})


def _estimate_tokens(request: Request) -> int:
    """Rough tokens of a request before it is sent (4 characters a token), for the TPM window."""
    chars = sum(len(m.text) for m in request.messages)
    return chars // 4 + request.settings.max_tokens
