"""Serving: an OpenAI-compatible chat API with stickers, and a web chat page (docs/serving.md).

The app and the runner load on first use (PEP 562), so that ``stickerconv --help``, which reads the
defaults in ``serve.settings``, does not import FastAPI, Pillow and the sticker index."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from stickerconv.serve.settings import ServeSettings

if TYPE_CHECKING:
    from stickerconv.serve.app import create_app
    from stickerconv.serve.runner import ServerThread

__all__ = ["ServeSettings", "ServerThread", "create_app"]


def __getattr__(name: str) -> Any:
    if name == "create_app":
        from stickerconv.serve.app import create_app

        return create_app
    if name == "ServerThread":
        from stickerconv.serve.runner import ServerThread

        return ServerThread
    raise AttributeError(f"module 'stickerconv.serve' has no attribute {name!r}")
