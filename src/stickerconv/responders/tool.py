"""Baseline 2 (method reference §7): an LLM that writes its reply and, when a sticker would help,
a ``send_sticker`` call with a query; the sticker index resolves the query to its top-1 sticker.

The paper fine-tuned its tool baselines on an unpublished call format; here the call is requested
as structured output (``{"text", "tool", "query"}``) from any chat model, with the query written
in the indexed-text form the index was built from. The reply text is cleaned as the text baseline's.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from stickerconv.llm import ChatModel, Message, Settings, system
from stickerconv.responders.base import EMPATHETIC_SYSTEM_PROMPT, Responder, chat_messages
from stickerconv.responders.text_only import BASELINE_SETTINGS
from stickerconv.schema import DialogueContext, Reply
from stickerconv.stickers.index import StickerIndex
from stickerconv.text import clean_utterance, readable

TOOL_GUIDE = (
    "You may add one sticker to your reply with the send_sticker tool when it makes the reply warmer or "
    "clearer; most replies need none. Answer with your reply text, tool = send_sticker or none, and for "
    "send_sticker a query describing the sticker, like: emotion: Happiness, emotion describe: The sticker "
    "conveys warm encouragement and support."
)

FORCED_GUIDE = (
    "Reply to the user and add one sticker with the send_sticker tool: answer with your reply text, tool = "
    "send_sticker, and a query describing the sticker, like: emotion: Happiness, emotion describe: The sticker "
    "conveys warm encouragement and support."
)


class ToolAnswer(BaseModel):
    text: str = Field(min_length=1, max_length=2000)
    tool: Literal["send_sticker", "none"]
    query: str = Field("", max_length=600)


class ForcedToolAnswer(BaseModel):
    """The tool answer when a sticker must be sent: the ranking protocols need a query for every turn."""

    text: str = Field(min_length=1, max_length=2000)
    tool: Literal["send_sticker"]
    query: str = Field(min_length=3, max_length=600)


class StickerToolResponder(Responder):
    name = "tool"

    def __init__(
        self,
        model: ChatModel,
        index: StickerIndex,
        system_prompt: str = EMPATHETIC_SYSTEM_PROMPT,
        settings: Settings | None = None,
    ):
        self.model, self.index, self.system_prompt = model, index, system_prompt
        self.settings = settings or BASELINE_SETTINGS

    def _messages(self, context: DialogueContext, guide: str = TOOL_GUIDE) -> list[Message]:
        return [system(f"{self.system_prompt}\n{guide}"), *chat_messages(context, show_stickers=True)]

    async def respond(self, context: DialogueContext) -> Reply:
        messages = self._messages(context)
        answer: ToolAnswer = (await self.model.complete(messages, ToolAnswer, settings=self.settings)).parsed
        text = clean_utterance(answer.text) or readable(answer.text)
        if answer.tool != "send_sticker" or len(answer.query.strip()) < 3:
            return Reply(text=text)
        hits = self.index.search(answer.query, k=1)
        return Reply(text=text, sticker=hits[0].sticker if hits else None)

    async def sticker_query(self, context: DialogueContext) -> str:
        """The query this baseline would send to the sticker index had it decided to send a sticker."""
        messages = self._messages(context, FORCED_GUIDE)
        answer = await self.model.complete(messages, ForcedToolAnswer, settings=self.settings)
        return answer.parsed.query.strip()

    def describe(self) -> dict[str, str]:
        return {
            "responder": self.name,
            "model": f"{self.model.backend.name}:{self.model.model}",
            "index": f"{self.index.embedder.name}, {len(self.index)} stickers",
            "max_new_tokens": str(self.settings.max_tokens),
        }
