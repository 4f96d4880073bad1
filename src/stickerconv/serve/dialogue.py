"""OpenAI chat messages to a ``DialogueContext``, and a ``Reply`` back to an OpenAI message.

Messages pair into turns: the user messages before an assistant message (texts joined, the last image
as the user's sticker) and that assistant message (its text, its ``send_sticker`` call resolved by
sticker id) make one ``Turn``; the user messages after the last assistant message are the new user
message. System and tool messages are accepted and skipped (each responder has its own system
prompt; a tool message answering ``send_sticker`` carries nothing the dialogue needs).
"""

from __future__ import annotations

import json
import re
import uuid

from stickerconv.schema import DialogueContext, Reply, Sticker, Turn
from stickerconv.serve.errors import APIError
from stickerconv.serve.openai_schema import (
    SEND_STICKER,
    AssistantMessage,
    ChatCompletionRequest,
    FunctionCallOut,
    ImagePart,
    MessageOut,
    ToolCallOut,
    UserMessage,
    text_of,
)
from stickerconv.serve.settings import ServeSettings
from stickerconv.serve.stickers import StickerCatalog


def to_context(request: ChatCompletionRequest, catalog: StickerCatalog, settings: ServeSettings) -> DialogueContext:
    """The dialogue the messages describe; bad content raises ``APIError`` (400/413) naming the field."""
    messages = request.messages
    if len(messages) > settings.max_messages:
        raise APIError(
            400,
            f"{len(messages)} messages; at most {settings.max_messages} per request",
            param="messages",
            code="too_many_messages",
        )
    images = sum(
        1
        for m in messages
        if isinstance(m, UserMessage) and not isinstance(m.content, str)
        for p in m.content
        if isinstance(p, ImagePart)
    )
    if images > settings.max_images:
        raise APIError(
            400, f"{images} images; at most {settings.max_images} per request", "messages", "too_many_images"
        )
    history: list[Turn] = []
    texts: list[str] = []
    sticker: Sticker | None = None
    for i, message in enumerate(messages):
        text = text_of(message.content)
        if len(text) > settings.max_text_chars:
            raise APIError(
                400,
                f"message {i} has {len(text)} characters; at most {settings.max_text_chars}",
                param=f"messages[{i}].content",
                code="message_too_long",
            )
        if isinstance(message, UserMessage):
            if text.strip():
                texts.append(text)
            if not isinstance(message.content, str):
                for j, part in enumerate(message.content):
                    if isinstance(part, ImagePart):
                        sticker = catalog.from_image_url(part.image_url.url, f"messages[{i}].content[{j}].image_url")
        elif isinstance(message, AssistantMessage):
            history.append(
                Turn(
                    turn=len(history) + 1,
                    user_message="\n".join(texts),
                    system_message=text,
                    user_sticker=sticker,
                    system_sticker=_sent_sticker(message, i, catalog),
                )
            )
            texts, sticker = [], None
    if not texts and sticker is None:
        raise APIError(
            400,
            "the conversation must end with a user message that has text or an image",
            param="messages",
            code="no_user_message",
        )
    return DialogueContext(history=history, user_message="\n".join(texts), user_sticker=sticker)


def _sent_sticker(message: AssistantMessage, index: int, catalog: StickerCatalog) -> Sticker | None:
    """The library sticker of an assistant message's ``send_sticker`` call (the last one, if several)."""
    found = None
    for j, call in enumerate(message.tool_calls or []):
        param = f"messages[{index}].tool_calls[{j}].function"
        if call.function.name != SEND_STICKER:
            raise APIError(
                400,
                f"unknown tool {call.function.name[:100]!r}; assistant messages may only call {SEND_STICKER}",
                param=f"{param}.name",
                code="unknown_tool",
            )
        try:
            args = json.loads(call.function.arguments)
        except (ValueError, RecursionError):
            args = None
        if not isinstance(args, dict) or not isinstance(args.get("sticker_id"), str):
            raise APIError(
                400,
                f'{SEND_STICKER} arguments must be a JSON object with a "sticker_id" string',
                param=f"{param}.arguments",
                code="invalid_tool_arguments",
            )
        found = catalog.get(args["sticker_id"])
        if found is None:
            raise APIError(
                400, f"unknown sticker {args['sticker_id'][:200]!r}", param=f"{param}.arguments", code="unknown_sticker"
            )
    return found


def reply_message(reply: Reply, catalog: StickerCatalog, base_url: str) -> MessageOut:
    """The assistant message: the text, and the sticker as a ``send_sticker`` call."""
    calls = None
    if reply.sticker is not None:
        args = catalog.args(reply.sticker, base_url)
        calls = [
            ToolCallOut(
                id=f"call_{uuid.uuid4().hex[:24]}",
                function=FunctionCallOut(name=SEND_STICKER, arguments=args.model_dump_json()),
            )
        ]
    return MessageOut(content=reply.text, tool_calls=calls)


_PIECE = re.compile(r"\S+\s*|\s+")


def text_pieces(text: str, words: int = 3) -> list[str]:
    """The reply text in pieces of a few words (with their spacing) for streaming; joined, they are ``text``."""
    tokens = _PIECE.findall(text)
    return ["".join(tokens[i : i + words]) for i in range(0, len(tokens), words)]
