"""The commands against llama.cpp's own OpenAI-compatible server (llama-cpp-python's), started by the tests.

What a user met: that server refuses ``response_format: json_schema`` with HTTP 500, and a run stopped after
six retries. Here `generate`, `personas generate` and `eval predict` complete against it, negotiating the
``json_object_schema`` mode, and the kill -9 test runs once against it through a fault-injecting proxy.
A 135M model writes poor prose: the checks are about structure, never eloquence.
"""

import json
import random
import time

import pytest

from stickerconv.agent4sc.personas import load_personas
from stickerconv.evaluate.predict import load_predictions
from stickerconv.llm.store import LLMStore
from stickerconv.schema import Conversation

from helpers.fault_proxy import FaultProxy, ProxyFaults
from helpers.generate import SCRIPT, generate_command, kill_until_done, persona_file, records, run_command, server_env
from helpers.llama_server import llama_server, missing_server_modules

LLM = "openai:smollm2"
PERSONAS = 2
RUN_TIMEOUT = 1200  # seconds; SmolLM2 on one loaded core takes a few minutes for a run


@pytest.fixture(scope="module")
def server():
    missing = missing_server_modules()
    if missing:  # a failure, not a skip: the dev extra installs it, and a skip would hide the missing peer
        pytest.fail(f"llama.cpp's server is not installed ({', '.join(missing)}): pip install -e '.[dev]'")
    with llama_server() as srv:
        yield srv


@pytest.fixture(scope="module")
def personas(tmp_path_factory):
    return persona_file(tmp_path_factory.mktemp("llama") / "personas.jsonl", PERSONAS)


def _generate(personas, small_index, out, *extra):
    return generate_command(
        personas, small_index.library.root, out, LLM, "--max-turns", "2", "--concurrency", "2", *extra
    )


@pytest.fixture(scope="module")
def whole_run(server, personas, small_index, tmp_path_factory):
    """An uninterrupted `generate` run, the lean call pattern (the default). It goes through the proxy without
    faults but with its reset (fault_proxy.py), so that the kill test can compare its records with this run's."""
    out = tmp_path_factory.mktemp("llama") / "whole"
    with FaultProxy(server.base_url, ProxyFaults(rate=0.0), reset=True) as proxy:
        started = time.monotonic()
        result = run_command(_generate(personas, small_index, out), server_env(proxy.base_url), RUN_TIMEOUT)
    assert result.returncode == 0, f"{result.stderr}\nserver log:\n{server.log_tail()}"
    return out, result, time.monotonic() - started


def test_generate_negotiates_json_object_schema_and_completes(server, small_index, tmp_path):
    """Straight at the server, nothing in between (the other runs here pass the proxy, for the kill test)."""
    out = tmp_path / "direct"
    personas = persona_file(tmp_path / "personas.jsonl", 1)
    result = run_command(_generate(personas, small_index, out), server_env(server.base_url), RUN_TIMEOUT)
    assert result.returncode == 0, f"{result.stderr}\nserver log:\n{server.log_tail()}"
    lines = records(out)
    assert [json.loads(line)["meta"]["persona_id"] for line in lines] == ["p000000"]
    for line in lines:  # kept or rejected by the manager, the session is a whole, valid record
        conversation = Conversation.model_validate_json(line)
        assert 1 <= len(conversation.conversation) <= 2
    summary = json.loads((out / "summary.json").read_text())
    assert summary["structured_output"] == {"openai:smollm2": "json_object_schema"}
    assert {row["structured_output"] for row in summary["llm"]} == {"json_object_schema"}
    assert sum(row["errors"] for row in summary["llm"]) == 0  # the refused json_schema probe is no error
    assert "structured output: openai:smollm2 json_object_schema" in result.stdout
    modes = {call["structured_mode"] for call in LLMStore(out / "llm.sqlite").calls()}
    assert modes <= {"json_object_schema", None}  # None: the plain-text calls


def test_personas_generate_completes(server, tmp_path):
    out = tmp_path / "generated.jsonl"
    # The model often copies a seed example; --threshold 1.0 keeps all but verbatim copies, since this is about
    # the LLM path, not de-duplication.
    args = [str(SCRIPT), "personas", "generate", "--n-personas", "1", "--out", str(out)]
    args += ["--llm", LLM, "--threshold", "1.0"]
    result = run_command(args, server_env(server.base_url), RUN_TIMEOUT)
    assert result.returncode == 0, result.stderr
    (persona,) = load_personas(out)
    assert persona.id == "gen-000001" and persona.situation
    store = LLMStore(out.with_suffix(".llm.sqlite"))
    assert {row.structured_output for row in store.ledger()} == {"json_object_schema"}


def test_eval_predict_with_the_tool_responder_completes(server, whole_run, small_index, tmp_path):
    conversations = whole_run[0] / "conversations.jsonl"
    out = tmp_path / "tool.json"
    args = [str(SCRIPT), "eval", "predict", "--responder", "tool", "--data", str(conversations), "--out", str(out)]
    args += ["--stickers", str(small_index.library.root), "--llm", LLM, "--limit", "2"]
    result = run_command(args, server_env(server.base_url), RUN_TIMEOUT)
    assert result.returncode == 0, result.stderr
    predictions = load_predictions(out)
    assert len(predictions) == 2 and all(p["input_text"] for p in predictions)
    store = LLMStore(out.with_name(out.name + ".llm.sqlite"))
    assert {row.structured_output for row in store.ledger()} == {"json_object_schema"}


@pytest.mark.slow
def test_kill_9_under_faults_gives_the_uninterrupted_records(server, whole_run, personas, small_index, tmp_path):
    """The kill -9 test of test_agent4sc_kill.py against the real server: 30 % of the chat completions meet a
    429, 500, 503, a stall, a truncated body or garbage; the run is killed twice at random points and rerun;
    every persona ends up once, with the records of the uninterrupted run."""
    config = tmp_path / "llm.toml"
    config.write_text("[retry]\nmax_attempts = 10\nbase_delay = 0.1\nmax_delay = 1.0\n")  # 30 % faults: more tries
    out = tmp_path / "killed"
    with FaultProxy(server.base_url, ProxyFaults(rate=0.3, seed=3), reset=True) as proxy:
        command = _generate(personas, small_index, out, "--config", str(config))
        kills = kill_until_done(
            command, server_env(proxy.base_url), random.Random(11), (10.0, 40.0), max_kills=2, final_timeout=RUN_TIMEOUT
        )
    assert kills >= 1 and sum(proxy.injected.values()) >= 3, proxy.injected
    ids = [json.loads(line)["meta"]["persona_id"] for line in records(out)]
    assert ids == [f"p{i:06d}" for i in range(PERSONAS)]  # every session exactly once
    assert records(out) == records(whole_run[0])
    assert (whole_run[0] / "conversations.jsonl").read_text().strip()  # the 135M model gets sessions kept
