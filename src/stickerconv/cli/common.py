"""What every ``stickerconv`` command module shares: the consoles, the user-error type, the progress bar,
a way to send the console's output to a file, and the option types of the glossary in docs/design.md (one
name, one meaning, one help text in every command). Command modules import from here, never from each other.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console, ConsoleRenderable, RenderHook, RichCast
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

# The glossary's shared options (docs/design.md, "Command-line glossary"). A command with a more specific
# meaning for the same value (say, which role --config feeds) still uses these types so the name never drifts.
LLMOption = Annotated[
    str | None, typer.Option("--llm", help="local (default), local:/path/model.gguf or openai:MODEL_NAME.")
]
ConfigOption = Annotated[
    Path | None, typer.Option("--config", help="LLM config file (TOML or JSON), per-role models; --llm wins.")
]
StoreOption = Annotated[Path | None, typer.Option("--store", help="SQLite file of the LLM cache and call ledger.")]
CacheOption = Annotated[
    str | None, typer.Option("--cache", help="LLM response cache: use, refresh or off (default: the config's).")
]
StickersOption = Annotated[Path | None, typer.Option("--stickers", help="Sticker library folder (with an index).")]
JsonOption = Annotated[bool, typer.Option("--json", help="Print the result as JSON instead of tables.")]

console = Console(emoji=False)
err = Console(stderr=True, soft_wrap=True, emoji=False)


class UserError(Exception):
    """A problem the user can fix; printed without a traceback."""


@contextmanager
def progress_bar(description: str) -> Iterator[Callable[[int, int], None]]:
    """A rich progress bar (on stderr) driven by the library's ``on_progress(done, total)`` callbacks."""
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=err, transient=True) as bar:
        task = bar.add_task(description, total=None)

        def update(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        yield update


Renderable = ConsoleRenderable | RichCast


class _Divert(RenderHook):
    """Renders what ``console`` is asked to print on another console, and nothing on the terminal."""

    def __init__(self, target: Console):
        self.target = target

    def process_renderables(
        self, renderables: list[ConsoleRenderable | RichCast]
    ) -> list[ConsoleRenderable | RichCast]:
        for renderable in renderables:
            self.target.print(renderable)
        return []


@contextmanager
def console_to(path: Path) -> Iterator[Path]:
    """Within the block, what is printed on ``console`` goes to ``path`` (plain text, 120 columns, overwritten)
    instead of the terminal; ``err`` (progress bars, warnings, errors) still reaches the terminal.

    Why: ``stickerconv demo`` runs the other commands as a user would, and their full output (every metric
    with its signature, every file written) belongs in its report, not between the figures a person wants;
    a render hook diverts it without a quiet flag on every command, and the commands alone print as ever.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as sink:
        console.push_render_hook(_Divert(Console(file=sink, width=120, color_system=None, emoji=False)))
        try:
            yield path
        finally:
            console.pop_render_hook()
