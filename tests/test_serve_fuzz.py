"""API fuzzing against the live server on a loopback port: no response is a 5xx, and every error is in OpenAI's
shape (``{"error": {"message", "type", "param", "code"}}``).

Two generators, over 1,000 requests in all:

* Schemathesis, from the app's own OpenAPI schema (every operation: chat completions, models, sticker search,
  sticker images; schema-valid and schema-breaking inputs, unexpected methods). A hook makes some chat bodies
  servable: the server's model name and valid images (JPEG and PNG uploads, library sticker URLs) in user
  messages, so that generated requests get past validation into the responder too.
* Hypothesis, with strategies written for this API: bodies that mix valid and broken messages, images (valid
  uploads, oversized or corrupt ones, foreign URLs, traversals), ``send_sticker`` calls in the history,
  ``stream`` true and false; raw bytes as bodies; sticker ids and search parameters.

The fast ``tool`` responder (a scripted LLM, the real sticker index) takes most of it; ``pegs-ret`` on a tiny
checkpoint takes a share of chat bodies, so that uploads reach a model that reads pixels. The last test checks
the counts of the fuzz tests that ran before it and prints them with the time.
"""

from __future__ import annotations

import base64
import copy
import io
import json
import time
from collections import Counter
from typing import Any
from urllib.parse import quote

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image, ImageDraw

from stickerconv.serve import ServerThread, ServeSettings, create_app

from helpers.llm_fakes import ScriptedBackend
from helpers.serve import make_responder, tiny_checkpoint

KEY = "fuzz-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
TOOL_MODEL, PEGS_MODEL = "stickerconv-tool", "stickerconv-pegs-ret"
# The least each fuzz test sends (a search may end before max_examples): over 1,000 in a whole run.
MIN_REQUESTS = {"schemathesis": 600, "chat": 250, "chat-pegs": 80, "raw": 80, "stickers": 150}
LIMITS = {"max_body_bytes": 256 * 1024, "max_image_bytes": 64 * 1024, "max_image_side": 512, "max_messages": 8}


def tool_answer(request) -> str:
    return json.dumps({"text": "I hear you.", "tool": "send_sticker", "query": "emotion: Sadness, sad"})


def painted(fmt: str, hue: int, size: tuple[int, int] = (48, 40)) -> bytes:
    """A small drawn sticker (different per ``hue``), encoded as ``fmt``."""
    image = Image.new("RGB", size, (255, 255, 255))
    ImageDraw.Draw(image).ellipse((4, 4, size[0] - 4, size[1] - 4), fill=(hue, 255 - hue, 120))
    out = io.BytesIO()
    image.save(out, fmt)
    return out.getvalue()


def uri(raw: bytes, mime: str) -> str:
    return f"data:{mime};base64,{base64.b64encode(raw).decode()}"


VALID_IMAGES = [uri(painted("JPEG", h), "image/jpeg") for h in (0, 90, 180)] + [
    uri(painted("PNG", h), "image/png") for h in (45, 135, 225)
]
LIBRARY_URLS = ["/stickers/noto/1f600", "http://testserver/stickers/noto/1f622.png"]
BAD_IMAGES = [
    uri(bytes(70_000), "image/png"),  # over max_image_bytes
    uri(painted("PNG", 10, (600, 12)), "image/png"),  # over max_image_side
    uri(painted("PNG", 10)[:60], "image/png"),  # truncated
    uri(b"junk", "image/png"),
    uri(painted("PNG", 10), "text/plain"),
    "data:image/png;base64,",
    "data:;base64,AAAA",
    "/stickers/../../x",
    "/stickers/upload/0000000000000000",
    "ftp://x/y",
    "file:///etc/passwd",
    "",
]

# ---------------------------------------------------------------------------- the servers and the count


class Tally:
    """Every fuzzed request's status, by test, and the time from the first request to the last."""

    def __init__(self) -> None:
        self.statuses: Counter[tuple[str, int]] = Counter()
        self.first = self.last = 0.0

    def record(self, test: str, status: int) -> None:
        self.last = time.perf_counter()
        self.first = self.first or self.last
        self.statuses[(test, status)] += 1

    def total(self) -> int:
        return sum(self.statuses.values())

    def tests(self) -> set[str]:
        return {test for test, _ in self.statuses}


TALLY = Tally()


@pytest.fixture(scope="module")
def tool_server(small_index, tmp_path_factory):
    backend = ScriptedBackend(default=tool_answer)
    folder = tmp_path_factory.mktemp("fuzz_tool")
    app_settings = ServeSettings(api_key=KEY, uploads_dir=folder / "uploads", **LIMITS)
    app = create_app(make_responder("tool", small_index, backend=backend), small_index, app_settings)
    with ServerThread(app) as server, httpx.Client(base_url=server.url, timeout=30) as client:
        yield server, client


@pytest.fixture(scope="module")
def pegs_server(small_index, tmp_path_factory):
    folder = tmp_path_factory.mktemp("fuzz_pegs")
    responder = make_responder("pegs-ret", small_index, checkpoint=tiny_checkpoint(folder / "pegs"))
    responder.max_new_tokens = 8  # the replies' length is not under test; the inputs are
    app_settings = ServeSettings(api_key=KEY, uploads_dir=folder / "uploads", **LIMITS)
    with (
        ServerThread(create_app(responder, small_index, app_settings)) as server,
        httpx.Client(base_url=server.url, timeout=30) as client,
    ):
        yield server, client


def assert_sound(method: str, path: str, status: int, content_type: str, body: bytes) -> None:
    """No 5xx; an error has exactly OpenAI's fields; a completion is a completion, a stream ends with [DONE]."""
    assert status < 500, f"{method} {path} -> {status}: {body[:500]!r}"
    if method == "HEAD":
        return
    if status >= 400:
        error = json.loads(body)["error"]
        assert set(error) == {"message", "type", "param", "code"}, error
        assert isinstance(error["message"], str) and error["message"] and isinstance(error["type"], str)
        assert error["param"] is None or isinstance(error["param"], str)
        assert error["code"] is None or isinstance(error["code"], str)
    elif path == "/v1/chat/completions" and content_type.startswith("text/event-stream"):
        assert body.endswith(b"data: [DONE]\n\n")
    elif path == "/v1/chat/completions":
        assert json.loads(body)["choices"][0]["message"]["role"] == "assistant"


def send(client: httpx.Client, test: str, method: str, path: str, **kwargs: Any) -> httpx.Response:
    response = client.request(method, path, **kwargs)
    TALLY.record(test, response.status_code)
    assert_sound(method, path, response.status_code, response.headers.get("content-type", ""), response.content)
    return response


# ---------------------------------------------------------------------------- Schemathesis

# The schema of the app the fixtures serve: create_app documents the same operations for any responder, so a
# library-less text server built here (collection time, before fixtures) gives it.
SCHEMA = schemathesis.openapi.from_dict(create_app(make_responder("text", None, backend=ScriptedBackend())).openapi())


def servable(body: dict, keep_model: bool, images: list[str]) -> dict:
    """``body`` with the server's model name (unless ``keep_model``) and ``images`` put into its user messages'
    image parts, or appended to a user message that has none."""
    body = copy.deepcopy(body)
    if not keep_model:
        body["model"] = TOOL_MODEL
    messages = body.get("messages")
    users = (
        [m for m in messages if isinstance(m, dict) and m.get("role") == "user"] if isinstance(messages, list) else []
    )
    for message in users:
        if not images:
            break
        content = message.get("content")
        parts = content if isinstance(content, list) else [{"type": "text", "text": str(content)}]
        slots = [p for p in parts if isinstance(p, dict) and p.get("type") == "image_url"]
        if not slots:
            slots = [{"type": "image_url", "image_url": {}}]
            parts.append(slots[0])
        for part in slots:
            if images:
                part["image_url"] = {"url": images.pop()}
        message["content"] = parts
    return body


@SCHEMA.hook
def flatmap_body(context, body):
    if context.operation is None or context.operation.path != "/v1/chat/completions" or not isinstance(body, dict):
        return st.just(body)
    images = st.lists(st.sampled_from(VALID_IMAGES + LIBRARY_URLS), max_size=3)
    return st.builds(servable, st.just(body), st.booleans(), images)


@SCHEMA.parametrize()
@settings(max_examples=120, deadline=None, suppress_health_check=list(HealthCheck))
def test_schemathesis(case, tool_server):
    server, _ = tool_server
    response = case.call(base_url=server.url, headers=AUTH, timeout=30)
    TALLY.record("schemathesis", response.status_code)
    content_type = response.headers.get("content-type", [""])[0]  # Schemathesis keeps every value of a header
    assert_sound(case.method.upper(), case.operation.path, response.status_code, content_type, response.content)


# ---------------------------------------------------------------------------- Hypothesis

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=20,
)
good_urls = st.sampled_from(VALID_IMAGES + LIBRARY_URLS)
image_urls = good_urls | st.sampled_from(BAD_IMAGES) | st.text(max_size=40)
parts = st.one_of(
    st.fixed_dictionaries({"type": st.just("text"), "text": st.text(max_size=30)}),
    st.fixed_dictionaries({"type": st.just("image_url"), "image_url": st.fixed_dictionaries({"url": image_urls})}),
    st.dictionaries(st.sampled_from(["type", "text", "image_url"]), json_values, max_size=3),
)


def sticker_calls(arguments: st.SearchStrategy[str], names: list[str], kinds: list[str]) -> st.SearchStrategy[list]:
    function = st.fixed_dictionaries({"name": st.sampled_from(names), "arguments": arguments})
    call = st.fixed_dictionaries({"id": st.text(max_size=5), "type": st.sampled_from(kinds), "function": function})
    return st.lists(call, max_size=2)


good_calls = sticker_calls(
    st.sampled_from(['{"sticker_id": "noto/1f600"}', '{"sticker_id": "noto/1f622", "url": "anything"}']),
    ["send_sticker"],
    ["function"],
)
tool_calls = sticker_calls(
    st.sampled_from(['{"sticker_id": "noto/1f600"}', '{"sticker_id": "upload/0"}', '{"sticker_id": 3}', "{", "[]"])
    | st.text(max_size=20),
    ["send_sticker", "other"],
    ["function", "web"],
)
any_message = st.fixed_dictionaries(
    {
        "role": st.sampled_from(["user", "assistant", "system", "developer", "tool", "bot"]),
        "content": st.none() | st.text(max_size=40) | st.lists(parts, max_size=3) | json_values,
    },
    optional={"tool_calls": tool_calls | json_values, "tool_call_id": st.text(max_size=5), "name": json_values},
)


def dialogues(urls: st.SearchStrategy[str], calls: st.SearchStrategy[list]) -> st.SearchStrategy[list]:
    """Well-formed user/assistant turns ending with a user turn; user turns carry an image from ``urls``."""
    user_turn = st.fixed_dictionaries(
        {
            "role": st.just("user"),
            "content": st.tuples(st.text(max_size=30), urls).map(
                lambda t: [{"type": "text", "text": t[0]}, {"type": "image_url", "image_url": {"url": t[1]}}]
            ),
        }
    )
    assistant_turn = st.fixed_dictionaries(
        {"role": st.just("assistant"), "content": st.text(max_size=30)}, optional={"tool_calls": calls}
    )
    return st.lists(st.tuples(user_turn, assistant_turn), max_size=3).flatmap(
        lambda pairs: user_turn.map(lambda last: [m for pair in pairs for m in pair] + [last])
    )


def chat_bodies(model: str) -> st.SearchStrategy[dict]:
    """Half servable requests (valid images and sticker calls, any stream and sampling fields), half anything."""
    servable = st.fixed_dictionaries(
        {"model": st.just(model), "messages": dialogues(good_urls, good_calls)},
        optional={"stream": st.booleans(), "temperature": st.floats(0, 2), "max_tokens": st.integers(1, 500)},
    )
    anything = st.fixed_dictionaries(
        {
            "model": st.just(model) | json_values,
            "messages": dialogues(image_urls, tool_calls) | st.lists(any_message, max_size=10) | json_values,
        },
        optional={
            "stream": st.booleans() | json_values,
            "temperature": json_values,
            "n": st.integers(-2, 3),
            "max_tokens": json_values,
            "stream_options": json_values,
            "tools": json_values,
            "metadata": json_values,
        },
    )
    return servable | anything


FUZZ = settings(deadline=None, suppress_health_check=list(HealthCheck))


@settings(FUZZ, max_examples=300)
@given(body=chat_bodies(TOOL_MODEL))
def test_fuzz_chat_requests(tool_server, body):
    send(tool_server[1], "chat", "POST", "/v1/chat/completions", json=body, headers=AUTH)


@settings(FUZZ, max_examples=100)
@given(body=chat_bodies(PEGS_MODEL))
def test_fuzz_chat_requests_to_pegs(pegs_server, body):
    send(pegs_server[1], "chat-pegs", "POST", "/v1/chat/completions", json=body, headers=AUTH)


@settings(FUZZ, max_examples=100)
@given(
    raw=st.binary(max_size=300),
    content_type=st.sampled_from(["application/json", "text/plain", "", "multipart/form-data"]),
)
def test_fuzz_raw_bodies(tool_server, raw, content_type):
    headers = AUTH | {"Content-Type": content_type}
    send(tool_server[1], "raw", "POST", "/v1/chat/completions", content=raw, headers=headers)


@settings(FUZZ, max_examples=100)
@given(
    sticker_id=st.text(max_size=60) | st.sampled_from(["noto/1f600", "noto/1f600.png", "upload/x", "../stickers"]),
    q=st.text(max_size=80),
    k=st.integers(-5, 100) | st.text(max_size=4),
    label=st.text(max_size=10) | st.sampled_from(["Sadness", "Anger"]),
)
def test_fuzz_stickers_and_search(tool_server, sticker_id, q, k, label):
    client = tool_server[1]
    image = send(client, "stickers", "GET", "/stickers/" + quote(sticker_id, safe=""))
    assert image.status_code in (200, 404)
    params = {"q": q, "k": k} | ({"label": label} if label else {})
    send(client, "stickers", "GET", "/v1/stickers/search", params=params, headers=AUTH)


def test_the_fuzz_made_enough_requests_and_no_server_errors():
    """Runs last (pytest keeps the file's order), on the fuzz tests that ran before it, all of them in a whole run:
    each sent its share of requests, none got a 5xx, and the chat bodies got past validation to a reply."""
    ran = TALLY.tests()
    assert ran, "no fuzz test ran before this one: select it together with the fuzz tests it checks"
    seconds = TALLY.last - TALLY.first
    by_status: Counter[int] = Counter()
    by_test: dict[str, dict[int, int]] = {}
    for (test, status), n in sorted(TALLY.statuses.items()):
        by_status[status] += n
        by_test.setdefault(test, {})[status] = n
    print(f"\nAPI fuzz: {TALLY.total()} requests in {seconds:.0f}s; statuses {dict(by_status)}; by test {by_test}")
    sent = {test: sum(counts.values()) for test, counts in by_test.items()}
    assert {test: n for test, n in sent.items() if n < MIN_REQUESTS[test]} == {}
    assert not [s for s in by_status if s >= 500]
    assert {test for (test, status) in TALLY.statuses if status == 200} >= ran & {"schemathesis", "chat", "chat-pegs"}
