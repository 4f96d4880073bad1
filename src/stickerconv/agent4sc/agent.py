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
from stickerconv.llm.types import Message, RetryBudgetExhausted, StructuredOutputError
from stickerconv.schema import Sticker
from stickerconv.stickers.batched import aembed
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


def observation(name: str, sticker: Sticker | None, shown: str | None = None) -> str:
    """What the other side sees of ``name``'s action (stickers never enter the shared history): the sticker's
    emotion and description, or ``shown`` (the lean prompts' brief of it)."""
    if sticker is None:
        return f"{name}'s action: Only speak."
    return f"{name}'s action: Speak and use a sticker {shown or f'{sticker.emotion} {sticker.description}'}"


@dataclass
class Utterance:
    text: str  # the first line: the method reference's utterance
    draft: tuple[Intent, str] | None = None  # sticker intent and query, when drafted with the message
    fresh: tuple[str, ...] = ()  # the answer's lines not copied from the prompt (``fresh_lines``)


class Agent:
    """The call pattern (``pattern.py``) decides how the steps become calls: with ``fuse_plan`` the
    utterance call also drafts the plan's intent and query when a sticker may follow. With
    ``compact_prompts`` every call of the agent is built for prefix caching: the same system text
    (``head``: profile, rules, the sticker guide with examples drawn once), then the dialogue so far, then
    what changes (the other's action, the turn, the self-summary, the memories, the question); the
    original puts the self-summary inside its profile block (``block``) and asks each step on its own."""

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
        self._head = ""

    def block(self) -> str:
        """The original's profile block, self-summary included."""
        p = self.profile
        return f"You are {p.name}\nInnate traits: {p.persona}\n{self.summary}\nYour status: {p.status}"

    def head(self) -> str:
        """The compact prompts' system text: byte-identical in every call of this agent (built once)."""
        if not self._head:
            p = self.profile
            options = ", ".join(i.value for i in Intent)
            self._head = (
                f"You are {p.name}\nInnate traits: {p.persona}\nYour status: {p.status}\n"
                f"You chat with a friend, one short message per turn. {RULES}\n"
                f"A message may come with a sticker, with one of these intentions: {options}. {INTENT_GUIDE} "
                f"{QUERY_GUIDE}\n{self.tool.examples()}"
            )
        return self._head

    def sticker_text(self, sticker: Sticker) -> str | None:
        """How this agent's prompts and memories name a sticker in few words: its brief in the compact prompts
        (label and what the description says beyond the library's boilerplate); None: the full annotation."""
        return self.tool.briefs(sticker) if self.tool.briefs is not None else None

    def observe(self, name: str, sticker: Sticker | None) -> str:
        """The other side's (``name``'s) action as this agent's prompt shows it."""
        return observation(name, sticker, self.sticker_text(sticker) if sticker is not None else None)

    def _about(self) -> str:
        return f"About {self.profile.name}: {self.summary}\n" if self.summary else ""

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
        settings = settings or self.settings
        drafting = self.pattern.fuse_plan and sticker_allowed
        build = self._compact_speech if self.pattern.compact_prompts else self._original_speech
        messages = build(history, other_action, turn, max_turns, drafting)
        if not drafting:
            result = await self.model.complete(messages, settings=settings)
            return self._read(result.text, messages)
        try:
            result = await self.model.complete(messages, DraftedMessage, settings=settings)
        except RetryBudgetExhausted as exc:
            if not isinstance(exc.last, StructuredOutputError):
                raise  # the server is failing, not the format: nothing to fall back on
            # The plain utterance, and the plan then asks for the intent itself.
            log.info("%s: no drafted message (%s); plain utterance instead", name, exc)
            return await self.speak(history, other_action, turn, max_turns, settings, sticker_allowed=False)
        return self._read(result.parsed.message, messages, result.parsed.draft)

    def _read(self, text: str, messages: list[Message], draft: tuple[Intent, str] | None = None) -> Utterance:
        if self.pattern.compact_prompts:
            shown = "\n".join(m.text for m in messages)
        else:  # the original's block and question, without the trailing "B: " cue of a plain call
            shown = f"{self.block()}\n{messages[-1].text.removesuffix(f'{self.profile.name}: ')}"
        return Utterance(clean_utterance(text), draft, fresh_lines(text, shown))

    def _compact_speech(
        self, history: str, other_action: str | None, turn: int, max_turns: int, drafting: bool
    ) -> list[Message]:
        """The head, then the dialogue so far (a prefix of the next call's), then the turn and the question.
        The question stays last, after the dialogue, although it is the same in every call: moved into the head
        (which would spare about 40 uncached tokens a call) it let the embedded 135M model copy the last line of the
        dialogue instead of answering it, and 2 of the demo's 5 sessions ended by the repetition guard (none with
        it last)."""
        name = self.profile.name
        if not history:
            opening = f"{self._about()}Start an organic, thoughtful, human-like multi-turn chat about your status.\n"
        else:
            opening = (
                f"{history}\n{other_action or ''}\nCurrent Turn: [{turn}/{max_turns}]\n{self._about()}"
                f"Continue this {max_turns}-round chat, responding to the history and your friend's action.\n"
            )
        if not drafting:
            return [system(self.head()), user(f"{opening}{name}: ")]
        ask = (
            f"Answer with {name}'s message, then whether {name} adds a sticker to it (its intention), then, for "
            "the first three intentions only, the sticker query."
        )
        return [system(self.head()), user(f"{opening}{ask}")]

    def _original_speech(
        self, history: str, other_action: str | None, turn: int, max_turns: int, drafting: bool
    ) -> list[Message]:
        name = self.profile.name
        if not history:
            prompt = f"Start an organic, thoughtful, human-like multi-turn chat about your status. {RULES}\n"
        else:
            prompt = (
                f"Continue this {max_turns}-round chat, responding to the history and your friend's action. {RULES}\n"
                f"{history}\n{other_action or ''}\nCurrent Turn: [{turn}/{max_turns}]\n"
            )
        if not drafting:
            return [system(self.block()), user(f"{prompt}{name}: ")]
        options = ", ".join(i.value for i in Intent)
        drafting_prompt = (
            f"{prompt}Answer with {name}'s message, then whether {name} adds a sticker to it (intention: one of "
            f"{options}; {INTENT_GUIDE}), then, for the first three intentions only, the sticker query. "
            f"{QUERY_GUIDE}\n{self.tool.examples()}"
        )
        return [system(self.block()), user(drafting_prompt)]

    async def plan(self, message: str, draft: tuple[Intent, str] | None = None) -> PlanOutcome:
        return await self.tool.plan(
            self.profile.name, self.head() if self.pattern.compact_prompts else self.block(), message, draft
        )

    async def refresh_summary(self) -> None:
        """Self-summary from the memories retrieved for "{name} said" (on even turns). With the session's memory
        log (lean pattern) the memory model writes it as one more request on the log, naming the memories by
        number, so only the request is new to a prefix cache; the original asks the agent's model with its
        block and the memories listed."""
        name = self.profile.name
        query = (await aembed(self.memory.embedder, [f"{name} said"]))[0]
        retrieved = [r.text for r in self.memory.retrieve(query)]
        if not retrieved:
            return
        question = f"Summarise {name}'s core characteristics in one sentence, without embellishment."
        settings = Settings(temperature=self.settings.temperature, max_tokens=80, seed=self.settings.seed)
        log = self.memory.log
        if log is not None:
            messages = log.prompt(f"From {log.name(retrieved)}: {question}")
            result = await self.memory.model.complete(messages, settings=settings)
        else:
            memories = "\n".join(retrieved)
            messages = [system(self.block()), user(f"{memories}\n\n{question}")]
            result = await self.model.complete(messages, settings=settings)
        self.summary = clean_utterance(result.text)
