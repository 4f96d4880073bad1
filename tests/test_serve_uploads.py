"""Users' images reach every responder: a JPEG and a PNG sticker sent as data URIs through the official ``openai``
SDK to a live server (a loopback port) answer 200 with ``text``, ``tool``, ``pegs-ret``, ``pegs-gen`` and
``pegs-rag``; the upload is kept once under its content hash, served at its sticker URL, resolves when it comes
back in the history (as the data URI or as that URL), and PEGS's vision encoder receives its pixels."""

from __future__ import annotations

import json
import threading

import httpx
import openai
import pytest
import torch

from stickerconv.responders.sticker_folder import StickerFolder
from stickerconv.schema import Sticker
from stickerconv.serve import ServerThread, ServeSettings, create_app
from stickerconv.serve.stickers import UNKNOWN_IMAGE
from stickerconv.stickers.library import StickerLibrary

from helpers.llm_fakes import ScriptedBackend
from helpers.serve import (
    RESPONDER_NAMES,
    TOOL_TEXT,
    VisionTap,
    data_uri,
    make_responder,
    tiny_checkpoint,
    tool_answer,
    upload_bytes,
    upload_id,
)

KEY = "uploads-key"
MIME = {"JPEG": "image/jpeg", "PNG": "image/png"}
SUFFIX = {"JPEG": ".jpg", "PNG": ".png"}


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return tiny_checkpoint(tmp_path_factory.mktemp("pegs_tiny"))


@pytest.fixture(scope="module")
def uploads(small_index) -> dict[str, bytes]:
    """Two different stickers, one as a JPEG and one as a PNG, neither byte-identical to a library image."""
    return {"JPEG": upload_bytes(small_index.library, 10, "JPEG"), "PNG": upload_bytes(small_index.library, 40, "PNG")}


def sticker_url(call) -> str:
    return json.loads(call.function.arguments)["url"]


def user(text: str, url: str) -> dict:
    return {
        "role": "user",
        "content": [{"type": "text", "text": text}, {"type": "image_url", "image_url": {"url": url}}],
    }


@pytest.mark.parametrize("name", RESPONDER_NAMES)
def test_uploads_reach_every_responder(name, small_index, checkpoint, uploads, tmp_path):
    pegs, painting = name.startswith("pegs-"), name in ("pegs-gen", "pegs-rag")
    backend = ScriptedBackend(default=tool_answer if name == "tool" else "I hear you.")
    generated = tmp_path / "generated" if painting else None
    responder = make_responder(
        name, small_index, backend=backend, checkpoint=checkpoint if pegs else None, generated_dir=generated
    )
    tap = VisionTap(responder) if pegs else None
    settings = ServeSettings(api_key=KEY, uploads_dir=tmp_path / "uploads", generated_dir=generated)
    model = f"stickerconv-{name}"
    stored = {fmt: tmp_path / "uploads" / (upload_id(raw) + SUFFIX[fmt]) for fmt, raw in uploads.items()}
    replies = {}
    with ServerThread(create_app(responder, small_index, settings)) as server:
        client = openai.OpenAI(base_url=f"{server.url}/v1", api_key=KEY, max_retries=0)
        for fmt, raw in uploads.items():
            completion = client.chat.completions.create(
                model=model, messages=[user("I failed my exam.", data_uri(raw, MIME[fmt]))]
            )
            replies[fmt] = message = completion.choices[0].message
            assert isinstance(message.content, str) and completion.choices[0].finish_reason == "stop"
            assert stored[fmt].read_bytes() == raw  # kept under its content hash
            served = httpx.get(f"{server.url}/stickers/{upload_id(raw)}")
            assert served.status_code == 200 and served.content == raw
            assert served.headers["content-type"] == MIME[fmt]
            if tap is not None:  # the upload's own pixels went through the perception encoder
                assert len(tap.batches[-1]) == 1 and tap.saw(stored[fmt])
                assert message.tool_calls, "the boosted PEGS model sends a sticker"
            elif name == "tool":
                assert message.content == TOOL_TEXT
                assert UNKNOWN_IMAGE in backend.requests[-1].messages[-1].text
        if tap is not None:  # two different uploads are two different inputs, not one placeholder
            assert not torch.allclose(tap.pixels_of(stored["JPEG"]), tap.pixels_of(stored["PNG"]))
        for call in replies["JPEG"].tool_calls or []:  # the reply's sticker (painted ones too) is served
            assert httpx.get(sticker_url(call)).status_code == 200

        # later in the history: the JPEG as the URL the server serves it at, the reply as the SDK gave it
        jpeg_url = f"{server.url}/stickers/{upload_id(uploads['JPEG'])}"
        messages = [
            user("I failed my exam.", jpeg_url),
            replies["JPEG"],
            user("It still hurts.", data_uri(uploads["PNG"], MIME["PNG"])),
        ]
        follow = client.chat.completions.create(model=model, messages=messages)
        assert isinstance(follow.choices[0].message.content, str)
        if tap is not None:
            assert len(tap.batches[-1]) == 2 and tap.saw(stored["JPEG"]) and tap.saw(stored["PNG"])
        chunks = list(client.chat.completions.create(model=model, messages=messages, stream=True))
        assert chunks[-1].choices[0].finish_reason == "stop"
    # each upload was written once, whatever came back how often
    assert sorted(s.id for s in StickerLibrary.load(tmp_path / "uploads")) == sorted(map(upload_id, uploads.values()))


def test_uploads_default_to_a_folder_of_the_server_s_own(small_index, uploads):
    """Without ``uploads_dir`` the server keeps uploads in a temporary folder: they resolve all the same."""
    backend = ScriptedBackend(default="Here for you.")
    responder = make_responder("text", small_index, backend=backend)
    app = create_app(responder, small_index, ServeSettings())
    raw = uploads["PNG"]
    with ServerThread(app) as server:
        client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="any", max_retries=0)
        for url in (data_uri(raw, "image/png"), f"/stickers/{upload_id(raw)}.png"):
            reply = client.chat.completions.create(model="stickerconv-text", messages=[user("look", url)])
            assert reply.choices[0].message.content == "Here for you."
    folder = app.state.catalog.uploads.root
    assert (folder / (upload_id(raw) + ".png")).read_bytes() == raw


def test_a_sticker_folder_is_shared_by_a_writer_and_a_reader(tmp_path):
    """The mechanism under painted stickers and uploads: what one object writes another reads without a
    restart, concurrent additions are all kept, and an image file is written once."""
    writer, reader = StickerFolder(tmp_path / "folder"), StickerFolder(tmp_path / "folder")
    assert reader.get("a/0") is None  # nothing written yet: no folder, no error

    def add(i: int) -> None:
        writer.put(Sticker(id=f"a/{i}", image=f"a/{i}.png"), bytes([i]) * 8, replace=False)

    threads = [threading.Thread(target=add, args=(i,)) for i in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert {s.id for s in StickerLibrary.load(tmp_path / "folder")} == {f"a/{i}" for i in range(12)}
    assert reader.get("a/7") == Sticker(id="a/7", image="a/7.png")
    first = (tmp_path / "folder" / "a" / "3.png").stat().st_mtime_ns
    kept = writer.put(Sticker(id="a/3", image="a/3.png", description="again"), b"other", replace=False)
    assert kept.description == "" and (tmp_path / "folder" / "a" / "3.png").stat().st_mtime_ns == first
    replaced = writer.put(Sticker(id="a/3", image="a/3.png", description="again"), b"other")
    assert replaced.description == reader.get("a/3").description == "again"
