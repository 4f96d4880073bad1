"""The prompts of the sticker annotation pipeline (method reference §3) and how their answers are read.

Kept apart from the pipeline so that the questions can be read, reviewed and compared with the
published records in one place. The five caption questions are the ones in the authors' published
``caption_sticker`` records, word for word; the filter and knowledge prompts are paraphrases of
the method reference.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from stickerconv.schema import EMOTION_LABELS, EmotionLabel, normalise_emotion

# Stage 1: a 3-turn conversation per sample; the image goes with the first question.
FILTER_QUESTIONS: tuple[str, ...] = (
    "Summarise the content of this sticker.",
    "Analyse whether this sticker is suitable for use in casual chat between friends, and explain why.",
    "So, is this sticker suitable for casual chat? Answer with yes or no.",
)

# Stage 2: one multi-turn conversation; the image goes with the first question (the published
# records mark it with LLaVA's ``<image>`` token, which ``IMAGE_TOKEN`` reproduces in our records).
CAPTION_QUESTIONS: tuple[str, ...] = (
    "What does this sticker depict?",
    "What emotion does this sticker want to convey?",
    "What chat scenes is this sticker suitable for use in?",
    "Is the overall emotion of this sticker positive or negative?",
    "Does this sticker have any satirical or humorous meaning? If yes, please provide a detailed description.",
)
IMAGE_TOKEN = "<image>\n"

# Stage 3: a text model condenses the Q&A into the three fields the index and the agents use.
KNOWLEDGE_SYSTEM = (
    "You are a sticker and meme analyst. You read questions about one chat sticker and the answers a "
    "vision model gave, and you condense them into short, accurate knowledge about the sticker."
)
KNOWLEDGE_INSTRUCTION = (
    "Elaborate on what the sticker shows, on its emotional nuances (sentiment, humour, irony, satire) and on "
    "how it is best used in casual chat. Then give:\n"
    "- description: a brief description of what the sticker depicts (one or two sentences);\n"
    "- emotion: a brief free-text description of the emotion it conveys, including any humour, irony or "
    "satire (a sentence or two, not a single word);\n"
    "- recommendation: a brief note on when and how to use the sticker in casual chat;\n"
    f"- label: the one emotion class that fits it best, one of {', '.join(EMOTION_LABELS)}."
)

Vote = Literal["yes", "no", "unknown"]

_REFUSAL = re.compile(
    r"^\W*(i'?m sorry|i am sorry|sorry,? (but )?i\b|i can(no|')?t\b|i can not\b|i am unable|i'?m unable|"
    r"i am not able|i'?m not able|i won'?t\b|as an ai\b|unfortunately,? i\b)",
    re.IGNORECASE,
)
_VOTE_PREFIX = re.compile(r"^[\W_]*(?:(?:final\s+)?answer\s*[:\-]\s*)?[\W_]*", re.IGNORECASE)


def classify_vote(answer: str) -> Vote:
    """A filter answer by its prefix, as the authors did: ``yes``, ``no`` or ``unknown``.

    Leading punctuation, Markdown emphasis and an ``Answer:`` label are ignored, so ``**Yes.**`` and
    ``Answer: no`` count; anything else (a refusal, a hedge) is ``unknown``.
    """
    text = _VOTE_PREFIX.sub("", answer.strip()).lower()
    if text.startswith("yes"):
        return "yes"
    if text.startswith("no"):
        return "no"
    return "unknown"


def is_refusal(answer: str) -> bool:
    """Whether a model's answer opens by declining ("I'm sorry, but I can't ...")."""
    return bool(_REFUSAL.match(answer))


def knowledge_prompt(qa: Sequence[Any]) -> str:
    """The Q&A as ``QUESTION:`` / ``ANSWER:`` lines (the form the authors' analyst read), then the task."""
    lines = [f"QUESTION: {_plain(item.query)}\nANSWER: {item.output.strip()}" for item in qa]
    return "Questions about a sticker and the answers:\n\n" + "\n\n".join(lines) + "\n\n" + KNOWLEDGE_INSTRUCTION


def _plain(query: str) -> str:
    return query.removeprefix(IMAGE_TOKEN)


class Knowledge(BaseModel):
    """What stage 3 must return; validated, so a malformed answer is retried and then reported."""

    model_config = ConfigDict(extra="ignore", title="StickerKnowledge")
    description: str = Field(min_length=1, description="brief description of what the sticker depicts")
    emotion: str = Field(min_length=1, description="free-text emotion: sentiment, humour, irony, satire")
    recommendation: str = Field(min_length=1, description="when and how to use the sticker in casual chat")
    label: EmotionLabel = Field(description="the emotion class that fits the sticker best")

    @field_validator("description", "emotion", "recommendation", mode="before")
    @classmethod
    def _strip(cls, value: Any) -> Any:
        return value.strip() if isinstance(value, str) else value

    @field_validator("label", mode="before")
    @classmethod
    def _any_case(cls, value: Any) -> Any:
        """``happiness`` or ``Joy`` are the same answer; other words still fail validation."""
        if isinstance(value, str):
            try:
                return normalise_emotion(value)
            except ValueError:
                return value
        return value
