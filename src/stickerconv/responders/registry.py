"""Responders by name, for the command line and the server."""

from __future__ import annotations

from stickerconv.llm import LLMFactory
from stickerconv.responders.base import Responder, ResponderError
from stickerconv.responders.text_only import TextOnlyResponder
from stickerconv.responders.tool import StickerToolResponder
from stickerconv.stickers.index import StickerIndex

RESPONDERS = {"text": "text-only LLM baseline", "tool": "LLM + sticker tool baseline (needs a sticker index)"}


def build_responder(name: str, factory: LLMFactory, index: StickerIndex | None = None) -> Responder:
    """``name`` is one of ``RESPONDERS``; the LLM comes from the factory's ``responder`` role."""
    if name not in RESPONDERS:
        raise ResponderError(f"unknown responder {name!r}; choose from {', '.join(RESPONDERS)}")
    model = factory.chat_model("responder")
    if name == "text":
        return TextOnlyResponder(model)
    if index is None:
        raise ResponderError("the tool responder needs an indexed sticker library (--stickers DIR)")
    return StickerToolResponder(model, index)
