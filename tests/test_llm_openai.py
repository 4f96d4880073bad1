"""The OpenAI-compatible backend against a real HTTP server on localhost that injects faults."""

import asyncio
import enum
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from pydantic import BaseModel, Field

from stickerconv.agent4sc.runner import structured_modes
from stickerconv.llm import (
    ChatModel,
    LLMConfig,
    LLMFactory,
    PermanentError,
    RetryBudgetExhausted,
    system,
    user,
)
from stickerconv.llm.backends.openai_compat import OpenAICompatBackend
from stickerconv.llm.config import RoleConfig
from stickerconv.llm.policy import Limits, RateLimiter, RetryPolicy
from stickerconv.llm.store import LLMStore
from stickerconv.llm.structured import STRUCTURED_MODES

from helpers.fake_openai_server import (
    JSON_OBJECT_ONLY,
    LLAMA_CPP,
    NO_JSON_SCHEMA,
    NO_RESPONSE_FORMAT,
    OPENAI,
    FakeOpenAIServer,
    FaultPlan,
    format_kind,
)
from helpers.fault_proxy import PROXY_FAULTS, FaultProxy, ProxyFaults

POLICY = RetryPolicy(max_attempts=8, base_delay=0.05, max_delay=1.5, total_budget=30, timeout=1.0)


class Intent(enum.StrEnum):
    EXPRESSION = "Emotional Expression"
    EMPATHY = "Enhancing Empathy"
    NONE = "None"


class Plan(BaseModel):
    intention: Intent
    query: str = Field(min_length=1)
    idx: int = Field(ge=0, le=9)
    inconsistent: bool


@pytest.fixture
def server():
    with FakeOpenAIServer() as srv:
        yield srv


def _model(srv, store=None, cache="use", concurrency=8, policy=POLICY):
    backend = OpenAICompatBackend("fake-model", base_url=srv.base_url, api_key="test")
    return ChatModel(
        backend, store=store, cache=cache, retry=policy, limiter=RateLimiter(Limits(concurrency=concurrency))
    )


def test_plain_and_structured_calls(server):
    model = _model(server)
    result = model.complete_sync([system("be brief"), user("hello there")])
    assert result.text == "echo: hello there" and result.usage.prompt_tokens > 0
    plan = model.complete_sync([user("plan a sticker")], Plan).parsed
    assert isinstance(plan, Plan)
    sent = server.requests[-1]
    assert sent["response_format"]["type"] == "json_schema" and sent["response_format"]["json_schema"]["name"] == "Plan"


def test_batch_of_50_structured_calls_under_30_percent_faults(tmp_path):
    """Every call completes correctly or fails with a typed error after the retry budget; none hang."""
    faults = FaultPlan(rate=0.3, retry_after="1", slow_seconds=3.0, seed=42)
    with FakeOpenAIServer(faults=faults) as srv:
        model = _model(srv, store=LLMStore(tmp_path / "llm.sqlite"), cache="off")

        async def batch():
            calls = [model.complete([user(f"message {i}")], Plan) for i in range(50)]
            return await asyncio.wait_for(asyncio.gather(*calls, return_exceptions=True), timeout=120)

        results = asyncio.run(batch())  # wait_for bounds it: a hang fails instead of blocking
    failures = [r for r in results if isinstance(r, BaseException)]
    assert all(isinstance(f, RetryBudgetExhausted) for f in failures), failures
    assert all(isinstance(r.parsed, Plan) for r in results if not isinstance(r, BaseException))
    assert len(failures) <= 2  # with 8 attempts at 30 % faults, a failure is very unlikely
    assert set(srv.faults_injected) >= {"429", "500", "slow", "truncated", "invalid_json", "non_schema"}
    assert len(srv.requests) > 50  # faults were retried


def test_faults_of_the_proxy_are_retried_and_garbage_bytes_do_not_crash():
    """Garbage bytes in a 200 used to escape as a UnicodeDecodeError (json reads them as UTF-16) and stop a run."""
    policy = RetryPolicy(max_attempts=2, base_delay=0.01, max_delay=0.05, total_budget=10, timeout=2)
    with FakeOpenAIServer(dialect=LLAMA_CPP) as srv, FaultProxy(srv.base_url, ProxyFaults(1.0, ("garbage",))) as proxy:
        backend = OpenAICompatBackend("fake-model", base_url=proxy.base_url, api_key="test")
        with pytest.raises(RetryBudgetExhausted, match="not valid JSON"):
            ChatModel(backend, cache="off", retry=policy).complete_sync([user("x")])
    faults = ProxyFaults(rate=0.5, stall_seconds=0.05, seed=1)
    with FakeOpenAIServer(dialect=LLAMA_CPP) as srv, FaultProxy(srv.base_url, faults) as proxy:
        backend = OpenAICompatBackend("fake-model", base_url=proxy.base_url, api_key="test")
        model = ChatModel(backend, cache="off", retry=POLICY)
        results = [model.complete_sync([user(f"q{i}")], Plan) for i in range(20)]
    assert all(isinstance(r.parsed, Plan) and r.structured_mode == "json_object_schema" for r in results)
    assert set(proxy.injected) == set(PROXY_FAULTS)  # none of them was taken for a refusal of the mode


def test_retry_budget_ends_in_typed_error_when_the_server_always_fails():
    with FakeOpenAIServer(faults=FaultPlan(rate=1.0, kinds=("500",))) as srv:
        policy = RetryPolicy(max_attempts=3, base_delay=0.01, max_delay=0.05, total_budget=10, timeout=1)
        with pytest.raises(RetryBudgetExhausted, match="gave up after 3 attempt"):
            _model(srv, policy=policy).complete_sync([user("x")])
        assert len(srv.requests) == 3


def test_retry_after_header_is_honoured():
    with FakeOpenAIServer(faults=FaultPlan(rate=1.0, kinds=("429",), retry_after="1")) as srv:
        model = _model(srv, policy=RetryPolicy(max_attempts=2, base_delay=0.0, max_delay=5, timeout=2))

        async def go():
            task = asyncio.create_task(model.complete([user("x")]))
            await asyncio.sleep(0.3)
            srv.set_faults(FaultPlan())  # the second attempt succeeds
            return await task

        start = time.monotonic()
        assert asyncio.run(go()).text == "echo: x"
        assert time.monotonic() - start >= 1.0


def test_replay_makes_zero_backend_calls(tmp_path, server):
    store = tmp_path / "llm.sqlite"
    first = [_model(server, LLMStore(store)).complete_sync([user(f"q{i}")], Plan) for i in range(5)]
    calls = len(server.requests)
    again = [_model(server, LLMStore(store), cache="replay").complete_sync([user(f"q{i}")], Plan) for i in range(5)]
    assert len(server.requests) == calls
    assert [r.parsed for r in again] == [r.parsed for r in first] and all(r.cached for r in again)


@pytest.mark.parametrize(
    ("dialect", "mode", "sent"),
    [
        (OPENAI, "json_schema", "json_schema"),
        (LLAMA_CPP, "json_object_schema", "json_object_schema"),
        (NO_JSON_SCHEMA, "json_object_schema", "json_object_schema"),
        (JSON_OBJECT_ONLY, "json_object", "json_object"),
        (NO_RESPONSE_FORMAT, "prompt", None),
    ],
)
def test_structured_output_negotiates_the_mode_the_server_takes(tmp_path, dialect, mode, sent):
    with FakeOpenAIServer(dialect=dialect) as srv:
        store = LLMStore(tmp_path / "llm.sqlite")
        model = _model(srv, store=store)
        first = model.complete_sync([system("plan"), user("x")], Plan)
        probes = len(srv.requests)
        assert isinstance(first.parsed, Plan) and first.attempts == 1  # refusals burn no retry attempt
        assert first.structured_mode == mode and model.backend.structured.confirmed == mode
        assert probes == 1 + STRUCTURED_MODES.index(mode)
        second = model.complete_sync([system("plan"), user("y")], Plan)
        assert isinstance(second.parsed, Plan) and len(srv.requests) == probes + 1  # learnt: no more refusals
        last = srv.requests[-1]
        assert format_kind(last) == sent
        prompt = last["messages"][0]["content"]
        assert ("JSON schema:" in prompt) == (mode in ("json_object", "prompt"))  # else the server has the schema
        if mode == "json_object_schema":  # the schema as llama.cpp's grammar builder handles it: refs inlined
            assert "$defs" not in json.dumps(last["response_format"]["schema"])
    assert [c["structured_mode"] for c in store.calls()] == [mode, mode]
    assert "004_calls_structured_mode" in store.migrations()
    (row,) = store.ledger()
    assert (row.backend, row.structured_output) == ("openai", mode)


def test_a_plain_500_is_retried_and_teaches_nothing():
    with FakeOpenAIServer(faults=FaultPlan(rate=1.0, kinds=("500",)), dialect=LLAMA_CPP) as srv:
        policy = RetryPolicy(max_attempts=3, base_delay=0.01, max_delay=0.05, total_budget=10, timeout=1)
        model = _model(srv, policy=policy)
        with pytest.raises(RetryBudgetExhausted, match="server error 500"):
            model.complete_sync([user("x")])  # no schema: a 500 can only be a server failure
        assert len(srv.requests) == 3
    with FakeOpenAIServer(faults=FaultPlan(rate=1.0, kinds=("500",))) as srv:
        model = _model(srv, policy=policy)
        with pytest.raises(RetryBudgetExhausted, match="server error 500"):
            model.complete_sync([user("x")], Plan)
        assert [format_kind(r) for r in srv.requests] == ["json_schema"] * 3  # retried in the same mode
        assert model.backend.structured.mode() == "json_schema"  # not mistaken for a refusal
        srv.set_faults(FaultPlan())
        assert model.complete_sync([user("x")], Plan).structured_mode == "json_schema"


def test_concurrent_first_calls_probe_and_agree():
    with FakeOpenAIServer(dialect=LLAMA_CPP) as srv:
        model = _model(srv, cache="off")

        async def batch():
            return await asyncio.gather(*(model.complete([user(f"q{i}")], Plan) for i in range(8)))

        results = asyncio.run(batch())
        assert {r.structured_mode for r in results} == {"json_object_schema"}
        assert all(r.attempts == 1 for r in results)
        refused = sum(format_kind(r) == "json_schema" for r in srv.requests)
        assert 1 <= refused <= 8 and len(srv.requests) == 8 + refused
        model.complete_sync([user("later")], Plan)
        assert format_kind(srv.requests[-1]) == "json_object_schema" and len(srv.requests) == 9 + refused


def test_a_refusal_of_the_confirmed_mode_reaches_the_caller():
    with FakeOpenAIServer() as srv:
        model = _model(srv)
        assert model.complete_sync([user("x")], Plan).structured_mode == "json_schema"
        srv.dialect = LLAMA_CPP  # the same server now refuses what it took before: about this request, not the server
        with pytest.raises(PermanentError, match="worked for earlier calls"):
            model.complete_sync([user("y")], Plan)
        assert model.backend.structured.confirmed == "json_schema"


def test_pinned_modes_per_config_and_role(tmp_path):
    with FakeOpenAIServer(dialect=LLAMA_CPP) as srv:
        config = LLMConfig(
            llm="openai:fake-model",
            base_url=srv.base_url,
            store=tmp_path / "s.sqlite",
            structured_output="json_object",
            roles={"judge": RoleConfig(structured_output="prompt"), "agent": RoleConfig(structured_output="auto")},
        )
        factory = LLMFactory(config)
        assert factory.chat_model("default").complete_sync([user("a")], Plan).structured_mode == "json_object"
        assert format_kind(srv.requests[-1]) == "json_object" and "JSON schema:" in json.dumps(srv.requests[-1])
        assert factory.chat_model("judge").complete_sync([user("b")], Plan).structured_mode == "prompt"
        assert "response_format" not in srv.requests[-1]
        assert factory.chat_model("agent").complete_sync([user("c")], Plan).structured_mode == "json_object_schema"
        assert factory.chat_model("agent").backend is factory.chat_model("judge").backend  # one server, one backend
        pinned = LLMFactory(config.model_copy(update={"structured_output": "json_schema", "roles": {}}))
        before = len(srv.requests)
        with pytest.raises(PermanentError, match="pinned by structured_output"):
            pinned.chat_model().complete_sync([user("d")], Plan)
        assert len(srv.requests) == before + 1  # a refusal of a pinned mode is final: not retried, no fallback
    rows = {r.role: r.structured_output for r in factory.store.ledger()}
    assert rows == {"default": "json_object", "judge": "prompt", "agent": "json_object_schema"}
    assert structured_modes([r.__dict__ for r in factory.store.ledger()]) == {
        "openai:fake-model": "json_object,json_object_schema,prompt"
    }


def test_cached_answers_record_no_mode(tmp_path):
    with FakeOpenAIServer(dialect=LLAMA_CPP) as srv:
        store = LLMStore(tmp_path / "llm.sqlite")
        _model(srv, store=store).complete_sync([user("x")], Plan)
        again = _model(srv, store=LLMStore(tmp_path / "llm.sqlite"), cache="replay").complete_sync([user("x")], Plan)
    assert again.cached and again.structured_mode is None
    assert [c["structured_mode"] for c in store.calls()] == ["json_object_schema", None]


def test_bad_request_is_permanent(server):
    backend = OpenAICompatBackend("fake-model", base_url=server.base_url, api_key="t")
    with pytest.raises(PermanentError, match="answered 400"):
        asyncio.run(backend._send({"model": "fake-model", "messages": []}, 2))


def test_factory_selects_openai_from_env(monkeypatch, server, tmp_path):
    monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
    monkeypatch.setenv("OPENAI_API_KEY", "test")
    factory = LLMFactory(LLMConfig(store=tmp_path / "s.sqlite"), llm="openai:fake-model")
    result = factory.chat_model("judge").complete_sync([user("hi")])
    assert result.text == "echo: hi" and result.backend == "openai" and result.cost_usd is None
    assert factory.store.ledger()[0].role == "judge"


def test_missing_key_for_openai_is_explained(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    from stickerconv.llm import ConfigError

    with pytest.raises(ConfigError, match="OPENAI_API_KEY is not set"):
        OpenAICompatBackend("gpt-4o-mini")


def test_cli_chat_against_an_openai_compatible_server(server, tmp_path):
    script = Path(sys.executable).parent / "stickerconv"
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENAI_")}
    args = [
        str(script),
        "llm",
        "chat",
        "hello",
        "--llm",
        "openai:fake-model",
        "--base-url",
        server.base_url,
        "--store",
        str(tmp_path / "s.sqlite"),
    ]
    result = subprocess.run(args, capture_output=True, text=True, timeout=120, env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "echo: hello" and "openai:fake-model" in result.stderr


def test_cli_chat_shows_the_negotiated_mode_and_the_ledger_keeps_it(tmp_path):
    script = Path(sys.executable).parent / "stickerconv"
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENAI_")}
    schema = tmp_path / "plan.json"
    schema.write_text(json.dumps(Plan.model_json_schema()))
    store = tmp_path / "s.sqlite"
    with FakeOpenAIServer(dialect=LLAMA_CPP) as srv:
        chat = [str(script), "llm", "chat", "plan", "--llm", "openai:fake-model", "--base-url", srv.base_url]
        chat += ["--store", str(store), "--json-schema", str(schema)]
        result = subprocess.run(chat, capture_output=True, text=True, timeout=120, env=env)
        assert result.returncode == 0, result.stderr
        assert "structured output: json_object_schema" in result.stderr
        pinned = subprocess.run(
            [*chat, "--structured-output", "json_schema", "--cache", "off"],
            capture_output=True,
            text=True,
            timeout=120,
            env=env,
        )
        assert pinned.returncode == 2 and "pinned by structured_output" in pinned.stderr
    ledger = subprocess.run([str(script), "llm", "ledger", str(store), "--json"], capture_output=True, text=True)
    rows = json.loads(ledger.stdout)
    assert [(r["backend"], r["structured_output"]) for r in rows] == [("openai", "json_object_schema")]
