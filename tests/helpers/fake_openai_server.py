"""A small, real OpenAI-compatible HTTP server for tests, with reproducible fault injection.

Why a real server rather than mocks: the LLM client layer is built on the official ``openai`` SDK, and what
matters (retries, timeouts, Retry-After, how the SDK reacts to broken bodies) happens in the SDK's HTTP stack.
Only a real socket exercises that code. The server runs uvicorn in a daemon thread on 127.0.0.1.

A ``Dialect`` says which ``response_format`` kinds the server takes and how it refuses the others, so one
fake plays OpenAI, llama.cpp's Python server (a 500 for ``json_schema``), or servers with less support.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import json
import random
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from stickerconv.serve.runner import ServerThread

ROLES = {"system", "developer", "user", "assistant", "tool", "function"}
SCHEMA_MARKER = "JSON schema:"
FAULT_KINDS = ("429", "500", "slow", "truncated", "invalid_json", "non_schema")
RATE_LIMITED = {"error": {"message": "Rate limit reached", "type": "requests", "code": "rate_limit_exceeded"}}
SERVER_ERROR = {"error": {"message": "The server had an error", "type": "server_error", "param": None, "code": None}}
FORMAT_KINDS = ("json_schema", "json_object_schema", "json_object")  # json_object_schema: json_object + "schema"


@dataclass(frozen=True)
class Dialect:
    """The ``response_format`` kinds a server takes (FORMAT_KINDS) and the HTTP status it refuses the rest with."""

    name: str
    accepts: frozenset[str]
    refusal_status: int = 400


OPENAI = Dialect("openai", frozenset(FORMAT_KINDS))
# llama-cpp-python's server validates response_format.type as 'text' | 'json_object' and answers 500 otherwise.
LLAMA_CPP = Dialect("llama.cpp", frozenset({"json_object_schema", "json_object"}), refusal_status=500)
NO_JSON_SCHEMA = Dialect("no json_schema", frozenset({"json_object_schema", "json_object"}))
JSON_OBJECT_ONLY = Dialect("json_object only", frozenset({"json_object"}))
NO_RESPONSE_FORMAT = Dialect("no response_format", frozenset())


@dataclass
class FaultPlan:
    """Which faults to inject; drawn from ``random.Random(seed)`` in request order, so runs are reproducible."""

    rate: float = 0.0
    kinds: tuple[str, ...] = FAULT_KINDS
    retry_after: str | None = "1"  # Retry-After header sent with 429 (None = no header)
    slow_seconds: float = 5.0  # "slow" sleeps this long, then answers normally
    seed: int = 0


def free_port() -> int:
    """A port that was free a moment ago on 127.0.0.1 (the server itself binds its socket first, race-free)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _error(status: int, message: str, param: str | None = None, code: str | None = None) -> JSONResponse:
    """An error response in OpenAI's format, so the SDK maps it to its typed exceptions."""
    body = {"error": {"message": message, "type": "invalid_request_error", "param": param, "code": code}}
    return JSONResponse(body, status_code=status)


def schema_instance(schema: dict[str, Any], root: dict[str, Any] | None = None) -> Any:
    """A deterministic minimal instance of a JSON schema (the subset pydantic and the SDK emit)."""
    root = schema if root is None else root
    if "$ref" in schema:
        return schema_instance(_resolve(schema["$ref"], root), root)
    if "const" in schema:
        return schema["const"]
    if schema.get("enum"):
        return schema["enum"][0]
    for key in ("anyOf", "oneOf"):
        if schema.get(key):
            return schema_instance(schema[key][0], root)
    if schema.get("allOf"):
        merged: dict[str, Any] = {}
        for sub in schema["allOf"]:
            while "$ref" in sub:  # resolve first, so that properties can be merged
                sub = _resolve(sub["$ref"], root)
            merged |= {k: v for k, v in sub.items() if k != "properties"}
            merged["properties"] = merged.get("properties", {}) | sub.get("properties", {})
        return schema_instance(merged | {k: v for k, v in schema.items() if k != "allOf"}, root)
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind is None:
        kind = "object" if "properties" in schema else "array" if "items" in schema else "null"
    if kind == "object":
        return {name: schema_instance(sub, root) for name, sub in schema.get("properties", {}).items()}
    if kind == "array":
        count = schema.get("minItems", 0)
        prefix = schema.get("prefixItems", [])
        return [schema_instance(prefix[i] if i < len(prefix) else schema.get("items", {}), root) for i in range(count)]
    if kind == "string":
        fixed = {"date-time": "2024-01-01T00:00:00Z", "date": "2024-01-01", "time": "00:00:00", "email": "a@b.co"}
        fixed |= {"uuid": "00000000-0000-4000-8000-000000000000", "uri": "http://example.com/"}
        if schema.get("format") in fixed:
            return fixed[schema["format"]]
        text = "ok" + "x" * max(0, schema.get("minLength", 0) - 2)
        return text[: schema.get("maxLength", len(text))]
    if kind in ("integer", "number"):  # the lowest allowed value, or 0 when that is allowed
        lo, hi = (
            schema.get("minimum", schema.get("exclusiveMinimum")),
            schema.get("maximum", schema.get("exclusiveMaximum")),
        )
        step = 1 if kind == "integer" or lo is None or hi is None else min(1, (hi - lo) / 2)
        value = lo if lo is not None else min(0, hi) if hi is not None else 0
        value += step if value <= schema.get("exclusiveMinimum", value - 1) else 0
        value -= step if value >= schema.get("exclusiveMaximum", value + 1) else 0
        return int(value) if kind == "integer" else float(value)
    if kind == "boolean":
        return False
    return None


def _resolve(ref: str, root: dict[str, Any]) -> dict[str, Any]:
    """Follow a local JSON pointer such as ``#/$defs/Mood`` (pydantic puts nested models and enums there)."""
    node: Any = root
    for part in ref.lstrip("#/").split("/"):
        node = node[part.replace("~1", "/").replace("~0", "~")]
    return node


def format_kind(body: dict[str, Any]) -> str | None:
    """The FORMAT_KINDS entry a request asks for; None for no response_format (or type "text")."""
    fmt = body.get("response_format") or {}
    if fmt.get("type") == "json_object" and isinstance(fmt.get("schema"), dict):
        return "json_object_schema"
    return fmt.get("type") if fmt.get("type") in FORMAT_KINDS else None


def requested_schema(body: dict[str, Any]) -> dict[str, Any] | None:
    """The schema the answer must follow: from response_format, else from a "JSON schema: {...}" in the prompt
    (the fake model follows such instructions), else None."""
    fmt = body.get("response_format") or {}
    if fmt.get("type") == "json_schema":
        return fmt.get("json_schema", {}).get("schema", {})
    if fmt.get("type") == "json_object" and isinstance(fmt.get("schema"), dict):
        return fmt["schema"]
    for msg in reversed(body["messages"]):
        text = _text(msg.get("content"))
        if msg["role"] in ("system", "user") and SCHEMA_MARKER in text:
            rest = text.split(SCHEMA_MARKER, 1)[1]
            try:
                schema, _ = json.JSONDecoder().raw_decode(rest[rest.index("{") :])
            except ValueError:
                return None
            return schema if isinstance(schema, dict) else None
    return None


def _refusal(dialect: Dialect, kind: str) -> JSONResponse:
    """How ``dialect`` refuses a response_format ``kind``: llama.cpp's pydantic validation error in a 500, or an
    OpenAI-style 400 naming the parameter."""
    if dialect.refusal_status >= 500:
        message = (
            "1 validation error:\n  {'type': 'literal_error', 'loc': ('body', 'response_format', 'type'), "
            f"'msg': \"Input should be 'text' or 'json_object'\", 'input': '{kind}'}}"
        )
        body = {"error": {"message": message, "type": "internal_server_error", "param": None, "code": None}}
        return JSONResponse(body, status_code=dialect.refusal_status)
    message = f"response_format of type '{kind}' is not supported by this server"
    if kind == "json_object_schema":
        message = "Additional properties are not allowed ('schema' was unexpected) - 'response_format'"
    return _error(dialect.refusal_status, message, "response_format", "unsupported_parameter")


def _text(content: Any) -> str:
    """The text of a message content: a string, or the text parts of a list of parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")
    return ""


def _check_part(part: Any) -> str | None:
    """Why a content part is malformed, or None when it is fine."""
    if not isinstance(part, dict) or part.get("type") not in ("text", "image_url"):
        return "content parts must be objects of type 'text' or 'image_url'"
    if part["type"] == "text":
        return None if isinstance(part.get("text"), str) else "a text part needs a string 'text'"
    url = part.get("image_url", {}).get("url") if isinstance(part.get("image_url"), dict) else None
    if not isinstance(url, str):
        return "an image_url part needs {'image_url': {'url': str}}"
    if url.startswith(("http://", "https://")):
        return None
    head, _, data = url.partition(",")
    if not (head.startswith("data:image/") and head.endswith(";base64")):
        return "image url must be http(s) or a data:image/...;base64, URL"
    try:
        base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        return "image data URL is not valid base64"
    return None


def _validate(body: Any) -> JSONResponse | None:
    """A 400 in OpenAI's format for a request the real API would reject, or None."""
    if not isinstance(body, dict):
        return _error(400, "request body must be a JSON object")
    if body.get("stream"):
        return _error(400, "streaming not supported by the fake server", "stream", "unsupported_parameter")
    if not isinstance(body.get("response_format") or {}, dict):
        return _error(400, "response_format must be an object", "response_format", "invalid_type")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return _error(400, "Missing required parameter: 'messages'.", "messages", "missing_required_parameter")
    for i, msg in enumerate(messages):
        if not isinstance(msg, dict) or msg.get("role") not in ROLES:
            role = msg.get("role") if isinstance(msg, dict) else None
            return _error(400, f"Invalid value: {role!r}.", f"messages[{i}].role", "invalid_value")
        content = msg.get("content")
        if isinstance(content, list):
            for j, part in enumerate(content):
                if problem := _check_part(part):
                    return _error(400, problem, f"messages[{i}].content[{j}]", "invalid_value")
        elif not (isinstance(content, str) or (content is None and msg["role"] == "assistant")):
            return _error(400, "message content must be a string or a list of parts", f"messages[{i}].content")
    return None


class FakeOpenAIServer:
    """Runs the app with uvicorn in a daemon thread on 127.0.0.1:<free port>.

    Faults are drawn only for /v1/chat/completions requests that pass validation (a 400 draws none);
    ``faults_injected`` counts the faults that changed the answer ("non_schema" on a plain chat request is not
    counted, since it answers normally) and is never reset. ``requests`` holds every JSON-object body received,
    the rejected ones included, so ``len(srv.requests)`` counts attempts (SDK retries included).

    With ``prefix_cache`` it reports ``usage.prompt_tokens_details.cached_tokens`` as a server with a prefix
    cache would: the longest prefix (in its tokens, the words of the messages in order) that the prompt shares
    with any prompt it answered before.
    """

    def __init__(
        self,
        faults: FaultPlan | None = None,
        model: str = "fake-model",
        reply: Callable[[dict[str, Any]], str] | None = None,
        dialect: Dialect = OPENAI,
        latency: float = 0.0,
        prefix_cache: bool = False,
    ) -> None:
        self.model = model
        self.prefix_cache = prefix_cache
        self._prompts: list[list[str]] = []  # every answered prompt's tokens, for prefix_cache
        self.latency = latency  # seconds every valid chat request waits before it is answered (benchmarks)
        self.reply = reply
        self.dialect = dialect
        self.requests: list[dict[str, Any]] = []
        self.faults_injected: Counter[str] = Counter()
        self.port = 0
        self.base_url = ""
        self._lock = threading.Lock()
        self._stopping = False
        self._runner: ServerThread | None = None
        self._count = 0
        self.usage_reported: Counter[str] = Counter()  # prompt and cached prompt tokens of every answer sent
        self.set_faults(faults or FaultPlan())
        self.app = self._build_app()

    def set_faults(self, faults: FaultPlan) -> None:
        """Change the plan at runtime; the RNG restarts from ``faults.seed``."""
        with self._lock:
            self.faults = faults
            self._rng = random.Random(faults.seed)

    def _cached_tokens(self, tokens: list[str]) -> int:
        """The longest prefix ``tokens`` shares with an earlier prompt; the prompt is then remembered."""
        with self._lock:
            best = 0
            for earlier in self._prompts:
                shared = 0
                for a, b in zip(earlier, tokens, strict=False):
                    if a != b:
                        break
                    shared += 1
                best = max(best, shared)
            self._prompts.append(tokens)
        return best

    def _completion(self, body: dict[str, Any], content: str) -> dict[str, Any]:
        tokens = [word for m in body["messages"] for word in _text(m.get("content")).split()]
        prompt = len(tokens)
        completion = len(content.split())
        usage = {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}
        if self.prefix_cache:
            usage["prompt_tokens_details"] = {"cached_tokens": self._cached_tokens(tokens)}
        with self._lock:
            self.usage_reported["prompt_tokens"] += prompt
            self.usage_reported["cached_prompt_tokens"] += usage.get("prompt_tokens_details", {}).get(
                "cached_tokens", 0
            )
        with self._lock:
            self._count += 1
            number = self._count
        return {
            "id": f"chatcmpl-fake-{number}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": self.model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
            "usage": usage,
        }

    async def _chat(self, request: Request) -> Response:
        try:
            body = json.loads(await request.body())
        except ValueError:
            return _error(400, "request body is not valid JSON")
        if isinstance(body, dict):
            with self._lock:
                self.requests.append(body)
        if (invalid := _validate(body)) is not None:
            return invalid
        kind = format_kind(body)
        if kind is not None and kind not in self.dialect.accepts:
            return _refusal(self.dialect, kind)
        schema = requested_schema(body)
        if self.latency:
            await asyncio.sleep(self.latency)
        with self._lock:  # one draw per valid request, in arrival order (handlers run on one event loop)
            plan, hit = self.faults, self.faults.rate > 0 and self._rng.random() < self.faults.rate
            fault = self._rng.choice(plan.kinds) if hit else None
            if fault == "non_schema" and schema is None:
                fault = None  # a plain chat answer has no schema to violate
            if fault is not None:
                self.faults_injected[fault] += 1
        if fault == "429":
            headers = {"Retry-After": plan.retry_after} if plan.retry_after is not None else None
            return JSONResponse(RATE_LIMITED, status_code=429, headers=headers)
        if fault == "500":
            return JSONResponse(SERVER_ERROR, status_code=500)
        if fault == "invalid_json":
            return Response(b"{not json at all", media_type="application/json")
        if fault == "slow":
            deadline = time.monotonic() + plan.slow_seconds
            while time.monotonic() < deadline:  # async, so other requests are served meanwhile
                if self._stopping or await request.is_disconnected():
                    return Response(status_code=499)
                await asyncio.sleep(min(0.05, max(0.0, deadline - time.monotonic())))
        if fault == "non_schema":
            content = '{"unexpected": "shape"}'
        elif self.reply is not None:
            content = self.reply(body)
        elif schema is not None:
            content = json.dumps(schema_instance(schema))
        else:
            users = [m for m in body["messages"] if m["role"] == "user"]
            content = "echo: " + (_text(users[-1].get("content")) if users else "")
        payload = json.dumps(self._completion(body, content)).encode()
        if fault == "truncated":
            return Response(payload[: len(payload) // 2], media_type="application/json")
        return Response(payload, media_type="application/json")

    def _build_app(self) -> FastAPI:
        app = FastAPI()

        @app.get("/v1/models")
        async def models() -> dict[str, Any]:
            return {"object": "list", "data": [{"id": self.model, "object": "model", "created": 0, "owned_by": "fake"}]}

        app.post("/v1/chat/completions")(self._chat)
        return app

    def start(self) -> FakeOpenAIServer:
        """Serve on a free port in a daemon thread; return once connections are accepted."""
        self._stopping = False
        self._runner = ServerThread(self.app).start(timeout=10)
        self.port = self._runner.port
        self.base_url = f"{self._runner.url}/v1"
        return self

    def stop(self) -> None:
        """Shut uvicorn down cleanly and release the port; safe to call twice."""
        self._stopping = True
        if self._runner is not None:
            self._runner.stop()
        self._runner = None

    def __enter__(self) -> FakeOpenAIServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def dialogue_reply(body: dict) -> str:
    """Deterministic answers for the Agent4SC simulator: prompt-derived utterances (drafted ones with a sticker
    plan), schema instances for the other structured calls. A drafted utterance is recognised by its fields,
    since json_object_schema requests carry the schema without its title."""
    digest = hashlib.sha256(json.dumps(body["messages"], sort_keys=True).encode()).hexdigest()[:10]
    message = f"I keep thinking about it, really ({digest})."
    schema = requested_schema(body)
    if schema is None:
        return message
    if {"message", "intention", "query"} <= set(schema.get("properties", {})):
        query = "emotion: Sadness, emotion describe: The sticker conveys sadness."
        return json.dumps({"message": message, "intention": "Emotional Expression", "query": query})
    return json.dumps(schema_instance(schema))
