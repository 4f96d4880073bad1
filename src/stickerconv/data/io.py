"""Reading and writing every data file of the project, with each record's location.

Published StickerConv files (JSON Lines, or one JSON array), parquet exports, a generation run folder
(its ``conversations.jsonl``) and folders of split files all load through here, so validation,
statistics, splitting, conversion, training and evaluation see the same records at the same
``file:line`` locations.

Formats are decided by content when reading and by name when writing. A reader looks at the bytes
(parquet's magic number, a leading ``[`` for one JSON array, else JSON Lines) and at the keys of the
records (:func:`record_kind`: conversations, per-turn samples, predictions or chat examples), because
names lie: the Hub's ``train.json`` is JSON Lines, and older versions of this project wrote JSON arrays
into files named ``.jsonl``. A writer does what the extension it is given says (:func:`output_layout`),
and refuses any other extension before work starts, so the file it leaves is what its name promises.

Records come out as plain dicts first (cheap, for statistics over 100k sessions); the strict path
(:meth:`DataSource.checked`, :func:`parse_model`) checks their kind and validates them into models.
Writing goes through a temporary file and a rename, so an interrupted write never leaves half a
dataset behind.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Literal, Protocol, TypeVar

from pydantic import BaseModel, ValidationError

from stickerconv.jsonl import RecordError
from stickerconv.runfiles import CONVERSATIONS, REJECTED, SUMMARY
from stickerconv.schema import PRED_TEXT, PRED_TEXT_MISSPELT, Conversation

M = TypeVar("M", bound=BaseModel)

Layout = Literal["jsonl", "json", "parquet"]
# Writers choose the layout by extension; readers accept these extensions and then trust the content.
LAYOUT_SUFFIXES: dict[str, Layout] = {".jsonl": "jsonl", ".json": "json", ".parquet": "parquet"}
LAYOUT_NAMES: dict[Layout, str] = {"jsonl": "JSON Lines", "json": "JSON array", "parquet": "parquet"}
DATA_SUFFIXES = tuple(LAYOUT_SUFFIXES)
PARQUET_MAGIC = b"PAR1"
# Files our tools write beside data files; a folder of data files never reads them as records.
NOT_DATA = frozenset({REJECTED, SUMMARY, "split.json", "stats.json"})
PROGRESS_EVERY = 2_000  # records between on_progress calls
SNIFF_RECORDS = 20  # records looked at per file to find its kind before the real pass

Kind = Literal["conversations", "samples", "predictions", "chat"]
# The keys that tell a record's kind, tried in this order: a prediction is a sample with the predicted
# keys added, so predictions are tried before samples.
KIND_KEYS: dict[Kind, tuple[str, ...]] = {
    "conversations": ("conversation",),
    "predictions": (PRED_TEXT, PRED_TEXT_MISSPELT),
    "samples": ("input_text", "response_text"),
    "chat": ("messages",),
}
KIND_NOUNS: dict[Kind, tuple[str, str]] = {
    "conversations": ("conversation", "conversations"),
    "samples": ("sample", "samples"),
    "predictions": ("prediction", "predictions"),
    "chat": ("chat example", "chat examples"),
}
KIND_MAKERS: dict[Kind, str] = {
    "samples": "stickerconv data convert --to samples",
    "predictions": "stickerconv eval predict",
    "chat": "stickerconv data convert --to chat",
}

Progress = Callable[[int, int], None] | None


class DataInputError(ValueError):
    """An input or output path that does not hold, or cannot take, the data asked for."""


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


def kind_noun(kind: Kind, count: int = 1) -> str:
    """``sample`` / ``samples``: the word for ``count`` records of ``kind``."""
    singular, plural = KIND_NOUNS[kind]
    return singular if count == 1 else plural


def record_kind(data: Any) -> Kind | None:
    """What one record is, from its keys (None when no kind's keys are there)."""
    if not isinstance(data, dict):
        return None
    return next((kind for kind, keys in KIND_KEYS.items() if any(key in data for key in keys)), None)


def unknown_record(data: dict[str, Any]) -> str:
    """The message for a record whose keys tell no kind: its keys, and the keys each kind has."""
    keys = sorted(data)
    shown = ", ".join(keys[:8]) + (f", ... ({len(keys)} keys)" if len(keys) > 8 else "")
    return (
        f"cannot tell what this record is (keys: {shown or 'none'}): a conversation has 'conversation', "
        f"a sample 'input_text' and 'response_text', a prediction also {PRED_TEXT!r}, a chat example 'messages'"
    )


def other_kind(kind: Kind, expected: Kind) -> str:
    """The message for a record of another kind than its file's."""
    return f"a {kind_noun(kind)} in a file of {expected}; one file holds one kind of record"


def output_layout(path: Path | str) -> Layout:
    """The layout a writer uses for ``path``: its extension decides.

    Writers call this before any work, so that a typo in an output name fails at once instead of
    after an hour of prediction, and no file ever holds another layout than its name says.
    """
    suffix = Path(path).suffix.lower()
    if suffix in LAYOUT_SUFFIXES:
        return LAYOUT_SUFFIXES[suffix]
    what = f"unknown extension {suffix!r}" if suffix else "no extension"
    raise DataInputError(f"{path}: {what} for a data file; use .jsonl (JSON Lines), .json (one JSON array) or .parquet")


def file_layout(file: Path) -> Layout:
    """The layout of an existing file, from its first bytes (its name may say otherwise)."""
    with file.open("rb") as fh:
        head = fh.read(4096)
    if head.startswith(PARQUET_MAGIC):
        return "parquet"
    if head.lstrip(b"\xef\xbb\xbf \t\r\n").startswith(b"["):
        return "json"
    return "jsonl"


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
            if p.is_file()
            and p.suffix.lower() in DATA_SUFFIXES
            and p.name not in NOT_DATA
            and not p.name.startswith(".")
        )
        if not files:
            raise DataInputError(f"{path} holds no {CONVERSATIONS} and no .jsonl, .json or .parquet data files")
        return files
    if path.suffix.lower() not in DATA_SUFFIXES:
        raise DataInputError(f"{path}: unsupported file type {path.suffix!r}; use .jsonl, .json or .parquet")
    return [path]


def _iter_files(files: Sequence[Path], on_progress: Progress) -> Iterator[RawRecord]:
    """Every record of ``files`` in order, each file read by its content's layout."""
    total = sum(f.stat().st_size for f in files)
    offset = count = 0
    for file in files:
        for record, done in _READERS[file_layout(file)](file):
            yield record
            count += 1
            if on_progress is not None and count % PROGRESS_EVERY == 0:
                on_progress(offset + done, total)
        offset += file.stat().st_size
    if on_progress is not None:
        on_progress(total, total)


def iter_raw(path: Path | str, on_progress: Progress = None) -> Iterator[RawRecord]:
    """Every record behind ``path`` in file order, of any kind; unparseable records come with ``error`` set.

    ``on_progress(done, total)`` counts bytes of input read.
    """
    return _iter_files(data_files(path), on_progress)


@dataclass
class DataSource:
    """What a data path holds, found from its content: the files, their layouts and the kind of record.

    Made by :func:`open_source`, which refuses a kind the caller cannot use before any record is
    processed. ``records`` counts the records of the last pass, so that the CLI can say what it read.
    """

    path: Path
    files: list[Path]
    layouts: list[Layout]
    kind: Kind | None  # None: no record tells (empty files, or records of no known kind)
    accept: tuple[Kind, ...] | None = None
    records: int = field(default=0, init=False)

    @property
    def name(self) -> str:
        if len(self.files) == 1:
            return str(self.files[0])
        return f"{self.path} ({len(self.files)} files)"

    def describe(self) -> str:
        """One line for the user: ``samples.jsonl: 120 samples (JSON Lines)``."""
        layouts = ", ".join(LAYOUT_NAMES[layout] for layout in dict.fromkeys(self.layouts))
        what = f"{self.records:,} {kind_noun(self.kind, self.records)}" if self.kind else f"{self.records:,} records"
        return f"{self.name}: {what} ({layouts})"

    def require(self, accept: Sequence[Kind]) -> None:
        """Refuse a kind the caller cannot use, naming what was found and what is expected."""
        self.accept = tuple(accept)
        if self.kind is None or self.kind in self.accept:
            return
        layouts = ", ".join(LAYOUT_NAMES[layout] for layout in dict.fromkeys(self.layouts))
        expected = " or ".join(self.accept)
        maker = KIND_MAKERS.get(self.accept[0]) if len(self.accept) == 1 else None
        hint = f" (`{maker}` writes them)" if maker else ""
        raise DataInputError(f"{self.name}: found {self.kind} ({layouts}), expected {expected}{hint}")

    def raw(self, on_progress: Progress = None) -> Iterator[RawRecord]:
        """Every record, parseable or not (the lenient path of statistics and validation)."""
        self.records = 0
        for record in _iter_files(self.files, on_progress):
            self.records += 1
            yield record

    def checked(self, on_progress: Progress = None) -> Iterator[tuple[RawRecord, Kind]]:
        """Every record with its kind; the first that does not parse, is not an object or is of
        another kind raises :class:`RecordError`. A record whose keys tell no kind is taken to be of
        the source's kind, so that its model names the missing field."""
        for record in self.raw(on_progress):
            if record.error is not None:
                raise RecordError(record.file, record.line, record.error)
            if not isinstance(record.data, dict):
                raise RecordError(record.file, record.line, f"expected a JSON object, got {json_type(record.data)}")
            kind = record_kind(record.data)
            if self.kind is None:
                if kind is None:
                    raise RecordError(record.file, record.line, unknown_record(record.data))
                self.kind = kind
                if self.accept is not None:
                    self.require(self.accept)
            elif kind is not None and kind != self.kind:
                raise RecordError(record.file, record.line, other_kind(kind, self.kind))
            yield record, self.kind


def _sniff_kind(file: Path) -> Kind | None:
    """The kind of the first of a file's first records that tells one."""
    for number, (record, _) in enumerate(_READERS[file_layout(file)](file)):
        kind = record_kind(record.data)
        if kind is not None or number + 1 >= SNIFF_RECORDS:
            return kind
    return None


def open_source(path: Path | str | DataSource, accept: Sequence[Kind] | None = None) -> DataSource:
    """Look at what ``path`` holds (layouts and kind, from content); refuse a kind not in ``accept``.

    Every file of a folder must hold the same kind. Cheap: only the first records are read (all of
    a JSON array's text, which its parser needs).
    """
    if isinstance(path, DataSource):
        if accept is not None:
            path.require(accept)
        return path
    files = data_files(path)
    kinds = {file: _sniff_kind(file) for file in files}
    first: dict[Kind, Path] = {}
    for file, kind in kinds.items():
        if kind is not None:
            first.setdefault(kind, file)
    if len(first) > 1:
        found = ", ".join(f"{kind} ({file.name})" for kind, file in first.items())
        raise DataInputError(f"{path}: the files hold different kinds of record: {found}; read them one by one")
    source = DataSource(Path(path), files, [file_layout(f) for f in files], next(iter(first), None))
    if accept is not None:
        source.require(accept)
    return source


class Accumulator(Protocol):
    skipped: int

    def add(self, record: dict[str, Any]) -> None: ...


def accumulate(path: Path | str | DataSource, acc: Accumulator, on_progress: Progress = None) -> DataSource:
    """Feed every parseable record of the conversations behind ``path`` to ``acc.add``; count the others
    in ``acc.skipped``. Refuses any other kind of file (statistics of samples would be nonsense)."""
    source = open_source(path, ("conversations",))
    for record in source.raw(on_progress):
        if record.error is None:
            acc.add(record.data)
        else:
            acc.skipped += 1
    return source


def _iter_lines(file: Path) -> Iterator[tuple[RawRecord, int]]:
    """JSON Lines: one record a line; blank lines are skipped."""
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
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(file)
    except pa.ArrowException as exc:
        yield RawRecord(file, 1, None, f"not a readable parquet file ({exc})"), file.stat().st_size
        return
    rows, size = max(parquet.metadata.num_rows, 1), file.stat().st_size
    number = 0
    for batch in parquet.iter_batches(batch_size=1024):
        for row in batch.to_pylist():
            number += 1
            yield RawRecord(file, number, row), number * size // rows


_READERS: dict[Layout, Callable[[Path], Iterator[tuple[RawRecord, int]]]] = {
    "jsonl": _iter_lines,
    "json": _iter_array,
    "parquet": _iter_parquet,
}


def field_path(loc: Iterable[str | int]) -> str:
    """A pydantic error location as a JSON path: ``conversation[2].user_sticker.origin_anno``.

    List positions are 0-based, as in jq: ``conversation[2]`` is the third turn entry.
    """
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "record"


def parse_model(record: RawRecord, model: type[M]) -> M:
    """The strict path for any record model: the model, or a :class:`RecordError` naming file, line and field."""
    if record.error is not None:
        raise RecordError(record.file, record.line, record.error)
    if not isinstance(record.data, dict):
        raise RecordError(record.file, record.line, f"expected a JSON object, got {json_type(record.data)}")
    try:
        return model.model_validate_json(record.json_text(), strict=True)
    except ValidationError as exc:
        first = exc.errors()[0]
        more = f" (and {exc.error_count() - 1} more problem(s); run `stickerconv data validate`)"
        raise RecordError(
            record.file, record.line, first["msg"] + (more if exc.error_count() > 1 else ""), field_path(first["loc"])
        ) from None


def parse_conversation(record: RawRecord) -> Conversation:
    """The strict path: a Conversation, or a :class:`RecordError` naming file, line and field."""
    return parse_model(record, Conversation)


def iter_conversations(
    path: Path | str | DataSource, on_progress: Progress = None
) -> Iterator[tuple[RawRecord, Conversation]]:
    """Every conversation behind ``path``, validated; another kind of file is refused before any record,
    and the first bad record raises :class:`RecordError`."""
    for record, _ in open_source(path, ("conversations",)).checked(on_progress):
        yield record, parse_conversation(record)


def load_conversations(path: Path | str | DataSource, on_progress: Progress = None) -> list[Conversation]:
    return [conversation for _, conversation in iter_conversations(path, on_progress)]


def json_type(value: Any) -> str:
    """The JSON name of a Python value's type, for messages about wrong types."""
    names = {dict: "object", list: "array", str: "string", bool: "boolean", int: "integer", float: "number"}
    return "null" if value is None else names.get(type(value), type(value).__name__)


@contextmanager
def atomic_file(path: Path | str) -> Iterator[Path]:
    """A temporary path beside ``path`` that is renamed to ``path`` only when the block finishes without an error."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@contextmanager
def atomic_text(path: Path | str) -> Iterator[IO[str]]:
    """A text file that appears at ``path`` only when the block finishes without an error."""
    with atomic_file(path) as tmp, tmp.open("w", encoding="utf-8", newline="\n") as fh:
        yield fh


def write_records(path: Path | str, records: Iterable[dict[str, Any]]) -> int:
    """Write dicts in the layout ``path``'s extension names, atomically; return the count.

    ``.jsonl``: one record a line. ``.json``: one JSON array, one record a line inside it. Both
    stream. ``.parquet``: one table (all records in memory; nested objects become structs, so an
    object key that only some records have reads back as null in the others).
    """
    layout = output_layout(path)
    if layout == "parquet":
        return _write_parquet(Path(path), list(records))
    count = 0
    with atomic_text(path) as fh:
        if layout == "json":
            fh.write("[")
        for record in records:
            line = json.dumps(record, ensure_ascii=False)
            if layout == "json":
                fh.write(("\n" if count == 0 else ",\n") + line)
            else:
                fh.write(line + "\n")
            count += 1
        if layout == "json":
            fh.write("\n]\n" if count else "]\n")
    return count


def _write_parquet(path: Path, records: list[dict[str, Any]]) -> int:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pa.Table.from_pylist(records)
        with atomic_file(path) as tmp:
            pq.write_table(table, tmp)
    except pa.ArrowException as exc:
        raise DataInputError(
            f"{path}: these records do not fit one parquet table ({exc}); write .jsonl or .json instead"
        ) from None
    return len(records)


def write_conversations(path: Path | str, conversations: Iterable[Conversation]) -> int:
    """Write conversations in the published format (§4.3 keys; provenance only under ``meta``)."""
    return write_records(path, (c.to_published() for c in conversations))
