"""``pipelines.serving`` without the CLI: the app ``stickerconv serve`` runs, built from one options object,
answering through a scripted model; the LLM config's serving defaults; the refusals; and the listener."""

from __future__ import annotations

import json
import logging

import pytest
from fastapi.testclient import TestClient

from stickerconv.pipelines import PipelineError
from stickerconv.pipelines.serving import ServeOptions, build_app, run_app, summary
from stickerconv.serve import ServeSettings

from helpers.llm_fakes import ScriptedBackend
from helpers.serve import TOOL_TEXT, scripted_factory, tool_answer


def test_build_app_serves_the_tool_responder_over_its_library(small_index):
    backend = ScriptedBackend(default=tool_answer)
    options = ServeOptions(
        responder="tool",
        stickers=small_index.library.root,
        settings=ServeSettings(api_key="k1", model_name="helper", max_messages=3),
    )
    app = build_app(options, factory=scripted_factory(backend))
    client = TestClient(app)
    auth = {"Authorization": "Bearer k1"}
    assert client.get("/v1/models", headers=auth).json()["data"][0]["id"] == "helper"
    assert client.get("/v1/models").status_code == 401
    body = {"model": "helper", "messages": [{"role": "user", "content": "My dog ran away."}]}
    message = client.post("/v1/chat/completions", json=body, headers=auth).json()["choices"][0]["message"]
    assert message["content"] == TOOL_TEXT
    (call,) = message["tool_calls"]
    sent = json.loads(call["function"]["arguments"])
    assert sent["sticker_id"] in small_index.library.by_id() and sent["label"] == "Sadness"
    assert client.get(f"/stickers/{sent['sticker_id']}").status_code == 200
    too_many = {"model": "helper", "messages": [{"role": "user", "content": "hi"}] * 4}
    assert client.post("/v1/chat/completions", json=too_many, headers=auth).status_code == 400
    assert len(backend.requests) == 1
    line = summary(app, "127.0.0.1", 8123)
    assert line.startswith(f"serving tool as model helper ({len(small_index)} stickers) on http://127.0.0.1:8123")
    assert line.endswith("bearer token required")


def test_the_responders_cache_is_off_unless_the_config_file_sets_it(tmp_path):
    text = build_app(ServeOptions(responder="text"))
    assert text.state.responder.model.cache == "off" and text.state.model_name == "stickerconv-text"
    config = tmp_path / "llm.toml"
    config.write_text('cache = "refresh"\n')
    from_file = build_app(ServeOptions(responder="text", config=config))
    assert from_file.state.responder.model.cache == "refresh"
    flag = build_app(ServeOptions(responder="text", config=config, cache="use"))
    assert flag.state.responder.model.cache == "use"


def test_refusals_name_the_choice_and_the_fix(tmp_path):
    with pytest.raises(PipelineError, match="unknown responder 'pegs'; choose from text, tool, pegs-ret"):
        build_app(ServeOptions(responder="pegs"))
    with pytest.raises(PipelineError, match="--generated-dir"):
        build_app(ServeOptions(responder="pegs-rag"))
    with pytest.raises(ValueError, match="--stickers"):
        build_app(ServeOptions(responder="tool"))
    with pytest.raises(ValueError, match="must be different folders"):
        ServeOptions(responder="pegs-gen", settings=ServeSettings(generated_dir=tmp_path, uploads_dir=tmp_path))


def test_run_app_hands_the_app_to_uvicorn_at_the_log_level(monkeypatch):
    import uvicorn

    started = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: started.update(app=app, **kw))
    app = build_app(ServeOptions(responder="text"))
    logger = logging.getLogger("stickerconv")
    level = logger.level
    try:
        run_app(app, port=8124, log_level="DEBUG")
        assert logger.level == logging.DEBUG
    finally:
        logger.setLevel(level)
    assert started == {"app": app, "host": "127.0.0.1", "port": 8124, "log_level": "debug"}
    with pytest.raises(PipelineError, match="unknown log level 'loud'; choose from debug, info, warning, error"):
        run_app(app, log_level="loud")
