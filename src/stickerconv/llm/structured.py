"""Structured output: a pydantic model in, its JSON schema to the backend, a validated object out.

Servers that support ``response_format`` constrain decoding to the schema; for the rest the schema
goes into the prompt and the answer is parsed leniently (code fences, text around the object)
and validated strictly. Either way the caller gets a validated object or a StructuredOutputError.
"""

from __future__ import annotations

import json
import re
from typing import Any

from pydantic import BaseModel, ValidationError

from stickerconv.llm.types import Message, StructuredOutputError, TextPart

SCHEMA_INSTRUCTION = "Answer with only a JSON object, no other text, that matches this JSON schema: "


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
