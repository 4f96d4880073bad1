"""The strict path: every problem of a dataset file, each located by file, line and field.

Validation never stops at the first problem. It reports JSON that does not parse (a truncated last
line says so), records that are not objects, wrong types (pydantic's error location becomes the field,
``conversation[2].user_sticker.origin_anno``, 0-based like jq), keys the published format does not
have (§4.2/§4.3: provenance belongs under ``meta``), turns that do not run 1, 2, 3, ..., empty
messages, sessions without a sticker, stickers a given library does not hold, and duplicate sessions
(same persona, situation and messages; reported with the first copy's location). Files that
``data convert`` and ``eval predict`` write (per-turn samples, chat examples, predictions) are
recognised by their keys (:func:`stickerconv.data.io.record_kind`) and checked against their own
formats, so converted output can be re-validated; a record of another kind than the file's is a
problem of its own.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from stickerconv.data.chat import ChatExample
from stickerconv.data.io import (
    DataSource,
    Kind,
    Progress,
    RawRecord,
    field_path,
    json_type,
    open_source,
    other_kind,
    output_layout,
    record_kind,
    write_records,
)
from stickerconv.data.resolve import StickerResolver
from stickerconv.schema import Conversation, Prediction, Sample, Sticker, sticker_id_from_path

log = logging.getLogger(__name__)

TOP_KEYS = ("conversation", "user_persona", "user_status")
TURN_KEYS = ("turn", "user_message", "system_message", "user_sticker", "system_sticker")
STICKER_KEYS = ("seq_num", "image", "description", "emotion", "recommendation", "origin_anno")
ROLES = ("user", "system")


@dataclass(frozen=True, slots=True)
class Problem:
    """One problem at one place: printed as ``file:line: field: message``."""

    file: str
    line: int
    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.field}: {self.message}"


@dataclass
class ValidationReport:
    kind: Kind
    records: int = 0
    valid: int = 0
    problems: list[Problem] = field(default_factory=list)
    missing_images: list[Problem] = field(default_factory=list)  # warnings unless images are required
    stickers_checked: int = 0
    written: int | None = None  # records written by fix_out

    @property
    def ok(self) -> bool:
        return not self.problems


def _input_note(value: Any) -> str:
    if isinstance(value, dict | list):
        return f" (got {json_type(value)})"
    text = json.dumps(value, ensure_ascii=False)
    return f" (got {text if len(text) <= 40 else text[:37] + '...'})"


def _pydantic_problems(exc: ValidationError) -> list[tuple[str, str]]:
    out = []
    for error in exc.errors():
        if error["type"] == "value_error" and tuple(error["loc"]) == ("conversation",):
            continue  # turn numbering: reported with the exact turn by _turn_problems
        if error["type"] == "extra_forbidden":
            message = "not a key of the published format; provenance belongs under 'meta'"
        elif error["type"] == "missing":
            message = "missing"
        else:
            message = error["msg"] + _input_note(error.get("input"))
        out.append((field_path(error["loc"]), message))
    return out


def _sticker_problems(
    where: str, sticker: dict, resolver: StickerResolver | None
) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """(problems, missing-image warnings) of one sticker dict."""
    problems = [(f"{where}.{key}", "missing") for key in STICKER_KEYS if key not in sticker]
    problems += [  # keys our Sticker model reads but the published sticker does not have (others: pydantic)
        (f"{where}.{key}", f"not a key of the published sticker ({', '.join(STICKER_KEYS)})")
        for key in sticker
        if key not in STICKER_KEYS and key in Sticker.model_fields
    ]
    image = sticker.get("image")
    if resolver is None or not isinstance(image, str) or not image:
        return problems, []
    sticker_id = sticker.get("id") if isinstance(sticker.get("id"), str) else None
    found = resolver.find(image, sticker_id)
    if found is None:
        portable = sticker_id or sticker_id_from_path(image)
        problems.append(
            (
                f"{where}.image",
                f"unknown sticker {image!r}: no sticker in {resolver.root} has this image or id {portable!r}",
            )
        )
        return problems, []
    if resolver.image_file(found) is None:
        return problems, [(f"{where}.image", f"image file {resolver.library.image_path(found)} is missing")]
    return problems, []


def _turn_problems(
    turns: list, resolver: StickerResolver | None
) -> tuple[list[tuple[str, str]], list[tuple[str, str]], int]:
    """(problems, missing-image warnings, stickers seen) of a conversation's turn list."""
    problems: list[tuple[str, str]] = []
    missing: list[tuple[str, str]] = []
    stickers = 0
    numbering_reported = False
    for i, turn in enumerate(turns):
        if not isinstance(turn, dict):
            continue  # pydantic names the wrong type
        where = f"conversation[{i}]"
        number = turn.get("turn")
        if not numbering_reported and isinstance(number, int) and not isinstance(number, bool) and number != i + 1:
            gap = f"turn {i + 1} is missing" if number > i + 1 else "a turn number repeats or goes back"
            problems.append((f"{where}.turn", f"turn {number} where {i + 1} expected: {gap}"))
            numbering_reported = True
        for key in ("user_sticker", "system_sticker"):
            if key not in turn:
                problems.append((f"{where}.{key}", "missing (write null when the turn has no sticker)"))
        for key in ("user_message", "system_message"):
            if isinstance(turn.get(key), str) and not turn[key].strip():
                problems.append((f"{where}.{key}", "empty message"))
        for role in ROLES:
            sticker = turn.get(f"{role}_sticker")
            if isinstance(sticker, dict):
                stickers += 1
                found, warn = _sticker_problems(f"{where}.{role}_sticker", sticker, resolver)
                problems += found
                missing += warn
    return problems, missing, stickers


def check_conversation(
    data: Any, text: bytes | str, resolver: StickerResolver | None = None
) -> tuple[list[tuple[str, str]], list[tuple[str, str]], int]:
    """Problems, missing-image warnings and sticker count of one record (field, message pairs)."""
    if not isinstance(data, dict):
        return [("record", f"expected a JSON object, got {json_type(data)}")], [], 0
    problems: list[tuple[str, str]] = []
    try:
        Conversation.model_validate_json(text, strict=True)
    except ValidationError as exc:
        problems += _pydantic_problems(exc)
    for key in ("user_persona", "user_status"):
        if isinstance(data.get(key), str) and not data[key].strip():
            problems.append((key, "empty"))
    turns = data.get("conversation")
    if not isinstance(turns, list):
        return problems, [], 0
    found, missing, stickers = _turn_problems(turns, resolver)
    problems += found
    if turns and stickers == 0 and all(isinstance(t, dict) for t in turns):
        problems.append(("conversation", "no sticker in any turn (every StickerConv session has at least one)"))
    return problems, missing, stickers


def session_key(data: dict) -> bytes:
    """What makes two sessions the same: persona, situation and every message, in order."""
    turns = data.get("conversation")
    messages = (
        [[t.get("user_message"), t.get("system_message")] for t in turns if isinstance(t, dict)]
        if isinstance(turns, list)
        else []
    )
    body = json.dumps([data.get("user_persona"), data.get("user_status"), messages], ensure_ascii=False)
    return hashlib.blake2b(body.encode("utf-8"), digest_size=16).digest()


MODELS: dict[Kind, type[BaseModel]] = {"samples": Sample, "predictions": Prediction, "chat": ChatExample}


def _model_problems(model: type[BaseModel], data: Any, text: bytes | str) -> list[tuple[str, str]]:
    if not isinstance(data, dict):
        return [("record", f"expected a JSON object, got {json_type(data)}")]
    try:
        parsed = model.model_validate_json(text, strict=True)
    except ValidationError as exc:
        return _pydantic_problems(exc)
    return parsed.problems()  # type: ignore[attr-defined]


class _Validator:
    """Carries the per-file state (duplicate keys, report) through one pass over the records."""

    def __init__(self, kind: Kind, resolver: StickerResolver | None, require_images: bool):
        self.resolver, self.require_images = resolver, require_images
        self.report = ValidationReport(kind)
        self.first_copy: dict[bytes, tuple[Path, int]] = {}

    def check(self, record: RawRecord) -> bool:
        """Add the record's problems to the report; True when it has none."""
        report = self.report
        report.records += 1
        missing: list[tuple[str, str]] = []
        kind = record_kind(record.data)
        if record.error is not None:
            problems = [("record", record.error)]
        elif kind is not None and kind != report.kind:
            problems = [("record", other_kind(kind, report.kind))]
        elif report.kind == "conversations":
            problems, missing, stickers = check_conversation(record.data, record.json_text(), self.resolver)
            report.stickers_checked += stickers
            if isinstance(record.data, dict):
                problems += self._duplicate(record)
        else:
            problems = _model_problems(MODELS[report.kind], record.data, record.json_text())
        located = [Problem(str(record.file), record.line, f, m) for f, m in missing]
        if self.require_images:
            problems += missing
        else:
            report.missing_images += located
        report.problems += [Problem(str(record.file), record.line, f, m) for f, m in problems]
        report.valid += not problems
        return not problems

    def _duplicate(self, record: RawRecord) -> list[tuple[str, str]]:
        key = session_key(record.data)
        first = self.first_copy.setdefault(key, (record.file, record.line))
        if first == (record.file, record.line):
            return []
        return [("record", f"duplicate session: same persona, situation and messages as {first[0]}:{first[1]}")]


def validate(
    path: Path | str | DataSource,
    *,
    resolver: StickerResolver | None = None,
    require_images: bool = False,
    fix_out: Path | str | None = None,
    on_progress: Progress = None,
) -> ValidationReport:
    """Check every record behind ``path`` as the kind its records say (conversations when none says);
    with ``fix_out``, write the valid records there, in the layout its extension names.

    Known stickers whose image file is missing are warnings (``missing_images``) unless
    ``require_images`` makes them problems: SER30K images are obtained separately.
    """
    if fix_out is not None:
        output_layout(fix_out)
    source = open_source(path)
    validator = _Validator(source.kind or "conversations", resolver, require_images)
    valid = (record.data for record in source.raw(on_progress) if validator.check(record))
    report = validator.report
    if fix_out is not None:
        report.written = write_records(fix_out, valid)
    else:
        deque(valid, maxlen=0)  # run the checks; nothing to keep
    log.info("%s: %d record(s), %d valid, %d problem(s)", path, report.records, report.valid, len(report.problems))
    return report
