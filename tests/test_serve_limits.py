"""Bad input gets the right 4xx in OpenAI's error format, never a 5xx: broken JSON, wrong types, limits,
images, unknown stickers, path traversal, auth. (The generated inputs are in test_serve_fuzz.py.)"""

from __future__ import annotations

import base64
import io
import json
from types import SimpleNamespace

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from stickerconv.llm import LLMConfig, LLMFactory
from stickerconv.responders import build_responder
from stickerconv.schema import Sticker
from stickerconv.serve import ServeSettings, create_app
from stickerconv.serve.stickers import StickerCatalog
from stickerconv.stickers.library import StickerLibrary

from helpers.llm_fakes import ScriptedBackend

KEY = "limits-key"
MODEL = "stickerconv-tool"
AUTH = {"Authorization": f"Bearer {KEY}"}
LIMITS = ServeSettings(
    api_key=KEY, max_body_bytes=256 * 1024, max_image_bytes=64 * 1024, max_image_side=512, max_messages=8
)


def tool_answer(request) -> str:
    return json.dumps({"text": "I hear you.", "tool": "send_sticker", "query": "emotion: Sadness, sad"})


@pytest.fixture(scope="module")
def client(small_index):
    factory = LLMFactory(LLMConfig(llm="local", cache="off"))
    factory.register_backend("local", ScriptedBackend(default=tool_answer))
    app = create_app(build_responder("tool", factory, small_index), small_index, LIMITS)
    with TestClient(app, raise_server_exceptions=False) as test_client:
        yield test_client


def png(width: int, height: int, mode: str = "RGB") -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, (width, height)).save(buffer, "PNG")
    return buffer.getvalue()


def uri(raw: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64,{base64.b64encode(raw).decode()}"


def chat(*messages) -> dict:
    return {"model": MODEL, "messages": list(messages)}


def user_image(url: str) -> dict:
    return {
        "role": "user",
        "content": [{"type": "text", "text": "look"}, {"type": "image_url", "image_url": {"url": url}}],
    }


def assistant_call(name: str, arguments: str) -> dict:
    call = {"id": "call_1", "type": "function", "function": {"name": name, "arguments": arguments}}
    return {"role": "assistant", "content": "here", "tool_calls": [call]}


def assert_error(response, status: int, code: str | None = None) -> dict:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"]
    if code is not None:
        assert error["code"] == code, error
    return error


HELLO = {"role": "user", "content": "hello"}
BAD_BODIES = {
    "truncated JSON": (b'{"model": "stickerconv-tool", "messages": [', 400, "invalid_json"),
    "not JSON": (b"model=stickerconv-tool", 400, "invalid_json"),
    "empty body": (b"", 400, "invalid_json"),
    "a JSON list": (b"[1, 2]", 400, "invalid_json"),
    "nested too deeply": (b"[" * 100_000 + b"]" * 100_000, 400, "invalid_json"),
    "huge number": (b'{"model": ' + b"9" * 5000 + b"}", 400, "invalid_json"),
    "invalid UTF-8": (b'{"model": "\xff\xfe"}', 400, "invalid_json"),
    "NaN temperature": (
        b'{"model": "stickerconv-tool", "messages": [{"role": "user", "content": "a"}], "temperature": NaN}',
        400,
        None,
    ),
    "Infinity model": (b'{"model": Infinity, "messages": []}', 400, None),
}


@pytest.mark.parametrize("body, status, code", BAD_BODIES.values(), ids=BAD_BODIES.keys())
def test_malformed_bodies(client, body, status, code):
    response = client.post("/v1/chat/completions", content=body, headers=AUTH | {"Content-Type": "application/json"})
    assert_error(response, status, code)


WRONG = {
    "model is a number": {"model": 5, "messages": [HELLO]},
    "model missing": {"messages": [HELLO]},
    "messages is a string": {"model": MODEL, "messages": "hello"},
    "messages empty": {"model": MODEL, "messages": []},
    "message is a list": chat([1, 2]),
    "unknown role": chat({"role": "wizard", "content": "hi"}),
    "content is a number": chat({"role": "user", "content": 5}),
    "content part of unknown type": chat({"role": "user", "content": [{"type": "video", "video": "x"}]}),
    "image part without url": chat({"role": "user", "content": [{"type": "image_url", "image_url": {}}]}),
    "image in a system message": chat(
        {"role": "system", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}
    ),
    "stream is not a bool": {**chat(HELLO), "stream": "maybe"},
    "temperature a word": {**chat(HELLO), "temperature": "hot"},
    "temperature out of range": {**chat(HELLO), "temperature": 7},
    "n above 1": {**chat(HELLO), "n": 3},
    "tool message without id": chat({"role": "tool", "content": "x"}, HELLO),
    "tool call arguments not a string": chat(
        {
            "role": "assistant",
            "tool_calls": [{"id": "c", "type": "function", "function": {"name": "send_sticker", "arguments": {}}}],
        },
        HELLO,
    ),
    "ends with the assistant": chat(HELLO, {"role": "assistant", "content": "hi"}),
    "empty user message": chat({"role": "user", "content": "   "}),
    "too many messages": chat(*[HELLO] * 9),
    "message too long": chat({"role": "user", "content": "x" * 16_001}),
}


@pytest.mark.parametrize("body", WRONG.values(), ids=WRONG.keys())
def test_wrong_types_and_shapes_are_400(client, body):
    assert_error(client.post("/v1/chat/completions", json=body, headers=AUTH), 400)


@pytest.mark.parametrize(
    "body, param",
    [
        (chat({"role": "user", "content": 5}), "messages[0].content"),
        (
            chat({"role": "user", "content": [{"type": "image_url", "image_url": {}}]}),
            "messages[0].content[0].image_url.url",
        ),
        (
            chat(HELLO, {"role": "assistant", "tool_calls": [{"id": "c", "function": {"name": "x"}}]}, HELLO),
            "messages[1].tool_calls[0].function.arguments",
        ),
        ({**chat(HELLO), "n": 2}, "n"),
    ],
)
def test_the_error_names_the_field(client, body, param):
    error = assert_error(client.post("/v1/chat/completions", json=body, headers=AUTH), 400)
    assert error["param"] == param and error["type"] == "invalid_request_error"
    assert error["message"].startswith(f"{param}: ")


def test_unknown_model_is_404(client):
    assert_error(
        client.post("/v1/chat/completions", json={**chat(HELLO), "model": "gpt-4o"}, headers=AUTH),
        404,
        "model_not_found",
    )


def test_huge_bodies_are_413(client):
    big = json.dumps(chat({"role": "user", "content": "x" * 300_000}))
    assert_error(client.post("/v1/chat/completions", content=big, headers=AUTH), 413, "body_too_large")

    def chunks():  # no Content-Length: refused once the stream passes the limit
        for _ in range(40):
            yield b" " * 10_000

    assert_error(client.post("/v1/chat/completions", content=chunks(), headers=AUTH), 413, "body_too_large")
    bad_length = AUTH | {"Content-Length": "lots"}
    assert client.post("/v1/chat/completions", content=b"{}", headers=bad_length).status_code == 400


IMAGES = {
    "too many bytes": (uri(bytes(70_000)), 413, "image_too_large"),
    "too wide": (uri(png(600, 10)), 413, "image_too_large"),
    "not base64": (uri(b"x")[:-4] + "!!!!", 400, "invalid_image"),
    "not an image": (uri(b"hello, I am text"), 400, "invalid_image"),
    "truncated PNG": (uri(png(64, 64)[:60]), 400, "invalid_image"),
    "not an image type": (uri(png(4, 4), "text/plain"), 400, "invalid_image"),
    "not base64-encoded": ("data:image/png," + "abc", 400, "invalid_image"),
    "unsupported format": (uri(b"BM" + bytes(60), "image/bmp"), 400, "invalid_image"),
    "a remote URL": ("https://example.com/cat.png", 400, "invalid_image_url"),
    "a file URL": ("file:///etc/passwd", 400, "invalid_image_url"),
    "an unknown sticker URL": ("http://testserver/stickers/noto/nope", 400, "unknown_sticker"),
    "a traversal sticker URL": ("http://testserver/stickers/../../etc/passwd", 400, "unknown_sticker"),
    "an encoded traversal": ("/stickers/..%2F..%2Fstickers.jsonl", 400, "unknown_sticker"),
}


@pytest.mark.parametrize("url, status, code", IMAGES.values(), ids=IMAGES.keys())
def test_bad_images(client, url, status, code):
    error = assert_error(client.post("/v1/chat/completions", json=chat(user_image(url)), headers=AUTH), status, code)
    assert error["param"] == "messages[0].content[1].image_url"


def test_too_many_pixels_is_413(small_index):
    few_pixels = ServeSettings(max_image_pixels=1000)
    with pytest.raises(Exception, match="pixels") as caught:
        StickerCatalog(None, few_pixels).check_image(png(40, 40), "p")
    assert caught.value.status == 413


TOOL_CALLS = {
    "unknown sticker": (assistant_call("send_sticker", '{"sticker_id": "noto/0000"}'), "unknown_sticker"),
    "arguments not JSON": (assistant_call("send_sticker", "{sticker"), "invalid_tool_arguments"),
    "arguments without id": (assistant_call("send_sticker", '{"url": "x"}'), "invalid_tool_arguments"),
    "arguments a list": (assistant_call("send_sticker", "[1]"), "invalid_tool_arguments"),
    "arguments nested deeply": (assistant_call("send_sticker", "[" * 50_000), "invalid_tool_arguments"),
    "unknown tool": (assistant_call("rm_rf", "{}"), "unknown_tool"),
}


@pytest.mark.parametrize("message, code", TOOL_CALLS.values(), ids=TOOL_CALLS.keys())
def test_bad_sticker_calls_in_history(client, message, code):
    response = client.post("/v1/chat/completions", json=chat(HELLO, message, HELLO), headers=AUTH)
    assert_error(response, 400, code)["param"].startswith("messages[1].tool_calls[0]")


@pytest.mark.parametrize(
    "path",
    [
        "/stickers/%2e%2e/%2e%2e/etc/passwd",
        "/stickers/..%2F..%2Fstickers.jsonl",
        "/stickers/images/noto/1f600.png",  # a library file path, not a sticker id
        "/stickers/stickers.jsonl",
        "/stickers/%00",
        "/stickers/" + "a" * 5000,
        "/ui/..%2Fapp.py",
        "/ui/%2e%2e/%2e%2e/schema.py",
        "/ui/../../../etc/passwd",
    ],
)
def test_path_traversal_is_404(client, path):
    response = client.get(path)
    assert response.status_code == 404, response.text


def test_a_library_entry_pointing_outside_is_not_served(tmp_path):
    root = tmp_path / "lib"
    (root / "images").mkdir(parents=True)
    (tmp_path / "secret.png").write_bytes(png(2, 2))
    (root / "images" / "ok.png").write_bytes(png(3, 3))
    stickers = [Sticker(id="bad", image="../secret.png"), Sticker(id="good", image="images/ok.png")]
    fake_index = SimpleNamespace(library=StickerLibrary(root, stickers), stickers=stickers)
    catalog = StickerCatalog(fake_index, ServeSettings())
    assert catalog.image_file("bad") is None and catalog.image_file("good") == (root / "images" / "ok.png").resolve()


@pytest.mark.parametrize(
    "headers, code",
    [
        ({}, "missing_api_key"),
        ({"Authorization": "Bearer nope"}, "invalid_api_key"),
        ({"Authorization": f"Basic {KEY}"}, "invalid_api_key"),
        ({"Authorization": "Bearer"}, "invalid_api_key"),
    ],
)
def test_auth(client, headers, code):
    for method, path in [("post", "/v1/chat/completions"), ("get", "/v1/models"), ("get", "/v1/stickers/search")]:
        response = getattr(client, method)(path, headers=headers, **({"json": chat(HELLO)} if method == "post" else {}))
        assert_error(response, 401, code)
    assert client.get("/").status_code == 200  # the page itself is public; it asks for the key


@pytest.mark.parametrize("params", [{"k": 0}, {"k": 1000}, {"k": "many"}, {"label": "Joy"}, {"q": "x" * 501}])
def test_bad_search_parameters(client, params):
    assert_error(client.get("/v1/stickers/search", params=params, headers=AUTH), 400)


def test_unknown_routes_and_methods(client):
    assert_error(client.get("/v1/chat/completions", headers=AUTH), 405)
    assert_error(client.get("/v1/embeddings", headers=AUTH), 404)
    assert_error(client.put("/v1/models", headers=AUTH), 405)
