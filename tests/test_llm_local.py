"""The embedded model (SmolLM2-135M-Instruct on llama.cpp) through the ChatModel layer.

These check structure, never eloquence: a 135M model writes poor prose, but its grammar-constrained
answers must validate for the schemas the agents use: an enum (intent), a short string (query), an
integer choice (sticker index) and a boolean with a reason (review).
"""

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import pytest

from stickerconv.agent4sc.manager import Review
from stickerconv.agent4sc.plan import IntentAnswer, QueryAnswer, SelectAnswer
from stickerconv.llm import LLMFactory, Settings, system, user


@pytest.fixture(scope="module")
def local_model():
    factory = LLMFactory(cache="off")
    yield factory.chat_model("manager")
    asyncio.run(factory.aclose())


@pytest.mark.parametrize("schema", [IntentAnswer, QueryAnswer, SelectAnswer, Review])  # the agents' own schemas
@pytest.mark.parametrize(
    "message",
    [
        "I failed my exam again and I feel terrible.",
        "We just won the championship, I'm so happy!",
        "Ugh, my flight got cancelled.",
    ],
)
def test_structured_answers_validate(local_model, schema, message):
    messages = [
        system("You analyse chat messages and answer in JSON."),
        user(f"Message: {message}\nAnswer the question for the schema {schema.__name__}."),
    ]
    result = asyncio.run(local_model.complete(messages, schema, settings=Settings(max_tokens=96)))
    assert isinstance(result.parsed, schema)
    assert result.usage.completion_tokens > 0 and result.backend == "local"


def test_plain_chat_answers_and_is_deterministic_with_a_seed(local_model):
    messages = [user("Say one kind sentence to a friend who is sad.")]
    settings = Settings(temperature=0.7, max_tokens=40, seed=7)
    a = asyncio.run(local_model.complete(messages, settings=settings))
    b = asyncio.run(local_model.complete(messages, settings=settings))
    assert a.text.strip() and a.text == b.text and a.cost_usd == 0.0


def test_decoding_penalties_reach_llama_cpp(local_model, monkeypatch):
    """Unset, the embedded model's repeat penalty is the backend default; set, each penalty is passed on."""
    from stickerconv.llm.backends import local

    llama = local_model.backend.load()
    seen = []
    real = llama.create_chat_completion
    monkeypatch.setattr(llama, "create_chat_completion", lambda **kw: seen.append(kw) or real(**kw))
    messages = [user("Say hello.")]
    asyncio.run(local_model.complete(messages, settings=Settings(max_tokens=4)))
    penalties = Settings(max_tokens=4, repeat_penalty=1.3, frequency_penalty=0.2, presence_penalty=0.1)
    asyncio.run(local_model.complete(messages, settings=penalties))
    assert seen[0]["repeat_penalty"] == local.REPEAT_PENALTY and "frequency_penalty" not in seen[0]
    assert (seen[1]["repeat_penalty"], seen[1]["frequency_penalty"], seen[1]["presence_penalty"]) == (1.3, 0.2, 0.1)


def test_cli_chat_with_json_schema(tmp_path):
    schema = tmp_path / "schema.json"
    schema.write_text(json.dumps(SelectAnswer.model_json_schema()))
    script = Path(sys.executable).parent / "stickerconv"
    store = tmp_path / "llm.sqlite"
    args = [
        str(script),
        "llm",
        "chat",
        "Pick a sticker index for a happy message.",
        "--json-schema",
        str(schema),
        "--store",
        str(store),
    ]
    first = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr
    answer = json.loads(first.stdout)
    assert set(answer) == {"idx"} and isinstance(answer["idx"], int)  # the grammar allows no other key
    again = subprocess.run([*args, "--cache", "replay"], capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and again.stdout == first.stdout and "cached" in again.stderr
    ledger = subprocess.run([str(script), "llm", "ledger", str(store), "--json"], capture_output=True, text=True)
    rows = json.loads(ledger.stdout)
    assert rows[0]["calls"] == 2 and rows[0]["cached"] == 1 and rows[0]["cost_usd"] == 0.0
