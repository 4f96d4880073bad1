"""The OpenAI-compatible backend against a real HTTP server on localhost that injects faults."""

import asyncio
import enum
import time

import pytest
from pydantic import BaseModel, Field

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
from stickerconv.llm.policy import Limits, RateLimiter, RetryPolicy
from stickerconv.llm.store import LLMStore

from fake_openai_server import FakeOpenAIServer, FaultPlan

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


def test_fallback_to_schema_in_prompt_when_json_schema_is_unsupported():
    with FakeOpenAIServer(json_schema_supported=False) as srv:
        model = _model(srv)
        assert isinstance(model.complete_sync([user("x")], Plan).parsed, Plan)
        assert isinstance(model.complete_sync([user("y")], Plan).parsed, Plan)
        assert model.backend.json_schema_supported is False
        assert "response_format" not in srv.requests[-1]  # learnt: no more rejected attempts
        assert "JSON schema:" in srv.requests[-1]["messages"][0]["content"]


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
    import subprocess
    import sys
    from pathlib import Path

    script = Path(sys.executable).parent / "stickerconv"
    env = {k: v for k, v in __import__("os").environ.items() if not k.startswith("OPENAI_")}
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
