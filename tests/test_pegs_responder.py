"""PEGS responders: pegs-ret answers with a library sticker; pegs-gen and pegs-rag paint through tiny random SD."""

from __future__ import annotations

import asyncio

import pytest

from stickerconv.pegs.model import PegsModel
from stickerconv.responders.pegs import PegsResponder
from stickerconv.schema import DialogueContext, Reply, Turn
from stickerconv.stickers.library import StickerLibrary

from helpers.pegs import boost_token, tiny_model


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """An untrained tiny checkpoint: the tests make it send a sticker by boosting [IMG1] anyway."""
    return tiny_model().save_pretrained(tmp_path_factory.mktemp("pegs_untrained"))


@pytest.fixture(scope="module")
def library(small_pack):
    full = StickerLibrary.load(small_pack)
    return StickerLibrary(full.root, full.stickers[:40])


def _context(library: StickerLibrary) -> DialogueContext:
    s = library.stickers
    history = [Turn(turn=1, user_message="Hi there.", system_message="Hello!", system_sticker=s[3])]
    return DialogueContext(history=history, user_message="I failed my exam.", user_sticker=s[1])


def _sending(responder: PegsResponder, context: DialogueContext) -> None:
    """Make the model choose [IMG1] for this context."""
    boost_token(responder.model, responder.prompt(context), responder.model.img_ids[0], 100.0)


def test_pegs_ret_replies_with_a_library_sticker(checkpoint, library):
    responder = PegsResponder(PegsModel.from_pretrained(checkpoint), library, "ret", checkpoint=str(checkpoint))
    assert responder.name == "pegs-ret" and responder.matrix.shape == (40, 256)
    context = _context(library)
    _sending(responder, context)
    reply = asyncio.run(responder.respond(context))
    assert isinstance(reply, Reply) and reply.sticker in library.stickers
    again = asyncio.run(responder.respond(context))
    assert again.sticker == reply.sticker  # stateless by default


def test_pegs_ret_no_repeat_within_a_dialogue(checkpoint, library):
    responder = PegsResponder(PegsModel.from_pretrained(checkpoint), library, "ret", no_repeat=True)
    context = _context(library)
    _sending(responder, context)
    first, second = (asyncio.run(responder.respond(context)) for _ in range(2))
    assert first.sticker in library.stickers and second.sticker in library.stickers
    assert first.sticker != second.sticker


@pytest.mark.parametrize("mode", ["gen", "rag"])
def test_pegs_gen_and_rag_write_generated_stickers_with_provenance(checkpoint, library, tmp_path, mode):
    responder = PegsResponder(PegsModel.from_pretrained(checkpoint), library, mode, generated_dir=tmp_path)
    context = _context(library)
    _sending(responder, context)
    reply = asyncio.run(responder.respond(context))
    assert reply.sticker is not None and (tmp_path / reply.sticker.image).is_file()
    stored = StickerLibrary.load(tmp_path)
    assert stored.by_id()[reply.sticker.id] == reply.sticker
    meta = reply.sticker.meta
    assert meta["responder"] == f"pegs-{mode}" and meta["steps"] == 2
    if mode == "rag":
        assert meta["strength"] == 0.8 and meta["base_sticker"] in {s.id for s in library.stickers}


def test_pegs_responder_rejects_a_mode_the_model_cannot_serve(checkpoint, library):
    with pytest.raises(ValueError, match="generated_dir"):
        PegsResponder(PegsModel.from_pretrained(checkpoint), library, "gen")
