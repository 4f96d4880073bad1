import asyncio
import enum
import random
import time

import pytest
from pydantic import BaseModel, Field

from stickerconv.llm import (
    ChatModel,
    ConfigError,
    LLMConfig,
    LLMFactory,
    Message,
    PermanentError,
    ReplayMissError,
    RetryBudgetExhausted,
    Settings,
    StructuredOutputError,
    TransientError,
    parse_llm_spec,
    system,
    user,
)
from stickerconv.llm.backends.openai_compat import parse_retry_after
from stickerconv.llm.policy import Limits, RateLimiter, RetryPolicy
from stickerconv.llm.store import LLMStore, Price
from stickerconv.llm.structured import (
    STRUCTURED_MODES,
    StructuredNegotiation,
    extract_json,
    parse_structured,
    with_schema_instruction,
)
from stickerconv.llm.types import ImagePart, Request

from helpers.llm_fakes import ScriptedBackend

FAST = RetryPolicy(max_attempts=4, base_delay=0.01, max_delay=0.05, total_budget=5, timeout=2)


class Verdict(BaseModel):
    inconsistent: bool
    reason: str = Field(max_length=100)


class Intent(enum.StrEnum):
    EXPRESSION = "Emotional Expression"
    NONE = "None"


class IntentAnswer(BaseModel):
    intention: Intent


def run(coro):
    return asyncio.run(coro)


def test_request_key_is_content_addressed():
    a = Request(backend="b", model="m", messages=[user("hi")], settings=Settings())
    b = Request(backend="b", model="m", messages=[user("hi")], settings=Settings())
    assert a.key() == b.key() and a.key().startswith("sha256:")
    assert a.key() != Request(backend="b", model="m", messages=[user("hi")], settings=Settings(seed=1)).key()
    assert a.key() != Request(backend="b", model="m2", messages=[user("hi")], settings=Settings()).key()
    assert a.key() != a.model_copy(update={"json_schema": {"type": "object"}}).key()
    assert a.key() == a.model_copy(update={"structured_output": "prompt"}).key()  # how it is asked, not what


def test_penalties_unset_keep_the_keys_of_earlier_caches():
    """A key written before the penalties existed (this literal) still finds its answer; a set penalty is keyed."""
    settings = Settings(temperature=0.5, max_tokens=200, seed=3)
    request = Request(backend="local", model="SmolLM2", messages=[user("I failed my exam.")], settings=settings)
    assert request.key() == "sha256:cea16f4ca54372d6180e3abb122ceeb84e55d61b59abfd0f280d4abc50c87e33"
    keys = {request.key()}
    for penalty in ("frequency_penalty", "presence_penalty", "repeat_penalty"):
        keys.add(request.model_copy(update={"settings": settings.model_copy(update={penalty: 0.5})}).key())
    assert len(keys) == 4


def test_penalties_set_are_sent_to_an_openai_compatible_server():
    from stickerconv.llm.backends.openai_compat import OpenAICompatBackend

    backend = OpenAICompatBackend("m", base_url="http://127.0.0.1:9/v1", api_key="k")
    plain = Request(backend="openai", model="m", messages=[user("hi")], settings=Settings())
    assert not {"frequency_penalty", "presence_penalty", "extra_body"} & set(backend._kwargs(plain.messages, plain))
    settings = Settings(frequency_penalty=0.3, presence_penalty=0.2, repeat_penalty=1.15)
    kwargs = backend._kwargs(plain.messages, plain.model_copy(update={"settings": settings}))
    assert (kwargs["frequency_penalty"], kwargs["presence_penalty"]) == (0.3, 0.2)
    assert kwargs["extra_body"] == {"repeat_penalty": 1.15}  # llama.cpp's, outside OpenAI's parameters


def test_cache_then_replay_is_free_and_identical(tmp_path):
    store_path = tmp_path / "llm.sqlite"
    backend = ScriptedBackend(default=lambda r: f"answer to {r.messages[-1].text}")
    model = ChatModel(backend, store=LLMStore(store_path), retry=FAST)
    first = [run(model.complete([user(f"q{i}")])) for i in range(3)]
    assert len(backend.requests) == 3 and not any(r.cached for r in first)

    replay_backend = ScriptedBackend(default="must not be called")
    replay = ChatModel(replay_backend, store=LLMStore(store_path), cache="replay", retry=FAST)
    again = [run(replay.complete([user(f"q{i}")])) for i in range(3)]
    assert replay_backend.requests == []
    assert [r.text for r in again] == [r.text for r in first] and all(r.cached for r in again)
    with pytest.raises(ReplayMissError, match="no cached answer.*'q9'"):
        run(replay.complete([user("q9")]))


def test_refresh_and_off_modes(tmp_path):
    backend = ScriptedBackend(replies=["one", "two", "three"])
    store = LLMStore(tmp_path / "s.sqlite")
    assert run(ChatModel(backend, store=store).complete([user("x")])).text == "one"
    assert run(ChatModel(backend, store=store).complete([user("x")])).text == "one"  # cached
    assert run(ChatModel(backend, store=store, cache="refresh").complete([user("x")])).text == "two"
    assert run(ChatModel(backend, store=store).complete([user("x")])).text == "two"
    assert run(ChatModel(backend, store=store, cache="off").complete([user("x")])).text == "three"
    with pytest.raises(ValueError, match="unknown cache mode"):
        ChatModel(backend, cache="sometimes")


def test_structured_output_validates_and_retries_with_resampling():
    backend = ScriptedBackend(replies=['{"inconsistent": "maybe"}', 'Sure! {"inconsistent": true, "reason": "sad"}'])
    result = run(ChatModel(backend, retry=FAST).complete([user("x")], Verdict))
    assert result.parsed == Verdict(inconsistent=True, reason="sad") and result.attempts == 2
    assert backend.requests[0].json_schema["title"] == "Verdict"
    assert backend.requests[1].settings.temperature >= 0.3 and backend.requests[1].settings.seed == 1


def test_resampling_seed_counts_invalid_answers_only():
    """A server fault before an invalid answer must not change the resampled request (kill/fault runs equal
    undisturbed ones)."""
    replies = [TransientError("503"), '{"inconsistent": "maybe"}', TransientError("429"), '{"inconsistent": false}']
    backend = ScriptedBackend(replies=[*replies, '{"inconsistent": true, "reason": "ok"}'])
    policy = FAST.model_copy(update={"max_attempts": 5})
    result = run(ChatModel(backend, retry=policy, settings=Settings(seed=7)).complete([user("x")], Verdict))
    assert result.parsed.inconsistent and result.attempts == 5
    assert [r.settings.seed for r in backend.requests] == [7, 7, 8, 8, 9]


def test_negotiation_moves_down_the_order_and_confirms_once():
    negotiation = StructuredNegotiation("srv")
    assert negotiation.mode() == "json_schema" and negotiation.confirmed is None
    assert negotiation.rejected("json_schema", "HTTP 500")
    assert negotiation.rejected("json_schema", "HTTP 500")  # a concurrent call's late refusal: still move on
    negotiation.accepted("json_schema")  # a late answer to a refused mode confirms nothing
    assert negotiation.mode() == "json_object_schema" and negotiation.confirmed is None
    negotiation.accepted("json_object_schema")
    assert negotiation.confirmed == "json_object_schema" and negotiation.mode() == "json_object_schema"
    assert not negotiation.rejected("json_object_schema", "HTTP 400")  # confirmed: the refusal is the request's
    assert negotiation.rejected("json_object", "HTTP 400")  # an older call's probe: recorded, the choice stays
    assert negotiation.mode() == "json_object_schema"
    assert negotiation.mode("prompt") == "prompt" and not negotiation.rejected("json_schema", "x", "json_schema")
    last = StructuredNegotiation("srv")
    for mode in STRUCTURED_MODES[:-1]:
        assert last.rejected(mode, "no")
    assert last.mode() == "prompt" and not last.rejected("prompt", "no")  # the last resort is never ruled out


def test_structured_output_gives_up_with_typed_error():
    backend = ScriptedBackend(default='{"unexpected": "shape"}')
    with pytest.raises(RetryBudgetExhausted) as info:
        run(ChatModel(backend, retry=FAST).complete([user("x")], IntentAnswer))
    assert isinstance(info.value.last, StructuredOutputError) and info.value.attempts == 4


def test_raw_json_schema():
    schema = {"type": "object", "properties": {"n": {"type": "integer", "maximum": 3}}, "required": ["n"]}
    assert parse_structured('{"n": 2}', schema) == {"n": 2}
    with pytest.raises(StructuredOutputError, match="n: 7 is greater than the maximum of 3"):
        parse_structured('{"n": 7}', schema)


def test_extract_json_tolerates_fences_and_chatter():
    assert extract_json('```json\n{"a": {"b": 1}}\n```') == {"a": {"b": 1}}
    assert extract_json('Here: {oops} then {"ok": true}') == {"ok": True}
    with pytest.raises(StructuredOutputError, match="no JSON object"):
        extract_json("no json here")


def test_schema_instruction_goes_into_the_system_prompt():
    msgs = with_schema_instruction([system("Be kind."), user("hi")], {"type": "object"})
    assert msgs[0].text.startswith("Be kind.") and 'JSON schema: {"type":"object"}' in msgs[0].text
    assert with_schema_instruction([user("hi")], {"type": "object"})[0].role == "system"


def test_transient_errors_are_retried_and_permanent_ones_are_not():
    backend = ScriptedBackend(replies=[TransientError("429"), TransientError("500"), "fine"])
    result = run(ChatModel(backend, retry=FAST).complete([user("x")]))
    assert result.text == "fine" and result.attempts == 3
    backend = ScriptedBackend(replies=[PermanentError("401 bad key"), "never"])
    with pytest.raises(PermanentError, match="bad key"):
        run(ChatModel(backend, retry=FAST).complete([user("x")]))
    assert len(backend.requests) == 1


def test_retry_after_is_honoured_within_the_budget():
    policy = RetryPolicy(max_attempts=3, base_delay=0.0, max_delay=1.0, total_budget=5, timeout=2)
    backend = ScriptedBackend(replies=[TransientError("429", retry_after=0.3), "ok"])
    start = time.monotonic()
    assert run(ChatModel(backend, retry=policy).complete([user("x")])).text == "ok"
    assert time.monotonic() - start >= 0.3
    rng = random.Random(0)
    assert policy.delay(1, 0.3, rng) == 0.3 and policy.delay(1, 99.0, rng) == 1.0  # capped by max_delay
    assert parse_retry_after("2") == 2.0 and parse_retry_after("0.5") == 0.5 and parse_retry_after("soon") is None
    assert 0 <= parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") <= 0.001  # a date in the past


def test_total_budget_bounds_the_time_spent():
    policy = RetryPolicy(max_attempts=100, base_delay=0.2, max_delay=0.2, total_budget=0.5, timeout=1)
    backend = ScriptedBackend(default=TransientError("always down"))
    start = time.monotonic()
    with pytest.raises(RetryBudgetExhausted, match="gave up after"):
        run(ChatModel(backend, retry=policy).complete([user("x")]))
    assert time.monotonic() - start < 1.5


def test_slow_backend_times_out_and_is_retried():
    policy = RetryPolicy(max_attempts=2, base_delay=0.0, total_budget=10, timeout=0.2)
    backend = ScriptedBackend(delay=10)
    with pytest.raises(RetryBudgetExhausted) as info:
        run(ChatModel(backend, retry=policy).complete([user("x")]))
    assert info.value.attempts == 2 and len(backend.requests) == 2


def test_ledger_counts_tokens_cost_and_roles(tmp_path):
    store = LLMStore(tmp_path / "l.sqlite")
    backend = ScriptedBackend(default="two words")
    backend.name = "openai"
    prices = {"scripted-1": Price(input_per_mtok=1.0, output_per_mtok=2.0)}  # USD per million tokens
    a = ChatModel(backend, store=store, role="judge", prices=prices)
    run(a.complete([user("x")]))
    run(a.complete([user("x")]))  # cached: free
    run(ChatModel(backend, store=store, role="user_agent").complete([user("y")]))
    rows = {r.role: r for r in store.ledger()}
    judge = rows["judge"]
    assert (judge.calls, judge.cached, judge.prompt_tokens, judge.completion_tokens) == (2, 1, 10, 2)
    assert judge.cost_usd == pytest.approx((10 * 1.0 + 2 * 2.0) / 1e6)
    assert rows["user_agent"].cost_usd is None  # no price for this model -> reported as unpriced
    assert store.calls("role = ?", ("judge",))[0]["key"].startswith("sha256:")
    assert store.migrations()[:4] == ["001_responses", "002_calls", "003_calls_index", "004_calls_structured_mode"]


def test_rate_limiter_enforces_concurrency_and_rpm():
    now = [0.0]
    limiter = RateLimiter(Limits(concurrency=2, rpm=3), clock=lambda: now[0])

    async def scenario():
        for _ in range(3):
            await limiter.acquire(10)
            limiter.release(10, None)
        assert limiter._wait_needed(10) == pytest.approx(60.0)
        now[0] = 61.0
        assert limiter._wait_needed(10) == 0.0

    run(scenario())
    backend = ScriptedBackend(delay=0.1)
    model = ChatModel(backend, cache="off", limiter=RateLimiter(Limits(concurrency=2)))

    async def burst():
        await asyncio.gather(*(model.complete([user(str(i))]) for i in range(6)))

    start = time.monotonic()
    run(burst())
    assert time.monotonic() - start >= 0.3  # 6 calls of 0.1 s, 2 at a time


def test_images_need_a_vision_backend(tmp_path):
    from PIL import Image

    Image.new("RGB", (8, 8)).save(tmp_path / "s.png")
    part = ImagePart.from_file(tmp_path / "s.png")
    assert part.image_url.url.startswith("data:image/png;base64,")
    with pytest.raises(Exception, match="does not accept images"):
        run(ChatModel(ScriptedBackend()).complete([user("look", [part])]))
    with pytest.raises(ValueError, match="only user messages may carry images"):
        Message(role="assistant", content=[part])


def test_llm_spec_and_config_file(tmp_path):
    assert parse_llm_spec("local") == ("local", None)
    assert parse_llm_spec("openai:llama3:8b") == ("openai", "llama3:8b")
    with pytest.raises(ConfigError, match="unknown LLM 'gpt-4'"):
        parse_llm_spec("gpt-4")
    path = tmp_path / "llm.toml"
    path.write_text(
        'llm = "local"\n[limits]\nconcurrency = 3\n[prices."gpt-4o-mini"]\ninput_per_mtok = 0.15\n'
        "output_per_mtok = 0.6\n[roles.judge]\ntemperature = 0.7\nmax_tokens = 50\nstructured_output = 'prompt'\n"
    )
    cfg = LLMConfig.load(path)
    assert cfg.limits.concurrency == 3 and cfg.prices["gpt-4o-mini"] == Price(input_per_mtok=0.15, output_per_mtok=0.6)
    factory = LLMFactory(cfg)
    judge = factory.chat_model("judge")
    assert (judge.settings.temperature, judge.settings.max_tokens, judge.role) == (0.7, 50, "judge")
    assert (judge.structured_output, factory.chat_model("manager").structured_output) == ("prompt", "auto")
    assert factory.chat_model("manager").backend is judge.backend  # one local model for all roles
    path.write_text("[roles.judge]\ntemprature = 0.7\n")
    with pytest.raises(ConfigError, match=r"roles.judge.temprature: Extra inputs are not permitted"):
        LLMConfig.load(path)
    path.write_text('structured_output = "grammar"\n')
    with pytest.raises(ConfigError, match=r"structured_output: Input should be 'auto', 'json_schema'"):
        LLMConfig.load(path)
