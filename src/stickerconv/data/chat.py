"""Conversations as OpenAI-style chat messages with image parts, for fine-tuning any chat model.

One example per session: an optional system message, then the user and assistant messages of every
turn, each a list of content parts (the text, then an ``image_url`` part when a sticker was sent).
This is the ``messages`` shape that OpenAI-compatible fine-tuning tools and Hugging Face chat
templates read. OpenAI's own fine-tuning API accepts images in user messages only; the assistant's
sticker parts are for open models trained to send stickers.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from stickerconv.schema import Conversation, Sticker

DEFAULT_SYSTEM_PROMPT = (
    "You are an empathetic assistant. Listen, acknowledge the user's feelings and respond with care. "
    "You may add one sticker to a reply when it helps express empathy."
)


class _Part(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TextPart(_Part):
    type: Literal["text"]
    text: str = Field(min_length=1)


class ImageUrl(_Part):
    url: str = Field(min_length=1)


class ImagePart(_Part):
    type: Literal["image_url"]
    image_url: ImageUrl


Part = Annotated[TextPart | ImagePart, Field(discriminator="type")]


class Message(_Part):
    role: Literal["system", "user", "assistant"]
    content: str | list[Part]


class ChatExample(_Part):
    """One fine-tuning example: a whole session as chat messages."""

    messages: list[Message] = Field(min_length=2)

    def problems(self) -> list[tuple[str, str]]:
        """Order problems as (field, message): optional system first, then user/assistant pairs."""
        roles = [m.role for m in self.messages]
        start = 1 if roles[0] == "system" else 0
        for i, role in enumerate(roles[start:], start=start):
            expected = "user" if (i - start) % 2 == 0 else "assistant"
            if role != expected:
                return [(f"messages[{i}].role", f"{role!r} where {expected!r} expected (user and assistant alternate)")]
        if roles[-1] != "assistant":
            return [(f"messages[{len(roles) - 1}].role", "the last message must be the assistant's")]
        return []


def _content(text: str, sticker: Sticker | None, image_path: Callable[[Sticker], str]) -> list[dict]:
    parts: list[dict] = [{"type": "text", "text": text}]
    if sticker is not None:
        parts.append({"type": "image_url", "image_url": {"url": image_path(sticker)}})
    return parts


def to_chat(conversation: Conversation, image_path: Callable[[Sticker], str], system_prompt: str | None) -> dict:
    """The chat example of one conversation (a plain dict, ready for JSON Lines)."""
    messages: list[dict] = [{"role": "system", "content": system_prompt}] if system_prompt else []
    for turn in conversation.conversation:
        messages.append({"role": "user", "content": _content(turn.user_message, turn.user_sticker, image_path)})
        messages.append(
            {"role": "assistant", "content": _content(turn.system_message, turn.system_sticker, image_path)}
        )
    return {"messages": messages}
