"""The server through the official ``openai`` SDK (sync, async, streaming) over a real socket: stickers go
in as data URIs and sticker URLs, come back as ``send_sticker`` calls, and go back in the history."""

from __future__ import annotations

import asyncio
import base64
import io
import json

import httpx
import openai
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from stickerconv.llm import LLMConfig, LLMFactory
from stickerconv.responders import Responder, build_responder
from stickerconv.responders.base import sticker_text
from stickerconv.schema import Reply, Sticker
from stickerconv.serve import ServerThread, ServeSettings, create_app
from stickerconv.serve.dialogue import text_pieces, to_context
from stickerconv.serve.openai_schema import ChatCompletionRequest
from stickerconv.serve.stickers import UNKNOWN_IMAGE, StickerCatalog
from stickerconv.stickers.library import StickerLibrary

from helpers.llm_fakes import ScriptedBackend

KEY = "test-key"
MODEL = "stickerconv-tool"
REPLY = "I am so sorry, that sounds really hard."


def tool_answer(request) -> str:
    query = "emotion: Sadness, emotion describe: sad, disappointed and crying"
    return json.dumps({"text": REPLY, "tool": "send_sticker", "query": query})


def make_app(index, backend, responder="tool", **settings):
    factory = LLMFactory(LLMConfig(llm="local", cache="off"))
    factory.register_backend("local", backend)
    return create_app(build_responder(responder, factory, index), index, ServeSettings(**settings))


@pytest.fixture(scope="module")
def served(small_index):
    backend = ScriptedBackend(default=tool_answer)
    with ServerThread(make_app(small_index, backend, api_key=KEY)) as server:
        yield server, backend


def data_uri(raw: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64,{base64.b64encode(raw).decode()}"


def sticker_call(message) -> dict:
    (call,) = message.tool_calls
    assert call.type == "function" and call.function.name == "send_sticker"
    return json.loads(call.function.arguments)


def test_models_and_auth(served):
    server, _ = served
    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key=KEY)
    assert [m.id for m in client.models.list()] == [MODEL]
    with pytest.raises(openai.AuthenticationError, match="invalid API key"):
        openai.OpenAI(base_url=f"{server.url}/v1", api_key="wrong", max_retries=0).models.list()


def test_sync_sdk_sends_a_sticker_gets_one_and_sends_it_back(served, small_index):
    server, backend = served
    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key=KEY)
    sent = small_index.stickers[0]
    raw = (small_index.library.root / sent.image).read_bytes()
    messages = [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "I failed my driving test today."},
                {"type": "image_url", "image_url": {"url": data_uri(raw)}},
            ],
        }
    ]
    completion = client.chat.completions.create(model=MODEL, messages=messages)
    message = completion.choices[0].message
    assert message.content == REPLY and completion.choices[0].finish_reason == "stop"
    args = sticker_call(message)
    got = small_index.library.by_id()[args["sticker_id"]]
    assert args["label"] == got.label.value == "Sadness"
    assert args["description"] == got.description and args["emotion"] == got.emotion
    image = httpx.get(args["url"])
    assert image.status_code == 200 and image.headers["content-type"] == "image/png"
    assert image.content == (small_index.library.root / got.image).read_bytes()
    # the data URI's bytes are a library image: the responder saw that sticker's annotation
    assert backend.requests[-1].messages[-1].text.endswith(sticker_text(sent))

    messages += [message, {"role": "user", "content": "Thanks, that helps."}]  # the SDK object, sent back as is
    follow = client.chat.completions.create(model=MODEL, messages=messages)
    assert follow.choices[0].message.content == REPLY
    seen = backend.requests[-1].messages
    assert seen[-2].role == "assistant" and seen[-2].text == f"{REPLY} {sticker_text(got)}"
    assert seen[-1].text == "Thanks, that helps."


def test_async_sdk_with_a_sticker_url_round_trip(served, small_index):
    server, backend = served

    async def talk():
        client = openai.AsyncOpenAI(base_url=f"{server.url}/v1", api_key=KEY)
        picked = small_index.stickers[3]
        url = f"{server.url}/stickers/{picked.id}"
        messages = [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}}]}]
        first = await client.chat.completions.create(model=MODEL, messages=messages)
        messages += [first.choices[0].message.model_dump(exclude_none=True), {"role": "user", "content": "ok"}]
        second = await client.chat.completions.create(model=MODEL, messages=messages)
        await client.close()
        return picked, first, second

    picked, first, second = asyncio.run(talk())
    assert sticker_call(first.choices[0].message)["sticker_id"]
    assert second.choices[0].message.content == REPLY
    seen = backend.requests[-1].messages
    assert seen[1].text.strip() == sticker_text(picked)  # image only: the user turn is the sticker


def test_streaming_sends_text_then_the_sticker_call(served, small_index):
    server, _ = served
    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key=KEY)
    messages = [{"role": "user", "content": "My dog ran away."}]
    whole = client.chat.completions.create(model=MODEL, messages=messages)
    chunks = list(client.chat.completions.create(model=MODEL, messages=messages, stream=True))
    text = "".join(c.choices[0].delta.content or "" for c in chunks)
    calls = [tc for c in chunks for tc in c.choices[0].delta.tool_calls or []]
    assert text == whole.choices[0].message.content
    assert len(chunks) > 3 and chunks[-1].choices[0].finish_reason == "stop"
    (call,) = calls
    assert json.loads(call.function.arguments) == sticker_call(whole.choices[0].message)
    assert all(
        not c.choices[0].delta.content
        for c in chunks[chunks.index(next(c for c in chunks if c.choices[0].delta.tool_calls)) :]
    )
    # the SDK's own stream accumulator assembles the same message
    with client.chat.completions.stream(model=MODEL, messages=messages) as stream:
        final = stream.get_final_completion()
    assert final.choices[0].message.content == REPLY
    assert sticker_call(final.choices[0].message) == sticker_call(whole.choices[0].message)


def test_async_streaming(served):
    server, _ = served

    async def stream_text():
        client = openai.AsyncOpenAI(base_url=f"{server.url}/v1", api_key=KEY)
        stream = await client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "hello"}], stream=True
        )
        parts = [chunk async for chunk in stream]
        await client.close()
        return parts

    chunks = asyncio.run(stream_text())
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == REPLY


def test_an_unknown_image_is_accepted_and_described(served):
    server, backend = served
    buffer = io.BytesIO()
    Image.new("RGB", (40, 30), (200, 30, 30)).save(buffer, "JPEG")
    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key=KEY)
    content = [
        {"type": "text", "text": "look"},
        {"type": "image_url", "image_url": {"url": data_uri(buffer.getvalue(), "image/jpeg")}},
    ]
    client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": content}])
    assert UNKNOWN_IMAGE in backend.requests[-1].messages[-1].text


def test_sticker_search_and_images(served, small_index):
    server, _ = served
    auth = {"Authorization": f"Bearer {KEY}"}
    found = httpx.get(f"{server.url}/v1/stickers/search", params={"q": "crying sad tears", "k": 5}, headers=auth).json()
    assert found["object"] == "list" and len(found["data"]) == 5
    assert found["data"][0]["label"] == "Sadness" and found["data"][0]["score"] is not None
    labelled = httpx.get(
        f"{server.url}/v1/stickers/search", params={"q": "face", "k": 4, "label": "Anger"}, headers=auth
    ).json()
    assert {hit["label"] for hit in labelled["data"]} == {"Anger"}
    listed = httpx.get(f"{server.url}/v1/stickers/search", params={"k": 7}, headers=auth).json()
    assert [hit["sticker_id"] for hit in listed["data"]] == [s.id for s in small_index.stickers[:7]]
    first = listed["data"][0]
    assert httpx.get(first["url"]).status_code == 200  # images need no token: <img> cannot send one
    assert httpx.get(first["url"] + ".png").content == httpx.get(first["url"]).content
    assert httpx.get(f"{server.url}/v1/stickers/search", params={"q": "x"}).status_code == 401


def test_web_page_and_openapi(served):
    server, _ = served
    page = httpx.get(f"{server.url}/")
    assert page.status_code == 200 and 'id="sticker-button"' in page.text and "ui/app.js" in page.text
    assert "send_sticker" in httpx.get(f"{server.url}/ui/app.js").text
    assert httpx.get(f"{server.url}/ui/style.css").headers["content-type"].startswith("text/css")
    schema = httpx.get(f"{server.url}/openapi.json").json()
    assert (
        "/v1/chat/completions" in schema["paths"]
        and "messages" in schema["components"]["schemas"]["ChatRequest"]["properties"]
    )


def test_text_responder_without_a_library(small_index):
    backend = ScriptedBackend(default="Here for you.")
    client = TestClient(make_app(None, backend, responder="text"))
    png = io.BytesIO()
    Image.new("RGBA", (8, 8)).save(png, "PNG")
    content = [{"type": "text", "text": "hi"}, {"type": "image_url", "image_url": {"url": data_uri(png.getvalue())}}]
    response = client.post(
        "/v1/chat/completions", json={"model": "stickerconv-text", "messages": [{"role": "user", "content": content}]}
    )
    assert response.status_code == 200, response.text
    message = response.json()["choices"][0]["message"]
    assert message["content"] == "Here for you." and "tool_calls" not in message
    assert client.get("/v1/stickers/search", params={"q": "sad"}).status_code == 404
    assert client.get(f"/stickers/{small_index.stickers[0].id}").status_code == 404


def test_busy_server_answers_429(small_index):
    backend = ScriptedBackend(default=tool_answer, delay=0.5)
    app = make_app(small_index, backend, concurrency=1, max_queue=0)
    body = {"model": MODEL, "messages": [{"role": "user", "content": "hello"}]}

    async def burst(url):
        async with httpx.AsyncClient(base_url=url, timeout=10) as client:
            return await asyncio.gather(*(client.post("/v1/chat/completions", json=body) for _ in range(3)))

    with ServerThread(app) as server:
        responses = asyncio.run(burst(server.url))
    codes = sorted(r.status_code for r in responses)
    assert codes == [200, 429, 429]
    busy = next(r for r in responses if r.status_code == 429)
    assert busy.headers["retry-after"] == "1" and busy.json()["error"]["code"] == "server_busy"


def test_cors_is_off_unless_configured(small_index):
    preflight = {"Origin": "http://elsewhere.example", "Access-Control-Request-Method": "POST"}
    closed = TestClient(make_app(small_index, ScriptedBackend(default=tool_answer)))
    assert "access-control-allow-origin" not in closed.options("/v1/chat/completions", headers=preflight).headers
    opened = TestClient(make_app(small_index, ScriptedBackend(), cors_origins=["http://elsewhere.example"]))
    answer = opened.options("/v1/chat/completions", headers=preflight)
    assert answer.headers["access-control-allow-origin"] == "http://elsewhere.example"


def test_messages_pair_into_turns(small_index):
    catalog = StickerCatalog(small_index, ServeSettings())
    sticker = small_index.stickers[5]
    call = {
        "id": "c1",
        "type": "function",
        "function": {"name": "send_sticker", "arguments": json.dumps({"sticker_id": sticker.id})},
    }
    request = ChatCompletionRequest.model_validate(
        {
            "model": MODEL,
            "messages": [
                {"role": "system", "content": "ignored"},
                {"role": "assistant", "content": "Hi! How are you?"},
                {"role": "user", "content": "Not great."},
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "Lost my job."},
                        {"type": "image_url", "image_url": {"url": f"/stickers/{sticker.id}"}},
                    ],
                },
                {"role": "assistant", "content": None, "tool_calls": [call]},
                {"role": "tool", "tool_call_id": "c1", "content": "shown"},
                {"role": "user", "content": "What now?"},
            ],
        }
    )
    context = to_context(request, catalog, ServeSettings())
    first, second = context.history
    assert (first.turn, first.user_message, first.system_message) == (1, "", "Hi! How are you?")
    assert second.user_message == "Not great.\nLost my job." and second.user_sticker == sticker
    assert second.system_message == "" and second.system_sticker == sticker
    assert context.user_message == "What now?" and context.user_sticker is None


@pytest.mark.parametrize("text", ["", "one", "Hello there, how are you doing today?", "  spaced   out \n lines  "])
def test_text_pieces_join_to_the_text(text):
    assert "".join(text_pieces(text)) == text


class PaintingResponder(Responder):
    """Paints a new sticker into a library folder for every reply, as PEGS-Gen does."""

    name = "painter"

    def __init__(self, folder):
        self.folder, self.seen = folder, []

    async def respond(self, context):
        self.seen.append(context)
        library = (
            StickerLibrary.load(self.folder)
            if (self.folder / "stickers.jsonl").is_file()
            else StickerLibrary(self.folder)
        )
        number = len(library) + 1
        self.folder.mkdir(exist_ok=True)
        Image.new("RGB", (16, 16), (number * 40, 90, 90)).save(self.folder / f"gen{number}.png")
        sticker = Sticker(id=f"gen{number}", image=f"gen{number}.png", description="a sticker painted for you")
        library.stickers.append(sticker)
        library.save()
        return Reply(text="I drew you this.", sticker=sticker)


def test_painted_stickers_are_served_and_resolve_in_history(small_index, tmp_path):
    painter = PaintingResponder(tmp_path / "generated")
    client = TestClient(create_app(painter, small_index, ServeSettings(generated_dir=tmp_path / "generated")))
    messages = [{"role": "user", "content": "draw me something"}]
    first = client.post("/v1/chat/completions", json={"model": "stickerconv-painter", "messages": messages}).json()
    message = first["choices"][0]["message"]
    args = json.loads(message["tool_calls"][0]["function"]["arguments"])
    assert args["sticker_id"] == "gen1" and args["description"] == "a sticker painted for you"
    image = client.get(args["url"])
    assert image.status_code == 200 and image.content == (tmp_path / "generated" / "gen1.png").read_bytes()
    messages += [message, {"role": "user", "content": [{"type": "image_url", "image_url": {"url": args["url"]}}]}]
    second = client.post("/v1/chat/completions", json={"model": "stickerconv-painter", "messages": messages})
    assert second.status_code == 200, second.text
    context = painter.seen[-1]
    assert context.history[0].system_sticker.id == "gen1" and context.user_sticker.id == "gen1"
    assert client.get("/stickers/gen2.png").status_code == 200  # painted while serving, found without a restart
