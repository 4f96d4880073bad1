"""Everything that answers a user implements ``Responder.respond(context) -> Reply``; evaluation
and serving consume only that interface."""

from stickerconv.responders.base import EMPATHETIC_SYSTEM_PROMPT, Responder, ResponderError
from stickerconv.responders.registry import RESPONDERS, build_responder
from stickerconv.responders.text_only import TextOnlyResponder
from stickerconv.responders.tool import StickerToolResponder

__all__ = [
    "EMPATHETIC_SYSTEM_PROMPT",
    "RESPONDERS",
    "Responder",
    "ResponderError",
    "StickerToolResponder",
    "TextOnlyResponder",
    "build_responder",
]
