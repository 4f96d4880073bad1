"""The OpenAI chat-completions wire format, as far as StickerConv serves it (pydantic models).

Requests are read leniently where OpenAI's clients send more than we use (unknown top-level fields and
sampling parameters are accepted and ignored: the responder decides its own decoding) and strictly
where the content matters (roles, content parts, tool calls). Responses carry exactly the fields the
official SDKs read.

The assistant's sticker travels as a ``send_sticker`` function call next to the message text::

    {"role": "assistant", "content": "That sounds hard...",
     "tool_calls": [{"id": "call_...", "type": "function",
                     "function": {"name": "send_sticker", "arguments": "<JSON string>"}}]}

where the arguments are ``{"sticker_id": "noto/1f622", "url": "http://HOST/stickers/noto/1f622",
"label": "Sadness", "description": "...", "emotion": "..."}``, and ``finish_reason`` is ``"stop"``:
the call is for the client to display, not to execute. Sent back in the history, the call is resolved
by ``sticker_id`` (docs/serving.md).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

SEND_STICKER = "send_sticker"


class _In(BaseModel):
    model_config = ConfigDict(extra="ignore")


class TextPart(_In):
    type: Literal["text"]
    text: str


class ImageURL(_In):
    url: str
    detail: str | None = None


class ImagePart(_In):
    type: Literal["image_url"]
    image_url: ImageURL


UserPart = Annotated[TextPart | ImagePart, Field(discriminator="type")]


class FunctionCall(_In):
    name: str
    arguments: str


class ToolCall(_In):
    id: str
    type: Literal["function"] = "function"
    function: FunctionCall


class SystemMessage(_In):
    role: Literal["system", "developer"]
    content: str | list[TextPart]
    name: str | None = None


class UserMessage(_In):
    role: Literal["user"]
    content: str | list[UserPart]
    name: str | None = None


class AssistantMessage(_In):
    role: Literal["assistant"]
    content: str | list[TextPart] | None = None
    tool_calls: list[ToolCall] | None = None
    name: str | None = None


class ToolMessage(_In):
    role: Literal["tool"]
    content: str | list[TextPart]
    tool_call_id: str


ChatMessage = Annotated[
    SystemMessage | UserMessage | AssistantMessage | ToolMessage,
    Field(discriminator="role"),
]


class StreamOptions(_In):
    include_usage: bool | None = None


class ChatCompletionRequest(_In):
    """``POST /v1/chat/completions``. Sampling fields are validated, then left to the responder."""

    model: str
    messages: list[ChatMessage] = Field(min_length=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    n: int | None = Field(None, ge=1, le=1, description="only one choice is served")
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, ge=0, le=1)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    seed: int | None = None
    stop: str | list[str] | None = None
    user: str | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    metadata: dict[str, str] | None = None


def text_of(content: str | list | None) -> str:
    """The text of a message's content (text parts joined by newlines)."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    return "\n".join(p.text for p in content if isinstance(p, TextPart))


# ---------------------------------------------------------------------------- responses


class StickerArgs(BaseModel):
    """The arguments of a ``send_sticker`` call: what a client needs to show the sticker."""

    sticker_id: str
    url: str
    label: str | None = None
    description: str = ""
    emotion: str = ""


class FunctionCallOut(BaseModel):
    name: str
    arguments: str


class ToolCallOut(BaseModel):
    id: str
    type: Literal["function"] = "function"
    function: FunctionCallOut


class MessageOut(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str
    refusal: None = None
    tool_calls: list[ToolCallOut] | None = None


class Choice(BaseModel):
    index: int = 0
    message: MessageOut
    finish_reason: Literal["stop"] = "stop"
    logprobs: None = None


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[Choice]
    system_fingerprint: str | None = None

    def wire(self) -> dict[str, Any]:
        """The completion as sent: a message without a sticker has no ``tool_calls`` key, as OpenAI does."""
        data = self.model_dump()
        for choice in data["choices"]:
            if choice["message"]["tool_calls"] is None:
                del choice["message"]["tool_calls"]
        return data


class ToolCallDelta(BaseModel):
    index: int = 0
    id: str
    type: Literal["function"] = "function"
    function: FunctionCallOut


class Delta(BaseModel):
    role: Literal["assistant"] | None = None
    content: str | None = None
    tool_calls: list[ToolCallDelta] | None = None


class ChunkChoice(BaseModel):
    index: int = 0
    delta: Delta
    finish_reason: Literal["stop"] | None = None
    logprobs: None = None


class ChatCompletionChunk(BaseModel):
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChunkChoice]
    system_fingerprint: str | None = None

    def wire(self) -> dict[str, Any]:
        """The chunk as sent: unset delta fields are left out, as OpenAI does."""
        data = self.model_dump()
        for choice, model in zip(data["choices"], self.choices, strict=True):
            choice["delta"] = model.delta.model_dump(exclude_none=True)
        return data


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "stickerconv"


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class StickerHit(StickerArgs):
    score: float | None = None


class StickerList(BaseModel):
    object: Literal["list"] = "list"
    data: list[StickerHit]
