"""The responder interface, and the chat rendering the LLM baselines share.

A context becomes OpenAI-style chat messages: one user and one assistant message per earlier turn,
then the new user message. What a model can know of a sticker depends on the responder: the
text-only baseline sees none (the paper removed ``<IMG>``), the tool baseline sees each sticker's
annotated emotion and description, the way the paper's judges saw predicted stickers.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

from stickerconv.llm import Message, assistant, user
from stickerconv.schema import DialogueContext, Reply, Sticker

EMPATHETIC_SYSTEM_PROMPT = (
    "You are an empathetic friend in a chat. Understand how the user feels, acknowledge it warmly and "
    "specifically, and respond with care; keep replies short and natural, like a chat message."
)


class ResponderError(ValueError):
    """A responder that cannot be built as asked (unknown name, missing sticker index)."""


class Responder(ABC):
    name: str

    @abstractmethod
    async def respond(self, context: DialogueContext) -> Reply:
        """The reply to the context's last user message: text and at most one sticker."""

    def describe(self) -> dict[str, str]:
        """What produced the replies, for the provenance of prediction files."""
        return {"responder": self.name}


def sticker_text(sticker: Sticker) -> str:
    return f"[sends a sticker - emotion: {sticker.emotion or sticker.label}; description: {sticker.description}]"


def chat_messages(context: DialogueContext, *, show_stickers: bool) -> list[Message]:
    """The dialogue as alternating user/assistant messages, ending with the new user message."""

    def say(text: str, sticker: Sticker | None) -> str:
        return f"{text} {sticker_text(sticker)}" if show_stickers and sticker is not None else text

    messages: list[Message] = []
    for turn in context.history:
        messages += [
            user(say(turn.user_message, turn.user_sticker)),
            assistant(say(turn.system_message, turn.system_sticker)),
        ]
    messages.append(user(say(context.user_message, context.user_sticker)))
    return messages
