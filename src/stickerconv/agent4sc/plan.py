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
from stickerconv.stickers.batched import aembed
from stickerconv.stickers.brief import StickerBriefs
from stickerconv.stickers.embed import Embedder
from stickerconv.stickers.index import TEXT_TEMPLATES, SearchHit, StickerIndex


class Intent(StrEnum):
    EXPRESSION = "Emotional Expression"
    EMPATHY = "Enhancing Empathy"
    INTENSITY = "Reaction Intensity"
    OTHER = "Other"
    NONE = "None"


STICKER_INTENTS = frozenset({Intent.EXPRESSION, Intent.EMPATHY, Intent.INTENSITY})
INTENT_GUIDE = (
    "Emotional Expression: show one's own feeling; Enhancing Empathy: reinforce understanding of the "
    "other's feeling; Reaction Intensity: make a reaction stronger; None: the text says it all."
)
QUERY_GUIDE = (
    "Stickers are organised by 7 emotions (Anger, Disgust, Fear, Happiness, Neutral, Sadness, Surprise) and by "
    "themes such as celebration, motivation and humour. Write a search query that describes the ideal sticker for "
    "the message, the intention and its emotional tone, in the same form as these indexed stickers (do not copy "
    "them):"
)


def _lenient_intent(value: Any) -> Any:
    """Accept case slips and typos ("enhancing emoathy") of a known intent, nothing further off."""
    if not isinstance(value, str) or value in {i.value for i in Intent}:
        return value
    by_lower = {i.value.lower(): i.value for i in Intent}
    match = difflib.get_close_matches(value.strip().lower(), list(by_lower), n=1, cutoff=0.8)
    return by_lower[match[0]] if match else value


class IntentAnswer(BaseModel):
    intention: Intent

    _lenient = field_validator("intention", mode="before")(_lenient_intent)


MAX_QUERY_CHARS = 600
COMPACT_EXAMPLE_WORDS = 14  # a few-shot query example in the compact prompts
BRIEF_WORDS = 6  # a sticker's brief in the compact prompts: its label, then at most this many words


def _clip_query(value: Any) -> Any:
    """An over-long query still retrieves: keep its start rather than fail the call."""
    return value[:MAX_QUERY_CHARS] if isinstance(value, str) else value


class QueryAnswer(BaseModel):
    query: str = Field(min_length=3, max_length=MAX_QUERY_CHARS)

    _clip = field_validator("query", mode="before")(_clip_query)


class DraftedMessage(BaseModel):
    """The lean call pattern's utterance: the message with the plan's first two steps drafted in the
    same call (the message comes first, so the sticker decision is made about what was written)."""

    message: str = Field(min_length=1, max_length=1000)
    intention: Intent
    query: str = Field(
        "", max_length=MAX_QUERY_CHARS, description="a sticker search query; empty when no sticker is wanted"
    )

    _lenient = field_validator("intention", mode="before")(_lenient_intent)
    _clip = field_validator("query", mode="before")(_clip_query)

    @property
    def draft(self) -> tuple[Intent, str]:
        return self.intention, self.query


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
    """``compact`` (the lean call pattern) shows shortened few-shot examples and lists candidates by
    label and what their description says beyond the library's boilerplate (``briefs``, built from the index
    unless a run passes its one); the original showed full indexed texts and every metadata field."""

    def __init__(
        self,
        index: StickerIndex,
        model: ChatModel,
        *,
        k: int = 10,
        seed: int = 0,
        compact: bool = False,
        embedder: Embedder | None = None,
        briefs: StickerBriefs | None = None,
    ):
        if not 1 <= k <= 10:
            raise ValueError(f"k must be between 1 and 10 (the selection answers an index 0..9), got {k}")
        self.index, self.model, self.k, self.compact = index, model, k, compact
        self.embedder = embedder or index.embedder  # a run's shared BatchedEmbedder, or the index's own
        self.briefs = (briefs or StickerBriefs(index.stickers, max_words=BRIEF_WORDS)) if compact else None
        self._rng = random.Random(seed)
        template = TEXT_TEMPLATES["paper"]
        self._examples: dict[EmotionLabel, list[str]] = {}
        for sticker in index.stickers:
            if sticker.label is not None:
                self._examples.setdefault(sticker.label, []).append(template(sticker))

    async def plan(self, name: str, block: str, message: str, draft: tuple[Intent, str] | None = None) -> PlanOutcome:
        """Decide whether ``name`` sends a sticker with ``message``, and which one. A ``draft`` (intent,
        query) written together with the message replaces the intent call, and the query call too
        unless its query is empty."""
        outcome = PlanOutcome()
        if draft is not None:
            outcome.intent, drafted_query = draft
        else:
            drafted_query = ""
            try:
                asked = await self.model.complete(self._intent_prompt(name, block, message), IntentAnswer)
            except LLMError as exc:
                outcome.failure = f"intent: {exc}"
                return outcome
            outcome.intent = asked.parsed.intention
        if outcome.intent not in STICKER_INTENTS:
            return outcome
        if len(drafted_query.strip()) >= 3:
            outcome.query = drafted_query.strip()
        else:
            try:
                prompt = self._query_prompt(name, block, message, outcome.intent)
                query = await self.model.complete(prompt, QueryAnswer)
            except LLMError as exc:
                outcome.failure = f"query: {exc}"
                return outcome
            outcome.query = query.parsed.query
        vectors = await aembed(self.embedder, [outcome.query])  # (1, d)
        outcome.candidates = self.index.search_many([outcome.query], self.k, vectors=vectors)[0]
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
                f"Does {name} have one of these intentions for adding a sticker: {options}? {INTENT_GUIDE}"
            ),
        ]

    def examples(self) -> str:
        """One indexed text per label as few-shot examples (drawn afresh each time, seeded)."""
        examples = [self._rng.choice(texts) for _, texts in sorted(self._examples.items())]
        if self.compact:  # the form without the bulk: "emotion: X, emotion describe: <first words> ..."
            examples = [" ".join(e.split()[:COMPACT_EXAMPLE_WORDS]) + " ..." for e in examples]
        return "\n".join(f"- {e}" for e in examples)

    def _query_prompt(self, name: str, block: str, message: str, intent: Intent):
        return [
            system(block),
            user(
                f'{name} wants a sticker for "{intent.value}" to go with the message: "{message}"\n'
                f"{QUERY_GUIDE}\n{self.examples()}"
            ),
        ]

    def _select_prompt(self, name: str, block: str, message: str, outcome: PlanOutcome):
        if self.briefs is not None:
            listing = "\n".join(f"{i}. {self.briefs(h.sticker)}" for i, h in enumerate(outcome.candidates))
            return [  # the instruction in the system text, which stays the same from call to call
                system(f"You pick the sticker {name} sends with a message: the one that fits best, by its idx."),
                user(f'{name} sends: "{message}" with the intention "{outcome.intent.value}".\n{listing}'),
            ]
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
