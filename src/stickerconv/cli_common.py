"""What every ``stickerconv`` command module shares: the consoles, the user-error type and the
progress bar. Command modules (``cli.py``, ``cli_data.py``, ...) import from here, never from each other;
the one exception is ``cli_demo.py``, which runs the other commands in sequence.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

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
