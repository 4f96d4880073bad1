import json

import pytest
from pydantic import ValidationError

from stickerconv.jsonl import read_jsonl
from stickerconv.schema import (
    EMOTION_LABELS,
    Conversation,
    EmotionLabel,
    Persona,
    Reply,
    Sticker,
    normalise_emotion,
    sticker_id_from_path,
)

from helpers.paths import fixture_file

PUBLISHED_STICKER = {
    "seq_num": 3,
    "image": "/datas/llm_datasets/SER_Dataset/Images/pepe-7/sticker_18.jpg",
    "description": "A green frog crying.",
    "emotion": "The sticker conveys sadness.",
    "recommendation": "Use it when things go wrong.",
    "origin_anno": "Sadness",
}


def test_seven_labels():
    assert EMOTION_LABELS == ("Anger", "Disgust", "Fear", "Happiness", "Neutral", "Sadness", "Surprise")


def test_published_sticker_reads_origin_anno_and_round_trips():
    sticker = Sticker.model_validate(PUBLISHED_STICKER)
    assert sticker.label is EmotionLabel.SADNESS
    assert sticker.id == "pepe-7/sticker_18"
    assert sticker.to_published() == PUBLISHED_STICKER
    again = Sticker.model_validate_json(sticker.model_dump_json())
    assert again == sticker


def test_sticker_rejects_unknown_label_and_unknown_field():
    with pytest.raises(ValidationError, match="label"):
        Sticker(image="a.png", label="Joy")
    with pytest.raises(ValidationError, match="colour"):
        Sticker.model_validate({"image": "a.png", "colour": "red"})


def test_sticker_id_from_path():
    assert sticker_id_from_path("C:\\x\\Images\\cat-1\\sticker_2.png") == "cat-1/sticker_2"
    assert sticker_id_from_path("flat.webp") == "flat"


def _conversation_record():
    return {
        "conversation": [
            {
                "turn": 1,
                "user_message": "I failed.",
                "system_message": "I'm sorry.",
                "user_sticker": PUBLISHED_STICKER,
                "system_sticker": None,
            },
            {
                "turn": 2,
                "user_message": "Thanks.",
                "system_message": "Any time.",
                "user_sticker": None,
                "system_sticker": None,
            },
        ],
        "user_persona": "You are a student.",
        "user_status": "You failed an exam.",
    }


def test_conversation_published_round_trip():
    record = _conversation_record()
    conv = Conversation.model_validate(record)
    assert conv.to_published() == record
    assert [s.id for s in conv.stickers] == ["pepe-7/sticker_18"]
    assert Conversation.model_validate_json(conv.model_dump_json()) == conv


def test_conversation_meta_is_the_only_extra_key():
    record = _conversation_record() | {"meta": {"seed": 1}}
    assert Conversation.model_validate(record).to_published()["meta"] == {"seed": 1}
    with pytest.raises(ValidationError, match="provenance"):
        Conversation.model_validate(_conversation_record() | {"provenance": {}})


def test_conversation_turns_must_be_consecutive():
    record = _conversation_record()
    record["conversation"][1]["turn"] = 3
    with pytest.raises(ValidationError, match="found 3 at position 2"):
        Conversation.model_validate(record)


def test_real_profiles_load_and_every_raw_emotion_normalises():
    personas = read_jsonl(fixture_file("stickerconv", "profiles", "train_profile_excerpt.jsonl"), Persona)
    assert len(personas) == 306  # the excerpt keeps every one of the source's 17 raw labels
    labels = {p.emotion: p.label for p in personas}
    assert len(labels) == 17
    assert labels["Joy"] is EmotionLabel.HAPPINESS
    assert labels["Anxiety"] is EmotionLabel.FEAR
    assert any(not (p.persona + p.situation).isascii() for p in personas)  # an en dash, kept as UTF-8


def test_normalise_emotion_rejects_unknown():
    with pytest.raises(ValueError, match="unknown emotion 'Boredom'"):
        normalise_emotion("Boredom")


def test_reply_round_trip():
    reply = Reply(text="There, there.", sticker=Sticker(image="images/noto/1f917.png", label="Happiness"))
    assert Reply.model_validate(json.loads(reply.model_dump_json())) == reply
