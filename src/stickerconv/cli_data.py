"""``stickerconv data ...``: load, validate, describe, split and convert StickerConv datasets."""

from __future__ import annotations

import typer

data_app = typer.Typer(help="Load, validate, describe, split and convert StickerConv datasets.", no_args_is_help=True)
