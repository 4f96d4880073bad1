"""``stickerconv serve``: options become the app's settings; uvicorn is stubbed so no port is bound."""

from __future__ import annotations

from fastapi.testclient import TestClient
from typer.testing import CliRunner

from stickerconv.cli import app as cli_app


def test_serve_builds_the_app_from_its_options(small_index, monkeypatch, tmp_path):
    import uvicorn

    started = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: started.update(app=app, **kw))
    result = CliRunner().invoke(
        cli_app,
        [
            "serve",
            "--responder", "tool",
            "--stickers", str(small_index.library.root),
            "--port", "8123",
            "--api-key", "k1",
            "--cors-origin", "http://a.example",
            "--max-messages", "5",
            "--max-body-mb", "1",
            "--uploads-dir", str(tmp_path / "uploads"),
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert started["port"] == 8123 and started["host"] == "127.0.0.1"
    settings = started["app"].state.settings
    assert settings.api_key == "k1" and settings.cors_origins == ["http://a.example"]
    assert settings.max_messages == 5 and settings.max_body_bytes == 1024 * 1024
    assert settings.uploads_dir == tmp_path / "uploads"
    client = TestClient(started["app"])
    assert (
        client.get("/v1/models", headers={"Authorization": "Bearer k1"}).json()["data"][0]["id"] == "stickerconv-tool"
    )
    assert client.get("/v1/models").status_code == 401


def test_serve_errors_name_the_fix(monkeypatch, tmp_path):
    runner = CliRunner()
    unknown = runner.invoke(cli_app, ["serve", "--responder", "pegs"])
    assert unknown.exit_code != 0 and "choose from text, tool" in str(unknown.exception)
    no_library = runner.invoke(cli_app, ["serve", "--responder", "tool"])
    assert no_library.exit_code != 0 and "--stickers" in str(no_library.exception)
    painter = runner.invoke(cli_app, ["serve", "--responder", "pegs-gen"])
    assert painter.exit_code != 0 and "--generated-dir" in str(painter.exception)
    folder = str(tmp_path / "stickers")
    shared = runner.invoke(
        cli_app, ["serve", "--responder", "pegs-gen", "--generated-dir", folder, "--uploads-dir", folder]
    )
    assert shared.exit_code != 0 and "must be different folders" in str(shared.exception)
    assert "--api-key" in runner.invoke(cli_app, ["serve", "--help"]).output
