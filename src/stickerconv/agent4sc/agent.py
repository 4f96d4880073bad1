"""One agent class for both sides of the dialogue (method reference §2.3, §2.6): a profile, a private
memory, the sticker plan, and the action that writes the next utterance.

The user agent (``B``) gets the persona and situation of a profile; the system agent (``A``) the
fixed empathetic profile. Only profile, sampling settings and name differ.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from stickerconv.agent4sc.memory import MemoryStream
from stickerconv.agent4sc.pattern import CallPattern
from stickerconv.agent4sc.plan import INTENT_GUIDE, QUERY_GUIDE, DraftedMessage, Intent, PlanOutcome, StickerTool
from stickerconv.llm import ChatModel, Settings, system, user
from stickerconv.llm.types import RetryBudgetExhausted, StructuredOutputError
from stickerconv.schema import Sticker
from stickerconv.text import clean_utterance, fresh_lines

log = logging.getLogger(__name__)
SYSTEM_PERSONA = "You understand other people's emotions deeply and respond with empathy, warmth and care. 💗"
SYSTEM_STATUS = (
    "You infer the other person's situation from what they say, and you are ready for a casual, supportive chat. 🌟"
)
RULES = (
    "Rules: mention no names; vary your style; no long explanations; do not repeat yourself or the other person; "
    "avoid fillers such as 'hey', 'uh' or 'um'. Write one short message."
)


@dataclass
class AgentProfile:
    name: str  # "B" (user) or "A" (system)
    persona: str
    status: str


def observation(name: str, sticker: Sticker | None) -> str:
    """What the other side sees of ``name``'s action (stickers never enter the shared history)."""
    if sticker is None:
        return f"{name}'s action: Only speak."
    return f"{name}'s action: Speak and use a sticker {sticker.emotion} {sticker.description}"


@dataclass
class Utterance:
    text: str  # the first line: the method reference's utterance
    draft: tuple[Intent, str] | None = None  # sticker intent and query, when drafted with the message
    fresh: tuple[str, ...] = ()  # the answer's lines not copied from the prompt (``fresh_lines``)


class Agent:
    """The call pattern (``pattern.py``) decides how the steps become calls: with ``fuse_plan`` the
    utterance call also drafts the plan's intent and query when a sticker may follow; with
    ``compact_prompts`` the self-summary is asked from the memories alone, without the profile block."""

    def __init__(
        self,
        profile: AgentProfile,
        model: ChatModel,
        memory: MemoryStream,
        tool: StickerTool,
        settings: Settings,
        *,
        pattern: CallPattern | None = None,
    ):
        self.profile, self.model, self.memory, self.tool, self.settings = profile, model, memory, tool, settings
        self.pattern = pattern or CallPattern()
        self.summary = ""  # the memory-derived self-summary: line 3 of the block

    def block(self) -> str:
        p = self.profile
        return f"You are {p.name}\nInnate traits: {p.persona}\n{self.summary}\nYour status: {p.status}"

    async def speak(
        self,
        history: str,
        other_action: str | None,
        turn: int,
        max_turns: int,
        settings: Settings | None = None,
        *,
        sticker_allowed: bool = False,
    ) -> Utterance:
        """Turn 1 of the user opens the chat; every other utterance answers the history and the other's action."""
        name = self.profile.name
        if not history:
            prompt = f"Start an organic, thoughtful, human-like multi-turn chat about your status. {RULES}\n"
        else:
            prompt = (
                f"Continue this {max_turns}-round chat, responding to the history and your friend's action. {RULES}\n"
                f"{history}\n{other_action or ''}\nCurrent Turn: [{turn}/{max_turns}]\n"
            )
        messages = [system(self.block())]
        settings = settings or self.settings

        def read(text: str, asked: str, draft: tuple[Intent, str] | None = None) -> Utterance:
            return Utterance(clean_utterance(text), draft, fresh_lines(text, f"{self.block()}\n{asked}"))

        if not (self.pattern.fuse_plan and sticker_allowed):
            result = await self.model.complete([*messages, user(f"{prompt}{name}: ")], settings=settings)
            return read(result.text, prompt)
        options = ", ".join(i.value for i in Intent)
        drafting = (
            f"{prompt}Answer with {name}'s message, then whether {name} adds a sticker to it (intention: one of "
            f"{options}; {INTENT_GUIDE}), then, for the first three intentions only, the sticker query. "
            f"{QUERY_GUIDE}\n{self.tool.examples()}"
        )
        try:
            result = await self.model.complete([*messages, user(drafting)], DraftedMessage, settings=settings)
        except RetryBudgetExhausted as exc:
            if not isinstance(exc.last, StructuredOutputError):
                raise  # the server is failing, not the format: nothing to fall back on
            # The plain utterance, and the plan then asks for the intent itself.
            log.info("%s: no drafted message (%s); plain utterance instead", name, exc)
            result = await self.model.complete([*messages, user(f"{prompt}{name}: ")], settings=settings)
            return read(result.text, prompt)
        return read(result.parsed.message, drafting, result.parsed.draft)

    async def plan(self, message: str, draft: tuple[Intent, str] | None = None) -> PlanOutcome:
        return await self.tool.plan(self.profile.name, self.block(), message, draft)

    async def refresh_summary(self) -> None:
        """Self-summary from the memories retrieved for "{name} said" (on even turns)."""
        name = self.profile.name
        query = self.memory.embedder.embed([f"{name} said"])[0]
        memories = "\n".join(r.text for r in self.memory.retrieve(query))
        if not memories:
            return
        context = f"You describe {name} from memories." if self.pattern.compact_prompts else self.block()
        result = await self.model.complete(
            [
                system(context),
                user(f"{memories}\n\nSummarise {name}'s core characteristics in one sentence, without embellishment."),
            ],
            settings=Settings(temperature=self.settings.temperature, max_tokens=80, seed=self.settings.seed),
        )
        self.summary = clean_utterance(result.text)
