"""Cached prompt tokens: read from an OpenAI-style server's usage and from llama.cpp's evaluated tokens, kept in
the ledger (a store of the previous schema still opens), priced at the model's cached price, and shown in the
ledger command and in each run's summary.json."""

import asyncio
import json
import sqlite3

import pytest
from typer.testing import CliRunner

from stickerconv.agent4sc.runner import run_generation
from stickerconv.cli import app
from stickerconv.llm import LLMConfig, LLMFactory, Price, system, user
from stickerconv.llm.store import LLMStore, ledger_total
from stickerconv.llm.types import Usage
from stickerconv.runfiles import SUMMARY

from helpers.agent4sc import PERSONAS
from helpers.fake_openai_server import FakeOpenAIServer, dialogue_reply

PRICE = Price(input_per_mtok=2.0, output_per_mtok=8.0, cached_input_per_mtok=0.5)
INSTRUCTIONS = "You are a kind listener. Answer in one short sentence. " * 4


def _factory(server: FakeOpenAIServer, store) -> LLMFactory:
    prices = {"fake-model": PRICE}
    return LLMFactory(LLMConfig(llm="openai:fake-model", base_url=server.base_url, store=store, prices=prices))


def test_price_of_cached_tokens_defaults_to_the_input_price():
    usage = Usage(prompt_tokens=1000, cached_prompt_tokens=600, completion_tokens=100)
    assert usage.uncached_prompt_tokens == 400
    assert PRICE.cost(usage) == pytest.approx((400 * 2.0 + 600 * 0.5 + 100 * 8.0) / 1e6)
    undiscounted = Price(input_per_mtok=2.0, output_per_mtok=8.0)
    assert undiscounted.cost(usage) == pytest.approx((1000 * 2.0 + 100 * 8.0) / 1e6)


def test_server_reported_cached_tokens_reach_the_result_ledger_and_cost(tmp_path):
    with FakeOpenAIServer(prefix_cache=True) as server:
        model = _factory(server, tmp_path / "llm.sqlite").chat_model("judge")
        first = model.complete_sync([system(INSTRUCTIONS), user("I failed my exam.")])
        second = model.complete_sync([system(INSTRUCTIONS), user("I lost my keys.")])
        model.complete_sync([system(INSTRUCTIONS), user("I lost my keys.")])  # answered by our own cache
    assert first.usage.cached_prompt_tokens == 0
    shared = len(INSTRUCTIONS.split()) + 1  # the instructions and "I"
    assert second.usage.cached_prompt_tokens == shared and second.usage.uncached_prompt_tokens == 3
    assert second.cost_usd == pytest.approx(PRICE.cost(second.usage))
    assert second.cost_usd < Price(input_per_mtok=2.0, output_per_mtok=8.0).cost(second.usage)
    (row,) = model.store.ledger()
    assert (row.calls, row.cached, row.cached_prompt_tokens) == (3, 1, shared)
    assert row.prompt_tokens == first.usage.prompt_tokens + second.usage.prompt_tokens
    assert row.uncached_prompt_tokens == row.prompt_tokens - shared
    assert row.cost_usd == pytest.approx(first.cost_usd + second.cost_usd)
    assert [c["cached_prompt_tokens"] for c in model.store.calls()] == [0, shared, 0]


def test_a_server_that_reports_no_cached_tokens_reads_as_none_cached(tmp_path):
    with FakeOpenAIServer() as server:
        model = _factory(server, tmp_path / "llm.sqlite").chat_model()
        model.complete_sync([system(INSTRUCTIONS), user("a")])
        result = model.complete_sync([system(INSTRUCTIONS), user("b")])
    assert result.usage.cached_prompt_tokens == 0 and result.cost_usd == pytest.approx(PRICE.cost(result.usage))


OLD_SCHEMA = [  # the store as migrations 001-004 left it, before cached prompt tokens were recorded
    "CREATE TABLE _migrations (name TEXT PRIMARY KEY, applied_at TEXT)",
    """CREATE TABLE responses (key TEXT PRIMARY KEY, backend TEXT NOT NULL, model TEXT NOT NULL,
       request TEXT NOT NULL, text TEXT NOT NULL, prompt_tokens INTEGER NOT NULL, completion_tokens INTEGER NOT NULL,
       finish_reason TEXT, created_at TEXT NOT NULL)""",
    """CREATE TABLE calls (id INTEGER PRIMARY KEY AUTOINCREMENT, ts TEXT NOT NULL, role TEXT NOT NULL,
       backend TEXT NOT NULL, model TEXT NOT NULL, key TEXT NOT NULL, prompt_tokens INTEGER NOT NULL,
       completion_tokens INTEGER NOT NULL, cost_usd REAL, latency_s REAL NOT NULL, cached INTEGER NOT NULL,
       attempts INTEGER NOT NULL, error TEXT)""",
    "CREATE INDEX calls_model_role ON calls (model, role)",
    "ALTER TABLE calls ADD COLUMN structured_mode TEXT",
]


def test_a_store_of_the_previous_schema_opens_and_reads_its_calls_as_uncached(tmp_path):
    path = tmp_path / "old.sqlite"
    db = sqlite3.connect(path)
    for sql in OLD_SCHEMA:
        db.execute(sql)
    names = ["001_responses", "002_calls", "003_calls_index", "004_calls_structured_mode"]
    db.executemany("INSERT INTO _migrations VALUES (?, '2025-01-01')", [(n,) for n in names])
    db.execute(
        "INSERT INTO calls (ts, role, backend, model, key, prompt_tokens, completion_tokens, cost_usd, latency_s, "
        "cached, attempts) VALUES ('2025-01-01', 'judge', 'openai', 'm', 'sha256:x', 100, 10, 0.001, 0.5, 0, 1)"
    )
    db.commit()
    db.close()
    store = LLMStore(path)
    assert store.migrations() == [*names, "005_calls_cached_prompt_tokens"]
    store.record(
        role="judge",
        backend="openai",
        model="m",
        key="sha256:y",
        usage=Usage(prompt_tokens=50, completion_tokens=5, cached_prompt_tokens=40),
        cost_usd=0.0005,
        latency_s=0.1,
        cached=False,
        attempts=1,
    )
    (row,) = store.ledger()
    assert (row.calls, row.prompt_tokens, row.cached_prompt_tokens, row.uncached_prompt_tokens) == (2, 150, 40, 110)
    assert row.cost_usd == pytest.approx(0.0015)
    assert [c["cached_prompt_tokens"] for c in store.calls()] == [None, 40]  # the old row: not recorded


def test_ledger_totals_add_up_and_an_unpriced_row_makes_the_cost_unknown():
    rows = [
        {"calls": 2, "cached": 1, "errors": 0, "prompt_tokens": 10, "cached_prompt_tokens": 4},
        {"calls": 3, "cached": 0, "errors": 1, "prompt_tokens": 20, "cached_prompt_tokens": 0},
    ]
    for row, cost in zip(rows, (0.5, 0.25), strict=True):
        row |= {"uncached_prompt_tokens": row["prompt_tokens"] - row["cached_prompt_tokens"], "completion_tokens": 1}
        row["cost_usd"] = cost
    total = ledger_total(rows)
    assert (total["calls"], total["cached_prompt_tokens"], total["uncached_prompt_tokens"]) == (5, 4, 26)
    assert total["cost_usd"] == 0.75
    rows[1]["cost_usd"] = None
    assert ledger_total(rows)["cost_usd"] is None and ledger_total([])["cost_usd"] == 0.0


def test_a_run_summary_carries_cached_tokens_and_the_cost_at_the_cached_price(tmp_path, small_index):
    out = tmp_path / "run"
    with FakeOpenAIServer(reply=dialogue_reply, prefix_cache=True) as server:
        factory = _factory(server, out / "llm.sqlite")
        asyncio.run(run_generation(PERSONAS[:2], small_index, factory, out, max_turns=3, concurrency=2))
        reported = server.usage_reported
    summary = json.loads((out / SUMMARY).read_text())
    total = summary["llm_total"]
    assert total["calls"] > 0 and 0 < total["cached_prompt_tokens"] < total["prompt_tokens"]
    # the summary's tokens are the ones the server said it served, cached and not
    assert (total["prompt_tokens"], total["cached_prompt_tokens"]) == (
        reported["prompt_tokens"],
        reported["cached_prompt_tokens"],
    )
    assert total["uncached_prompt_tokens"] == reported["prompt_tokens"] - reported["cached_prompt_tokens"]
    assert all({"cached_prompt_tokens", "uncached_prompt_tokens", "cost_usd"} <= set(row) for row in summary["llm"])
    expected = PRICE.cost(
        Usage(
            prompt_tokens=total["prompt_tokens"],
            cached_prompt_tokens=total["cached_prompt_tokens"],
            completion_tokens=total["completion_tokens"],
        )
    )
    assert total["cost_usd"] == pytest.approx(expected)


def test_ledger_command_shows_cached_and_uncached_prompt_tokens(tmp_path):
    store = LLMStore(tmp_path / "llm.sqlite")
    for role, cached in (("judge", 30), ("manager", 0)):
        usage = Usage(prompt_tokens=100, completion_tokens=10, cached_prompt_tokens=cached)
        store.record(
            role=role,
            backend="openai",
            model="m",
            key=f"sha256:{role}",
            usage=usage,
            cost_usd=PRICE.cost(usage),
            latency_s=0.1,
            cached=False,
            attempts=1,
        )
    store.close()
    runner = CliRunner()
    table = runner.invoke(app, ["llm", "ledger", str(tmp_path / "llm.sqlite")], env={"COLUMNS": "200"})
    assert table.exit_code == 0, table.output
    assert "cached prompt" in table.output and "uncached prompt" in table.output
    total = [line for line in table.output.splitlines() if "total" in line]
    assert total and "200" in total[0] and "170" in total[0]  # prompt tokens, uncached
    rows = json.loads(runner.invoke(app, ["llm", "ledger", str(tmp_path / "llm.sqlite"), "--json"]).output)
    assert {r["role"]: (r["cached_prompt_tokens"], r["uncached_prompt_tokens"]) for r in rows} == {
        "judge": (30, 70),
        "manager": (0, 100),
    }


def test_the_embedded_model_counts_the_prompt_tokens_llama_cpp_reused():
    pytest.importorskip("llama_cpp")
    from stickerconv.llm.backends.local import LocalBackend
    from stickerconv.llm.chat import ChatModel
    from stickerconv.llm.types import Settings

    settings = Settings(max_tokens=4, seed=1)
    questions = ("Say hello.", "Say goodbye.")
    results = {}
    for prefix_cache in (False, True):
        model = ChatModel(LocalBackend(prefix_cache=prefix_cache), cache="off", settings=settings)
        results[prefix_cache] = [model.complete_sync([system(INSTRUCTIONS), user(q)]) for q in questions]
        asyncio.run(model.aclose())
    assert all(r.usage.cached_prompt_tokens == 0 for r in results[False])  # reset before each call: all evaluated
    first, second = results[True]
    assert first.usage.cached_prompt_tokens == 0
    # The system block and the start of the user turn were kept from the first call; only the rest was evaluated.
    assert len(INSTRUCTIONS.split()) < second.usage.cached_prompt_tokens < second.usage.prompt_tokens
    assert second.cost_usd == 0.0
    backend, _ = LLMFactory(LLMConfig(local_prefix_cache=True)).backend("local")
    assert backend.prefix_cache and not LLMFactory().backend("local")[0].prefix_cache  # the config's switch
