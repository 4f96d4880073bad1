"""The two things every pipeline shares with its callers: how it reports progress and how it refuses input."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager

# ``progress("what is happening")`` opens one bar and yields its ``update(done, total)``; the library's
# ``on_progress`` callbacks take that ``update`` directly.
ProgressFactory = Callable[[str], AbstractContextManager[Callable[[int, int], None]]]


class PipelineError(ValueError):
    """Input the caller can fix (a missing file, an unknown choice, an empty dataset); the CLI prints it plainly."""


@contextmanager
def no_progress(description: str) -> Iterator[Callable[[int, int], None]]:
    """The default for notebooks and tests: the work runs, nothing is drawn."""

    def update(done: int, total: int) -> None:
        return None

    yield update
