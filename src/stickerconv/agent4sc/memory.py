"""An agent's private long-term memory (method reference §2.5, after Park et al. 2023).

A stream of observations, each with an LLM-rated importance and an embedding. Retrieval ranks by
recency + relevance (+ importance, off by default as in the original). Reflection turns recent
memories into insights once the importance accumulated since the last reflection passes a
threshold.

Why the defaults differ from the original: it scaled importance by 0.15/10 and reflected above
2.0, which needs 14 maximally important memories, while a 6-turn dialogue gives an agent about 9;
reflection practically never fired (§9 item 10). Here importance is scored 1..10 and scaled to
0.1..1.0, and reflection fires above 3.0: with typical scores of 4-7 that is after 5-7 memories,
i.e. around turn 3 of 6. Because a weak rater may score everything low, reflection also fires after
``reflect_every`` (8) new memories, around turn 4. ``MemoryConfig.original()`` (the ``paper`` profile's)
restores the original parameters.

Time is simulated: every write advances the clock one step, so recency (``decay ** steps since
last access``) separates the start of a dialogue from its end, which wall-clock hours would not. The
original's memories were seconds apart on a clock counted in hours, so its recency was practically 1 for all:
``original()`` sets ``recency_decay=1.0``.
Importance is rated for all of a turn's memories in one call rather than one call each (the
original's one-call-per-memory remains a setting).

The lean call pattern gives a session's two streams one :class:`MemoryLog`: the memory calls (rating,
reflection questions, insights) then all open with the same system text and the numbered list of the session's
memories, which only grows, and end with a short request that names memories by number. Consecutive memory calls
share that whole prefix (a server's prefix cache computes only the request and the memories new since the last
call), where the original's lists each call's memories afresh: the same dialogue lines, again and again.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from stickerconv.llm import ChatModel, system, user
from stickerconv.llm.types import Message
from stickerconv.profiles import Profile
from stickerconv.stickers.batched import aembed
from stickerconv.stickers.embed import Embedder


class MemoryConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    importance_scale: float = Field(0.1, gt=0)  # stored importance = LLM score (1..10) x scale
    reflection_threshold: float = Field(3.0, gt=0)  # reflect when accumulated importance exceeds this
    recency_decay: float = Field(0.99, gt=0, le=1)  # per simulated step since last access
    importance_weight: float = Field(0.0, ge=0)  # the original ranked by recency + relevance only
    k: int = Field(4, ge=1)  # memories retrieved per query
    max_insights: int = Field(3, ge=1)
    batch_importance: bool = True  # one rating call per turn's memories; False: one call per memory (original)
    # Also reflect after this many new memories whatever their importance: a rater that scores
    # everything low (the embedded 135M model gives 1-3) would otherwise never let reflection fire.
    reflect_every: int | None = Field(8, ge=1)

    @classmethod
    def original(cls) -> MemoryConfig:
        """The authors' parameters, for faithful reproduction (reflection then rarely fires, recency ranks nothing)."""
        return cls(
            importance_scale=0.015,
            reflection_threshold=2.0,
            recency_decay=1.0,
            batch_importance=False,
            reflect_every=None,
        )

    @classmethod
    def for_profile(cls, profile: Profile) -> MemoryConfig:
        """The memory of a profile: ours (``default``) or the authors' (``paper``, = ``original()``)."""
        return cls.original() if profile == "paper" else cls()


@dataclass
class MemoryRecord:
    text: str
    importance: float
    created: int
    last_access: int
    vector: np.ndarray
    kind: str = "observation"  # or "reflection"


class _Scores(BaseModel):
    scores: list[int] = Field(description="one poignancy score from 1 to 10 per memory, in order")


class _Questions(BaseModel):
    questions: list[str] = Field(min_length=1, max_length=3)


class _Insights(BaseModel):
    insights: list[str] = Field(min_length=1, max_length=5)


MEMORY_SYSTEM = (
    "You keep the memories of a conversation between two friends, B and A, and help each of them reflect on it. "
    "You rate a memory's poignancy on a scale of 1 to 10, where 1 is purely mundane (greeting someone, small "
    "talk) and 10 is extremely poignant (a break-up, a death, a big success)."
)
LOG_CHARS = 4000  # the listed part of a log: past it, the oldest half leaves the list (a small model's context)


class MemoryLog:
    """A session's memories, numbered in the order they were stored (a text stored twice keeps its number),
    shared by its agents' streams. The prompt lists them from ``start`` on; ``start`` moves only when the
    listed part outgrows ``max_chars``, and then by half of it, so the list stays a stable prefix between
    such jumps. A memory before ``start`` is quoted in the request instead of named."""

    def __init__(self, max_chars: int = LOG_CHARS):
        self.max_chars = max_chars
        self.texts: list[str] = []
        self.numbers: dict[str, int] = {}
        self.start = 0

    def add(self, texts: Sequence[str]) -> None:
        for text in texts:
            if text not in self.numbers:
                self.numbers[text] = len(self.texts) + 1
                self.texts.append(text)
        while sum(len(t) + 6 for t in self.texts[self.start :]) > self.max_chars and self.start < len(self.texts) - 1:
            self.start += max(1, (len(self.texts) - self.start) // 2)

    def prompt(self, request: str) -> list[Message]:
        listing = "\n".join(f"{i}. {t}" for i, t in enumerate(self.texts[self.start :], self.start + 1))
        return [system(MEMORY_SYSTEM), user(f"Memories:\n{listing}\n\n{request}")]

    def name(self, texts: Sequence[str]) -> str:
        """``texts`` as a request names them: "memories 3-5, 8" for listed ones, quoted for the rest."""
        listed = sorted({self.numbers[t] for t in texts if self.numbers.get(t, 0) > self.start})
        quoted = [t for t in texts if self.numbers.get(t, 0) <= self.start]
        runs: list[list[int]] = []
        for n in listed:
            if runs and n == runs[-1][-1] + 1:
                runs[-1].append(n)
            else:
                runs.append([n])
        spans = ", ".join(f"{r[0]}-{r[-1]}" if len(r) > 2 else ", ".join(map(str, r)) for r in runs)
        parts = [f"memories {spans}"] if listed else []
        return " and ".join([*parts, *(f'"{t}"' for t in quoted)])


@dataclass
class MemoryStream:
    owner: str
    model: ChatModel
    embedder: Embedder
    config: MemoryConfig = field(default_factory=MemoryConfig)
    records: list[MemoryRecord] = field(default_factory=list)
    clock: int = 0
    accumulated: float = 0.0
    since_reflection: int = 0  # observations stored since the last reflection
    reflections: int = 0
    log: MemoryLog | None = None  # the session's shared log (lean pattern): memory prompts name memories by number

    async def add(self, texts: Sequence[str], scores: Sequence[int] | None = None) -> list[MemoryRecord]:
        """Store a turn's observations; their importance is rated in one call unless ``scores`` (1..10,
        one per text) come from a joint rating (``remember_turn``)."""
        if not texts:
            return []
        if scores is None:
            if self.config.batch_importance:
                scores = await rate_importance(self.model, self.owner, texts, self.log)
            else:
                scores = [s for t in texts for s in await rate_importance(self.model, self.owner, [t], self.log)]
        if self.log is not None:
            self.log.add(texts)  # a rating through the log has listed them already: a no-op then
        vectors = await aembed(self.embedder, texts)  # (n, d)
        added = []
        for text, score, vector in zip(texts, scores, vectors, strict=True):
            self.clock += 1
            record = MemoryRecord(text, score * self.config.importance_scale, self.clock, self.clock, vector)
            self.records.append(record)
            self.accumulated += record.importance
            self.since_reflection += 1
            added.append(record)
        return added

    def retrieve(self, query_vector: np.ndarray, k: int | None = None) -> list[MemoryRecord]:
        """The k memories with the highest recency + relevance (+ importance) scores; marks them accessed."""
        if not self.records:
            return []
        k = k or self.config.k
        matrix = np.stack([r.vector for r in self.records])  # (N, d)
        relevance = matrix @ query_vector  # (N,)
        recency = np.array([self.config.recency_decay ** (self.clock - r.last_access) for r in self.records])
        importance = np.array([r.importance for r in self.records])
        score = recency + relevance + self.config.importance_weight * importance
        chosen = [self.records[i] for i in np.argsort(-score, kind="stable")[:k]]
        for record in chosen:
            record.last_access = self.clock
        return chosen

    @property
    def should_reflect(self) -> bool:
        every = self.config.reflect_every
        return self.accumulated > self.config.reflection_threshold or (
            every is not None and self.since_reflection >= every
        )

    def skip_reflection(self) -> None:
        """Give up this reflection (its answer was unusable) and start counting towards the next one."""
        self.accumulated = 0.0
        self.since_reflection = 0

    async def reflect(self) -> list[MemoryRecord]:
        """Ask for salient questions about recent memories, retrieve evidence, store the insights."""
        recent = [r.text for r in self.records[-12:]]
        ask = "what are the 3 most salient high-level questions we can answer about the subjects in the statements?"
        if self.log is not None:
            prompt = self.log.prompt(f"For {self.owner}: given only {self.log.name(recent)}, {ask}")
        else:
            joined = "\n".join(recent)
            prompt = [
                system(f"You help {self.owner} reflect on a conversation."),
                user(f"{joined}\n\nGiven only the information above, {ask}"),
            ]
        questions = await self.model.complete(prompt, _Questions)
        evidence: list[MemoryRecord] = []
        for vector in await aembed(self.embedder, questions.parsed.questions):
            evidence += [r for r in self.retrieve(vector) if r not in evidence]
        most = f"Give at most {self.config.max_insights}."
        if self.log is not None:
            named = self.log.name([r.text for r in evidence])
            prompt = self.log.prompt(
                f"Statements about {self.owner}: {named}. What high-level insights can you infer from them? {most}"
            )
        else:
            listing = "\n".join(f"{i}. {r.text}" for i, r in enumerate(evidence, 1))
            infer = f"What high-level insights can you infer from the statements above? {most}"
            prompt = [
                system(f"You help {self.owner} reflect on a conversation."),
                user(f"Statements about {self.owner}:\n{listing}\n\n{infer}"),
            ]
        insights = await self.model.complete(prompt, _Insights)
        texts = insights.parsed.insights[: self.config.max_insights]
        if self.log is not None:
            self.log.add(texts)
        vectors = await aembed(self.embedder, texts)
        added = []
        for text, vector in zip(texts, vectors, strict=True):
            self.clock += 1
            record = MemoryRecord(text, 8 * self.config.importance_scale, self.clock, self.clock, vector, "reflection")
            self.records.append(record)
            added.append(record)
        self.accumulated = 0.0
        self.since_reflection = 0
        self.reflections += 1
        return added


async def rate_importance(
    model: ChatModel, owner: str, texts: Sequence[str], log: MemoryLog | None = None
) -> list[int]:
    """Poignancy scores 1..10, one per memory text, in one call; with a ``log``, the texts join it first and
    the request names them by number."""
    if log is not None:
        log.add(texts)
        request = (
            f"Rate the likely poignancy of {log.name(texts)} for {owner}: give exactly {len(texts)} scores, in order."
        )
        messages = log.prompt(request)
    else:
        listing = "\n".join(f"{i}. {t}" for i, t in enumerate(texts, 1))
        messages = [
            system(
                f"You rate memories of {owner}. On a scale of 1 to 10, where 1 is purely mundane (greeting "
                "someone, small talk) and 10 is extremely poignant (a break-up, a death, a big success), rate "
                "the likely poignancy of each memory."
            ),
            user(f"Memories:\n{listing}\nGive exactly {len(texts)} scores, in order."),
        ]
    result = await model.complete(messages, _Scores)
    scores = [min(10, max(1, s)) for s in result.parsed.scores]
    if len(scores) != len(texts):  # a short or long list: keep what lines up, neutral 5 for the rest
        scores = (scores + [5] * len(texts))[: len(texts)]
    return scores


async def remember_turn(entries: Sequence[tuple[MemoryStream, Sequence[str]]]) -> None:
    """Store a turn's memories for several agents. When every stream batches importance and they share
    one model, each distinct text is rated once, in a single call for the whole turn (both agents
    remember "B said: ..." and "A said: ..."); otherwise each stream rates its own."""
    streams = [stream for stream, _ in entries]
    if not (all(s.config.batch_importance for s in streams) and len({id(s.model) for s in streams}) == 1):
        for stream, texts in entries:
            await stream.add(texts)
        return
    distinct = list(dict.fromkeys(t for _, texts in entries for t in texts))
    if not distinct:
        return
    owners = " and ".join(dict.fromkeys(s.owner for s in streams))
    rated = dict(zip(distinct, await rate_importance(streams[0].model, owners, distinct, streams[0].log), strict=True))
    for stream, texts in entries:
        await stream.add(texts, [rated[t] for t in texts])
