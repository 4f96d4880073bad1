"""Tests for the fake OpenAI server, through the official ``openai`` SDK and plain ``httpx``.

They also pin down how the SDK reacts to each fault (which exception class), since the LLM client layer's
retry and error handling is written against exactly that behaviour.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import Iterator
from enum import StrEnum

import httpx
import openai
import pytest
from pydantic import BaseModel, Field

from helpers.fake_openai_server import (
    JSON_OBJECT_ONLY,
    LLAMA_CPP,
    NO_JSON_SCHEMA,
    NO_RESPONSE_FORMAT,
    Dialect,
    FakeOpenAIServer,
    FaultPlan,
    free_port,
    schema_instance,
)

USER = [{"role": "user", "content": "hello there"}]


class Mood(StrEnum):
    happy = "happy"
    sad = "sad"


class Sticker(BaseModel):
    name: str = Field(min_length=5)
    score: float = Field(gt=0.5)


class Reply(BaseModel):
    mood: Mood
    intensity: int = Field(ge=3, le=7)
    use_sticker: bool
    text: str
    sticker: Sticker
    alternatives: list[Sticker] = Field(min_length=2)
    note: str | None = None


@pytest.fixture
def srv() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer() as server:
        yield server


def client(server: FakeOpenAIServer, timeout: float = 5.0, max_retries: int = 0) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.base_url, api_key="test", max_retries=max_retries, timeout=timeout)


def schema_format(model: type[BaseModel]) -> dict:
    return {"type": "json_schema", "json_schema": {"name": model.__name__, "schema": model.model_json_schema()}}


def port_open(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def test_models_list(srv: FakeOpenAIServer) -> None:
    assert [m.id for m in client(srv).models.list()] == ["fake-model"]
    assert httpx.get(srv.base_url + "/models").json()["data"][0]["owned_by"] == "fake"


def test_plain_echo_and_usage(srv: FakeOpenAIServer) -> None:
    messages = [{"role": "system", "content": "be kind"}, *USER]
    out = client(srv).chat.completions.create(model="fake-model", messages=messages)
    assert out.choices[0].message.content == "echo: hello there"
    assert out.choices[0].finish_reason == "stop"
    assert (out.usage.prompt_tokens, out.usage.completion_tokens, out.usage.total_tokens) == (4, 3, 7)
    assert srv.requests == [{"model": "fake-model", "messages": messages}]


def test_image_parts_accepted(srv: FakeOpenAIServer) -> None:
    parts = [
        {"type": "text", "text": "what is this"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
    ]
    out = client(srv).chat.completions.create(model="m", messages=[{"role": "user", "content": parts}])
    assert out.choices[0].message.content == "echo: what is this"


def test_reply_callable() -> None:
    with FakeOpenAIServer(reply=lambda body: f"{len(body['messages'])} messages") as server:
        out = client(server).chat.completions.create(model="m", messages=USER)
    assert out.choices[0].message.content == "1 messages"


def test_json_schema_instance_validates(srv: FakeOpenAIServer) -> None:
    schema = Reply.model_json_schema()
    assert "$defs" in schema  # the nested model and the enum are references
    out = client(srv).chat.completions.create(model="m", messages=USER, response_format=schema_format(Reply))
    parsed = Reply.model_validate_json(out.choices[0].message.content)
    assert parsed.mood is Mood.happy and parsed.intensity == 3 and len(parsed.alternatives) == 2


def test_sdk_parse_helper_and_json_object_schema(srv: FakeOpenAIServer) -> None:
    parsed = client(srv).chat.completions.parse(model="m", messages=USER, response_format=Reply)
    assert isinstance(parsed.choices[0].message.parsed, Reply)
    fmt = {"type": "json_object", "schema": Reply.model_json_schema()}
    out = client(srv).chat.completions.create(model="m", messages=USER, response_format=fmt)
    Reply.model_validate_json(out.choices[0].message.content)


def test_schema_instance_edge_cases() -> None:
    assert schema_instance({"const": 3}) == 3
    assert schema_instance({"type": "null"}) is None
    assert schema_instance({"type": ["integer", "null"], "maximum": -2}) == -2
    assert schema_instance({"type": "string", "maxLength": 1}) == "o"
    assert schema_instance({"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 0.1}) == 0.05
    assert schema_instance({"type": "integer", "exclusiveMaximum": 0}) == -1
    assert schema_instance({"type": "integer", "exclusiveMinimum": 2}) == 3
    assert schema_instance({"type": "number", "minimum": 1.5}) == 1.5
    assert schema_instance({"type": "string", "format": "date-time"}) == "2024-01-01T00:00:00Z"
    assert schema_instance({"allOf": [{"$ref": "#/$defs/A"}], "$defs": {"A": {"enum": ["x"]}}}) == "x"


@pytest.mark.parametrize(
    "messages",
    [
        [],
        [{"role": "wizard", "content": "hi"}],
        [{"role": "user", "content": [{"type": "video", "url": "x"}]}],
        [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:image/png;base64,@@"}}]}],
        [{"role": "user", "content": 42}],
    ],
)
def test_bad_messages_are_400(srv: FakeOpenAIServer, messages: list) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client(srv).chat.completions.create(model="m", messages=messages)
    error = info.value.body
    assert info.value.status_code == 400 and error["type"] == "invalid_request_error" and error["message"]


def test_missing_messages_and_stream_are_400(srv: FakeOpenAIServer) -> None:
    response = httpx.post(srv.base_url + "/chat/completions", json={"model": "m"})
    assert response.status_code == 400 and response.json()["error"]["param"] == "messages"
    response = httpx.post(srv.base_url + "/chat/completions", json={"model": "m", "messages": USER, "stream": True})
    assert response.status_code == 400 and "streaming not supported" in response.json()["error"]["message"]


def test_json_schema_unsupported_and_prompt_fallback() -> None:
    with FakeOpenAIServer(dialect=NO_JSON_SCHEMA) as server:
        with pytest.raises(openai.BadRequestError) as info:
            client(server).chat.completions.create(model="m", messages=USER, response_format=schema_format(Reply))
        assert info.value.body["param"] == "response_format"
        prompt = "Answer as JSON. JSON schema: " + json.dumps(Reply.model_json_schema()) + "\nNo prose."
        messages = [{"role": "system", "content": prompt}, *USER]
        out = client(server).chat.completions.create(model="m", messages=messages)
        Reply.model_validate_json(out.choices[0].message.content)
        plain = client(server).chat.completions.create(model="m", messages=USER)
        assert plain.choices[0].message.content == "echo: hello there"


def test_llama_cpp_dialect_refuses_json_schema_with_a_500_naming_response_format() -> None:
    with FakeOpenAIServer(dialect=LLAMA_CPP) as server:
        with pytest.raises(openai.InternalServerError) as info:
            client(server).chat.completions.create(model="m", messages=USER, response_format=schema_format(Reply))
        assert "response_format" in info.value.response.text and "json_schema" in info.value.response.text
        fmt = {"type": "json_object", "schema": Reply.model_json_schema()}
        out = client(server).chat.completions.create(model="m", messages=USER, response_format=fmt)
        Reply.model_validate_json(out.choices[0].message.content)


@pytest.mark.parametrize(
    ("dialect", "fmt"),
    [
        (JSON_OBJECT_ONLY, {"type": "json_object", "schema": {"type": "object"}}),
        (NO_RESPONSE_FORMAT, {"type": "json_object"}),
    ],
)
def test_dialects_refuse_what_they_lack_with_a_400(dialect: Dialect, fmt: dict) -> None:
    with FakeOpenAIServer(dialect=dialect) as server, pytest.raises(openai.BadRequestError) as info:
        client(server).chat.completions.create(model="m", messages=USER, response_format=fmt)
    assert info.value.body["param"] == "response_format" and server.faults_injected == {}


def fault_server(kind: str, **plan: object) -> FakeOpenAIServer:
    return FakeOpenAIServer(FaultPlan(rate=1.0, kinds=(kind,), **plan)).start()


def test_429_with_retry_after() -> None:
    with fault_server("429", retry_after="7") as server, pytest.raises(openai.RateLimitError) as info:
        client(server).chat.completions.create(model="m", messages=USER)
    assert info.value.status_code == 429 and info.value.response.headers["retry-after"] == "7"
    assert info.value.code == "rate_limit_exceeded"
    assert server.faults_injected == {"429": 1}
    with fault_server("429", retry_after=None) as server, pytest.raises(openai.RateLimitError) as info:
        client(server).chat.completions.create(model="m", messages=USER)
    assert "retry-after" not in info.value.response.headers


def test_500() -> None:
    with fault_server("500") as server, pytest.raises(openai.InternalServerError):
        client(server).chat.completions.create(model="m", messages=USER)


def test_slow_times_out_and_server_keeps_serving() -> None:
    with fault_server("slow", slow_seconds=2) as server:
        with pytest.raises(openai.APITimeoutError):
            client(server, timeout=0.5).chat.completions.create(model="m", messages=USER)
        server.set_faults(FaultPlan())
        assert client(server).chat.completions.create(model="m", messages=USER).choices[0].message.content


def test_slow_request_does_not_block_others_async_client() -> None:
    async def scenario(server: FakeOpenAIServer) -> list[str]:
        done: list[str] = []
        sdk = openai.AsyncOpenAI(base_url=server.base_url, api_key="test", max_retries=0, timeout=5)

        async def ask(label: str) -> None:
            await sdk.chat.completions.create(model="m", messages=USER)
            done.append(label)

        slow = asyncio.create_task(ask("slow"))
        await asyncio.sleep(0.2)
        server.set_faults(FaultPlan())
        await ask("fast")
        await slow
        await sdk.close()
        return done

    with fault_server("slow", slow_seconds=1.0) as server:
        assert asyncio.run(scenario(server)) == ["fast", "slow"]
    assert server.faults_injected == {"slow": 1}


@pytest.mark.parametrize("kind", ["truncated", "invalid_json"])
def test_broken_200_bodies_raise_json_decode_error_without_retry(kind: str) -> None:
    # The SDK does not wrap these: a raw json.JSONDecodeError (a ValueError) escapes, and it is not retried.
    with fault_server(kind) as server:
        with pytest.raises(json.JSONDecodeError):
            client(server, max_retries=3).chat.completions.create(model="m", messages=USER)
        assert len(server.requests) == 1 and server.faults_injected == {kind: 1}
        raw = httpx.post(server.base_url + "/chat/completions", json={"model": "m", "messages": USER})
    assert raw.status_code == 200 and raw.headers["content-type"] == "application/json"
    if kind == "truncated":
        assert raw.text.startswith('{"id": "chatcmpl-fake-')
    else:
        assert raw.content == b"{not json at all"


def test_non_schema_only_affects_structured_requests() -> None:
    with fault_server("non_schema") as server:
        out = client(server).chat.completions.create(model="m", messages=USER, response_format=schema_format(Reply))
        assert json.loads(out.choices[0].message.content) == {"unexpected": "shape"}
        plain = client(server).chat.completions.create(model="m", messages=USER)
        assert plain.choices[0].message.content == "echo: hello there"
    assert server.faults_injected == {"non_schema": 1}


def test_sdk_retries_recover_from_429() -> None:
    plan = FaultPlan(rate=0.5, kinds=("429",), retry_after="0.01", seed=1)
    with FakeOpenAIServer(plan) as server:
        for _ in range(4):
            client(server, max_retries=10).chat.completions.create(model="m", messages=USER)
    assert len(server.requests) == 4 + server.faults_injected["429"] and server.faults_injected["429"] > 0


def outcomes(server: FakeOpenAIServer, n: int = 20) -> list[int]:
    with httpx.Client(base_url=server.base_url) as http:
        return [http.post("/chat/completions", json={"messages": USER}).status_code for _ in range(n)]


def test_faults_are_reproducible_with_seed() -> None:
    plan = FaultPlan(rate=0.5, kinds=("429", "500"), seed=42)
    with FakeOpenAIServer(plan) as first, FakeOpenAIServer(plan) as second:
        sequence = outcomes(first)
        assert sequence == outcomes(second)
        assert {200, 429, 500} == set(sequence)
        first.set_faults(plan)  # resets the RNG
        assert outcomes(first) == sequence
        first.set_faults(FaultPlan(rate=0.5, kinds=("429", "500"), seed=7))
        assert outcomes(first) != sequence


def test_stop_closes_port_and_connection_refused() -> None:
    server = FakeOpenAIServer().start()
    port = server.port
    assert port_open(port)
    server.stop()
    server.stop()  # idempotent
    assert not port_open(port)
    with pytest.raises(openai.APIConnectionError) as info:
        client(server).models.list()
    assert not isinstance(info.value, openai.APITimeoutError)


def test_stop_does_not_wait_for_a_slow_request() -> None:
    server = fault_server("slow", slow_seconds=30)
    slow = threading.Thread(target=outcomes_or_error, args=(server,), daemon=True)
    slow.start()
    time.sleep(0.3)
    started = time.monotonic()
    server.stop()
    assert time.monotonic() - started < 5
    slow.join(timeout=5)
    assert not slow.is_alive()


def outcomes_or_error(server: FakeOpenAIServer) -> None:
    try:
        outcomes(server, 1)
    except httpx.HTTPError:
        pass


def test_free_port() -> None:
    port = free_port()
    assert 0 < port < 65536 and not port_open(port)
