"""The README's and docs' command lines name commands and options that exist: a renamed flag (say, `--config` of
`pegs train` becoming `--preset`) must take the README with it. Each line is parsed by the command's own
parser, which knows every option's name and arity; files are not opened, nothing runs."""

from __future__ import annotations

import re
import shlex

import pytest
import typer

from stickerconv.cli import app

from helpers.paths import REPO

DOCUMENTS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


def readme_commands() -> list[tuple[str, list[str]]]:
    """("file:line", argv after `stickerconv`) for every shell line of the documents that runs the command."""
    found = []
    for document in DOCUMENTS:
        found += document_commands(document)
    return found


def document_commands(document) -> list[tuple[str, list[str]]]:
    found = []
    lines = document.read_text(encoding="utf-8").splitlines()
    in_shell = False
    pending: tuple[int, str] | None = None
    for number, line in enumerate(lines, 1):
        if line.startswith("```"):
            in_shell = line.strip() in ("```bash", "```sh", "```shell") and not in_shell
            continue
        if not in_shell:
            continue
        if pending:
            text = pending[1] + " " + line.strip()
            number = pending[0]
        else:
            text = line
        if text.rstrip().endswith("\\"):
            pending = (number, text.rstrip()[:-1])
            continue
        pending = None
        match = re.search(r"(?:^|&&\s*|\s)(?:\.venv/bin/)?stickerconv\s+(.*)$", text)
        if match:
            words = shlex.split(match.group(1), comments=True)
            found.append((f"{document.name}:{number}", words))
    return found


def test_the_documents_show_commands():
    assert len(readme_commands()) >= 45


@pytest.mark.parametrize(("line", "argv"), readme_commands(), ids=lambda v: v if isinstance(v, str) else None)
def test_documented_command_parses(line: str, argv: list[str]):
    command = typer.main.get_command(app)
    words = list(argv)
    context = command.make_context("stickerconv", [], resilient_parsing=True)
    while hasattr(command, "commands"):
        assert words, f"{line}: a command group without a command"
        name = words.pop(0)
        assert name in command.commands, f"{line}: no command {name!r}"
        command = command.commands[name]
        context = command.make_context(name, [], parent=context, resilient_parsing=True)
    # A fresh context for the leaf: parsing strictly (unknown options fail) without running its callbacks.
    parser = command.make_parser(type(context)(command, parent=context, info_name=command.name))
    try:
        parser.parse_args(words)
    except Exception as exc:  # the parser's own error: an unknown option, a missing value
        pytest.fail(f"{line}: stickerconv {' '.join(argv)}: {exc}")
