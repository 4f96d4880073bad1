"""The published-format fixtures of helpers/data.py hold exactly the §4.3 record keys and round-trip."""

from __future__ import annotations

from stickerconv.schema import Conversation

from helpers.data import published_sessions


def test_fixture_sessions_have_exactly_the_published_keys():
    sessions = published_sessions()
    assert len(sessions) == 10
    for record in sessions:
        assert list(record) == ["conversation", "user_persona", "user_status"]
        for i, turn in enumerate(record["conversation"], start=1):
            assert list(turn) == ["turn", "user_message", "system_message", "user_sticker", "system_sticker"]
            assert turn["turn"] == i
            for sticker in (turn["user_sticker"], turn["system_sticker"]):
                assert sticker is None or list(sticker) == [
                    "seq_num",
                    "image",
                    "description",
                    "emotion",
                    "recommendation",
                    "origin_anno",
                ]
        conversation = Conversation.model_validate(record)
        assert conversation.stickers and conversation.to_published() == record
