"""The `stickerconv` command: command groups that parse flags, call one pipeline or library function, and print."""

from stickerconv.cli.root import app, main

__all__ = ["app", "main"]
