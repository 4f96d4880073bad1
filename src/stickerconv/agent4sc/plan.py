"""The sticker tool of an agent's plan (method reference §2.7): intent -> query -> retrieve -> select.

Fixes of the original carried here: one intent enum with lenient matching of near-misses (its
"Emoathy" typo made the gate never open, §9 item 3); the intent string, not a dict, goes into
the later prompts (item 4); the selection is schema-constrained, its range checked, and every
failure counted and returned instead of silently becoming "no sticker" (item 12).
"""

from __future__ import annotations

import difflib
import random
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, Field, field_validator

from stickerconv.llm import ChatModel, LLMError, system, user
from stickerconv.schema import EmotionLabel, Sticker
from stickerconv.stickers.index import TEXT_TEMPLATES, SearchHit, StickerIndex


class Intent(StrEnum):
    EXPRESSION = "Emotional Expression"
    EMPATHY = "Enhancing Empathy"
    INTENSITY = "Reaction Intensity"
    OTHER = "Other"
    NONE = "None"


STICKER_INTENTS = frozenset({Intent.EXPRESSION, Intent.EMPATHY, Intent.INTENSITY})


class IntentAnswer(BaseModel):
    intention: Intent

    @field_validator("intention", mode="before")
    @classmethod
    def _lenient(cls, value: Any) -> Any:
        """Accept case slips and typos ("enhancing emoathy") of a known intent, nothing further off."""
        if not isinstance(value, str) or value in {i.value for i in Intent}:
            return value
        by_lower = {i.value.lower(): i.value for i in Intent}
        match = difflib.get_close_matches(value.strip().lower(), list(by_lower), n=1, cutoff=0.8)
        return by_lower[match[0]] if match else value


class QueryAnswer(BaseModel):
    query: str = Field(min_length=3, max_length=600)


class SelectAnswer(BaseModel):
    idx: int = Field(ge=0, le=9)


@dataclass
class PlanOutcome:
    """What the plan step did, recorded in the dialogue's provenance."""

    intent: Intent | None = None
    query: str | None = None
    candidates: list[SearchHit] = field(default_factory=list)
    selected: Sticker | None = None
    failure: str | None = None  # why no sticker although one was wanted (a failed or invalid answer)

    def to_meta(self) -> dict[str, Any]:
        return {
            "intent": self.intent.value if self.intent else None,
            "query": self.query,
            "candidates": [[h.sticker.id, round(h.score, 4)] for h in self.candidates],
            "selected": self.selected.id if self.selected else None,
            "failure": self.failure,
        }


class StickerTool:
    def __init__(self, index: StickerIndex, model: ChatModel, *, k: int = 10, seed: int = 0):
        if not 1 <= k <= 10:
            raise ValueError(f"k must be between 1 and 10 (the selection answers an index 0..9), got {k}")
        self.index, self.model, self.k = index, model, k
        self._rng = random.Random(seed)
        template = TEXT_TEMPLATES["paper"]
        self._examples: dict[EmotionLabel, list[str]] = {}
        for sticker in index.stickers:
            if sticker.label is not None:
                self._examples.setdefault(sticker.label, []).append(template(sticker))

    async def plan(self, name: str, block: str, message: str) -> PlanOutcome:
        """Decide whether ``name`` sends a sticker with ``message``, and which one."""
        outcome = PlanOutcome()
        try:
            asked = await self.model.complete(self._intent_prompt(name, block, message), IntentAnswer)
        except LLMError as exc:
            outcome.failure = f"intent: {exc}"
            return outcome
        outcome.intent = asked.parsed.intention
        if outcome.intent not in STICKER_INTENTS:
            return outcome
        try:
            query = await self.model.complete(self._query_prompt(name, block, message, outcome.intent), QueryAnswer)
        except LLMError as exc:
            outcome.failure = f"query: {exc}"
            return outcome
        outcome.query = query.parsed.query
        outcome.candidates = self.index.search(outcome.query, self.k)
        try:
            chosen = await self.model.complete(self._select_prompt(name, block, message, outcome), SelectAnswer)
        except LLMError as exc:
            outcome.failure = f"select: {exc}"
            return outcome
        idx = chosen.parsed.idx
        if idx >= len(outcome.candidates):
            outcome.failure = f"select: index {idx} out of range 0..{len(outcome.candidates) - 1}"
            return outcome
        outcome.selected = outcome.candidates[idx].sticker
        return outcome

    # ------------------------------------------------------------------ prompts
    def _intent_prompt(self, name: str, block: str, message: str):
        options = ", ".join(i.value for i in Intent)
        return [
            system(block),
            user(
                f'{name} is about to send this message: "{message}"\n'
                f"Does {name} have one of these intentions for adding a sticker: {options}? "
                "Emotional Expression: show one's own feeling; Enhancing Empathy: reinforce understanding of the "
                "other's feeling; Reaction Intensity: make a reaction stronger; None: the text says it all."
            ),
        ]

    def _query_prompt(self, name: str, block: str, message: str, intent: Intent):
        examples = [self._rng.choice(texts) for _, texts in sorted(self._examples.items())]
        shown = "\n".join(f"- {e}" for e in examples)
        return [
            system(block),
            user(
                f'{name} wants a sticker for "{intent.value}" to go with the message: "{message}"\n'
                "Stickers are organised by 7 emotions (Anger, Disgust, Fear, Happiness, Neutral, Sadness, "
                "Surprise) and by themes such as celebration, motivation and humour. Write a search query that "
                "describes the ideal sticker for the message, the intention and its emotional tone, in the same "
                f"form as these indexed stickers (do not copy them):\n{shown}"
            ),
        ]

    def _select_prompt(self, name: str, block: str, message: str, outcome: PlanOutcome):
        rule = "=" * 20
        blocks = "\n".join(
            f"{rule}\nidx: {i}\ndescription: {h.sticker.description}\nemotion: {h.sticker.emotion}\n"
            f"recommendation: {h.sticker.recommendation}"
            for i, h in enumerate(outcome.candidates)
        )
        return [
            system(block),
            user(
                f'{name} sends: "{message}" with the intention "{outcome.intent.value}".\n'
                f"Choose the sticker that fits best; answer with its idx.\n{blocks}\n{rule}"
            ),
        ]
