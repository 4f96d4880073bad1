"""Structured output: a pydantic model in, its JSON schema to the backend, a validated object out.

Servers differ in how they take a schema, so there are four modes, tried in this order until a
server accepts one (``StructuredNegotiation``):

- ``json_schema``: ``response_format={"type": "json_schema", ...}`` (OpenAI, vLLM, Ollama);
- ``json_object_schema``: ``response_format={"type": "json_object", "schema": ...}``, which
  llama.cpp's Python server turns into a grammar (it answers ``json_schema`` with HTTP 500);
- ``json_object``: any JSON object, with the schema spelled out in the prompt;
- ``prompt``: no ``response_format`` at all, only the schema in the prompt.

Whatever the mode, the answer is parsed leniently (code fences, text around the object) and
validated strictly, so the caller gets a validated object or a StructuredOutputError.
"""

from __future__ import annotations

import json
import logging
import re
import threading
from typing import Any

from pydantic import BaseModel, ValidationError

from stickerconv.llm.types import Message, StructuredMode, StructuredOutput, StructuredOutputError, TextPart

log = logging.getLogger(__name__)

SCHEMA_INSTRUCTION = "Answer with only a JSON object, no other text, that matches this JSON schema: "
STRUCTURED_MODES: tuple[StructuredMode, ...] = ("json_schema", "json_object_schema", "json_object", "prompt")


Schema = type[BaseModel] | dict[str, Any]  # a pydantic model, or a raw JSON schema (e.g. from a file)


def json_schema_of(schema: Schema) -> dict[str, Any]:
    return schema if isinstance(schema, dict) else schema.model_json_schema()


def schema_name(schema: dict[str, Any]) -> str:
    """A name the OpenAI API accepts for ``json_schema.name`` (letters, digits, _ and -)."""
    return re.sub(r"[^A-Za-z0-9_-]", "_", str(schema.get("title", "answer")))[:64] or "answer"


def with_schema_instruction(messages: list[Message], schema: dict[str, Any]) -> list[Message]:
    """The messages with the schema spelled out in the system prompt, for servers without json_schema."""
    instruction = SCHEMA_INSTRUCTION + json.dumps(schema, separators=(",", ":"))
    if messages and messages[0].role == "system":
        first = messages[0]
        content = (
            f"{first.content}\n\n{instruction}"
            if isinstance(first.content, str)
            else [*first.content, TextPart(text=instruction)]
        )
        return [first.model_copy(update={"content": content}), *messages[1:]]
    return [Message(role="system", content=instruction), *messages]


def response_format(mode: StructuredMode, schema: dict[str, Any]) -> dict[str, Any] | None:
    """The ``response_format`` a request carries in ``mode`` (None: the field is left out)."""
    if mode == "json_schema":
        return {"type": "json_schema", "json_schema": {"name": schema_name(schema), "schema": schema}}
    if mode == "json_object_schema":
        return {"type": "json_object", "schema": grammar_schema(schema)}
    if mode == "json_object":
        return {"type": "json_object"}
    return None


def schema_in_prompt(mode: StructuredMode) -> bool:
    """Whether the model only learns the schema's shape from the prompt (nothing constrains it to the schema)."""
    return mode in ("json_object", "prompt")


class StructuredNegotiation:
    """Which structured-output mode one server (base URL + model) takes, learnt once and shared by every
    call through its backend.

    A call asks ``mode()``, sends the request in that mode and reports the outcome: ``accepted`` confirms
    the mode, ``rejected`` rules it out so that the same call can go on with the next one. Concurrent
    first calls may probe at the same time; rejections only ever move the choice down the order and a
    mode is confirmed only while it is the current choice, so they all end on the same mode. Once a mode
    is confirmed it is never dropped again: a later rejection of it is about that request, not the
    server, and is raised to the caller. ``prompt`` sends no ``response_format`` and cannot be rejected.
    """

    def __init__(self, server: str):
        self.server = server
        self._rejected: dict[StructuredMode, str] = {}  # mode -> why the server refused it
        self._confirmed: StructuredMode | None = None
        self._lock = threading.Lock()  # a backend may serve several event loops (threads) at once

    @property
    def confirmed(self) -> StructuredMode | None:
        return self._confirmed

    def mode(self, pinned: StructuredOutput = "auto") -> StructuredMode:
        """The mode to try now: the pinned one, else the confirmed one, else the first not rejected."""
        if pinned != "auto":
            return pinned
        with self._lock:
            return self._confirmed or next(m for m in STRUCTURED_MODES if m not in self._rejected)

    def rejected(self, mode: StructuredMode, reason: str, pinned: StructuredOutput = "auto") -> bool:
        """Record that the server refused ``mode``; True when the call should try the next mode, False when the
        refusal must reach the caller (the mode is pinned, confirmed, or the last resort)."""
        if pinned != "auto" or mode == "prompt":
            return False
        with self._lock:
            if mode == self._confirmed:
                return False
            if mode not in self._rejected:
                self._rejected[mode] = reason
                following = next(m for m in STRUCTURED_MODES if m not in self._rejected)
                log.info("%s rejects structured output %s (%s); trying %s", self.server, mode, reason, following)
            return True

    def accepted(self, mode: StructuredMode) -> None:
        """Confirm ``mode`` when it is the current choice (a late answer to a mode another call has already
        seen refused does not undo that refusal)."""
        with self._lock:
            if self._confirmed is not None or mode in self._rejected:
                return
            self._confirmed = mode
            refused = "; ".join(f"{m} refused: {why}" for m, why in self._rejected.items())
        log.info("%s: structured output uses %s%s", self.server, mode, f" ({refused})" if refused else "")


_GRAMMAR_KEYS = frozenset(
    "type properties required enum const items anyOf oneOf allOf additionalProperties minItems maxItems".split()
)
MAX_ENUM_RANGE = 64


def grammar_schema(schema: Any, defs: dict[str, Any] | None = None) -> Any:
    """The schema as llama.cpp's grammar builder should see it (the embedded model and the
    ``json_object_schema`` mode of llama.cpp's server both turn it into a grammar).

    llama-cpp-python ignores integer bounds (a 0..9 choice came back as 123), turns string length
    limits into grammars that slow every token down, and samples many times slower through
    ``$ref`` rules than through the same schema written inline. So references are inlined, small
    integer ranges become enums, and the other constraints are left to validation after parsing
    (which retries on failure).
    """
    if isinstance(schema, list):
        return [grammar_schema(item, defs) for item in schema]
    if not isinstance(schema, dict):
        return schema
    if defs is None:
        defs = schema.get("$defs", {})
    ref = schema.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/$defs/") and ref[8:] in defs:
        return grammar_schema(defs[ref[8:]], defs)  # pydantic schemas of agent answers are never recursive
    if schema.get("type") == "integer" and "enum" not in schema:
        low, high = schema.get("minimum"), schema.get("maximum")
        if low is not None and high is not None and 0 <= high - low < MAX_ENUM_RANGE:
            return {"type": "integer", "enum": list(range(int(low), int(high) + 1))}
    out = {}
    for key, value in schema.items():
        if key == "properties":
            out[key] = {name: grammar_schema(sub, defs) for name, sub in value.items()}
        elif key in _GRAMMAR_KEYS:
            out[key] = grammar_schema(value, defs)
    return out


def extract_json(text: str) -> Any:
    """The first JSON object in ``text``, tolerating code fences and chatter around it."""
    decoder = json.JSONDecoder()
    for match in re.finditer(r"\{", text):
        try:
            value, _ = decoder.raw_decode(text, match.start())
        except json.JSONDecodeError:
            continue
        if isinstance(value, dict):
            return value
    raise StructuredOutputError(f"no JSON object in the answer: {text[:200]!r}", text)


def parse_structured(text: str, schema: Schema) -> Any:
    """A validated pydantic object (model schema) or JSON value (raw schema); else StructuredOutputError."""
    try:
        value = extract_json(text)
    except StructuredOutputError as exc:
        name = schema.get("title", "the schema") if isinstance(schema, dict) else schema.__name__
        raise StructuredOutputError(f"{name} expected, {exc}", text) from None
    if isinstance(schema, dict):
        import jsonschema

        try:
            jsonschema.validate(value, schema)
        except jsonschema.ValidationError as exc:
            where = ".".join(str(p) for p in exc.absolute_path) or "(root)"
            raise StructuredOutputError(f"answer does not match the schema: {where}: {exc.message}", text) from None
        except jsonschema.SchemaError as exc:
            raise ValueError(f"invalid JSON schema: {exc.message}") from None
        return value
    try:
        return schema.model_validate(value)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "(root)"
        raise StructuredOutputError(
            f"answer does not match {schema.__name__}: {where}: {first['msg']} (answer: {text[:200]!r})", text
        ) from None
