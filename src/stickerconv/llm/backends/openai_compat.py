"""Any OpenAI-compatible chat endpoint (OpenAI, vLLM, llama.cpp's server, Ollama) via the official SDK.

The SDK's own retries are switched off: retrying is the ChatModel's job, so that backoff, the
retry budget and the ledger see every attempt. How a JSON schema is passed is negotiated with the
server once per backend (llm/structured.py): a refused mode falls to the next within the same call.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from email.utils import parsedate_to_datetime
from time import time
from typing import TYPE_CHECKING

from stickerconv.llm.backends import Backend
from stickerconv.llm.structured import (
    StructuredNegotiation,
    response_format,
    schema_in_prompt,
    with_schema_instruction,
)
from stickerconv.llm.types import Completion, ConfigError, Message, PermanentError, Request, TransientError, Usage

if TYPE_CHECKING:
    import openai

log = logging.getLogger(__name__)


def parse_retry_after(value: str | None) -> float | None:
    """Seconds to wait from a Retry-After header: delta-seconds (fractions accepted) or an HTTP date."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time())
    except (TypeError, ValueError):
        return None


class ResponseFormatRejected(PermanentError):
    """The server refused the request's ``response_format``: an HTTP error (4xx or 5xx) whose body names
    ``response_format`` or ``json_schema``. The status alone says nothing: llama.cpp's server refuses with a
    500, and a plain 500 is a transient failure worth retrying."""

    def __init__(self, exc: openai.APIStatusError):
        self.status = exc.status_code
        self.reason = f"HTTP {exc.status_code}: {_message(exc)[:300]}"
        super().__init__(self.reason)


class OpenAICompatBackend(Backend):
    """``--llm openai:MODEL``; base URL and key from options or OPENAI_BASE_URL / OPENAI_API_KEY."""

    name = "openai"
    accepts_images = True  # the server decides; a text-only model answers 400, which is reported

    def __init__(self, model: str, *, base_url: str | None = None, api_key: str | None = None):
        try:
            import openai  # noqa: F401
        except ImportError as exc:
            raise ConfigError("the openai package is not installed; run scripts/install.sh") from exc
        if not model:
            raise ConfigError("no model name: use --llm openai:MODEL_NAME, e.g. openai:gpt-4o-mini")
        self.model = model
        self.base_url = base_url or os.environ.get("OPENAI_BASE_URL") or "https://api.openai.com/v1"
        key = api_key or os.environ.get("OPENAI_API_KEY")
        if key is None:
            if "api.openai.com" in self.base_url:
                raise ConfigError(
                    "OPENAI_API_KEY is not set: export it, or pass an API key, or point OPENAI_BASE_URL at a "
                    "local OpenAI-compatible server (vLLM, llama.cpp, Ollama)"
                )
            key = "not-needed"  # local servers ignore the key, but the SDK requires one
        self._key = key
        self._client = None  # an openai.AsyncOpenAI, made per event loop
        self._client_loop: asyncio.AbstractEventLoop | None = None
        self.structured = StructuredNegotiation(str(self))  # shared by every ChatModel on this backend

    async def generate(self, request: Request, timeout: float) -> Completion:
        if request.json_schema is None:
            return await self._send(self._kwargs(request.messages, request), timeout)
        pinned = request.structured_output
        while True:  # each pass either returns, raises, or rules a mode out, and "prompt" cannot be ruled out
            mode = self.structured.mode(pinned)
            messages = request.messages
            if schema_in_prompt(mode):
                messages = with_schema_instruction(messages, request.json_schema)
            kwargs = self._kwargs(messages, request)
            if (fmt := response_format(mode, request.json_schema)) is not None:
                kwargs["response_format"] = fmt
            try:
                completion = await self._send(kwargs, timeout)
            except ResponseFormatRejected as exc:
                if self.structured.rejected(mode, exc.reason, pinned):
                    continue  # the next mode, within this attempt: a refusal is an answer, not a failure
                why = "pinned by structured_output; try 'auto'" if pinned != "auto" else "it worked for earlier calls"
                raise PermanentError(f"{self} refused structured output {mode} ({why}): {exc}") from exc
            if pinned == "auto":
                self.structured.accepted(mode)
            return completion.model_copy(update={"structured_mode": mode})

    def _kwargs(self, messages: list[Message], request: Request) -> dict:
        s = request.settings
        kwargs = {
            "model": self.model,
            "messages": [m.model_dump(mode="json", exclude_none=True) for m in messages],
            "temperature": s.temperature,
            "max_tokens": s.max_tokens,
        }
        for name in ("top_p", "seed", "stop", "frequency_penalty", "presence_penalty"):
            if getattr(s, name) is not None:
                kwargs[name] = getattr(s, name)
        if s.repeat_penalty is not None:  # not OpenAI's: llama.cpp's and Ollama's servers read it from the body
            kwargs["extra_body"] = {"repeat_penalty": s.repeat_penalty}
        return kwargs

    def _client_for_loop(self):
        """The SDK's connection pool belongs to one event loop, and sync callers make a new loop per call."""
        loop = asyncio.get_running_loop()
        if self._client is None or self._client_loop is not loop:
            from openai import AsyncOpenAI

            self._client = AsyncOpenAI(base_url=self.base_url, api_key=self._key, max_retries=0)
            self._client_loop = loop
        return self._client

    async def _send(self, kwargs: dict, timeout: float) -> Completion:
        import openai

        try:
            response = await self._client_for_loop().chat.completions.create(**kwargs, timeout=timeout)
        except openai.RateLimitError as exc:
            raise TransientError(f"rate limited (429): {exc}", parse_retry_after(_header(exc, "retry-after"))) from exc
        except openai.InternalServerError as exc:  # every 5xx
            if "response_format" in kwargs and _names_response_format(exc):
                raise ResponseFormatRejected(exc) from exc  # llama.cpp's server refuses json_schema with a 500
            raise TransientError(
                f"server error {exc.status_code}: {exc}", parse_retry_after(_header(exc, "retry-after"))
            ) from exc
        except (openai.APITimeoutError, openai.APIConnectionError) as exc:  # timeout is a connection error subclass
            raise TransientError(f"{type(exc).__name__}: {exc} ({self.base_url})") from exc
        except openai.APIResponseValidationError as exc:
            raise TransientError(f"malformed response body: {exc}") from exc
        except openai.APIStatusError as exc:  # 4xx other than 429
            if exc.status_code in (408, 409):
                raise TransientError(f"{exc.status_code}: {exc}") from exc
            if "response_format" in kwargs and _names_response_format(exc):
                raise ResponseFormatRejected(exc) from exc
            raise PermanentError(f"{self.base_url} answered {exc.status_code}: {_message(exc)}") from exc
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:  # a 200 whose body is not JSON, or not even
            # text (binary garbage reads as UTF-16 to json's encoding sniffing): the SDK lets both through as is
            raise TransientError(f"response body is not valid JSON: {exc}") from exc
        return _completion(response)

    def __str__(self) -> str:
        return f"openai:{self.model} at {self.base_url}"

    async def aclose(self) -> None:
        await self.release_loop()

    async def release_loop(self) -> None:
        if self._client is not None and self._client_loop is asyncio.get_running_loop():
            await self._client.close()
        self._client = None


def _completion(response) -> Completion:
    if not getattr(response, "choices", None):
        raise TransientError(f"response has no choices: {str(response)[:200]}")
    choice = response.choices[0]
    text = choice.message.content if choice.message is not None else None
    if text is None:
        raise TransientError(f"response has no message content (finish_reason={choice.finish_reason!r})")
    return Completion(text=text, usage=_usage(response.usage), finish_reason=choice.finish_reason)


def _usage(usage) -> Usage:
    """Tokens as the server counted them. Cached prompt tokens come from ``prompt_tokens_details.cached_tokens``
    (OpenAI, and vLLM started with ``--enable-prompt-tokens-details``); a server that leaves it out
    (llama-cpp-python's server, for one) reads as 0, which is also what it bills as cached (Usage explains)."""
    prompt = getattr(usage, "prompt_tokens", 0) or 0
    cached = getattr(getattr(usage, "prompt_tokens_details", None), "cached_tokens", 0) or 0
    return Usage(
        prompt_tokens=prompt,
        completion_tokens=getattr(usage, "completion_tokens", 0) or 0,
        cached_prompt_tokens=min(cached, prompt),
    )


def _header(exc, name: str) -> str | None:
    response = getattr(exc, "response", None)
    return response.headers.get(name) if response is not None else None


def _names_response_format(exc: openai.APIStatusError) -> bool:
    """Whether an error body is about the response format (rather than, say, an overloaded server)."""
    body = exc.response.text if getattr(exc, "response", None) is not None else str(exc.body)
    return "response_format" in body or "json_schema" in body


def _message(exc) -> str:
    body = getattr(exc, "body", None)
    if isinstance(body, dict):
        error = body.get("error", body)
        if isinstance(error, dict) and error.get("message"):
            return str(error["message"])
    return str(exc)
