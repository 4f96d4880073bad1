"""Builders shared by the serving tests (no tests here): uploads made from real stickers, the five responders
as the server builds them, and a tap on PEGS's vision encoder that shows which pixels the model looked at."""

from __future__ import annotations

import base64
import hashlib
import io
import json
from pathlib import Path

import torch
from PIL import Image, ImageOps

from stickerconv.llm import LLMConfig, LLMFactory
from stickerconv.responders import Responder, build_responder
from stickerconv.schema import DialogueContext
from stickerconv.stickers.index import StickerIndex
from stickerconv.stickers.library import StickerLibrary

from helpers.llm_fakes import ScriptedBackend
from helpers.pegs import boost_token, tiny_model

RESPONDER_NAMES = ("text", "tool", "pegs-ret", "pegs-gen", "pegs-rag")
TOOL_TEXT = "That sounds so hard; I'm here with you."


def tool_answer(request) -> str:
    return json.dumps({"text": TOOL_TEXT, "tool": "send_sticker", "query": "emotion: Sadness, sad, crying"})


def data_uri(raw: bytes, mime: str) -> str:
    return f"data:{mime};base64,{base64.b64encode(raw).decode()}"


def upload_bytes(library: StickerLibrary, index: int, fmt: str) -> bytes:
    """A library sticker as a user would send it: re-encoded (JPEG on white; PNG mirrored), so its bytes are
    not the library's and the server takes it as an upload."""
    with Image.open(library.image_path(library.stickers[index])) as raw:
        rgba = raw.convert("RGBA")
    out = io.BytesIO()
    if fmt == "JPEG":
        flat = Image.new("RGB", rgba.size, (255, 255, 255))
        flat.paste(rgba, mask=rgba.getchannel("A"))
        flat.save(out, "JPEG", quality=90)
    else:
        ImageOps.mirror(rgba).save(out, "PNG")
    return out.getvalue()


def upload_id(raw: bytes) -> str:
    """The sticker id the server gives an upload (docs/serving.md)."""
    return "upload/" + hashlib.sha256(raw).hexdigest()[:16]


def scripted_factory(backend: ScriptedBackend) -> LLMFactory:
    factory = LLMFactory(LLMConfig(llm="local", cache="off"))
    factory.register_backend("local", backend)
    return factory


def tiny_checkpoint(folder: Path) -> Path:
    """An untrained tiny PEGS checkpoint (with the tiny random SD section that painting needs)."""
    return tiny_model().save_pretrained(folder)


def make_responder(
    name: str,
    index: StickerIndex,
    *,
    backend: ScriptedBackend | None = None,
    checkpoint: Path | None = None,
    generated_dir: Path | None = None,
) -> Responder:
    """``name`` built the way ``stickerconv serve`` builds it. A PEGS responder is made to send a sticker
    (its untrained model would rarely choose [IMG1] on its own), so that replies carry one."""
    factory = scripted_factory(backend) if backend is not None else None
    responder = build_responder(name, factory, index, checkpoint=checkpoint, generated_dir=generated_dir)
    if name.startswith("pegs-"):
        probe = DialogueContext(history=[], user_message="probe", user_sticker=index.library.stickers[0])
        boost_token(responder.model, responder.prompt(probe), responder.model.img_ids[0], 100.0)
    return responder


class VisionTap:
    """Records the pixel batches PEGS's perception encoder receives (a forward hook on the real encoder)."""

    def __init__(self, responder: Responder):
        self.model = responder.model
        self.batches: list[torch.Tensor] = []
        self.model.vision.register_forward_hook(lambda module, args, out: self.batches.append(args[0].detach()))

    def pixels_of(self, path: Path) -> torch.Tensor:
        """What the encoder receives for the image at ``path``: the model's own transform."""
        return self.model.collator().transform(path)

    def saw(self, path: Path, batch: int = -1) -> bool:
        """Whether the image at ``path`` is one of the rows of the ``batch``-th pixel batch."""
        expected = self.pixels_of(path)
        return any(torch.allclose(row, expected) for row in self.batches[batch])
