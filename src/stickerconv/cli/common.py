"""What every ``stickerconv`` command module shares: the consoles, the user-error type, the progress bar,
the sticker-hits table and the option types of the glossary in docs/design.md (one
name, one meaning, one help text in every command). Command modules import from here, never from each other.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from stickerconv.profiles import Profile

if TYPE_CHECKING:
    from stickerconv.stickers.index import SearchHit

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
ProfileOption = Annotated[
    Profile, typer.Option("--profile", help="default: this project's settings; paper: the paper's, to reproduce it.")
]
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


def hits_table(query: str, hits: Iterable[SearchHit]) -> Table:
    """One query's ranked stickers as a table: ``stickers search`` prints it, and so do the demo's sample
    searches, which is why it lives here and not in the command."""
    from rich.markup import escape

    table = Table(title=f"“{query}”", title_justify="left")
    for column in ("#", "score", "label", "id", "description"):
        table.add_column(column, overflow="fold")
    for hit in hits:
        s = hit.sticker
        table.add_row(
            str(hit.rank), f"{hit.score:.3f}", s.label.value if s.label else "-", escape(s.id), escape(s.description)
        )
    return table
