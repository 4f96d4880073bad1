import asyncio
import json

import pytest

from stickerconv.llm import ChatModel, LLMConfig, LLMFactory
from stickerconv.responders import (
    EMPATHETIC_SYSTEM_PROMPT,
    ResponderError,
    StickerToolResponder,
    TextOnlyResponder,
    build_responder,
)
from stickerconv.schema import DialogueContext, Sticker, Turn

from helpers.llm_fakes import ScriptedBackend

STICKER = Sticker(image="images/noto/1f622.png", description="A crying face.", emotion="sadness", label="Sadness")
CONTEXT = DialogueContext(
    history=[Turn(turn=1, user_message="I failed my exam.", system_message="I'm sorry.", system_sticker=STICKER)],
    user_message="I studied so hard for it.",
    user_sticker=STICKER,
)


def test_text_only_sees_the_dialogue_but_no_stickers():
    backend = ScriptedBackend(replies=["A: That must hurt after all that work."])
    reply = asyncio.run(TextOnlyResponder(ChatModel(backend)).respond(CONTEXT))
    assert reply.text == "That must hurt after all that work." and reply.sticker is None
    (request,) = backend.requests
    roles = [m.role for m in request.messages]
    assert roles == ["system", "user", "assistant", "user"] and request.messages[0].text == EMPATHETIC_SYSTEM_PROMPT
    assert "sticker" not in " ".join(m.text for m in request.messages[1:])
    assert request.settings.temperature == 0.5 and request.settings.max_tokens == 200  # the paper's decoding


def test_baseline_replies_are_readable(small_index):
    """Cut by the token budget and repeating itself, the model's answer still reads as a finished reply."""
    rambling = "A: It hurts, I know. I'm here to listen, I'm there to listen. It hurts, I know! I know how hard you"
    reply = asyncio.run(TextOnlyResponder(ChatModel(ScriptedBackend(replies=[rambling]))).respond(CONTEXT))
    assert reply.text == "It hurts, I know. I'm here to listen."
    answer = {"text": "I hear you. I hear you! Rest now and", "tool": "none", "query": ""}
    backend = ScriptedBackend(replies=[json.dumps(answer)])
    reply = asyncio.run(StickerToolResponder(ChatModel(backend), small_index).respond(CONTEXT))
    assert reply.text == "I hear you."


def test_tool_responder_retrieves_the_top_sticker_for_its_query(small_index):
    answer = {"text": "That sounds so hard.", "tool": "send_sticker", "query": "a sad crying face, tears"}
    backend = ScriptedBackend(replies=[json.dumps(answer)])
    reply = asyncio.run(StickerToolResponder(ChatModel(backend), small_index).respond(CONTEXT))
    assert reply.text == "That sounds so hard."
    assert reply.sticker == small_index.search(answer["query"], k=1)[0].sticker
    assert reply.sticker.label.value == "Sadness"
    prompt = " ".join(m.text for m in backend.requests[0].messages)
    assert "[sends a sticker - emotion: sadness; description: A crying face.]" in prompt  # stickers shown as text


@pytest.mark.parametrize(
    "answer",
    [
        {"text": "I hear you.", "tool": "none", "query": ""},
        {"text": "I hear you.", "tool": "send_sticker", "query": ""},
    ],
)
def test_tool_responder_without_a_usable_call_sends_no_sticker(small_index, answer):
    backend = ScriptedBackend(replies=[json.dumps(answer)])
    reply = asyncio.run(StickerToolResponder(ChatModel(backend), small_index).respond(CONTEXT))
    assert reply.text == "I hear you." and reply.sticker is None


def test_registry_names_and_errors(small_index):
    factory = LLMFactory(LLMConfig())
    factory.register_backend("local", ScriptedBackend())
    assert isinstance(build_responder("text", factory), TextOnlyResponder)
    assert isinstance(build_responder("tool", factory, small_index), StickerToolResponder)
    with pytest.raises(ResponderError, match="needs an indexed sticker library"):
        build_responder("tool", factory)
    with pytest.raises(ResponderError, match="unknown responder .pegs.; choose from text, tool, pegs-ret"):
        build_responder("pegs", factory)
