"""The two things every pipeline shares with its callers: how it reports progress and how it refuses input."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
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


def check_choice(option: str, value: str, choices: Iterable[str]) -> str:
    """Refuse a value outside a registry before any work starts (a typo should not cost a half-built run),
    naming the option as the command line spells it, the value and every valid choice."""
    valid = list(choices)
    if value not in valid:
        raise PipelineError(f"--{option.replace('_', '-')} {value!r}: choose from {', '.join(valid)}")
    return value
