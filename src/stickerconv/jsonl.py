"""JSON Lines in and out, with errors that name the file, the line and the field.

Every JSONL file of the project goes through here, so a malformed record is always reported the
same way and a crash while writing never leaves a half-written file behind.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TypeVar

from pydantic import BaseModel, ValidationError

M = TypeVar("M", bound=BaseModel)
log = logging.getLogger(__name__)


class RecordError(ValueError):
    """A record that does not parse or validate, located by file, line and field."""

    def __init__(self, path: Path | str, line: int, message: str, field: str | None = None):
        self.path, self.line, self.field, self.message = Path(path), line, field, message
        where = f"{path}:{line}" + (f": field '{field}'" if field else "")
        super().__init__(f"{where}: {message}")


def _first_error(exc: ValidationError) -> tuple[str | None, str]:
    err = exc.errors()[0]
    field = ".".join(str(p) for p in err["loc"]) or None
    more = f" (and {exc.error_count() - 1} more problem(s))" if exc.error_count() > 1 else ""
    return field, err["msg"] + more


def iter_jsonl(path: Path | str, model: type[M]) -> Iterator[tuple[int, M]]:
    """Yield ``(line_number, record)``; raise :class:`RecordError` at the first bad line."""
    path = Path(path)
    with path.open(encoding="utf-8") as fh:
        for number, raw in enumerate(fh, start=1):
            if not raw.strip():
                continue
            try:
                data = json.loads(raw)
            except json.JSONDecodeError as exc:
                raise RecordError(path, number, f"not valid JSON ({exc.msg} at column {exc.colno})") from None
            if not isinstance(data, dict):
                raise RecordError(path, number, f"expected a JSON object, got {type(data).__name__}")
            try:
                yield number, model.model_validate(data)
            except ValidationError as exc:
                field, message = _first_error(exc)
                raise RecordError(path, number, message, field) from None


def read_jsonl(path: Path | str, model: type[M]) -> list[M]:
    return [record for _, record in iter_jsonl(path, model)]


def drop_torn_tail(path: Path | str) -> bool:
    """Cut a last line that a crash left without its newline, so an append-only file loads again.

    Returns whether anything was cut. Files written by appending whole lines (resumable runs) only
    ever lose the record that was being written when the process died.
    """
    path = Path(path)
    if not path.is_file():
        return False
    data = path.read_bytes()
    if not data or data.endswith(b"\n"):
        return False
    log.warning("%s: dropping an incomplete last line left by an interrupted run", path)
    with path.open("r+b") as fh:
        fh.truncate(data.rfind(b"\n") + 1)
    return True


def write_jsonl_atomic(path: Path | str, records: Iterable[BaseModel | dict]) -> int:
    """Write all records (models, or plain dicts as ``json.dumps`` writes them) to a temporary file and
    rename it into place; return the count."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    count = 0
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as fh:
            for record in records:
                line = (
                    record.model_dump_json()
                    if isinstance(record, BaseModel)
                    else json.dumps(record, ensure_ascii=False)
                )
                fh.write(line + "\n")
                count += 1
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return count
