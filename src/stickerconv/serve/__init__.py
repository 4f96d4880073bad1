"""Serving: an OpenAI-compatible chat API with stickers, and a web chat page (docs/serving.md)."""

from stickerconv.serve.app import create_app
from stickerconv.serve.runner import ServerThread
from stickerconv.serve.settings import ServeSettings

__all__ = ["ServeSettings", "ServerThread", "create_app"]
