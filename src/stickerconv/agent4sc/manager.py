"""The manager's rules and checks (method reference §2.8), each one small and tested on its own.

Consistency review: the answer field is ``inconsistent`` and the sticker is dropped iff it is true
(the original named it ``consistency`` while asking about inconsistency, §9 item 1). Repetition:
all four cross-checks the original intended (§9 item 5). Sticker frequency: the rules that
actually decided the original's outcome; its interval rule never did (§9 item 6).

Three defaults keep a weak model (the embedded 135M one) from ending or emptying dialogues that a
gpt-3.5 judge would have let run; ``ManagerConfig.original()`` (also ``for_profile("paper")``) restores the
paper's rules:

* a sticker is dropped only when the judge and the message's polarity agree (``review_needs_polarity_conflict``);
* closure is judged only when the last turn shows a winding-down cue (``closure_needs_cue``): the
  135M judge answers FINI to every history, which ended 4 of 5 sessions at turn 2 of 4 (docs/agent4sc.md);
* an utterance may come from any line of the answer that is not copied from the prompt
  (``fresh_lines``): the model often copies its previous message before writing the new one, and the
  paper's first line then repeats however often it is regenerated.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, Field

from stickerconv.llm import ChatModel, system, user
from stickerconv.profiles import Profile
from stickerconv.schema import Conversation, Sticker
from stickerconv.stickers.brief import StickerBriefs
from stickerconv.text import normalise


class Review(BaseModel):
    # The reason comes first so that a grammar-constrained model writes its judgement before the verdict.
    reason: str = Field(max_length=400)
    inconsistent: bool = Field(description="true if the sticker clearly contradicts the message")


class Closure(BaseModel):
    decision: Literal["FINI", "CONT"]


@dataclass(frozen=True)
class ManagerConfig:
    max_turns: int = 6
    closure_from_end: int = 2  # closure is judged from turn max_turns - closure_from_end on ...
    closure_even_turns_only: bool = True  # ... on even turns: turn 4 of 6, as in the original
    max_regenerations: int = 3  # tries to replace a repeated utterance before the dialogue ends
    # Drop a sticker only when the judge says "inconsistent" AND the message's polarity (VADER)
    # contradicts the sticker label's (a Happiness sticker on clearly negative text, or the
    # reverse). A weak judge that calls everything inconsistent (the embedded 135M model does)
    # then cannot empty the dataset. False restores the original: the judge alone decides.
    review_needs_polarity_conflict: bool = True
    summary_token_limit: int = 2000  # the shared history's buffer; older lines fold into a running summary
    # The running summary's answer budget. 200 is ample for the three sentences asked for and keeps a weak
    # model from rambling; the original gave its summary buffer 500 (§2.2).
    summary_max_tokens: int = 200
    # Ask the closure judge only when the last turn has a winding-down cue (``closure_cue``); without one the
    # dialogue goes on. False restores the original: the judge alone decides.
    closure_needs_cue: bool = True
    # Take the utterance from the first line of the answer not copied from the prompt that passes the guard
    # (text.fresh_lines), else the first line, before regenerating. False restores the original: the first line.
    fresh_lines: bool = True
    # Stickers are absent from the shared history in the original (§9 item 15), so an agent knows of the other's
    # sticker only from that turn's observation. True writes ``[sticker: description]`` after a line that had one.
    sticker_markers: bool = False

    @classmethod
    def original(cls, **changes) -> ManagerConfig:
        """The method reference's rules (§2.8): the judges alone decide, the first line is the utterance, the
        summary buffer answers in up to 500 tokens (§2.2)."""
        settings = {
            "review_needs_polarity_conflict": False,
            "closure_needs_cue": False,
            "fresh_lines": False,
            "summary_max_tokens": 500,
        }
        return cls(**(settings | changes))

    @classmethod
    def for_profile(cls, profile: Profile, **changes) -> ManagerConfig:
        """The manager of a profile: ours (``default``) or the paper's (``paper``, = ``original()``)."""
        return cls.original(**changes) if profile == "paper" else cls(**changes)


MANAGER_RULES = {"default": ManagerConfig(), "original": ManagerConfig.original()}


def repeats(candidate: str, earlier: Sequence[str]) -> bool:
    """An utterance repeats if it equals (ignoring case and spacing) any earlier one."""
    key = normalise(candidate)
    return any(key == normalise(e) for e in earlier)


def user_repeats(message: str, past_user: Sequence[str], past_system: Sequence[str]) -> bool:
    return repeats(message, [*past_user, *past_system])


def system_repeats(message: str, user_message: str, past_user: Sequence[str], past_system: Sequence[str]) -> bool:
    """The system must not echo the message it answers, nor anything said before."""
    return repeats(message, [user_message, *past_user, *past_system])


def user_may_attempt(prev_user_sticker: Sticker | None, prev_system_sticker: Sticker | None) -> bool:
    """The user tries a sticker only if neither side sent one in the previous turn."""
    return prev_user_sticker is None and prev_system_sticker is None


def system_may_attempt(prev_system_sticker: Sticker | None) -> bool:
    """The system tries a sticker only if it sent none in its previous turn."""
    return prev_system_sticker is None


def closure_due(turn: int, config: ManagerConfig) -> bool:
    if turn < config.max_turns - config.closure_from_end or turn >= config.max_turns:
        return False
    return turn % 2 == 0 if config.closure_even_turns_only else True


# Farewells end a chat from either side; thanks only from the user (an assistant thanks for sharing anywhere).
_FAREWELL = re.compile(
    r"\b(?:good ?bye|bye|farewell|good ?night|take care|see you|see ya|talk (?:to you )?(?:later|soon)|"
    r"catch you later|until next time|have a (?:good|great|nice|lovely|wonderful) (?:day|night|evening|weekend|one)|"
    r"(?:got|have|gotta) to go|gotta go|signing off|i(?:'ll| will) let you go)\b",
    re.IGNORECASE,
)
_THANKS = re.compile(r"\b(?:thanks|thank you|thank u|i appreciate (?:it|that|you))\b", re.IGNORECASE)


def closure_cue(user_message: str, system_message: str) -> bool:
    """Whether a turn shows a winding-down cue: a farewell from either side, or thanks from the user."""
    return bool(_FAREWELL.search(user_message) or _FAREWELL.search(system_message) or _THANKS.search(user_message))


_POSITIVE, _NEGATIVE = {"Happiness"}, {"Anger", "Disgust", "Fear", "Sadness"}


def polarity_conflict(message: str, sticker: Sticker, threshold: float = 0.3) -> bool:
    """True when a clearly positive message gets a negative sticker, or a clearly negative one a happy sticker."""
    from stickerconv.stickers.emotion_lexicon import polarity

    label = sticker.label.value if sticker.label else None
    score = polarity(message)
    return (score >= threshold and label in _NEGATIVE) or (score <= -threshold and label in _POSITIVE)


def keep(conversation: Conversation) -> bool:
    """Only dialogues with at least one sticker enter the dataset; the rest go to the rejects."""
    return bool(conversation.stickers)


REVIEW_QUESTION = (
    "Is there a CLEAR INCONSISTENCY between the message and the sticker's emotion, for example a cheerful sticker "
    "with sad news? Answer inconsistent = true if the sticker clearly contradicts the message (it will be "
    "dropped); inconsistent = false if it fits or is merely neutral."
)


class Manager:
    """``briefs`` (the lean call pattern's): the review asks its question in the system text, the same in every
    call, and names the sticker by its brief emotion; without, the original's prompt (question after the
    message, the full emotion text)."""

    def __init__(self, model: ChatModel, config: ManagerConfig | None = None, briefs: StickerBriefs | None = None):
        self.model, self.config, self.briefs = model, config or ManagerConfig(), briefs

    async def drop(self, message: str, sticker: Sticker) -> tuple[bool, Review]:
        """Whether to drop the sticker, with the judge's review (see ``review_needs_polarity_conflict``)."""
        review = await self.review(message, sticker)
        if not review.inconsistent:
            return False, review
        return (not self.config.review_needs_polarity_conflict or polarity_conflict(message, sticker)), review

    async def review(self, message: str, sticker: Sticker) -> Review:
        """Is there a clear inconsistency between the message and the sticker's emotion? True drops it."""
        role = "You check whether a chat sticker fits the message it is sent with."
        if self.briefs is not None:
            asked = f'Message: "{message}"\nSticker emotion: {self.briefs.emotion(sticker)}'
            messages = [system(f"{role} {REVIEW_QUESTION}"), user(asked)]
        else:
            asked = f'Message: "{message}"\nSticker emotion: {sticker.emotion}\n{REVIEW_QUESTION}'
            messages = [system(role), user(asked)]
        return (await self.model.complete(messages, Review)).parsed

    async def closure(self, history: str) -> Literal["FINI", "CONT"]:
        messages = [
            system("You judge whether a conversation is winding down."),
            user(
                f"{history}\n\nFINI if the conversation shows closure cues (farewells, thanks that wrap up, a "
                "resolved topic, a lull); CONT if it is still active (open topics, questions, plans)."
            ),
        ]
        return (await self.model.complete(messages, Closure)).parsed.decision
