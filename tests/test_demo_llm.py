"""``stickerconv demo --llm openai:MODEL`` at toy sizes against a scripted OpenAI-compatible server, as a user
runs it (a subprocess): every LLM step (personas, simulation, the text and tool baselines, the tool's
retrieval queries) runs on the server's model and none falls back to the embedded one, the report and
the state name the model, and the console shows the result in a few lines. Another model redoes the LLM
steps; a config file's models and server key them as --llm does."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from stickerconv.llm.store import LLMStore
from stickerconv.llm.types import ConfigError
from stickerconv.pipelines.demo import DemoModel

from helpers.demo import demo_reply
from helpers.fake_openai_server import FakeOpenAIServer

SCRIPT = Path(sys.executable).parent / "stickerconv"
TOY = "--pack-limit 60 --n-personas 3 --max-turns 2 --pegs-preset tiny --pegs-steps 2 --joint-steps 2"
TOY += " --vision-steps 20 --eval-items 2 --no-serve"
LLM_STEPS = ("personas", "simulate", "evaluate")


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess, list[dict]]:
    out = tmp_path_factory.mktemp("demo-llm") / "run"
    with FakeOpenAIServer(model="fake-model", reply=demo_reply) as server:
        env = os.environ | {"OPENAI_BASE_URL": server.base_url, "OPENAI_API_KEY": "test"}
        args = [str(SCRIPT), "demo", "--out", str(out), *TOY.split(), "--llm", "openai:fake-model"]
        result = subprocess.run(args, capture_output=True, text=True, timeout=900, env=env)
        requests = list(server.requests)
    if result.returncode != 0:
        raise AssertionError(f"exit {result.returncode}\n{result.stdout}\n{result.stderr}")
    return out, result, requests


def test_every_llm_call_is_on_the_users_model(run) -> None:
    out, _, requests = run
    assert requests and {body["model"] for body in requests} == {"fake-model"}
    stores = {path.relative_to(out).as_posix(): path for path in out.rglob("*.sqlite")}
    roles: dict[str, set[str]] = {}
    for name, path in stores.items():
        store = LLMStore(path)
        rows = store.ledger()
        store.close()
        assert all((r.backend, r.model) == ("openai", "fake-model") for r in rows), (name, rows)
        if rows:
            roles[name] = {r.role for r in rows}
    assert roles["personas.llm.sqlite"] == {"persona_generator"}
    assert {"user_agent", "assistant_agent", "manager"} <= roles["sessions/llm.sqlite"]
    for name in ("eval/pred-text.json.llm.sqlite", "eval/pred-tool.json.llm.sqlite", "eval/retrieval-tool.llm.sqlite"):
        assert roles[name] == {"responder"}
    summary = json.loads((out / "sessions" / "summary.json").read_text())
    assert summary["llm"] and {(r["backend"], r["model"]) for r in summary["llm"]} == {("openai", "fake-model")}


def test_the_state_and_the_report_name_the_model_of_each_step(run) -> None:
    out, _, _ = run
    state = json.loads((out / "demo-state.json").read_text())
    assert {step: record["llm"] for step, record in state.items()} == {
        step: "openai:fake-model" if step in LLM_STEPS else None for step in state
    }
    report = (out / "REPORT.md").read_text()
    for step in LLM_STEPS:
        assert f"| {step} | openai:fake-model (" in report
    calls = report.split("## LLM calls", 1)[1].split("\n## ", 1)[0]
    assert "| personas | openai:fake-model | persona_generator |" in calls and "local:" not in calls
    assert "local:" not in report.split("## Command output", 1)[0]


def test_the_console_shows_the_result_and_the_report_holds_the_rest(run) -> None:
    out, result, _ = run
    lines = result.stdout.splitlines()
    assert len(lines) <= 60, result.stdout
    assert "|version:" not in result.stdout  # no signature on the console
    assert "sticker fit" in result.stdout and "R10@1" in result.stdout
    assert "openai:fake-model (" in result.stdout  # the model line of the LLM steps
    report = (out / "REPORT.md").read_text()
    assert "### Signatures" in report and "|version:stickerconv-" in report
    assert "sticker_fit_gt|" in report  # the gold fit: the sessions' assistant stickers all have labels
    for step in ("pack", "personas", "simulate", "dataset", "pegs", "evaluate"):
        assert f"<summary>{step}: " in report and (out / "logs" / f"{step}.log").stat().st_size > 0
    dataset = report.split("## Dataset", 1)[1].split("\n## ", 1)[0]
    reasons = json.loads((out / "sessions" / "summary.json").read_text())["end_reasons"]
    assert reasons and all(f"{reason} {n}" in dataset.split("- ended by: ")[1] for reason, n in reasons.items())
    assert ", 2.00 turns each (max 2)" in dataset  # three sessions of two turns each (--max-turns 2)


def test_another_model_redoes_the_llm_steps_on_it(run, tmp_path) -> None:
    """A model that cannot load stops the redone personas step: the cached pack stays, the personas step
    does not reuse the other model's profiles, and the error names the model and the step's log."""
    out, _, _ = run
    copy = tmp_path / "run"
    shutil.copytree(out, copy)
    before = json.loads((copy / "demo-state.json").read_text())
    missing = tmp_path / "no-such-model.gguf"
    args = [str(SCRIPT), "demo", "--out", str(copy), *TOY.split(), "--llm", f"local:{missing}"]
    result = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2, result.stdout + result.stderr
    stdout, stderr = " ".join(result.stdout.split()), " ".join(result.stderr.split())
    assert "[1/6] sticker pack and index: cached" in stdout
    assert "[2/6] 3 personas (self-instruct): options changed, redoing it" in stdout
    assert f"model file {missing} does not exist" in stderr and f"{copy / 'logs' / 'personas.log'}" in stderr
    after = json.loads((copy / "demo-state.json").read_text())
    assert after["pack"] == before["pack"]
    assert after["personas"]["llm"] == f"local:{missing}" and not after["personas"]["done"]
    assert after["personas"]["key"] != before["personas"]["key"] and not (copy / "personas.jsonl").exists()


def test_a_config_file_names_the_models_and_every_change_of_model_changes_the_key(tmp_path, monkeypatch) -> None:
    config = tmp_path / "llm.toml"
    config.write_text('llm = "openai:base-model"\n[roles.user_agent]\nllm = "openai:user-model"\n')
    monkeypatch.setenv("OPENAI_BASE_URL", "http://one.example/v1")
    model = DemoModel.resolve(None, config)
    assert model.describe() == "openai:base-model (user_agent: openai:user-model)"
    assert (
        DemoModel.resolve("openai:cli-model", config).describe() == "openai:cli-model (user_agent: openai:user-model)"
    )
    first = model.identity()
    assert first["llm"] == model.describe() and first["server"] == "http://one.example/v1"
    monkeypatch.setenv("OPENAI_BASE_URL", "http://two.example/v1")
    assert model.identity() != first  # the same model name on another server
    config.write_text('llm = "openai:base-model"\n[roles.user_agent]\nllm = "openai:user-model"\ntemperature = 0.2\n')
    assert DemoModel.resolve(None, config).identity()["config"] != first["config"]
    assert DemoModel.resolve(None, None).identity() == {"llm": "local", "config": None, "server": None}
    with pytest.raises(ConfigError, match="unknown LLM 'gpt-4o'"):
        DemoModel.resolve("gpt-4o", None)
