"""What a command does, callable from Python: each pipeline takes one options object, writes the same files
as its command and returns a typed result; the CLI only parses flags, calls it and prints.

Pipelines never print. Long work reports through a ``ProgressFactory`` (the CLI passes its progress bars; a
notebook passes nothing), and problems the caller can fix raise ``PipelineError``.
"""

from stickerconv.pipelines.common import PipelineError, ProgressFactory, check_choice, no_progress

__all__ = ["PipelineError", "ProgressFactory", "check_choice", "no_progress"]
