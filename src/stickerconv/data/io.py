"""Reading conversation files in every form the project meets, with each record's location.

Published StickerConv files (JSON Lines, or one JSON array), parquet exports, a generation run folder
(its ``conversations.jsonl``) and folders of split files all load through here, so validation,
statistics, splitting and conversion see the same records at the same ``file:line`` locations.
Records come out as plain dicts first (cheap, for statistics over 100k sessions); the strict path
validates them into :class:`~stickerconv.schema.Conversation`. Writing goes through a temporary
file and a rename, so an interrupted write never leaves half a dataset behind.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Protocol

from pydantic import ValidationError

from stickerconv.agent4sc.runner import CONVERSATIONS, REJECTED, SUMMARY
from stickerconv.jsonl import RecordError
from stickerconv.schema import Conversation

DATA_SUFFIXES = (".jsonl", ".json", ".parquet")
# Files our tools write beside data files; a folder of data files never reads them as records.
NOT_DATA = frozenset({REJECTED, SUMMARY, "split.json", "stats.json"})
PROGRESS_EVERY = 2_000  # records between on_progress calls

Progress = Callable[[int, int], None] | None


class DataInputError(ValueError):
    """An input path that holds no readable conversation data."""


@dataclass(frozen=True, slots=True)
class RawRecord:
    """One record as read, before any validation.

    ``line`` is the 1-based line where the record's JSON starts (the row number for parquet).
    ``error`` says why the record could not be parsed; ``data`` is then None. ``text`` is the
    record's JSON text when the file is JSON Lines, so the strict path need not serialise again.
    """

    file: Path
    line: int
    data: Any
    error: str | None = None
    text: bytes | None = None

    def json_text(self) -> bytes | str:
        return self.text if self.text is not None else json.dumps(self.data, ensure_ascii=False)


def data_files(path: Path | str) -> list[Path]:
    """The data files behind ``path``: a file, a run folder's conversations, or a folder's data files."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist")
    if path.is_dir():
        if (path / CONVERSATIONS).is_file():  # a generation run: its kept sessions
            return [path / CONVERSATIONS]
        files = sorted(
            p
            for p in path.iterdir()
            if p.is_file() and p.suffix in DATA_SUFFIXES and p.name not in NOT_DATA and not p.name.startswith(".")
        )
        if not files:
            raise DataInputError(f"{path} holds no {CONVERSATIONS} and no .jsonl, .json or .parquet data files")
        return files
    if path.suffix not in DATA_SUFFIXES:
        raise DataInputError(f"{path}: unsupported file type {path.suffix!r}; use .jsonl, .json or .parquet")
    return [path]


def iter_raw(path: Path | str, on_progress: Progress = None) -> Iterator[RawRecord]:
    """Every record behind ``path`` in file order; unparseable records come with ``error`` set.

    ``on_progress(done, total)`` counts bytes of input read.
    """
    files = data_files(path)
    total = sum(f.stat().st_size for f in files)
    offset = count = 0
    for file in files:
        reader = _iter_parquet if file.suffix == ".parquet" else _iter_json
        for record, done in reader(file):
            yield record
            count += 1
            if on_progress is not None and count % PROGRESS_EVERY == 0:
                on_progress(offset + done, total)
        offset += file.stat().st_size
    if on_progress is not None:
        on_progress(total, total)


class Accumulator(Protocol):
    skipped: int

    def add(self, record: dict[str, Any]) -> None: ...


def accumulate(path: Path | str, acc: Accumulator, on_progress: Progress = None) -> None:
    """Feed every parseable record behind ``path`` to ``acc.add``; count the others in ``acc.skipped``."""
    for record in iter_raw(path, on_progress):
        if record.error is None:
            acc.add(record.data)
        else:
            acc.skipped += 1


def _iter_json(file: Path) -> Iterator[tuple[RawRecord, int]]:
    """JSON Lines, or a JSON array (the ``.json`` files of the published dataset may be either)."""
    with file.open("rb") as fh:
        head = fh.read(4096).lstrip(b"\xef\xbb\xbf \t\r\n")
    if head.startswith(b"["):
        yield from _iter_array(file)
        return
    done = 0
    with file.open("rb") as fh:
        for number, raw in enumerate(fh, start=1):
            done += len(raw)
            if not raw.strip():
                continue
            try:
                data = json.loads(raw)
            except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                yield RawRecord(file, number, None, _json_error(exc, torn=not raw.endswith(b"\n"))), done
                continue
            yield RawRecord(file, number, data, None, raw), done


def _json_error(exc: ValueError, *, torn: bool) -> str:
    if isinstance(exc, json.JSONDecodeError):
        message = f"not valid JSON ({exc.msg} at column {exc.colno})"
    else:
        message = f"not valid UTF-8 ({exc})"
    if torn:
        message += "; the file ends inside this record (truncated?)"
    return message


def _iter_array(file: Path) -> Iterator[tuple[RawRecord, int]]:
    """Elements of one JSON array, each located by the line its text starts on.

    A syntax error ends the file (there is no next line to resume at); progress counts characters.
    """
    text = file.read_bytes().decode("utf-8-sig")
    closed = text.rstrip().endswith("]")
    decoder = json.JSONDecoder()
    pos = _skip_ws(text, text.index("[") + 1)
    line, counted = 1, 0

    def line_at(position: int) -> int:
        nonlocal line, counted
        line += text.count("\n", counted, position)
        counted = position
        return line

    while pos < len(text) and text[pos] != "]":
        start = line_at(pos)
        try:
            data, end = decoder.raw_decode(text, pos)
        except json.JSONDecodeError as exc:
            yield RawRecord(file, exc.lineno, None, _json_error(exc, torn=not closed)), len(text)
            return
        yield RawRecord(file, start, data), end
        pos = _skip_ws(text, end)
        if pos < len(text) and text[pos] == ",":
            pos = _skip_ws(text, pos + 1)
        elif pos < len(text) and text[pos] != "]":
            message = f"not valid JSON (expected ',' or ']' after the element that starts on line {start})"
            yield RawRecord(file, line_at(pos), None, message), pos
            return
    if pos >= len(text):
        message = "not valid JSON (the array is never closed; truncated file?)"
        yield RawRecord(file, line_at(pos), None, message), len(text)


def _skip_ws(text: str, pos: int) -> int:
    while pos < len(text) and text[pos] in " \t\r\n":
        pos += 1
    return pos


def _iter_parquet(file: Path) -> Iterator[tuple[RawRecord, int]]:
    """Rows of a parquet file (row numbers stand in for lines); progress is estimated in bytes."""
    import pyarrow.parquet as pq

    parquet = pq.ParquetFile(file)
    rows, size = max(parquet.metadata.num_rows, 1), file.stat().st_size
    number = 0
    for batch in parquet.iter_batches(batch_size=1024):
        for row in batch.to_pylist():
            number += 1
            yield RawRecord(file, number, row), number * size // rows


def field_path(loc: Iterable[str | int]) -> str:
    """A pydantic error location as a JSON path: ``conversation[2].user_sticker.origin_anno``.

    List positions are 0-based, as in jq: ``conversation[2]`` is the third turn entry.
    """
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "record"


def parse_conversation(record: RawRecord) -> Conversation:
    """The strict path: a Conversation, or a :class:`RecordError` naming file, line and field."""
    if record.error is not None:
        raise RecordError(record.file, record.line, record.error)
    if not isinstance(record.data, dict):
        raise RecordError(record.file, record.line, f"expected a JSON object, got {json_type(record.data)}")
    try:
        return Conversation.model_validate_json(record.json_text(), strict=True)
    except ValidationError as exc:
        first = exc.errors()[0]
        more = f" (and {exc.error_count() - 1} more problem(s); run `stickerconv data validate`)"
        raise RecordError(
            record.file, record.line, first["msg"] + (more if exc.error_count() > 1 else ""), field_path(first["loc"])
        ) from None


def iter_conversations(path: Path | str, on_progress: Progress = None) -> Iterator[tuple[RawRecord, Conversation]]:
    """Every conversation behind ``path``, validated; the first bad record raises :class:`RecordError`."""
    for record in iter_raw(path, on_progress):
        yield record, parse_conversation(record)


def load_conversations(path: Path | str, on_progress: Progress = None) -> list[Conversation]:
    return [conversation for _, conversation in iter_conversations(path, on_progress)]


def json_type(value: Any) -> str:
    """The JSON name of a Python value's type, for messages about wrong types."""
    names = {dict: "object", list: "array", str: "string", bool: "boolean", int: "integer", float: "number"}
    return "null" if value is None else names.get(type(value), type(value).__name__)


@contextmanager
def atomic_text(path: Path | str) -> Iterator[IO[str]]:
    """A text file that appears at ``path`` only when the block finishes without an error."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as fh:
            yield fh
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_records(path: Path | str, records: Iterable[dict[str, Any]]) -> int:
    """Write dicts as JSON Lines (UTF-8, one record a line), atomically; return the count."""
    count = 0
    with atomic_text(path) as fh:
        for record in records:
            fh.write(json.dumps(record, ensure_ascii=False) + "\n")
            count += 1
    return count


def write_conversations(path: Path | str, conversations: Iterable[Conversation]) -> int:
    """Write conversations in the published format (§4.3 keys; provenance only under ``meta``)."""
    return write_records(path, (c.to_published() for c in conversations))
