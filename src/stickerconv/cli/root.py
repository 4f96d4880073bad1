"""The ``stickerconv`` command: the root app, its command groups and ``main``, which turns the errors a user
can fix into one plain line. Heavy modules are imported inside commands so that ``stickerconv --help`` starts
quickly.
"""

from __future__ import annotations

import logging
import sys

import typer
from rich.markup import escape

from stickerconv.cli.annotate import annotate as annotate_command
from stickerconv.cli.common import UserError, err
from stickerconv.cli.data import data_app
from stickerconv.cli.demo import demo as demo_command
from stickerconv.cli.eval import eval_app
from stickerconv.cli.generate import generate_command
from stickerconv.cli.llm import llm_app
from stickerconv.cli.pegs import pegs_app
from stickerconv.cli.personas import personas_app
from stickerconv.cli.pools import pools_command
from stickerconv.cli.serve import serve as serve_command
from stickerconv.cli.stickers import stickers_app

app = typer.Typer(
    help="StickerConv: multimodal empathetic dialogue with stickers.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.add_typer(stickers_app, name="stickers")
stickers_app.command("annotate")(annotate_command)
stickers_app.command("pools")(pools_command)
app.add_typer(llm_app, name="llm")
app.add_typer(personas_app, name="personas")
app.command("generate")(generate_command)
app.add_typer(data_app, name="data")
app.add_typer(eval_app, name="eval")
app.add_typer(pegs_app, name="pegs")
app.command("serve")(serve_command)
app.command("demo")(demo_command)


def main() -> None:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    from pydantic import ValidationError

    from stickerconv.jsonl import RecordError
    from stickerconv.llm.types import LLMError
    from stickerconv.stickers.embed import EmbedderError
    from stickerconv.stickers.emoji_pack import PackSourceError
    from stickerconv.stickers.index import StickerIndexError
    from stickerconv.stickers.library import LibraryError

    try:
        app()
    except (
        UserError,
        RecordError,
        LibraryError,
        StickerIndexError,
        EmbedderError,
        PackSourceError,
        ValidationError,
        FileNotFoundError,
        NotADirectoryError,
        ValueError,
        LLMError,
    ) as exc:
        err.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False)
        sys.exit(2)
