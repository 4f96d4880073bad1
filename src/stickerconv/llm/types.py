"""What goes into and comes out of every LLM call, and the errors a caller can meet.

Kept free of any backend so that agents, judges and tests share one vocabulary: messages (text,
optionally with image parts for vision models), sampling settings, usage and a typed result.
"""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class TextPart(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["text"] = "text"
    text: str


class ImageURL(BaseModel):
    model_config = ConfigDict(extra="forbid")
    url: str  # an https URL or a data: URI
    detail: Literal["auto", "low", "high"] | None = None


class ImagePart(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["image_url"] = "image_url"
    image_url: ImageURL

    @classmethod
    def from_file(cls, path: Path | str) -> ImagePart:
        """A data URI part, the form every OpenAI-compatible vision server accepts."""
        path = Path(path)
        mime = {".jpg": "jpeg", ".jpeg": "jpeg", ".gif": "gif", ".webp": "webp"}.get(path.suffix.lower(), "png")
        data = base64.b64encode(path.read_bytes()).decode("ascii")
        return cls(image_url=ImageURL(url=f"data:image/{mime};base64,{data}"))


class Message(BaseModel):
    model_config = ConfigDict(extra="forbid")
    role: Literal["system", "user", "assistant"]
    content: str | list[TextPart | ImagePart]

    @model_validator(mode="after")
    def _images_only_from_user(self) -> Message:
        if isinstance(self.content, list) and self.role != "user" and any(p.type == "image_url" for p in self.content):
            raise ValueError(f"only user messages may carry images, not {self.role} messages")
        return self

    @property
    def text(self) -> str:
        if isinstance(self.content, str):
            return self.content
        return "\n".join(p.text for p in self.content if isinstance(p, TextPart))

    @property
    def has_images(self) -> bool:
        return isinstance(self.content, list) and any(isinstance(p, ImagePart) for p in self.content)


def system(text: str) -> Message:
    return Message(role="system", content=text)


def user(text: str, images: list[ImagePart] | None = None) -> Message:
    return Message(role="user", content=[TextPart(text=text), *images] if images else text)


def assistant(text: str) -> Message:
    return Message(role="assistant", content=text)


# How a JSON schema reaches the model (llm/structured.py explains each); "auto" negotiates with the server.
StructuredMode = Literal["json_schema", "json_object_schema", "json_object", "prompt"]
StructuredOutput = Literal["auto", "json_schema", "json_object_schema", "json_object", "prompt"]


class Settings(BaseModel):
    """Sampling settings of one call; part of the cache key.

    The penalties are None unless set: a backend then uses its own default (the embedded model's
    ``repeat_penalty`` is 1.15, llm/backends/local.py; docs/llm.md has the measurements). Set, they
    are sent as OpenAI's ``frequency_penalty``/``presence_penalty`` and llama.cpp's ``repeat_penalty``."""

    model_config = ConfigDict(extra="forbid")
    temperature: float = Field(0.0, ge=0.0, le=2.0)
    max_tokens: int = Field(256, ge=1)
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    seed: int | None = None
    stop: list[str] | None = None
    frequency_penalty: float | None = Field(None, ge=-2.0, le=2.0)
    presence_penalty: float | None = Field(None, ge=-2.0, le=2.0)
    repeat_penalty: float | None = Field(None, gt=0.0, le=3.0)


# Settings added after caches were written: left out of the key while None, so that every earlier key (and the
# answer cached under it) stays valid; set, they are part of it like any other setting.
_LATER_SETTINGS = ("frequency_penalty", "presence_penalty", "repeat_penalty")


class Usage(BaseModel):
    """Tokens of one call. ``cached_prompt_tokens`` is the part of the prompt the server did not have to evaluate
    because it kept it from an earlier call (its prefix cache; OpenAI's cached input tokens, billed at a
    discount). A server that does not report it reads as 0: it then bills every prompt token as uncached, so 0
    is the right number for cost, though it cannot tell "no reuse" from "not reported"."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_prompt_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    @property
    def uncached_prompt_tokens(self) -> int:
        return self.prompt_tokens - self.cached_prompt_tokens


class Completion(BaseModel):
    """What a backend returns for one request."""

    text: str
    usage: Usage = Usage()
    finish_reason: str | None = None
    structured_mode: StructuredMode | None = None  # how the schema reached the model; not cached


class Request(BaseModel):
    """A fully specified call: everything that determines the answer, so it can be cached by hash."""

    backend: str
    model: str
    messages: list[Message]
    settings: Settings
    json_schema: dict[str, Any] | None = None
    # How to pass json_schema to the server: "auto" negotiates (llm/structured.py). Not part of the key: the
    # question is the same whichever way it is asked, and replay has to find answers before any negotiation.
    structured_output: StructuredOutput = "auto"

    def key(self) -> str:
        """Content address of the request: sha256 over canonical JSON, tagged with the algorithm."""
        fields = self.model_dump(mode="json", exclude={"structured_output"})
        for name in _LATER_SETTINGS:
            if fields["settings"][name] is None:
                del fields["settings"][name]
        canonical = json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        return "sha256:" + hashlib.sha256(canonical.encode("utf-8")).hexdigest()


class ChatResult(BaseModel):
    """The answer to one call, with how it was obtained."""

    model_config = ConfigDict(arbitrary_types_allowed=True)
    text: str
    parsed: Any = None  # the validated pydantic object when a schema was requested
    usage: Usage = Usage()
    backend: str
    model: str
    role: str = "default"
    key: str  # the request's content hash (provenance)
    cached: bool = False
    attempts: int = 1
    latency_s: float = 0.0
    cost_usd: float | None = None
    structured_mode: StructuredMode | None = None  # the mode the server took (None: cached, or no schema)


class LLMError(RuntimeError):
    """Base of every error the LLM layer raises."""


class TransientError(LLMError):
    """A failure worth retrying: rate limits, 5xx, timeouts, dropped connections, garbled bodies."""

    def __init__(self, message: str, retry_after: float | None = None):
        super().__init__(message)
        self.retry_after = retry_after


class PermanentError(LLMError):
    """A failure that retrying cannot fix: bad request, authentication, unknown model."""


class StructuredOutputError(TransientError):
    """The answer did not parse or validate against the requested schema."""

    def __init__(self, message: str, text: str):
        super().__init__(message)
        self.text = text


class RetryBudgetExhausted(LLMError):
    """Every allowed attempt failed; ``last`` holds the final cause."""

    def __init__(self, message: str, last: BaseException, attempts: int):
        super().__init__(message)
        self.last, self.attempts = last, attempts


class ReplayMissError(LLMError):
    """Replay mode met a request that is not in the cache."""


class ConfigError(LLMError):
    """An LLM selection or configuration that cannot work, with the way to fix it."""
