"""Baseline 1 (method reference §7): an LLM with an empathetic system prompt and no stickers.

The reply is cleaned as the agents' utterances are (``clean_utterance``: the first line, no speaker
prefix, ``readable``): a small model cut by the token budget would otherwise end mid-sentence, and its
repeated clauses would be scored and shown as they are.
"""

from __future__ import annotations

from stickerconv.llm import ChatModel, Settings, system
from stickerconv.responders.base import EMPATHETIC_SYSTEM_PROMPT, Responder, chat_messages
from stickerconv.schema import DialogueContext, Reply
from stickerconv.text import clean_utterance, readable

# The paper's decoding for its text baselines: temperature 0.5, at most 200 new tokens.
BASELINE_SETTINGS = Settings(temperature=0.5, max_tokens=200)


class TextOnlyResponder(Responder):
    name = "text"

    def __init__(
        self, model: ChatModel, system_prompt: str = EMPATHETIC_SYSTEM_PROMPT, settings: Settings | None = None
    ):
        self.model, self.system_prompt = model, system_prompt
        self.settings = settings or BASELINE_SETTINGS

    async def respond(self, context: DialogueContext) -> Reply:
        messages = [system(self.system_prompt), *chat_messages(context, show_stickers=False)]
        result = await self.model.complete(messages, settings=self.settings)
        return Reply(text=clean_utterance(result.text) or readable(result.text))

    def describe(self) -> dict[str, str]:
        return {
            "responder": self.name,
            "model": f"{self.model.backend.name}:{self.model.model}",
            "max_new_tokens": str(self.settings.max_tokens),
        }
