"""The shared vocabulary of StickerConv: stickers, turns, conversations, personas and replies.

Field names follow the published StickerConv dataset (NEUDM/StickerConv, method reference §4)
so that published files load unchanged and what we write loads in the authors' tools. Every
other module uses these models instead of inventing its own dict shapes.
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import PurePosixPath
from typing import Any

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, field_validator, model_validator


class EmotionLabel(StrEnum):
    """The 7 SER30K emotion classes that every sticker label and normalised persona emotion uses."""

    ANGER = "Anger"
    DISGUST = "Disgust"
    FEAR = "Fear"
    HAPPINESS = "Happiness"
    NEUTRAL = "Neutral"
    SADNESS = "Sadness"
    SURPRISE = "Surprise"


EMOTION_LABELS: tuple[str, ...] = tuple(label.value for label in EmotionLabel)

# Raw persona emotions seen in the published profiles (17 labels, data README) mapped onto the 7
# classes. Judgement calls: Love/Excitement/Confidence/Contentment are positive -> Happiness;
# Anxiety -> Fear; Confusion and Curiosity -> Surprise (both are reactions to the unexpected);
# Embarrassment -> Sadness (a self-directed negative feeling, closest of the 7).
_RAW_EMOTIONS: dict[str, EmotionLabel] = {
    "anger": EmotionLabel.ANGER,
    "angry": EmotionLabel.ANGER,
    "disgust": EmotionLabel.DISGUST,
    "fear": EmotionLabel.FEAR,
    "anxiety": EmotionLabel.FEAR,
    "happiness": EmotionLabel.HAPPINESS,
    "happy": EmotionLabel.HAPPINESS,
    "joy": EmotionLabel.HAPPINESS,
    "love": EmotionLabel.HAPPINESS,
    "excitement": EmotionLabel.HAPPINESS,
    "confidence": EmotionLabel.HAPPINESS,
    "contentment": EmotionLabel.HAPPINESS,
    "neutral": EmotionLabel.NEUTRAL,
    "sadness": EmotionLabel.SADNESS,
    "sad": EmotionLabel.SADNESS,
    "embarrassment": EmotionLabel.SADNESS,
    "surprise": EmotionLabel.SURPRISE,
    "confusion": EmotionLabel.SURPRISE,
    "curiosity": EmotionLabel.SURPRISE,
}


def normalise_emotion(raw: str) -> EmotionLabel:
    """Map a free-form emotion word (as in the published profiles) onto the 7 classes."""
    try:
        return _RAW_EMOTIONS[raw.strip().lower()]
    except KeyError:
        known = ", ".join(sorted(_RAW_EMOTIONS))
        raise ValueError(f"unknown emotion {raw!r}; known raw emotions: {known}") from None


def sticker_id_from_path(image: str) -> str:
    """A portable id from an image path: the last two components without extension.

    The published data stores the authors' absolute SER30K paths; the SER30K key
    ``theme/sticker_N`` is what survives across machines (data README).
    """
    parts = PurePosixPath(image.replace("\\", "/")).parts
    tail = parts[-2:] if len(parts) >= 2 else parts
    return str(PurePosixPath(*tail).with_suffix(""))


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class Sticker(_Model):
    """One library sticker. ``label`` reads the published ``origin_anno`` too."""

    id: str = ""
    image: str = Field(min_length=1, description="image path, relative to the library folder")
    description: str = ""
    emotion: str = Field("", description="free-text description of the sticker's emotion, not a label")
    recommendation: str = ""
    label: EmotionLabel | None = Field(None, validation_alias=AliasChoices("label", "origin_anno"))
    seq_num: int | None = Field(None, ge=1)
    style: str | None = None
    source: str | None = None
    licence: str | None = None
    meta: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _default_id(self) -> Sticker:
        if not self.id:
            self.id = sticker_id_from_path(self.image)
        return self

    def to_published(self) -> dict[str, Any]:
        """The exact sticker dict of the published dataset (method reference §4.2)."""
        return {
            "seq_num": self.seq_num,
            "image": self.image,
            "description": self.description,
            "emotion": self.emotion,
            "recommendation": self.recommendation,
            "origin_anno": self.label.value if self.label else None,
        }


class Turn(_Model):
    """One user message and the system's reply, each with an optional sticker."""

    turn: int = Field(ge=1)
    user_message: str
    system_message: str
    user_sticker: Sticker | None = None
    system_sticker: Sticker | None = None

    def to_published(self) -> dict[str, Any]:
        return {
            "turn": self.turn,
            "user_message": self.user_message,
            "system_message": self.system_message,
            "user_sticker": self.user_sticker.to_published() if self.user_sticker else None,
            "system_sticker": self.system_sticker.to_published() if self.system_sticker else None,
        }


class Conversation(_Model):
    """A dialogue record with the published keys; provenance goes only under ``meta``."""

    conversation: list[Turn] = Field(min_length=1)
    user_persona: str
    user_status: str
    meta: dict[str, Any] | None = None

    @field_validator("conversation")
    @classmethod
    def _turns_consecutive(cls, turns: list[Turn]) -> list[Turn]:
        for expected, turn in enumerate(turns, start=1):
            if turn.turn != expected:
                raise ValueError(f"turn numbers must run 1, 2, 3, ...; found {turn.turn} at position {expected}")
        return turns

    @property
    def stickers(self) -> list[Sticker]:
        return [s for t in self.conversation for s in (t.user_sticker, t.system_sticker) if s is not None]

    def to_published(self) -> dict[str, Any]:
        record: dict[str, Any] = {
            "conversation": [t.to_published() for t in self.conversation],
            "user_persona": self.user_persona,
            "user_status": self.user_status,
        }
        if self.meta is not None:  # an empty meta survives a round trip too
            record["meta"] = self.meta
        return record


class Persona(_Model):
    """A user profile as published (``emotion``, ``persona``, ``situation``), plus its 7-class label."""

    emotion: str = Field(min_length=1, description="raw emotion word as written by the generator")
    persona: str = Field(min_length=1)
    situation: str = Field(min_length=1)
    id: str | None = None

    @property
    def label(self) -> EmotionLabel:
        return normalise_emotion(self.emotion)


class Reply(_Model):
    """What a responder says: text and at most one sticker."""

    text: str
    sticker: Sticker | None = None


class DialogueContext(_Model):
    """What a responder sees before it answers: the earlier turns, then the user's new message and
    sticker. Persona and situation are known to simulators and test sets, never required."""

    history: list[Turn] = []
    user_message: str
    user_sticker: Sticker | None = None
    user_persona: str | None = None
    user_status: str | None = None
