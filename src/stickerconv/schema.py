"""The shared vocabulary of StickerConv: stickers, turns, conversations, personas, replies, and the
per-turn samples and predictions that training and evaluation exchange.

Field names follow the published StickerConv dataset (NEUDM/StickerConv, method reference §4)
so that published files load unchanged and what we write loads in the authors' tools. Every
other module uses these models instead of inventing its own dict shapes.
"""

from __future__ import annotations

from collections.abc import Mapping
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
IMG = "<IMG>"  # a sticker's place in a sample's text (method reference §4.4)
PRED_TEXT, PRED_TEXT_MISSPELT = "pred_text_response", "pred_text_reponse"  # the original code wrote the latter
PRED_TEXT_KEYS = (PRED_TEXT, PRED_TEXT_MISSPELT)  # where a prediction's text is read, the correct key first

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


class Sample(BaseModel):
    """One §4.4 sample: the dialogue so far and the gold system reply of one turn (rendered by
    :func:`stickerconv.data.samples.render_samples`)."""

    model_config = ConfigDict(extra="forbid")

    input_text: str
    input_image: list[str]
    response_text: str
    response_image: list[str]
    user_persona: str
    user_status: str
    input_image_metadata: dict[str, Any] | None
    response_image_metadata: dict[str, Any] | None
    query: str
    history: list[tuple[str, str]]

    def problems(self) -> list[tuple[str, str]]:
        """Broken invariants as (field, message); the placeholders must match the image lists."""
        out = []
        if self.input_text.count(IMG) != len(self.input_image):
            out.append(
                (
                    "input_image",
                    f"{len(self.input_image)} image(s) but input_text has {self.input_text.count(IMG)} {IMG}",
                )
            )
        if self.response_text.count(IMG) != len(self.response_image) or len(self.response_image) > 1:
            out.append(
                (
                    "response_image",
                    f"{len(self.response_image)} image(s) but response_text has {self.response_text.count(IMG)} "
                    f"{IMG} (at most one sticker per reply)",
                )
            )
        return out


class Prediction(Sample):
    """A sample with a responder's reply, one record of what ``eval predict`` writes and every scorer reads.

    ``item_id`` is ``<session>:<turn>`` (or ``s<n>`` for a samples file), stable across reruns; the predicted
    text reads either spelling (the original code wrote ``pred_text_reponse``) and is written correctly;
    ``pred_image`` holds the predicted sticker's path (0 or 1) and ``pred_image_metadata`` its published dict
    (:meth:`Sticker.to_published`); ``pred_meta`` is the responder's provenance (``Responder.describe``).
    The gold reply is the sample's ``response_text`` / ``response_image`` / ``response_image_metadata``.
    Written with ``model_dump(mode="json")``: every field, nulls included, in this order.
    """

    item_id: str | None = None
    pred_text_response: str = Field(validation_alias=AliasChoices(PRED_TEXT, PRED_TEXT_MISSPELT))
    pred_image: list[str] = []
    pred_image_metadata: dict[str, Any] | None = None
    pred_meta: dict[str, Any] | None = None

    def problems(self) -> list[tuple[str, str]]:
        out = super().problems()
        if len(self.pred_image) > 1:
            out.append(("pred_image", f"{len(self.pred_image)} images (at most one sticker per reply)"))
        return out


# What the scorers take: the model, or the plain JSON dict a predictions file holds (``load_predictions``
# keeps them plain, and the paper's own files may lack the fields the scorer at hand does not read).
PredictionRecord = Prediction | Mapping[str, Any]


def prediction_fields(record: PredictionRecord) -> Mapping[str, Any]:
    """A prediction's fields under their JSON names, whichever form it came in: the scorers read this one
    view, so a key is named by the model's fields and nowhere else."""
    return vars(record) if isinstance(record, Prediction) else record
